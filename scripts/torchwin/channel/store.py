"""The local channel on disk: the lock, and crash-safe, reader-atomic add/remove.

Layout (layout.py): label main is DIR/<subdir>/, any other label L is DIR/label/L/<subdir>/,
each a complete conda channel (with noarch/). DIR/.torchwin/ holds the lock
file, the journal and staging folders; it is never served.

Records: a new package's repodata record is computed from the package we just
checked (its info/index.json through rattler's own PackageRecord conversion,
plus size, sha256, md5 and indexed_timestamp, as rattler's indexer writes it) and
merged into the live repodata.json. No indexer run: its start-up alone cost more
than the rest of an add (benchmarks/run.py measures both roads).

One change (add, add --force, remove, prune) under the channel lock:
1. Stage: new package files are copied into .torchwin/staging-*/ (checked again by
   sha256 while copying, mode 0644, fsynced). A kill here leaves the channel as it was.
2. Commit: .torchwin/journal.json is written (temp file + rename) naming every
   record to add and every file name to drop, per subdir.
3. Roll forward, per subdir, from the journal:
   a. repodata without every name being dropped or replaced (only if it names one),
   b. staged files renamed into place,
   c. repodata with the new records, each only if the file under its name has its size,
   d. dropped files deleted; then the journal and the staging folder.
   Each repodata write replaces repodata.json.zst, then repodata.json (os.replace).
The next command of any kind (it takes the lock) finds a journal left by a killed
one and runs step 3 again: every step is idempotent, so the channel ends as the
killed command meant it to. A reader never sees a record whose size/sha256
disagree with the file under its name: a --force replacement is first taken out
of repodata (3a), and named again only once the new bytes are in place (3c).
Between, the package is briefly absent from the index, which a client tolerates
like any package it has not heard of yet. Protects against killed processes, not
power loss: staged files and the journal are fsynced, the folder entries are not.

A change that cannot be rolled forward (disk full, a path component that is a file) leaves its
journal: writing commands then stop with one line naming the cause and the way out; read-only
ones (verify, page, serve, dry runs) go on, saying a change is pending and why. A channel on a
read-only file system is read without the lock.

Sharded repodata (CEP 16) is not written: it is made for channels with many
thousands of records. A stale shard index would shadow repodata.json for rattler
clients, so one left from elsewhere is deleted on each update.
"""

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from rattler import PackageRecord

from torchwin.channel.config import MAIN
from torchwin.channel.layout import (  # noqa: F401 - re-exported: the channel's API stays store's
    JOURNAL,
    REPODATA,
    STATE_DIR,
    check_channel_dir,
    iter_records,
    label_root,
    label_roots,
    os_error_line,
    pending_change,
    read_repodata,
    records_of,
    repodata_shape_problem,
    safe_filename,
    subdirs_of,
    triple_key,
    unsafe_name_message,
)
from torchwin.channel.lock import FileLock
from torchwin.channel.package_check import KNOWN_SUBDIRS, check_package, file_digest, file_digests
from torchwin.errors import Failure, UserError

REPODATA_ZST = "repodata.json.zst"
STALE_SHARDS = "repodata_shards.msgpack.zst"
_CHUNK = 1 << 20
_LABEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def channel_lock(channel_dir, timeout=3600.0):
    def say(path):
        print(f"torchwin: waiting for the channel lock {path} (another channel update is running)",
              file=sys.stderr, flush=True)

    return FileLock(Path(channel_dir) / STATE_DIR / "lock", timeout=timeout, on_wait=say)


@contextmanager
def session(channel_dir, writes, create=False):
    """Hold the channel lock and finish any change a killed command left; for every channel command.

    writes=False (dry runs, verify, page, serve): see reading(). Only add creates a missing
    channel folder (create=True). Yields the journal of the change it finished, or None.
    """
    channel_dir = Path(channel_dir)
    check_channel_dir(channel_dir, create=create)
    if not writes:
        with reading(channel_dir):
            yield None
        return
    try:
        if create:
            channel_dir.mkdir(parents=True, exist_ok=True)
        lock = channel_lock(channel_dir)
        lock.acquire()
    except OSError as exc:
        raise Failure(f"{channel_dir}: cannot take the channel lock to change it ({os_error_line(exc)}); "
                      "a read-only channel can only be read (verify, page --output elsewhere, serve)") from None
    try:
        yield recover(channel_dir)
    finally:
        lock.release()


@contextmanager
def reading(channel_dir):
    """For a command that only reads: the lock when it can be had, and the pending change finished when it can be.

    A channel no torchwin command has changed has no lock file, and a read-only command creates
    nothing. On a read-only file system the lock cannot be opened: then the channel is read as it
    is, as it is when a pending change cannot be finished; either way stderr says so.
    """
    channel_dir = Path(channel_dir)
    if not (channel_dir / STATE_DIR / "lock").exists():
        yield
        return
    lock = channel_lock(channel_dir)
    try:
        lock.acquire()
    except OSError as exc:
        note = pending_change(channel_dir)
        if note:
            print(f"torchwin: warning: {note}; the channel cannot be locked to finish it "
                  f"({os_error_line(exc)}): read as it is", file=sys.stderr, flush=True)
        yield
        return
    try:
        try:
            recover(channel_dir)
        except Failure as exc:
            print(f"torchwin: warning: {exc}; read as it is", file=sys.stderr, flush=True)
        yield
    finally:
        lock.release()


def add_packages(channel_dir, files, label=MAIN, force=False):
    """Check, copy and index package files into label of the channel; return their paths there.

    label must already be validated against channel.yaml. A bad package raises
    UserError before the channel is touched; a file name already in the channel
    with other content is refused unless force.
    """
    channel_dir = Path(channel_dir)
    check_channel_dir(channel_dir, create=True)
    packages = [check_package(f) for f in files]
    seen = {}
    for pkg in packages:
        other = seen.setdefault((pkg.subdir, pkg.filename), pkg)
        if other.sha256 != pkg.sha256:
            raise UserError(f"{other.path} and {pkg.path}: same file name, different content")
    root = label_root(channel_dir, label)
    with session(channel_dir, writes=True, create=True):
        to_add = []
        drop = []
        for pkg in {(p.subdir, p.filename): p for p in packages}.values():
            dest = root / pkg.subdir / pkg.filename
            records = records_of(read_repodata(root, pkg.subdir))
            record = records.get(pkg.filename) or {}
            # The same name-version-build under another spelling or format: one build, two files.
            twins = sorted(f for f in _names_in(root / pkg.subdir, records)
                           if f != pkg.filename and triple_key(f) == triple_key(pkg.filename))
            if twins and not force:
                raise UserError(
                    f"{pkg.path}: label {label} already has {pkg.subdir}/{twins[0]}, the same "
                    f"name-version-build; pass --force to replace it with {pkg.filename}"
                )
            drop += [(pkg.subdir, f) for f in twins]
            on_disk = file_digest(dest)[0] if dest.is_file() else None
            if record.get("sha256") == pkg.sha256 and on_disk == pkg.sha256:
                continue  # already there and indexed: adding it again changes nothing
            other = next((d for d in (record.get("sha256"), on_disk) if d and d != pkg.sha256), None)
            if other and not force:
                raise UserError(
                    f"{pkg.path}: {pkg.subdir}/{pkg.filename} is already in label {label} with other "
                    f"content (sha256 {other[:12]}..., new {pkg.sha256[:12]}...); "
                    "pass --force to replace it"
                )
            to_add.append(pkg)
        if to_add or drop:
            _transact(channel_dir, root, add=to_add, drop=drop)
    return [root / p.subdir / p.filename for p in packages]


def _names_in(folder, records):
    """Package file names in folder: those repodata names and those on disk, both following the rule."""
    names = {f for f in records if safe_filename(f)}
    if folder.is_dir():
        names |= {p.name for p in folder.iterdir() if safe_filename(p.name)}
    return names


def remove_packages(channel_dir, label, victims):
    """Remove [(subdir, filename)] from label's channel: new repodata first, then the files."""
    with session(channel_dir, writes=True):
        return remove_locked(channel_dir, label, victims)


def remove_locked(channel_dir, label, victims):
    """remove_packages for a caller that already holds the channel lock."""
    channel_dir = Path(channel_dir)
    root = label_root(channel_dir, label)
    victims = [(s, f) for s, f in victims if s in KNOWN_SUBDIRS and safe_filename(f)]
    present = [(s, f) for s, f in victims if (root / s / f).exists() or f in records_of(read_repodata(root, s))]
    if present:
        _transact(channel_dir, root, add=(), drop=present)
    return [root / s / f for s, f in present]


def package_record(pkg, scratch):
    """The repodata record rattler's indexer writes for pkg: index.json through rattler, plus the file's digests."""
    index_path = Path(scratch) / f"index-{pkg.sha256}.json"
    index_path.write_bytes(pkg.index_json)
    try:
        record = PackageRecord.from_index_json(index_path, size=pkg.size, sha256=pkg.sha256, md5=pkg.md5)
    finally:
        index_path.unlink(missing_ok=True)
    data = json.loads(record.to_json())
    data["indexed_timestamp"] = int(time.time() * 1000)
    return data


def _transact(channel_dir, root, add, drop):
    """Stage, journal and carry out one change to one channel root (the caller holds the lock)."""
    state = channel_dir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="staging-", dir=state))
    changes = {}

    def change(subdir):
        return changes.setdefault(subdir, {"add": {}, "drop": []})

    try:
        for pkg in add:
            (stage / pkg.subdir).mkdir(exist_ok=True)
            _copy_checked(pkg, stage / pkg.subdir / pkg.filename)
            change(pkg.subdir)["add"][pkg.filename] = package_record(pkg, stage)
        for subdir, filename in drop:
            change(subdir)["drop"].append(filename)
        if not (root / "noarch" / REPODATA).exists():
            change("noarch")  # conda clients need noarch/repodata.json even when it is empty
        journal = {
            "root": root.relative_to(channel_dir).as_posix(),
            "stage": stage.name,
            "subdirs": changes,
        }
        _write_atomic(state / JOURNAL, json.dumps(journal, sort_keys=True).encode("utf-8"), state)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    _roll_forward_or_say(channel_dir, journal)


def _roll_forward_or_say(channel_dir, journal, recovering=False):
    """_roll_forward; an OSError becomes one line with the cause and the way out (the journal stays)."""
    try:
        _roll_forward(channel_dir, journal, recovering=recovering)
    except OSError as exc:
        path = channel_dir / STATE_DIR / JOURNAL
        raise Failure(
            f"a channel change is pending and cannot be finished ({os_error_line(exc)}): fix that (free "
            f"space; a path that must be a folder) and run any channel command to finish it, or delete "
            f"{path} to abandon it, then run `torchwin channel verify`"
        ) from None


def recover(channel_dir):
    """Finish the change a killed command journaled, and clear staging leftovers (caller holds the lock).

    Returns the journal it finished, or None.
    """
    channel_dir = Path(channel_dir)
    state = channel_dir / STATE_DIR
    path = state / JOURNAL
    journal = None
    if path.exists():
        journal = _read_journal(path)
        count = sum(len(c["add"]) + len(c["drop"]) for c in journal["subdirs"].values())
        _roll_forward_or_say(channel_dir, journal, recovering=True)
        print(
            f"torchwin: finished an interrupted channel update ({count} file(s) in "
            f"{journal['root']}), left by a command that was killed or failed",
            file=sys.stderr,
            flush=True,
        )
    if state.is_dir():
        for leftover in state.glob("staging-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in state.glob("tmp-*"):
            leftover.unlink(missing_ok=True)
    return journal


def _read_journal(path):
    """The journal, checked: it names only folders and files inside the channel."""
    try:
        journal = json.loads(path.read_text(encoding="utf-8"))
        root, stage, subdirs = journal["root"], journal["stage"], journal["subdirs"]
        parts = root.split("/")
        ok = root == "." or (len(parts) == 2 and parts[0] == "label" and _LABEL_NAME.match(parts[1]))
        ok = ok and re.match(r"^staging-[A-Za-z0-9_]+$", stage) is not None
        for subdir, change in subdirs.items():
            ok = ok and subdir in KNOWN_SUBDIRS
            ok = ok and all(safe_filename(f) for f in list(change["add"]) + list(change["drop"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Failure(f"{path}: unreadable channel journal ({exc}); move it away and run `channel verify`") from None
    if not ok:
        raise Failure(f"{path}: the channel journal names paths outside the channel; move it away")
    return journal


def _roll_forward(channel_dir, journal, recovering=False):
    """Step 3 of the module docstring; safe to run again from any point it was killed at."""
    state = channel_dir / STATE_DIR
    root = channel_dir / journal["root"]
    stage = state / journal["stage"]
    for subdir, change in sorted(journal["subdirs"].items()):
        folder = root / subdir
        folder.mkdir(parents=True, exist_ok=True)
        adds, drops = change["add"], set(change["drop"])
        going = drops | set(adds)
        live = read_repodata(root, subdir)
        if going & set(records_of(live)):
            _write_repodata(folder, _without(live, going), state)
        for filename in adds:
            staged = stage / subdir / filename
            if staged.exists():
                _replace(staged, folder / filename)
        live = read_repodata(root, subdir)
        final = _without(live, going)
        for filename, record in sorted(adds.items()):
            if _holds(folder / filename, record, recovering):
                section = "packages.conda" if filename.endswith(".conda") else "packages"
                final.setdefault(section, {})[filename] = record
        # A plain remove was already published by 3a; a recovery rewrites both files in any case,
        # since the kill may have fallen between the .zst and the .json.
        if recovering or final != live or not (folder / REPODATA).exists():
            _write_repodata(folder, final, state)
        for filename in sorted(drops):
            if (folder / filename).exists() and not _is_added(folder, filename, adds):
                _unlink(folder / filename)
        stale = folder / STALE_SHARDS
        if stale.exists():
            _unlink(stale)
    _unlink(state / JOURNAL)
    shutil.rmtree(stage, ignore_errors=True)


def _is_added(folder, filename, adds):
    """On a case-insensitive file system a dropped twin (Hello-...) may be the file just added (hello-...)."""
    return any(a != filename and a.casefold() == filename.casefold() and (folder / a).exists()
               and os.path.samefile(folder / a, folder / filename) for a in adds)


def _holds(path, record, recovering):
    """Is path the file record describes? After a kill the rename may not have happened: then hash it."""
    if not path.is_file():
        return False
    if not recovering:
        return path.stat().st_size == record.get("size")
    sha256, _md5, size = file_digests(path)
    return (sha256, size) == (record.get("sha256"), record.get("size"))


def _without(repodata, names):
    repodata = dict(repodata)
    for section in ("packages", "packages.conda"):
        repodata[section] = {k: v for k, v in (repodata.get(section) or {}).items() if k not in names}
    repodata.setdefault("repodata_version", 1)
    return repodata


def _write_repodata(folder, repodata, state):
    """Replace folder's repodata.json.zst, then repodata.json, each whole (written in state/, then renamed)."""
    text = json.dumps(repodata, sort_keys=True, separators=(",", ":")).encode("utf-8")
    # A low level: repodata is rewritten on every add, and level 3 already takes it to ~1/10.
    for name, data in ((REPODATA_ZST, _zstd().compress(text, level=3)), (REPODATA, text)):
        tmp = state / f"tmp-{name}"
        tmp.write_bytes(data)
        os.chmod(tmp, 0o644)
        _replace(tmp, folder / name)


def _write_atomic(path, data, state):
    tmp = state / f"tmp-{path.name}"
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    _replace(tmp, path)


def _zstd():
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd


def _copy_checked(pkg, dest):
    """Copy pkg into the staging folder, hashing on the way: it must still be the file we checked."""
    digest = hashlib.sha256()
    with open(pkg.path, "rb") as src, open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != pkg.sha256:
        raise Failure(f"{pkg.path} changed while it was being added to the channel")
    # rattler-build writes packages with mode 0600; a channel served to others needs them readable.
    os.chmod(dest, 0o644)


# On Windows a file another process has open (a download in progress, `channel serve`
# reading repodata.json) cannot be replaced or deleted for a moment: PermissionError.
# Readers hold files briefly, so try again for a while before giving up.
_BUSY_TRIES = 100
_BUSY_WAIT = 0.1


def _replace(src, dst):
    for attempt in range(_BUSY_TRIES):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == _BUSY_TRIES - 1:
                raise Failure(f"{dst} stayed in use by another process; could not replace it") from None
            time.sleep(_BUSY_WAIT)


def _unlink(path):
    for _attempt in range(_BUSY_TRIES):
        try:
            path.unlink(missing_ok=True)
            return
        except PermissionError:
            time.sleep(_BUSY_WAIT)
    # The index no longer names it, so the channel is consistent; `channel verify` reports the leftover.
    print(f"torchwin: warning: {path} is in use and was left behind; delete it later")

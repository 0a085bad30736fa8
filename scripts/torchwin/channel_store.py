"""The local channel on disk: layout, the lock, and atomic add/remove with a py-rattler re-index.

Layout: label main is DIR/<subdir>/, any other label L is DIR/label/L/<subdir>/,
each a complete conda channel (with noarch/). DIR/.torchwin/ holds the lock
file and short-lived staging folders; it is never served.

How an update stays atomic for readers (a conda client, `torchwin channel serve`):
1. Under the channel lock, a staging folder is built on the same disk: hard links
   to the packages already there, the new packages copied in (mode 0644),
   and the current repodata.json minus the entries being replaced or removed.
   Adding files under new names takes a shorter road: the staging folder holds
   only the new packages, the indexer records just those, and their records are
   merged into a copy of the live repodata. Its cost then follows the new
   packages, not the channel's size (benchmarks/run.py measures both).
2. py-rattler's indexer runs on the staging folder. (It writes each file through
   <root>/.tmp/ and a rename, so each file alone is whole; but on the live folder
   a bad package would already sit in the channel, a failure between its writes
   would leave .zst and .json disagreeing, and a --force replacement would keep
   the old record, since it reuses records by file name.)
3. New package files are renamed into place first, then repodata.json.zst and
   repodata.json, each with os.replace: a reader sees the old or the new file,
   whole, and every file a repodata.json names is already there.
   Removed package files are deleted only after the new repodata is in place.
Anything that fails before step 3 leaves the channel exactly as it was.

Indexer settings: repodata.json.zst is written (conda and rattler clients fetch
it first; one more whole file to swap), sharded repodata (CEP 16) is not: it is
made for channels with many thousands of records, and its shard files named by
content would need their own ordering and garbage collection to stay consistent
for readers. A stale shard index would shadow repodata.json for rattler
clients, so one left from elsewhere is deleted on each update.
"""

import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rattler.index import index_fs
from rattler.platform import Subdir

from torchwin.channel_config import MAIN
from torchwin.errors import Failure, UserError
from torchwin.lock import FileLock
from torchwin.package_check import EXTENSIONS, KNOWN_SUBDIRS, check_package, file_digest

STATE_DIR = ".torchwin"
REPODATA = "repodata.json"
REPODATA_ZST = "repodata.json.zst"
STALE_SHARDS = "repodata_shards.msgpack.zst"
_CHUNK = 1 << 20


def label_root(channel_dir, label):
    """The folder that is the conda channel for label: DIR for main, DIR/label/<L> otherwise."""
    channel_dir = Path(channel_dir)
    return channel_dir if label in (None, MAIN) else channel_dir / "label" / label


def label_roots(channel_dir):
    """[(label, root)] for main and each label folder present under DIR/label/."""
    channel_dir = Path(channel_dir)
    roots = [(MAIN, channel_dir)]
    labels_dir = channel_dir / "label"
    if labels_dir.is_dir():
        roots += [(p.name, p) for p in sorted(labels_dir.iterdir()) if p.is_dir()]
    return roots


def subdirs_of(root):
    """Platform folders of one channel root, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in KNOWN_SUBDIRS)


def read_repodata(root, subdir):
    """The parsed repodata.json of root/subdir, or an empty one when there is none yet."""
    path = root / subdir / REPODATA
    if not path.exists():
        return {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Failure(f"{path}: unreadable repodata ({exc})") from None


def records_of(repodata):
    """{filename: record} over both the .tar.bz2 and the .conda sections."""
    records = dict(repodata.get("packages") or {})
    records.update(repodata.get("packages.conda") or {})
    return records


def iter_records(channel_dir):
    """(label, root, subdir, filename, record) for every package the channel's repodata names."""
    for label, root in label_roots(channel_dir):
        for subdir in subdirs_of(root):
            for filename, record in sorted(records_of(read_repodata(root, subdir)).items()):
                yield label, root, subdir, filename, record


def channel_lock(channel_dir, timeout=3600.0):
    def say(path):
        print(
            f"torchwin: waiting for the channel lock {path} (another channel update is running)", flush=True
        )

    return FileLock(Path(channel_dir) / STATE_DIR / "lock", timeout=timeout, on_wait=say)


def add_packages(channel_dir, files, label=MAIN, force=False):
    """Check, copy and index package files into label of the channel; return their paths there.

    label must already be validated against channel.yaml. A bad package raises
    UserError before the channel is touched; a file name already in the channel
    with other content is refused unless force.
    """
    channel_dir = Path(channel_dir)
    packages = [check_package(f) for f in files]
    seen = {}
    for pkg in packages:
        other = seen.setdefault((pkg.subdir, pkg.filename), pkg)
        if other.sha256 != pkg.sha256:
            raise UserError(f"{other.path} and {pkg.path}: same file name, different content")
    root = label_root(channel_dir, label)
    channel_dir.mkdir(parents=True, exist_ok=True)
    with channel_lock(channel_dir):
        to_copy = []
        unindexed = False
        for pkg in {(p.subdir, p.filename): p for p in packages}.values():
            dest = root / pkg.subdir / pkg.filename
            existing = file_digest(dest)[0] if dest.exists() else None
            if existing != pkg.sha256:
                if existing is not None and not force:
                    raise UserError(
                        f"{pkg.path}: {pkg.subdir}/{pkg.filename} is already in label {label} with other "
                        f"content (sha256 {existing[:12]}..., new {pkg.sha256[:12]}...); "
                        "pass --force to replace it"
                    )
                to_copy.append(pkg)
            else:
                record = records_of(read_repodata(root, pkg.subdir)).get(pkg.filename)
                # Present but not indexed: left by a run killed between its two renames.
                unindexed |= not record or record.get("sha256") != pkg.sha256
        if to_copy or unindexed:
            _commit(channel_dir, root, packages, add=to_copy, drop=())
    return [root / p.subdir / p.filename for p in packages]


def remove_packages(channel_dir, label, victims):
    """Remove [(subdir, filename)] from label's channel: new repodata first, then the files."""
    with channel_lock(channel_dir):
        return remove_locked(channel_dir, label, victims)


def remove_locked(channel_dir, label, victims):
    """remove_packages for a caller that already holds the channel lock."""
    channel_dir = Path(channel_dir)
    root = label_root(channel_dir, label)
    present = [(s, f) for s, f in victims if (root / s / f).exists()]
    if present:
        _commit(channel_dir, root, [], add=(), drop=present)
    return [root / s / f for s, f in present]


def _commit(channel_dir, root, packages, add, drop):
    """Stage, index and publish one change to one channel root (caller holds the lock)."""
    drop_by_subdir = {}
    for subdir, filename in drop:
        drop_by_subdir.setdefault(subdir, set()).add(filename)
    add_by_subdir = {}
    for pkg in add:
        add_by_subdir.setdefault(pkg.subdir, []).append(pkg)
    subdirs = set(drop_by_subdir) | set(add_by_subdir) | {p.subdir for p in packages} | {"noarch"}

    state = channel_dir / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    for leftover in state.glob("staging-*"):  # from a killed run; we hold the lock, so nobody uses it
        shutil.rmtree(leftover, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix="staging-", dir=state))
    # Only new names: nothing in the live repodata changes, records are only added.
    only_new = bool(add) and not drop and not any((root / p.subdir / p.filename).exists() for p in add)
    try:
        for subdir in sorted(subdirs):
            if only_new:
                (stage / subdir).mkdir(parents=True)
            else:
                replaced = {p.filename for p in add_by_subdir.get(subdir, [])}
                _stage_subdir(root / subdir, stage / subdir, replaced, drop_by_subdir.get(subdir, set()))
        for pkg in add:
            _copy_checked(pkg, stage / pkg.subdir / pkg.filename)
        changed = []
        for subdir in sorted(subdirs):  # noarch too: conda clients need it even when it is empty
            if only_new and subdir not in add_by_subdir and (root / subdir / REPODATA).exists():
                continue  # nothing new here: the live repodata stays as it is
            _index(stage, subdir)
            if only_new:
                _merge_into_live(root, stage, subdir)
            changed.append(subdir)
        # The indexer also writes stage/noarch on its own; only what we meant to change is published.
        subdirs = set(changed)
        for pkg in packages:
            indexed_in = stage if pkg.subdir in subdirs else root  # a subdir left alone keeps its live index
            record = records_of(read_repodata(indexed_in, pkg.subdir)).get(pkg.filename)
            if record is None or record.get("sha256") != pkg.sha256:
                raise Failure(f"indexing {pkg.filename} did not record its sha256 {pkg.sha256}")
        _publish(stage, root, sorted(subdirs), add, drop)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _stage_subdir(live, staged, replaced, dropped):
    """staged/ = hard links to live/'s packages (minus replaced/dropped) + its repodata minus those."""
    staged.mkdir(parents=True)
    if not live.is_dir():
        return
    for entry in live.iterdir():
        is_package = entry.is_file() and entry.name.endswith(EXTENSIONS)
        if is_package and entry.name not in replaced and entry.name not in dropped:
            _link_or_copy(entry, staged / entry.name)
    repodata_path = live / REPODATA
    if repodata_path.exists():
        repodata = read_repodata(live.parent, live.name)
        for section in ("packages", "packages.conda"):
            for name in replaced | dropped:
                (repodata.get(section) or {}).pop(name, None)
        # The indexer reuses these records for files it finds, so it reads only new packages.
        (staged / REPODATA).write_text(json.dumps(repodata), encoding="utf-8")


def _merge_into_live(root, stage, subdir):
    """stage/subdir's repodata = the live repodata plus the records just indexed in stage."""
    merged = read_repodata(root, subdir)
    new = read_repodata(stage, subdir)
    for section in ("packages", "packages.conda"):
        merged.setdefault(section, {}).update(new.get(section) or {})
    text = json.dumps(merged, sort_keys=True, separators=(",", ":")).encode("utf-8")
    (stage / subdir / REPODATA).write_bytes(text)
    # A low level: repodata is rewritten on every add, and level 3 already takes it to ~1/10.
    (stage / subdir / REPODATA_ZST).write_bytes(_zstd().compress(text, level=3))


def _zstd():
    if sys.version_info >= (3, 14):
        from compression import zstd
    else:
        from backports import zstd
    return zstd


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: a copy is slower but as good
        shutil.copy2(src, dst)


def _copy_checked(pkg, dest):
    """Copy pkg into the staging folder, hashing on the way: it must still be the file we checked."""
    digest = hashlib.sha256()
    with open(pkg.path, "rb") as src, open(dest, "wb") as out:
        for chunk in iter(lambda: src.read(_CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != pkg.sha256:
        raise Failure(f"{pkg.path} changed while it was being added to the channel")
    # rattler-build writes packages with mode 0600; a channel served to others needs them readable.
    os.chmod(dest, 0o644)


def _index(stage, subdir):
    try:
        asyncio.run(
            index_fs(stage, target_platform=Subdir(subdir), write_zst=True, write_shards=False, force=False)
        )
    # The indexer surfaces Rust errors (and panics) as several exception types; any of them means
    # the index failed, and the caller throws the staging folder away.
    except Exception as exc:  # noqa: BLE001
        raise Failure(f"indexing the channel failed ({str(exc).strip().splitlines()[0]})") from None


def _publish(stage, root, subdirs, add, drop):
    for subdir in subdirs:
        (root / subdir).mkdir(parents=True, exist_ok=True)
    for pkg in add:
        _replace(stage / pkg.subdir / pkg.filename, root / pkg.subdir / pkg.filename)
    for subdir in subdirs:
        for name in (REPODATA_ZST, REPODATA):
            staged = stage / subdir / name
            if staged.exists():
                os.chmod(staged, 0o644)
                _replace(staged, root / subdir / name)
        stale = root / subdir / STALE_SHARDS
        if stale.exists():
            _unlink(stale)
    for subdir, filename in drop:
        path = root / subdir / filename
        if path.exists():
            _unlink(path)


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

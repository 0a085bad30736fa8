"""`torchwin channel`: the local conda channel (channel/local): add, remove, prune, verify, page, serve.

Also the API the build step calls: add_packages(), default_channel_dir(),
load_channel_config(). The mechanics (lock, staging, index) live in
channel_store.py, the web page in channel_page.py, the server in channel_serve.py.
"""

import argparse
import os
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from rattler import Channel, MatchSpec, RepoData, Version
from rattler.exceptions import InvalidMatchSpecError

from torchwin.channel import retention
from torchwin.channel import store as channel_store
from torchwin.channel.config import load_channel_config
from torchwin.channel.package_check import (
    EXTENSIONS,
    KNOWN_SUBDIRS,
    check_pinned_labels,
    file_digest,
    split_filename,
)
from torchwin.channel.package_read import ZSTD
from torchwin.checkout import require_repo_root
from torchwin.errors import Failure, UserError

__all__ = ["add_packages", "default_channel_dir", "load_channel_config"]

DESCRIPTION = """\
Manage the local conda channel that `torchwin build` fills and users install from.

Layout: label main is DIR/<subdir>/, another label L is DIR/label/L/<subdir>/,
each with its repodata.json (+ .zst), records as py-rattler's indexer writes
them. Every change takes the channel lock, journals itself and replaces
repodata atomically, so readers (conda, `channel serve`) never see a
half-written channel, and the next command finishes a change whose process
was killed. Labels and retention come from channel/channel.yaml.
"""

EPILOG = """\
examples:
  torchwin channel add output/win-64/pytorch-1.0.0-py36_cuda90_cudnn7_201.conda
  torchwin channel add --label nightly output/win-64/*.conda
  torchwin channel remove "pytorch 1.0.0 py36_cpu*" --platform win-64
  torchwin channel prune --dry-run
  torchwin channel verify
  torchwin channel page && torchwin channel serve --port 8000
  conda install -c http://127.0.0.1:8000/ pytorch cuda90
"""


def default_channel_dir():
    """channel/local of this checkout, or $TORCHWIN_CHANNEL_DIR when set."""
    env = os.environ.get("TORCHWIN_CHANNEL_DIR")
    if env:
        return Path(env)
    return require_repo_root("or pass --channel-dir DIR or set TORCHWIN_CHANNEL_DIR") / "channel" / "local"


def add_packages(channel_dir, files, label=None, force=False, config=None):
    """Check and add package files to the channel (label main when None); return their channel paths.

    Raises UserError for a bad package or unknown label, leaving the channel
    unchanged; waits for the channel lock; re-indexes with py-rattler.
    """
    config = config or load_channel_config()
    label = config.check_label(label)
    return channel_store.add_packages(Path(channel_dir), [Path(f) for f in files], label=label, force=force)


def find_packages(channel_dir, specs, label, platform=None):
    """[(subdir, filename)] in label's channel matching any of specs (file names or match specs)."""
    root = channel_store.label_root(channel_dir, label)
    matchers = []
    for spec in specs:
        if spec.endswith(EXTENSIONS):
            matchers.append(("file", spec.replace("\\", "/")))
        else:
            try:
                matchers.append(("spec", MatchSpec(spec)))
            except InvalidMatchSpecError as exc:
                raise UserError(f"{spec!r} is not a package file name or match spec ({exc})") from None
    found = []
    for subdir in channel_store.subdirs_of(root):
        if platform is not None and subdir != platform:
            continue
        path = root / subdir / channel_store.REPODATA
        if not path.exists():
            continue
        channel_store.read_repodata(root, subdir)  # its shape, in one line
        try:
            records = RepoData.from_path(path).into_repo_data(Channel(root.resolve().as_uri()))
        except Exception as exc:  # noqa: BLE001 - rattler's parse errors have several types
            raise Failure(f"{path}: malformed repodata ({str(exc).strip().splitlines()[0]})") from None
        for record in records:
            if not channel_store.safe_filename(record.file_name):
                message = channel_store.unsafe_name_message(f"{label}/{subdir}", record.file_name)
                print(f"torchwin: warning: {message}", file=sys.stderr)
                continue
            for kind, matcher in matchers:
                if kind == "file":
                    hit = matcher in (record.file_name, f"{subdir}/{record.file_name}")
                else:
                    hit = matcher.matches(record)
                if hit:
                    found.append((subdir, record.file_name))
                    break
    return sorted(found)


def prune_plan(channel_dir, config, labels=None, now=None):
    """[(retention.Build, reason)] for the local channel, per channel.yaml's retention rules.

    Name, version and build come from the file name (which the shared rule checked), not from
    fields another tool may have written; a record whose version does not parse is kept and said.
    """
    builds = []
    for label, root, subdir, filename, rec in channel_store.iter_records(channel_dir):
        if label not in config.retention or (labels and label not in labels):
            continue
        name, version, build, _ext = split_filename(filename)
        try:
            Version(version)
        except Exception:  # noqa: BLE001 - rattler's parse errors have several types
            print(f"torchwin: warning: {label}/{subdir}/{filename}: version {version!r} does not parse; kept",
                  file=sys.stderr)
            continue
        stamp = retention.from_millis(rec.get("timestamp"))
        if stamp is None and (root / subdir / filename).exists():
            # No timestamp in index.json: the time the file arrived is the next best age.
            stamp = datetime.fromtimestamp((root / subdir / filename).stat().st_mtime, timezone.utc)
        number = rec.get("build_number")
        builds.append(
            retention.Build(
                label=label,
                subdir=subdir,
                filename=filename,
                name=name,
                version=version,
                build=build,
                build_number=number if isinstance(number, int) and not isinstance(number, bool) else 0,
                timestamp=stamp,
            )
        )
    return retention.plan(builds, config.retention, now=now)


def verify(channel_dir):
    """Problems found in the channel: files vs repodata (existence, size, sha256), .zst vs .json,
    repodata's shape, a pending change."""
    problems = []
    pending = channel_store.pending_change(channel_dir)
    if pending:
        problems.append(f"{pending}; run a channel command that writes (e.g. `channel prune --label main`) "
                        "to finish it, or see the line it prints")
    checked = 0
    for label, root in channel_store.label_roots(channel_dir):
        for subdir in channel_store.subdirs_of(root):
            folder = root / subdir
            where = f"{label}/{subdir}"
            repodata_path = folder / channel_store.REPODATA
            on_disk = {p.name for p in folder.iterdir() if p.name.endswith(EXTENSIONS) and p.is_file()}
            if not repodata_path.exists():
                if on_disk:
                    problems.append(f"{where}: {len(on_disk)} package file(s) but no repodata.json")
                continue
            try:
                repodata = channel_store.read_repodata(root, subdir)
            except Failure as exc:
                problems.append(str(exc))
                continue
            records = channel_store.records_of(repodata)
            for filename, rec in sorted(records.items()):
                checked += 1
                if not channel_store.safe_filename(filename):
                    problems.append(channel_store.unsafe_name_message(where, filename))
                    continue
                path = folder / filename
                if not path.is_file():
                    problems.append(f"{where}/{filename}: in repodata.json but the file is missing")
                    continue
                sha256, size = file_digest(path)
                if rec.get("size") != size or isinstance(rec.get("size"), bool):
                    problems.append(f"{where}/{filename}: size {size}, repodata.json says {rec.get('size')}")
                if rec.get("sha256") != sha256:
                    problems.append(
                        f"{where}/{filename}: sha256 {sha256}, repodata.json says {rec.get('sha256')}"
                    )
                if rec.get("subdir") not in (None, subdir):
                    problems.append(f"{where}/{filename}: record says subdir {rec.get('subdir')}")
            for filename in sorted(on_disk - set(records)):
                problems.append(f"{where}/{filename}: file is not in repodata.json")
            problems += _check_zst(folder, where, repodata_path)
    return checked, problems


def _check_zst(folder, where, repodata_path):
    zstd = ZSTD
    zst = folder / channel_store.REPODATA_ZST
    if not zst.exists() or zstd is None:
        return []
    try:
        same = zstd.decompress(zst.read_bytes()) == repodata_path.read_bytes()
    except zstd.ZstdError as exc:  # a damaged frame
        return [f"{where}/repodata.json.zst: cannot be decompressed ({exc})"]
    return [] if same else [f"{where}/repodata.json.zst: differs from repodata.json"]


# ---------------------------------------------------------------- command line


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "channel",
        help="the local conda channel: add, remove, prune, verify, page, serve",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--channel-dir", metavar="DIR", type=_channel_dir, help="the channel folder (default: channel/local)"
    )
    common.add_argument(
        "--config", metavar="FILE", type=Path, help="channel config (default: channel/channel.yaml)"
    )
    sub = parser.add_subparsers(dest="channel_command", metavar="ACTION")
    sub.required = True
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "add",
        parents=[common],
        formatter_class=fmt,
        help="check package files and add them to the channel",
        description=_wrap(
            "Check each package (the archive reads to its end, members safe to extract, payload "
            "matches info/paths.json, info/index.json agrees with the file name and folder), copy it in "
            "with mode 0644 and add its record. A file name already present with other content is "
            "refused unless --force."
        ),
        epilog="example:\n  torchwin channel add --label nightly output/win-64/pytorch-*.tar.bz2",
    )
    p.add_argument("files", nargs="+", metavar="FILE", type=Path, help=".conda or .tar.bz2 package files")
    p.add_argument("--label", metavar="L", help="label from channel.yaml (default: main)")
    p.add_argument("--force", action="store_true", help="replace a file that exists with other content")
    p.set_defaults(channel_func=run_add)

    p = sub.add_parser(
        "remove",
        parents=[common],
        formatter_class=fmt,
        help="remove packages matching a spec or file name",
        description=_wrap(
            "Remove the package files of a label that match SPEC: a file name "
            "(pytorch-1.0.0-py36_cpu_1.conda, optionally win-64/...) or a conda match spec."
        ),
        epilog="examples:\n  torchwin channel remove pytorch-1.0.0-py36_cpu_1.conda\n"
        '  torchwin channel remove --label nightly "pytorch 1.1.0.dev20190401"',
    )
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--label", metavar="L", help="label from channel.yaml (default: main)")
    p.add_argument("--platform", metavar="SUBDIR", help="only this subdir, e.g. win-64")
    p.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    p.set_defaults(channel_func=run_remove)

    p = sub.add_parser(
        "prune",
        parents=[common],
        formatter_class=fmt,
        help="apply channel.yaml's retention (old nightlies go)",
        description=_wrap(
            "Remove builds the retention rules of channel.yaml let go, printing each with "
            "its reason. The newest keep_newest builds per package, platform and variant always stay; "
            "main is never pruned."
        ),
        epilog="example:\n  torchwin channel prune --dry-run",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would go, change nothing")
    p.add_argument("--label", metavar="L", action="append", help="only this label (repeatable)")
    p.set_defaults(channel_func=run_prune)

    p = sub.add_parser(
        "verify",
        parents=[common],
        formatter_class=fmt,
        help="check every file against repodata (sha256, size)",
        description=_wrap(
            "Check that every file named in repodata.json exists with its recorded size and "
            "sha256, that no package file is left out, and that repodata.json.zst matches. Exit 1 when not."
        ),
    )
    p.set_defaults(channel_func=run_verify)

    p = sub.add_parser(
        "page",
        parents=[common],
        formatter_class=fmt,
        help="write the channel's static index.html",
        description=_wrap(
            "Write DIR/index.html: per PyTorch version a platform/Python x CUDA/CPU matrix "
            "with the install command, size, date and nightly age of each build. No external assets."
        ),
        epilog="example:\n  torchwin channel page --channel-url https://conda.anaconda.org/torchwin",
    )
    p.add_argument("--output", metavar="FILE", type=Path, help="where to write (default: DIR/index.html)")
    p.add_argument(
        "--channel-url", metavar="URL", help="channel in the install commands (default: the channel name)"
    )
    p.set_defaults(channel_func=run_page)

    p = sub.add_parser(
        "serve",
        parents=[common],
        formatter_class=fmt,
        help="serve the channel over HTTP on 127.0.0.1",
        description=_wrap("Serve DIR read-only on http://127.0.0.1:PORT/ until Ctrl+C. Its page (/) is "
                          "rendered on each request, its install commands naming this server."),
        epilog="example:\n  torchwin channel serve --port 8000\n"
        "  conda install -c http://127.0.0.1:8000/ pytorch",
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    p.add_argument("--quiet", action="store_true", help="do not log each request")
    p.set_defaults(channel_func=run_serve)

    parser.set_defaults(func=run)


def _channel_dir(text):
    """--channel-dir: "" would make the working folder a channel."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name; give the channel folder")
    return Path(text)


def _wrap(text):
    """Fill a description to 78 columns: the raw formatter (kept for the epilog examples) does not."""
    return textwrap.fill(text, 78)


def run(args):
    _tolerant_output()
    try:
        return args.channel_func(args)
    except OSError as exc:  # ENOSPC, EROFS, EACCES...: one line, not a traceback
        raise Failure(f"channel {args.channel_command}: {channel_store.os_error_line(exc)}") from None


def _tolerant_output():
    """A path the console cannot encode (a non-ASCII name under cp1252) is shown escaped, never a crash."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):  # not a TextIOWrapper (pytest's capture), or closed
            pass


def _dir(args):
    return args.channel_dir if args.channel_dir is not None else default_channel_dir()


def run_add(args):
    config = load_channel_config(args.config)
    label = config.check_label(args.label)
    check_pinned_labels([Path(f) for f in args.files if Path(f).is_file()], label, config, skip_unreadable=True)
    paths = add_packages(_dir(args), args.files, label=label, force=args.force, config=config)
    for path in paths:
        print(f"in channel (label {label}): {path.parent.name}/{path.name}")
    return 0


def run_remove(args):
    config = load_channel_config(args.config)
    label = config.check_label(args.label)
    channel_dir = _dir(args)
    if args.platform is not None and args.platform not in KNOWN_SUBDIRS:
        raise UserError(f"--platform {args.platform!r}: unknown platform; allowed: a conda subdir such as "
                        "win-64, linux-64, osx-64, noarch")
    with channel_store.session(channel_dir, writes=not args.dry_run) as finished:
        victims = find_packages(channel_dir, args.specs, label, args.platform)
        if not victims and _finished_removal(finished, channel_dir, label):
            # The same command, run again after it was killed: finishing its journal removed them.
            print("nothing left to remove: the interrupted update just finished removed them")
            return 0
        if not victims:
            raise UserError(f"no package in label {label} matches {' '.join(args.specs)}")
        for subdir, filename in victims:
            verb = "would remove" if args.dry_run else "remove"
            print(f"{verb} {label}/{subdir}/{filename}")
        if not args.dry_run:
            channel_store.remove_locked(channel_dir, label, victims)
    return 0


def _finished_removal(journal, channel_dir, label):
    if journal is None:
        return False
    root = channel_store.label_root(channel_dir, label).relative_to(channel_dir).as_posix()
    return journal["root"] == root and any(c["drop"] for c in journal["subdirs"].values())


def run_prune(args):
    config = load_channel_config(args.config)
    for label in args.label or ():
        config.check_label(label)
    channel_dir = _dir(args)
    with channel_store.session(channel_dir, writes=not args.dry_run):
        plan = prune_plan(channel_dir, config, labels=args.label)
        verb = "would remove" if args.dry_run else "remove"
        for build, reason in plan:
            print(f"{verb} {build.label}/{build.subdir}/{build.filename} -- {reason}")
        if not plan:
            print("nothing to prune")
        if not args.dry_run:
            by_label = {}
            for build, _reason in plan:
                by_label.setdefault(build.label, []).append((build.subdir, build.filename))
            for label, victims in by_label.items():
                channel_store.remove_locked(channel_dir, label, victims)
    return 0


def run_verify(args):
    if args.config is not None:  # not needed to verify, but a wrong --config is a mistake to point out
        load_channel_config(args.config)
    channel_dir = _dir(args)
    with channel_store.session(channel_dir, writes=False):
        checked, problems = verify(channel_dir)
    for problem in problems:
        print(problem)
    if problems:
        raise Failure(f"channel {channel_dir}: {len(problems)} problem(s) in {checked} record(s)")
    print(f"ok: {checked} package file(s) in {channel_dir} match repodata.json")
    return 0


def run_page(args):
    from torchwin.channel.page import write_page

    config = load_channel_config(args.config)
    channel_dir = _dir(args)
    if args.output is not None and args.output.is_dir():
        raise UserError(f"--output {args.output}: a folder; give the file to write, e.g. {args.output / 'index.html'}")
    # A mistyped folder is refused, not created; write_page finishes a change a killed command left.
    channel_store.check_channel_dir(channel_dir)
    output, entries = write_page(channel_dir, config, channel_url=args.channel_url, output=args.output)
    print(f"wrote {output} ({len(entries)} package file(s))")
    return 0


def run_serve(args):
    from torchwin.channel.serve import make_server, server_url

    # For the page served live at / (its commands name this server); a wrong --config is refused,
    # a missing default one only leaves / to the folder's own index.html.
    try:
        config = load_channel_config(args.config)
    except UserError:
        if args.config is not None:
            raise
        config = None
    channel_dir = _dir(args)
    with channel_store.session(channel_dir, writes=False):
        pass  # only to finish a change a killed command left, before anything is served
    try:
        server = make_server(channel_dir, args.port, quiet=args.quiet, config=config)
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror or exc})") from None
    print(f"serving {channel_dir} at {server_url(server)} (Ctrl+C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0

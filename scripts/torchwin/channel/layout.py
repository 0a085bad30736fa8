"""The channel's layout on disk and how it is read: labels, platform folders, repodata, file names.

Label main is DIR/<subdir>/, any other label L is DIR/label/L/<subdir>/, each a complete conda
channel. Reading checks repodata's shape (a mapping of sections of records that are mappings)
and skips, with a warning, any record whose name breaks the one file-name rule every channel
command shares (package_check.file_name_problem): a record naming a path never reaches the file
system. The writing side (lock, journal, add, remove) is store.py's.
"""

import json
import sys
from pathlib import Path

from torchwin.channel.config import MAIN
from torchwin.channel.package_check import KNOWN_SUBDIRS, file_name_problem, split_filename
from torchwin.errors import Failure, UserError

REPODATA = "repodata.json"
STATE_DIR = ".torchwin"
JOURNAL = "journal.json"


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
    """The parsed repodata.json of root/subdir, or an empty one when there is none yet.

    A Failure (one line) unless it is a mapping whose packages sections are mappings of records
    that are mappings: what every command after it relies on.
    """
    path = root / subdir / REPODATA
    if not path.exists():
        return {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    try:
        repodata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Failure(f"{path}: unreadable repodata ({exc})") from None
    problem = repodata_shape_problem(repodata)
    if problem:
        raise Failure(f"{path}: malformed repodata ({problem}); restore it, or delete it and add the packages again")
    return repodata


def repodata_shape_problem(repodata):
    """None when repodata has the shape conda reads, else what is wrong, in a few words."""
    if not isinstance(repodata, dict):
        return f"a JSON {_kind(repodata)}, not an object"
    for section in ("packages", "packages.conda"):
        records = repodata.get(section)
        if records is None:
            continue
        if not isinstance(records, dict):
            return f"{section} is a JSON {_kind(records)}, not an object"
        for filename, record in records.items():
            if not isinstance(record, dict):
                return f"{section}[{filename!r}] is a JSON {_kind(record)}, not an object"
    return None


def _kind(value):
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def safe_filename(name):
    """True for a package file name every channel command accepts (package_check.file_name_problem's rule).

    A repodata record naming a path, or a name a shell would expand, never reaches the file system or the page.
    """
    return file_name_problem(name) is None


def unsafe_name_message(where, name):
    return f"{where}/repodata.json names {name!r} ({file_name_problem(name)}), which is not a plain file name; ignored"


def triple_key(filename):
    """(name, version, build) of a file name, folded as a case-insensitive file system would: one build."""
    name, version, build, _ext = split_filename(filename)
    return (name.casefold(), version.casefold(), build.casefold())


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
                if not safe_filename(filename):
                    print(f"torchwin: warning: {unsafe_name_message(f'{label}/{subdir}', filename)}", file=sys.stderr)
                    continue
                yield label, root, subdir, filename, record


def check_channel_dir(channel_dir, create=False):
    """A UserError unless channel_dir is a folder (or, with create, can become one); creates nothing."""
    channel_dir = Path(channel_dir)
    if channel_dir.exists() and not channel_dir.is_dir():
        raise UserError(f"{channel_dir}: not a folder (--channel-dir / TORCHWIN_CHANNEL_DIR must name a channel folder)")
    if not channel_dir.exists():
        if not create:
            raise UserError(f"{channel_dir}: no such channel folder (check --channel-dir / TORCHWIN_CHANNEL_DIR)")
        for parent in channel_dir.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise UserError(f"{channel_dir}: cannot be created, {parent} is a file")
                break


def os_error_line(exc):
    """An OSError as one line: what failed, on which path."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}"


def pending_change(channel_dir):
    """A line saying a journaled change is not finished yet, or None."""
    path = Path(channel_dir) / STATE_DIR / JOURNAL
    if not path.exists():
        return None
    return f"a channel change is pending: {path} is left by an update that did not finish"

"""Check one conda package file before it goes into a channel or to anaconda.org.

A package passes when:
- its container is exactly what conda's own readers expect: a .conda is a zip of
  exactly metadata.json, info-<stem>.tar.zst and pkg-<stem>.tar.zst (<stem> = the
  file name without .conda; conda-package-streaming and anaconda-client read the
  info member by that name, so any other or a second info-* could say something
  else than what we index), with nothing before or after the zip; a .tar.bz2 is
  one whole bzip2 stream;
- every tar member is safe to extract anywhere: a UTF-8 relative path without
  `..`, a file, folder, symlink or hard link whose target stays inside the
  package; no device or FIFO; no name twice; info/ only in the info part;
- its file name is exactly <name>-<version>-<build> of its info/index.json, each
  part within FILE_NAME_RULE (the one rule add, verify, remove, page and publish share:
  no character a shell or a file system reads specially), with a real platform
  (and arch) that agrees with the folder the file sits in, and depends that parse;
- every payload file has the sha256 and size info/paths.json lists for it, and
  paths.json lists every payload file: a damaged block inside a compressed
  stream whose container checksums were recomputed is caught here.
Everything is read as a stream, once; only the info files we parse are held in
memory. Its sha256, md5 and size are measured so the channel can record them.
The reading itself (size caps, member names) is package_read.py's.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rattler import MatchSpec
from rattler.package import IndexJson
from rattler.platform import Subdir

from torchwin.channel.package_read import (
    CHUNK,
    Contents,
    first_line,
    read_conda,
    read_info_file,
    read_tar_bz2,
)
from torchwin.errors import UserError

EXTENSIONS = (".conda", ".tar.bz2")
KNOWN_SUBDIRS = frozenset(str(p) for p in Subdir.all())


@dataclass(frozen=True)
class PackageFile:
    """What the channel needs to know about a checked package file."""

    path: Path
    filename: str
    name: str
    version: str
    build: str
    build_number: int
    subdir: str
    sha256: str
    size: int
    timestamp: datetime | None
    md5: str = ""
    index_json: bytes = b""  # the bytes of info/index.json, for the repodata record


# What a package file name's parts may hold: conda's own characters, and nothing a shell expands
# (`$`, backquote, `!`, `%`), a file system reads specially (`\\`, `:`, `/`) or a case-insensitive
# one folds. The name may contain '-'; version and build may not (they are split off at the last two).
_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9_.-]*$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9_.+]+$")
_BUILD_RE = re.compile(r"^[A-Za-z0-9_.+]+$")
FILE_NAME_RULE = "<name>-<version>-<build>.conda|.tar.bz2; name a-z 0-9 _ . -, version and build A-Z a-z 0-9 _ . +"
MAX_FILE_NAME = 200


def file_name_problem(filename):
    """None when filename follows FILE_NAME_RULE, else what is wrong: the one rule for every channel command."""
    if not isinstance(filename, str):
        return "not a string"
    parts = split_filename(filename)
    if parts is None:
        return f"not {FILE_NAME_RULE.split(';')[0]}"
    name, version, build, _ext = parts
    if len(filename) > MAX_FILE_NAME:
        return f"over {MAX_FILE_NAME} characters"
    for what, value, rule in (("name", name, _NAME_RE), ("version", version, _VERSION_RE), ("build", build, _BUILD_RE)):
        if not rule.match(value):
            return f"its {what} {value!r} has characters outside {FILE_NAME_RULE.split('; ', 1)[1]}"
    return None


def split_filename(filename):
    """'pytorch-1.0.0-py36_cpu_1.conda' -> ('pytorch', '1.0.0', 'py36_cpu_1', '.conda'), or None."""
    for ext in EXTENSIONS:
        if filename.endswith(ext):
            parts = filename[: -len(ext)].rsplit("-", 2)
            if len(parts) == 3 and all(parts):
                return parts[0], parts[1], parts[2], ext
            return None
    return None


def file_digest(path):
    """(sha256 hex, size) of a file, read in chunks."""
    sha256, _md5, size = file_digests(path)
    return sha256, size


def file_digests(path):
    """(sha256 hex, md5 hex, size) of a file in one read: what a repodata record carries."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    size = 0
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(CHUNK), b""):
            sha256.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return sha256.hexdigest(), md5.hexdigest(), size


def check_package(path):
    """Return a PackageFile for path, or raise UserError saying, in one line, what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such package file")
    parts = split_filename(path.name)
    if parts is None:
        raise UserError(
            f"{path}: not a conda package file name (expected <name>-<version>-<build>.conda or .tar.bz2)"
        )
    name, version, build, ext = parts
    problem = file_name_problem(path.name)
    if problem:
        raise UserError(f"{path}: file name refused: {problem}")
    contents = Contents(path)
    if ext == ".conda":
        read_conda(path, contents)
    else:
        read_tar_bz2(path, contents)
    index_bytes = contents.check_payload()
    try:
        index = IndexJson.from_str(index_bytes.decode("utf-8"))
    # rattler raises a different exception type per field that fails (IoError, InvalidVersionError, ...).
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"{path}: cannot read info/index.json ({first_line(exc)})") from None

    found = (index.name.source, str(index.version), str(index.build))
    if "-".join(found) + ext != path.name:
        raise UserError(f"{path}: info/index.json says {'-'.join(found)}, which does not match the file name (it must be "
                        f"{'-'.join(found)}{ext} exactly)")
    for spec in list(index.depends) + list(index.constrains):
        try:
            MatchSpec(spec)
        except Exception as exc:  # noqa: BLE001 - rattler's parse errors have several types
            raise UserError(f"{path}: info/index.json has a dependency {spec!r} that does not parse "
                            f"({first_line(exc)})") from None
    subdir = index.subdir
    if subdir not in KNOWN_SUBDIRS:
        raise UserError(f"{path}: info/index.json has subdir {subdir!r}, which is not a conda platform")
    _check_platform_fields(path, index, subdir)
    folder = path.parent.name
    if folder in KNOWN_SUBDIRS and folder != subdir:
        raise UserError(f"{path}: info/index.json says subdir {subdir} but the file is in a {folder} folder")
    sha256, md5, size = file_digests(path)
    return PackageFile(
        path=path,
        filename=path.name,
        name=index.name.normalized,
        version=str(index.version),
        build=str(index.build),
        build_number=int(index.build_number),
        subdir=subdir,
        sha256=sha256,
        size=size,
        timestamp=index.timestamp,
        md5=md5,
        index_json=index_bytes,
    )


def _check_platform_fields(path, index, subdir):
    """index.json's platform/arch (when present) must describe the same platform as its subdir."""
    if subdir == "noarch":
        return
    expected = Subdir(subdir).only_platform
    if index.platform is not None and index.platform != expected:
        raise UserError(f"{path}: info/index.json has platform {index.platform!r} but subdir {subdir}")
    arch = Subdir(subdir).arch
    if index.arch is not None and arch is not None and index.arch != str(arch):
        raise UserError(f"{path}: info/index.json has arch {index.arch!r} but subdir {subdir} is {arch}")


def about_extra(path):
    """The `extra` mapping of a package's info/about.json ({} when there is none)."""
    raw = read_info_file(path, "info/about.json")
    if raw is None:
        return {}
    try:
        extra = json.loads(raw).get("extra")
    except (ValueError, AttributeError) as exc:
        raise UserError(f"{path}: info/about.json is not a JSON mapping ({exc})") from None
    return extra if isinstance(extra, dict) else {}


def check_pinned_labels(paths, label, config, do="add it", outcome="nothing added", skip_unreadable=False):
    """Refuse, in one line, package files whose recipe keeps them in a label other than `label`.

    `skip_unreadable`: leave a damaged archive to check_package, whose message says what is wrong.
    """
    wrong = []
    for path in paths:
        try:
            extra = about_extra(path)
        except UserError:
            if skip_unreadable:
                continue
            raise
        pinned = config.pinned_label(extra, f"{path}: info/about.json")
        if pinned is not None and pinned != label:
            wrong.append((path, pinned))
    if wrong:
        path, pinned = wrong[0]
        more = f" (and {len(wrong) - 1} more file(s))" if len(wrong) > 1 else ""
        raise UserError(f"{path}: its recipe keeps it in label {pinned} (extra.torchwin.label), not {label}"
                        f"{more}; {do} with --label {pinned}; {outcome}")

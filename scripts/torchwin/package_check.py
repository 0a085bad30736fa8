"""Check one conda package file before it goes into a channel or to anaconda.org.

A package passes when the archive reads to its end (every member of a .conda,
every block of a .tar.bz2), its info/index.json names the same package as the
file name, and its subdir is a real platform that agrees with the folder the
file sits in (when that folder is named like a platform). Its sha256 and size
are measured here so the channel can record and later verify them.
"""

import hashlib
import json
import tarfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rattler.exceptions import ExtractError, IoError
from rattler.package import IndexJson
from rattler.platform import Subdir

from torchwin.errors import UserError

EXTENSIONS = (".conda", ".tar.bz2")
_CHUNK = 1 << 20
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
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def check_package(path):
    """Return a PackageFile for path, or raise UserError saying what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such package file")
    parts = split_filename(path.name)
    if parts is None:
        raise UserError(
            f"{path}: not a conda package file name (expected <name>-<version>-<build>.conda or .tar.bz2)"
        )
    name, version, build, ext = parts
    if ext == ".conda":
        _read_conda_to_end(path)
    else:
        _read_tar_bz2_to_end(path)
    try:
        index = IndexJson.from_package_archive(path)
    except (ExtractError, IoError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read info/index.json ({_first_line(exc)})") from None

    found = (index.name.normalized, str(index.version), str(index.build))
    if found != (name.lower(), version, build):
        raise UserError(f"{path}: info/index.json says {'-'.join(found)}, which does not match the file name")
    subdir = index.subdir
    if subdir not in KNOWN_SUBDIRS:
        raise UserError(f"{path}: info/index.json has subdir {subdir!r}, which is not a conda platform")
    _check_platform_fields(path, index, subdir)
    folder = path.parent.name
    if folder in KNOWN_SUBDIRS and folder != subdir:
        raise UserError(f"{path}: info/index.json says subdir {subdir} but the file is in a {folder} folder")
    sha256, size = file_digest(path)
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
    )


def _check_platform_fields(path, index, subdir):
    """index.json's platform/arch (when present) must describe the same platform as its subdir."""
    if subdir == "noarch":
        return
    expected = Subdir(subdir).only_platform
    if index.platform is not None and index.platform != expected:
        raise UserError(f"{path}: info/index.json has platform {index.platform!r} but subdir {subdir}")


def _read_conda_to_end(path):
    """A .conda is a zip of metadata.json, info-*.tar.zst and pkg-*.tar.zst; read every member."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "metadata.json" not in names or not any(
                n.startswith("info-") and n.endswith(".tar.zst") for n in names
            ):
                raise UserError(f"{path}: not a .conda package (no metadata.json / info-*.tar.zst inside)")
            bad = archive.testzip()  # CRC of every member: catches corruption anywhere in the file
            if bad is not None:
                raise UserError(f"{path}: damaged .conda archive (member {bad} fails its CRC check)")
            zstd = ZSTD
            if zstd is not None:
                for member in names:
                    if member.endswith(".tar.zst"):
                        with archive.open(member) as raw, zstd.ZstdFile(raw) as stream:
                            _read_tar_stream(stream)
    except (zipfile.BadZipFile, OSError, EOFError, tarfile.TarError, *ZSTD_ERRORS) as exc:
        raise UserError(f"{path}: not a readable .conda archive ({_first_line(exc)})") from None


def _read_tar_bz2_to_end(path):
    try:
        with open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|bz2") as archive:
            count = _read_tar_members(archive)
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise UserError(f"{path}: not a readable .tar.bz2 archive ({_first_line(exc)})") from None
    if count == 0:
        raise UserError(f"{path}: not a readable .tar.bz2 archive (no files in it)")


def read_info_file(path, member_name):
    """The bytes of one info/ member (e.g. "info/about.json") of a .conda or .tar.bz2; None when absent."""
    path = Path(path)
    try:
        if path.name.endswith(".conda"):
            if ZSTD is None:
                raise UserError(f"{path}: reading a .conda needs zstd (Python 3.14, or pip install backports.zstd)")
            with zipfile.ZipFile(path) as archive:
                for name in archive.namelist():
                    if name.startswith("info-") and name.endswith(".tar.zst"):
                        with archive.open(name) as raw, ZSTD.ZstdFile(raw) as stream:
                            return _member_bytes(stream, member_name)
            return None
        with open(path, "rb") as raw:
            return _member_bytes(raw, member_name, mode="r|bz2")
    except (zipfile.BadZipFile, OSError, EOFError, tarfile.TarError, *ZSTD_ERRORS) as exc:
        raise UserError(f"{path}: cannot read {member_name} ({_first_line(exc)})") from None


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


def _member_bytes(stream, member_name, mode="r|"):
    with tarfile.open(fileobj=stream, mode=mode) as archive:
        for member in archive:
            if member.name == member_name and member.isfile():
                return archive.extractfile(member).read()
    return None


def _read_tar_stream(stream):
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        _read_tar_members(archive)


def _read_tar_members(archive):
    """Read each member's data: decompression errors and truncation only show when the bytes are read."""
    count = 0
    for member in archive:
        count += 1
        if member.isfile():
            handle = archive.extractfile(member)
            while handle.read(_CHUNK):
                pass
    return count


def _zstd_module():
    """zstd is in the standard library from Python 3.14; before that anaconda-client brings backports.zstd.

    Without either, a .conda is still checked by the CRCs of its zip members.
    """
    try:
        from compression import zstd
    except ImportError:
        try:
            from backports import zstd
        except ImportError:
            return None
    return zstd


ZSTD = _zstd_module()
ZSTD_ERRORS = (ZSTD.ZstdError,) if ZSTD is not None else ()


def _first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

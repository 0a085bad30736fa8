"""Read a conda package file's members the way package_check needs them: bounded, and never trusting a name.

A .conda (zip of info- and pkg- .tar.zst) or .tar.bz2 is read as a stream: every member's size is
capped (INFO_LIMITS for the info/ files the checks parse, OTHER_INFO_LIMIT for the rest of info/),
zip entries must lie inside the file, and a member name that is absolute, climbs out with `..`,
or is a link that points out of the package is refused, with its name shown safely.
A name must be canonical (no `./`, `/./`, `//`, trailing `/`): every check compares names as
written, and an extractor would write `./info/index.json` over `info/index.json`. Two info/ names
that differ only in case or Unicode form are refused too (one file on Windows and macOS).
A package holds at most MAX_MEMBERS members and MAX_TOTAL bytes of them; tarfile's own list
of members is emptied as it grows, so memory stays bounded by the caps.
"""

import bz2
import collections
import hashlib
import io
import json
import posixpath
import re
import struct
import tarfile
import unicodedata
import zipfile
from pathlib import Path

from torchwin.errors import UserError

CHUNK = 1 << 20


# Info files we read into memory, and their size limits. index.json becomes the
# package's repodata record, which every client downloads: a real one is under 4 KB.
# paths.json has one entry (~250 bytes) per file: PyTorch 1.1 has ~6,000 files,
# 64 MiB allows ~250,000. Anything else (about.json, metadata.json) is small text.
INFO_LIMITS = {"info/index.json": 1 << 20, "info/paths.json": 64 << 20}
OTHER_INFO_LIMIT = 1 << 20
# PyTorch 1.1 has ~6,000 members and ~2 GB unpacked; a big conda package has tens of thousands of
# files. A 0.9 MB .tar.bz2 of 400,000 empty folders is refused at the cap in ~14 s and ~60 MiB
# (before the caps: accepted, ~31 s and ~240 MiB, growing with every further member).
MAX_MEMBERS = 200_000
MAX_TOTAL = 64 << 30
_DRIVE = re.compile(r"^[A-Za-z]:")


def conda_members(filename):
    """The three members a .conda named filename must hold, by name."""
    stem = filename[: -len(".conda")]
    return "metadata.json", f"info-{stem}.tar.zst", f"pkg-{stem}.tar.zst"


def read_conda(path, contents):
    if ZSTD is None:
        raise UserError(f"{path}: reading a .conda needs zstd (Python 3.14, or pip install backports.zstd)")
    metadata, info, pkg = conda_members(path.name)
    try:
        _check_zip_bounds(path)
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if sorted(names) != sorted((metadata, info, pkg)):
                raise UserError(
                    f"{path}: a .conda holds exactly {metadata}, {info} and {pkg}; "
                    f"this one holds {', '.join(names) or 'nothing'}"
                )
            if min(i.header_offset for i in archive.infolist()) != 0:
                raise UserError(f"{path}: data before the zip archive")
            with archive.open(metadata) as stream:
                _read_limited(stream, OTHER_INFO_LIMIT, path, metadata)
            for member, part in ((info, "info"), (pkg, "pkg")):
                # Read to the end: the zip member's CRC is checked when its last byte is read.
                with archive.open(member) as raw, ZSTD.ZstdFile(raw) as stream:
                    _read_tar(stream, contents, member, part)
                    while raw.read(CHUNK):
                        pass
    except EOFError:
        raise UserError(f"{path}: truncated (a compressed stream ends early)") from None
    # zipfile says "damaged" in several ways: NotImplementedError for an unknown compression method,
    # ValueError/struct.error for impossible header fields.
    except (zipfile.BadZipFile, OSError, tarfile.TarError, NotImplementedError, ValueError, struct.error,
            *ZSTD_ERRORS) as exc:
        raise UserError(f"{path}: not a readable .conda archive ({first_line(exc)})") from None


def _check_zip_bounds(path):
    """The file starts with a zip entry and ends with the end-of-central-directory record (no comment)."""
    with open(path, "rb") as stream:
        head = stream.read(4)
        stream.seek(0, 2)
        size = stream.tell()
        if size < 22:
            raise UserError(f"{path}: not a readable .conda archive ({size} bytes)")
        stream.seek(size - 22)
        tail = stream.read(22)
    if head != b"PK\x03\x04":
        raise UserError(f"{path}: data before the zip archive (it does not start with a zip entry)")
    if tail[:4] != b"PK\x05\x06" or tail[20:22] != b"\x00\x00":
        raise UserError(f"{path}: truncated, or data after the zip archive (no end record at the end)")


def read_tar_bz2(path, contents):
    try:
        with open(path, "rb") as raw, io.BufferedReader(_Bz2Reader(raw, path), CHUNK) as stream:
            if not stream.peek(1):
                raise UserError(f"{path}: empty .tar.bz2 (no data in the bzip2 stream)")
            _read_tar(stream, contents, path.name, None)  # to the end of the bzip2 stream, and nothing after it
    except EOFError:
        raise UserError(f"{path}: truncated (the bzip2 stream ends before its end marker)") from None
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"{path}: not a readable .tar.bz2 archive ({first_line(exc)})") from None
    if not contents.members:
        raise UserError(f"{path}: not a readable .tar.bz2 archive (no files in it)")


class _Bz2Reader(io.RawIOBase):
    """One bzip2 stream, decompressed a chunk at a time; EOFError when it ends early, UserError for data after it.

    (bz2.BZ2File reads further streams and silently drops what is not one: a .tar.bz2
    could carry anything after its archive.)
    """

    def __init__(self, raw, path):
        self.raw, self.path = raw, path
        self.decompressor = bz2.BZ2Decompressor()
        self.pending, self.offset = b"", 0

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.offset >= len(self.pending):
            if self.decompressor.eof:
                if self.decompressor.unused_data or self.raw.read(1):
                    raise UserError(f"{self.path}: data after the bzip2 stream; refused")
                return 0
            data = b""
            if self.decompressor.needs_input:
                data = self.raw.read(CHUNK)
                if not data:
                    raise EOFError("the bzip2 stream ends early")
            self.pending, self.offset = self.decompressor.decompress(data, CHUNK), 0
        count = min(len(buffer), len(self.pending) - self.offset)
        buffer[:count] = self.pending[self.offset : self.offset + count]
        self.offset += count
        return count


def _read_tar(stream, contents, where, part):
    """Check every member; then only zero bytes may follow the tar's end marker (nothing a reader skips)."""
    tail = _Tail(stream)
    with tarfile.open(fileobj=tail, mode="r|", encoding="utf-8", errors="surrogateescape") as archive:
        for member in archive:
            contents.add(archive, member, where, part)
            archive.members = []  # tarfile keeps every TarInfo of a stream otherwise
        beyond = tail.position - archive.offset  # read ahead by tarfile, past the end marker
    if tail.kept[len(tail.kept) - beyond :].count(0) != min(beyond, len(tail.kept)):
        raise UserError(f"{contents.path}: data after the end of the tar archive in {where}; refused")
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        if chunk.count(0) != len(chunk):
            raise UserError(f"{contents.path}: data after the end of the tar archive in {where}; refused")


class _Tail:
    """A reader that counts what it hands out and keeps its last reads, to see what tarfile read ahead."""

    def __init__(self, stream):
        self.stream, self.position = stream, 0
        self.recent = collections.deque(maxlen=16)  # tarfile reads ahead at most one 10 KiB record

    def read(self, size=-1):
        data = self.stream.read(size)
        self.position += len(data)
        self.recent.append(data)
        return data

    @property
    def kept(self):
        return b"".join(self.recent)


def _read_limited(stream, limit, path, name):
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: {name} is over {limit} bytes, the limit for it; refused")
    return data


class Contents:
    """What the tar members of one package hold, checked member by member as they stream past."""

    def __init__(self, path):
        self.path = path
        self.members = {}  # name -> ("file", sha256, size) | ("dir",) | ("symlink", target)
        self.info = {}  # info file name -> bytes, for those we parse
        self.folded = {}  # info/ name case- and Unicode-folded -> name as written
        self.total = 0

    def refuse(self, where, name, problem):
        raise UserError(f"{self.path}: member {_show(name)} of {where}: {problem}; refused")

    def add(self, archive, member, where, part):
        name = member.name
        _check_name(self, where, name)
        in_info = name == "info" or name.startswith("info/")
        if part == "info" and not in_info:
            self.refuse(where, name, "outside info/ in the info part")
        if part == "pkg" and in_info:
            self.refuse(where, name, "an info/ file in the payload part")
        if name in self.members:
            self.refuse(where, name, "appears twice in the package")
        if in_info:
            other = self.folded.setdefault(fold(name), name)
            if other != name:
                self.refuse(where, name, f"the same info/ file as {_show(other)} on Windows and macOS")
        if len(self.members) >= MAX_MEMBERS:
            self.refuse(where, name, f"over {MAX_MEMBERS} members in the package, the limit")
        self.total += max(member.size, 0) + 512
        if self.total > MAX_TOTAL:
            self.refuse(where, name, f"the members add up to over {MAX_TOTAL} bytes, the limit")
        if member.isfile():
            limit = INFO_LIMITS.get(name)
            if limit is not None and member.size > limit:
                self.refuse(where, name, f"{member.size} bytes, over the {limit}-byte limit for {name}")
            handle = archive.extractfile(member)
            digest, size = hashlib.sha256(), 0
            kept = [] if limit is not None else None
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
                size += len(chunk)
                if kept is not None:
                    kept.append(chunk)
            if kept is not None:
                self.info[name] = b"".join(kept)
            self.members[name] = ("file", digest.hexdigest(), size)
        elif member.isdir():
            self.members[name] = ("dir",)
        elif member.issym():
            target = member.linkname
            _check_name(self, where, name, target, what="symlink target")
            if _is_absolute(target):
                self.refuse(where, name, f"a symlink to the absolute path {_show(target)}")
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target.replace("\\", "/")))
            if resolved == ".." or resolved.startswith("../"):
                self.refuse(where, name, f"a symlink to {_show(target)}, outside the package")
            self.members[name] = ("symlink", target)
        elif member.islnk():
            target = member.linkname
            _check_name(self, where, name, target, what="hard link target")
            if (self.members.get(target) or ("",))[0] != "file":
                self.refuse(where, name, f"a hard link to {_show(target)}, which is not a file earlier in the package")
            self.members[name] = self.members[target]
        else:
            self.refuse(where, name, "a device, FIFO or other special file (only files, folders and links)")

    def check_payload(self):
        """Compare the payload with info/paths.json; return the bytes of info/index.json."""
        index = self.info.get("info/index.json")
        if index is None:
            raise UserError(f"{self.path}: no info/index.json in the package; refused")
        raw = self.info.get("info/paths.json")
        if raw is None:
            raise UserError(f"{self.path}: no info/paths.json in the package (the payload cannot be checked)")
        try:
            entries = json.loads(raw)["paths"]
            listed = {e["_path"]: e for e in entries}
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"{self.path}: info/paths.json is not a paths list ({first_line(exc)})") from None
        payload = {n: m for n, m in self.members.items() if not (n == "info" or n.startswith("info/"))}
        for name, entry in sorted(listed.items()):
            found = payload.get(name)
            kind = entry.get("path_type", "hardlink")
            if found is None:
                if kind == "directory":
                    continue  # conda creates listed folders itself
                self.refuse("info/paths.json", name, "listed, but not in the package")
            if kind == "hardlink":
                if found[0] != "file":
                    self.refuse("the payload", name, f"a {found[0]}, but info/paths.json lists a file")
                want = (entry.get("sha256", found[1]), entry.get("size_in_bytes", found[2]))
                if (found[1], found[2]) != want:
                    self.refuse(
                        "the payload", name,
                        f"sha256 {found[1][:12]}... and {found[2]} bytes, info/paths.json says "
                        f"{str(want[0])[:12]}... and {want[1]} bytes (damaged payload)",
                    )
            elif kind == "softlink" and found[0] != "symlink":
                self.refuse("the payload", name, f"a {found[0]}, but info/paths.json lists a symlink")
        for name, found in sorted(payload.items()):
            if found[0] != "dir" and name not in listed:
                self.refuse("the payload", name, "not listed in info/paths.json")
        return index


def _is_absolute(name):
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name))


def _check_name(contents, where, name, value=None, what="name"):
    """Refuse a member whose name (or link target: value) is not UTF-8, has a NUL, or escapes the package."""
    value = name if value is None else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        contents.refuse(where, name, f"its {what} is not UTF-8")
    if not value or "\x00" in value:
        contents.refuse(where, name, f"an empty {what} or one with a NUL")
    if what == "symlink target":
        if "\\" in value:
            contents.refuse(where, name, f"its {what} has a backslash")
        return
    if _is_absolute(value):
        contents.refuse(where, name, "an absolute path" if what == "name" else f"its {what} is an absolute path")
    if ".." in re.split(r"[/\\]", value):
        contents.refuse(where, name, f"its {what} has a '..' component")
    if what != "symlink target" and not is_canonical(value):
        contents.refuse(where, name, f"its {what} is not in canonical form (no './', '//', '\\' or trailing '/')")


def is_canonical(name):
    """A member name as an extractor writes it: `info/index.json`, never `./info/index.json` or `info//index.json`."""
    return "\\" not in name and posixpath.normpath(name) == name and not name.startswith("/")


def fold(name):
    """The name a case-insensitive, normalising file system (Windows, macOS) stores: NFC, case-folded."""
    return unicodedata.normalize("NFC", name).casefold()


def _show(name):
    """A member name for a message: bytes that are not UTF-8 shown as \\xNN, never raw."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_info_file(path, member_name):
    """The bytes of one info/ member (e.g. "info/about.json") of a .conda or .tar.bz2; None when absent.

    For a .conda only the info-<stem>.tar.zst member is read, as conda does; the
    bytes are refused over OTHER_INFO_LIMIT (or the member's INFO_LIMITS entry).
    """
    path = Path(path)
    limit = INFO_LIMITS.get(member_name, OTHER_INFO_LIMIT)
    try:
        if path.name.endswith(".conda"):
            if ZSTD is None:
                raise UserError(f"{path}: reading a .conda needs zstd (Python 3.14, or pip install backports.zstd)")
            info = conda_members(path.name)[1]
            with zipfile.ZipFile(path) as archive:
                if info not in archive.namelist():
                    raise UserError(f"{path}: no {info} in this .conda")
                with archive.open(info) as raw, ZSTD.ZstdFile(raw) as stream:
                    return _member_bytes(stream, member_name, limit, path)
        with open(path, "rb") as raw, bz2.BZ2File(raw) as stream:
            return _member_bytes(stream, member_name, limit, path)
    except EOFError:
        raise UserError(f"{path}: cannot read {member_name} (the file is truncated)") from None
    except (zipfile.BadZipFile, OSError, tarfile.TarError, NotImplementedError, ValueError, struct.error,
            *ZSTD_ERRORS) as exc:
        raise UserError(f"{path}: cannot read {member_name} ({first_line(exc)})") from None


def _member_bytes(stream, member_name, limit, path):
    """The member whose name, canonicalised and folded, is member_name; a second such member is refused."""
    found = None
    with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8", errors="surrogateescape") as archive:
        for count, member in enumerate(archive):
            archive.members = []
            if count >= MAX_MEMBERS:
                raise UserError(f"{path}: over {MAX_MEMBERS} members in the package, the limit")
            if fold(posixpath.normpath(member.name.replace("\\", "/"))) != fold(member_name):
                continue
            if found is not None or not member.isfile() or member.name != member_name:
                raise UserError(f"{path}: {_show(member.name)} is a second or non-canonical {member_name}; refused")
            if member.size > limit:
                raise UserError(f"{path}: {member_name} is {member.size} bytes, over the {limit}-byte limit")
            found = archive.extractfile(member).read()
    return found


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


def first_line(exc):
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

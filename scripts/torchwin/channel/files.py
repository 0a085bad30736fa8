"""One file of the channel over HTTP: a strong validator, conditional requests and single byte ranges.

ETag: size, modification time in nanoseconds and inode, so any `channel add` (which replaces
files, new inode) changes it, even within the same second. If-None-Match is honoured; a
Last-Modified is sent, and If-Modified-Since honoured, only for a file not modified in the last
second: a second-resolution date could not tell two versions written in one second apart.
Range: a single `bytes=A-B`, `A-` or `-N` gets 206 with Content-Range, a range past the end 416;
several ranges, a malformed header, or an If-Range that does not match get the whole file (200),
as RFC 9110 allows.
"""

import email.utils
import os
import re
import time
from http import HTTPStatus

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def etag_of(stat):
    return f'"{stat.st_size:x}-{stat.st_mtime_ns:x}-{stat.st_ino:x}"'


def serve_file(handler, path):
    """Send the head of the answer for the file at path; return what to copy as the body, or None."""
    try:
        stream = open(path, "rb")  # noqa: SIM115 - the handler copies it and closes it
    except OSError:
        handler.send_error(HTTPStatus.NOT_FOUND, "File not found")
        return None
    try:
        stat = os.fstat(stream.fileno())
        etag = etag_of(stat)
        settled = stat.st_mtime <= time.time() - 1
        if _not_modified(handler.headers, etag, stat, settled):
            handler.send_response(HTTPStatus.NOT_MODIFIED)
            handler.send_header("ETag", etag)
            handler.end_headers()
            stream.close()
            return None
        span = _range(handler.headers, etag, stat.st_size)
        if span == "unsatisfiable":
            handler.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
            handler.send_header("Content-Range", f"bytes */{stat.st_size}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            stream.close()
            return None
        if span is None:
            handler.send_response(HTTPStatus.OK)
            start, length = 0, stat.st_size
        else:
            start, end = span
            length = end - start + 1
            handler.send_response(HTTPStatus.PARTIAL_CONTENT)
            handler.send_header("Content-Range", f"bytes {start}-{end}/{stat.st_size}")
            stream.seek(start)
        handler.send_header("Content-type", handler.guess_type(path))
        handler.send_header("Content-Length", str(length))
        handler.send_header("ETag", etag)
        handler.send_header("Accept-Ranges", "bytes")
        if settled:
            handler.send_header("Last-Modified", handler.date_time_string(stat.st_mtime))
        handler.end_headers()
        return _Span(stream, length)
    except BaseException:
        stream.close()
        raise


def _not_modified(headers, etag, stat, settled):
    match = headers.get("If-None-Match")
    if match is not None:  # takes precedence over If-Modified-Since (RFC 9110 13.2.2)
        tags = [t.strip() for t in match.split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    since = headers.get("If-Modified-Since")
    if since is None or not settled:
        return False
    try:
        date = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if date is None or date.tzinfo is None:
        return False
    return int(stat.st_mtime) <= date.timestamp()


def _range(headers, etag, size):
    """(first, last) byte of a single satisfiable range, "unsatisfiable", or None for the whole file."""
    value = headers.get("Range")
    if value is None:
        return None
    if_range = headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the client's copy is another version: send all of this one
    match = _RANGE.match(value.strip())
    if match is None:
        return None  # several ranges, another unit, or malformed: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(size - count, 0), size - 1
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return start, end


class _Span:
    """length bytes of stream, read from where it is; what the handler's copyfile reads."""

    def __init__(self, stream, length):
        self.stream, self.left = stream, length

    def read(self, size=-1):
        if self.left <= 0:
            return b""
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.stream.read(size)
        self.left -= len(data)
        return data

    def close(self):
        self.stream.close()

"""`torchwin channel serve`: the channel folder over HTTP on 127.0.0.1, for conda, pixi or a browser.

Read-only static files from the standard library's HTTP server, one thread per
connection. Hidden entries (DIR/.torchwin/: lock, staging) are neither served
nor listed, and a symlink is followed only while it stays inside DIR and out of
hidden folders. A connection idle for IDLE_TIMEOUT seconds is closed; once a
request's first byte has come, its request line and headers must all arrive
within REQUEST_DEADLINE seconds, so clients trickling bytes cannot hold the
MAX_CONNECTIONS slots (more wait in the listen queue). A malformed request gets
its 4xx answer and one log line, never a traceback. Files are served by
files.py: a strong ETag, If-None-Match, and single byte ranges. Updates made
while it serves are safe: `channel add` replaces files atomically. Given the
channel's config, `/` and `/index.html` are the page rendered on each request
with the server's own URL in its install commands (the page on disk names
anaconda.org's channel, or whatever `channel page --channel-url` said).
"""

import functools
import html
import io
import os
import posixpath
import socket
import sys
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from torchwin.channel.files import serve_file
from torchwin.errors import UserError

HOST = "127.0.0.1"
IDLE_TIMEOUT = 30.0  # seconds a connection may wait between requests (or stall mid-request)
MAX_CONNECTIONS = 64  # conda/pixi open a handful at a time; pixi's downloads use at most ~50
REQUEST_DEADLINE = 10.0  # seconds from a request's first byte to the end of its headers


def inside(directory, path):
    """path, symlinks resolved, is the served folder or below it, and in no hidden folder there."""
    root = os.path.realpath(directory)
    real = os.path.realpath(path)
    try:
        if os.path.commonpath([root, real]) != root:
            return False
    except ValueError:  # another drive on Windows
        return False
    return not any(part.startswith(".") for part in os.path.relpath(real, root).split(os.sep) if part != ".")


class ChannelRequestHandler(SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class's attribute, extended
        **SimpleHTTPRequestHandler.extensions_map,
        ".json": "application/json",
        ".zst": "application/zstd",
        ".conda": "application/octet-stream",
        ".bz2": "application/x-bzip2",
        ".html": "text/html; charset=utf-8",
    }
    # The base class answers an unparsable request line as HTTP/0.9, i.e. a bare body with no
    # status line; a client must be able to read the 400.
    default_request_version = "HTTP/1.0"

    def setup(self):
        # StreamRequestHandler applies self.timeout to the socket: an idle keep-alive
        # connection then ends its thread (handle_one_request closes on the timeout).
        self.timeout = self.server.idle_timeout
        super().setup()

    def handle_one_request(self):
        """The base class's, with a deadline from the request's first byte to the end of its headers."""
        self._deadline = None
        try:
            if not self.rfile.peek(1):  # idle keep-alive: the idle timeout applies, then the client left
                self.close_connection = True
                return
        except (TimeoutError, OSError):
            self.close_connection = True
            return
        self._deadline = threading.Timer(self.server.request_deadline, self._too_slow)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()
        finally:
            self._deadline.cancel()

    def parse_request(self):
        ok = super().parse_request()
        if self._deadline is not None:
            self._deadline.cancel()  # headers are in: sending the answer may take as long as it takes
        return ok

    def _too_slow(self):
        self.log_message("request line and headers not complete within %.0f s; connection closed",
                         self.server.request_deadline)
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send_head(self):
        url_path = unquote(urlsplit(self.path).path)
        if "\0" in url_path:  # the file system refuses such names (ValueError), so say it is bad input
            self.send_error(HTTPStatus.BAD_REQUEST, "NUL in the path")
            return None
        if self.server.page is not None and url_path in ("/", "/index.html"):
            encoded = self.server.page(server_url(self.server)).encode("utf-8")
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            return io.BytesIO(encoded)
        parts = posixpath.normpath(url_path).split("/")
        path = self.translate_path(self.path)
        if any(p.startswith(".") and p not in (".", "..") for p in parts) or not self._inside(path):
            self.send_error(HTTPStatus.NOT_FOUND, "Not found")
            return None
        if os.path.isdir(path):
            index = os.path.join(path, "index.html")
            if not url_path.endswith("/") or not os.path.isfile(index) or not self._inside(index):
                return super().send_head()  # the redirect to DIR/, or the listing
            path = index
        return serve_file(self, path)

    def _inside(self, path):
        return inside(self.directory, path)

    def list_directory(self, path):
        """The base class's listing, without hidden entries and symlinks that lead out of the folder."""
        try:
            names = sorted(os.listdir(path), key=str.lower)
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "No permission to list directory")
            return None
        title = "Directory listing for " + html.escape(unquote(urlsplit(self.path).path), quote=False)
        lines = ["<!DOCTYPE HTML>", '<html lang="en">', '<head><meta charset="utf-8">',
                 f"<title>{title}</title></head>", f"<body>\n<h1>{title}</h1>\n<hr>\n<ul>"]
        for name in names:
            full = os.path.join(path, name)
            if name.startswith(".") or not self._inside(full):
                continue
            link = name + "/" if os.path.isdir(full) else name
            lines.append('<li><a href="%s">%s</a></li>' % (quote(link, errors="surrogatepass"),
                                                           html.escape(link, quote=False)))
        lines.append("</ul>\n<hr>\n</body>\n</html>\n")
        encoded = "\n".join(lines).encode("utf-8", "surrogateescape")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(encoded)))
        self.end_headers()
        return io.BytesIO(encoded)

    def end_headers(self):
        # repodata changes with every `channel add`: clients must revalidate, not cache blindly.
        # No path yet when the request line itself was refused (400/414/505).
        if getattr(self, "path", "").split("?")[0].endswith((".json", ".zst", ".html", "/")):
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        if not getattr(self.server, "quiet", False):
            super().log_message(format, *args)


class ChannelServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on live connections and one log line per failed request."""

    daemon_threads = True

    def __init__(self, address, handler, idle_timeout, max_connections, quiet, request_deadline=REQUEST_DEADLINE):
        self.idle_timeout = idle_timeout
        self.request_deadline = request_deadline
        self.quiet = quiet
        self.page = None  # make_server's: url -> the page's HTML, or None to serve the folder's own
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        self.slots.acquire()  # at the bound, stop accepting until a connection ends
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):
        # A client that hangs up mid-answer is routine; nothing a person must read a traceback for.
        if not self.quiet:
            exc = sys.exc_info()[1]
            print(f"{client_address[0]}: request failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def make_server(channel_dir, port=0, quiet=False, idle_timeout=IDLE_TIMEOUT, max_connections=MAX_CONNECTIONS,
                request_deadline=REQUEST_DEADLINE, config=None):
    """A server for channel_dir on 127.0.0.1:port (0: a free port); call serve_forever().

    With the channel's `config`, its page is served live with the server's URL as the channel."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"--port {port}: allowed 0 to 65535 (0 picks a free port)")
    handler = functools.partial(ChannelRequestHandler, directory=str(Path(channel_dir).resolve()))
    server = ChannelServer((HOST, port), handler, idle_timeout, max_connections, quiet, request_deadline)
    if config is not None:
        server.page = functools.partial(_page, Path(channel_dir), config)
    return server


def _page(channel_dir, config, url):
    from torchwin.channel.page import render
    from torchwin.channel.records import collect

    return render(collect(channel_dir), config, channel_url=url)


def server_url(server):
    return f"http://{HOST}:{server.server_address[1]}/"

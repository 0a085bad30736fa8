"""`torchwin channel serve`: the channel folder over HTTP on 127.0.0.1, for conda, pixi or a browser.

Read-only static files from the standard library's HTTP server, one thread per
request. DIR/.torchwin/ (lock, staging) is not served. Updates made while it
serves are safe: `channel add` replaces files atomically.
"""

import functools
import posixpath
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from torchwin.channel_store import STATE_DIR

HOST = "127.0.0.1"


class ChannelRequestHandler(SimpleHTTPRequestHandler):
    extensions_map = {  # noqa: RUF012 - the base class's attribute, extended
        **SimpleHTTPRequestHandler.extensions_map,
        ".json": "application/json",
        ".zst": "application/zstd",
        ".conda": "application/octet-stream",
        ".bz2": "application/x-bzip2",
        ".html": "text/html; charset=utf-8",
    }

    def send_head(self):
        parts = posixpath.normpath(unquote(urlsplit(self.path).path)).split("/")
        if STATE_DIR in parts or any(p.startswith(".") and p not in (".", "..") for p in parts):
            self.send_error(404, "Not found")
            return None
        return super().send_head()

    def end_headers(self):
        # repodata changes with every `channel add`: clients must revalidate, not cache blindly.
        if self.path.split("?")[0].endswith((".json", ".zst", ".html", "/")):
            self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format, *args):
        if not getattr(self.server, "quiet", False):
            super().log_message(format, *args)


def make_server(channel_dir, port=0, quiet=False):
    """A ThreadingHTTPServer for channel_dir on 127.0.0.1:port (0: a free port); call serve_forever()."""
    handler = functools.partial(ChannelRequestHandler, directory=str(Path(channel_dir).resolve()))
    server = ThreadingHTTPServer((HOST, port), handler)
    server.daemon_threads = True
    server.quiet = quiet
    return server


def server_url(server):
    return f"http://{HOST}:{server.server_address[1]}/"

"""`torchwin channel serve` as an HTTP cache and a download resumer see it, and against clients that
trickle their headers: a real server on 127.0.0.1 (issue 25 item 13 and range requests).
"""

import email.utils
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from test_serve import DEADLINE_S, start, stop
from torchwin.channel.serve import server_url

PACKAGE = bytes(range(256)) * 40  # 10240 bytes, each offset recognisable


@pytest.fixture
def chan(tmp_path):
    chan = tmp_path / "chan"
    (chan / "noarch").mkdir(parents=True)
    (chan / "noarch" / "repodata.json").write_text('{"version": 1}')
    (chan / "noarch" / "x-1.0-0.conda").write_bytes(PACKAGE)
    (chan / ".torchwin").mkdir()
    (chan / ".torchwin" / "journal.json").write_text("private")
    return chan


@pytest.fixture
def server(chan):
    server = start(chan)
    yield server
    stop(server)


def get(server, path, method="GET", **headers):
    """(status, headers, body); an HTTP error status is an answer too."""
    request = urllib.request.Request(server_url(server) + path, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=DEADLINE_S) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def replace(path, data, mtime_ns):
    """As `channel add` does: a new file renamed over the old; then its mtime set."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_repodata_changed_within_the_same_second_is_never_a_stale_304(chan, server):
    path = chan / "noarch" / "repodata.json"
    second = (int(time.time()) + 5) * 10**9  # both versions in one second (just ahead: not settled yet)
    replace(path, b'{"version": 1}', second)
    status, headers, body = get(server, "noarch/repodata.json")
    etag = headers["ETag"]
    assert status == 200 and etag and etag.startswith('"') and body == b'{"version": 1}'
    assert get(server, "noarch/repodata.json", **{"If-None-Match": etag})[0] == 304
    replace(path, b'{"version": 2}', second + 10**6)
    status, headers, body = get(server, "noarch/repodata.json", **{"If-None-Match": etag})
    assert (status, body) == (200, b'{"version": 2}') and headers["ETag"] != etag
    # A client revalidating by date only: a second-resolution date cannot tell them apart, so no 304.
    since = email.utils.formatdate(second / 10**9, usegmt=True)
    status, _headers, body = get(server, "noarch/repodata.json", **{"If-Modified-Since": since})
    assert (status, body) == (200, b'{"version": 2}')


def test_a_settled_file_still_revalidates_by_date(chan, server):
    path = chan / "noarch" / "repodata.json"
    old = (int(time.time()) - 3600) * 10**9
    os.utime(path, ns=(old, old))
    status, headers, _body = get(server, "noarch/repodata.json")
    assert status == 200 and headers["Last-Modified"]
    assert get(server, "noarch/repodata.json", **{"If-Modified-Since": headers["Last-Modified"]})[0] == 304
    assert get(server, "noarch/repodata.json", **{"If-None-Match": '"other"'})[0] == 200


def test_single_ranges_resume_a_download(server):
    size = len(PACKAGE)
    cases = {"bytes=10-19": (10, 19), "bytes=10000-": (10000, size - 1), "bytes=-5": (size - 5, size - 1),
             "bytes=0-99999": (0, size - 1), "bytes=-99999": (0, size - 1)}
    for value, (first, last) in cases.items():
        status, headers, body = get(server, "noarch/x-1.0-0.conda", Range=value)
        assert status == 206, value
        assert headers["Content-Range"] == f"bytes {first}-{last}/{size}", value
        assert body == PACKAGE[first:last + 1] and int(headers["Content-Length"]) == len(body), value
    for value in (f"bytes={size}-", "bytes=20000-20010", "bytes=-0"):
        status, headers, body = get(server, "noarch/x-1.0-0.conda", Range=value)
        assert (status, headers["Content-Range"], body) == (416, f"bytes */{size}", b""), value
    # Several ranges, another unit, nonsense, or an If-Range naming another version: the whole file.
    etag = get(server, "noarch/x-1.0-0.conda")[1]["ETag"]
    for headers in ({"Range": "bytes=0-1,5-6"}, {"Range": "items=0-1"}, {"Range": "bytes=9-3"},
                    {"Range": "bytes=0-1", "If-Range": '"another"'}):
        status, _headers, body = get(server, "noarch/x-1.0-0.conda", **headers)
        assert (status, body) == (200, PACKAGE), headers
    status, _headers, body = get(server, "noarch/x-1.0-0.conda", Range="bytes=0-1", **{"If-Range": etag})
    assert (status, body) == (206, PACKAGE[:2])
    status, headers, body = get(server, "noarch/x-1.0-0.conda", method="HEAD", Range="bytes=0-9")
    assert (status, headers["Content-Length"], body) == (206, "10", b"")


@pytest.mark.skipif(os.name == "nt", reason="symlinks need extra rights on Windows")
def test_symlinks_to_hidden_files_inside_the_channel_are_not_served(chan, server):
    (chan / "noarch" / "journal.json").symlink_to(chan / ".torchwin" / "journal.json")
    (chan / "noarch" / "state").symlink_to(chan / ".torchwin", target_is_directory=True)
    (chan / "noarch" / "relative.json").symlink_to("../.torchwin/journal.json")
    for path in ("noarch/journal.json", "noarch/state/journal.json", "noarch/state/", "noarch/relative.json"):
        status, _headers, body = get(server, path)
        assert status == 404 and b"private" not in body, path
    listing = get(server, "noarch/")[2].decode()
    assert "journal" not in listing and "state" not in listing and "relative" not in listing
    assert get(server, "noarch/repodata.json")[0] == 200


def test_clients_trickling_their_headers_cannot_keep_others_waiting(chan):
    """Every connection slot taken by a client sending a header byte every 0.2 s (each read well within the
    idle timeout): a whole-request deadline frees the slots, and a normal request is answered."""
    server = start(chan, idle_timeout=30.0, max_connections=4, request_deadline=1.0)
    stop_trickling = threading.Event()
    sockets = []

    def trickle(sock):
        try:
            sock.sendall(b"GET /noarch/repodata.json HTTP/1.1\r\nHost: x\r\n")
            for _ in range(100):  # at most 20 s
                if stop_trickling.wait(0.2):
                    return
                sock.sendall(b"X")
        except OSError:
            return  # the server hung up on it: what the deadline is for

    try:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", server.server_address[1]))
            sockets.append(sock)
            threading.Thread(target=trickle, args=(sock,), daemon=True).start()
        time.sleep(0.5)
        started = time.monotonic()
        status, _headers, body = get(server, "noarch/repodata.json")
        waited = time.monotonic() - started
        assert (status, body) == (200, b'{"version": 1}')
        assert waited < 8, f"a normal request waited {waited:.1f} s behind trickling clients"
    finally:
        stop_trickling.set()
        for sock in sockets:
            sock.close()
        stop(server)

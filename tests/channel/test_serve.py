"""`torchwin channel serve` under hostile and careless clients: a real server on 127.0.0.1, raw sockets."""

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from torchwin.channel.serve import make_server, server_url
from torchwin.cli import main

DEADLINE_S = 60  # bounds every wait; only a hang reaches it


@pytest.fixture
def chan(tmp_path):
    chan = tmp_path / "chan"
    (chan / "noarch").mkdir(parents=True)
    (chan / "noarch" / "repodata.json").write_text("{}")
    (chan / ".torchwin").mkdir()
    (chan / ".torchwin" / "lock").write_text("")
    return chan


def start(chan, **kwargs):
    server = make_server(chan, 0, quiet=True, **kwargs)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


def stop(server):
    server.shutdown()
    server.server_close()


def raw(port, data):
    """Send data on a fresh connection; the status line of the answer (b"" if the server just hung up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_S) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def test_malformed_requests_get_4xx_and_no_traceback(chan, readline):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "torchwin", "channel", "serve", "--port", "0", "--channel-dir", str(chan)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = readline(proc, "`torchwin channel serve`")
        port = int(line.split("127.0.0.1:", 1)[1].split("/", 1)[0])
        assert raw(port, b"GET / HTTP/1.1.1\r\n\r\n") == b"HTTP/1.0 400 Bad request version ('HTTP/1.1.1')"
        assert raw(port, b"GET / HTTP/9.9\r\n\r\n").startswith(b"HTTP/1.0 505 ")
        assert raw(port, b"GET /" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 414 ")
        assert raw(port, b"GET /noarch/%00repodata.json HTTP/1.0\r\n\r\n") == b"HTTP/1.0 400 NUL in the path"
        assert raw(port, b"GET /noarch/repodata.json HTTP/1.0\r\n\r\n") == b"HTTP/1.0 200 OK"  # still serving
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=DEADLINE_S)
    assert "Traceback" not in err and "Exception" not in err, err
    assert len(err.splitlines()) <= 10, err  # one log line per request (and per refusal), no more


def handler_threads():
    return [t for t in threading.enumerate() if "process_request_thread" in t.name]


def wait_for(condition, what):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {DEADLINE_S} s")
        time.sleep(0.05)


def test_idle_connections_time_out_and_their_threads_end(chan):
    server = start(chan, idle_timeout=0.5)
    sockets = []
    try:
        sockets = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(50)]
        for sock in sockets:  # the server closes each one: reading gives end-of-file, not a wait forever
            sock.settimeout(DEADLINE_S)
            assert sock.recv(1) == b""
        wait_for(lambda: not handler_threads(), "the threads of closed idle connections did not end")
        with urllib.request.urlopen(server_url(server) + "noarch/repodata.json", timeout=DEADLINE_S) as answer:
            assert answer.read() == b"{}"
    finally:
        for sock in sockets:
            sock.close()
        stop(server)


def test_connections_beyond_the_bound_wait_instead_of_adding_threads(chan):
    server = start(chan, idle_timeout=1.0, max_connections=4)
    sockets = []
    try:
        sockets = [socket.create_connection(("127.0.0.1", server.server_address[1])) for _ in range(12)]
        wait_for(lambda: len(handler_threads()) >= 4, "the first 4 connections did not get their threads")
        peak = max(len(handler_threads()) for _ in range(20) if time.sleep(0.02) is None)
        assert peak == 4
        # The waiting ones are served in turn as idle ones time out: a real request still gets through.
        with urllib.request.urlopen(server_url(server) + "noarch/repodata.json", timeout=DEADLINE_S) as answer:
            assert answer.read() == b"{}"
    finally:
        for sock in sockets:
            sock.close()
        stop(server)


@pytest.mark.skipif(os.name == "nt", reason="symlinks need extra rights on Windows")
def test_symlinks_are_not_followed_out_of_the_channel_and_hidden_entries_are_not_listed(chan, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    (tmp_path / "elsewhere").mkdir()
    (chan / "noarch" / "leak.txt").symlink_to(secret)
    (chan / "noarch" / "leakdir").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (chan / "noarch" / "alias.json").symlink_to(chan / "noarch" / "repodata.json")
    server = start(chan)
    url = server_url(server)
    try:
        for path in ("noarch/leak.txt", "noarch/leakdir/", "noarch/leakdir", ".torchwin/lock", ".torchwin/",
                     "noarch/../.torchwin/lock"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(url + path, timeout=DEADLINE_S)
            assert err.value.code == 404, path
        with urllib.request.urlopen(url + "noarch/alias.json", timeout=DEADLINE_S) as answer:
            assert answer.read() == b"{}"  # a link that stays inside is fine
        with urllib.request.urlopen(url, timeout=DEADLINE_S) as answer:
            top = answer.read().decode()
        with urllib.request.urlopen(url + "noarch/", timeout=DEADLINE_S) as answer:
            noarch = answer.read().decode()
    finally:
        stop(server)
    assert 'href="noarch/"' in top and ".torchwin" not in top
    assert 'href="repodata.json"' in noarch and 'href="alias.json"' in noarch
    assert "leak" not in noarch


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_one_line_exit_2(chan, capsys, port):
    assert main(["channel", "serve", "--port", port, "--channel-dir", str(chan)]) == 2
    err = capsys.readouterr().err
    assert err == f"torchwin: error: --port {port}: allowed 0 to 65535 (0 picks a free port)\n"

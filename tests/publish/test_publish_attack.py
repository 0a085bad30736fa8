"""`torchwin publish` under the second attack round of issue 25 (items 5-8 and the one-character token):
against the fake anaconda.org of test_publish.py, a real HTTP server on 127.0.0.1.
"""

import json
import os
import shutil
import socket
import time
from urllib.parse import quote

import pytest
import test_publish
from packages import make_package
from test_publish import SECRET, run_publish
from torchwin.cli import main
from torchwin.errors import Failure
from torchwin.publish import anaconda
from torchwin.publish.redact import Redactor

# The fake anaconda.org and its fixtures (token is autouse: ANACONDA_API_TOKEN=SECRET).
fake, config_file, pkg, token = test_publish.fake, test_publish.config_file, test_publish.pkg, test_publish.token


def publish_main(fake, config_file, *files):
    return main(["publish", "--api-url", fake.url, "--config", str(config_file), *map(str, files)])


@pytest.mark.parametrize("tail", ["\n", "\r\n", " \n", "\t"])
def test_a_token_pasted_with_a_line_break_is_stripped_and_never_shown(tail, fake, pkg, config_file, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("ANACONDA_API_TOKEN", SECRET + tail)
    fake.fail("POST", r"^/stage/", 403, times=1, echo=True)
    assert publish_main(fake, config_file, pkg) == 1
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err and "refused for token ***" in captured.err
    assert publish_main(fake, config_file, pkg) == 0  # and the stripped token is the one sent
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is not None
    assert {auth for method, _path, auth in fake.log if method == "POST" and auth} == {f"token {SECRET}"}


@pytest.mark.parametrize("value", [SECRET[:10] + "\n" + SECRET[10:], SECRET[:10] + " " + SECRET[10:], "x", "abc"])
def test_a_token_with_a_break_inside_or_too_short_is_refused_without_showing_it(value, fake, pkg, config_file,
                                                                                 capsys, monkeypatch):
    monkeypatch.setenv("ANACONDA_API_TOKEN", value)
    assert publish_main(fake, config_file, pkg) == 2
    err = capsys.readouterr().err
    assert "ANACONDA_API_TOKEN" in err and len(err.strip().splitlines()) == 1
    assert value.strip() not in err.replace("ANACONDA_API_TOKEN", "") and fake.log == []


def test_every_spelling_of_the_token_is_blanked():
    redact = Redactor(SECRET + "\r\n")
    for text in (SECRET, repr(SECRET + "\r\n"), f"header 'token {SECRET}\\r\\n'", f'{{"token": "{SECRET}"}}'):
        assert SECRET not in redact(text), text
    odd = SECRET + "+/=?&\u00e9"  # characters URL-quoting, JSON and repr() each spell another way
    redact = Redactor(odd)
    for text in (odd, quote(odd, safe=""), quote(odd), json.dumps(odd), odd.encode("unicode_escape").decode()):
        assert "***" in redact(text) and SECRET not in redact(text), text
    assert redact("text without it") == "text without it"


def test_a_record_without_a_sha256_is_refused_not_skipped(fake, pkg, config_file, capsys):
    """Fail closed: a record anaconda.org returns without a sha256 cannot be compared with the local file."""
    record = fake.add_file("hello", "1.0", "linux-64/" + pkg.name, ["main"], {"subdir": "linux-64"}, sha256=None)
    del record["sha256"]
    with pytest.raises(Failure, match="has no sha256 to compare"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg)
    assert fake.requests_to("POST", "/stage/") == []
    # --skip-rebuilt keeps the copy there on purpose: then it is skipped, and said why.
    assert run_publish("--skip-rebuilt", "--api-url", fake.url, "--config", config_file, pkg) == 0
    assert "has no sha256 to compare" in capsys.readouterr().out


def test_a_file_replaced_after_its_check_is_never_committed(fake, pkg, config_file, tmp_path):
    other = make_package(tmp_path / "other", "hello", content="replaced")  # same name, other bytes
    fake.on("GET", r"^/release/", lambda: shutil.copy(other, pkg))  # after the check, before the upload
    with pytest.raises(Failure, match="changed after it was checked"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg)
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is None and fake.uploads == {}


def test_a_file_rewritten_while_it_uploads_is_never_committed(fake, pkg, config_file):
    size = pkg.stat().st_size

    def rewrite():  # in place, same size: only the hash can tell
        with open(pkg, "r+b") as stream:
            stream.seek(size // 2)
            stream.write(b"\xff" * 16)

    fake.on("POST", r"^/stage/", rewrite)
    with pytest.raises(Failure, match="changed after it was checked"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg)
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is None
    assert fake.requests_to("POST", "/commit/") == []


def test_a_server_that_accepts_and_never_answers_times_out_and_is_retried(pkg, config_file, monkeypatch):
    monkeypatch.setattr(anaconda, "TIMEOUTS", (1.0, 1.0))
    with socket.socket() as silent:  # listens, never accepts: the connection opens and nothing comes back
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        sleeps = []
        started = time.monotonic()
        with pytest.raises(Failure, match=r"still failing after 6 tries: .*(timed out|Timeout)"):
            run_publish("--api-url", url, "--config", config_file, pkg, sleeps=sleeps)
    assert sleeps == [2.0, 4.0, 8.0, 16.0, 32.0]  # recorded, not slept
    assert time.monotonic() - started < 60


def test_a_storage_post_that_stalls_is_timed_out_and_retried(fake, pkg, config_file, monkeypatch):
    monkeypatch.setattr(anaconda, "TIMEOUTS", (1.0, 1.0))
    stalls = [3.0]
    fake.on("POST", r"^/s3/", lambda: time.sleep(stalls.pop()) if stalls else None)
    sleeps = []
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps) == 0
    # Retried (the look-up before the retry may time out too while the stalled answer holds the fake).
    assert sleeps[:1] == [2.0] and len(sleeps) <= 3 and len(fake.requests_to("POST", "/commit/")) == 1


@pytest.mark.parametrize("body", [b"", b"<html><body>503 Service Unavailable</body></html>", b"<Error><Cod"])
def test_storage_503_with_a_body_that_is_not_xml_is_retried(body, fake, pkg, config_file):
    fake.fail("POST", r"^/s3/", 503, times=1, body=body)
    sleeps = []
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps) == 0
    assert sleeps == [2.0]
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is not None


def test_storage_refusal_names_its_code(fake, pkg, config_file):
    body = b"<?xml version='1.0'?><Error><Code>InvalidDigest</Code></Error>"
    fake.fail("POST", r"^/s3/", 400, times=1, body=body)
    with pytest.raises(Failure, match=r"storage refused the upload: InvalidDigest \(HTTP 400\)"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """The fake and the silent socket are on 127.0.0.1: never through a proxy of the environment."""
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert os.environ["NO_PROXY"] == "127.0.0.1"

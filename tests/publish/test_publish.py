"""`torchwin publish` against a local HTTP server that answers like the anaconda.org API at its edge.

The fake implements the endpoints anaconda-client calls for an upload
(/dist, /package, /release, /stage, an S3-style form POST, /commit), for
listing (/packages/<owner>, /package/<owner>/<name>) and for removal
(DELETE /dist/...), and can fail chosen requests with a status or a dropped
connection.
"""

import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import packages
import pytest
from packages import make_package
from torchwin.channel.package_check import file_digest
from torchwin.cli import main, make_parser
from torchwin.errors import Failure
from torchwin.publish import command as publish

SECRET = "tw-secret-" + uuid.uuid4().hex
CONFIG = """\
name: torchwin
anaconda: {owner: torchwin, api_url: "http://127.0.0.1:1"}
labels: [main, nightly]
retention:
  nightly: {keep_days: 14, keep_newest: 2}
"""


class FakeAnaconda(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.packages = {}  # name -> {"name", "files": [record]}
        self.releases = set()
        self.staged = {}
        self.uploads = {}  # dist_id -> body bytes
        self.log = []  # (method, path, authorization header)
        self.failures = []  # [method, regex, status or "drop", times left, echo token?, raw body or None]
        self.hooks = []  # (method, regex, fn): fn() runs when such a request arrives, before it is answered
        self.token_warning = False  # answer with a Conda-Token-Warning header quoting the credentials

    def fail(self, method, pattern, status, times=1, echo=False, body=None):
        self.failures.append([method, re.compile(pattern), status, times, echo, body])

    def on(self, method, pattern, fn):
        self.hooks.append((method, re.compile(pattern), fn))

    def add_file(self, name, version, basename, labels, attrs, sha256="0" * 64):
        package = self.packages.setdefault(name, {"name": name, "files": []})
        self.releases.add((name, version))
        record = {
            "basename": basename,
            "version": version,
            "labels": labels,
            "attrs": attrs,
            "sha256": sha256,
            "upload_time": "2019-04-01 00:00:00.000000+00:00",
        }
        package["files"].append(record)
        return record

    def find(self, name, version, basename):
        for record in self.packages.get(name, {}).get("files", []):
            if record["version"] == version and record["basename"] == basename:
                return record
        return None

    def requests_to(self, method, prefix):
        return [p for m, p, _ in self.log if m == method and p.startswith(prefix)]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, payload=None):
        data = json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.server.token_warning:
            self.send_header("Conda-Token-Warning", "this token expires soon: " + self.headers.get("Authorization", ""))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method):
        server = self.server
        body = self._body()
        path = self.path.split("?")[0]
        auth = self.headers.get("Authorization", "")
        with server.lock:
            server.log.append((method, path, auth))
            for hook_method, pattern, fn in server.hooks:
                if hook_method == method and pattern.search(path):
                    fn()
            for rule in server.failures:
                if rule[0] == method and rule[1].search(path) and rule[3] > 0:
                    rule[3] -= 1
                    if rule[2] == "drop":
                        self.close_connection = True
                        return
                    if rule[5] is not None:  # a raw body: empty, HTML, anything but the JSON/XML expected
                        self.send_response(rule[2])
                        self.send_header("Content-Length", str(len(rule[5])))
                        self.end_headers()
                        self.wfile.write(rule[5])
                        return
                    # A careless server might echo the credentials: the client must still not show them.
                    message = f"refused for {auth}" if rule[4] else "server trouble"
                    return self._send(rule[2], {"error": message})
            return self._route(method, path, body, auth)

    def _route(self, method, path, body, auth):
        server = self.server
        parts = path.strip("/").split("/")
        kind = parts[0]
        if kind == "s3" and method == "POST":
            server.uploads[parts[1]] = body
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if method in ("POST", "DELETE") and auth != f"token {SECRET}":
            return self._send(401, {"error": "bad token"})
        if kind == "packages" and method == "GET":
            return self._send(200, [{"name": n} for n in sorted(server.packages)])
        if kind == "package":
            name = parts[2]
            if method == "GET":
                if name not in server.packages:
                    return self._send(404, {"error": "no package"})
                return self._send(200, server.packages[name])
            server.packages.setdefault(name, {"name": name, "files": []})
            return self._send(200, {"name": name})
        if kind == "release":
            key = (parts[2], parts[3])
            if method == "GET":
                return self._send(200 if key in server.releases else 404, {"version": parts[3]})
            server.releases.add(key)
            return self._send(200, {})
        if kind in ("dist", "stage", "commit"):
            name, version, basename = parts[2], parts[3], "/".join(parts[4:])
            if kind == "dist":
                record = server.find(name, version, basename)
                if record is None:
                    return self._send(404, {"error": "no such file"})
                if method == "DELETE":
                    server.packages[name]["files"].remove(record)
                return self._send(200, record)
            if kind == "stage":
                payload = json.loads(body)
                dist_id = uuid.uuid4().hex
                server.staged[dist_id] = (name, version, basename, payload)
                return self._send(
                    200,
                    {
                        "post_url": f"{server.url}/s3/{dist_id}",
                        "form_data": {"key": dist_id},
                        "dist_id": dist_id,
                    },
                )
            dist_id = json.loads(body)["dist_id"]
            name, version, basename, payload = server.staged.pop(dist_id)
            record = server.add_file(
                name, version, basename, payload["channels"], payload["attrs"], payload["sha256"]
            )
            record["dist_id"] = dist_id
            return self._send(200, {"url": f"{server.url}/{name}"})
        return self._send(404, {"error": "unknown endpoint " + path})

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


@pytest.fixture
def fake():
    server = FakeAnaconda()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "channel.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def pkg(tmp_path):
    return make_package(tmp_path / "out", content="hello", summary="a greeting", license="BSD-3-Clause")


@pytest.fixture(autouse=True)
def token(monkeypatch):
    monkeypatch.delenv("BINSTAR_API_TOKEN", raising=False)
    monkeypatch.setenv("ANACONDA_API_TOKEN", SECRET)


def run_publish(*argv, sleeps=None):
    args = make_parser().parse_args(["publish", *[str(a) for a in argv]])
    sleeps = [] if sleeps is None else sleeps
    return publish.run(args, sleep=sleeps.append)


def test_upload_creates_package_release_and_labelled_file(fake, pkg, config_file, capsys):
    assert run_publish("--label", "nightly", "--api-url", fake.url, "--config", config_file, pkg) == 0
    record = fake.find("hello", "1.0", "linux-64/" + pkg.name)
    assert record is not None and record["labels"] == ["nightly"]
    assert record["attrs"]["subdir"] == "linux-64" and record["attrs"]["build"] == "h0_0"
    assert pkg.read_bytes() in fake.uploads[record["dist_id"]]
    assert ("hello", "1.0") in fake.releases
    assert all(auth == f"token {SECRET}" for _, path, auth in fake.log if not path.startswith("/s3/"))
    out = capsys.readouterr().out
    assert f"uploaded torchwin/hello/1.0/linux-64/{pkg.name} (label nightly)" in out


def test_existing_file_is_skipped_and_other_content_is_refused(fake, pkg, config_file, capsys):
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg) == 0
    stages = len(fake.requests_to("POST", "/stage/"))
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg) == 0
    assert len(fake.requests_to("POST", "/stage/")) == stages
    assert "already on anaconda.org" in capsys.readouterr().out
    fake.find("hello", "1.0", "linux-64/" + pkg.name)["sha256"] = "f" * 64
    with pytest.raises(Failure, match="already on anaconda.org with other content"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg)


def test_transient_failures_are_retried_with_exponential_backoff(fake, pkg, config_file):
    fake.fail("GET", r"^/package/", "drop", times=1)  # connection lost
    fake.fail("POST", r"^/stage/", 503, times=2)  # server trouble
    sleeps = []
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps) == 0
    assert sleeps == [2.0, 2.0, 4.0]
    assert len(fake.requests_to("POST", "/stage/")) == 3
    assert len(fake.requests_to("POST", "/commit/")) == 1
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is not None


def test_retries_give_up_after_the_last_attempt(fake, pkg, config_file):
    fake.fail("POST", r"^/stage/", 502, times=100)
    sleeps = []
    with pytest.raises(Failure, match=r"still failing after 6 tries"):
        run_publish("--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps)
    assert sleeps == [2.0, 4.0, 8.0, 16.0, 32.0]
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is None


def test_4xx_is_final_and_the_token_never_shows(fake, pkg, config_file, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    fake.fail("POST", r"^/stage/", 403, times=1, echo=True)
    code = main(["publish", "--api-url", fake.url, "--config", str(config_file), str(pkg)])
    assert code == 1
    captured = capsys.readouterr()
    assert len(fake.requests_to("POST", "/stage/")) == 1  # not retried
    assert "refused for token ***" in captured.err  # the server's echo, blanked
    everything = captured.out + captured.err + caplog.text
    assert SECRET not in everything
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is None


def test_rate_limit_429_is_retried_and_other_4xx_are_not(fake, pkg, config_file):
    fake.fail("POST", r"^/stage/", 429, times=1)  # Too Many Requests, then fine
    sleeps = []
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps) == 0
    assert sleeps == [2.0]
    assert len(fake.requests_to("POST", "/stage/")) == 2
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is not None


@pytest.mark.parametrize("status", [400, 403, 404, 409])
def test_other_4xx_fail_at_once_with_one_line(fake, pkg, config_file, capsys, status):
    fake.fail("POST", r"^/stage/", status, times=1)
    code = main(["publish", "--api-url", fake.url, "--config", str(config_file), str(pkg)])
    assert code == 1
    assert len(fake.requests_to("POST", "/stage/")) == 1  # not retried
    err = capsys.readouterr().err
    assert err.startswith("torchwin: error: anaconda.org: upload linux-64/") and "Traceback" not in err
    assert fake.find("hello", "1.0", "linux-64/" + pkg.name) is None


def file_sha256(path):
    return file_digest(path)[0]


def night(tmp_path, date, pytorch_content):
    """What one nightly's publish job downloads: a pytorch build and the rebuilt toolchain packages."""
    folder = tmp_path / f"dist-{date:%Y%m%d}"
    stamp = datetime(date.year, date.month, date.day, 3, tzinfo=timezone.utc)
    toolchain = [
        make_package(folder / "toolchain", name="vs2017_win-64", version="19.11", build="h0_0", subdir="win-64",
                     timestamp=stamp),
        make_package(folder / "toolchain", name="pytorch-mutex", version="1.0", build="cuda", subdir="noarch",
                     timestamp=stamp),
    ]
    pytorch = make_package(folder / "packages", name="pytorch", version=f"1.2.0.dev{date:%Y%m%d}",
                           build="py36_cuda90_cudnn7_200", subdir="win-64", content=pytorch_content,
                           timestamp=stamp)
    return toolchain, pytorch


def publish_night(fake, config_file, toolchain, packages):
    """The nightly's upload step: toolchain packages first (--skip-rebuilt), then the pytorch builds."""
    common = ["--label", "nightly", "--api-url", fake.url, "--config", config_file]
    assert run_publish(*common, "--skip-rebuilt", *toolchain) == 0
    return run_publish(*common, *packages)


def test_second_night_skips_rebuilt_toolchain_packages_and_still_guards_pytorch(fake, config_file, tmp_path,
                                                                                 capsys):
    toolchain1, pytorch1 = night(tmp_path, datetime(2019, 6, 1), "night one")
    assert publish_night(fake, config_file, toolchain1, [pytorch1]) == 0
    vs_name = "win-64/" + toolchain1[0].name
    first = fake.find("vs2017_win-64", "19.11", vs_name)["sha256"]
    capsys.readouterr()

    # Night two rebuilds the toolchain from the same recipes: same file names, other bytes (timestamps).
    toolchain2, pytorch2 = night(tmp_path, datetime(2019, 6, 2), "night two")
    assert [p.name for p in toolchain2] == [p.name for p in toolchain1]
    assert toolchain2[0].read_bytes() != toolchain1[0].read_bytes()
    stages = len(fake.requests_to("POST", "/stage/"))
    assert publish_night(fake, config_file, toolchain2, [pytorch2]) == 0
    out = capsys.readouterr().out
    assert f"skipped torchwin/vs2017_win-64/19.11/{vs_name}: a rebuild of what is already on" in out
    assert "--skip-rebuilt keeps the copy there" in out
    assert fake.find("vs2017_win-64", "19.11", vs_name)["sha256"] == first  # the first night's copy stays
    assert len(fake.requests_to("POST", "/stage/")) == stages + 1  # only the new pytorch went up
    assert fake.find("pytorch", "1.2.0.dev20190602", "win-64/" + pytorch2.name)["labels"] == ["nightly"]

    # Without --skip-rebuilt the rebuilt toolchain is refused, as before.
    with pytest.raises(Failure, match="already on anaconda.org with other content"):
        run_publish("--label", "nightly", "--api-url", fake.url, "--config", config_file, toolchain2[0])

    # A pytorch nightly of the same name with other content is refused, and refused before anything
    # of its run is uploaded.
    _, pytorch2_again = night(tmp_path / "again", datetime(2019, 6, 2), "night two, rebuilt differently")
    _, pytorch3 = night(tmp_path, datetime(2019, 6, 3), "night three")
    assert pytorch2_again.name == pytorch2.name
    with pytest.raises(Failure, match=r"already on anaconda.org with other content.*nothing uploaded"):
        publish_night(fake, config_file, toolchain2, [pytorch3, pytorch2_again])
    assert fake.find("pytorch", "1.2.0.dev20190603", "win-64/" + pytorch3.name) is None


def test_the_same_file_given_twice_goes_up_once(fake, pkg, config_file, tmp_path, capsys):
    copy = tmp_path / "copy" / "linux-64" / pkg.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(pkg.read_bytes())
    assert run_publish("--api-url", fake.url, "--config", config_file, pkg, copy) == 0
    assert len(fake.requests_to("POST", "/commit/")) == 1
    assert "the same file is given twice" in capsys.readouterr().out


def test_dry_run_says_what_publish_would_do_per_file_without_a_token(fake, config_file, tmp_path, capsys,
                                                                      monkeypatch):
    new = make_package(tmp_path / "a", name="fresh", subdir="win-64")
    same = make_package(tmp_path / "a", name="same", subdir="win-64")
    other = make_package(tmp_path / "a", name="other", subdir="win-64", content="mine")
    fake.add_file("same", "1.0", "win-64/" + same.name, ["main"], {}, sha256=file_sha256(same))
    fake.add_file("other", "1.0", "win-64/" + other.name, ["nightly"], {}, sha256="f" * 64)
    monkeypatch.delenv("ANACONDA_API_TOKEN")
    argv = ["publish", "--dry-run", "--label", "nightly", "--api-url", fake.url, "--config", str(config_file)]

    assert main([*argv, str(new), str(same)]) == 0
    out = capsys.readouterr().out
    assert "anonymously (ANACONDA_API_TOKEN is not set" in out
    assert f"would upload torchwin/fresh/1.0/win-64/{new.name} (label nightly) from {new}" in out
    assert f"would skip torchwin/same/1.0/win-64/{same.name}: already on anaconda.org (labels: main)" in out
    assert "dry run: 1 to upload, 1 to skip; nothing changed" in out
    assert "anaconda upload" not in out

    # A file the real run would refuse: said per file, and the dry run fails as the real run would.
    assert main([*argv, str(new), str(other)]) == 1
    captured = capsys.readouterr()
    assert f"would refuse torchwin/other/1.0/win-64/{other.name} from {other}: already on anaconda.org " \
           "with other content (sha256 there ffffffffffff..." in captured.out
    assert "would refuse 1 of 2 file(s), nothing uploaded" in captured.err

    # With --skip-rebuilt the same file is a skip.
    assert main([*argv, "--skip-rebuilt", str(other)]) == 0
    assert f"would skip torchwin/other/1.0/win-64/{other.name}: a rebuild of" in capsys.readouterr().out

    # Only look-ups happened, all without credentials; nothing was created or sent.
    assert {(m, auth) for m, _, auth in fake.log} == {("GET", "")}
    assert fake.find("fresh", "1.0", "win-64/" + new.name) is None


def test_dry_run_with_a_token_uses_it_and_never_shows_it(fake, pkg, config_file, capsys):
    fake.fail("GET", r"^/dist/", 503, times=1, echo=True)  # a careless server echoes the credentials
    sleeps = []
    assert run_publish("--dry-run", "--api-url", fake.url, "--config", config_file, pkg, sleeps=sleeps) == 0
    assert sleeps == [2.0]
    captured = capsys.readouterr()
    assert "retrying in 2 s" in captured.out and "refused for token ***" in captured.out
    assert SECRET not in captured.out + captured.err
    assert all(auth == f"token {SECRET}" for _, _, auth in fake.log)
    assert [m for m, _, _ in fake.log] == ["GET", "GET"]


def test_token_comes_only_from_anaconda_api_token(fake, pkg, config_file, monkeypatch, capsys):
    monkeypatch.delenv("ANACONDA_API_TOKEN")
    monkeypatch.setenv("BINSTAR_API_TOKEN", SECRET)  # anaconda-client would use it; we do not
    assert main(["publish", "--api-url", fake.url, "--config", str(config_file), str(pkg)]) == 2
    assert "ANACONDA_API_TOKEN is not set" in capsys.readouterr().err
    assert fake.log == []


def test_bad_package_stops_before_any_upload(fake, pkg, config_file, tmp_path, capsys):
    bad = tmp_path / "broken-1.0-h0_0.conda"
    bad.write_bytes(b"not a zip")
    assert main(["publish", "--api-url", fake.url, "--config", str(config_file), str(pkg), str(bad)]) == 2
    assert "not a readable .conda archive" in capsys.readouterr().err
    assert fake.log == []


def test_unknown_label_is_refused(fake, pkg, config_file, capsys):
    assert (
        main(["publish", "--label", "beta", "--api-url", fake.url, "--config", str(config_file), str(pkg)])
        == 2
    )
    assert "unknown label 'beta'" in capsys.readouterr().err


def test_prune_mirrors_local_retention_on_anaconda_org(fake, config_file, capsys):
    now = datetime.now(timezone.utc)

    def nightly(days, build="py36_cpu_0", labels=("nightly",)):
        stamp = now - timedelta(days=days)
        version = f"1.1.0.dev{stamp:%Y%m%d}"
        attrs = {
            "subdir": "win-64",
            "build": build,
            "build_number": 0,
            "timestamp": int(stamp.timestamp() * 1000),
        }
        return fake.add_file(
            "pytorch", version, f"win-64/pytorch-{version}-{build}.tar.bz2", list(labels), attrs
        )

    keep = [nightly(1), nightly(3)]  # the newest 2 of the variant
    old = [nightly(20), nightly(40)]
    also_main = nightly(60, labels=("nightly", "main"))  # main is never pruned
    lonely = nightly(90, build="py37_cpu_0")  # the only build of its variant
    assert (
        run_publish(
            "--prune", "--dry-run", "--label", "nightly", "--api-url", fake.url, "--config", config_file
        )
        == 0
    )
    out = capsys.readouterr().out
    for record in old:
        spec = f"torchwin/pytorch/{record['version']}/{record['basename']}"
        assert f"would remove {spec} -- nightly: built" in out
        assert f"anaconda remove --force {spec}" in out
    for record in [*keep, also_main, lonely]:
        assert record["basename"] not in out
    assert fake.requests_to("DELETE", "/") == []

    assert run_publish("--prune", "--label", "nightly", "--api-url", fake.url, "--config", config_file) == 0
    assert len(fake.requests_to("DELETE", "/dist/")) == 2
    left = {r["basename"] for r in fake.packages["pytorch"]["files"]}
    assert left == {r["basename"] for r in [*keep, also_main, lonely]}


# ------------------------------------------------ packages whose recipe names their label

LABELLED_CONFIG = CONFIG.replace("labels: [main, nightly]", "labels: [main, nightly, cuda-runtime]")


@pytest.fixture
def labelled_config(tmp_path):
    path = tmp_path / "labelled.yaml"
    path.write_text(LABELLED_CONFIG)
    return path


@pytest.mark.parametrize("package_format", ["conda", "tar-bz2"])
def test_a_package_is_published_only_under_the_label_its_recipe_names(
        fake, pkg, labelled_config, tmp_path, capsys, package_format):
    cudnn = packages.labelled_package(tmp_path / "out", "cuda-runtime", package_format)
    for label in ("nightly", None):  # None: main, the default
        argv = ["publish", "--api-url", fake.url, "--config", str(labelled_config), str(pkg), str(cudnn)]
        assert main(argv + (["--label", label] if label else [])) == 2
        assert main(argv + ["--dry-run"] + (["--label", label] if label else [])) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 2  # one line each
        assert (f"{cudnn}: its recipe keeps it in label cuda-runtime (extra.torchwin.label), not {label or 'main'}; "
                "publish it with --label cuda-runtime; nothing uploaded") in err
    assert fake.log == []  # refused before any look-up, the other file included

    assert run_publish("--label", "cuda-runtime", "--api-url", fake.url, "--config", labelled_config, cudnn) == 0
    assert fake.find("cudnn", "7.1.3", "linux-64/" + cudnn.name)["labels"] == ["cuda-runtime"]


def test_a_label_the_channel_does_not_have_is_refused_naming_about_json(fake, config_file, tmp_path, capsys):
    cudnn = packages.labelled_package(tmp_path / "out", "cuda-runtime")  # config_file's labels: main, nightly
    assert main(["publish", "--label", "nightly", "--api-url", fake.url, "--config", str(config_file),
                 str(cudnn)]) == 2
    assert (f"{cudnn}: info/about.json: extra.torchwin.label 'cuda-runtime' is not a label of {config_file} "
            "(it lists: main, nightly)") in capsys.readouterr().err
    assert fake.log == []


# ------------------------------------------------ issue 14: hostile servers, partial failures, no network


def test_a_token_the_server_puts_in_a_header_is_blanked_in_what_anaconda_client_logs(fake, pkg, config_file,
                                                                                    capsys, caplog):
    caplog.set_level(logging.DEBUG)
    fake.token_warning = True
    assert run_publish("--dry-run", "--api-url", fake.url, "--config", config_file, pkg) == 0
    captured = capsys.readouterr()
    assert "Token warning: this token expires soon: token ***" in caplog.text  # logged, and blanked
    assert SECRET not in caplog.text + captured.out + captured.err
    # Only while publish runs: the filters are gone afterwards.
    assert not any(isinstance(f, publish.RedactingFilter)
                   for f in logging.getLogger("binstar").filters + logging.lastResort.filters)


def test_the_header_token_stays_hidden_in_a_real_process_with_no_logging_set_up(fake, pkg, config_file):
    # Without handlers anaconda-client's warning goes through logging.lastResort to stderr.
    fake.token_warning = True
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), ANACONDA_API_TOKEN=SECRET)
    done = subprocess.run([sys.executable, "-m", "torchwin", "publish", "--dry-run", "--api-url", fake.url,
                           "--config", str(config_file), str(pkg)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Token warning: this token expires soon: token ***" in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_a_failed_upload_stops_the_run_with_a_table_naming_every_file(fake, config_file, tmp_path, capsys):
    files = [make_package(tmp_path / "out", name=n, subdir="win-64") for n in ("alpha", "same", "beta", "gamma")]
    fake.add_file("same", "1.0", "win-64/" + files[1].name, ["main"], {}, sha256=file_sha256(files[1]))
    fake.fail("POST", r"^/stage/torchwin/beta/", 400)  # final: not retried
    code = main(["publish", "--api-url", fake.url, "--config", str(config_file), *map(str, files)])
    assert code == 1
    captured = capsys.readouterr()
    rows = [line.split() for line in captured.out.splitlines() if line.startswith("  ")]
    where = [f"torchwin/{n}/1.0/win-64/{f.name}" for n, f in zip(("alpha", "same", "beta", "gamma"), files)]
    assert [row[:3] for row in rows] == [["uploaded", where[0]], ["skipped", where[1], "(already"],
                                         ["failed", where[2], "(anaconda.org:"], ["not", "attempted", where[3]]]
    assert "1 uploaded, 1 skipped, 1 failed, 1 not attempted" in captured.out
    last = captured.err.splitlines()[-1]  # before it: anaconda-client's own progress bar
    assert last.startswith(f"torchwin: error: anaconda.org: upload win-64/{files[2].name}: server trouble (HTTP 400); ")
    assert last.endswith("; publish stopped there: 1 uploaded, 1 skipped, 1 failed, 1 not attempted (table above); "
                         "running it again skips the files already uploaded")
    assert fake.find("alpha", "1.0", where[0].split("/", 3)[3]) is not None
    assert fake.find("gamma", "1.0", where[3].split("/", 3)[3]) is None
    assert fake.requests_to("POST", "/stage/torchwin/gamma/") == []  # never tried


def test_a_successful_run_ends_with_the_table_too(fake, pkg, config_file, capsys):
    assert run_publish("--label", "nightly", "--api-url", fake.url, "--config", config_file, pkg) == 0
    out = capsys.readouterr().out
    assert "\nlabel nightly, 1 file(s):\n  uploaded       torchwin/hello/1.0/linux-64/" in out
    assert out.endswith("1 uploaded, 0 skipped, 0 failed, 0 not attempted\n")


def test_a_timestamp_out_of_range_is_said_and_the_upload_time_is_used(fake, config_file, capsys):
    now = datetime.now(timezone.utc)
    records = []
    for days, stamp in ((1, None), (2, None), (3, 1e20), (400, -1e30)):
        built = now - timedelta(days=days)
        version = f"1.1.0.dev{built:%Y%m%d}"
        record = fake.add_file("pytorch", version, f"win-64/pytorch-{version}-py36_cpu_0.tar.bz2", ["nightly"],
                               {"subdir": "win-64", "build": "py36_cpu_0", "build_number": 0,
                                "timestamp": stamp if stamp is not None else int(built.timestamp() * 1000)})
        record["upload_time"] = built.isoformat()
        records.append(record)
    argv = ("--prune", "--dry-run", "--label", "nightly", "--api-url", fake.url, "--config", config_file)
    assert run_publish(*argv) == 0
    out = capsys.readouterr().out
    spec = "torchwin/pytorch/{version}/{basename}".format
    assert (f"warning: {spec(**records[2])}: attrs.timestamp 1e+20 is not a date (out of range); "
            "its upload_time is used instead") in out
    # 3 days old by its upload time: younger than keep_days, it stays; the 400-day-old one goes.
    assert "attrs.timestamp -1e+30 is not a date (out of range)" in out
    assert f"would remove {spec(**records[2])}" not in out
    assert f"would remove {spec(**records[3])} -- nightly: built" in out
    assert fake.requests_to("DELETE", "/") == []


def test_a_host_that_does_not_resolve_is_one_line_and_one_attempt(pkg, config_file, capsys, monkeypatch):
    real = socket.getaddrinfo
    lookups = []

    def counting(host, *args, **kwargs):
        lookups.append(host)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    monkeypatch.delenv("ANACONDA_API_TOKEN")
    argv = ["publish", "--dry-run", "--api-url", "http://api.torchwin.invalid", "--config", str(config_file),
            str(pkg)]
    args = make_parser().parse_args(argv)
    sleeps = []
    with pytest.raises(Failure) as err:
        publish.run(args, sleep=sleeps.append)
    assert lookups == ["api.torchwin.invalid"] and sleeps == []  # one look-up, no retries
    assert str(err.value) == (f"anaconda.org: look for linux-64/{pkg.name}: cannot resolve the host name "
                              "api.torchwin.invalid (offline, or a wrong --api-url / anaconda.api_url?)")
    assert main(argv) == 1
    err_text = capsys.readouterr().err
    assert err_text.count("\n") == 1 and "Traceback" not in err_text

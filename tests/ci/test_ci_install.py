"""`torchwin ci install-vs2017 / install-cuda / hash` and the download table behind them.

The real installers cannot run here (Windows, hours, gigabytes), so the
install path is exercised with a table of our own: files served over HTTP on
127.0.0.1, an "installer" that is a small Python script recording its
arguments, and a cuDNN-shaped archive. The shipped table is checked for what
can be checked offline: shape, URLs, hashes' form, and the arguments it builds.
"""

import hashlib
import http.server
import io
import json
import os
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml
from torchwin import recipes
from torchwin.ci import downloads as ci_downloads
from torchwin.ci import fetch
from torchwin.cli import main
from torchwin.errors import Failure, UserError

ROOT = Path(__file__).resolve().parents[2]
HOST = ci_downloads.host_platform()
EXE = ".exe" if HOST == "win-64" else ""
SOURCE = "https://example.org/manifest-that-publishes-the-hash"
# Downloads nobody has published a hash for (README "Known limits"): only the 0.4.1 release
# builds use CUDA 9.1 on Windows. Each test that needs a pin says so for these, and fails
# (strict xfail) the day one is pinned, so that this list shrinks with the table.
KNOWN_UNPINNED = {
    "cuda 9.1 win-64 local": "no published sha256/md5 found for cuda_9.1.85_win10.exe",
    "cudnn 9.1 win-64": "no published hash found for cudnn-9.1-windows10-x64-v7.1.zip",
}
NVTX = r"C:\Program Files\NVIDIA Corporation\NvToolsExt"


def matrix_cudas(platform):
    """The CUDA versions recipes/pytorch/variants.yaml builds for platform (any release)."""
    values = recipes.load_variant_config(ROOT / "recipes" / "pytorch", platform).to_dict()
    key = "pytorch_cuda_win" if platform == "win-64" else "pytorch_cuda_linux"
    return sorted({cuda for row in values[key] for cuda in str(row).split()})


def _unpinned_mark(*wheres):
    reasons = [KNOWN_UNPINNED[w] for w in wheres if w in KNOWN_UNPINNED]
    return [pytest.mark.xfail(strict=True, reason="; ".join(reasons))] if reasons else []

# ---------------------------------------------------------------- the shipped table


@pytest.fixture(scope="module")
def table():
    return ci_downloads.load_table()


def _downloads(table):
    """Every download entry of the table with where it sits."""
    yield "vs2017", table["vs2017"]["win-64"]["download"]
    for version, platforms in table["cuda"].items():
        for platform, entry in platforms.items():
            for kind, download in entry["installers"].items():
                yield f"cuda {version} {platform} {kind}", download
            if "cudnn" in entry:
                yield f"cudnn {version} {platform}", entry["cudnn"]
            for number, patch in enumerate(entry.get("patches", []), 1):
                yield f"cuda {version} {platform} patch {number}", patch["download"]


def test_the_table_is_package_data_and_valid(table):
    path = ci_downloads.default_table_path()
    assert path.name == "ci_downloads.yaml" and path.is_file()
    assert table["schema"] == 1


def test_every_cuda_version_of_the_matrix_is_there_and_nothing_else(table):
    for platform, word in (("win-64", "windows"), ("linux-64", "linux")):
        wanted = matrix_cudas(platform)
        assert wanted, platform
        have = sorted(v for v, platforms in table["cuda"].items() if platform in platforms)
        assert have == wanted, platform  # no entry the matrix never installs
        for version in wanted:
            entry = table["cuda"][version][platform]
            # Local installers only: a network installer fetches its parts unpinned.
            assert set(entry["installers"]) == {"local"}
            assert entry["version"].startswith(version + ".")
            assert entry["cudnn"]["file"].startswith(f"cudnn-{version}-{word}")
    for version in matrix_cudas("win-64"):
        assert table["cuda"][version]["win-64"]["install_dir"].endswith("\\v" + version)


def test_urls_are_the_vendors_own_https_addresses(table):
    hosts = {"vs2017": {"download.visualstudio.microsoft.com"}}
    for where, download in _downloads(table):
        assert download["url"].startswith("https://"), where
        host = download["url"].split("/")[2]
        assert host in hosts.get(where, {"developer.nvidia.com", "developer.download.nvidia.com"}), where
        # The file name on disk keeps the vendor's name (plus the extension Windows needs to run it).
        served_name = download["url"].split("/")[-1].replace(".", "")
        assert Path(download["file"]).stem.replace(".", "") in served_name, where


def test_pinned_hashes_are_distinct(table):
    pinned = [d["sha256"] for _, d in _downloads(table) if d["sha256"]]
    assert pinned, "the Linux CUDA runfiles and cuDNN tarballs have published sha256 sums"
    assert len(pinned) == len(set(pinned)), "two files cannot share a sha256: a pasted value is wrong"


@pytest.mark.parametrize("where, download", list(_downloads(ci_downloads.load_table())),
                         ids=lambda value: value if isinstance(value, str) else "")
def test_every_download_is_pinned_with_its_source(request, where, download):
    for mark in _unpinned_mark(where):
        request.applymarker(mark)
    pinned = download["sha256"] or (download.get("md5") and download.get("signer"))
    assert pinned, f"{where}: {download['url']} has no pin"
    assert download["source"].startswith("https://github.com/") and "/blob/" in download["source"], where
    # A source at a fixed commit (or tag) stays readable as it was when the hash was taken.
    assert "/blob/master/" not in download["source"] and "/blob/main/" not in download["source"], where


def test_every_windows_executable_names_its_signer(table):
    assert table["vs2017"]["win-64"]["download"]["signer"] == "Microsoft Corporation"
    for version in matrix_cudas("win-64"):
        assert table["cuda"][version]["win-64"]["installers"]["local"]["signer"] == "NVIDIA Corporation"


def test_windows_cuda_arguments(table):
    for version in matrix_cudas("win-64"):
        compiler = "compiler" if version in ("8.0", "9.0") else "nvcc"
        plan = ci_downloads.cuda_plan(table, version, platform="win-64")
        toolkit, cudnn = plan.steps
        args = toolkit.args
        assert args[0] == "-s"
        # The compiler component was renamed in 9.1 (pytorch/builder's cuda_install.bat did the same).
        assert f"{compiler}_{version}" in args
        assert ("nvcc_" + version in args) == (compiler == "nvcc")
        assert all(a.endswith("_" + version) for a in args[1:])
        for needed in ("cudart", "cublas_dev", "curand_dev", "cufft_dev", "cusparse_dev", "nvrtc_dev"):
            assert f"{needed}_{version}" in args
        # NvToolsExt comes with the Visual Studio integration component, and is checked afterwards.
        assert f"visual_studio_integration_{version}" in args
        cuda_dir = rf"C:\Program Files\NVIDIA GPU Computing Toolkit\CUDA\v{version}"
        assert toolkit.expect == [cuda_dir + r"\bin\nvcc.exe", NVTX + r"\bin\x64\nvToolsExt64_1.dll",
                                  NVTX + r"\lib\x64\nvToolsExt64_1.lib", NVTX + r"\include\nvToolsExt.h"]
        assert plan.env["NVTOOLSEXT_PATH"] == NVTX
        assert cudnn.action == "extract" and cudnn.strip == "cuda"
        assert plan.env["CUDA_PATH_V" + version.replace(".", "_")] == plan.env["CUDA_PATH"]


def test_linux_cuda_arguments(table):
    plan = ci_downloads.cuda_plan(table, "9.0", platform="linux-64", install_dir="/opt/cuda-9.0")
    toolkit = plan.steps[0]
    assert toolkit.runner == ["sh"]
    assert toolkit.args == ["--silent", "--toolkit", "--toolkitpath=/opt/cuda-9.0", "--override"]
    assert plan.env["CUDA_HOME"] == "/opt/cuda-9.0" and plan.paths == ["/opt/cuda-9.0/bin"]


def test_vs2017_arguments(table):
    step = ci_downloads.vs2017_plan(table).steps[0]
    args = step.args
    for flag in ("--quiet", "--wait", "--norestart"):
        assert flag in args
    added = [args[i + 1] for i, a in enumerate(args) if a == "--add"]
    # CUDA 9.0/9.1 refuse MSVC newer than 14.11: the toolset component is the point of this install.
    assert "Microsoft.VisualStudio.Component.VC.Tools.14.11" in added
    assert "Microsoft.VisualStudio.Workload.VCTools" in added
    assert "Microsoft.VisualStudio.Component.Windows10SDK.17763" in added
    install_path = args[args.index("--installPath") + 1]
    assert "{" not in install_path and install_path.endswith(r"2017\BuildTools")
    # The release channel of VS 15 (its last minor is 15.9), and vswhere must find a 15.9 instance
    # there afterwards -- not the VS2022 a windows-2022 runner already has.
    assert args[args.index("--channelUri") + 1] == "https://aka.ms/vs/15/release/channel"
    assert step.vswhere["version"] == "[15.9,16.0)" and step.vswhere["path"] == install_path
    assert "Microsoft.VisualStudio.Component.VC.Tools.14.11" in step.vswhere["requires"]
    assert 3010 in step.ok_exit_codes  # "reboot required" is a success
    assert any(e.endswith(r"VC\Tools\MSVC\14.11.*") for e in step.expect)


def test_unknown_version_or_platform_is_bad_input(table):
    with pytest.raises(UserError, match=r"CUDA 10\.0 is not in ci_downloads.yaml; known: 8\.0, 9\.0"):
        ci_downloads.cuda_plan(table, "10.0", platform="win-64")
    with pytest.raises(UserError, match="vs2017 entry for linux-64"):
        ci_downloads.vs2017_plan(table, "linux-64")


# ---------------------------------------------------------------- validation


def _write(tmp_path, data, name="table.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t["cuda"].__setitem__(9.0, t["cuda"].pop("9.0")), "must be quoted strings"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["installers"]["local"].__setitem__("url", "http://example.com"),
         "must be an https:// URL"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["cudnn"].__setitem__("sha256", "ABC"), "64 lowercase hex"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["cudnn"].pop("sha256"), "sha256 is missing"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["installers"]["local"].__setitem__("file", "../evil.exe"),
         "plain file name"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["args"].append("{prefix}"), "unknown placeholder {prefix}"),
        (lambda t: t["cuda"]["9.0"]["win-64"].__setitem__("subpackages", []), "sub-package list"),
        (lambda t: t["cuda"]["9.0"].__setitem__("osx-64", {}), "unknown platform"),
        (lambda t: t["vs2017"]["win-64"]["download"].__setitem__("md5", "xyz"), "32 lowercase hex"),
        (lambda t: t["cuda"]["9.2"]["win-64"].__setitem__("subpackage", ["nvcc"]),
         r"unknown key\(s\) subpackage"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["cudnn"].pop("source"), r"cudnn\.source: a pinned hash needs"),
        (lambda t: t["cuda"]["9.0"]["win-64"]["installers"]["local"].__setitem__("signer", "NVIDIA"),
         "must be one of: NVIDIA Corporation, Microsoft Corporation"),
        (lambda t: t["vs2017"]["win-64"].__setitem__("channel", "http://example.com/channel"),
         "channel: must be the https URL"),
    ],
)
def test_a_broken_table_names_the_key(tmp_path, table, change, message):
    broken = json.loads(json.dumps(table))
    change(broken)
    with pytest.raises(UserError, match=message) as info:
        ci_downloads.load_table(_write(tmp_path, broken))
    assert str(tmp_path / "table.yaml") in str(info.value)


def test_a_broken_table_from_the_cli_is_exit_2(tmp_path, capsys):
    path = tmp_path / "table.yaml"
    path.write_text("schema: 1\nvs2017: [\n", encoding="utf-8")
    assert main(["ci", "install-vs2017", "--table", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "not valid YAML" in err and "Traceback" not in err


# ---------------------------------------------------------------- dry run


def test_dry_run_shows_every_url_hash_and_argument_and_changes_nothing(tmp_path, table, capsys):
    downloads = tmp_path / "downloads"
    assert main(["ci", "install-cuda", "9.2", "--platform", "win-64", "--dry-run",
                 "--download-dir", str(downloads)]) == 0
    out = capsys.readouterr().out
    entry = table["cuda"]["9.2"]["win-64"]
    for download in (entry["installers"]["local"], entry["cudnn"]):
        assert download["url"] in out
    assert "NOT PINNED" not in out
    assert "sha256: " + entry["installers"]["local"]["sha256"] in out
    assert "sha256: " + entry["cudnn"]["sha256"] in out
    assert "md5:    efaf92a93bdef21da29aba8a8768a16d" in out
    assert "signer: NVIDIA Corporation" in out
    assert "pinned from: https://github.com/JuliaPackaging/Yggdrasil/" in out
    assert "-s nvcc_9.2 cublas_9.2" in out
    assert "then set CUDA_PATH_V9_2=" in out
    assert "nothing was downloaded or changed" in out
    assert not downloads.exists()


@pytest.mark.parametrize("version", [
    pytest.param(v, marks=_unpinned_mark(f"cuda {v} win-64 local", f"cudnn {v} win-64"))
    for v in matrix_cudas("win-64")])
def test_dry_run_of_every_windows_cuda_of_the_matrix_is_fully_pinned(tmp_path, table, capsys, version):
    assert main(["ci", "install-cuda", version, "--platform", "win-64", "--dry-run",
                 "--download-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    entry = table["cuda"][version]["win-64"]
    for download in (entry["installers"]["local"], entry["cudnn"]):
        assert "url:    " + download["url"] in out
        assert download["sha256"] and "sha256: " + download["sha256"] in out
    assert "signer: NVIDIA Corporation" in out
    compiler = "compiler" if version == "9.0" else "nvcc"
    assert f"run:    {tmp_path / 'd' / entry['installers']['local']['file']} -s {compiler}_{version}" in out
    assert f"visual_studio_integration_{version}" in out and r"NvToolsExt\bin\x64\nvToolsExt64_1.dll" in out
    assert "not pinned" not in out.lower()


def test_dry_run_of_a_pinned_linux_entry_prints_its_sha256(tmp_path, table, capsys):
    assert main(["ci", "install-cuda", "9.0", "--platform", "linux-64", "--dry-run",
                 "--download-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "sha256: " + table["cuda"]["9.0"]["linux-64"]["installers"]["local"]["sha256"] in out
    assert "--toolkitpath=" in out and "not pinned" not in out.lower()


def test_dry_run_vs2017(tmp_path, capsys):
    assert main(["ci", "install-vs2017", "--dry-run", "--download-dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    entry = ci_downloads.load_table()["vs2017"]["win-64"]["download"]
    assert "url:    " + entry["url"] in out and "sha256: " + entry["sha256"] in out
    assert "signer: Microsoft Corporation" in out
    assert "--channelUri https://aka.ms/vs/15/release/channel" in out
    assert "--add Microsoft.VisualStudio.Component.VC.Tools.14.11" in out
    assert "vswhere: -version [15.9,16.0) -requires Microsoft.VisualStudio.Component.VC.Tools.14.11" in out
    assert not (tmp_path / "d").exists()


def test_a_plan_for_another_platform_does_not_run(tmp_path, table):
    other = "linux-64" if HOST == "win-64" else "win-64"
    plan = ci_downloads.cuda_plan(table, "9.0", platform=other)
    with pytest.raises(UserError, match="this plan is for " + other):
        ci_downloads.execute(plan, tmp_path, out=io.StringIO())


def test_the_shipped_unpinned_entries_refuse_to_run(tmp_path, table):
    plan = ci_downloads.cuda_plan(table, "9.1", platform="win-64")
    plan.platform = HOST  # pretend we are on Windows: the pin check comes before anything else
    with pytest.raises(Failure, match=r"no pinned sha256.*torchwin ci hash cuda 9\.1 --platform win-64"):
        ci_downloads.execute(plan, tmp_path / "d", out=io.StringIO())
    assert not (tmp_path / "d").exists()


# ---------------------------------------------------------------- download, verify, install


class Server:
    """Serves a folder on 127.0.0.1, counts requests, and can answer one path with a redirect."""

    def __init__(self, root):
        self.root = root
        self.requests = []
        self.redirects = {}
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests.append(self.path)
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.end_headers()
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


INSTALLER = """\
import json, pathlib, sys
args = sys.argv[1:]
out = pathlib.Path(args[args.index("--toolkitpath") + 1])
(out / "bin").mkdir(parents=True, exist_ok=True)
(out / "bin" / ("nvcc" + {exe!r})).write_text("fake nvcc")
(out / "installer-args.json").write_text(json.dumps(args))
sys.exit(int({code!r}))
"""


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _cudnn_archive(kind):
    """A cuDNN-shaped archive: everything under cuda/."""
    files = {"cuda/include/cudnn.h": b"#define CUDNN_MAJOR 7\n", "cuda/lib64/libcudnn.so.7": b"\x7fELF"}
    buffer = io.BytesIO()
    if kind == "zip":
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def mirror(tmp_path):
    """A served folder with an installer and a cuDNN archive, and a table that points at them."""
    root = tmp_path / "served"
    root.mkdir()
    server = Server(root)
    state = {"root": root, "server": server, "install_dir": tmp_path / "cuda-9.0"}

    def setup(code=0, installer_sha=None, cudnn_sha=None, md5=None, ok_codes=(0,), archive="tgz"):
        installer = INSTALLER.format(exe=EXE, code=code).encode()
        (root / "installer.py").write_bytes(installer)
        cudnn = _cudnn_archive(archive)
        (root / "cudnn.archive").write_bytes(cudnn)
        local = {"url": server.url + "/installer.py", "file": "installer.py", "source": SOURCE,
                 "sha256": _sha(installer) if installer_sha is None else installer_sha}
        if md5:
            local["md5"] = md5
        entry = {
            "version": "9.0.176",
            "installers": {"local": local},
            "runner": [sys.executable],
            "args": ["--silent", "--toolkitpath", "{install_dir}"],
            "install_dir": str(state["install_dir"]),
            "ok_exit_codes": list(ok_codes),
            "cudnn": {"version": "7.1.4", "url": server.url + "/cudnn.archive", "file": "cudnn.archive",
                      "source": SOURCE, "sha256": _sha(cudnn) if cudnn_sha is None else cudnn_sha},
        }
        if HOST == "win-64":
            entry["subpackages"] = ["nvcc", "cudart"]
        data = {
            "schema": 1,
            "vs2017": {"win-64": {
                "download": {"url": server.url + "/vs.exe", "file": "vs.exe", "sha256": None},
                "install_dir": "C:\\x", "args": [], "components": ["A"]}},
            "cuda": {"9.0": {HOST: entry}},
        }
        state["table"] = _write(tmp_path, data)
        state["installer"], state["cudnn"] = installer, cudnn
        return state

    yield setup
    server.close()


def _install(state, tmp_path, *extra):
    return main(["ci", "install-cuda", "9.0", "--table", str(state["table"]),
                 "--download-dir", str(tmp_path / "downloads"), *extra])


def test_install_downloads_verifies_runs_and_unpacks(tmp_path, mirror, capsys, monkeypatch):
    state = mirror(archive="zip" if HOST == "win-64" else "tgz")
    github_env, github_path = tmp_path / "env", tmp_path / "path"
    monkeypatch.setenv("GITHUB_ENV", str(github_env))
    monkeypatch.setenv("GITHUB_PATH", str(github_path))
    assert _install(state, tmp_path, "--github-env") == 0
    target = state["install_dir"]
    args = json.loads((target / "installer-args.json").read_text())
    expected = ["--silent", "--toolkitpath", str(target)]
    if HOST == "win-64":
        expected += ["nvcc_9.0", "cudart_9.0"]
    assert args == expected
    # cuDNN's top-level cuda/ folder is dropped: the header lands in the toolkit's include/.
    assert (target / "include" / "cudnn.h").read_bytes() == b"#define CUDNN_MAJOR 7\n"
    assert (target / "lib64" / "libcudnn.so.7").is_file()
    env_lines = github_env.read_text().splitlines()
    assert f"CUDA_PATH={target}" in env_lines and f"CUDA_PATH_V9_0={target}" in env_lines
    assert github_path.read_text().splitlines() == [str(target / "bin")]
    out = capsys.readouterr().out
    assert f"sha256 {_sha(state['installer'])} verified" in out


def test_a_second_install_reuses_the_verified_downloads(tmp_path, mirror):
    state = mirror()
    assert _install(state, tmp_path) == 0
    served = len(state["server"].requests)
    assert served == 2
    assert _install(state, tmp_path) == 0
    assert len(state["server"].requests) == served


def test_a_bad_hash_refuses_to_run_the_installer(tmp_path, mirror, capsys):
    state = mirror(installer_sha="0" * 64)
    assert _install(state, tmp_path) == 1
    err = capsys.readouterr().err
    assert f"sha256 {_sha(state['installer'])}, expected {'0' * 64}" in err
    assert "nothing was installed" in err
    assert not state["install_dir"].exists()
    # The bad file is not kept where CI caches downloads.
    assert not (tmp_path / "downloads" / "installer.py").exists()
    assert not list((tmp_path / "downloads").glob(".part-*"))


def test_every_download_is_verified_before_anything_runs(tmp_path, mirror):
    # The toolkit is fine but cuDNN is not: the toolkit installer must not have run either.
    state = mirror(cudnn_sha="1" * 64)
    assert _install(state, tmp_path) == 1
    assert not state["install_dir"].exists()


def test_an_unpinned_entry_is_refused_before_any_download(tmp_path, mirror, capsys):
    state = mirror()
    data = yaml.safe_load(state["table"].read_text())
    data["cuda"]["9.0"][HOST]["cudnn"]["sha256"] = None
    state["table"].write_text(yaml.safe_dump(data))
    assert _install(state, tmp_path) == 1
    err = capsys.readouterr().err
    assert "no pinned sha256" in err and f"torchwin ci hash cuda 9.0 --platform {HOST}" in err
    assert state["server"].requests == [] and not state["install_dir"].exists()


def test_a_tampered_cached_file_is_replaced(tmp_path, mirror):
    state = mirror()
    cached = tmp_path / "downloads" / "installer.py"
    cached.parent.mkdir()
    cached.write_text("import sys; sys.exit('tampered installer ran')")
    assert _install(state, tmp_path) == 0
    assert cached.read_bytes() == state["installer"]


def test_a_wrong_published_md5_is_refused(tmp_path, mirror, capsys):
    state = mirror(md5="0" * 32)
    assert _install(state, tmp_path) == 1
    assert "expected NVIDIA's " + "0" * 32 in capsys.readouterr().err
    assert not state["install_dir"].exists()


def test_installer_exit_codes(tmp_path, mirror, capsys):
    # Like VS's 3010 ("reboot required"): a non-zero code the table declares a success
    # (a small one here, as POSIX exit codes stop at 255).
    state = mirror(code=3, ok_codes=(0, 3))
    assert _install(state, tmp_path) == 0
    state = mirror(code=5)
    assert _install(state, tmp_path) == 1
    assert "exited with code 5 (expected 0)" in capsys.readouterr().err


def test_a_redirect_away_from_https_is_refused(tmp_path, mirror, capsys):
    state = mirror()
    state["server"].redirects["/installer.py"] = "http://example.com/installer.py"
    assert _install(state, tmp_path) == 1
    assert "refusing to download http://example.com/installer.py" in capsys.readouterr().err
    assert not state["install_dir"].exists()


def test_hash_prints_the_sha256_to_pin(tmp_path, mirror, capsys):
    state = mirror(installer_sha="0" * 64)
    data = yaml.safe_load(state["table"].read_text())
    data["cuda"]["9.0"][HOST]["installers"]["local"]["sha256"] = None
    state["table"].write_text(yaml.safe_dump(data))
    assert main(["ci", "hash", "cuda", "9.0", "--table", str(state["table"]),
                 "--download-dir", str(tmp_path / "downloads")]) == 0
    out = capsys.readouterr().out
    assert "sha256: " + _sha(state["installer"]) in out
    assert "sha256: " + _sha(state["cudnn"]) in out
    assert not state["install_dir"].exists()  # hashing runs nothing


def test_archive_members_cannot_escape(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("cuda/../../outside.txt", b"x")
    archive = tmp_path / "evil.zip"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(Failure, match="outside the target folder"):
        fetch.extract(archive, tmp_path / "dest", "cuda", io.StringIO())
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.skipif(HOST == "win-64", reason="symlinks in cuDNN's Linux tarballs")
def test_tar_symlinks_are_kept_inside(tmp_path):
    def make(link_target):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
            info = tarfile.TarInfo("cuda/lib64/libcudnn.so")
            info.type, info.linkname = tarfile.SYMTYPE, link_target
            tf.addfile(info)
        path = tmp_path / f"a{len(link_target)}.tgz"
        path.write_bytes(buffer.getvalue())
        return path

    fetch.extract(make("libcudnn.so.7"), tmp_path / "ok", "cuda", io.StringIO())
    assert (tmp_path / "ok" / "lib64" / "libcudnn.so").is_symlink()
    with pytest.raises(Failure, match="points outside"):
        fetch.extract(make("../../../etc/passwd"), tmp_path / "bad", "cuda", io.StringIO())


# ---------------------------------------------------------------- signatures and vswhere

# PowerShell and vswhere exist only on Windows; elsewhere a small program of that name on PATH
# answers as they would (the edge), and records how it was called.
posix_only = pytest.mark.skipif(HOST == "win-64", reason="uses stand-ins for Windows' own PowerShell/vswhere")
NVIDIA_SUBJECT = "CN=NVIDIA Corporation, OU=2-J, O=NVIDIA Corporation, L=Santa Clara, S=California, C=US"


def _fake_tool(folder, name, stdout, code=0):
    folder.mkdir(exist_ok=True)
    calls = folder / (name + ".calls")
    script = folder / name
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"with open({str(calls)!r}, 'a') as f:\n"
        "    f.write(json.dumps([sys.argv[1:], os.environ.get('TORCHWIN_SIGNED_FILE')]) + '\\n')\n"
        f"sys.stdout.write({stdout!r})\nsys.exit({code})\n")
    script.chmod(0o755)
    return calls


def _calls(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _sign(state, signer="NVIDIA Corporation", sha256=True):
    data = yaml.safe_load(state["table"].read_text())
    local = data["cuda"]["9.0"][HOST]["installers"]["local"]
    local["signer"] = signer
    if not sha256:
        local["sha256"] = None
        local["md5"] = hashlib.md5(state["installer"]).hexdigest()
    state["table"].write_text(yaml.safe_dump(data))


@posix_only
def test_a_signed_installer_runs_only_after_windows_accepts_its_signature(tmp_path, mirror, monkeypatch, capsys):
    state = mirror()
    _sign(state)
    calls = _fake_tool(tmp_path / "bin", "powershell", f"Valid|{NVIDIA_SUBJECT}\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert _install(state, tmp_path) == 0
    [(argv, signed_file)] = _calls(calls)
    assert "Get-AuthenticodeSignature -LiteralPath $env:TORCHWIN_SIGNED_FILE" in argv[-1]
    assert signed_file == str(tmp_path / "downloads" / "installer.py")
    assert "signature valid, signed by NVIDIA Corporation" in capsys.readouterr().out


@posix_only
@pytest.mark.parametrize("answer", ["Valid|CN=NVIDIA Corporation, O=Someone Else, C=US\n",
                                    "HashMismatch|" + NVIDIA_SUBJECT + "\n", "NotSigned|\n"])
def test_a_wrong_or_broken_signature_runs_nothing(tmp_path, mirror, monkeypatch, capsys, answer):
    state = mirror()
    _sign(state)
    _fake_tool(tmp_path / "bin", "powershell", answer)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert _install(state, tmp_path) == 1
    err = capsys.readouterr().err
    assert "Authenticode signature is not a valid one by NVIDIA Corporation" in err and "Traceback" not in err
    assert not state["install_dir"].exists()


@posix_only
def test_md5_and_signer_together_pin_a_file_without_a_published_sha256(tmp_path, mirror, monkeypatch, capsys):
    state = mirror()
    _sign(state, sha256=False)
    _fake_tool(tmp_path / "bin", "powershell", f"Valid|{NVIDIA_SUBJECT}\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert main(["ci", "install-cuda", "9.0", "--table", str(state["table"]), "--dry-run",
                 "--download-dir", str(tmp_path / "downloads")]) == 0
    out = capsys.readouterr().out
    assert "sha256: none published; pinned by md5 and signer instead" in out and "NOT PINNED" not in out
    assert _install(state, tmp_path) == 0
    assert f"md5 {hashlib.md5(state['installer']).hexdigest()} verified" in capsys.readouterr().out


def test_an_md5_without_a_signer_is_not_a_pin(tmp_path, mirror, capsys):
    state = mirror()
    data = yaml.safe_load(state["table"].read_text())
    local = data["cuda"]["9.0"][HOST]["installers"]["local"]
    local["sha256"], local["md5"] = None, hashlib.md5(state["installer"]).hexdigest()
    state["table"].write_text(yaml.safe_dump(data))
    assert _install(state, tmp_path) == 1
    assert "no pinned sha256" in capsys.readouterr().err
    assert state["server"].requests == []


def _vs_plan(tmp_path, state):
    """A VS-shaped plan: the mirror's recording installer, and the instance vswhere must list after it."""
    table = yaml.safe_load(state["table"].read_text())
    local = table["cuda"]["9.0"][HOST]["installers"]["local"]
    target = tmp_path / "BuildTools"
    step = ci_downloads.Step(
        title="Visual Studio 2017 Build Tools",
        download=ci_downloads.Download("vs2017", local["url"], local["file"], local["sha256"], source=SOURCE),
        action="run", runner=[sys.executable], args=["--toolkitpath", str(target)],
        vswhere={"version": "[15.9,16.0)", "requires": ["Microsoft.VisualStudio.Component.VC.Tools.14.11"],
                 "path": str(target)})
    return ci_downloads.Plan(title="VS2017", platform=HOST, steps=[step]), target


@posix_only
def test_an_instance_vswhere_already_lists_is_not_installed_again(tmp_path, mirror, monkeypatch):
    state = mirror()
    plan, target = _vs_plan(tmp_path, state)
    # A windows-2022 runner: VS2022 is there too, but only the 2017 instance answers [15.9,16.0).
    calls = _fake_tool(tmp_path / "bin", "vswhere", f"{target}\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = io.StringIO()
    assert ci_downloads.execute(plan, tmp_path / "downloads", out=out) == 0
    assert "already installed" in out.getvalue() and state["server"].requests == []
    [(argv, _)] = _calls(calls)
    assert argv[argv.index("-version") + 1] == "[15.9,16.0)"
    assert argv[argv.index("-requires") + 1] == "Microsoft.VisualStudio.Component.VC.Tools.14.11"


@posix_only
def test_an_install_vswhere_does_not_list_afterwards_fails(tmp_path, mirror, monkeypatch):
    state = mirror()
    plan, target = _vs_plan(tmp_path, state)
    # vswhere knows only another instance (say VS2022's): the install did not give us VS2017 15.9.
    _fake_tool(tmp_path / "bin", "vswhere", "C:\\\\Program Files\\\\Microsoft Visual Studio\\\\2022\\\\Enterprise\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(Failure, match=r"vswhere -version \[15\.9,16\.0\) does not list"):
        ci_downloads.execute(plan, tmp_path / "downloads", out=io.StringIO())
    assert (target / "installer-args.json").is_file()  # it did run, and was then judged


def test_cuda_install_exports_the_cudnn_the_pytorch_run_pin_is_written_from(table):
    """recipes/pytorch pins cudnn from TORCHWIN_CUDNN_COMPILED; its driver refuses another cudnn.h."""
    for version, platforms in table["cuda"].items():
        for platform, entry in platforms.items():
            plan = ci_downloads.cuda_plan(table, version, platform=platform, install_dir="/opt/c")
            cudnn = entry["cudnn"]["version"]
            assert plan.env["TORCHWIN_CUDNN_COMPILED"] == ".".join(cudnn.split(".")[:2]), (version, platform)
            toolkit_only = ci_downloads.cuda_plan(table, version, platform=platform, install_dir="/opt/c",
                                                  with_cudnn=False)
            assert "TORCHWIN_CUDNN_COMPILED" not in toolkit_only.env


def test_linux_cuda_9_2_is_upstreams_9_2_148_with_patch_1(table):
    """Upstream's Linux 9.2 builds installed 9.2.148 and then its Patch 1 (builder install_cuda.sh, c3877de0);
    the plan runs the patch after the toolkit, into the same folder, before cuDNN."""
    entry = table["cuda"]["9.2"]["linux-64"]
    assert entry["version"] == "9.2.148"
    plan = ci_downloads.cuda_plan(table, "9.2", platform="linux-64", install_dir="/opt/cuda-9.2")
    toolkit, patch, cudnn = plan.steps
    assert toolkit.download.file == "cuda_9.2.148_396.37_linux.run"
    assert patch.download.file == "cuda_9.2.148.1_linux.run" and patch.download.sha256
    assert patch.runner == ["sh"] and patch.args == ["-s", "--accept-eula", "--installdir=/opt/cuda-9.2"]
    assert patch.title == "CUDA 9.2.148 patch 1" and cudnn.action == "extract"


def test_a_patch_without_its_pin_or_with_unknown_keys_is_refused(table, tmp_path):
    import copy

    import yaml

    for change, message in [
        (lambda e: e["patches"][0]["download"].pop("sha256"), r"patches\[1\]\.download: sha256 is missing"),
        (lambda e: e["patches"][0].__setitem__("when", "x"), r"patches\[1\]: unknown key\(s\) when"),
        (lambda e: e.__setitem__("patches", {"a": 1}), "patches: must be a list"),
    ]:
        data = copy.deepcopy(table)
        change(data["cuda"]["9.2"]["linux-64"])
        path = tmp_path / "t.yaml"
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(UserError, match=message):
            ci_downloads.load_table(path)


def test_a_dry_run_with_an_unpinned_file_fails_as_the_real_run_would(tmp_path, table, capsys):
    """Issue 26: it said "a real run refuses them" and exited 0."""
    import copy

    import yaml

    table = copy.deepcopy(table)
    entry = table["cuda"]["9.0"]["win-64"]["installers"]["local"]
    entry["sha256"] = None  # as the table writes a file nobody has published a hash for
    path = tmp_path / "table.yaml"
    path.write_text(yaml.safe_dump(table))
    code = main(["ci", "install-cuda", "9.0", "--platform", "win-64", "--dry-run", "--table", str(path),
                 "--download-dir", str(tmp_path / "d")])
    captured = capsys.readouterr()
    assert code == 1
    assert "nothing was downloaded or changed" in captured.out
    assert "1 file(s) are not pinned (%s)" % entry["url"] in captured.err
    assert not (tmp_path / "d").exists()

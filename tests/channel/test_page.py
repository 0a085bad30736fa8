"""`torchwin channel page`: matrix, install commands, no external assets; rendered in headless Chromium."""

import os
import re
import shutil
import subprocess
import threading
from datetime import datetime, timedelta, timezone

import packages
import pytest
from rattler_build import ArchiveType
from torchwin.channel import command as channel
from torchwin.channel.build_string import compute_of, python_of
from torchwin.channel.config import load_channel_config
from torchwin.channel.page import write_page
from torchwin.channel.serve import make_server, server_url
from torchwin.cli import main

CONFIG = "name: torchwin\nanaconda: {owner: torchwin}\nlabels: [main, nightly]\n"
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def make_package(out, name, version, build, subdir="win-64", depends=(), days_old=100, size=1):
    # Random bytes: the size shown on the page survives compression.
    return packages.make_package(out, name, version, build, subdir=subdir, depends=depends,
                                 archive=ArchiveType.TarBz2, timestamp=NOW - timedelta(days=days_old),
                                 payload=os.urandom(size))


@pytest.fixture
def page_channel(tmp_path):
    """A channel shaped like torchwin's: releases, a nightly, selection packages, a compiler package."""
    out = tmp_path / "out"
    config_file = tmp_path / "channel.yaml"
    config_file.write_text(CONFIG)
    config = load_channel_config(config_file)
    chan = tmp_path / "chan"
    main_pkgs = [
        make_package(out, "pytorch", "1.0.1", "py36_cuda90_cudnn7_1", size=3 << 20, days_old=40),
        make_package(out, "pytorch", "1.0.1", "py37_cuda90_cudnn7_1", days_old=40),
        make_package(out, "pytorch", "1.0.1", "py36_cuda100_cudnn7_1", days_old=40),
        make_package(out, "pytorch", "1.0.1", "py36_cpu_1", days_old=40),
        make_package(out, "pytorch", "0.4.1", "py36_cuda90_cudnn7_1", days_old=200),
        make_package(out, "cuda90", "1.0", "0"),
        make_package(out, "cpuonly", "1.0", "0", subdir="noarch"),
        make_package(out, "vs2017_win-64", "19.11.25547", "h0_0"),
    ]
    channel.add_packages(chan, main_pkgs, config=config)
    nightly = [
        make_package(out, "pytorch", "1.1.0.dev20190402", "py36_cuda90_cudnn7_0", days_old=1),
        make_package(out, "pytorch", "1.1.0.dev20190402", "py36_cpu_0", days_old=5),
    ]
    channel.add_packages(chan, nightly, label="nightly", config=config)
    return chan, config_file


def test_python_and_cuda_come_from_build_string_or_depends():
    assert python_of("py36_cuda90_cudnn7_201", []) == "3.6"
    assert python_of("py310_cpu_0", []) == "3.10"
    assert python_of("h123_0", ["python >=3.7,<3.8.0a0"]) == "3.7"
    assert python_of("h123_0", ["numpy"]) is None
    assert compute_of("py36_cuda90_cudnn7_201", []) == "9.0"
    assert compute_of("py36_cuda100_cudnn7_1", []) == "10.0"
    assert compute_of("py36_cpu_201", []) == "cpu"
    assert compute_of("h123_0", ["cudatoolkit 9.2.*"]) == "9.2"
    assert compute_of("h123_0", ["cpuonly"]) == "cpu"
    assert compute_of("h123_0", ["pytorch-mutex 1.0 cpu"]) == "cpu"
    assert compute_of("h123_0", ["cuda92"]) == "9.2"
    assert compute_of("h123_0", ["numpy"]) is None


def test_page_has_matrix_commands_sizes_and_ages(page_channel, capsys):
    chan, config_file = page_channel
    assert main(["channel", "page", "--channel-dir", str(chan), "--config", str(config_file)]) == 0
    assert "wrote" in capsys.readouterr().out
    text = (chan / "index.html").read_text(encoding="utf-8")
    # One install command per cell, with the selection package the channel carries.
    assert "conda install -c torchwin &quot;pytorch=1.0.1=py36_cuda90_cudnn7_*&quot; cuda90" in text
    assert "conda install -c torchwin &quot;pytorch=1.0.1=py36_cpu_*&quot; cpuonly" in text
    # A selection package only in main: the nightly command adds main as a second channel.
    assert (
        "conda install -c torchwin/label/nightly -c torchwin "
        "&quot;pytorch=1.1.0.dev20190402=py36_cuda90_cudnn7_*&quot; cuda90"
    ) in text
    # No cuda100 package in the channel: no selection package in the command.
    assert "conda install -c torchwin &quot;pytorch=1.0.1=py36_cuda100_cudnn7_*&quot;</code>" in text
    for heading in (
        "PyTorch 1.1.0.dev20190402",
        "PyTorch 1.0.1",
        "PyTorch 0.4.1",
        "CUDA 9.0",
        "CUDA 10.0",
        "CPU",
    ):
        assert heading in text
    assert "3.0 MB" in text  # the 3 MiB random payload
    assert "1 day old" in text and "5 days old" in text
    assert text.index("PyTorch 1.0.1") < text.index("PyTorch 0.4.1")
    assert "vs2017_win-64" in text and "Other packages" in text


def test_a_build_whose_toolkit_is_in_another_label_gets_that_label(tmp_path):
    """CUDA 9.1 builds take cudatoolkit from the cuda-runtime label; 9.0 builds from defaults, without it."""
    out, chan = tmp_path / "out", tmp_path / "chan"
    config_file = tmp_path / "channel.yaml"
    config_file.write_text("name: torchwin\nanaconda: {owner: torchwin}\nlabels: [main, nightly, cuda-runtime]\n")
    config = load_channel_config(config_file)
    channel.add_packages(chan, [
        make_package(out, "pytorch", "0.4.1", "py36_cuda91_cudnn7_111", depends=["cudatoolkit 9.1.*", "cudnn 7.*"]),
        make_package(out, "pytorch", "0.4.1", "py36_cuda90_cudnn7_201", depends=["cudatoolkit 9.0.*", "cudnn 7.*"]),
        make_package(out, "cuda91", "1.0", "0", subdir="noarch", depends=["cudatoolkit 9.1.*"]),
    ], config=config)
    channel.add_packages(chan, [
        make_package(out, "cudatoolkit", "9.1.85", "0"),
        make_package(out, "cudnn", "7.1.3", "cuda9.1_0", depends=["cudatoolkit 9.1.*"]),
    ], label="cuda-runtime", config=config)
    assert main(["channel", "page", "--channel-dir", str(chan), "--config", str(config_file)]) == 0
    text = (chan / "index.html").read_text(encoding="utf-8")
    assert ("conda install -c torchwin -c torchwin/label/cuda-runtime "
            "&quot;pytorch=0.4.1=py36_cuda91_cudnn7_*&quot; cuda91") in text
    assert "conda install -c torchwin &quot;pytorch=0.4.1=py36_cuda90_cudnn7_*&quot;</code>" in text


def test_page_uses_no_external_assets(page_channel):
    chan, config_file = page_channel
    output, _ = write_page(
        chan, load_channel_config(config_file), channel_url="https://conda.anaconda.org/torchwin"
    )
    text = output.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=|url\(|@import|<script|<link""", text, re.IGNORECASE)
    assert "conda install -c https://conda.anaconda.org/torchwin/label/nightly" in text


def test_empty_channel_page(tmp_path):
    config_file = tmp_path / "channel.yaml"
    config_file.write_text(CONFIG)
    output, entries = write_page(tmp_path / "empty", load_channel_config(config_file))
    assert entries == [] and "No packages in this channel yet" in output.read_text(encoding="utf-8")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")

# The page has no script of its own; this wrapper reads what the browser laid out: innerText skips
# anything hidden by CSS, so it is the text a person sees. It listens for the window's load event, which
# waits for the iframe's page, and it listens before the iframe exists: an iframe onload set by a later
# script is missed when the page loads while the parser pauses between the two (as on a slow machine).
# --virtual-time-budget counts only idle time, and none while a fetch is pending, so a slow machine or
# server does not end it before that event.
WRAPPER = """<!DOCTYPE html><html><head><script>
window.addEventListener("load", function () {
  var doc = document.getElementById("f").contentDocument;
  var rows = doc.querySelectorAll("table tr").length;
  var code = doc.querySelector("td code");
  var box = code.getBoundingClientRect();
  document.getElementById("seen").textContent = "ROWS=" + rows + "\\nCODEWIDTH=" + Math.round(box.width)
    + "\\nWIDTH=" + doc.documentElement.scrollWidth + "\\n" + doc.body.innerText;
});
</script></head><body>
<iframe id="f" src="index.html" style="width:1280px;height:4000px"></iframe><pre id="seen"></pre>
</body></html>
"""


def chromium(*args, profile):
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(page_channel, tmp_path):
    chan, config_file = page_channel
    write_page(chan, load_channel_config(config_file))
    # Serve it as a user would open it; the wrapper sits beside it so both share an origin.
    (chan / "seen.html").write_text(WRAPPER, encoding="utf-8")
    server = make_server(chan, 0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dom = chromium("--dump-dom", server_url(server) + "seen.html", profile=tmp_path / "profile").stdout
        shot = tmp_path / "page.png"
        chromium(
            f"--screenshot={shot}", "--window-size=1280,1600", server_url(server), profile=tmp_path / "p2"
        )
    finally:
        server.shutdown()
        server.server_close()
    seen = re.search(r'<pre id="seen">(.*?)</pre>', dom, re.DOTALL).group(1)
    assert seen, "the wrapper's load handler did not run before Chromium dumped the DOM"
    seen = seen.replace("&amp;", "&").replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    assert "torchwin: PyTorch conda packages" in seen
    assert 'conda install -c torchwin "pytorch=1.0.1=py36_cuda90_cudnn7_*" cuda90' in seen
    assert "PyTorch 1.1.0.dev20190402" in seen and "1 day old" in seen
    assert "CUDA 9.0" in seen and "CPU" in seen and "Python" in seen
    rows = int(re.search(r"ROWS=(\d+)", seen).group(1))
    assert rows >= 10  # 4 matrices + the other packages table
    # The command cell is laid out with real width and the page does not overflow the window.
    assert int(re.search(r"CODEWIDTH=(\d+)", seen).group(1)) > 100
    assert int(re.search(r"WIDTH=(\d+)", seen).group(1)) <= 1280
    assert shot.stat().st_size > 10_000
    if os.environ.get("TORCHWIN_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["TORCHWIN_KEEP_SCREENSHOT"])


def test_the_served_page_names_the_server_it_comes_from(page_channel, capsys):
    """Issue 26: `channel serve` served index.html telling users `-c torchwin` (anaconda.org); the page
    it serves now names the server's own URL, while the file on disk keeps what `channel page` wrote."""
    import threading
    import urllib.request

    from torchwin.channel.serve import make_server, server_url

    chan, config_file = page_channel
    assert main(["channel", "page", "--channel-dir", str(chan), "--config", str(config_file)]) == 0
    capsys.readouterr()
    server = make_server(chan, 0, quiet=True, config=load_channel_config(config_file))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        url = server_url(server)
        for path in ("", "index.html"):
            with urllib.request.urlopen(url + path, timeout=30) as answer:
                text = answer.read().decode("utf-8")
            assert "conda install -c %s &quot;pytorch=1.0.1=py36_cpu_*&quot; cpuonly" % url.rstrip("/") in text
            assert "conda install -c torchwin " not in text
    finally:
        server.shutdown()
        server.server_close()
    assert "conda install -c torchwin " in (chan / "index.html").read_text(encoding="utf-8")

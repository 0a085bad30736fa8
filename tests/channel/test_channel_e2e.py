"""End to end: engine-built packages, added, served over HTTP, installed with py-rattler."""

import asyncio
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import rattler
from rattler.exceptions import SolverError
from rattler_build import Stage0Recipe, VariantConfig
from torchwin.channel import command as channel
from torchwin.channel.config import load_channel_config
from torchwin.channel.serve import make_server, server_url

CONFIG = "name: torchwin\nanaconda: {owner: torchwin}\nlabels: [main, nightly]\n"

GREETING = """\
package:
  name: greeting
  version: "1.0"
build:
  number: 0
  noarch: generic
  script:
    interpreter: python
    content: |
      import os, pathlib
      p = pathlib.Path(os.environ["PREFIX"]) / "share" / "greeting.txt"
      p.parent.mkdir(parents=True, exist_ok=True)
      p.write_text("hello from the channel")
"""

HELLO = """\
package:
  name: hello
  version: "2.0"
build:
  number: 3
  script:
    interpreter: python
    content: |
      import os, pathlib
      p = pathlib.Path(os.environ["PREFIX"]) / "share" / "hello.txt"
      p.parent.mkdir(parents=True, exist_ok=True)
      p.write_text("hello 2.0")
requirements:
  run:
    - greeting 1.*
"""


def build(tmp_path, name, text):
    recipe = tmp_path / "recipes" / name / "recipe.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(text)
    [variant] = Stage0Recipe.from_file(recipe).render(VariantConfig())
    result = variant.run_build(output_dir=tmp_path / "output", channels=[])
    return [Path(p) for p in result.packages]


def install(url, specs, prefix, cache):
    records = asyncio.run(
        rattler.solve(
            [rattler.Channel(url)],
            specs,
            gateway=rattler.Gateway(cache_dir=cache / "repodata"),
            platforms=[rattler.Subdir.current(), rattler.Subdir("noarch")],
            virtual_packages=[],
        )
    )
    asyncio.run(rattler.install(records, prefix, cache_dir=cache / "pkgs", show_progress=False))
    return records


@pytest.fixture
def built(tmp_path):
    return build(tmp_path, "greeting", GREETING) + build(tmp_path, "hello", HELLO)


def test_build_add_serve_install_over_http(tmp_path, built, readline):
    chan = tmp_path / "chan"
    config_file = tmp_path / "channel.yaml"
    config_file.write_text(CONFIG)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in built) or os.name == "nt"
    channel.add_packages(chan, built, config=load_channel_config(config_file))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torchwin",
            "channel",
            "serve",
            "--port",
            "0",
            "--quiet",
            "--channel-dir",
            str(chan),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = readline(server, "`torchwin channel serve`")
        assert "serving" in line, line
        url = line.split(" at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        records = install(url, ["hello"], tmp_path / "prefix", tmp_path / "cache")
        assert sorted(r.name.normalized for r in records) == ["greeting", "hello"]
        assert all(r.url.startswith(url) for r in records)
        # The lock and staging area are not part of what is served.
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + ".torchwin/lock")
        assert err.value.code == 404
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert (tmp_path / "prefix/share/hello.txt").read_text() == "hello 2.0"
    assert (tmp_path / "prefix/share/greeting.txt").read_text() == "hello from the channel"
    assert (tmp_path / "prefix/conda-meta").is_dir()


def test_label_channel_installs_from_its_own_url(tmp_path, built):
    chan = tmp_path / "chan"
    config_file = tmp_path / "channel.yaml"
    config_file.write_text(CONFIG)
    config = load_channel_config(config_file)
    greeting = [p for p in built if p.name.startswith("greeting")]
    hello = [p for p in built if p.name.startswith("hello")]
    channel.add_packages(chan, greeting + hello, label="nightly", config=config)
    channel.add_packages(chan, greeting, config=config)
    server = make_server(chan, 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = server_url(server)
        records = install(url + "label/nightly/", ["hello"], tmp_path / "p1", tmp_path / "cache")
        assert {r.name.normalized for r in records} == {"hello", "greeting"}
        # main has no hello: the solve fails there.
        with pytest.raises(SolverError, match="hello"):
            install(url, ["hello"], tmp_path / "p2", tmp_path / "cache2")
    finally:
        server.shutdown()
        server.server_close()
    assert (tmp_path / "p1/share/hello.txt").read_text() == "hello 2.0"

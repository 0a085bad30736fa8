"""`torchwin build` end to end with the real engine, channel and installer."""

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin.cli import main

rattler = pytest.importorskip("rattler")

ROOT = Path(__file__).resolve().parents[1]


def install(channel_dir, specs, prefix, platform="linux-64"):
    records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel_dir.as_uri())], specs=specs,
                                        platforms=[platform, "noarch"], virtual_packages=[]))
    asyncio.run(rattler.install(records, prefix, cache_dir=prefix.parent / "pkgs", show_progress=False))
    return {r.name.normalized: r for r in records}


def test_build_index_and_install_a_small_recipe(tmp_path, capsys):
    channel = tmp_path / "channel"
    code = main(["build", str(ROOT / "recipes" / "nvcc"), "--target-platform", "linux-64",
                 "--channel-dir", str(channel), "--variant", "cuda_compiler_version=9.2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "1 built, 0 failed, 0 skipped" in out
    assert "conda install -c %s nvcc_linux-64" % channel.resolve().as_uri() in out
    repodata = json.loads((channel / "linux-64" / "repodata.json").read_text())
    names = [p["name"] for p in {**repodata["packages"], **repodata.get("packages.conda", {})}.values()]
    assert names == ["nvcc_linux-64"]

    # Building again replaces the package (new timestamps inside, same name) instead of failing, and says so.
    assert main(["build", str(ROOT / "recipes" / "nvcc"), "--target-platform", "linux-64",
                 "--channel-dir", str(channel), "--variant", "cuda_compiler_version=9.2"]) == 0
    out = capsys.readouterr().out
    assert "1 built, 0 failed" in out
    # (wrapped to the terminal's width)
    assert ("recipes/nvcc: replaced 1 package(s) in %s: a rebuild has the same file names and new bytes "
            "(timestamps); build replaces in its own local channel, where `channel add` needs --force"
            % channel) in " ".join(out.split())
    assert main(["channel", "verify", "--channel-dir", str(channel)]) == 0

    prefix = tmp_path / "env"
    installed = install(channel, ["nvcc_linux-64 9.2.*"], prefix)
    assert str(installed["nvcc_linux-64"].version) == "9.2"
    activate = list((prefix / "etc" / "conda" / "activate.d").glob("*.sh"))
    assert activate, "activation script did not land in the prefix"
    assert list((prefix / "conda-meta").glob("nvcc_linux-64-9.2-*.json"))


@pytest.mark.skipif(sys.platform == "win32", reason="win-64 is the host there: doctor, not the platform, decides")
def test_pytorch_is_rendered_and_reported_skipped_here(tmp_path, capsys):
    channel = tmp_path / "channel"
    code = main(["build", str(ROOT / "recipes" / "pytorch"), "--target-platform", "win-64",
                 "--channel-dir", str(channel), "--variant", "python=3.6", "--variant", "pytorch_version=1.1.0",
                 "--verbose"])
    out = capsys.readouterr().out
    assert code == 0
    assert "0 built, 0 failed, 2 skipped" in out  # pytorch-cpu goes with the release's first Python (3.5)
    assert "needs a Windows build machine" in out
    assert "pytorch for win-64 (2 variants): compiling for win-64 needs a Windows build machine" in out
    assert "e.g. on Windows with VS2017 + CUDA: torchwin build recipes/pytorch --channel defaults --variant" in out
    assert "conda build recipes/pytorch -m FILE" in out
    assert not channel.exists(), "nothing may be written for skipped packages"


@pytest.mark.parametrize("argv,message", [
    (["--variant", "cuda_compiler_version=7.5"], "unknown value; allowed: 8.0, 9.0, 9.1, 9.2"),
    (["--package-format", "zip"], "--package-format 'zip': allowed: conda[:LEVEL]"),
    (["--package-format", "conda:99"], "level must be a whole number from -7 to 22"),
    (["--target-platform", "win-32"], "unknown target platform 'win-32'"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, argv, message):
    channel = tmp_path / "channel"
    out = subprocess.run([sys.executable, "-m", "torchwin", "build", str(ROOT / "recipes" / "nvcc"),
                          "--channel-dir", str(channel), *argv], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not channel.exists()


def test_a_recipe_for_another_platform_is_named_not_dropped(tmp_path, capsys):
    channel = tmp_path / "channel"
    vs2017, select = str(ROOT / "recipes" / "vs2017"), str(ROOT / "recipes" / "pytorch-select")
    out = subprocess.run([sys.executable, "-m", "torchwin", "build", vs2017, "--target-platform", "linux-64",
                          "--channel-dir", str(channel)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.strip() == ("torchwin: error: nothing to build for linux-64: vs2017 has no variant for "
                                  "linux-64; it builds for win-64 (torchwin build recipes/vs2017 "
                                  "--target-platform win-64)")
    assert not channel.exists()

    code = main(["build", vs2017, select, "--target-platform", "linux-64", "--channel-dir", str(channel),
                 "--variant", "cuda_compiler_version=9.0", "--no-test"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("vs2017 has no variant for linux-64; it builds for win-64") == 2  # before and after
    assert "built, 0 failed" in out


def test_a_failing_build_fails_the_command_and_leaves_the_channel_alone(tmp_path, capsys):
    recipe = tmp_path / "broken"
    recipe.mkdir()
    (recipe / "recipe.yaml").write_text(
        "package:\n  name: broken\n  version: '1.0'\nbuild:\n  script:\n    interpreter: python\n"
        "    content: raise SystemExit('deliberate failure')\n")
    channel = tmp_path / "channel"
    code = main(["build", str(recipe), "--channel-dir", str(channel)])
    out = capsys.readouterr().out
    assert code == 1
    assert "0 built, 1 failed" in out
    assert not list(channel.rglob("*.conda"))


@pytest.mark.parametrize("where", ["file", "file/sub"])
def test_a_channel_dir_that_is_a_file_stops_before_building(tmp_path, where):
    (tmp_path / "file").write_text("not a channel")
    channel = tmp_path / where
    out = subprocess.run([sys.executable, "-m", "torchwin", "build", str(ROOT / "recipes" / "pytorch-select"),
                          "--channel-dir", str(channel), "--no-test"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    what = "is a file" if where == "file" else "is inside %s, which is a file" % (tmp_path / "file")
    assert out.stderr == "torchwin: error: --channel-dir %s: %s; give a folder (created when missing)\n" % (
        channel, what)
    assert "building" not in out.stdout
    assert (tmp_path / "file").read_text() == "not a channel"


TWO_OUTPUTS = """\
recipe: {name: pair, version: "1.0"}
outputs:
  - package: {name: pair-a-fine}
    build: {noarch: generic, script: {interpreter: python, content: "pass"}}
  - package: {name: pair-b-broken}
    build: {noarch: generic, script: {interpreter: python, content: "raise SystemExit('deliberate failure')"}}
"""


ALIAS = """\
recipe: {name: a-alias, version: "1.0"}
outputs:
  # Sorts before what it names (as pytorch-cpu does not): build must still order it after.
  - package: {name: a-alias}
    build: {noarch: generic}
    requirements:
      host: ["z-lib ==1.0 *"]
      run: ["z-lib ==1.0"]
"""
LIB = """\
package: {name: z-lib, version: "1.0"}
build: {noarch: generic, script: {interpreter: python, content: "%s"}}
"""


def _alias_and_lib(tmp_path, lib_script):
    for name, text in (("a-alias", ALIAS), ("z-lib", LIB % lib_script)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.yaml").write_text(text)
    return tmp_path / "a-alias", tmp_path / "z-lib"


@pytest.mark.parametrize("lib_script, results", [
    ("pass", {"a-alias": "built", "z-lib": "built"}),
    ("raise SystemExit('deliberate failure')", {"a-alias": "skipped", "z-lib": "failed"}),
])
def test_an_alias_is_built_after_what_it_names_and_skipped_without_it(tmp_path, capsys, lib_script, results):
    """As conda build (which cannot resolve its host then), torchwin build never makes an alias
    (recipes/pytorch-cpu) without the package of another recipe it names; it says so instead of
    failing on the engine's solver error."""
    alias, lib = _alias_and_lib(tmp_path, lib_script)
    channel = tmp_path / "channel"
    code = main(["build", str(alias), str(lib), "--channel-dir", str(channel), "--verbose"])
    out = capsys.readouterr().out
    assert code == (0 if results["z-lib"] == "built" else 1)
    assert out.index("] z-lib 1.0") < out.index("] a-alias 1.0"), out
    made = sorted(p.name.split("-1.0")[0] for p in channel.rglob("*.conda"))
    assert made == sorted(n for n, r in results.items() if r == "built")
    if results["a-alias"] == "skipped":
        assert "it needs z-lib ==1.0 * in host, and neither this run nor" in " ".join(out.split()), out


def test_an_alias_builds_alone_once_the_channel_has_what_it_names(tmp_path, capsys):
    """`torchwin build recipes/pytorch-cpu` after an earlier run put the pytorch into the channel; before
    that the engine cannot solve its host (this run does not know z-lib's recipe) and nothing is made."""
    alias, lib = _alias_and_lib(tmp_path, "pass")
    channel = tmp_path / "channel"
    assert main(["build", str(alias), "--channel-dir", str(channel)]) == 1
    assert "Failed to resolve dependencies" in capsys.readouterr().out
    assert not list(channel.rglob("a-alias-*"))
    assert main(["build", str(lib), "--channel-dir", str(channel)]) == 0
    assert main(["build", str(alias), "--channel-dir", str(channel)]) == 0
    assert len(list(channel.rglob("a-alias-1.0-*.conda"))) == 1


def test_a_recipe_whose_second_output_fails_adds_none_of_its_packages(tmp_path, capsys):
    recipe = tmp_path / "pair"
    recipe.mkdir()
    (recipe / "recipe.yaml").write_text(TWO_OUTPUTS)
    channel = tmp_path / "channel"
    assert main(["build", str(recipe), "--channel-dir", str(channel)]) == 1
    out = capsys.readouterr().out
    assert out.index("pair-a-fine 1.0") < out.index("pair-b-broken 1.0")  # the fine one was built first
    assert "0 built, 1 failed, 0 skipped, 1 built but not added (a package of their recipe failed)" in (
        " ".join(out.split()))
    assert re.search(r"recipes/pair: 1 built package\(s\) not added to the channel: pair-b-broken 1\.0 \S+ "
                     r"failed, and a recipe's packages go into the channel together", " ".join(out.split())), out
    assert "Try it" not in out
    assert not list(channel.rglob("*.conda"))


def test_recipes_build_after_the_recipes_whose_packages_they_need(tmp_path, capsys):
    # Named in the wrong order, and "a-user" sorts before "z-lib": z-lib must still build first.
    for name, host in (("a-user", "[z-lib]"), ("z-lib", "[]")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.yaml").write_text(
            "package: {name: %s, version: '1.0'}\n"
            "build: {noarch: generic, script: {interpreter: python, content: 'pass'}}\n"
            "requirements: {host: %s}\n" % (name, host))
    channel = tmp_path / "channel"
    code = main(["build", str(tmp_path / "a-user"), str(tmp_path / "z-lib"), "--channel-dir", str(channel)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.index("] z-lib 1.0") < out.index("] a-user 1.0")
    assert "2 built, 0 failed" in out


def test_a_variant_key_builds_only_the_variants_that_have_it(tmp_path, capsys):
    channel = tmp_path / "channel"
    assert main(["build", str(ROOT / "recipes" / "pytorch-select"), "--channel-dir", str(channel), "--no-test",
                 "--variant", "mutex_build=cpu"]) == 0
    out = capsys.readouterr().out
    assert "1 built, 0 failed, 0 skipped" in out
    assert [p.name.split("-")[:2] for p in channel.rglob("*.conda")] == [["pytorch", "mutex"]]


def test_package_format_follows_the_benchmark_decision():
    from torchwin import build

    assert build.default_package_format({}) == build.RELEASE_PACKAGE_FORMAT == "conda:19"
    assert build.default_package_format({"TORCHWIN_NIGHTLY": "20190601"}) == build.NIGHTLY_PACKAGE_FORMAT
    assert build.NIGHTLY_PACKAGE_FORMAT == "conda:10"
    build.check_package_format(build.NIGHTLY_PACKAGE_FORMAT)
    build.check_package_format(build.RELEASE_PACKAGE_FORMAT)


def labelled_recipe(folder, torchwin):
    """A script-only recipe whose `extra: torchwin: {label: L}` keeps its package in label L."""
    folder.mkdir(parents=True)
    (folder / "recipe.yaml").write_text(
        "schema_version: 1\npackage: {name: pinned, version: '1.0'}\n"
        "build: {noarch: generic, script: ['echo packaged']}\n"
        "extra:\n  torchwin: %s\n" % torchwin)
    return folder


CHANNEL_CONFIG = "name: torchwin\nanaconda: {owner: torchwin}\nlabels: [main, nightly, special]\n"


def test_a_recipe_that_names_a_label_is_built_into_that_label(tmp_path, capsys, monkeypatch):
    config = tmp_path / "channel.yaml"
    config.write_text(CHANNEL_CONFIG)
    monkeypatch.setenv("TORCHWIN_CHANNEL_CONFIG", str(config))
    channel = tmp_path / "channel"
    # No --variant: a key the pinned recipe lacks would drop it.
    code = main(["build", str(ROOT / "recipes" / "nvcc"), str(labelled_recipe(tmp_path / "pinned", "{label: special}")),
                 "--target-platform", "linux-64", "--channel-dir", str(channel)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "pinned 1.0" in out and "building into label special..." in out

    def names(root):
        found = []
        for path in sorted(root.glob("*/repodata.json")):
            data = json.loads(path.read_text())
            found += [p["name"] for p in {**data["packages"], **data.get("packages.conda", {})}.values()]
        return found

    assert set(names(channel)) == {"nvcc_linux-64"}
    assert names(channel / "label" / "special") == ["pinned"]
    uri = channel.resolve().as_uri()
    # One line per label: the label's as users type it for anaconda.org, main first.
    assert "Try it:\n  conda install -c %s nvcc_linux-64\n  conda install -c %s -c %s/label/special pinned\n" % (
        uri, uri, uri) in out


@pytest.mark.parametrize("extra,message", [
    ("{label: nope}", "pinned/recipe.yaml: extra.torchwin.label 'nope' is not a label of {config} "
                    "(it lists: main, nightly, special)"),
    ("nope", "pinned/recipe.yaml: extra.torchwin must be a mapping with the one key label, got 'nope'"),
])
def test_a_label_channel_yaml_lacks_stops_the_build_before_anything_is_built(tmp_path, monkeypatch, extra, message):
    config = tmp_path / "channel.yaml"
    config.write_text(CHANNEL_CONFIG)
    recipe = labelled_recipe(tmp_path / "pinned", extra)
    channel = tmp_path / "channel"
    out = subprocess.run([sys.executable, "-m", "torchwin", "build", str(recipe), "--channel-dir", str(channel)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TORCHWIN_CHANNEL_CONFIG": str(config)})
    assert out.returncode == 2, out.stdout
    assert out.stderr.count("\n") == 1 and message.format(config=config) in out.stderr, out.stderr
    assert not channel.exists()


def test_a_test_that_needs_a_labelled_package_gets_that_label(tmp_path, capsys):
    """A CUDA 9.1 pytorch's package test needs cudatoolkit 9.1, which only label cuda-runtime holds."""
    import packages
    from torchwin import build, recipes
    from torchwin.channel import command as channel
    from torchwin.channel.config import load_channel_config

    config_file = tmp_path / "channel.yaml"
    config_file.write_text("name: torchwin\nanaconda: {owner: torchwin}\nlabels: [main, cuda-runtime]\n")
    chan = tmp_path / "channel"
    channel.add_packages(chan, [packages.make_package(tmp_path / "out", "cudatoolkit", "9.1.85", "0")],
                         label="cuda-runtime", config=load_channel_config(config_file))
    for cuda, labelled in (("9.1", True), ("9.0", False)):
        recipe = tmp_path / ("needs-" + cuda)
        recipe.mkdir()
        (recipe / "recipe.yaml").write_text(
            "package: {name: needs-cuda, version: '%s'}\n"
            "build: {script: {interpreter: python, content: 'pass'}}\n"
            "requirements: {run: ['cudatoolkit %s.*']}\n"
            "tests: [{script: ['echo the test environment solved']}]\n" % (cuda, cuda))
        [variant] = recipes.render([recipe], ["linux-64"])
        label_uri = (chan / "label" / "cuda-runtime").resolve().as_uri()
        assert (label_uri in build.local_channels(variant, chan)) == labelled
    # For real: the engine solves the test environment from the label and the build passes.
    assert main(["build", str(tmp_path / "needs-9.1"), "--target-platform", "linux-64",
                 "--channel-dir", str(chan)]) == 0
    assert "1 built, 0 failed" in capsys.readouterr().out


def test_each_skip_hint_names_just_enough_to_build_exactly_that_variant():
    from torchwin import build, recipes

    dirs = [ROOT / "recipes" / "pytorch", ROOT / "recipes" / "cuda-runtime"]
    for platform in ("linux-64", "win-64"):
        rendered = [v for v in recipes.render(dirs, [platform]) if v.subdir == platform]
        for variant in rendered:
            hint = build.build_command_hint(variant)
            overrides = recipes.parse_overrides(re.findall(r"--variant (\S+)", hint))
            assert "cudnn" not in overrides and "linux_host_gcc" not in overrides, hint  # zip partners follow
            picked = [v for v in recipes.select(rendered, overrides, dirs, [platform])
                      if v.recipe == variant.recipe and v.name == variant.name]
            assert picked == [variant], hint

"""`conda build recipes/pytorch` with the real conda-build, offline: the noarch `pytorch-cpu` alias.

conda-build builds every variant it renders that the recipe does not skip, and keeps going after a
failure. Before issue 26 the alias was rendered once per pytorch variant (python x CUDA) and had
nothing to build from, so an offline run (every pytorch fails its source fetch) "succeeded" with
one alias per release, each pointing at a pytorch that does not exist.

Here the run is limited to the CPU builds of Python 3.5 and 3.6 (a variant file, -m), so each
release renders one or two pytorch variants, and the output folder already holds one CPU build
(1.1.0 py35, a package made here: the stand-in for the one pytorch that built). Without network
every pytorch fails; only that release's alias may be made, each release's alias is tried once.
About 90 s.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "pytorch"


def find_conda():
    named = os.environ.get("TORCHWIN_TEST_CONDA")
    return (shutil.which(named) or named) if named else shutil.which("conda")


CONDA = find_conda()
needs_conda = pytest.mark.skipif(
    not CONDA or sys.platform == "win32",
    reason="no real conda: set TORCHWIN_TEST_CONDA to a conda command with conda-build "
           "(../shared/tools/real-conda/setup.sh prints one); POSIX hosts only")

# The CPU rows of the zip_keys group of recipes/pytorch/variants.yaml, and two Pythons.
CPU_ONLY = {"python": ["3.5", "3.6"], "cuda_compiler_version": ["None"], "cudnn": ["None"],
            "cuda_build_offset": [0], "linux_host_gcc": ["conda"]}
BUILT = ("1.1.0", "py35_cpu_1")


@pytest.fixture(scope="module")
def conda_build(tmp_path_factory):
    from packages import make_package

    tmp = tmp_path_factory.mktemp("conda-build")
    variants = tmp / "cpu.yaml"
    variants.write_text(yaml.safe_dump(CPU_ONLY))
    output = tmp / "out"
    make_package(output, "pytorch", BUILT[0], BUILT[1], subdir="linux-64")
    env = dict(os.environ, CONDA_OFFLINE="true", CONDA_REPORT_ERRORS="false", CONDA_ALWAYS_YES="true",
               CONDA_NOTIFY_OUTDATED_CONDA="false", CONDA_SOLVER="classic", CONDA_SUBDIR="linux-64")
    for key in ("TORCHWIN_NIGHTLY", "TORCHWIN_SOURCE_DIR"):
        env.pop(key, None)
    run = subprocess.run([CONDA, "build", str(RECIPE), "-m", str(variants), "--output-folder", str(output),
                          "--no-anaconda-upload"], capture_output=True, text=True, env=env, timeout=1200)
    return output, run.stdout + run.stderr


def releases():
    return yaml.safe_load((RECIPE / "variants.yaml").read_text())["pytorch_version"]


@pytest.mark.parametrize("platform", ["linux-64", "win-64"])
def test_the_engine_renders_one_alias_per_release(platform):
    """What conda-build builds is the engine's render, undeduplicated: one alias per release (it was
    one per python x CUDA variant), each needing a CPU build of its release in host."""
    from rattler_build import PlatformConfig, RenderConfig
    from torchwin import recipes

    rendered = recipes.load_recipe(RECIPE).render(recipes.load_variant_config(RECIPE, platform),
                                                  RenderConfig(platform=PlatformConfig(target_platform=platform)))
    aliases = [item.recipe for item in rendered if item.recipe.package.name == "pytorch-cpu"]
    versions = [str(a.package.version) for a in aliases]
    assert sorted(versions) == sorted(set(versions)), versions
    with_builds = {str(item.recipe.package.version) for item in rendered if item.recipe.package.name == "pytorch"
                   and "_cpu_" in str(item.recipe.build.string)}
    assert set(versions) == with_builds
    for alias in aliases:
        host = [str(s) for s in alias.requirements.to_dict().get("host", [])]
        assert host == ["pytorch ==%s *_cpu_*" % alias.package.version], host


@pytest.mark.real_conda
@needs_conda
def test_no_alias_is_left_without_its_pytorch(conda_build):
    output, log = conda_build
    aliases = sorted(p.name for p in (output / "noarch").glob("pytorch-cpu-*"))
    assert "Could not resolve host" in log or "Git fetch failed" in log, log[-3000:]  # offline indeed
    torches = {tuple(p.name[len("pytorch-"):].split(".conda")[0].rsplit("-", 1))
               for p in (output / "linux-64").glob("pytorch-*.conda")}
    assert torches == {BUILT}, "a pytorch was built offline?"
    for alias in aliases:
        version = alias[len("pytorch-cpu-"):].rsplit("-", 1)[0]
        assert any(v == version and "_cpu_" in b for v, b in torches), "%s has no pytorch: %s" % (alias, aliases)
    assert aliases == ["pytorch-cpu-%s-cpu_1.conda" % BUILT[0]], log[-3000:]


@pytest.mark.real_conda
@needs_conda
def test_each_release_s_alias_is_tried_once(conda_build):
    _, log = conda_build
    tried = re.findall(r"^[ \t]+- \S+ pytorch-cpu: ", log, re.M)
    assert len(tried) == len(releases()), log[-3000:]


def test_render_shows_each_alias_beside_a_python_its_release_builds():
    """Issue 26: `torchwin render` showed python=3.5 on the alias rows of releases with no 3.5 build."""
    from torchwin import recipes

    for platform in recipes.PLATFORMS:
        rendered = recipes.render([RECIPE], [platform])
        pythons = {}
        for v in rendered:
            if v.name == "pytorch" and v.variant["cuda_compiler_version"] == "None":
                pythons.setdefault(v.version, set()).add(v.variant["python"])
        aliases = [v for v in rendered if v.name == "pytorch-cpu"]
        assert aliases
        for alias in aliases:
            assert alias.variant["python"] in pythons[alias.version], (platform, alias.version)


def test_torchwin_build_makes_the_alias_only_beside_its_pytorch_and_small(tmp_path):
    """The engine, as `torchwin build` calls it: with no CPU build of its release in the staging
    folder the alias fails to resolve (never made); beside one it is made, without info/recipe
    (the engine copies the whole recipe folder, all upstream/*.json, into every output's)."""
    import io
    import tarfile
    import zipfile

    from backports import zstd
    from packages import make_package
    from torchwin import build, recipes

    rendered = recipes.render([RECIPE], ["linux-64"])
    alias = next(v for v in rendered if v.name == "pytorch-cpu" and v.version == BUILT[0])
    assert build.is_alias(alias, rendered)
    assert not build.is_alias(next(v for v in rendered if v.name == "pytorch"), rendered)
    staging = tmp_path / "staging"
    staging.mkdir()
    alone = build.build_one(alias, tmp_path / "channel", [], False, "conda:1", staging, include_recipe=False)
    assert alone.result == "failed" and not list(staging.rglob("pytorch-cpu-*"))
    make_package(staging, "pytorch", BUILT[0], BUILT[1], subdir="linux-64")
    made = build.build_one(alias, tmp_path / "channel", [], False, "conda:1", staging, include_recipe=False)
    assert made.result == "built", made.reason
    (path,) = made.files
    with zipfile.ZipFile(path) as archive:
        info = next(n for n in archive.namelist() if n.startswith("info-"))
        members = tarfile.open(fileobj=io.BytesIO(zstd.decompress(archive.read(info)))).getnames()
    assert not [m for m in members if m.startswith("info/recipe")], members
    assert path.stat().st_size < 16 * 1024, path.stat().st_size

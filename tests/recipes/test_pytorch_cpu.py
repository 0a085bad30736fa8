"""recipes/pytorch-cpu, the noarch `pytorch-cpu` alias: one per release, never without its pytorch, small.

Issue 26: as an output of recipes/pytorch, the real conda-build 26.7.1 built the alias once per python x
CUDA variant and, offline (every pytorch fails its source fetch), left one alias per release in the
output folder pointing at a pytorch that does not exist, each carrying the whole recipe folder
(~460 KiB of upstream/*.json) in info/recipe. Now it is a recipe of its own.

The real conda-build runs (opt-in marker real_conda, about 3 min): `conda build recipes/pytorch` with
the CPU builds of Python 3.5 and 3.6 (a variant file, -m) makes no alias at all; then
`conda build recipes/pytorch-cpu` with one CPU build already in the output folder (1.1.0 py35, a
package made here: the stand-in for the one pytorch that built) makes only that release's alias.
"""

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "pytorch-cpu"
PYTORCH = ROOT / "recipes" / "pytorch"
SHARED_KEYS = ("pytorch_version", "pytorch_commit", "pytorch_nightly_base")


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


def info_members(path: Path) -> dict:
    """{member: size} of a .conda file's info tarball."""
    from backports import zstd

    with zipfile.ZipFile(path) as archive:
        info = next(n for n in archive.namelist() if n.startswith("info-"))
        with tarfile.open(fileobj=io.BytesIO(zstd.decompress(archive.read(info)))) as tar:
            return {m.name: m.size for m in tar.getmembers()}


def conda_env():
    env = dict(os.environ, CONDA_OFFLINE="true", CONDA_REPORT_ERRORS="false", CONDA_ALWAYS_YES="true",
               CONDA_NOTIFY_OUTDATED_CONDA="false", CONDA_SOLVER="classic", CONDA_SUBDIR="linux-64")
    for key in ("TORCHWIN_NIGHTLY", "TORCHWIN_SOURCE_DIR"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def conda_build(tmp_path_factory):
    """(output folder, log of `conda build recipes/pytorch`, log of `conda build recipes/pytorch-cpu`)."""
    from packages import make_package

    tmp = tmp_path_factory.mktemp("conda-build")
    variants = tmp / "cpu.yaml"
    variants.write_text(yaml.safe_dump(CPU_ONLY))
    output = tmp / "out"
    make_package(output, "pytorch", BUILT[0], BUILT[1], subdir="linux-64")
    logs = []
    for recipe, extra in ((PYTORCH, ["-m", str(variants)]), (RECIPE, [])):
        run = subprocess.run([CONDA, "build", str(recipe), *extra, "--output-folder", str(output),
                              "--no-anaconda-upload"], capture_output=True, text=True, env=conda_env(),
                             timeout=1200)
        logs.append(run.stdout + run.stderr)
    return output, logs[0], logs[1]


def releases():
    return yaml.safe_load((PYTORCH / "variants.yaml").read_text())["pytorch_version"]


def test_variants_repeat_pytorchs_releases():
    """The keys repeated from recipes/pytorch/variants.yaml hold the same values, zipped the same way."""
    ours = yaml.safe_load((RECIPE / "variants.yaml").read_text())
    theirs = yaml.safe_load((PYTORCH / "variants.yaml").read_text())
    for key in SHARED_KEYS:
        assert ours[key] == theirs[key], key
    assert ours["zip_keys"] == [list(SHARED_KEYS)]
    assert any(set(SHARED_KEYS) <= set(group) for group in theirs["zip_keys"])


@pytest.mark.parametrize("platform", ["linux-64", "win-64"])
def test_one_alias_per_release_each_needing_a_cpu_build_of_it(platform):
    """What conda-build builds is the engine's render, undeduplicated: one alias per release with a
    CPU build on some platform (it was one per python x CUDA variant), needing that build in host.
    noarch: no python, and the same on every platform (1.7.x, Linux only, installs on Linux only)."""
    from torchwin import recipes

    aliases = recipes.render_recipe(RECIPE, platform)
    versions = [a.version for a in aliases]
    assert sorted(versions) == sorted(set(versions)), versions
    with_builds = {v.version for p in recipes.PLATFORMS for v in recipes.render_recipe(PYTORCH, p)
                   if v.variant.get("cuda_compiler_version") == "None"}
    assert set(versions) == with_builds == set(releases())
    for alias in aliases:
        assert alias.noarch == "generic" and "python" not in alias.variant
        assert alias.host_requirements == ["pytorch ==%s *_cpu_*" % alias.version]
        assert alias.depends == ["pytorch ==%s *_cpu_*" % alias.version, "cpuonly"]
    assert not [v for v in recipes.render_recipe(PYTORCH, platform) if v.name == "pytorch-cpu"]


def test_a_nightly_renders_the_alias_of_its_release_line_only(monkeypatch):
    from torchwin import recipes

    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20200101")
    monkeypatch.delenv("TORCHWIN_NIGHTLY_BASE", raising=False)
    monkeypatch.delenv("TORCHWIN_SOURCE_DIR", raising=False)
    torch_versions = {v.version for v in recipes.render_recipe(PYTORCH, "linux-64")}
    aliases = recipes.render_recipe(RECIPE, "linux-64")
    assert [a.version for a in aliases] == sorted(torch_versions) and len(aliases) == 1


@pytest.mark.real_conda
@needs_conda
def test_conda_build_of_pytorch_makes_no_alias(conda_build):
    output, log, _ = conda_build
    assert "Could not resolve host" in log or "Git fetch failed" in log, log[-3000:]  # offline indeed
    assert "pytorch-cpu" not in log
    torches = {p.name for p in (output / "linux-64").glob("pytorch-*.conda")}
    assert torches == {"pytorch-%s-%s.conda" % BUILT}, "a pytorch was built offline?"


@pytest.mark.real_conda
@needs_conda
def test_conda_build_makes_only_the_alias_whose_pytorch_exists_and_it_is_small(conda_build):
    output, _, log = conda_build
    aliases = sorted(p.name for p in (output / "noarch").glob("pytorch-cpu-*"))
    assert aliases == ["pytorch-cpu-%s-cpu_1.conda" % BUILT[0]], log[-3000:]
    members = info_members(output / "noarch" / aliases[0])
    recipe_bytes = sum(size for name, size in members.items() if name.startswith("info/recipe/"))
    assert not [m for m in members if m.startswith("info/recipe/upstream")], members
    assert 0 < recipe_bytes < 16 * 1024, members


@pytest.mark.real_conda
@needs_conda
def test_conda_build_tries_each_release_s_alias_once(conda_build):
    _, _, log = conda_build
    tried = re.findall(r"^[ \t]+- \S+ pytorch-cpu: ", log, re.M)
    assert len(tried) == len(releases()), log[-3000:]


def test_torchwin_build_makes_the_alias_only_beside_its_pytorch_and_small(tmp_path, capsys):
    """`torchwin build recipes/pytorch recipes/pytorch-cpu` on a host that cannot compile pytorch:
    every alias is skipped, with the reason; once the local channel holds a CPU build of 1.1.0, the
    alias of 1.1.0 (and only it) is made, with the small info/recipe of its own folder."""
    from packages import make_package
    from torchwin.channel.command import add_packages
    from torchwin.cli import main

    channel = tmp_path / "channel"
    args = ["build", str(PYTORCH), str(RECIPE), "--target-platform", "linux-64", "--channel-dir", str(channel),
            "--variant", "pytorch_version=1.1.0", "--no-test"]
    assert main(args) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "pytorch-cpu 1.1.0 cpu_1 (noarch) skipped" in out or re.search(r"its pytorch is not built", out), out
    assert not list(channel.rglob("pytorch-cpu-*"))
    made = make_package(tmp_path / "made", "pytorch", BUILT[0], BUILT[1], subdir="linux-64")
    add_packages(channel, [made])
    assert main(args) == 0
    (alias,) = channel.rglob("pytorch-cpu-*.conda")
    assert alias.name == "pytorch-cpu-%s-cpu_1.conda" % BUILT[0]
    members = info_members(alias)
    assert "info/recipe/recipe.yaml" in members and not [m for m in members if "upstream" in m], members
    assert alias.stat().st_size < 16 * 1024, alias.stat().st_size


@pytest.mark.real_conda
@needs_conda
def test_the_ci_jobs_variant_file_builds_exactly_one_alias(tmp_path):
    """What the nightly's first CPU job runs after its pytorch build (`companion_variant`, written by
    `torchwin ci variant-file`): conda build renders one alias, of that release, and makes it."""
    import json

    from packages import make_package
    from torchwin import recipes
    from torchwin.cli import main

    (alias,) = [v for v in recipes.render_recipe(RECIPE, "linux-64") if v.version == BUILT[0]]
    pins = {k: v for k, v in alias.variant.items() if k != "target_platform"}  # as the CI matrix pins it
    variant_file = tmp_path / "companion.yaml"
    assert main(["ci", "variant-file", "--variant-json", json.dumps(pins),
                 "--target-platform", "linux-64", "--recipe", str(RECIPE), "--output", str(variant_file)]) == 0
    output = tmp_path / "out"
    make_package(output, "pytorch", BUILT[0], BUILT[1], subdir="linux-64")
    run = subprocess.run([CONDA, "build", str(RECIPE), "-m", str(variant_file), "--output-folder", str(output),
                          "--no-anaconda-upload"], capture_output=True, text=True, env=conda_env(), timeout=600)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert len(re.findall(r"^[ \t]+- \S+ pytorch-cpu: ", log, re.M)) == 1, log[-3000:]
    assert [p.name for p in (output / "noarch").glob("pytorch-cpu-*")] == ["pytorch-cpu-%s-cpu_1.conda" % BUILT[0]]

"""recipes/torchvision: its rendered matrix against recipes/pytorch's, its pins, its nightly rendering, its build
driver's decisions, the install-time selection solved with the real solver (py-rattler) over repodata made
from render, how `torchwin build` treats it on a host that cannot build pytorch, and its package test script.

The solver setup is tests/test_pytorch_solve.py's (the channels users name, defaults modelled as it was),
with torchvision's own run dependencies (pillow, six, tqdm) added to defaults.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_pytorch_solve import (
    LABEL_LINE,
    MAIN_LINE,
    PRIORITIES,
    SolverError,
    external_records,
    solve,
    write_channels,
)
from torchwin import recipes
from torchwin.channel import repodata
from torchwin.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "torchvision"
RUN_TEST = RECIPE / "run_test.py"
DRIVER = RECIPE / "build_torchvision.py"
PLATFORMS = ("win-64", "linux-64")
PYTHONS = ("3.5", "3.6", "3.7", "3.8")
# The pairs upstream published (README.md has the evidence): pytorch release -> torchvision release.
PAIRS = {"0.4.0": "0.2.1", "0.4.1": "0.2.1", "1.0.0": "0.2.2", "1.0.1": "0.2.2", "1.1.0": "0.3.0",
         "1.2.0": "0.4.0", "1.3.0": "0.4.1", "1.3.1": "0.4.2", "1.4.0": "0.5.0", "1.5.0": "0.6.0",
         "1.5.1": "0.6.1", "1.6.0": "0.7.0", "1.7.0": "0.8.1", "1.7.1": "0.8.2"}
# pytorch releases without a torchvision row: 0.3's torchvision, 0.2.0, is pure Python (PyPI's
# py2.py3-none-any wheel installs over these builds), and the 0.2.x rows pin the GitHub tag archive's
# sha256, which was not recorded for 0.2.0 (README.md "The matrix").
UNPAIRED = {"0.3.0": "0.2.0", "0.3.1": "0.2.0"}
# The commit each release's upstream wheel records (torchvision/version.py `git_version`; README.md).
WHEEL_COMMITS = {
    "0.3.0": "be376084d84dedd99284625d5b12a3643cfbe3d8", "0.4.0": "6b959eef1fba106a070cd3f300bca98124da843d",
    "0.4.1": "d94043ad5592ba4eba5cdb61062deee5bb19bcb3", "0.4.2": "b2946be43ddc7b51ce186ae09d87188bbab05dcf",
    "0.5.0": "6d6fbdfe9e8d1521ea82efde970bbbd714366afb", "0.6.0": "82fd1c85d7e42d93255ed01f763ca40d58f288e3",
    "0.6.1": "35d732ac53aebbed917993523d685b4cb09ef6ea", "0.7.0": "78ed10cc51067f1a6bac9352831ef37a3f842784",
    "0.8.1": "45f960c5b18679ea42d7e5b4212f17483cdfd8af", "0.8.2": "2f40a483d73018ae6e1488a484c5927f2b309969"}
# Releases that import PIL.PILLOW_VERSION (gone in Pillow 7), that require six, that build the image extension.
OLD_PILLOW = {"0.2.1", "0.2.2", "0.3.0", "0.4.0", "0.4.1", "0.4.2"}
SIX = OLD_PILLOW | {"0.5.0"}
IMAGE = {"0.8.1", "0.8.2"}


def release(version):
    return tuple(int(p) for p in version.split("."))


def flavour(variant):
    cuda = variant.variant["cuda_compiler_version"]
    return "cpu" if cuda == "None" else "cuda" + cuda.replace(".", "")


@pytest.fixture(scope="module")
def rendered():
    dirs = [ROOT / "recipes" / d for d in ("pytorch", "pytorch-select", "cuda-runtime", "vs2017", "torchvision")]
    return recipes.render(dirs, list(PLATFORMS))


def builds(rendered, name):
    return [v for v in rendered if v.name == name]


def test_one_build_per_pytorch_build_it_pairs_with(rendered):
    """Per platform, Python and CPU/CUDA flavour: a torchvision exactly where its pytorch release has a build."""
    want = {(v.subdir, v.variant["python"], flavour(v), PAIRS[v.version]) for v in builds(rendered, "pytorch")
            if v.version in PAIRS}
    got = {(v.subdir, v.variant["python"], flavour(v), v.version) for v in builds(rendered, "torchvision")}
    assert got == want
    assert len(got) == len(builds(rendered, "torchvision"))  # no duplicate records
    # The shape of that matrix, spelled out for one Python.
    py36 = {(s, f, v) for s, p, f, v in got if p == "3.6"}
    assert {(s, f) for s, f, v in py36 if v == "0.3.0"} == {(s, f) for s in PLATFORMS for f in ("cpu", "cuda90")}
    assert {(s, f) for s, f, v in py36 if v == "0.2.1"} == {
        ("linux-64", f) for f in ("cpu", "cuda80", "cuda90", "cuda91", "cuda92")} | {
        ("win-64", f) for f in ("cpu", "cuda90", "cuda91", "cuda92")}
    assert {(s, f) for s, f, v in py36 if v == "0.2.2"} == {
        ("linux-64", "cpu"), ("linux-64", "cuda80"), ("linux-64", "cuda90"), ("win-64", "cpu"), ("win-64", "cuda90")}
    assert {(s, f) for s, f, v in py36 if v == "0.7.0"} == {(s, f) for s in PLATFORMS for f in ("cpu", "cuda90", "cuda92")}
    for version in ("0.8.1", "0.8.2"):  # pytorch 1.7.x: Linux only
        assert {(s, f) for s, f, v in py36 if v == version} == {("linux-64", f) for f in ("cpu", "cuda90", "cuda92")}
    # 1.6.0 on need Python >= 3.6; 0.4.0 (with 0.2.1) has no 3.7, but 0.4.1 does.
    assert {v for s, p, f, v in got if p == "3.5"} == set(PAIRS.values()) - {"0.7.0", "0.8.1", "0.8.2"}
    assert ("win-64", "3.7", "cuda91", "0.2.1") in got


def test_records_pin_their_pytorch_release_and_flavour(rendered):
    pins = {"0.2.1": ">=0.4.0,<=0.4.1", "0.2.2": "1.0.*"}
    pins.update({tv: "==" + torch for torch, tv in PAIRS.items() if tv not in pins})
    for v in builds(rendered, "torchvision"):
        pin = "pytorch %s *_%s_*" % (pins[v.version], flavour(v))
        assert pin in v.depends, (v.key, v.depends)
        assert "python %s.*" % v.variant["python"] in v.depends
        assert re.match(r"^py3[5-8]_(cpu|cuda\d\d)_\d+$", v.build_string), v.build_string
        assert v.build_string == "py%s_%s_%d" % (v.variant["python"].replace(".", ""), flavour(v), v.build_number)
        assert bool(v.track_features) == (flavour(v) == "cpu"), v.key
        assert ("tqdm" in v.depends) == (v.version == "0.2.2")
        # 0.2.1-0.4.2 import PIL.PILLOW_VERSION, gone in Pillow 7; later ones take any Pillow.
        pillow = [d for d in v.depends if d.startswith("pillow")]
        assert pillow == (["pillow >=4.1.1,<7"] if v.version in OLD_PILLOW else ["pillow >=4.1.1"]), v.key
        assert ("six" in v.depends) == (v.version in SIX), v.key
        image = v.version in IMAGE
        assert ("libpng" in v.depends and "jpeg" in v.depends) == image, v.key
        assert ("libpng 1.6.*" in v.host_requirements and "jpeg 9.*" in v.host_requirements) == image, v.key
        compiled = v.version not in ("0.2.1", "0.2.2")
        assert (pin in v.host_requirements) == compiled, v.key
        assert any(r.startswith("nvcc_") for r in v.build_requirements) == (compiled and flavour(v) != "cpu")


def test_ranking_follows_pytorch(rendered):
    """The same build-number offsets as pytorch's: 9.0 first, then 9.2, 9.1, 8.0, CPU last."""
    offsets = {flavour(v): v.build_number for v in builds(rendered, "pytorch") if v.version == "0.4.1"}
    mine = {flavour(v): v.build_number for v in builds(rendered, "torchvision") if v.version == "0.2.1"}
    assert {f: n - 1 for f, n in mine.items()} == {f: n - 1 for f, n in offsets.items()}


def test_variants_agree_with_pytorchs():
    """The keys repeated from recipes/pytorch/variants.yaml hold the same values; each torchvision row's
    CUDA and Python lists are the union of its pytorch releases' rows."""
    for platform in PLATFORMS:
        ours = recipes.load_variant_config(RECIPE, platform)
        theirs = recipes.load_variant_config(ROOT / "recipes" / "pytorch", platform)
        for key in ("c_compiler", "cxx_compiler", "c_compiler_version", "cxx_compiler_version", "cuda_compiler",
                    "python", "cuda_compiler_version", "cuda_build_offset", "linux_host_gcc"):
            assert ours.get_values(key) == theirs.get_values(key), (platform, key)
        torch_rows = {v: i for i, v in enumerate(theirs.get_values("pytorch_version"))}
        releases = [r.split() for r in ours.get_values("torchvision_pytorch_releases")]
        covered = sorted(r for row in releases for r in row)
        # Every release of pytorch's matrix is paired, once, but 0.3.x (README: why).
        assert covered == sorted(PAIRS) == sorted(set(torch_rows) - set(UNPAIRED))
        assert {r: v for row, v in zip(releases, ours.get_values("torchvision_version")) for r in row} == PAIRS
        for key in ("cuda_win", "cuda_linux", "python_win", "python_linux"):
            for row, value in zip(releases, ours.get_values("torchvision_" + key)):
                union = {x for r in row for x in theirs.get_values("pytorch_" + key)[torch_rows[r]].split()}
                assert set(value.split()) == union, (key, row)


def test_sources_are_pinned():
    """0.3.0 on by tag and the commit upstream's own wheel recorded (README's table says which);
    0.2.x by the tag archive's sha256."""
    config = recipes.load_variant_config(RECIPE, "linux-64")
    rows = dict(zip(config.get_values("torchvision_version"),
                    zip(config.get_values("torchvision_commit"), config.get_values("torchvision_sha256"))))
    assert {v: c for v, (c, s) in rows.items() if c} == WHEEL_COMMITS
    assert all(s == "" for v, (c, s) in rows.items() if c)
    readme = (RECIPE / "README.md").read_text()
    for version, commit in WHEEL_COMMITS.items():
        assert re.search(r"^\| %s \|.*`%s`" % (re.escape(version), commit), readme, re.M), version
    for version in ("0.2.1", "0.2.2"):
        commit, sha256 = rows[version]
        assert commit == "" and re.fullmatch(r"[0-9a-f]{64}", sha256), version
    assert (RECIPE / "patches" / "0.3.0-force-cuda.patch").is_file()


def test_only_windows_0_5_0_clones_another_commit_than_its_tag(rendered):
    """0.5.0's tag does not link on Windows (vision#1756): Windows clones the commit upstream's Windows
    wheel was built from; every other compiled build clones its tag and checks the commit."""
    by_rev = {}
    for v in builds(rendered, "torchvision"):
        for source in v.rendered.recipe.to_dict().get("source") or ():
            if "git" in source:
                by_rev.setdefault((v.version, v.subdir), set()).add(
                    (source["rev"], source.get("expected_commit")))
    for (version, subdir), revs in sorted(by_rev.items()):
        if (version, subdir) == ("0.5.0", "win-64"):
            assert revs == {("85b8fbfd31e9324e64e24ca25410284ef238bcb3", None)}
        else:
            assert revs == {("refs/tags/v" + version, WHEEL_COMMITS[version])}, (version, subdir, revs)
    assert ("0.5.0", "win-64") in by_rev and ("0.5.0", "linux-64") in by_rev
    assert "`85b8fbfd31e9324e64e24ca25410284ef238bcb3`" in (RECIPE / "README.md").read_text()


# ---- the nightly -----------------------------------------------------------------------------------

def render_nightly(monkeypatch, date, base):
    monkeypatch.setenv("TORCHWIN_NIGHTLY", date)
    if base is None:
        monkeypatch.delenv("TORCHWIN_NIGHTLY_BASE", raising=False)
    else:
        monkeypatch.setenv("TORCHWIN_NIGHTLY_BASE", base)
    return recipes.render([RECIPE], list(PLATFORMS))


def test_nightly_renders_the_row_of_its_pytorch_line(monkeypatch, rendered):
    """TORCHWIN_NIGHTLY + TORCHWIN_NIGHTLY_BASE=1.6.0: only 0.7.0, on the same variants as its release
    build, pinned to that night's pytorch, with the night in its build string."""
    got = render_nightly(monkeypatch, "20261201", "1.6.0")
    release_builds = {(v.subdir, v.variant["python"], flavour(v)): v for v in builds(rendered, "torchvision")
                      if v.version == "0.7.0"}
    assert {(v.subdir, v.variant["python"], flavour(v)) for v in got} == set(release_builds)
    for v in got:
        assert v.version == "0.7.0"
        assert "pytorch ==1.6.0.dev20261201 *_%s_*" % flavour(v) in v.depends
        assert "pytorch ==1.6.0.dev20261201 *_%s_*" % flavour(v) in v.host_requirements
        release_build = release_builds[(v.subdir, v.variant["python"], flavour(v))]
        assert v.build_number == release_build.build_number
        assert v.build_string == "py%s_%s_dev20261201_%d" % (v.variant["python"].replace(".", ""), flavour(v),
                                                             v.build_number)
    assert "py36_cuda90_dev20261201_201" in {v.build_string for v in got if v.subdir == "win-64"}


@pytest.mark.parametrize("base,want", [("1.7.1", {("linux-64", "0.8.2")}), ("0.4.0", {(s, "0.2.1") for s in PLATFORMS}),
                                       ("1.8.0", set()), (None, set())])
def test_nightly_without_a_row_renders_nothing(monkeypatch, base, want):
    """A base no row pairs with, or none at all, renders nothing; 1.7.x nightlies are Linux-only."""
    got = render_nightly(monkeypatch, "20261202", base)
    assert {(v.subdir, v.version) for v in got} == want
    assert all("_dev20261202_" in v.build_string for v in got)


# ---- the build driver ------------------------------------------------------------------------------

def load_module(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def driver_plan(tmp_path, version, cuda, platform="linux-64", prefix_files=True):
    """`build_torchvision.py --plan --json` as the recipe calls it, for the row of `version`."""
    prefix = tmp_path / "prefix"
    if prefix_files:
        base = prefix / "Library" if platform == "win-64" else prefix
        (base / "bin").mkdir(parents=True, exist_ok=True)
        (base / "include").mkdir(parents=True, exist_ok=True)
        (base / "bin" / ("pngfix.exe" if platform == "win-64" else "libpng-config")).write_text("")
        (base / "include" / "jpeglib.h").write_text("")
    releases = " ".join(sorted(t for t, v in PAIRS.items() if v == version))
    env = dict(os.environ, TORCHWIN_TORCHVISION_VERSION=version, TORCHWIN_PYTORCH_RELEASES=releases,
               TORCHWIN_CUDA_VERSION=cuda, PREFIX=str(prefix), RECIPE_DIR=str(RECIPE), PYTHON="python")
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    out = subprocess.run([sys.executable, str(DRIVER), "--plan", "--json", "--platform", platform],
                         capture_output=True, text=True, env=env)
    return out.returncode, (json.loads(out.stdout) if out.returncode == 0 else out.stderr)


@pytest.mark.parametrize("version", sorted(set(PAIRS.values()) - {"0.2.1", "0.2.2"}))
def test_driver_compiles_for_the_gpus_of_its_pytorch(tmp_path, version):
    """A CUDA build targets exactly the architectures of the paired pytorch build, as recipes/pytorch's
    driver derives them from that release's facts: through TORCH_CUDA_ARCH_LIST where torch's
    cpp_extension reads it (1.3.0 on), else as nvcc -gencode flags (1.1.0 and 1.2.0 add none)."""
    torch_release = next(t for t, v in PAIRS.items() if v == version)
    pytorch = load_module(ROOT / "recipes" / "pytorch" / "build_driver.py", "torchwin_test_pytorch_driver")
    want = pytorch.cuda_arch_list(pytorch.load_facts(str(ROOT / "recipes" / "pytorch"), torch_release), "9.0")
    code, plan = driver_plan(tmp_path, version, "9.0")
    assert code == 0, plan
    env = plan["env"]
    assert env["FORCE_CUDA"] == "1" and env["BUILD_VERSION"] == version
    if release(torch_release) >= (1, 3):
        assert env["TORCH_CUDA_ARCH_LIST"] == want and env["NVCC_FLAGS"] == ""
    else:
        assert "TORCH_CUDA_ARCH_LIST" not in env and plan["unset"] == ["TORCH_CUDA_ARCH_LIST"]
        gencodes = {f for f in env["NVCC_FLAGS"].split() if f.startswith("-gencode")}
        archs = [a.replace("+PTX", "").replace(".", "") for a in want.split(";")]
        assert gencodes == {"-gencode=arch=compute_%s,code=sm_%s" % (a, a) for a in archs} | {
            "-gencode=arch=compute_%s,code=compute_%s" % (archs[-1], archs[-1])}
    # The video reader is never built: setup.py's lookup of ffmpeg finds nothing.
    assert plan["finders"]["ffmpeg"] is None


def test_driver_cpu_builds_force_nothing(tmp_path):
    code, plan = driver_plan(tmp_path, "0.6.1", "None")
    assert code == 0, plan
    assert plan["env"]["FORCE_CUDA"] == "0" and plan["env"]["NVCC_FLAGS"] == ""
    assert "TORCH_CUDA_ARCH_LIST" not in plan["env"]


@pytest.mark.parametrize("platform,finder", [("linux-64", "libpng-config"), ("win-64", "pngfix")])
def test_driver_builds_the_image_extension_against_the_host_prefix(tmp_path, platform, finder):
    """0.8.x: libpng and libjpeg are the host prefix's, whatever the machine has on PATH or in /usr/include."""
    code, plan = driver_plan(tmp_path, "0.8.2", "None", platform)
    assert code == 0, plan
    base = tmp_path / "prefix" / ("Library" if platform == "win-64" else "")
    assert plan["env"]["TORCHVISION_INCLUDE"] == str(base / "include")
    assert plan["env"]["TORCHVISION_LIBRARY"] == str(base / "lib")
    assert plan["finders"][finder] == str(base / "bin" / ("pngfix.exe" if platform == "win-64" else finder))
    other = "pngfix" if finder == "libpng-config" else "libpng-config"
    assert plan["finders"][other] is None
    # Before 0.8 there is no image extension: neither finder answers, nothing points at the prefix.
    code, plan = driver_plan(tmp_path, "0.7.0", "None", platform)
    assert plan["finders"][finder] is None and "TORCHVISION_INCLUDE" not in plan["env"]


def test_driver_refuses_an_image_build_without_its_libraries(tmp_path):
    code, err = driver_plan(tmp_path, "0.8.1", "9.2", prefix_files=False)
    assert code == 1
    assert err.count("\n") == 1 and "libpng-config is missing" in err and "libpng" in err


def test_driver_wrong_call_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHWIN_")}
    out = subprocess.run([sys.executable, str(DRIVER), "--plan"], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "TORCHWIN_TORCHVISION_VERSION" in out.stderr


def test_driver_runs_setup_with_its_finders(tmp_path, monkeypatch):
    """setup.py runs with ffmpeg not found although it is on PATH, and libpng-config answered by the
    driver; other lookups still search PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("ffmpeg", "libpng-config", "git"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "setup.py").write_text(
        "import distutils.spawn, shutil, sys, json\n"
        "json.dump({n: [distutils.spawn.find_executable(n), shutil.which(n)] for n in ('ffmpeg', 'libpng-config', 'git')}"
        ", open('found.json', 'w'))\n"
        "sys.exit(3 if sys.argv[1:] == ['fail'] else 0)\n")
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ["PATH"])
    driver = load_module(DRIVER, "torchwin_test_torchvision_driver")
    import distutils.spawn
    import shutil

    monkeypatch.setattr(distutils.spawn, "find_executable", distutils.spawn.find_executable)
    monkeypatch.setattr(shutil, "which", shutil.which)
    monkeypatch.setattr(sys, "argv", sys.argv)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path)
    finders = {"ffmpeg": None, "libpng-config": "/host/bin/libpng-config"}
    assert driver.run_setup(finders, ["setup.py", "install"], str(src)) == 0
    found = json.loads((src / "found.json").read_text())
    assert found["ffmpeg"] == [None, None]
    assert found["libpng-config"] == ["/host/bin/libpng-config"] * 2
    assert found["git"] == [str(bin_dir / "git")] * 2
    assert driver.run_setup(finders, ["setup.py", "fail"], str(src)) == 3



def test_driver_build_runs_setup_with_the_plan(tmp_path):
    """The build itself (no --plan): setup.py sees the planned environment, not the machine's, and its
    failure is the driver's, in one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ffmpeg").write_text("#!/bin/sh\n")
    (bin_dir / "ffmpeg").chmod(0o755)
    src = tmp_path / "src"
    src.mkdir()
    (src / "setup.py").write_text(
        "import distutils.spawn, json, os, sys\n"
        "json.dump({'argv': sys.argv[1:], 'ffmpeg': distutils.spawn.find_executable('ffmpeg'),\n"
        "           'env': {k: os.environ.get(k) for k in ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'NVCC_FLAGS',\n"
        "                                                    'BUILD_VERSION')}}, open('seen.json', 'w'))\n"
        "sys.exit(int(os.environ.get('FAIL', '0')))\n")
    env = dict(os.environ, TORCHWIN_TORCHVISION_VERSION="0.6.1", TORCHWIN_PYTORCH_RELEASES="1.5.1",
               TORCHWIN_CUDA_VERSION="9.2", RECIPE_DIR=str(RECIPE), SRC_DIR=str(src), PYTHON=sys.executable,
               PATH=str(bin_dir) + os.pathsep + os.environ["PATH"], TORCH_CUDA_ARCH_LIST="8.6",
               NVCC_FLAGS="-arch=sm_86")
    out = subprocess.run([sys.executable, str(DRIVER)], capture_output=True, text=True, env=env, cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    seen = json.loads((src / "seen.json").read_text())
    assert seen == {"argv": ["install", "--single-version-externally-managed", "--record=record.txt"],
                    "ffmpeg": None, "env": {"FORCE_CUDA": "1", "TORCH_CUDA_ARCH_LIST": "3.5;5.0;6.0;6.1;7.0+PTX",
                                            "NVCC_FLAGS": "", "BUILD_VERSION": "0.6.1"}}
    out = subprocess.run([sys.executable, str(DRIVER)], capture_output=True, text=True, env=dict(env, FAIL="4"),
                         cwd=str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.splitlines() == ["torchwin build driver: error: `%s setup.py install "
                                       "--single-version-externally-managed --record=record.txt` failed (exit 4)"
                                       % sys.executable]

# ---- the install-time selection, solved ----------------------------------------------------------

def defaults_with_torchvision_deps():
    out = external_records()
    for subdir in PLATFORMS:
        # A Pillow 7 too, as today's defaults has: the pin must keep it out.
        for name, version in (("pillow", "5.4.1"), ("pillow", "7.0.0"), ("six", "1.12.0"), ("tqdm", "4.31.1"),
                              ("libpng", "1.6.37"), ("jpeg", "9b")):
            out.append(repodata.record(name, version, "h0_0", subdir=subdir))
    return out


@pytest.fixture(scope="module")
def channels(rendered, tmp_path_factory):
    return write_channels(rendered, tmp_path_factory.mktemp("channels"), defaults=defaults_with_torchvision_deps())


def solved(channels, line, platform, specs, priority):
    """Solve, and check the invariant of every solution: torchvision sits on a pytorch of its flavour
    and of the release it pairs with."""
    got = solve(channels, line, platform, specs, priority)
    if "torchvision" in got:
        tv, torch = got["torchvision"], got["pytorch"]
        assert tv.build.split("_")[1] == torch.build.split("_")[1], (tv.build, torch.build)
        assert PAIRS[torch.version] == tv.version, (tv.version, torch.version)
    return got


# The newest pair per platform and Python: 1.6.0 on need Python 3.6, 1.7.x is Linux-only.
NEWEST = {("linux-64", "3.5"): "1.5.1", ("linux-64", "3.6"): "1.7.1", ("linux-64", "3.7"): "1.7.1",
          ("linux-64", "3.8"): "1.7.1", ("win-64", "3.5"): "1.5.1", ("win-64", "3.6"): "1.6.0",
          ("win-64", "3.7"): "1.6.0", ("win-64", "3.8"): "1.6.0"}


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("extra,flavour_", [([], "cuda90"), (["cuda90"], "cuda90"), (["cpuonly"], "cpu")])
def test_pytorch_torchvision_picks_matching_builds(channels, platform, python, extra, flavour_, priority):
    """`pytorch torchvision [cuda90|cpuonly]`: the newest pair, both of the selected flavour."""
    got = solved(channels, MAIN_LINE, platform, ["pytorch", "torchvision"] + extra + ["python %s.*" % python],
                 priority)
    torch = NEWEST[(platform, python)]
    assert (got["pytorch"].version, got["torchvision"].version) == (torch, PAIRS[torch])
    assert got["pillow"].version == "7.0.0"  # these releases take any Pillow
    assert ("libpng" in got) == (PAIRS[torch] in IMAGE)
    assert got["torchvision"].build == "py%s_%s_%d" % (python.replace(".", ""), flavour_,
                                                       201 if flavour_ == "cuda90" else 1)
    assert "_%s_" % flavour_ in got["pytorch"].build
    assert got["pytorch-mutex"].build == ("cpu" if flavour_ == "cpu" else "cuda")


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("spec,torch_version", [
    ("torchvision=0.3.0", "1.1.0"), ("torchvision=0.2.2", "1.0.1"), ("torchvision=0.2.1", "0.4.1"),
    ("torchvision=0.4.2", "1.3.1"), ("torchvision=0.7.0", "1.6.0"), ("torchvision=0.8.2", "1.7.1")])
def test_a_torchvision_release_pulls_its_pytorch(channels, platform, spec, torch_version, priority):
    if platform == "win-64" and torch_version.startswith("1.7."):  # no Windows 1.7.x, so no Windows 0.8.x
        with pytest.raises(SolverError):
            solve(channels, MAIN_LINE, platform, [spec, "python 3.6.*"], priority)
        return
    got = solved(channels, MAIN_LINE, platform, [spec, "python 3.6.*"], priority)
    assert got["pytorch"].version == torch_version
    assert "_cuda90_" in got["torchvision"].build
    # Up to 0.4.2 torchvision imports PIL.PILLOW_VERSION: Pillow 7 is kept out.
    assert got["pillow"].version == ("5.4.1" if got["torchvision"].version in OLD_PILLOW else "7.0.0")


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("torch_version", ["0.4.0", "1.0.0", "1.3.0", "1.5.1"])
def test_an_older_pytorch_pulls_its_torchvision(channels, platform, torch_version):
    got = solved(channels, MAIN_LINE, platform, ["pytorch=%s" % torch_version, "torchvision", "python 3.6.*"],
                 "strict")
    assert got["torchvision"].version == PAIRS[torch_version]


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("specs", [
    ["torchvision * *_cpu_*", "pytorch * *cuda90*"],
    ["torchvision * *cuda90*", "cpuonly"],
    ["torchvision * *_cpu_*", "cuda90"],
    ["torchvision=0.3.0", "pytorch=1.0.1"],
    ["torchvision=0.8.1", "pytorch=1.7.1"],
    ["torchvision=0.4.0", "pytorch=1.3.0"],
])
def test_no_mixing(channels, platform, specs):
    """A CPU torchvision with a CUDA pytorch (or the reverse), or a pair upstream never made: unsatisfiable."""
    with pytest.raises(SolverError):
        solve(channels, MAIN_LINE, platform, specs + ["python 3.6.*"], "flexible")


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_torchvision_build_installs_with_its_own_pytorch(rendered, channels, platform):
    """Each torchvision build alone, by exact build string: it brings the pytorch it was made for
    (the label line and flexible priority, so every CUDA runtime is in reach)."""
    for v in (v for v in builds(rendered, "torchvision") if v.subdir == platform and v.variant["python"] == "3.6"):
        got = solved(channels, LABEL_LINE, platform, ["torchvision ==%s %s" % (v.version, v.build_string)],
                     "flexible")
        assert got["torchvision"].build == v.build_string


# ---- torchwin build on a host without pytorch ------------------------------------------------------

def test_build_here_lists_every_variant_as_skipped_with_a_reason(tmp_path, capsys):
    """This host cannot build pytorch, so nothing of torchvision is built: every variant is listed as
    skipped, with why and where to build it, and the run succeeds."""
    code = main(["build", str(RECIPE), "--target-platform", "all", "--channel-dir", str(tmp_path / "chan"), "--verbose"])
    out = capsys.readouterr().out
    assert code == 0, out
    total = len(recipes.render([RECIPE], list(PLATFORMS)))
    assert "0 built, 0 failed, %d skipped" % total in out
    assert "torchvision for win-64" in out and "torchvision for linux-64" in out
    # The pure-Python 0.2.x builds wait for the compiled ones rather than fail on a missing pytorch.
    assert "it goes with torchvision's compiled packages" in out
    # ... and is built where they are, not "where that is installed" (there is nothing to install).
    assert "where that is installed" not in out
    assert "e.g. built with the rest of recipes/torchvision on its build machine" in out


# ---- the package test script -----------------------------------------------------------------------

def load_run_test():
    import importlib.util

    spec = importlib.util.spec_from_file_location("torchwin_test_torchvision_run_test", RUN_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_test_release_and_options():
    run_test = load_run_test()
    assert run_test.release("0.3.0") == (0, 3) and run_test.release("0.2.2+cpu") == (0, 2)
    assert run_test.expected({"TORCHWIN_EXPECT_VARIANT": "cuda9.0", "TORCHWIN_REQUIRE_CUDA": "1"}) == (
        "", "cuda9.0", True)
    assert run_test.main({"TORCHWIN_EXPECT_VARIANT": "gpu"}) == 2


@pytest.mark.parametrize("version, extension, cuda_version, want", [
    ("0.3.0", "CUDA_VERSION = 9000\n", None, "9.0"),  # 0.3-0.4 CUDA build: a Python extension with CUDA_VERSION
    ("0.4.2", "\n", None, None),  # 0.3-0.4 CPU build
    # 0.5 on: an operator library; importing it fails on Linux (ImportError) and on Windows 0.5-0.8
    # (SystemError: its PyInit__C returns NULL by design). Neither may reach the check.
    ("0.5.0", "raise ImportError('dynamic module does not define module export function (PyInit__C)')\n", 10010,
     "10.1"),
    ("0.8.2", "raise SystemError('initialization of _C did not return an extension module')\n", 10020, "10.2"),
    ("0.6.0", "raise SystemError('initialization of _C did not return an extension module')\n", 9020, "9.2"),
    ("0.8.1", "raise SystemError('initialization of _C did not return an extension module')\n", -1, None),
])
def test_run_test_tells_cuda_ops_of_old_and_new_torchvision(tmp_path, monkeypatch, version, extension, cuda_version,
                                                             want):
    """0.3-0.4's _C is a Python module with CUDA_VERSION; from 0.5 on it is a torch operator library whose
    _cuda_version() says which CUDA is compiled in (-1: none), and the message names what was asked."""
    import types

    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_C.py").write_text(extension)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("torchvision", "torchvision._C"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    ops = types.SimpleNamespace(torchvision=types.SimpleNamespace(_cuda_version=lambda: cuda_version))
    got, how = load_run_test().ops_cuda_version(types.SimpleNamespace(ops=ops), version)
    assert got == want
    assert how.startswith("torchvision._C.CUDA_VERSION" if version < "0.5" else "torch.ops.torchvision._cuda_version()")


def fake_torch(cuda, ops_cuda):
    import types

    return types.SimpleNamespace(version=types.SimpleNamespace(cuda=cuda), __version__="1.7.1",
                                 ops=types.SimpleNamespace(torchvision=types.SimpleNamespace(
                                     _cuda_version=lambda: ops_cuda)))


@pytest.mark.parametrize("cuda, variant, ok", [
    ("9.0.176", "cuda9.0", True),  # upstream's real 1.0.1/1.1.0 Linux wheels
    ("9.0", "cuda9.0", True),
    ("9.2.148", "cuda9.2", True),
    ("9.0.176", "cuda9.2", False),
    ("10.2", "cuda10.0", False),
    ("9.0176", "cuda9.0", False),
])
def test_run_test_accepts_the_patch_level_in_torch_version_cuda(cuda, variant, ok):
    import types

    run_test = load_run_test()
    torchvision = types.SimpleNamespace(__version__="0.3.0")
    if ok:
        assert "CUDA %s" % cuda in run_test.check_versions(fake_torch(cuda, None), torchvision, "0.3.0", variant)
    else:
        with pytest.raises(AssertionError, match="torch.version.cuda is %s, expected" % cuda):
            run_test.check_versions(fake_torch(cuda, None), torchvision, "0.3.0", variant)


def test_run_test_shares_the_cuda_version_rule_with_the_pytorch_package_test():
    """Each package test ships only its own recipe's files, so the rule exists twice: identically."""
    import ast

    def rule(path):
        tree = ast.parse(path.read_text())
        found = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "cuda_version_matches"]
        assert len(found) == 1, path
        body = found[0].body[1:]  # without the docstring, which says where the twin lives
        return ast.dump(ast.Module(body=body, type_ignores=[])), ast.dump(found[0].args)

    assert rule(RUN_TEST) == rule(ROOT / "recipes" / "pytorch" / "run_test.py")


@pytest.mark.parametrize("variant, ops_cuda, message", [
    ("cpu", 10020, r"a CPU build has CUDA ops \(torch.ops.torchvision._cuda_version\(\) is 10020\)"),
    ("cuda9.2", -1, r"a CUDA build has no CUDA ops \(torch.ops.torchvision._cuda_version\(\) says no CUDA\)"),
    ("cuda9.2", 10020, r"the ops were built with CUDA 10.2 \(torch.ops.torchvision._cuda_version\(\) is 10020\), "
                       r"expected 9.2"),
])
def test_run_test_ops_messages_name_what_answered(monkeypatch, variant, ops_cuda, message):
    """From 0.5 on the answer comes from torch.ops, and the message says so (it named _C.CUDA_VERSION)."""
    import types

    monkeypatch.setitem(sys.modules, "torchvision", types.ModuleType("torchvision"))
    monkeypatch.setitem(sys.modules, "torchvision.ops", types.ModuleType("torchvision.ops"))
    sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
    torchvision = types.SimpleNamespace(__version__="0.6.0")
    with pytest.raises(AssertionError, match=message):
        load_run_test().check_ops(fake_torch("10.2", ops_cuda), torchvision, variant)


def test_run_test_image_round_trip_uses_what_0_8_exports(monkeypatch):
    """torchvision 0.8.x's torchvision.io exports encode_png, encode_jpeg and decode_image; decode_png and
    decode_jpeg are only in torchvision.io.image (its io/__init__.py, read from the 0.8.1 wheel)."""
    import types

    import torch

    io_image = types.ModuleType("torchvision.io.image")
    io_image._HAS_IMAGE_OPT = True
    io_image.encode_png = lambda image: image.clone()
    io_image.decode_png = lambda data: data.clone()
    io_image.encode_jpeg = lambda image, quality=75: image.clone()
    io_image.decode_jpeg = lambda data: data.clone()
    io_image.decode_image = lambda data: data.clone()
    io = types.ModuleType("torchvision.io")
    io.image = io_image
    for name in ("encode_png", "encode_jpeg", "decode_image"):  # 0.8.x's exports, not decode_png/decode_jpeg
        setattr(io, name, getattr(io_image, name))
    package = types.ModuleType("torchvision")
    package.io = io
    for name, module in (("torchvision", package), ("torchvision.io", io), ("torchvision.io.image", io_image)):
        monkeypatch.setitem(sys.modules, name, module)
    assert "decode_image" in load_run_test().check_image(torch, package)
    io_image._HAS_IMAGE_OPT = False
    with pytest.raises(AssertionError, match="_HAS_IMAGE_OPT is False"):
        load_run_test().check_image(torch, package)


@pytest.mark.parametrize("has_video_opt", [False, True])
def test_run_test_requires_no_video_reader(monkeypatch, has_video_opt):
    """0.5.0 on: a package whose torchvision.io found a video reader fails (the recipe builds none)."""
    import types

    package = types.ModuleType("torchvision")
    package.io = types.ModuleType("torchvision.io")
    package.io._HAS_VIDEO_OPT = has_video_opt
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.io", package.io)
    run_test = load_run_test()
    if has_video_opt:
        with pytest.raises(AssertionError, match="_HAS_VIDEO_OPT is True"):
            run_test.check_no_video_reader(None, package)
    else:
        assert "no video reader" in run_test.check_no_video_reader(None, package)


def test_run_test_fails_when_torchvision_is_missing():
    """This test environment has no torchvision: the script says so in a FAIL line and exits 1."""
    out = subprocess.run([sys.executable, str(RUN_TEST)], capture_output=True, text=True,
                         env={"PATH": "", "PYTHONPATH": ""})
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("FAIL import:")


# ---- the same selection with the real conda (classic solver) --------------------------------------

def find_conda():
    import os
    import shutil

    named = os.environ.get("TORCHWIN_TEST_CONDA")
    return (shutil.which(named) or named) if named else shutil.which("conda")


CONDA = find_conda()
real_conda = pytest.mark.real_conda
needs_conda = pytest.mark.skipif(
    not CONDA or sys.platform == "win32",
    reason="no real conda: set TORCHWIN_TEST_CONDA to a conda command (../shared/tools/real-conda/setup.sh "
           "prints one) or put conda on PATH; POSIX hosts only")


@pytest.fixture(scope="module")
def conda_channels(rendered, tmp_path_factory):
    """The channels of the solver tests above, plus the `pip` record conda makes every python depend on."""
    pip = repodata.record("pip", "19.1.1", "py_0", subdir="noarch", noarch="python")
    return write_channels(rendered, tmp_path_factory.mktemp("conda-channels"),
                          defaults=defaults_with_torchvision_deps() + [pip])


def conda_dry_run(channels, line, platform, specs, priority, tmp_path):
    """conda create --dry-run --json offline with the classic solver; {name: (version, build)} or None."""
    import json
    import os

    args = [CONDA, "create", "-p", str(tmp_path / "env"), "--dry-run", "--json", "--override-channels"]
    for name in line:
        args += ["-c", channels[name].as_uri()]
    env = dict(os.environ, CONDA_OFFLINE="true", CONDA_REPORT_ERRORS="false", CONDA_ALWAYS_YES="true",
               CONDA_NOTIFY_OUTDATED_CONDA="false", CONDA_SOLVER="classic", CONDA_SUBDIR=platform,
               CONDA_CHANNEL_PRIORITY=priority)
    out = subprocess.run(args + specs, capture_output=True, text=True, env=env, timeout=600)
    data = json.loads(out.stdout)
    if not data.get("success"):
        return None
    return {p["name"]: (p["version"], p["build_string"]) for p in data["actions"]["LINK"]}


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("specs,torch,flavour_", [
    (["pytorch", "torchvision"], None, "cuda90"),
    (["pytorch", "torchvision", "cuda90"], None, "cuda90"),
    (["pytorch", "torchvision", "cpuonly"], None, "cpu"),
    (["torchvision=0.3.0"], "1.1.0", "cuda90"),
    (["torchvision=0.6.0", "cpuonly"], "1.5.0", "cpu"),
    (["torchvision=0.2.1", "cuda90"], "0.4.1", "cuda90"),
])
@real_conda
@needs_conda
def test_real_conda_picks_matching_builds(conda_channels, platform, specs, torch, flavour_, priority, tmp_path):
    """As the py-rattler tests: no pin gives the newest pair of the platform (Python 3.7: 1.7.1 on Linux,
    1.6.0 on Windows), a torchvision pin its pytorch."""
    got = conda_dry_run(conda_channels, MAIN_LINE, platform, specs + ["python 3.7.*"], priority, tmp_path)
    assert got is not None, specs
    torch = torch or NEWEST[(platform, "3.7")]
    vision = PAIRS[torch]
    assert got["pytorch"][0] == torch and got["torchvision"][0] == vision
    assert got["pillow"][0] == ("5.4.1" if vision in OLD_PILLOW else "7.0.0")
    assert "_%s_" % flavour_ in got["pytorch"][1] and "_%s_" % flavour_ in got["torchvision"][1]


@real_conda
@needs_conda
@pytest.mark.parametrize("platform", PLATFORMS)
def test_real_conda_refuses_a_cpu_torchvision_on_a_cuda_pytorch(conda_channels, platform, tmp_path):
    specs = ["torchvision=*=*_cpu_*", "pytorch=*=*cuda90*", "python 3.7.*"]
    assert conda_dry_run(conda_channels, MAIN_LINE, platform, specs, "flexible", tmp_path) is None


def test_the_lookups_setup_py_makes_raise_no_deprecation_warning(monkeypatch):
    """Issue 26: a name the finders lack went to setuptools' find_executable, whose DeprecationWarning
    ("Use shutil.which instead") landed in every build log."""
    import distutils.spawn
    import shutil
    import warnings

    monkeypatch.setattr(distutils.spawn, "find_executable", distutils.spawn.find_executable)
    monkeypatch.setattr(shutil, "which", shutil.which)
    driver = load_module(DRIVER, "torchwin_test_build_torchvision_lookups")
    driver.patch_lookups({"nvcc": "/opt/cuda/bin/nvcc"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert distutils.spawn.find_executable("nvcc") == "/opt/cuda/bin/nvcc"
        assert distutils.spawn.find_executable("sh") == shutil.which("sh") is not None
        assert distutils.spawn.find_executable("no-such-tool-here") is None


def test_unpaired_releases_are_the_ones_readme_names():
    readme = (ROOT / "README.md").read_text()
    assert "pip install --no-deps torchvision==0.2.0" in readme
    torch_releases = recipes.load_variant_config(ROOT / "recipes" / "pytorch", "linux-64").get_values("pytorch_version")
    assert set(UNPAIRED) <= set(torch_releases) and not set(UNPAIRED) & set(PAIRS)

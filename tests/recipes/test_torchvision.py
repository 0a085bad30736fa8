"""recipes/torchvision: its rendered matrix against recipes/pytorch's, its pins, the install-time selection
solved with the real solver (py-rattler) over repodata made from render, how `torchwin build` treats it
on a host that cannot build pytorch, and its package test script.

The solver setup is tests/test_pytorch_solve.py's (the channels users name, defaults modelled as it was),
with torchvision's own run dependencies (pillow, six, tqdm) added to defaults.
"""

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
PLATFORMS = ("win-64", "linux-64")
PYTHONS = ("3.5", "3.6", "3.7")
# The pairs upstream published (README.md has the evidence): pytorch release -> torchvision release.
PAIRS = {"0.4.1": "0.2.1", "1.0.0": "0.2.2", "1.0.1": "0.2.2", "1.1.0": "0.3.0"}
# pytorch releases the matrix grew by (issue 17) that have no torchvision row yet (README.md, "Not yet").
NOT_YET = {"0.4.0", "1.2.0", "1.3.0", "1.3.1", "1.4.0", "1.5.0", "1.5.1", "1.6.0", "1.7.0", "1.7.1"}


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


def test_records_pin_their_pytorch_release_and_flavour(rendered):
    pins = {"0.2.1": "==0.4.1", "0.2.2": "1.0.*", "0.3.0": "==1.1.0"}
    for v in builds(rendered, "torchvision"):
        pin = "pytorch %s *_%s_*" % (pins[v.version], flavour(v))
        assert pin in v.depends, (v.key, v.depends)
        assert "python %s.*" % v.variant["python"] in v.depends
        assert re.match(r"^py3[567]_(cpu|cuda\d\d)_\d+$", v.build_string), v.build_string
        assert v.build_string == "py%s_%s_%d" % (v.variant["python"].replace(".", ""), flavour(v), v.build_number)
        assert bool(v.track_features) == (flavour(v) == "cpu"), v.key
        assert ("tqdm" in v.depends) == (v.version == "0.2.2")
        assert "pillow >=4.1.1,<7" in v.depends  # these releases import PIL.PILLOW_VERSION, gone in Pillow 7
        compiled = v.version == "0.3.0"
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
        assert covered == sorted(PAIRS)
        # A release added to pytorch's matrix must be paired here or listed as not yet paired.
        assert set(torch_rows) - set(covered) == NOT_YET
        assert {r: v for row, v in zip(releases, ours.get_values("torchvision_version")) for r in row} == PAIRS
        for key in ("cuda_win", "cuda_linux", "python_win", "python_linux"):
            for row, value in zip(releases, ours.get_values("torchvision_" + key)):
                union = {x for r in row for x in theirs.get_values("pytorch_" + key)[torch_rows[r]].split()}
                assert set(value.split()) == union, (key, row)


def test_sources_are_pinned():
    """0.3.0 by tag and the commit upstream's own wheel recorded; 0.2.x by the tag archive's sha256."""
    config = recipes.load_variant_config(RECIPE, "linux-64")
    rows = dict(zip(config.get_values("torchvision_version"),
                    zip(config.get_values("torchvision_commit"), config.get_values("torchvision_sha256"))))
    assert rows["0.3.0"] == ("be376084d84dedd99284625d5b12a3643cfbe3d8", "")
    for version in ("0.2.1", "0.2.2"):
        commit, sha256 = rows[version]
        assert commit == "" and re.fullmatch(r"[0-9a-f]{64}", sha256), version
    assert (RECIPE / "patches" / "0.3.0-force-cuda.patch").is_file()


# ---- the install-time selection, solved ----------------------------------------------------------

def defaults_with_torchvision_deps():
    out = external_records()
    for subdir in PLATFORMS:
        # A Pillow 7 too, as today's defaults has: the pin must keep it out.
        for name, version in (("pillow", "5.4.1"), ("pillow", "7.0.0"), ("six", "1.12.0"), ("tqdm", "4.31.1")):
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


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("extra,flavour_", [([], "cuda90"), (["cuda90"], "cuda90"), (["cpuonly"], "cpu")])
def test_pytorch_torchvision_picks_matching_builds(channels, platform, python, extra, flavour_, priority):
    """`pytorch torchvision [cuda90|cpuonly]`: the newest pair, both of the selected flavour."""
    got = solved(channels, MAIN_LINE, platform, ["pytorch", "torchvision"] + extra + ["python %s.*" % python],
                 priority)
    assert (got["pytorch"].version, got["torchvision"].version) == ("1.1.0", "0.3.0")
    assert got["pillow"].version == "5.4.1"
    assert got["torchvision"].build == "py%s_%s_%d" % (python.replace(".", ""), flavour_,
                                                       201 if flavour_ == "cuda90" else 1)
    assert "_%s_" % flavour_ in got["pytorch"].build
    assert got["pytorch-mutex"].build == ("cpu" if flavour_ == "cpu" else "cuda")


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("spec,torch_version", [
    ("torchvision=0.3.0", "1.1.0"), ("torchvision=0.2.2", "1.0.1"), ("torchvision=0.2.1", "0.4.1")])
def test_a_torchvision_release_pulls_its_pytorch(channels, platform, spec, torch_version, priority):
    got = solved(channels, MAIN_LINE, platform, [spec, "python 3.6.*"], priority)
    assert got["pytorch"].version == torch_version
    assert "_cuda90_" in got["torchvision"].build


@pytest.mark.parametrize("platform", PLATFORMS)
def test_an_older_pytorch_pulls_its_torchvision(channels, platform):
    got = solved(channels, MAIN_LINE, platform, ["pytorch=1.0.0", "torchvision", "python 3.6.*"], "strict")
    assert got["torchvision"].version == "0.2.2"


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("specs", [
    ["torchvision * *_cpu_*", "pytorch * *cuda90*"],
    ["torchvision * *cuda90*", "cpuonly"],
    ["torchvision * *_cpu_*", "cuda90"],
    ["torchvision=0.3.0", "pytorch=1.0.1"],
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
    code = main(["build", str(RECIPE), "--target-platform", "all", "--channel-dir", str(tmp_path / "chan")])
    out = capsys.readouterr().out
    assert code == 0, out
    total = len(recipes.render([RECIPE], list(PLATFORMS)))
    assert "0 built, 0 failed, %d skipped" % total in out
    assert "torchvision for win-64" in out and "torchvision for linux-64" in out
    # The pure-Python 0.2.x builds wait for the compiled ones rather than fail on a missing pytorch.
    assert "it goes with torchvision's compiled packages" in out


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


@pytest.mark.parametrize("extension, cuda_version, want", [
    ("CUDA_VERSION = 9000\n", None, True),  # 0.3.x CUDA build: a Python extension with CUDA_VERSION
    ("\n", None, False),  # 0.3.x CPU build
    ("raise ImportError('dynamic module does not define module export function (PyInit__C)')\n", 130, True),
    ("raise ImportError('dynamic module does not define module export function (PyInit__C)')\n", -1, False),
])
def test_run_test_tells_cuda_ops_of_old_and_new_torchvision(tmp_path, monkeypatch, extension, cuda_version, want):
    """0.3.x's _C is a Python module; from 0.5 on it is a torch operator library (seen on torchvision 0.26
    on a GPU machine: importing it fails), whose _cuda_version() says whether CUDA is compiled in."""
    import types

    package = tmp_path / "torchvision"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_C.py").write_text(extension)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("torchvision", "torchvision._C"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    ops = types.SimpleNamespace(torchvision=types.SimpleNamespace(_cuda_version=lambda: cuda_version))
    assert load_run_test().ops_compiled_with_cuda(types.SimpleNamespace(ops=ops)) is want


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
@pytest.mark.parametrize("specs,torch,vision,flavour_", [
    (["pytorch", "torchvision"], "1.1.0", "0.3.0", "cuda90"),
    (["pytorch", "torchvision", "cuda90"], "1.1.0", "0.3.0", "cuda90"),
    (["pytorch", "torchvision", "cpuonly"], "1.1.0", "0.3.0", "cpu"),
    (["torchvision=0.3.0"], "1.1.0", "0.3.0", "cuda90"),
    (["torchvision=0.2.1", "cuda90"], "0.4.1", "0.2.1", "cuda90"),
])
@real_conda
@needs_conda
def test_real_conda_picks_matching_builds(conda_channels, platform, specs, torch, vision, flavour_, priority,
                                          tmp_path):
    got = conda_dry_run(conda_channels, MAIN_LINE, platform, specs + ["python 3.7.*"], priority, tmp_path)
    assert got is not None, specs
    assert got["pytorch"][0] == torch and got["torchvision"][0] == vision
    assert got["pillow"][0] == "5.4.1"
    assert "_%s_" % flavour_ in got["pytorch"][1] and "_%s_" % flavour_ in got["torchvision"][1]


@real_conda
@needs_conda
@pytest.mark.parametrize("platform", PLATFORMS)
def test_real_conda_refuses_a_cpu_torchvision_on_a_cuda_pytorch(conda_channels, platform, tmp_path):
    specs = ["torchvision=*=*_cpu_*", "pytorch=*=*cuda90*", "python 3.7.*"]
    assert conda_dry_run(conda_channels, MAIN_LINE, platform, specs, "flexible", tmp_path) is None

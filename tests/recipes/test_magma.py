"""recipes/magma: what it renders (names, CUDA releases, pins) against recipes/pytorch's matrix, its build
driver's plan and failure handling, and its package test against a library loaded for real with ctypes.

MAGMA itself cannot be built here (no CUDA toolkit); the package test runs against a small shared
library with MAGMA's entry points, compiled with the machine's C compiler: a stand-in for the GPU
library at the edge, loaded through the same ctypes path as the real one.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchwin import recipes

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "magma"
DRIVER = RECIPE / "build_magma.py"
CHECK = RECIPE / "check_library.py"
PLATFORMS = ["linux-64", "win-64"]


def load_module(path, name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = load_module(DRIVER, "torchwin_test_build_magma")
check = load_module(CHECK, "torchwin_test_magma_check")


@pytest.fixture(scope="module")
def rendered():
    return recipes.render([RECIPE, ROOT / "recipes" / "pytorch"], PLATFORMS)


def test_one_package_per_cuda_release_pytorch_builds(rendered):
    """magma-cuda80/90/91/92 for exactly the CUDA releases pytorch is built with on each platform (8.0: Linux)."""
    magma = {(v.subdir, v.name) for v in rendered if v.recipe == "magma"}
    wanted = {(v.subdir, "magma-cuda" + v.variant["cuda_compiler_version"].replace(".", "")) for v in rendered
              if v.name == "pytorch" and v.variant["cuda_compiler_version"] != "None"}
    assert magma == wanted
    assert magma == {(p, "magma-cuda%s" % c) for p in PLATFORMS for c in ("90", "91", "92")} | {
        ("linux-64", "magma-cuda80")}


def test_cmake_below_4_which_refuses_magma_2_5_0s_floor(rendered):
    """MAGMA 2.5.0 asks cmake_minimum_required(VERSION 2.8.1); CMake 4 refuses anything below 3.5."""
    for v in (v for v in rendered if v.recipe == "magma"):
        assert "cmake >=3.15,<4" in v.build_requirements, (v.key, v.build_requirements)


def test_gpu_code_for_every_architecture_a_pytorch_build_promises():
    """Every compute capability a pytorch CUDA build compiles for (build_driver's list from the facts:
    3.0 for 0.4.0-1.0.1) has MAGMA machine code, so MAGMA's calls run on that GPU too."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bd", ROOT / "recipes" / "pytorch" / "build_driver.py")
    bd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bd)
    for path in sorted((ROOT / "recipes" / "pytorch" / "upstream").glob("*.json")):
        facts = json.loads(path.read_text())
        for cuda, targets in driver.GPU_TARGETS.items():
            for arch in bd.cuda_arch_list(facts, cuda).split(";"):
                sm = "sm_" + arch.split("+")[0].replace(".", "")
                assert sm in targets.split(), (path.name, cuda, sm)


def test_records_pin_their_toolkit_and_export_themselves(rendered):
    for v in (v for v in rendered if v.recipe == "magma"):
        cuda = v.variant["cuda_compiler_version"]
        assert v.version == "2.5.0" and v.build_string == "0", v.key
        assert "cudatoolkit %s.*" % cuda in v.depends and "mkl >=2019" in v.depends
        assert v.run_exports == {"weak": ["%s >=2.5.0,<2.6" % v.name]}
        assert "nvcc_%s" % v.subdir in " ".join(v.build_requirements)


def test_compilers_and_host_gcc_follow_pytorch():
    """Built with pytorch's compilers: the same keys and values, and the same gcc per CUDA release."""
    for platform in PLATFORMS:
        ours = recipes.load_variant_config(RECIPE, platform)
        theirs = recipes.load_variant_config(ROOT / "recipes" / "pytorch", platform)
        for key in ("c_compiler", "cxx_compiler", "c_compiler_version", "cxx_compiler_version", "cuda_compiler"):
            assert ours.get_values(key) == theirs.get_values(key), (platform, key)
        gcc = dict(zip(theirs.get_values("cuda_compiler_version"), theirs.get_values("linux_host_gcc")))
        assert dict(zip(ours.get_values("cuda_compiler_version"), ours.get_values("linux_host_gcc"))) == {
            cuda: gcc[cuda] for cuda in ours.get_values("cuda_compiler_version")}


def test_source_is_pinned_by_the_hash_on_record():
    recipe = yaml.safe_load((RECIPE / "recipe.yaml").read_text())
    assert recipe["source"]["sha256"] == "4fd45c7e46bd9d9124253e7838bbfb9e6003c64c2c67ffcff02e6c36d2bcfa33"
    assert all(url.endswith("/magma-${{ version }}.tar.gz") for url in recipe["source"]["url"])
    for patch in recipe["source"]["patches"]:
        assert (RECIPE / patch).is_file(), patch


LINUX_ENV = {"TORCHWIN_CUDA_VERSION": "9.0", "SRC_DIR": "/work/src", "PREFIX": "/opt/env",
             "CUDA_HOME": "/usr/local/cuda-9.0", "CPU_COUNT": "8"}
WIN_ENV = {"TORCHWIN_CUDA_VERSION": "9.2", "SRC_DIR": "C:\\b\\work", "PREFIX": "C:\\b\\h_env",
           "LIBRARY_PREFIX": "C:\\b\\h_env\\Library", "CUDA_PATH": "C:\\CUDA\\v9.2\\", "CPU_COUNT": "2"}


def test_plan_linux():
    result = driver.plan(dict(LINUX_ENV), "linux-64")
    configure, build, install = result["commands"]
    assert configure[:7] == ["cmake", "-S", "/work/src", "-B", "/work/src/build-torchwin", "-G", "Ninja"]
    assert "-DGPU_TARGET=sm_30 sm_35 sm_50 sm_60 sm_61 sm_70" in configure
    assert "-DLAPACK_LIBRARIES=/opt/env/lib/libmkl_rt.so" in configure
    assert "-DCMAKE_INSTALL_PREFIX=/opt/env" in configure and "-DBUILD_SHARED_LIBS=ON" in configure
    assert "-DCUDA_TOOLKIT_ROOT_DIR=/usr/local/cuda-9.0" in configure
    assert not any("WINDOWS_EXPORT" in option for option in configure)
    assert build == ["cmake", "--build", "/work/src/build-torchwin", "--target", "magma", "magma_sparse",
                     "--parallel", "8"]
    assert install == ["cmake", "--install", "/work/src/build-torchwin"]
    assert result["library"] == "/opt/env/lib/libmagma.so"


def test_plan_windows_installs_under_library_and_exports_symbols():
    result = driver.plan(dict(WIN_ENV), "win-64")
    configure = result["commands"][0]
    assert "-DCMAKE_INSTALL_PREFIX=C:\\b\\h_env\\Library" in configure
    assert "-DLAPACK_LIBRARIES=C:\\b\\h_env\\Library\\lib\\mkl_rt.lib" in configure
    assert "-DCMAKE_WINDOWS_EXPORT_ALL_SYMBOLS=ON" in configure
    assert "-DCUDA_TOOLKIT_ROOT_DIR=C:\\CUDA\\v9.2\\" in configure
    assert result["library"] == "C:\\b\\h_env\\Library\\bin\\magma.dll"
    assert result["env"]["MKLROOT"] == "C:\\b\\h_env\\Library"


@pytest.mark.parametrize("change,message", [
    ({"TORCHWIN_CUDA_VERSION": "10.0"}, "TORCHWIN_CUDA_VERSION=10.0: MAGMA is built for CUDA 8.0, 9.0, 9.1, 9.2 only"),
    ({"TORCHWIN_CUDA_VERSION": ""}, "TORCHWIN_CUDA_VERSION is not set"),
    ({"CUDA_HOME": ""}, "CUDA_HOME and CUDA_PATH are not set"),
    ({"CPU_COUNT": "many"}, "CPU_COUNT=many: expected a whole number"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, change, message):
    assert driver.main(["--plan"], environ=dict(LINUX_ENV, **change)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_plan_json_from_the_command_line():
    env = dict(os.environ, **LINUX_ENV)
    out = subprocess.run([sys.executable, str(DRIVER), "--plan", "--json", "--platform", "linux-64"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["cuda"] == "9.0" and len(plan["commands"]) == 3


def test_run_stops_at_the_first_failing_command(tmp_path, capsys):
    marker = tmp_path / "ran"
    result = {"env": {}, "library": str(tmp_path / "libmagma.so"), "commands": [
        [sys.executable, "-c", "import sys; sys.exit(3)"],
        [sys.executable, "-c", "open(%r, 'w').close()" % str(marker)]]}
    assert driver.run(result, dict(os.environ)) == 1
    assert not marker.exists()
    assert "failed (exit 3)" in capsys.readouterr().err


def test_run_fails_when_the_install_left_no_library(tmp_path, capsys):
    result = {"env": {}, "library": str(tmp_path / "lib" / "libmagma.so"),
              "commands": [[sys.executable, "-c", "pass"]]}
    assert driver.run(result, dict(os.environ)) == 1
    assert "did not produce" in capsys.readouterr().err


STAND_IN = r"""
int magma_version(int *major, int *minor, int *micro) { *major = 2; *minor = %(minor)d; *micro = 0; return 0; }
int magma_init(void) { return %(init)d; }
int magma_finalize(void) { return 0; }
int magma_dgesv(int n, int nrhs, double *A, int lda, int *ipiv, double *B, int ldb, int *info) {
    /* 2x2 Cramer's rule, column-major, as a correct solver would answer */
    double det = A[0] * A[3] - A[2] * A[1];
    double x0 = (B[0] * A[3] - A[2] * B[1]) / det, x1 = (A[0] * B[1] - B[0] * A[1]) / det;
    B[0] = x0; B[1] = x1; *info = 0; return 0;
}
"""


def stand_in_prefix(tmp_path, minor=5, init=0):
    """A prefix with lib/libmagma.so exporting MAGMA's entry points the package test calls."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None or sys.platform == "win32":
        pytest.skip("needs a C compiler on a POSIX host to make the stand-in library")
    (tmp_path / "lib").mkdir()
    source = tmp_path / "magma.c"
    source.write_text(STAND_IN % {"minor": minor, "init": init})
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp_path / "lib" / "libmagma.so"), str(source)],
                   check=True)
    return tmp_path


def test_package_test_loads_the_library_and_solves(tmp_path, capsys):
    prefix = stand_in_prefix(tmp_path)
    assert check.main({"TORCHWIN_EXPECT_MAGMA_VERSION": "2.5.0"}, prefix=str(prefix), windows=False) == 0
    out = capsys.readouterr().out
    assert "PASS magma_version() = 2.5.0" in out and "PASS magma_dgesv" in out


def test_package_test_fails_on_the_wrong_version(tmp_path, capsys):
    prefix = stand_in_prefix(tmp_path, minor=4)
    assert check.main({"TORCHWIN_EXPECT_MAGMA_VERSION": "2.5.0"}, prefix=str(prefix), windows=False) == 1
    assert "says 2.4.0, expected 2.5.0" in capsys.readouterr().out


def test_package_test_without_a_gpu_skips_unless_required(tmp_path, capsys):
    prefix = stand_in_prefix(tmp_path, init=-113)
    assert check.main({}, prefix=str(prefix), windows=False) == 0
    assert "SKIP magma_init() returned -113" in capsys.readouterr().out
    assert check.main({"TORCHWIN_REQUIRE_CUDA": "1"}, prefix=str(prefix), windows=False) == 1


def test_package_test_fails_when_the_library_is_missing(tmp_path, capsys):
    assert check.main({}, prefix=str(tmp_path), windows=False) == 1
    assert "FAIL cannot load" in capsys.readouterr().out


def test_windows_library_path():
    assert check.library_path("C:\\env", True).endswith(os.path.join("Library", "bin", "magma.dll"))


def batch_steps_without_check(path):
    """Lines of a batch file that run something and are not followed by an error-level check."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    steps = [i for i, line in enumerate(lines) if line and not line.startswith(("::", "@echo", "rem ", "if errorlevel"))]
    return [lines[i] for i in steps if i + 1 >= len(lines) or lines[i + 1].lower() != "if errorlevel 1 exit 1"]


@pytest.mark.parametrize("recipe", ["magma", "torchvision"])
def test_every_windows_step_checks_its_error_level(recipe):
    assert batch_steps_without_check(ROOT / "recipes" / recipe / "bld.bat") == []


def test_the_error_level_check_finds_a_step_without_one(tmp_path):
    script = tmp_path / "bld.bat"
    script.write_text('@echo off\n"%PYTHON%" a.py\nif errorlevel 1 exit 1\n"%PYTHON%" b.py\n')
    assert batch_steps_without_check(script) == ['"%PYTHON%" b.py']


def test_pytorch_cuda_builds_host_depend_on_their_magma(rendered):
    """The hookup: every CUDA pytorch build gets the magma of its CUDA release in its host env (the
    driver then sets MAGMA_HOME); CPU builds get none, nor does 0.3 (its CMake never looks for MAGMA;
    the 2017 builds documented none)."""
    magma_names = {v.name for v in rendered if v.recipe == "magma"}
    for v in (v for v in rendered if v.name == "pytorch"):
        cuda = v.variant["cuda_compiler_version"]
        got = [spec for spec in v.host_requirements if spec.startswith("magma")]
        legacy = v.version.startswith("0.3.")
        want = [] if cuda == "None" or legacy else ["magma-cuda%s 2.5.*" % cuda.replace(".", "")]
        assert got == want, (v.key, got)
        assert all(spec.split()[0] in magma_names for spec in got)
        # ...and its package test then requires MAGMA (run_test.py's check FAILs instead of SKIPs).
        tests = v.rendered.recipe.to_dict()["tests"]
        env = next(t["script"]["env"] for t in tests if "run_test.py" in str(t.get("script", {}).get("content")))
        assert env["TORCHWIN_EXPECT_MAGMA"] == ("1" if want else "0"), v.key
    order = [p.name for p in recipes.build_order([ROOT / "recipes" / "pytorch", RECIPE], PLATFORMS)]
    assert order.index("magma") < order.index("pytorch")

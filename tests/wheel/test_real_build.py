"""Opt-in (marker real_build): compile a release for real with `torchwin wheel` and test what it made.

Needs a source tree and an era compiler, named by variables (each skip says which is missing):
    TORCHWIN_REAL_BUILD_SOURCE   a release's source tree with its submodules (copied, never changed)
    TORCHWIN_REAL_BUILD_RELEASE  its pytorch_version in recipes/pytorch/variants.yaml (e.g. 0.3.1)
    TORCHWIN_REAL_BUILD_PYTHON   the variant's Python (e.g. 3.6), a CPython of it in pyenv
    TORCHWIN_REAL_BUILD_SYSROOT  optional: a Debian root whose gcc builds (with ..._CC/_CXX, e.g. gcc-9)
    TORCHWIN_REAL_BUILD_WORK     optional: a folder kept between runs (build folder, ccache): resumes
The smallest tree (0.3.x) compiles in about ten minutes on 2 cores; a 1.x release takes hours.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real_build


def setting(name, required=True):
    value = os.environ.get(name)
    if required and not value:
        pytest.skip("opt-in real compile: set %s (see this file's docstring)" % name)
    return value


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    source = Path(setting("TORCHWIN_REAL_BUILD_SOURCE"))
    release = setting("TORCHWIN_REAL_BUILD_RELEASE")
    python = setting("TORCHWIN_REAL_BUILD_PYTHON")
    if not (source / "setup.py").is_file():
        pytest.skip("TORCHWIN_REAL_BUILD_SOURCE=%s has no setup.py" % source)
    if shutil.which("ccache") is None:
        pytest.skip("ccache is not on PATH")
    work = Path(setting("TORCHWIN_REAL_BUILD_WORK", required=False) or tmp_path_factory.mktemp("real-build"))
    tree = work / "src"
    if not tree.is_dir():
        shutil.copytree(source, tree, symlinks=True)
    argv = [sys.executable, "-m", "torchwin", "wheel", release, "--python", python, "--source", str(tree),
            "--build-dir", str(work / "build"), "--ccache-dir", str(work / "ccache")]
    sysroot = setting("TORCHWIN_REAL_BUILD_SYSROOT", required=False)
    if sysroot:
        argv += ["--sysroot", sysroot, "--cc", os.environ.get("TORCHWIN_REAL_BUILD_CC", "gcc-9"),
                 "--cxx", os.environ.get("TORCHWIN_REAL_BUILD_CXX", "g++-9")]
    proc = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True)
    result_path = work / "build" / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    return {"proc": proc, "result": result, "work": work, "release": release, "python": python}


def test_the_compile_succeeds_and_makes_a_wheel_of_the_release(built):
    proc, result = built["proc"], built["result"]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert result["exit_code"] == 0
    wheel = built["work"] / "build" / "dist" / result["wheel"]
    assert wheel.is_file()
    version = result["version"].split("+")[0]
    assert wheel.name.startswith("torch-" + version)
    assert "cp%s" % built["python"].replace(".", "") in wheel.name


def test_the_package_test_passes_on_the_wheel_with_the_recipes_expectations(built):
    result = built["result"]
    assert result["run_test"]["failed"] == 0, result
    assert result["run_test"]["passed"] > 0
    report = json.loads((built["work"] / "build" / "logs" / "run_test-wheel.json").read_text())
    # The recipe's expectations reached the test: the version and the CPU build were checked, not assumed.
    assert report["options"]["expect_version"] == result["version"]
    assert report["options"]["expect_variant"] == "cpu"
    passed = {c["name"] for c in report["checks"] if c["status"] == "PASS"}
    assert {"import", "version"} <= {name.split(".")[0] for name in passed}


def test_a_second_run_resumes_instead_of_recompiling(built):
    work = built["work"]
    cache_env = dict(os.environ, CCACHE_DIR=str(work / "ccache"))
    subprocess.run(["ccache", "--zero-stats"], env=cache_env, check=True, capture_output=True)
    argv = [sys.executable, "-m", "torchwin", "wheel", built["release"], "--python", built["python"],
            "--source", str(work / "src"), "--build-dir", str(work / "build"), "--ccache-dir", str(work / "ccache"),
            "--no-test"]
    sysroot = os.environ.get("TORCHWIN_REAL_BUILD_SYSROOT")
    if sysroot:
        argv += ["--sysroot", sysroot, "--cc", os.environ.get("TORCHWIN_REAL_BUILD_CC", "gcc-9"),
                 "--cxx", os.environ.get("TORCHWIN_REAL_BUILD_CXX", "g++-9")]
    proc = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = subprocess.run(["ccache", "--print-stats"], env=cache_env, capture_output=True, text=True).stdout
    counts = dict(line.split("\t", 1) for line in stats.splitlines() if "\t" in line)
    # Nothing changed: every compile the build still runs is answered by the cache or skipped by the build.
    assert int(counts.get("cache_miss", 0)) == 0, stats

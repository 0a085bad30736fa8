"""`torchwin wheel` without compiling: the variant it picks, the host prefix, the compilers, progress.

The compile itself is the opt-in test in test_real_build.py (marker real_build).
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin.errors import UserError
from torchwin.wheel import command, host_prefix, run, toolchain

ROOT = Path(__file__).resolve().parents[2]


def load_driver():
    spec = importlib.util.spec_from_file_location("torchwin_test_wheel_driver", ROOT / "recipes" / "pytorch" / "build_driver.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchwin(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "torchwin", *args], capture_output=True, text=True, cwd=cwd)


# ---- the variant -------------------------------------------------------------------------------------

def test_picks_the_rendered_cpu_variant_with_the_recipes_script_environment():
    variant, recipe_dir = command.pick_variant("1.4.0", "3.7", "none")
    assert (variant.name, variant.version, variant.build_string) == ("pytorch", "1.4.0", "py37_cpu_1")
    env = run.engine_environment(variant, Path("/src"), Path("/prefix"), recipe_dir)
    # What recipe.yaml's script.env renders for this variant, not values typed here.
    assert env["TORCHWIN_PYTORCH_VERSION"] == "1.4.0"
    assert env["TORCHWIN_RELEASE"] == "1.4.0"
    assert env["TORCHWIN_CUDA_VERSION"] == "None"
    assert env["TORCHWIN_BUILD_NUMBER"] == str(variant.build_number - 0)
    assert env["SRC_DIR"] == "/src" and env["PREFIX"] == "/prefix" and env["PYTHON"] == "/prefix/bin/python"
    assert env["RECIPE_DIR"] == str(recipe_dir)
    # An empty script.env value (a host variable the machine does not set) is left out, as the driver expects.
    assert all(value != "" for value in env.values())


def test_the_package_test_gets_the_recipes_expectations():
    variant, _ = command.pick_variant("1.4.0", "3.7", "none")
    env = run.test_environment(variant)
    assert env["TORCHWIN_EXPECT_VERSION"] == "1.4.0"
    assert env["TORCHWIN_EXPECT_VARIANT"] == "cpu"


@pytest.mark.parametrize("args, message", [
    (["9.9", "--python", "3.7"], "release 9.9: not in recipes/pytorch/variants.yaml; allowed: "),
    (["1.4.0", "--python", "3.4"], "--python 3.4: PyTorch 1.4.0 has no linux-64 CPU build for it; allowed: 3.5"),
    (["1.4.0", "--python", "3.7", "--cuda", "9.0"], "--cuda 9.0: only `none`"),
])
def test_a_wrong_variant_is_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "setup.py").write_text("")
    proc = torchwin("wheel", *args, "--source", str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_a_source_without_setup_py_is_refused(tmp_path):
    proc = torchwin("wheel", "1.4.0", "--python", "3.7", "--source", str(tmp_path))
    assert proc.returncode == 2
    assert "no setup.py there" in proc.stderr


# ---- the host prefix ---------------------------------------------------------------------------------

def test_host_requirements_become_their_pypi_stand_ins():
    variant, _ = command.pick_variant("1.4.0", "3.7", "none")
    reqs = host_prefix.pypi_requirements(variant.host_requirements)
    assert "numpy==1.15.*" in reqs  # the recipe's numpy floor for 3.7
    assert "pyyaml<6" in reqs
    assert {"mkl==2019.0", "mkl-include==2019.0"} <= set(reqs)
    assert not any(r.startswith(("python", "pip")) for r in reqs)


def test_a_host_requirement_without_a_stand_in_stops_the_build():
    with pytest.raises(UserError, match=r"host requirement 'magma-cuda90 2.5.\*' has no PyPI stand-in"):
        host_prefix.pypi_requirements(["python", "magma-cuda90 2.5.*"])


@pytest.mark.parametrize("conda, pip", [("1.15.*", "==1.15.*"), ("<6", "<6"), (">=1.15", ">=1.15"), ("", "")])
def test_conda_version_specs_become_pip_specs(conda, pip):
    assert host_prefix.pip_spec(conda) == pip


def test_find_python_prefers_the_named_interpreter_and_checks_its_version():
    version = "%d.%d" % sys.version_info[:2]
    assert host_prefix.find_python(version, sys.executable) == Path(sys.executable)
    with pytest.raises(UserError, match="is Python %s, but the variant needs 2.7" % version):
        host_prefix.find_python("2.7", sys.executable)


def test_find_python_looks_in_pyenv_and_says_how_to_get_one(tmp_path):
    version = "%d.%d" % sys.version_info[:2]
    folder = tmp_path / "versions" / (version + ".99") / "bin"
    folder.mkdir(parents=True)
    (folder / ("python" + version)).symlink_to(sys.executable)
    found = host_prefix.find_python(version, environ={"PYENV_ROOT": str(tmp_path), "PATH": ""})
    assert found == folder / ("python" + version)
    with pytest.raises(UserError, match=r"no CPython 3\.1 found .*pyenv install 3\.1"):
        host_prefix.find_python("3.1", environ={"PYENV_ROOT": str(tmp_path), "PATH": ""})


def test_pip_runs_without_the_machines_configuration():
    env = host_prefix.pip_environment({"PIP_CONSTRAINT": "/etc/c.txt", "PIP_CONFIG_FILE": "/etc/pip.conf"})
    assert env["PIP_CONFIG_FILE"] == os.devnull
    assert "PIP_CONSTRAINT" not in env


def test_the_host_prefix_is_reused_only_when_its_requirements_are_unchanged(tmp_path):
    log = open(tmp_path / "log", "w")
    python = host_prefix.make_venv(Path(sys.executable), tmp_path / "p", [], log)
    assert python.is_file()
    stamp = (tmp_path / "p" / host_prefix.MARKER).stat().st_mtime_ns
    host_prefix.make_venv(Path(sys.executable), tmp_path / "p", [], log)
    assert (tmp_path / "p" / host_prefix.MARKER).stat().st_mtime_ns == stamp  # reused: nothing rewritten
    (tmp_path / "p" / host_prefix.MARKER).write_text('{"python": "other", "requirements": []}')
    host_prefix.make_venv(Path(sys.executable), tmp_path / "p", [], log)
    assert str(sys.executable) in (tmp_path / "p" / host_prefix.MARKER).read_text()


# ---- the compilers -----------------------------------------------------------------------------------

def test_sysroot_absolute_links_are_made_relative(tmp_path):
    root = tmp_path / "root"
    (root / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (root / "lib" / "x86_64-linux-gnu" / "ld-2.31.so").write_text("loader")
    (root / "lib64").mkdir()
    (root / "lib64" / "ld-linux-x86-64.so.2").symlink_to("/lib/x86_64-linux-gnu/ld-2.31.so")
    assert toolchain.make_relative_links(root) == 1
    link = root / "lib64" / "ld-linux-x86-64.so.2"
    assert os.readlink(link) == "../lib/x86_64-linux-gnu/ld-2.31.so"
    assert link.read_text() == "loader"
    assert toolchain.make_relative_links(root) == 0


def fake_gcc(folder, version="9.3.0"):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("gcc-9", "g++-9"):
        path = folder / name
        path.write_text("#!/bin/sh\n[ \"$1\" = -dumpfullversion ] && echo %s && exit 0\n"
                        "[ \"$2\" = -dumpfullversion ] && echo %s && exit 0\necho \"$@\"\n" % (version, version))
        path.chmod(0o755)


def test_wrappers_call_the_sysroot_compiler_with_its_root(tmp_path):
    root = tmp_path / "root"
    (root / "usr" / "include").mkdir(parents=True)
    fake_gcc(root / "usr" / "bin")
    tools = toolchain.resolve("gcc-9", "g++-9", str(root), False, tmp_path / "wrap")
    assert tools.version == "9.3.0"
    out = subprocess.run([str(tmp_path / "wrap" / "c++"), "-c", "x.cpp"], capture_output=True, text=True).stdout
    assert out.split() == ["--sysroot=%s" % root.resolve(), "-c", "x.cpp"]
    assert tools.environment(None)["CXX"] == str(tmp_path / "wrap" / "c++")


def test_wrappers_put_ccache_in_front_when_asked(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    fake_gcc(bin_dir)
    (bin_dir / "ccache").write_text("#!/bin/sh\necho ccache \"$@\"\n")
    (bin_dir / "ccache").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    tools = toolchain.resolve("gcc-9", "g++-9", None, True, tmp_path / "wrap")
    out = subprocess.run([str(tmp_path / "wrap" / "cc"), "-c", "x.c"], capture_output=True, text=True).stdout
    assert out.split() == ["ccache", str(bin_dir / "gcc-9"), "-c", "x.c"]
    env = tools.environment(tmp_path / "cache")
    assert env["CCACHE_DIR"] == str(tmp_path / "cache") and env["CCACHE_COMPILERCHECK"] == "content"
    # ... and the driver, seeing that, puts no launcher of its own on top (ccache twice otherwise).
    driver = load_driver()
    facts = json.loads((ROOT / "recipes" / "pytorch" / "upstream" / "1.4.0.json").read_text())
    host = driver.Host(which=lambda name: "/usr/bin/" + name)
    assert driver.compiler_cache(facts, False, {}, host)[0]["CMAKE_CXX_COMPILER_LAUNCHER"] == "ccache"
    assert driver.compiler_cache(facts, False, env, host) == ({}, [])


@pytest.mark.parametrize("cc, sysroot, message", [
    ("no-such-gcc", None, "--cc no-such-gcc: no such compiler on PATH"),
    ("gcc-9", "nothing-here", "not a root file system"),
])
def test_wrong_compilers_are_named(tmp_path, monkeypatch, cc, sysroot, message):
    fake_gcc(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(UserError, match=message):
        toolchain.resolve(cc, "g++-9", str(tmp_path / sysroot) if sysroot else None, False, tmp_path / "w")


# ---- progress and logs -------------------------------------------------------------------------------

def test_progress_reads_ninja_steps_and_prints_plain_lines_off_a_terminal():
    out = io.StringIO()
    progress = run.Progress("compiling 1.4.0", out, interval=3600)
    for i in range(1, 101):
        progress.update("[%d/100] Building CXX object x%d.o\n" % (i, i))
    lines = out.getvalue().splitlines()
    # Off a terminal: a line per 10% step, not one per compile.
    assert 9 <= len(lines) <= 12
    assert lines[-1].startswith("compiling 1.4.0: 100/100 compiled (100%)")
    assert "\r" not in out.getvalue()


def test_the_error_line_is_the_drivers_own_when_it_has_one(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("cmake ...\nsome error: in a test compile\ntorchwin build driver: error: ninja is not on PATH\n")
    assert run.last_error_line(log) == "ninja is not on PATH"
    log.write_text("[1/2] ok\nFAILED: x.o\nx.cpp:1:1: error: 'size_t' does not name a type\n")
    assert run.last_error_line(log) == "FAILED: x.o"


def test_the_memory_sampler_counts_child_processes():
    proc = subprocess.Popen([sys.executable, "-c", "b = bytearray(60 * 2**20); import time; time.sleep(1.5)"])
    try:
        with run.TreeMemory(os.getpid(), every=0.2) as memory:
            proc.wait()
    finally:
        proc.kill()
    assert memory.peak_kb > 60 * 1024


def test_run_requirements_become_the_runtime_stand_ins_with_the_compiled_numpy():
    variant, _ = command.pick_variant("1.4.0", "3.7", "none")
    runtime = host_prefix.runtime_requirements(variant.depends, variant.host_requirements)
    # numpy as compiled against (the host pin), MKL with the OpenMP its wheel requires, nothing for python/mutex.
    assert runtime == ["numpy==1.15.*", "mkl==2019.0", "intel-openmp==2019.0"]
    with pytest.raises(UserError, match=r"run requirement 'cudatoolkit 9\.0\.\*' has no PyPI stand-in"):
        host_prefix.runtime_requirements(variant.depends + ["cudatoolkit 9.0.*"], variant.host_requirements)


def test_the_recipes_test_variables_become_run_test_options():
    assert run.run_test_arguments({"TORCHWIN_EXPECT_VERSION": "1.4.0", "TORCHWIN_EXPECT_VARIANT": "cpu",
                                   "TORCHWIN_EXPECT_ARCHS": "", "TORCHWIN_EXPECT_MAGMA": "0"}) == \
        ["--expect-version", "1.4.0", "--expect-variant", "cpu"]
    assert run.run_test_arguments({"TORCHWIN_EXPECT_MAGMA": "1", "TORCHWIN_EXPECT_ARCHS": "facts:1.1.0"}) == \
        ["--expect-archs", "facts:1.1.0", "--expect-magma"]

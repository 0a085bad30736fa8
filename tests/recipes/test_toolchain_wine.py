"""The win-64 activation scripts run by a real cmd implementation: Wine's cmd.exe. Opt-in.

Windows and Visual Studio cannot run on this Linux host, but Wine's cmd.exe runs batch files, so the
control flow of vs2017_win-64's and nvcc_win-64's .bat scripts (labels, error levels, variable saving,
PATH bookkeeping) runs for real. Faked at the edge: the Visual Studio installation (a folder layout whose
vcvarsall.bat sets what the real one sets for the toolset it is asked for, and records its arguments) and
nvcc.exe (Wine cannot run NVIDIA's; a copy of the activation script calls an nvcc.bat printing the same
lines instead). Wine's cmd is not Microsoft's, so this complements, not replaces, a run on Windows.

To run: install Wine (Debian: `apt-get install wine64`) and set TORCHWIN_TEST_WINEPREFIX to a folder
used only for these tests (Wine creates it on first use, about 700 MB; the tests put the fake Visual
Studio under its drive_c and remove it afterwards).
"""

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from torchwin.cli import main

rattler = pytest.importorskip("rattler")

ROOT = Path(__file__).resolve().parents[2]
WINE = shutil.which("wine64") or shutil.which("wine") or (
    "/usr/lib/wine/wine64" if Path("/usr/lib/wine/wine64").exists() else None)
WINEPREFIX = os.environ.get("TORCHWIN_TEST_WINEPREFIX")
pytestmark = pytest.mark.skipif(not (WINE and WINEPREFIX),
                                reason="opt-in: needs Wine and TORCHWIN_TEST_WINEPREFIX (see the docstring)")

VS_DIR = r"C:\Program Files (x86)\Microsoft Visual Studio\2017\BuildTools"

FAKE_VCVARSALL = r"""@echo off
rem Stand-in for VS2017's vcvarsall.bat: sets what the real one sets for the toolset asked for.
echo [%*] >> "%FAKE_VCVARS_LOG%"
set "_FAKE_VER="
:args
if "%~1"=="" goto :args_done
rem cmd splits -vcvars_ver=14.11 at the "=" into two arguments
if "%~1"=="-vcvars_ver" set "_FAKE_VER=%~2"
shift
goto :args
:args_done
if "%FAKE_VCVARS_IGNORES_VER%"=="1" set "_FAKE_VER="
set "_FAKE_TOOLS=%~dp0..\..\Tools\MSVC"
set "_FAKE_FOUND="
rem (`dir` rather than `for /d`: Wine's for /d ignores quoted patterns)
set "_FAKE_PATTERN=%_FAKE_TOOLS%\*"
if defined _FAKE_VER set "_FAKE_PATTERN=%_FAKE_TOOLS%\%_FAKE_VER%.*"
for /f "delims=" %%d in ('dir /b /ad "%_FAKE_PATTERN%" 2^>nul') do set "_FAKE_FOUND=%%d"
if defined _FAKE_FOUND goto :found
echo [ERROR:vcvars.bat] Toolset directory for version '%_FAKE_VER%' was not found.
exit /b 1
:found
set "VCToolsVersion=%_FAKE_FOUND%"
set "VSCMD_ARG_TGT_ARCH=%1"
set "VSINSTALLDIR=C:\Program Files (x86)\Microsoft Visual Studio\2017\BuildTools\"
set "VCINSTALLDIR=C:\Program Files (x86)\Microsoft Visual Studio\2017\BuildTools\VC\"
set "INCLUDE=C:\fake-vs\include;%INCLUDE%"
set "LIB=C:\fake-vs\lib;%LIB%"
set "PATH=C:\fake-vs\MSVC\%_FAKE_FOUND%\bin\HostX64\x64;C:\fake-vs\Windows Kits (10)\bin;%PATH%"
set "_FAKE_VER="
set "_FAKE_TOOLS="
set "_FAKE_PATTERN="
set "_FAKE_FOUND="
rem The real one may change directory (to %USERPROFILE%\source); activation must not let that leak.
cd /d C:\windows
exit /b 0
"""


def crlf(text):
    return text.replace("\r\n", "\n").replace("\n", "\r\n")


def winpath(path: Path) -> str:
    """Wine maps the Linux root to drive Z:."""
    return "Z:" + str(path).replace("/", "\\")


@pytest.fixture(scope="module")
def win_prefix(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wine")
    channel = tmp / "channel"
    # Two calls: a --variant key drops the variants without it, and vs2017's have no cuda_compiler_version.
    assert main(["build", str(ROOT / "recipes" / "vs2017"), "--target-platform", "win-64",
                 "--channel-dir", str(channel)]) == 0
    assert main(["build", str(ROOT / "recipes" / "nvcc"), "--target-platform", "win-64", "--channel-dir",
                 str(channel), "--variant", "cuda_compiler_version=9.0"]) == 0
    prefix = tmp / "env"
    records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel.as_uri())],
                                        specs=["vs2017_win-64", "nvcc_win-64"],
                                        platforms=["win-64", "noarch"], virtual_packages=[]))
    asyncio.run(rattler.install(records, prefix, platform=rattler.Subdir("win-64"), cache_dir=tmp / "pkgs",
                                show_progress=False))
    return prefix


@pytest.fixture
def fake_vs():
    """A VS2017 Build Tools layout in the Wine prefix, with toolsets 14.11 and 14.16; removed afterwards."""
    root = Path(WINEPREFIX) / "drive_c" / "Program Files (x86)" / "Microsoft Visual Studio"
    if root.exists():
        pytest.fail(f"{root} exists: TORCHWIN_TEST_WINEPREFIX must be a prefix used only for these tests")
    vs = root / "2017" / "BuildTools"
    (vs / "VC" / "Auxiliary" / "Build").mkdir(parents=True)
    (vs / "VC" / "Auxiliary" / "Build" / "vcvarsall.bat").write_bytes(crlf(FAKE_VCVARSALL).encode("ascii"))
    for toolset in ("14.11.25503", "14.16.27023"):
        (vs / "VC" / "Tools" / "MSVC" / toolset).mkdir(parents=True)
    yield vs
    shutil.rmtree(root)


class Session:
    def __init__(self, out: Path, proc):
        self.output = proc.stdout + proc.stderr
        self.rc = dict(line.split("=", 1) for line in read(out / "rc").split())
        self.rc = {k: int(v) for k, v in self.rc.items()}
        self.snaps = {p.name: parse_set(read(p)) for p in out.iterdir() if p.name.startswith("env")}
        log = out / "vcvars.log"
        self.vcvars_calls = [line.strip() for line in read(log).splitlines()] if log.exists() else []


def read(path: Path) -> str:
    return path.read_bytes().decode("latin-1").replace("\r\n", "\n")


def parse_set(text):
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def cmd_session(tmp_path, body, env=None):
    """Run `body` (batch lines) in Wine's cmd; `snap N` saves the environment, `status STEP` the exit code."""
    out = tmp_path / "out"
    out.mkdir()
    lines = [
        "@echo off",
        r"set PATH=C:\windows\system32;C:\windows;C:\env\Library\bin",
        r"set INCLUDE=C:\mine\include",
        'set "FAKE_VCVARS_LOG={}"'.format(winpath(out / "vcvars.log")),
        f'cd /d "{winpath(tmp_path)}"',
    ]
    for line in body.strip().splitlines():
        if line.startswith("snap "):
            lines.append('set > "{}"'.format(winpath(out / ("env" + line.split()[1]))))
        elif line.startswith("status "):
            lines.append('echo {}=%ERRORLEVEL% >> "{}"'.format(line.split()[1], winpath(out / "rc")))
        else:
            lines.append(line)
    script = tmp_path / "session.bat"
    script.write_bytes(crlf("\n".join(lines) + "\n").encode("ascii"))
    full_env = dict(os.environ, WINEPREFIX=WINEPREFIX, WINEDEBUG="-all", **(env or {}))
    proc = subprocess.run([WINE, "cmd", "/c", winpath(script)], env=full_env, capture_output=True, text=True,
                          timeout=300, check=False)
    return Session(out, proc)


def vs_scripts(prefix):
    return {"ACT": winpath(prefix / "etc/conda/activate.d/vs2017_win-64_activate.bat"),
            "DEACT": winpath(prefix / "etc/conda/deactivate.d/vs2017_win-64_deactivate.bat")}


CYCLE = """\
snap 0
call "{ACT}"
status activate
echo cd=%CD%> "{OUT}\\cd.txt"
snap 1
call "{ACT}"
status again
snap 2
call "{DEACT}"
status deactivate
snap 3
"""


def cycle(prefix, tmp_path):
    return CYCLE.format(OUT=winpath(tmp_path / "out"), **vs_scripts(prefix))


def test_activate_twice_then_deactivate(win_prefix, fake_vs, tmp_path):
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path))
    assert run.rc == {"activate": 0, "again": 0, "deactivate": 0}, run.output
    assert run.vcvars_calls == ["[x64 -vcvars_ver=14.11]"], "vcvarsall runs once, for toolset 14.11"
    before, active = run.snaps["env0"], run.snaps["env1"]
    assert active["VCToolsVersion"] == "14.11.25503"
    assert (active["DISTUTILS_USE_SDK"], active["MSSdk"], active["CMAKE_GENERATOR"]) == ("1", "1", "Ninja")
    assert active["INCLUDE"] == r"C:\fake-vs\include;C:\mine\include"
    assert active["PATH"].startswith("C:\\fake-vs\\MSVC\\14.11.25503\\bin\\HostX64\\x64;")
    assert active["PATH"].endswith(";" + before["PATH"])
    assert read(tmp_path / "out" / "cd.txt").strip() == "cd=" + winpath(tmp_path), "the current folder stays"
    assert run.snaps["env2"] == active, "a second activation changes nothing"
    assert run.snaps["env3"] == before, "deactivation restores the environment"


def test_a_missing_toolset_stops_with_the_component_to_add(win_prefix, fake_vs, tmp_path):
    shutil.rmtree(fake_vs / "VC" / "Tools" / "MSVC" / "14.11.25503")
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path))
    assert run.rc == {"activate": 1, "again": 1, "deactivate": 0}
    assert run.vcvars_calls == []
    assert (f"MSVC toolset 14.11 is not installed in \"{VS_DIR}\"") in run.output
    assert (f'vs_installer.exe" modify --installPath "{VS_DIR}" '
            "--add Microsoft.VisualStudio.Component.VC.Tools.14.11") in run.output
    assert run.snaps["env0"] == run.snaps["env1"] == run.snaps["env3"]


def test_the_newer_toolset_only_when_allowed(win_prefix, fake_vs, tmp_path):
    shutil.rmtree(fake_vs / "VC" / "Tools" / "MSVC" / "14.11.25503")
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path), {"TORCHWIN_ALLOW_NEWER_MSVC": "1"})
    assert run.rc == {"activate": 0, "again": 0, "deactivate": 0}
    assert "warning: MSVC toolset 14.11 is not installed" in run.output
    assert run.vcvars_calls == ["[x64 ]"]
    assert run.snaps["env1"]["VCToolsVersion"] == "14.16.27023"
    assert run.snaps["env3"] == run.snaps["env0"]


def test_the_toolset_can_be_chosen(win_prefix, fake_vs, tmp_path):
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path), {"TORCHWIN_VCVARS_VER": "14.16"})
    assert run.rc["activate"] == 0
    assert run.vcvars_calls == ["[x64 -vcvars_ver=14.16]"]
    assert run.snaps["env1"]["VCToolsVersion"] == "14.16.27023"


def test_a_vcvarsall_that_ignores_the_toolset_is_caught_and_undone(win_prefix, fake_vs, tmp_path):
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path), {"FAKE_VCVARS_IGNORES_VER": "1"})
    assert run.rc["activate"] == 1
    assert 'did not set up toolset 14.11 (exit code 0, VCToolsVersion "14.16.27023")' in run.output
    assert run.snaps["env1"] == run.snaps["env0"], "what vcvarsall set is rolled back"


def test_no_visual_studio_2017(win_prefix, fake_vs, tmp_path):
    shutil.rmtree(fake_vs)
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path))
    assert run.rc["activate"] == 1
    assert "Visual Studio 2017 with the C++ build tools was not found" in run.output
    assert run.snaps["env1"] == run.snaps["env0"]


def test_deactivation_keeps_what_conda_changed_in_path(win_prefix, fake_vs, tmp_path):
    scripts = vs_scripts(win_prefix)
    body = """\
snap 0
call "{ACT}"
status activate
rem what conda does before it runs deactivation scripts: drop the environment's folders from PATH
call set "PATH=%%PATH:;C:\\env\\Library\\bin=%%"
call "{DEACT}"
status deactivate
snap 3
""".format(**scripts)
    run = cmd_session(tmp_path, body)
    assert run.rc == {"activate": 0, "deactivate": 0}
    assert run.snaps["env3"]["PATH"] == r"C:\windows\system32;C:\windows"
    assert run.snaps["env3"]["INCLUDE"] == r"C:\mine\include"


def test_a_prompt_already_set_up_for_the_toolset_is_kept(win_prefix, fake_vs, tmp_path):
    run = cmd_session(tmp_path, cycle(win_prefix, tmp_path),
                      {"VSCMD_ARG_TGT_ARCH": "x64", "VCToolsVersion": "14.11.25503"})
    assert run.rc["activate"] == 0
    assert run.vcvars_calls == []
    assert run.snaps["env1"]["CMAKE_GENERATOR"] == "Ninja"
    assert run.snaps["env3"] == run.snaps["env0"]


FAKE_VSWHERE = r"""@echo off
rem Stand-in for vswhere.exe: records its arguments, answers with an installation folder.
echo [%*] >> "%FAKE_VCVARS_LOG%"
echo C:\Program Files (x86)\Microsoft Visual Studio\Custom\BuildTools
"""


def test_vswhere_is_asked_for_a_vs2017_with_the_cpp_tools(win_prefix, fake_vs, tmp_path):
    custom = fake_vs.parent.parent / "Custom" / "BuildTools"
    custom.parent.mkdir()
    fake_vs.rename(custom)
    installer = fake_vs.parent.parent / "Installer"
    installer.mkdir()
    (installer / "vswhere.bat").write_bytes(crlf(FAKE_VSWHERE).encode("ascii"))
    # Wine cannot run Microsoft's vswhere.exe: the script under test calls the stand-in vswhere.bat instead.
    act = tmp_path / "vs2017_activate.bat"
    act.write_bytes((win_prefix / "etc/conda/activate.d/vs2017_win-64_activate.bat").read_bytes()
                    .replace(b"vswhere.exe", b"vswhere.bat"))
    run = cmd_session(tmp_path, f'call "{winpath(act)}"\nstatus activate\nsnap 1')
    assert run.rc == {"activate": 0}, run.output
    assert run.vcvars_calls == [
        '[-version "[15,16)" -latest -products * '
        "-requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 -property installationPath]",
        "[x64 -vcvars_ver=14.11]",
    ]
    assert run.snaps["env1"]["VCToolsVersion"] == "14.11.25503"


NVCC_BAT = """@echo off
echo nvcc: NVIDIA (R) Cuda compiler driver
echo Copyright (c) 2005-2017 NVIDIA Corporation
echo Built on Fri_Sep__1_21:08:03_CDT_2017
echo Cuda compilation tools, release {version}, V{full}
"""


@pytest.mark.parametrize("version,full", [("9.0", "9.0.176"), ("13.0", "13.0.88")])
def test_nvcc_activation(win_prefix, tmp_path, version, full):
    home = tmp_path / "cuda" / ("v" + version)
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc.bat").write_bytes(crlf(NVCC_BAT.format(version=version, full=full)).encode("ascii"))
    # Wine cannot run NVIDIA's nvcc.exe: the script under test calls the stand-in nvcc.bat instead.
    act = tmp_path / "nvcc_activate.bat"
    act.write_bytes((win_prefix / "etc/conda/activate.d/~nvcc_win-64_activate.bat").read_bytes()
                    .replace(b"nvcc.exe", b"nvcc.bat"))
    deact = win_prefix / "etc/conda/deactivate.d/~nvcc_win-64_deactivate.bat"
    body = """\
snap 0
call "{act}"
status activate
snap 1
call "{act}"
status again
snap 2
call "{deact}"
status deactivate
snap 3
""".format(act=winpath(act), deact=winpath(deact))
    run = cmd_session(tmp_path, body, {"CUDA_PATH_V9_0": winpath(home), "CUDA_PATH": r"C:\old-cuda"})
    before = run.snaps["env0"]
    if version == "9.0":
        assert run.rc == {"activate": 0, "again": 0, "deactivate": 0}, run.output
        active = run.snaps["env1"]
        for name in ("CUDA_HOME", "CUDA_PATH", "CUDA_TOOLKIT_ROOT_DIR"):
            assert active[name] == winpath(home)
        assert active["PATH"] == winpath(home) + "\\bin;" + before["PATH"]
        assert run.snaps["env2"] == active
    else:
        assert run.rc == {"activate": 1, "again": 1, "deactivate": 0}
        assert (f"the CUDA toolkit at {winpath(home)} (from CUDA_PATH_V9_0) is CUDA 13.0, "
                "but this package is for CUDA 9.0") in run.output
        assert run.snaps["env1"] == before
    assert run.snaps["env3"] == before

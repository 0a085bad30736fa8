"""Windows probes for `torchwin doctor`: 64-bit Windows, long paths, Visual Studio 2017, its MSVC toolset, the SDK.

Visual Studio is found the way the build's vcvars activation finds it (vswhere, then the standard
folders); a FAIL names the Build Tools installer command that adds what is missing. Also the length
of PATH, which cmd.exe and vcvarsall.bat limit.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from torchwin.doctor.host_probes import FAIL, OK, WARN, Check, version_key

# CUDA versions whose nvcc refuses every VS2017 compiler after toolset 14.11 (VS2017 15.4); VS2017
# 15.5+ must add the side-by-side 14.11 toolset and activate it with `vcvarsall.bat x64 -vcvars_ver=14.11`.
MSVC_TOOLSET_FOR_CUDA = {"9.0": "14.11", "9.1": "14.11"}
MSVC_TOOLSET_COMPONENT = "Microsoft.VisualStudio.Component.VC.Tools.{}"

# cmd.exe refuses a command line longer than 8191 characters ("The input line is too long"), and
# `set PATH=...;%PATH%` is such a line. vcvarsall.bat adds about 1,500-2,000 characters to PATH.
CMD_LINE_LIMIT = 8191
VCVARS_PATH_GROWTH = 2000

VS2017_EDITIONS = ("BuildTools", "Community", "Professional", "Enterprise")
VS_BUILDTOOLS_URL = "https://aka.ms/vs/15/release/vs_buildtools.exe"
WINDOWS_SDK_URL = "https://developer.microsoft.com/windows/downloads/windows-sdk/"
WINDOWS_SDK_COMPONENT = "Microsoft.VisualStudio.Component.Windows10SDK.17763"
LONGPATHS_KEY = r"SYSTEM\CurrentControlSet\Control\FileSystem"


def _program_files_x86(host):
    return host.getenv("ProgramFiles(x86)")


def vs_installer_command(host, install_path, *components):
    """The exact `vs_installer.exe modify` line that adds components (or passes --options) to one install."""
    base = _program_files_x86(host) or r"C:\Program Files (x86)"
    installer = Path(base) / "Microsoft Visual Studio" / "Installer" / "vs_installer.exe"
    adds = " ".join(c if c.startswith("--") else "--add " + c for c in components)
    return f'"{installer}" modify --installPath "{install_path}" {adds} --passive'


def check_windows_64(host):
    name = "64-bit Windows"
    if not host.windows:
        return Check(
            name,
            FAIL,
            f"this host is {host.system}, not Windows: win-64 packages are built on Windows (variants.yaml "
            "selectors are evaluated for the machine that builds); the Windows probes below ran "
            "as far as they can here",
            "run `torchwin doctor` and the build on 64-bit Windows 10 / Windows Server 2016 or newer",
        )
    arch = host.getenv("PROCESSOR_ARCHITEW6432") or host.getenv("PROCESSOR_ARCHITECTURE") or host.machine
    if arch.upper() == "AMD64":
        return Check(name, OK, f"Windows on {arch}")
    return Check(
        name,
        FAIL,
        f"Windows on {arch}: win-64 packages need 64-bit Windows on an x86-64 (AMD64) machine",
        "build on 64-bit Windows 10 / Windows Server 2016 or newer on an x86-64 machine",
    )


def check_windows_longpaths(host):
    value = host.read_registry(LONGPATHS_KEY, "LongPathsEnabled")
    shown = "unset" if value is None else value
    found = f"HKLM\\{LONGPATHS_KEY}\\LongPathsEnabled = {shown}"
    if value == 1:
        return Check("Windows long paths", OK, found)
    return Check(
        "Windows long paths",
        WARN,
        found + ": Python and CMake cannot open files under paths over 260 characters",
        f'in an administrator PowerShell: New-ItemProperty -Path "HKLM:\\{LONGPATHS_KEY}" '
        "-Name LongPathsEnabled -Value 1 -PropertyType DWORD -Force",
    )


@dataclasses.dataclass(frozen=True)
class VSInstall:
    path: Path
    name: str
    version: str
    how: str  # "vswhere" or "folder"

    @property
    def vcvarsall(self):
        return self.path / "VC" / "Auxiliary" / "Build" / "vcvarsall.bat"

    def toolsets(self):
        """The MSVC toolset versions installed, e.g. ['14.11.25503', '14.16.27023']."""
        root = self.path / "VC" / "Tools" / "MSVC"
        if not root.is_dir():
            return []
        return sorted((p.name for p in root.iterdir() if p.is_dir()), key=version_key)

    def has_toolset(self, toolset):
        if any(v == toolset or v.startswith(toolset + ".") for v in self.toolsets()):
            return True
        # The side-by-side toolset's marker that `vcvarsall -vcvars_ver=14.11` reads.
        build = self.path / "VC" / "Auxiliary" / "Build"
        marker = f"Microsoft.VCToolsVersion.{toolset}.txt"
        return (build / toolset / marker).is_file() or (build / marker).is_file()


def vswhere_path(host):
    base = _program_files_x86(host)
    if not base:
        return None
    return Path(base) / "Microsoft Visual Studio" / "Installer" / "vswhere.exe"


def parse_vswhere(text):
    """The instances in vswhere's default text output: a list of {key: value} dicts.

    Each instance is a block of `key: value` lines starting with `instanceId`; the logo lines
    (without -nologo) have no such key and are skipped.
    """
    instances = []
    current = None
    for line in text.splitlines():
        match = re.match(r"^(\w+): ?(.*)$", line.strip())
        if not match:
            continue
        key, value = match.groups()
        if key == "instanceId" or current is None:
            current = {}
            instances.append(current)
        current[key] = value.strip()
    return [i for i in instances if i.get("installationPath")]


def find_vs2017(host):
    """VS2017 installs: those vswhere reports, then the standard folders vswhere missed."""
    base = _program_files_x86(host)
    if not base:
        return [], ["ProgramFiles(x86) is not set, so there is no vswhere or Visual Studio folder to look in"]
    installs = []
    notes = []
    vswhere = vswhere_path(host)
    if vswhere.is_file():
        # -products * : Build Tools are not a "product" vswhere lists by default.
        output = host.run([vswhere, "-nologo", "-products", "*", "-version", "[15.0,16.0)"])
        if output is None:
            notes.append(f"{vswhere} did not run")
        else:
            for item in parse_vswhere(output):
                installs.append(
                    VSInstall(
                        Path(item["installationPath"]),
                        item.get("displayName", "Visual Studio 2017"),
                        item.get("installationVersion", ""),
                        "vswhere",
                    )
                )
            if not installs:
                notes.append("vswhere -version [15.0,16.0) found none")
    else:
        notes.append(f"no vswhere at {vswhere}")
    seen = {str(i.path).lower().rstrip("\\/") for i in installs}
    for edition in VS2017_EDITIONS:
        folder = Path(base) / "Microsoft Visual Studio" / "2017" / edition
        if folder.is_dir() and str(folder).lower() not in seen:
            installs.append(VSInstall(folder, "Visual Studio 2017 " + edition, "", "folder"))
    if not any(i.how == "folder" for i in installs):
        editions = ",".join(VS2017_EDITIONS)
        notes.append(f"no folder {Path(base) / 'Microsoft Visual Studio' / '2017'}{os.sep}{{{editions}}}")
    return installs, notes


def check_vs2017(host, installs, notes):
    name = "Visual Studio 2017"
    if not installs:
        return Check(
            name,
            FAIL,
            "no Visual Studio 2017: " + "; ".join(notes),
            "install the VS2017 Build Tools with the C++ tools: vs_buildtools.exe --add "
            "Microsoft.VisualStudio.Workload.VCTools --includeRecommended --passive "
            f"(download {VS_BUILDTOOLS_URL})",
        )
    with_cpp = [i for i in installs if i.vcvarsall.is_file()]
    if not with_cpp:
        first = installs[0]
        return Check(
            name,
            FAIL,
            f"{first.name} at {first.path} has no C++ tools (no VC\\Auxiliary\\Build\\vcvarsall.bat)",
            vs_installer_command(
                host, first.path, "Microsoft.VisualStudio.Workload.VCTools", "--includeRecommended"
            ),
        )
    best = with_cpp[0]
    version = f" {best.version}" if best.version else ""
    return Check(name, OK, f"{best.name}{version} at {best.path} (found by {best.how})")


def check_msvc_toolset(host, installs, cuda):
    """CUDA 9.0/9.1 need the MSVC 14.11 toolset; newer VS2017 compilers make nvcc fail."""
    toolset = MSVC_TOOLSET_FOR_CUDA[cuda]
    name = f"MSVC {toolset} toolset"
    component = MSVC_TOOLSET_COMPONENT.format(toolset)
    activate = f"`vcvarsall.bat x64 -vcvars_ver={toolset}`"
    usable = [i for i in installs if i.vcvarsall.is_file()]
    for install in usable:
        if install.has_toolset(toolset):
            versions = [v for v in install.toolsets() if v.startswith(toolset + ".")]
            version = versions[0] if versions else toolset
            return Check(name, OK, f"{version} in {install.path} (activate with {activate})")
    if not usable:
        return Check(
            name,
            FAIL,
            f"CUDA {cuda} needs the MSVC {toolset} toolset and there is no VS2017 with C++ tools to hold it",
            f"vs_buildtools.exe --add Microsoft.VisualStudio.Workload.VCTools --add {component} "
            f"--includeRecommended --passive (download {VS_BUILDTOOLS_URL})",
        )
    install = usable[0]
    have = ", ".join(install.toolsets()) or "none"
    return Check(
        name,
        FAIL,
        f"CUDA {cuda}'s nvcc accepts MSVC up to toolset {toolset} (VS2017 15.4); "
        f"{install.path} has toolsets: {have}",
        f"{vs_installer_command(host, install.path, component)}; then activate with {activate}",
    )


def check_windows_sdk(host, installs):
    roots = []
    if host.getenv("WindowsSdkDir"):
        roots.append(Path(host.getenv("WindowsSdkDir")))
    if _program_files_x86(host):
        roots.append(Path(_program_files_x86(host)) / "Windows Kits" / "10")
    found = []
    for root in roots:
        include = root / "Include"
        if include.is_dir():
            found += [p for p in include.glob("10.*") if (p / "um").is_dir()]
    if found:
        newest = max(found, key=lambda p: version_key(p.name))
        return Check("Windows 10 SDK", OK, f"{newest.name} at {newest.parent.parent}")
    looked = (
        "in " + ", ".join(str(r / "Include" / "10.*") for r in roots)
        if roots
        else "to look for: ProgramFiles(x86) and WindowsSdkDir are unset"
    )
    usable = [i for i in installs if i.vcvarsall.is_file()]
    if usable:
        fix = vs_installer_command(host, usable[0].path, WINDOWS_SDK_COMPONENT)
    else:
        fix = f"install it with VS2017 (component {WINDOWS_SDK_COMPONENT}) or from {WINDOWS_SDK_URL}"
    return Check("Windows 10 SDK", FAIL, "no Windows 10 SDK headers " + looked, fix)


def check_path_length(host):
    length = len(host.getenv("PATH"))
    found = (
        f"PATH is {length} characters (cmd's line limit is {CMD_LINE_LIMIT}; "
        f"activating VS2017 adds about {VCVARS_PATH_GROWTH})"
    )
    fix = (
        "open a fresh cmd window and activate once; drop PATH entries you do not need; "
        'long entries can be shortened to 8.3 names (`for %I in ("C:\\Program Files") do @echo %~sI`)'
    )
    if length > CMD_LINE_LIMIT:
        return Check("PATH length", FAIL, found + ": cmd fails with 'The input line is too long'", fix)
    if length + VCVARS_PATH_GROWTH > CMD_LINE_LIMIT:
        return Check("PATH length", WARN, found + ": vcvarsall.bat will overflow it", fix)
    return Check("PATH length", OK, found)

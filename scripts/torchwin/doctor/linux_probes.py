"""Linux probes for `torchwin doctor`: a host gcc the CUDA version's nvcc accepts, and MKL."""

from __future__ import annotations

import re
from pathlib import Path

from torchwin.doctor.host_probes import FAIL, OK, WARN, Check

# The newest gcc major version each CUDA's nvcc accepts as host compiler: above it nvcc's
# include/crt/host_config.h stops with "unsupported GNU version!". Versions missing here are read
# from the host_config.h of the toolkit found, when that toolkit is the one asked for.
# The one home of this table in torchwin (the nvcc recipe keeps its own copy in a recipe file for
# now; the two are to be unified).
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

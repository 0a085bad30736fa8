"""Build driver of recipes/magma: configure MAGMA with CMake, compile it, install it into the package.

Usage:
    python build_magma.py [--plan [--json] [--platform win-64|linux-64]]

bld.bat and build.sh only call this file. It reads what the recipe and the engine put in the
environment (TORCHWIN_CUDA_VERSION, SRC_DIR, PREFIX, LIBRARY_PREFIX on Windows, CPU_COUNT, and
CUDA_HOME / CUDA_PATH that our nvcc package's activation exports), works out one CMake configure,
build and install command, and runs them, stopping at the first that fails. With --plan it prints
the environment and the commands and compiles nothing.

Why no patches to MAGMA's CMakeLists.txt (pytorch/builder patched it): every change builder made
there is a CMake option here (see cmake_options). Bad input ends with one line and exit 2; a
failed command with exit 1. It runs under the build environment's Python: keep it Python 3.5.
"""

# ruff: noqa: UP031
# %-formatting: this file must stay valid Python 3.5.

import argparse
import json
import os
import subprocess
import sys

PLATFORMS = ("win-64", "linux-64")

# GPU code MAGMA is compiled for: what pytorch/builder's magma-cuda90/-cuda92 2.5.0 packages
# built ("All" in their CMakeLists patch: sm_35 sm_50 sm_60 sm_61 sm_70), plus sm_30: one package
# serves every pytorch release, and 0.4.0-1.0.1 compile torch for compute capability 3.0
# (upstream/<release>.json cuda_arch.oldest), so MAGMA's GPU calls must run there too (builder's
# 2.3.0 set MIN_ARCH 300 but compiled no sm_30 code). MAGMA adds PTX for the highest one, so newer
# GPUs still run it through the JIT. CUDA 8.0 knows no sm_70.
GPU_TARGETS = {
    "8.0": "sm_30 sm_35 sm_50 sm_60 sm_61",
    "9.0": "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70",
    "9.1": "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70",
    "9.2": "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70",
}

# Installed library per platform: what the package test loads and what the driver checks for.
LIBRARY = {"win-64": ("bin", "magma.dll"), "linux-64": ("lib", "libmagma.so")}


class UsageError(Exception):
    """Bad input from the environment: exit 2 with one line."""


def join(is_windows, *parts):
    """Join a path for the target platform, whatever platform plans it."""
    sep = "\\" if is_windows else "/"
    return sep.join([parts[0].rstrip("\\/")] + [p.strip("\\/") for p in parts[1:]])


def require(environ, name, why):
    value = environ.get(name, "")
    if not value:
        raise UsageError("%s is not set; %s" % (name, why))
    return value


def cmake_options(cuda, install_prefix, cuda_home, mkl_library, is_windows):
    """The configure options; each replaces a patch builder applied, or says why it is there."""
    options = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DCMAKE_INSTALL_PREFIX=" + install_prefix,
        "-DCMAKE_PREFIX_PATH=" + install_prefix,
        # A shared library: conda packages share it (pytorch links it, the test loads it with ctypes).
        "-DBUILD_SHARED_LIBS=ON",
        # No Fortran compiler in the toolchain; MAGMA then uses its C fallbacks (as builder did).
        "-DUSE_FORTRAN=OFF",
        "-DGPU_TARGET=" + GPU_TARGETS[cuda],
        "-DCUDA_TOOLKIT_ROOT_DIR=" + cuda_home,
        # MKL from the host env instead of CMake's LAPACK search (builder commented that search out).
        # mkl_rt is MKL's single dynamic library: its threading layer is the intel-openmp pytorch uses.
        "-DLAPACK_LIBRARIES=" + mkl_library,
        # No OpenMP runtime of the compiler (libgomp/vcomp) next to MKL's intel-openmp: builder removed
        # MAGMA's OpenMP search for that.
        "-DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON",
        # Smaller fat binaries, as builder's patch had it; MAGMA appends its own flags to these.
        "-DCUDA_NVCC_FLAGS=-Xfatbin;-compress-all",
    ]
    if is_windows:
        # MAGMA marks no symbol for export; without this the DLL would export nothing to link against.
        options.append("-DCMAKE_WINDOWS_EXPORT_ALL_SYMBOLS=ON")
    return options


def plan(environ, platform):
    """{"env": {...}, "commands": [[...], ...], "library": path} for this variant, or UsageError."""
    if platform not in PLATFORMS:
        raise UsageError("unknown platform %r; allowed: %s" % (platform, ", ".join(PLATFORMS)))
    is_windows = platform == "win-64"
    cuda = require(environ, "TORCHWIN_CUDA_VERSION", "the recipe passes the variant's CUDA version")
    if cuda not in GPU_TARGETS:
        raise UsageError("TORCHWIN_CUDA_VERSION=%s: MAGMA is built for CUDA %s only"
                         % (cuda, ", ".join(sorted(GPU_TARGETS))))
    src_dir = require(environ, "SRC_DIR", "the engine sets it to the unpacked MAGMA source")
    # conda packages keep a Windows library's files under Library\ (bin, lib, include).
    prefix_name = "LIBRARY_PREFIX" if is_windows else "PREFIX"
    install_prefix = require(environ, prefix_name, "the engine sets it to the package's install prefix")
    cuda_home = environ.get("CUDA_HOME") or environ.get("CUDA_PATH") or ""
    if not cuda_home:
        raise UsageError("CUDA_HOME and CUDA_PATH are not set; the nvcc %s package's activation sets them "
                         "(is it in the recipe's build requirements?)" % cuda)
    if is_windows:
        mkl_library = join(True, install_prefix, "lib", "mkl_rt.lib")
    else:
        mkl_library = join(False, install_prefix, "lib", "libmkl_rt.so")
    jobs = environ.get("CPU_COUNT") or "1"
    if not jobs.isdigit() or int(jobs) < 1:
        raise UsageError("CPU_COUNT=%s: expected a whole number of 1 or more" % jobs)
    build_dir = join(is_windows, src_dir, "build-torchwin")
    commands = [
        ["cmake", "-S", src_dir, "-B", build_dir, "-G", "Ninja"]
        + cmake_options(cuda, install_prefix, cuda_home, mkl_library, is_windows),
        # Only the two libraries: MAGMA's default target also builds its ~400 testers.
        ["cmake", "--build", build_dir, "--target", "magma", "magma_sparse", "--parallel", jobs],
        # Installs the libraries and headers and builds nothing more (unlike the install target).
        ["cmake", "--install", build_dir],
    ]
    folder, name = LIBRARY[platform]
    return {
        "platform": platform,
        "cuda": cuda,
        # Where our own nvcc comes first (its activation put it on PATH) and CMake finds MKL's headers.
        "env": {"CUDA_HOME": cuda_home, "MKLROOT": install_prefix},
        "commands": commands,
        "library": join(is_windows, install_prefix, folder, name),
    }


def print_plan(result, out):
    out.write("torchwin magma driver: MAGMA for CUDA %s (%s)\n" % (result["cuda"], result["platform"]))
    for key in sorted(result["env"]):
        out.write("  %s=%s\n" % (key, result["env"][key]))
    for command in result["commands"]:
        out.write("  command: %s\n" % " ".join(command))
    out.write("  installs: %s\n" % result["library"])
    out.flush()


def run(result, environ, call=subprocess.call, exists=os.path.exists):
    """Run the plan's commands in order; 0, or 1 at the first failure (with one line saying which)."""
    env = dict(environ)
    env.update(result["env"])
    for command in result["commands"]:
        code = call(command, env=env)
        if code != 0:
            sys.stderr.write("torchwin magma driver: error: `%s` failed (exit %d)\n" % (" ".join(command), code))
            return 1
    if not exists(result["library"]):
        sys.stderr.write("torchwin magma driver: error: the install did not produce %s\n" % result["library"])
        return 1
    return 0


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Build MAGMA for the CUDA version the recipe passes.")
    parser.add_argument("--plan", action="store_true", help="print the environment and commands; build nothing")
    parser.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    parser.add_argument("--platform", choices=PLATFORMS, help="plan for this platform (default: the running one)")
    args = parser.parse_args(argv)
    if (args.json or args.platform) and not args.plan:
        parser.error("--json and --platform go with --plan")
    return args


def main(argv=None, environ=None):
    args = parse_args(argv)
    environ = dict(os.environ if environ is None else environ)
    platform = args.platform or ("win-64" if sys.platform == "win32" else "linux-64")
    try:
        result = plan(environ, platform)
    except UsageError as exc:
        sys.stderr.write("torchwin magma driver: error: %s\n" % exc)
        return 2
    if args.plan:
        if args.json:
            json.dump(result, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            print_plan(result, sys.stdout)
        return 0
    print_plan(result, sys.stdout)
    return run(result, environ)


if __name__ == "__main__":
    sys.exit(main())

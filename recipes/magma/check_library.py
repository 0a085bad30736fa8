"""Package test of recipes/magma: load the installed MAGMA library with ctypes and use it.

Always: the library loads (with its CUDA, cuBLAS, cuSPARSE and MKL dependencies from the env) and
magma_version() reports TORCHWIN_EXPECT_MAGMA_VERSION. With a GPU: magma_init() succeeds and
magma_dgesv() solves a small system (MKL on the CPU, cuBLAS on the GPU). Without a GPU those two
are skipped, unless TORCHWIN_REQUIRE_CUDA=1. Exit 0 when nothing failed, 1 otherwise.
It runs under the test env's Python: keep it Python 3.5 and standard library only.
"""

# ruff: noqa: UP031
# %-formatting: this file must stay valid Python 3.5.

import ctypes
import os
import sys


def library_path(prefix, windows):
    if windows:
        return os.path.join(prefix, "Library", "bin", "magma.dll")
    return os.path.join(prefix, "lib", "libmagma.so")


def check_version(lib, expected):
    major, minor, micro = ctypes.c_int(), ctypes.c_int(), ctypes.c_int()
    lib.magma_version(ctypes.byref(major), ctypes.byref(minor), ctypes.byref(micro))
    found = "%d.%d.%d" % (major.value, minor.value, micro.value)
    if expected and found != expected:
        return "magma_version() says %s, expected %s" % (found, expected)
    print("PASS magma_version() = %s" % found)
    return ""


def check_solve(lib):
    """Solve [[4, 1], [2, 3]] x = [1, 2] with magma_dgesv: x = [0.1, 0.6]."""
    n = 2
    matrix = (ctypes.c_double * 4)(4.0, 2.0, 1.0, 3.0)  # column-major
    rhs = (ctypes.c_double * 2)(1.0, 2.0)
    pivots = (ctypes.c_int * 2)()
    info = ctypes.c_int(-1)
    status = lib.magma_dgesv(n, 1, matrix, n, pivots, rhs, n, ctypes.byref(info))
    if status != 0 or info.value != 0:
        return "magma_dgesv returned %d (info %d)" % (status, info.value)
    got = [rhs[0], rhs[1]]
    if abs(got[0] - 0.1) > 1e-12 or abs(got[1] - 0.6) > 1e-12:
        return "magma_dgesv solved to %r, expected [0.1, 0.6]" % (got,)
    print("PASS magma_dgesv solved a 2x2 system on the GPU")
    return ""


def main(environ=None, prefix=None, windows=None):
    environ = os.environ if environ is None else environ
    prefix = prefix or environ.get("PREFIX") or environ.get("CONDA_PREFIX") or sys.prefix
    windows = sys.platform == "win32" if windows is None else windows
    path = library_path(prefix, windows)
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        print("FAIL cannot load %s: %s" % (path, exc))
        return 1
    print("PASS loaded %s" % path)
    failures = []
    problem = check_version(lib, environ.get("TORCHWIN_EXPECT_MAGMA_VERSION", ""))
    if problem:
        failures.append(problem)
    status = lib.magma_init()
    if status != 0:
        # magma_init fails when the CUDA runtime finds no usable GPU (or no driver).
        message = "magma_init() returned %d: no usable GPU" % status
        if environ.get("TORCHWIN_REQUIRE_CUDA", "0") == "1":
            failures.append(message + " (TORCHWIN_REQUIRE_CUDA=1)")
        else:
            print("SKIP %s; the GPU checks need one" % message)
    else:
        problem = check_solve(lib)
        if problem:
            failures.append(problem)
        lib.magma_finalize()
    for problem in failures:
        print("FAIL %s" % problem)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

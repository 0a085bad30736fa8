"""Facts about what one upstream release links on Windows and how strictly it checks what it linked.

The MKL libraries its FindMKL.cmake looks for under MSVC, whether FindMKLDNN.cmake returns early under
MSVC, the newest MSVC its cmake/public/cuda.cmake accepts per CUDA version, and how torch checks the
cuDNN it runs with against the one it was compiled with. Each is a function of a `Tree` (one commit).
"""

from __future__ import annotations

import re

from torchwin.upstream.tree import code_lines


def _find_module(tree, name, marker):
    """The one `name` (e.g. FindMKL.cmake) the build uses: the one holding `marker`, outside third_party."""
    paths = [p for p in tree.files(lambda p: p.rsplit("/", 1)[-1] == name)
             if not p.startswith("third_party/") and marker in tree.text[p]]
    return paths[0] if len(paths) == 1 else None


def _set_values(line, variable):
    m = re.match(r"\s*SET\s*\(\s*%s\b([^)]*)\)" % variable, line, re.I)
    return re.findall(r'"([^"]*)"', m.group(1)) if m else None


def mkl(tree):
    """The MKL libraries FindMKL.cmake looks for under MSVC (threaded, 64-bit), with where it says so.

    Under MSVC (not GNU, MKL_THREADING=OMP, the default) its first combination is
    mkl_<iface><mkl64>, <thread>, mkl_core and the OpenMP runtime; without the runtime it tries the
    same three again. Each name goes to FIND_LIBRARY as is: on Windows `<name>.lib`.
    """
    path = _find_module(tree, "FindMKL.cmake", "CHECK_ALL_LIBRARIES")
    if path is None:
        return None
    at, mkl64, iface, thread, openmp = {}, None, None, None, None
    in_msvc_branch = in_msvc = False
    for number, line in code_lines(tree.text[path], "#"):
        if re.match(r"\s*ELSE\s*\(\s*CMAKE_COMPILER_IS_GNUCC\s*\)", line, re.I):
            in_msvc_branch = True
        elif re.match(r"\s*ENDIF\s*\(\s*CMAKE_COMPILER_IS_GNUCC\s*\)", line, re.I):
            in_msvc_branch = False
        if re.match(r"\s*IF\s*\(\s*MSVC\s*\)", line, re.I):
            in_msvc = True
        elif re.match(r"\s*ENDIF\s*\(\s*MSVC\s*\)", line, re.I):
            in_msvc = False
        values = _set_values(line, "mkl64s")
        if values and mkl64 is None:
            mkl64, at["mkl64s"] = values[0], "%s:%d" % (path, number)
        if not in_msvc_branch:
            continue
        values = _set_values(line, "mklthreads")
        if values and not any("tbb" in v for v in values):
            thread, at["mklthreads"] = values[0], "%s:%d" % (path, number)
        values = _set_values(line, "mklifaces")
        if values:
            iface, at["mklifaces"] = values[0], "%s:%d" % (path, number)
        values = _set_values(line, "mklrtls")
        if values and in_msvc:
            openmp, at["mklrtls"] = values[0], "%s:%d" % (path, number)
    if not (mkl64 and iface and thread and "mkl_core" in tree.text[path]):
        return {"find_module": path, "msvc_libraries": None, "msvc_openmp": None, "at": at,
                "looks_for_dll_import_libraries": False}
    return {
        "find_module": path,
        "msvc_libraries": ["mkl_%s%s" % (iface, mkl64), thread, "mkl_core"],
        "msvc_openmp": openmp,
        "at": at,
        # Intel's Windows import libraries of the MKL DLLs are named <name>_dll.lib.
        "looks_for_dll_import_libraries": "_dll" in tree.text[path],
    }


def mkldnn(tree):
    """Whether the build compiles its bundled MKL-DNN (third_party/ideep) and whether MSVC stops it."""
    path = _find_module(tree, "FindMKLDNN.cmake", "MKLDNN")
    if path is None:
        return None
    text = tree.text[path]
    returns_at = None
    lines = list(code_lines(text, "#"))
    for index, (number, line) in enumerate(lines):
        if re.match(r"\s*IF\s*\(\s*MSVC\s*\)", line, re.I):
            body = [entry for entry in lines[index + 1:index + 4]]
            if any(re.match(r"\s*RETURN\s*\(\s*\)", b) for _, b in body):
                returns_at = "%s:%d" % (path, number)
                break
    return {
        "find_module": path,
        # 0.4.x looks for an installed MKL-DNN library instead of building the bundled one.
        "bundled": "third_party/ideep" in text,
        "msvc_returns_early_at": returns_at,
    }


_MSVC_BLOCK = re.compile(r"CMAKE_CXX_COMPILER_ID\s+STREQUAL\s+\"MSVC\"")


def cuda_msvc_limits(tree):
    """Per CUDA version range, the MSVC (cl) version cmake/public/cuda.cmake refuses from, or []."""
    path = "cmake/public/cuda.cmake"
    lines = tree.text.get(path, "").splitlines()
    limits = []
    for index, line in enumerate(lines):
        if not _MSVC_BLOCK.search(line):
            continue
        block = "\n".join(lines[index:index + 3])
        version = re.search(r"CMAKE_CXX_COMPILER_VERSION\s+VERSION_LESS\s+(\d+\.\d+)", block)
        if not version or "FATAL_ERROR" not in "\n".join(lines[index:index + 6]):
            continue
        start = next((i for i in range(index, max(-1, index - 4), -1) if "VERSION_EQUAL" in lines[i]), None)
        if start is None:
            continue
        head = "\n".join(lines[start:index])
        equal = re.search(r"CUDA_VERSION\s+VERSION_EQUAL\s+(\d+\.\d+)", head)
        less = re.search(r"CUDA_VERSION\s+VERSION_LESS\s+(\d+\.\d+)", head)
        if not equal:
            continue
        cuda_below = less.group(1) if less else "%s.%d" % (equal.group(1).split(".")[0],
                                                           int(equal.group(1).split(".")[1]) + 1)
        limits.append({"cuda_from": equal.group(1), "cuda_below": cuda_below, "msvc_below": version.group(1),
                       "unless_env": "CUDAHOSTCXX" if "ENV{CUDAHOSTCXX}" in block else None,
                       "at": "%s:%d" % (path, index + 1)})
    return limits


def cudnn_version_check(tree):
    """How `torch.backends.cudnn` compares the cuDNN it loads with the one torch was compiled with.

    same_minor: major and minor must be equal (0.4.x: `version // 100` on both sides);
    minor_at_least: same major, and from cuDNN 7 on a runtime minor no older than the compiled one.
    """
    path = "torch/backends/cudnn/__init__.py"
    for number, line in code_lines(tree.text.get(path, ""), "#"):
        if re.search(r"//\s*100\s*\)\s*!=\s*\(\s*compile_version\s*//\s*100", line):
            return {"rule": "same_minor", "at": "%s:%d" % (path, number)}
        if re.search(r"runtime_minor\s*>=\s*compile_minor", line):
            return {"rule": "minor_at_least", "at": "%s:%d" % (path, number)}
    return None

"""Which compiler cache a release's build can use, read from its setup.py, tools/ and CMake files.

A cache reaches the compiles in one of two ways, and the releases differ in which one works:
- as CMake's compiler launcher (CMAKE_<LANG>_COMPILER_LAUNCHER, e.g. ccache or sccache): setup.py of
  1.2.0 on passes every CMAKE_* environment variable to cmake as -D (tools/setup_helpers/cmake.py);
  before, nothing passes it, and only a CMake new enough to read that variable from the environment
  itself (3.17, see LAUNCHER_ENV_CMAKE) picks it up;
- as the compiler (CC/CXX = clcache, which stands in for cl.exe): the Windows build with Ninja takes the
  compiler from CC/CXX (build_pytorch_libs.bat of 0.4.x-1.0.x and 1.1.0's build env default them to
  cl only when unset; CMake reads them itself later), and the bundled FindCUDA recognises a cache there
  and keeps cl as nvcc's host compiler (`MATCHES "clcache"`, sccache too from 0.4.1).
What the cache cannot reach: 0.4.x compile torch/csrc with distutils (setup.py's main_sources), which
uses cl.exe or the CC of distutils, not CMake's. Debug information must be in the objects (/Z7, not /Zi)
for clcache/sccache to cache an MSVC compile: every release arranges that (build_pytorch_libs.bat's
C_FLAGS, then CMake's MSVC_Z7_OVERRIDE).
"""

from __future__ import annotations

import re

from torchwin.upstream.tree import code_lines, is_build_file

# CMake reads CMAKE_<LANG>_COMPILER_LAUNCHER from the environment from 3.17 on (its release notes).
LAUNCHER_ENV_CMAKE = "3.17"

_PASSES_CMAKE_ENV = re.compile(r"""\.startswith\(\s*\(?[^)]*['"]CMAKE_['"]""")
_BAT_CC_DEFAULT = re.compile(r"""IF\s+"%CC%"\s*==\s*""\s+set\s+CC=""", re.I)
_PY_CC_DEFAULT = re.compile(r"""my_env\.get\(\s*['"]CC['"]""")
_FINDCUDA_MATCH = re.compile(r"CMAKE_C_COMPILER\}\"\s+MATCHES\s+\"([^\"]+)\"")
_Z7_OVERRIDE = re.compile(r"\boption\s*\(\s*MSVC_Z7_OVERRIDE\b|^\s*MSVC_Z7_OVERRIDE\s+\"", re.M)
_BAT_Z7 = re.compile(r"^\s*set\s+C_FLAGS=.*\s/Z7\b", re.I)
_MAIN_SOURCES = re.compile(r"^\s*main_sources\s*=\s*\[")


def _where(path, number):
    return "%s:%d" % (path, number)


def compiler_cache(tree):
    """The facts-table entry `compiler_cache` of one release."""
    launcher_passed, cc_honoured, findcuda, z7 = [], [], {}, []
    csrc_by_distutils = None
    for path in tree.files(is_build_file):
        text = tree.text[path]
        style = "rem" if path.endswith(".bat") else "#"
        for number, line in code_lines(text, style):
            if path.endswith(".py"):
                if path.startswith("tools/") and _PASSES_CMAKE_ENV.search(line):
                    launcher_passed.append(_where(path, number))
                if path.startswith("tools/") and _PY_CC_DEFAULT.search(line):
                    cc_honoured.append(_where(path, number))
                if path == "setup.py" and _MAIN_SOURCES.match(line):
                    csrc_by_distutils = _where(path, number)
            elif path.endswith(".bat"):
                if _BAT_CC_DEFAULT.search(line):
                    cc_honoured.append(_where(path, number))
                if _BAT_Z7.search(line):
                    z7.append(_where(path, number))
            else:
                for match in _FINDCUDA_MATCH.finditer(line):
                    names = [n for n in ("clcache", "sccache") if n in match.group(1)]
                    if names and "FindCUDA" in path:
                        findcuda.setdefault("at", _where(path, number))
                        findcuda["names"] = sorted(set(findcuda.get("names", [])) | set(names))
        if path.endswith(("CMakeLists.txt", ".cmake")):
            for match in _Z7_OVERRIDE.finditer(text):
                z7.append(_where(path, text.count("\n", 0, match.start()) + 1))
    # setup.py's main_sources lists torch/csrc's files up to 0.4.1; from 1.0.0 only a stub (CMake builds the rest).
    distutils_sources = 0
    if csrc_by_distutils:
        start = int(csrc_by_distutils.rsplit(":", 1)[1]) - 1
        body = "\n".join(tree.text["setup.py"].splitlines()[start:])
        body = body[body.index("[") + 1:body.index("]")]
        distutils_sources = len(re.findall(r"""['"]torch/csrc/[^'"]+\.cpp['"]""", body))
    return {
        "launcher_passed_by_setup": launcher_passed[0] if launcher_passed else None,
        "launcher_env_cmake": LAUNCHER_ENV_CMAKE,
        "windows_cc_honoured": cc_honoured,
        "findcuda_accepts_cache_as_compiler": findcuda.get("names", []),
        "findcuda_at": findcuda.get("at"),
        "msvc_debug_info_in_objects": sorted(set(z7))[:3],
        "torch_csrc_compiled_by_distutils": (
            {"at": csrc_by_distutils, "sources": distutils_sources} if distutils_sources > 1 else None),
    }


def cached_per_release(facts_by_release):
    """README's table (recipes/pytorch/README.md, "Compiler cache per release"): one row per release.

    Items are (release, facts) or (release, facts, windows_facts) where win-64 builds another tree (0.3:
    the fork): the Windows column is read from the tree Windows builds.
    """
    rows = ["| Release | Linux | Windows | Not cached |", "|---|---|---|---|"]
    for item in facts_by_release:
        release, facts = item[0], item[1]
        info = facts["compiler_cache"]
        win = (item[2] if len(item) > 2 else facts)["compiler_cache"]
        if info["launcher_passed_by_setup"]:
            linux = "ccache (else sccache) as CMake's launcher, passed on by %s" % info["launcher_passed_by_setup"]
        else:
            linux = ("ccache (else sccache) as CMake's launcher only with CMake >= %s (setup.py passes none)"
                     % info["launcher_env_cmake"])
        if win["launcher_passed_by_setup"]:
            windows = "sccache as CMake's launcher; else clcache as CC/CXX"
        elif not win["findcuda_at"]:
            # No bundled FindCUDA: nothing keeps cl as nvcc's host compiler when CC is a cache (the driver
            # sets no CC then).
            windows = ("sccache as CMake's launcher only with CMake >= %s; no cache as CC/CXX (bundles no "
                       "FindCUDA that keeps cl as nvcc's host compiler)" % win["launcher_env_cmake"])
        else:
            windows = ("sccache as CMake's launcher only with CMake >= %s; else clcache as CC/CXX (%s)"
                       % (win["launcher_env_cmake"], ", ".join(win["windows_cc_honoured"]) or "CMake reads CC"))
        if win["findcuda_at"] and "sccache" not in win["findcuda_accepts_cache_as_compiler"]:
            windows += "; sccache never as CC/CXX (%s knows clcache only)" % win["findcuda_at"]
        missed = ["nvcc (FindCUDA takes no launcher)"]
        distutils = info["torch_csrc_compiled_by_distutils"]
        if distutils:
            missed.insert(0, "torch/csrc, %d files compiled by distutils (%s)" % (distutils["sources"], distutils["at"]))
        rows.append("| %s | %s | %s | %s |" % (release, linux, windows, "; ".join(missed)))
    return "\n".join(rows) + "\n"

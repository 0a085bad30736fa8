"""Facts about CUDA and the Windows build tools in one upstream release's files.

How the build finds NvToolsExt (the variable it reads, the default folder, whether Windows CUDA
builds need it), whether it builds with ninja, the CUDA architectures it compiles for (and
unguarded `__ldg` calls that rule out the oldest ones) and the newest host gcc its CUDA allows.
"""

from __future__ import annotations

import re

from torchwin.upstream.facts import CMAKE_ENV, PY_ENV_READ
from torchwin.upstream.tree import (
    code_lines,
    comment_style,
    group_of,
    is_build_cmake,
    is_build_file,
    is_cuda_source,
    version_tuple,
    where_of,
)

_NVTX_NAME = re.compile(r"\w*NVTOOL\w*")
_WINDOWS_PATH = re.compile(r"['\"]([A-Za-z]:[\\/]+[^'\"]*NvToolsExt)['\"]")


def nvtoolsext(tree):
    """How a Windows CUDA build finds NvToolsExt, and what happens when it is not there."""
    env_vars, defaults, findings, files = {}, {}, [], set()
    helpers = {}  # python name computed from the env var -> defining file
    for path in tree.files(is_build_file):
        text = tree.text[path]
        if not _NVTX_NAME.search(text) and "NvToolsExt" not in text:
            continue
        for number, line in code_lines(text, comment_style(path)):
            for m in _WINDOWS_PATH.finditer(line):
                defaults.setdefault(m.group(1), []).append("%s:%d" % (path, number))
            if path.endswith(".py"):
                for m in PY_ENV_READ.finditer(line):
                    if "NVTOOL" in m.group(2):
                        env_vars.setdefault(m.group(2), set()).add(path)
                        files.add(path)
                        target = re.match(r"\s*(\w+)\s*=", line)
                        if target:
                            helpers[target.group(1)] = path
            else:
                for m in CMAKE_ENV.finditer(line):
                    if "NVTOOL" in m.group(1):
                        env_vars.setdefault(m.group(1), set()).add(path)
                        files.add(path)
    for path in tree.files(is_build_file):
        text = tree.text[path]
        if not _NVTX_NAME.search(text):
            continue
        lines = text.splitlines()
        for number, line in code_lines(text, comment_style(path)):
            if path.endswith(".py"):
                for name, home in helpers.items():
                    if path == home or name not in line:
                        continue
                    if re.search(r"\b%s\s*\+|os\.path\.join\(\s*%s\b" % (name, name), line):
                        files.add(path)
                        findings.append(("fatal-py", "%s builds a path from %s, a TypeError when it is None"
                                         % (where_of(path, number, lines), name)))
                    elif re.search(r"\[\s*['\"]\w+['\"]\s*\]\s*=\s*%s\b" % name, line):
                        files.add(path)
                        findings.append(("fatal-py", "%s puts %s into a child's environment, a TypeError "
                                         "when it is None" % (where_of(path, number, lines), name)))
            elif is_build_cmake(path):
                m = re.search(r"set\s*\(\s*(\w*NVTOOL\w*)\s+\"([^\"]+)\"", line)
                if m:
                    files.add(path)
                    findings.append(("info", "%s:%d falls back to the fixed folder %s when CMake variable %s "
                                     "is unset" % (path, number, m.group(2), m.group(1))))
                m = re.search(r"\bif\s*\(\s*DEFINED\s+ENV\{(\w*NVTOOL\w*)\}", line)
                if m:
                    files.add(path)
                    findings.append(("passed", "%s:%d takes the folder from %s when it is set"
                                     % (path, number, m.group(1))))
                if re.search(r"\bif\s*\(\s*\$ENV\{\w*NVTOOL\w*\}\s*\)", line):
                    findings.append(("info", "%s:%d tests if($ENV{...}) unquoted, which is false for a path "
                                     "(CMake reads it as a variable name)" % (path, number)))
                m = re.search(r"\$\{\w*NVTOOL\w*\}/lib/x64/(\w+\.lib)", line)
                if m:
                    files.add(path)
                    findings.append(("fatal", "%s:%d links %s from that folder, so linking fails without it"
                                     % (path, number, m.group(1))))
            elif path.endswith(".bat"):
                if re.search(r"-D\w*NVTOOL\w*=", line):
                    files.add(path)
                    findings.append(("passed", "%s:%d passes the folder setup.py found to CMake" % (path, number)))
    if helpers and not any(kind == "fatal-py" for kind, _ in findings):
        for name, home in sorted(helpers.items()):
            findings.insert(0, ("info", "no build file uses %s, which %s computes from the environment"
                                % (name, home)))
    env_var = next((n for n in sorted(env_vars) if any(p.endswith(".py") for p in env_vars[n])),
                   min(env_vars) if env_vars else None)
    default = min(defaults) if defaults else None
    sentences = [text for _, text in findings]
    if env_var:
        readers = sorted(env_vars[env_var])
        sentences.insert(0, "%s read%s %s (default %s)" % (", ".join(readers), "s" if len(readers) == 1 else "",
                                                           env_var, default))
    return {
        "env_var": env_var,
        "env_vars_read": {n: sorted(p) for n, p in sorted(env_vars.items())},
        "default_path": default,
        "default_path_at": defaults.get(default, []) if default else [],
        "required_on_windows_cuda": any(kind.startswith("fatal") for kind, _ in findings),
        # False: setting env_var changes nothing; only default_path is searched.
        "env_var_honoured": bool(env_var) and any(kind in ("fatal-py", "passed") for kind, _ in findings),
        "files": sorted(files),
        "how": ("; ".join(sentences) + ".") if sentences else "no build file mentions NvToolsExt.",
    }


def ninja(tree, env_by_group):
    """How setup.py decides whether the build uses ninja."""
    findings, files = [], set()
    module_probe = path_probe = False
    for path in tree.files(lambda p: group_of(p) in ("setup.py", "tools/setup_helpers",
                                                      "tools/build_pytorch_libs", "torch/lib/build_libs")):
        text = tree.text[path]
        lines = text.splitlines()
        for number, line in code_lines(text, comment_style(path)):
            if path.endswith(".py"):
                if re.match(r"\s*import\s+ninja\b", line):
                    module_probe = True
                    files.add(path)
                    findings.append("%s:%d imports the Python module `ninja` (ninja only when it imports)"
                                    % (path, number))
                if re.search(r"\bwhich\(\s*['\"]ninja['\"]\s*\)", line):
                    path_probe = True
                    files.add(path)
                    findings.append("%s:%d looks for a `ninja` program on PATH" % (path, number))
                if re.search(r"check_negative_env_flag\(\s*['\"]USE_NINJA['\"]", line):
                    files.add(path)
                    findings.append("%s:%d: USE_NINJA=0 turns it off" % (path, number))
                if re.search(r"\[\s*['\"]CMAKE_GENERATOR['\"]\s*\]\s*=", line):
                    files.add(path)
                    findings.append("%s sets CMAKE_GENERATOR for the build script" % where_of(path, number, lines))
            elif path.endswith(".bat"):
                m = re.search(r"%CMAKE_GENERATOR%\"\s*==\s*\"(\w+)\"", line)
                if m:
                    files.add(path)
                    findings.append("%s:%d reads CMAKE_GENERATOR (%s selects it)" % (path, number, m.group(1)))
    reads = sorted(g for g, names in env_by_group.items() if g != "cmake" and "CMAKE_GENERATOR" in names)
    return {
        "how": ("; ".join(findings) + ".") if findings else "no build file decides on ninja.",
        "files": sorted(files),
        "python_module_probe": module_probe,
        "path_probe": path_probe,
        "reads_cmake_generator": bool(reads),
        "reads_cmake_generator_in": reads,
    }


_ARCH_NUMBER = re.compile(r'"(\d\.\d)(?:\+PTX)?"')
_CAPABILITY_WARNING = re.compile(r"minimum cuda capability that we support is (\d\.\d)")
_WARNED_CAPABILITY = re.compile(r"\b(?:el)?if\s+(capability\s*==\s*\(.*?):\s*$")
_CAPABILITY_TUPLE = re.compile(r"capability\s*==\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)")
_LDG_CALL = re.compile(r"\b__ldg\s*\(")


# CUDA 9.x compiles for compute capability 3.0 and up (sm_20, Fermi, was dropped in CUDA 9).
CUDA9_OLDEST_ARCH = "3.0"


def unguarded_ldg(path, text):
    """(lines calling __ldg, compute capability >= 3.2, outside an `#if`/`#elif` on __CUDA_ARCH__,
    lines writing it into a string: kernels generated at run time, compiled for the GPU at hand)."""
    found, generated, stack = [], [], []  # stack: per open #if, whether its branch tests __CUDA_ARCH__
    for number, line in code_lines(text, "//"):
        directive = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        if directive:
            kind, rest = directive.groups()
            if kind in ("if", "ifdef", "ifndef"):
                stack.append("__CUDA_ARCH__" in rest)
            elif kind == "elif" and stack:
                stack[-1] = "__CUDA_ARCH__" in rest
            elif kind == "else" and stack:
                stack[-1] = False
            elif kind == "endif" and stack:
                stack.pop()
            continue
        call = _LDG_CALL.search(line)
        # A declaration of an overload (`__device__ Half __ldg(const Half* p)`) is not a call.
        if not call or any(stack) or re.search(r"\b(?!return\b)\w+\s+__ldg\s*\(", line):
            continue
        (generated if line[:call.start()].count('"') % 2 else found).append("%s:%d" % (path, number))
    return found, generated


def cuda_arch(tree):
    """The oldest GPU architecture this tree compiles for, with the evidence.

    What the tree allows: its CMake's own list of common architectures (FindCUDA's
    select_compute_arch.cmake, CUDA_COMMON_GPU_ARCHITECTURES) and the sources: __ldg needs
    compute capability 3.2, so a call outside an `#if __CUDA_ARCH__ ...` stops a 3.0 compile.
    The toolkit's floor (3.0 for CUDA 9.x, as for 8.0 here) is applied on top.
    """
    select = [p for p in tree.files(lambda p: p.endswith("select_compute_arch.cmake")) if "third_party" not in p]
    common, common_at = [], None
    for path in select:
        for number, line in code_lines(tree.text[path], "#"):
            if re.match(r"\s*set\s*\(\s*CUDA_COMMON_GPU_ARCHITECTURES\b", line):
                common = sorted(set(_ARCH_NUMBER.findall(line)), key=version_tuple)
                common_at = "%s:%d" % (path, number)
                break
        if common_at:
            break
    warning, warning_at, warned, warned_at = None, None, [], None
    init = tree.text.get("torch/cuda/__init__.py", "")
    for number, line in code_lines(init, "#"):
        m = _CAPABILITY_WARNING.search(line)
        if m:
            warning, warning_at = m.group(1), "torch/cuda/__init__.py:%d" % number
        # The test that decides the "too old" warning (0.4.0-1.0.1 have it without the message's 3.5).
        m = _WARNED_CAPABILITY.search(line)
        if m:
            warned = ["%s.%s" % c for c in _CAPABILITY_TUPLE.findall(m.group(1))]
            warned += ["below %s.0" % n for n in re.findall(r"\bmajor\s*<\s*(\d+)", m.group(1))]
            warned_at = "torch/cuda/__init__.py:%d" % number
    ldg, generated = [], []
    for path in tree.files(is_cuda_source):
        calls, strings = unguarded_ldg(path, tree.text[path])
        ldg += calls
        generated += strings
    floors = [CUDA9_OLDEST_ARCH] + ([common[0]] if common else []) + (["3.5"] if ldg else [])
    oldest = max(floors, key=version_tuple)
    return {
        "oldest": oldest,
        "cmake_common_oldest": common[0] if common else None,
        "cmake_common_at": common_at,
        "unguarded_ldg": ldg,
        # The JIT fuser's generated kernels: they fail at run time on a GPU below 3.2, the build does not.
        "generated_ldg": generated,
        "runtime_warning_below": warning,
        # Where torch warns "no longer supports this GPU": the message's line, else the test's.
        "runtime_warning_at": warning_at or warned_at,
        "runtime_warning_for": warned,
        "runtime_warning_test_at": warned_at,
        "how": "oldest is the newest of: CUDA 9's floor %s; the CMake common list's first, %s (%s); %s"
               % (CUDA9_OLDEST_ARCH, common[0] if common else "none", common_at or "no select_compute_arch.cmake",
                  "3.5, for %d __ldg call(s) outside an __CUDA_ARCH__ guard" % len(ldg) if ldg
                  else "no __ldg call outside an __CUDA_ARCH__ guard"),
    }


def cuda_host_gcc(tree):
    """The gcc versions the tree's CMake refuses as nvcc's host compiler, per CUDA version, or None.

    0.4.1 on: cmake/public/cuda.cmake stops CUDA 9.0/9.1 with gcc >= 6 (their std::tuple bug)
    unless CUDAHOSTCXX names another host compiler; stricter than NVIDIA's own limit (gcc 6).
    """
    path = "cmake/public/cuda.cmake"
    lines = tree.text.get(path, "").splitlines()
    for index, line in enumerate(lines):
        if "not compatible with std::tuple from GCC" not in line:
            continue
        block = "\n".join(lines[max(0, index - 10):index])
        lower = re.search(r"CUDA_VERSION\s+VERSION_EQUAL\s+(\d+\.\d+)", block)
        upper = re.search(r"CUDA_VERSION\s+VERSION_LESS\s+(\d+\.\d+)", block)
        gcc = re.search(r"CMAKE_C_COMPILER_VERSION\s+VERSION_LESS\s+(\d+(?:\.\d+)?)", block)
        if not (lower and upper and gcc):
            return None
        start = next(i for i in range(index, -1, -1) if "VERSION_EQUAL" in lines[i])
        return {
            "cuda_from": lower.group(1), "cuda_below": upper.group(1), "gcc_below": gcc.group(1),
            "unless_env": "CUDAHOSTCXX" if "CUDA_HOST_COMPILER" in block else None,
            "at": "%s:%d" % (path, start + 1),
        }
    return None

"""Build PyTorch for one variant: check the source and the host, print the plan, run it.

Called by bld.bat / build.sh with the variant's own Python (3.5+), so this file
must stay valid Python 3.5: no f-strings, no annotations. The recipe passes
the variant through TORCHWIN_* environment variables; the host (compilers,
CUDA toolkit, cuDNN, NvToolsExt, MKL in the host prefix, compiler caches) is
read from the environment and the file system. What each release needs is read
from upstream's own files, as recorded in upstream/<release>.json (written by
`torchwin upstream-facts`), never assumed.

    build_driver.py                       check, print the plan, run it (the recipe's build)
    build_driver.py --plan [--json] [--platform win-64|linux-64]
                                          check and print the plan; compile and write nothing
    build_driver.py --wheel-dir DIR       also write a wheel of the same build into DIR
                                          (`torchwin wheel`; the recipe does not ask for one)

Exit 1 with one line when the build would fail, 2 on a wrong call.
`plan()` is pure (the file system and tools are passed in) and unit-tested;
`main()` only runs what `plan()` decided.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys

# Compute capabilities compiled in. One package serves every GPU from the
# oldest the release's source allows (upstream/<release>.json `cuda_arch.oldest`:
# 3.0 Kepler where it compiles, else 3.5) to the newest the toolkit knows:
# machine code for each family's first member (sm_35 code also runs on 3.7,
# sm_50 on 5.2, sm_60 on 6.2), plus 6.1 (GeForce Pascal) as upstream shipped,
# and PTX of the newest so later GPUs JIT-compile it.
ARCH_STEPS = ("3.0", "3.5", "5.0", "6.0", "6.1", "7.0")
NEWEST_ARCH = {"8.0": "6.1", "9.0": "7.0", "9.1": "7.0", "9.2": "7.0"}
# Where a facts table predates the `cuda_arch` record: what upstream's binaries started at.
DEFAULT_OLDEST_ARCH = "3.5"


def cuda_arch_list(facts, cuda):
    """TORCH_CUDA_ARCH_LIST for this release's facts and CUDA version, e.g. `3.0;3.5;5.0;6.0;6.1;7.0+PTX`."""
    oldest = version_tuple((facts.get("cuda_arch") or {}).get("oldest") or DEFAULT_OLDEST_ARCH)
    newest = version_tuple(NEWEST_ARCH[cuda])
    steps = [a for a in ARCH_STEPS if oldest <= version_tuple(a) <= newest]
    return ";".join(steps[:-1] + [steps[-1] + "+PTX"])

# nvcc of CUDA 9.0/9.1 rejects MSVC newer than toolset 14.11 (VS2017 15.4):
# "expression must have a constant value" (pytorch/pytorch#14203).
MAX_MSVC_TOOLSET = {"8.0": (14, 11), "9.0": (14, 11), "9.1": (14, 11), "9.2": (14, 13)}

# The library every Windows CUDA build of these releases links (setup.py of
# 0.4.1-1.0.1, torch/CMakeLists.txt of 1.1.0), and the header the compile
# includes (torch/csrc/autograd/profiler.h).
NVTOOLSEXT_LIB = ("lib", "x64", "nvToolsExt64_1.lib")
NVTOOLSEXT_HEADER = ("include", "nvToolsExt.h")

# Upstream's fixed Windows folders start here. Under --plan only, the
# variable below names a folder that stands for it (a fake machine in tests);
# a real build always probes the real one, as upstream's CMake does.
PROGRAM_FILES = "C:\\Program Files"
PLAN_PROGRAM_FILES = "TORCHWIN_PLAN_PROGRAM_FILES"

PLATFORMS = ("win-64", "linux-64")

# What the build reads from the machine (this driver, and the compiler caches
# their own settings). recent rattler-build hands the script a filtered environment, so
# recipe.yaml passes each through script.env (a test keeps the two equal); an
# empty one is what the recipe passes for an unset one, and is removed.
HOST_VARIABLES = ("CUDA_HOME", "CUDA_PATH", "CUDNN_ROOT", "NVTOOLSEXT_PATH", "CUDA_NVCC_EXECUTABLE",
                  "TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "VCToolsVersion", "SCCACHE_DIR", "SCCACHE_CACHE_SIZE",
                  "CUDAHOSTCXX", "CCACHE_DIR", "CCACHE_MAXSIZE", "CLCACHE_DIR")


# Passed by the recipe for the compiler activations; empty, 1.1.0's
# build_pytorch_libs.py would keep CC="" instead of its default `cl`.
PASSED_EMPTY_TOO = ("CC", "CXX")


def host_variables():
    """HOST_VARIABLES plus the CUDA installer's CUDA_PATH_V9_0 for every CUDA this driver builds."""
    return HOST_VARIABLES + tuple("CUDA_PATH_V" + v.replace(".", "_") for v in sorted(NEWEST_ARCH))


class BuildConfigError(Exception):
    """A variant/host combination that cannot build; the message says how to fix it."""


class UsageError(BuildConfigError):
    """The driver was called wrongly (not through the recipe)."""


def version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def is_nightly(version):
    return ".dev" in version


def release_switches(pytorch_version, use_cuda, is_windows, mkldnn=None):
    """The spelling each release understands for its switches.

    0.4.x only reads NO_* variables; 1.0 added USE_* and still honours NO_*,
    so 1.x gets both spellings. `mkldnn`: see mkldnn_on (None: on except on Windows).
    """
    env = {}
    old_style = version_tuple(pytorch_version) < (1, 0)

    def switch(name, on):
        env["NO_" + name] = "0" if on else "1"
        if not old_style:
            env["USE_" + name] = "1" if on else "0"

    switch("CUDA", use_cuda)
    switch("CUDNN", use_cuda)
    # torch.distributed does not build on Windows before 1.7; NCCL is Linux-only.
    switch("DISTRIBUTED", not is_windows)
    switch("NCCL", use_cuda and not is_windows)
    switch("MKLDNN", (not is_windows and not old_style) if mkldnn is None else mkldnn)
    # Tests add an hour of compiling and are not shipped.
    if old_style:
        env["NO_TEST"] = "1"
    else:
        env["BUILD_TEST"] = "0"
    return env


def mkldnn_on(facts, is_windows):
    """Build MKL-DNN wherever the release's FindMKLDNN.cmake builds it, as upstream's binaries did.

    Only the bundled copy (third_party/ideep, 1.0 on): 0.4.x build MKL-DNN only from an installed one
    (tools/setup_helpers/mkldnn.py: MKLDNN_HOME, /usr/lib), which the recipe does not provide, and
    their real configure says OFF (configure_linux64_cpu.json); 0.3 has none. Linux: wherever it is
    bundled. Windows: unless FindMKLDNN returns early under MSVC (1.0.0-1.4.0: "MKL-DNN needs omp
    3+"; upstream's 19bb496a0d "Enable mkldnn on windows" is in 1.5.0).
    """
    info = facts.get("mkldnn") or {}
    if not info.get("bundled"):
        return False
    return not (is_windows and info.get("msvc_returns_early_at"))


# Patches named so add `<name>_dll` to the names FindMKL.cmake looks for (patches/*.patch say why).
MKL_DLL_PATCH = "findmkl-dll-import-libs"
# A patch whose file name starts so is applied to Windows builds only.
WINDOWS_PATCH_PREFIX = "win-"


def platform_patches(patches, is_windows):
    """The variant's patches this platform applies: `win-*.patch` only on Windows."""
    return [p for p in patches or () if is_windows or not os.path.basename(p).startswith(WINDOWS_PATCH_PREFIX)]


def mkl_libraries_check(facts, library, patches, host):
    """Windows: refuse a host prefix where the release's FindMKL.cmake would find no MKL.

    It would not stop: CMake falls back to Eigen without MKL and only the package test notices.
    FindMKL looks for each name in `mkl.msvc_libraries` (facts) as `<name>.lib`; with the recipe's
    findmkl-dll-import-libs patch also as `<name>_dll.lib`, the names Intel's and conda's mkl-devel
    ship for Windows. The OpenMP runtime is optional (FindMKL retries without it).
    """
    info = facts.get("mkl") or {}
    names = info.get("msvc_libraries")
    if not names:
        return
    patched = any(MKL_DLL_PATCH in os.path.basename(p) for p in patches or ())
    suffixes = ("", "_dll") if patched or info.get("looks_for_dll_import_libraries") else ("",)
    lib_dir = join(library, "lib")
    for name in names:
        tried = [join(lib_dir, name + suffix + ".lib") for suffix in suffixes]
        if not any(host.exists(path) for path in tried):
            raise BuildConfigError(
                "MKL not found as PyTorch %s's %s looks for it: none of %s exists (it looks for %s); the "
                "build would fall back to Eigen without MKL. Install mkl-devel into the host prefix%s"
                % (facts.get("release", "?"), info.get("find_module", "FindMKL.cmake"), ", ".join(tried),
                   ", ".join(names), "" if patched else "; Intel's Windows import libraries are named <name>_dll.lib, "
                   "which only a %s patch in pytorch_patches makes FindMKL accept" % MKL_DLL_PATCH))


def msvc_limit(facts, cuda, environ):
    """The newest MSVC toolset (14, N) a Windows CUDA build may use, and why.

    nvcc's own limit (MAX_MSVC_TOOLSET) and the release's cmake/public/cuda.cmake (facts'
    cuda_msvc_limits: cl 19.N refused from `msvc_below` on, unless CUDAHOSTCXX is set; VS2017's
    toolset 14.N is cl 19.N): CUDA 9.2 is refused from cl 19.13 in 1.2.0-1.5.1, from 19.14 in 1.6.0.
    """
    limit = MAX_MSVC_TOOLSET.get(cuda)
    why = "nvcc %s" % cuda
    for rule in facts.get("cuda_msvc_limits") or ():
        if not (version_tuple(rule["cuda_from"]) <= version_tuple(cuda) < version_tuple(rule["cuda_below"])):
            continue
        if rule.get("unless_env") and environ.get(rule["unless_env"]):
            continue
        below = version_tuple(rule["msvc_below"])
        newest = (14, below[1] - 1)
        if limit is None or newest < limit:
            limit = newest
            why = "PyTorch %s's %s (MSVC %s and newer refused)" % (facts.get("release", "?"), rule["at"],
                                                                  rule["msvc_below"])
    return limit, why


CUDNN_DEFINE = re.compile(r"^\s*#\s*define\s+CUDNN_(MAJOR|MINOR)\s+(\d+)", re.MULTILINE)


def cudnn_header_check(header, expected, host):
    """Refuse a cudnn.h of another cuDNN major.minor than the recipe's run pin was written for.

    A recipe's run requirements are fixed before its build script runs, so the pin cannot be read
    from the header at build time; the recipe pins `expected` (TORCHWIN_CUDNN_COMPILED) and this
    makes the compile use exactly that header.
    """
    if expected is None:
        return
    found = dict(CUDNN_DEFINE.findall(host.read_text(header) or ""))
    if "MAJOR" not in found or "MINOR" not in found:
        raise BuildConfigError("cannot read CUDNN_MAJOR/CUDNN_MINOR from %s; the package's cudnn run pin "
                               "needs the cuDNN version compiled against" % header)
    version = "%s.%s" % (found["MAJOR"], found["MINOR"])
    if not expected:
        raise BuildConfigError(
            "TORCHWIN_CUDNN_COMPILED is not set: the package's cudnn run pin is written from it; set it to "
            "%s, the cuDNN of %s (`torchwin ci install-cuda` exports it with the cuDNN it installs)"
            % (version, header))
    if version != expected:
        raise BuildConfigError(
            "%s is cuDNN %s, but the recipe pins the package to cuDNN %s (TORCHWIN_CUDNN_COMPILED); install "
            "cuDNN %s for this CUDA, point CUDNN_ROOT at it, or set TORCHWIN_CUDNN_COMPILED=%s so the pin follows"
            % (header, version, expected, expected, version))


# 0.3's switches, each passed only where the release's files read it (facts' env_vars): its
# setup_helpers read NO_CUDA, NO_CUDNN, NO_NNPACK, NO_SYSTEM_NCCL; setup.py NO_DISTRIBUTED.
# NNPACK is off (setup_helpers/nnpack.py would link whatever libnnpack.a CONDA_PREFIX holds);
# NO_SYSTEM_NCCL=1 keeps Linux CUDA builds on the NCCL 1 vendored in torch/lib/nccl instead of
# the machine's libnccl (Windows has no NCCL: setup_helpers/nccl.py).
def legacy_switches(facts, use_cuda, is_windows):
    """The switches of a release older than 0.4, from what its files read."""
    reads = set()
    for names in (facts.get("env_vars") or {}).values():
        reads.update(names)
    wanted = {
        "NO_CUDA": not use_cuda,
        "NO_CUDNN": not use_cuda,
        # setup.py forces it off on Windows (the fork); Linux builds ship torch.distributed.
        "NO_DISTRIBUTED": is_windows,
        "NO_NNPACK": True,
        "NO_SYSTEM_NCCL": True,
    }
    return {name: "1" if off else "0" for name, off in wanted.items() if name in reads}


def is_legacy(pytorch_version):
    """0.3.x: torch/lib/build_libs.sh|bat, NO_* only, no ATen/caffe2 build (facts: torch/lib/build_libs)."""
    return version_tuple(pytorch_version) < (0, 4)


def build_script(facts, is_windows):
    """(path, facts) of the native build script setup.py runs on this platform, or (None, {})."""
    scripts = facts.get("build_scripts") or {}
    suffix = ".bat" if is_windows else ".sh"
    for path in sorted(scripts):
        if path.endswith(suffix):
            return path, scripts[path]
    return None, {}


def torch_version(variant, facts):
    """What setup.py stamps into torch.__version__ and the wheel: PYTORCH_BUILD_VERSION.

    A release tag builds its release (0.3.0). A build from another repository's commit (0.3's
    Windows fork) builds what that commit declares plus its commit as a PEP 440 local version,
    0.3.0b0+591e73e, exactly what the fork's setup.py computes from a git checkout; the 2017
    wheels' `0.3.0b0.591e73e` is no valid version for today's pip (a post-release must be numeric).
    """
    if facts.get("repository", UPSTREAM_REPOSITORY) == UPSTREAM_REPOSITORY or is_nightly(variant["version"]):
        return variant["version"]
    return "%s+%s" % (facts["declared_version"], facts["commit"][:7])


UPSTREAM_REPOSITORY = "https://github.com/pytorch/pytorch"


def check_legacy_build_script(facts, environ, is_windows, host, env):
    """0.3's torch/lib/build_libs.sh runs make itself; build_libs.bat takes -j from NUMBER_OF_PROCESSORS."""
    warnings = []
    path, script = build_script(facts, is_windows)
    if not path:
        return warnings
    if script.get("make_at") and not script.get("reads_cmake_generator"):
        if not host.which("make"):
            raise BuildConfigError("PyTorch %s's %s runs `make` itself (%s) and make is not on PATH; the recipe's "
                                   "build requirement `make` provides it"
                                   % (facts.get("release", "?"), path, script["make_at"][0]))
        # CMake 3.15+ takes its default generator from CMAKE_GENERATOR: make needs Makefiles.
        env["CMAKE_GENERATOR"] = "Unix Makefiles"
    for jobs in script.get("jobs") or ():
        if "NUMBER_OF_PROCESSORS" in jobs["value"]:
            # The only job count build_libs.bat honours; MAX_JOBS limits setup.py's compile only.
            env["NUMBER_OF_PROCESSORS"] = env["MAX_JOBS"]
        elif "MAX_JOBS" not in jobs["value"]:
            warnings.append("%s gives make -j%s (%s), not MAX_JOBS=%s: the libraries build with one job per CPU"
                            % (path, jobs["value"], jobs["at"], env["MAX_JOBS"]))
    return warnings


def join(base, *parts):
    """Join in the style of `base`: backslashes for a Windows path, slashes otherwise.

    So a win-64 plan made on Linux (tests, --platform win-64) probes real folders.
    """
    windows_style = "\\" in base or re.match(r"^[A-Za-z]:", base) is not None
    if windows_style:
        base = base.replace("/", "\\")
    sep = "\\" if windows_style else "/"
    return sep.join([base.rstrip("\\/")] + [p.strip("\\/") for p in parts])


def normalize_dir(path):
    r"""`C:\...\CUDA\v9.0\` -> `C:\...\CUDA\v9.0`: setup.py takes the basename as the CUDA version."""
    stripped = path.rstrip("\\/")
    if not stripped or re.match(r"^[A-Za-z]:$", stripped):
        return path
    return stripped


def basename(path):
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1]


def nvcc_version(nvcc):
    """The release nvcc reports (`Cuda compilation tools, release 9.0, V9.0.176`), or None."""
    try:
        out = subprocess.check_output([nvcc, "--version"], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def gcc_version(gcc):
    """`gcc -dumpversion` (5.4.0, or 7 for some builds), or None."""
    try:
        out = subprocess.check_output([gcc, "-dumpversion"], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip() or None


def cmake_version(cmake):
    """`cmake --version` (cmake version 3.18.4) -> 3.18.4, or None."""
    try:
        out = subprocess.check_output([cmake, "--version"], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"cmake version (\d+\.\d+(?:\.\d+)?)", out)
    return match.group(1) if match else None


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def version_txt(text):
    """CUDA 8-10 ship version.txt: `CUDA Version 9.0.176` -> 9.0."""
    match = re.search(r"CUDA Version (\d+\.\d+)", text or "")
    return match.group(1) if match else None


class Host:
    """What the plan reads from the machine; tests pass their own."""

    def __init__(self, exists=os.path.exists, which=None, nvcc_version=nvcc_version, read_text=read_text,
                 glob=glob.glob, can_run_nvcc=True, cpu_count=None, program_files=None, gcc_version=gcc_version,
                 cmake_version=cmake_version):
        self.exists = exists
        self.which = which or shutil.which
        self.nvcc_version = nvcc_version
        self.read_text = read_text
        self.glob = glob
        self.can_run_nvcc = can_run_nvcc
        self.cpu_count = cpu_count or os.cpu_count() or 1
        self.program_files = program_files
        self.gcc_version = gcc_version
        self.cmake_version = cmake_version

    def fixed(self, path):
        r"""Where to look for a fixed `C:\Program Files\...` folder: there, or under the plan's stand-in."""
        if not self.program_files:
            return path
        normal = path.replace("/", "\\")
        if normal.lower().startswith(PROGRAM_FILES.lower() + "\\"):
            return join(self.program_files, *normal[len(PROGRAM_FILES) + 1:].split("\\"))
        return path


def toolkit_version(home, is_windows, host):
    """nvcc's answer where it can run, else the toolkit's version.txt (a win-64 plan made on Linux)."""
    nvcc = join(home, "bin", "nvcc.exe" if is_windows else "nvcc")
    if host.can_run_nvcc and host.exists(nvcc):
        found = host.nvcc_version(nvcc)
        if found:
            return found
    path = join(home, "version.txt")
    if host.exists(path):
        return version_txt(host.read_text(path))
    return None


def find_cuda_home(cuda_version, environ, is_windows, host):
    """CUDA_PATH_V9_0-style variable first (what the installer sets), then CUDA_HOME, CUDA_PATH, the default folder."""
    major, minor = cuda_version.split(".")
    candidates = [
        environ.get("CUDA_PATH_V%s_%s" % (major, minor)),
        environ.get("CUDA_HOME"),
        environ.get("CUDA_PATH"),
    ]
    if is_windows:
        candidates.append(host.fixed(join(PROGRAM_FILES, "NVIDIA GPU Computing Toolkit", "CUDA",
                                          "v" + cuda_version)))
    else:
        candidates.append("/usr/local/cuda-%s" % cuda_version)
    seen = []
    visited = set()
    for path in candidates:
        if not path:
            continue
        path = normalize_dir(path)
        if path in visited:
            continue
        visited.add(path)
        found = toolkit_version(path, is_windows, host)
        if found is None and not host.exists(join(path, "bin", "nvcc.exe" if is_windows else "nvcc")):
            continue
        if found == cuda_version:
            # setup.py reads the CUDA version from the folder name (...\CUDA\v9.0).
            if is_windows and basename(path).lower() != "v" + cuda_version:
                raise BuildConfigError("CUDA folder %s must be named v%s: PyTorch's setup.py reads the version "
                                       "from the folder name" % (path, cuda_version))
            return path
        seen.append("%s (%s)" % (path, "CUDA " + found if found else "version unreadable"))
    raise BuildConfigError(
        "CUDA %s was requested but no CUDA %s toolkit was found (looked at CUDA_PATH_V%s_%s, CUDA_HOME, "
        "CUDA_PATH and the default folder%s); install it from https://developer.nvidia.com/cuda-toolkit-archive "
        "and check with `torchwin doctor --cuda %s`"
        % (cuda_version, cuda_version, major, minor, "; found " + ", ".join(seen) if seen else "", cuda_version))


def check_msvc(cuda_version, environ, facts=None):
    """vcvarsall sets VCToolsVersion (e.g. 14.11.25503); refuse a toolset nvcc or the release's CMake rejects."""
    limit, why = msvc_limit(facts or {}, cuda_version, environ)
    found = environ.get("VCToolsVersion", "")
    if not found:
        raise BuildConfigError("MSVC is not activated (VCToolsVersion is unset); build inside the vs2017 "
                               "compiler package's activation or run vcvarsall.bat x64 -vcvars_ver=14.11")
    if limit and version_tuple(found)[:2] > limit:
        raise BuildConfigError(
            "CUDA %s needs MSVC toolset %d.%d or older (%s) but VCToolsVersion is %s; install the component "
            "Microsoft.VisualStudio.Component.VC.Tools.14.11 and activate with vcvarsall.bat x64 "
            "-vcvars_ver=14.11" % (cuda_version, limit[0], limit[1], why, found))


def find_nvtoolsext(facts, environ, host):
    """NvToolsExt for a Windows CUDA build: NVTOOLSEXT_PATH, else the folder upstream defaults to."""
    info = facts.get("nvtoolsext") or {}
    env_var = info.get("env_var") or "NVTOOLSEXT_PATH"
    default = join(info.get("default_path") or join(PROGRAM_FILES, "NVIDIA Corporation", "NvToolsExt"))
    probed_default = host.fixed(default)
    release = facts.get("release", "?")
    given = environ.get(env_var)
    home = normalize_dir(given or probed_default)
    for part in (NVTOOLSEXT_LIB, NVTOOLSEXT_HEADER):
        path = join(home, *part)
        if not host.exists(path):
            raise BuildConfigError(
                "NvToolsExt not found: no %s (%s); PyTorch %s compiles and links it in every Windows CUDA build; "
                "install it (the CUDA installer's Nsight NVTX component) or set %s"
                % (path, "from %s" % env_var if given else "the default folder, %s is unset" % env_var, release,
                   env_var))
    # 1.1.0's torch/CMakeLists.txt links from the fixed folder whatever the variable says.
    if info.get("env_var_honoured", True) is False:
        for part in (NVTOOLSEXT_LIB, NVTOOLSEXT_HEADER):
            path = join(probed_default, *part)
            if not host.exists(path):
                raise BuildConfigError(
                    "PyTorch %s links NvToolsExt only from %s (its CMake ignores %s=%s) and %s is missing; "
                    "install NvToolsExt into that folder" % (release, default, env_var, given, path))
    return env_var, home


def check_host_gcc(facts, cuda, environ, host):
    """Linux: refuse the gcc the release's CMake refuses as nvcc's host compiler (facts' cuda_host_gcc)."""
    rule = facts.get("cuda_host_gcc")
    if not rule or not (version_tuple(rule["cuda_from"]) <= version_tuple(cuda) < version_tuple(rule["cuda_below"])):
        return []
    if rule.get("unless_env") and environ.get(rule["unless_env"]):
        return []
    gcc = environ.get("CC") or "gcc"
    found = host.which(gcc)
    version = host.gcc_version(found) if found else None
    if version is None:
        return ["could not run %s -dumpversion: PyTorch %s's %s stops CUDA %s builds with gcc %s or newer"
                % (gcc, facts.get("release", "?"), rule["at"], cuda, rule["gcc_below"])]
    if version_tuple(version)[:1] >= version_tuple(rule["gcc_below"])[:1]:
        raise BuildConfigError(
            "PyTorch %s's %s stops CUDA %s builds with gcc %s or newer (CUDA %s's std::tuple bug) and %s is gcc "
            "%s; set CC/CXX to a gcc 5 (e.g. devtoolset-4)%s"
            % (facts.get("release", "?"), rule["at"], cuda, rule["gcc_below"], cuda, gcc, version,
               " or %s to one as nvcc's host compiler" % rule["unless_env"] if rule.get("unless_env") else ""))
    return []


def ninja_module_in(prefix, is_windows, host):
    """The Python module `ninja` in the host prefix, where setup.py imports it from."""
    if is_windows:
        pattern = join(prefix, "Lib", "site-packages", "ninja", "__init__.py")
    else:
        pattern = join(prefix, "lib", "python*", "site-packages", "ninja", "__init__.py")
    return bool(host.glob(pattern))


def check_ninja(facts, environ, is_windows, host):
    """Every release builds with ninja; each decides differently (see the facts' `ninja`)."""
    info = facts.get("ninja") or {}
    if not host.which("ninja"):
        raise BuildConfigError("ninja is not on PATH; the recipe's build requirements provide it "
                               "(CMake's Ninja generator needs the executable)")
    # 0.4.1 and 1.0.x on Linux pick the generator by `import ninja` in setup.py
    # and fall back to make, which the recipe does not provide.
    if info.get("python_module_probe") and not is_windows:
        prefix = environ.get("PREFIX", "")
        if not ninja_module_in(prefix, is_windows, host):
            raise BuildConfigError("PyTorch %s's setup.py imports the Python module `ninja` to choose Ninja over "
                                   "make, and %s has none; the recipe's host requirement `ninja` provides it"
                                   % (facts.get("release", "?"), prefix or "the host prefix (PREFIX unset)"))


# Where CMake is new enough to read CMAKE_<LANG>_COMPILER_LAUNCHER from the environment itself.
LAUNCHER_ENV_CMAKE = "3.17"


def launcher_reaches_cmake(facts, host):
    """(True/False, why): does CMAKE_<LANG>_COMPILER_LAUNCHER in the environment reach this release's CMake?

    setup.py of 1.2.0 on passes every CMAKE_* variable to cmake (facts' compiler_cache.launcher_passed_by_setup);
    before, only a CMake that reads the variable from the environment itself (3.17 on) sees it.
    """
    info = facts.get("compiler_cache") or {}
    if info.get("launcher_passed_by_setup"):
        return True, "setup.py passes CMAKE_* variables to cmake (%s)" % info["launcher_passed_by_setup"]
    floor = info.get("launcher_env_cmake") or LAUNCHER_ENV_CMAKE
    cmake = host.which("cmake")
    found = host.cmake_version(cmake) if cmake else None
    if found and version_tuple(found) >= version_tuple(floor):
        return True, "cmake %s reads it from the environment" % found
    return False, ("PyTorch %s's setup.py passes no compiler launcher to cmake and %s reads none from the "
                   "environment before %s" % (facts.get("release", "?"), "cmake %s" % found if found
                                              else "the cmake on PATH (unreadable)", floor))


# Set by `torchwin wheel`, whose CC/CXX call ccache themselves (every release reads CC/CXX): a
# launcher on top would cache each compile twice and change what CMake was configured with.
COMPILER_CACHED = "TORCHWIN_COMPILER_CACHED"


def compiler_cache(facts, is_windows, environ, host):
    """({variables}, [warnings]): put the compiler cache on PATH in front of the C/C++ compiles, as the release allows.

    Linux: ccache (else sccache) as CMake's compiler launcher, where it reaches cmake (launcher_reaches_cmake).
    Windows: sccache as the launcher where it reaches cmake; else clcache as the compiler itself (CC/CXX):
    with Ninja every release takes the compiler from CC/CXX, and its bundled FindCUDA keeps cl as nvcc's host
    compiler when CMAKE_C_COMPILER is clcache (facts' compiler_cache.findcuda_accepts_cache_as_compiler).
    clcache is not a launcher (it takes cl's arguments, not a compiler and its arguments); sccache is not a
    compiler (it needs one as its first argument). nvcc is not covered: FindCUDA ignores
    CMAKE_CUDA_COMPILER_LAUNCHER (CUDA_NVCC_EXECUTABLE takes a wrapper instead).
    """
    if environ.get(COMPILER_CACHED) == "1":
        return {}, []
    info = facts.get("compiler_cache") or {}
    reaches, why = launcher_reaches_cmake(facts, host)
    env = {}
    if is_windows:
        if reaches and host.which("sccache"):
            env["CMAKE_C_COMPILER_LAUNCHER"] = env["CMAKE_CXX_COMPILER_LAUNCHER"] = "sccache"
            return env, []
        accepted = info.get("findcuda_accepts_cache_as_compiler")
        if host.which("clcache") and (accepted is None or "clcache" in accepted):
            # A CC the compiler activation set to cl itself is replaced; any other is the user's choice.
            if all(environ.get(name, "cl").lower() in ("cl", "cl.exe") for name in ("CC", "CXX")):
                env["CC"] = env["CXX"] = "clcache"
                return env, []
        if host.which("sccache"):
            return env, ["sccache is on PATH but not used: %s (clcache, as CC/CXX, would be)" % why]
        return env, []
    for name in ("ccache", "sccache"):
        if host.which(name):
            if not reaches:
                return env, ["%s is on PATH but not used: %s" % (name, why)]
            env["CMAKE_C_COMPILER_LAUNCHER"] = env["CMAKE_CXX_COMPILER_LAUNCHER"] = name
            return env, []
    return env, []


def plan(variant, environ, is_windows, facts=None, host=None):
    """Return {"env": additions, "commands": [argv, ...], "warnings": [...]} for this variant on this host.

    `variant` holds: version, build_number, cuda ("None" or "9.0"...), cudnn, patches.
    `facts` is upstream/<release>.json.
    """
    facts = facts or {}
    host = host or Host()
    warnings = []
    cuda = variant.get("cuda", "None")
    use_cuda = cuda not in ("None", "", None)
    env = {}
    legacy = is_legacy(variant.get("release") or variant["version"])
    if legacy:
        env.update(legacy_switches(facts, use_cuda, is_windows))
    else:
        env.update(release_switches(variant["version"], use_cuda, is_windows, mkldnn_on(facts, is_windows)))
    env["PYTORCH_BUILD_VERSION"] = torch_version(variant, facts)
    env["PYTORCH_BUILD_NUMBER"] = str(variant["build_number"])
    # Read by build_pytorch_libs.bat (0.4.1-1.0.1); on Linux those releases
    # choose by `import ninja` (checked below) and 1.1.0 by ninja on PATH.
    if (facts.get("ninja") or {}).get("reads_cmake_generator", True):
        env["CMAKE_GENERATOR"] = "Ninja"
    env["MAX_JOBS"] = environ.get("MAX_JOBS") or str(host.cpu_count)

    prefix = environ.get("PREFIX", "")
    if is_windows:
        library = environ.get("LIBRARY_PREFIX") or join(prefix, "Library")
        env["DISTUTILS_USE_SDK"] = "1"
        env["MSSdk"] = "1"
        # MKL from the host prefix (mkl-devel); CMake's FindMKL looks at these.
        env["CMAKE_INCLUDE_PATH"] = join(library, "include")
        env["LIB"] = join(library, "lib") + ";" + environ.get("LIB", "")
        env["CMAKE_PREFIX_PATH"] = library
        mkl_libraries_check(facts, library, variant.get("patches"), host)
    else:
        library = prefix
        env["CMAKE_PREFIX_PATH"] = prefix
        env["CMAKE_INCLUDE_PATH"] = join(prefix, "include")
        env["CMAKE_LIBRARY_PATH"] = join(prefix, "lib")
    if legacy:
        warnings += check_legacy_build_script(facts, environ, is_windows, host, env)
        # Linux 0.3 builds with make (above); the fork's build_libs.bat with Ninja from CMAKE_GENERATOR.
        if (facts.get("ninja") or {}).get("reads_cmake_generator") and is_windows:
            check_ninja(facts, environ, is_windows, host)
    else:
        check_ninja(facts, environ, is_windows, host)

    if use_cuda:
        if cuda not in NEWEST_ARCH:
            raise BuildConfigError("CUDA %s is not supported; supported: %s"
                                   % (cuda, ", ".join(sorted(NEWEST_ARCH))))
        # On Linux the nvcc package's activation has already refused a gcc NVIDIA rejects; some
        # releases' CMake is stricter.
        if is_windows:
            check_msvc(cuda, environ, facts)
        else:
            warnings += check_host_gcc(facts, cuda, environ, host)
        home = find_cuda_home(cuda, environ, is_windows, host)
        env["CUDA_HOME"] = home
        env["CUDA_PATH"] = home
        env["CUDA_TOOLKIT_ROOT_DIR"] = home
        env["TORCH_CUDA_ARCH_LIST"] = environ.get("TORCH_CUDA_ARCH_LIST") or cuda_arch_list(facts, cuda)
        env["TORCH_NVCC_FLAGS"] = "-Xfatbin -compress-all"
        cudnn_root = normalize_dir(environ.get("CUDNN_ROOT") or home)
        env["CUDNN_INCLUDE_DIR"] = join(cudnn_root, "include")
        if is_windows:
            env["CUDNN_LIB_DIR"] = join(cudnn_root, "lib", "x64")
            env["CUDNN_LIBRARY"] = join(env["CUDNN_LIB_DIR"], "cudnn.lib")
        else:
            env["CUDNN_LIB_DIR"] = join(cudnn_root, "lib64")
            env["CUDNN_LIBRARY"] = join(env["CUDNN_LIB_DIR"], "libcudnn.so")
        if not host.exists(join(env["CUDNN_INCLUDE_DIR"], "cudnn.h")):
            raise BuildConfigError("cuDNN %s for CUDA %s not found: no cudnn.h in %s; unpack cuDNN into the "
                                   "CUDA folder or set CUDNN_ROOT" % (variant.get("cudnn"), cuda,
                                                                      env["CUDNN_INCLUDE_DIR"]))
        cudnn_header_check(join(env["CUDNN_INCLUDE_DIR"], "cudnn.h"), variant.get("cudnn_compiled"), host)
        nvtx = facts.get("nvtoolsext") or {}
        if is_windows and nvtx.get("required_on_windows_cuda", True):
            name, path = find_nvtoolsext(facts, environ, host)
            env[name] = path
        # FindCUDA as bundled by all four releases reads $ENV{CUDA_NVCC_EXECUTABLE}
        # (CMAKE_CUDA_COMPILER_LAUNCHER is not used by FindCUDA): a wrapper the
        # user provides, e.g. one that calls sccache, goes through here.
        nvcc_exe = environ.get("CUDA_NVCC_EXECUTABLE")
        if nvcc_exe:
            if not host.exists(nvcc_exe):
                raise BuildConfigError("CUDA_NVCC_EXECUTABLE is %s, which does not exist; unset it to use "
                                       "the toolkit's nvcc" % nvcc_exe)
            env["CUDA_NVCC_EXECUTABLE"] = nvcc_exe
        magma_header = join(library, "include", "magma.h")
        if host.exists(magma_header):
            env["MAGMA_HOME"] = library

    cache_env, cache_warnings = compiler_cache(facts, is_windows, environ, host)
    env.update(cache_env)
    warnings += cache_warnings

    commands = []
    recipe_dir = environ.get("RECIPE_DIR") or os.path.dirname(os.path.abspath(__file__))
    for patch in platform_patches(variant.get("patches"), is_windows):
        path = join(recipe_dir, patch)
        commands.append(["git", "apply", "--check", path])
        commands.append(["git", "apply", path])
    python = environ.get("PYTHON") or sys.executable
    commands.append([python, "setup.py", "install", "--single-version-externally-managed", "--record=record.txt"])
    return {"env": env, "commands": commands, "warnings": warnings}


def wheel_command(environ, wheel_dir):
    """setup.py bdist_wheel after the install: the same tree and environment, so the build is reused."""
    python = environ.get("PYTHON") or sys.executable
    return [python, "setup.py", "bdist_wheel", "--dist-dir", wheel_dir]


def variant_from_environ(environ):
    """The variant as the recipe's build script passes it."""
    missing = [k for k in ("TORCHWIN_PYTORCH_VERSION", "TORCHWIN_BUILD_NUMBER") if not environ.get(k)]
    if missing:
        raise UsageError("the recipe did not pass %s; run this through `conda build recipes/pytorch`"
                         % ", ".join(missing))
    version = environ["TORCHWIN_PYTORCH_VERSION"]
    return {
        "version": version,
        # The variants.yaml row (a nightly builds on its release's row).
        "release": environ.get("TORCHWIN_RELEASE") or version,
        "build_number": environ["TORCHWIN_BUILD_NUMBER"],
        "cuda": environ.get("TORCHWIN_CUDA_VERSION", "None"),
        "cudnn": environ.get("TORCHWIN_CUDNN", "None"),
        "patches": environ.get("TORCHWIN_PATCHES", "").split(),
        # The cuDNN major.minor the recipe's run pin is written for (cudnn_header_check).
        "cudnn_compiled": environ.get("TORCHWIN_CUDNN_COMPILED", ""),
    }


def load_json(path, what):
    text = read_text(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise BuildConfigError("%s %s is not valid JSON: %s" % (what, path, exc))


def load_facts(recipe_dir, release, platform=None, commit=None):
    """upstream/<release>.json, or <release>-<platform>.json where that platform builds another
    repository's commit (0.3's Windows fork); `commit` (the recipe's TORCHWIN_SOURCE_COMMIT) must be
    the one the table was read from."""
    names = ([release + "-" + platform] if platform else []) + [release]
    for name in names:
        path = os.path.join(recipe_dir, "upstream", name + ".json")
        facts = load_json(path, "upstream facts")
        if facts is not None:
            break
    else:
        raise BuildConfigError("no upstream facts for PyTorch %s: %s is missing; generate it with "
                               "`torchwin upstream-facts` from an upstream checkout" % (release, path))
    if commit and facts.get("commit") != commit:
        raise BuildConfigError("the recipe builds commit %s of PyTorch %s for %s but %s was read from %s; "
                               "regenerate the tables with `torchwin upstream-facts`"
                               % (commit, release, platform or "this platform", path, facts.get("commit")))
    return facts


def load_skipped(recipe_dir, release):
    """Submodules the build deliberately does not fetch (submodules_skipped.json; absent file: none)."""
    table = load_json(os.path.join(recipe_dir, "submodules_skipped.json"), "submodule list") or {}
    return table.get(release) or {}


SETUP_VERSION = re.compile(r"""^version\s*=\s*['"]([0-9][^'"]*)['"]""", re.MULTILINE)


def declared_version(src_dir, name=None):
    """The version a PyTorch checkout declares (version.txt, else setup.py's `version = '...'`), or None.

    `name` is the file upstream declares it in for this release (the facts' declared_version_file).
    """
    for candidate in ([name] if name else ["version.txt", "setup.py"]):
        text = read_text(os.path.join(src_dir, candidate))
        if text is None:
            continue
        if candidate.endswith("version.txt"):
            return text.strip() or None
        match = SETUP_VERSION.search(text)
        if match:
            return match.group(1)
    return None


def check_source(variant, facts, skipped, src_dir):
    """Refuse a tree of another release, or one missing a submodule the build needs.

    The tree must declare what upstream's tag declares (0.4.1's tag says
    0.5.0a0). Nightlies (x.y.z.devN) build any ref, so they are not checked.
    """
    if is_nightly(variant["version"]):
        return ["nightly %s: the source is not checked against %s's facts" % (variant["version"], facts["release"])]
    expected = facts["declared_version"]
    found = declared_version(src_dir, facts.get("declared_version_file"))
    if found != expected and facts.get("repository", UPSTREAM_REPOSITORY) != UPSTREAM_REPOSITORY:
        raise BuildConfigError(
            "the source in %s declares %s in %s, but the commit PyTorch %s builds here (%s at %s) declares %s; "
            "check out that commit" % (src_dir, found or "no version", facts.get("declared_version_file"),
                                       variant["release"], facts["repository"], facts.get("commit", "?"), expected))
    if found != expected:
        raise BuildConfigError(
            "the source in %s declares %s in %s, but PyTorch %s's tag declares %s; check out v%s (commit %s)"
            % (src_dir, found or "no version", facts.get("declared_version_file") or "version.txt/setup.py",
               variant["release"], expected, variant["release"], facts.get("commit", "?")))
    missing = []
    for module in facts.get("submodules") or ():
        path = module["path"]
        if path in skipped:
            continue
        full = os.path.join(src_dir, *path.split("/"))
        if not os.path.isdir(full) or not os.listdir(full):
            missing.append(path)
    if missing:
        raise BuildConfigError(
            "submodule %s is empty or missing in %s%s; run `git submodule update --init --recursive` there "
            "(submodules_skipped.json lists the ones the build does without)"
            % (missing[0], src_dir, " (and %d more)" % (len(missing) - 1) if len(missing) > 1 else ""))
    return []


def make_plan(environ, platform, plan_only=False):
    """Everything the build and --plan share: the variant, the source checks, the plan.

    Removes the host variables the recipe passed empty from `environ`.
    """
    unset = sorted(name for name in host_variables() + PASSED_EMPTY_TOO if environ.get(name) == "")
    for name in unset:
        del environ[name]
    variant = variant_from_environ(environ)
    recipe_dir = environ.get("RECIPE_DIR") or os.path.dirname(os.path.abspath(__file__))
    facts = load_facts(recipe_dir, variant["release"], platform, environ.get("TORCHWIN_SOURCE_COMMIT") or None)
    src_dir = environ.get("SRC_DIR") or os.getcwd()
    warnings = check_source(variant, facts, load_skipped(recipe_dir, variant["release"]), src_dir)
    is_windows = platform == "win-64"
    host = Host(which=lambda name: shutil.which(name, path=environ.get("PATH", "")),
                can_run_nvcc=is_windows == (sys.platform == "win32"),
                program_files=environ.get(PLAN_PROGRAM_FILES) if plan_only else None)
    result = plan(variant, environ, is_windows, facts, host)
    result["warnings"] = warnings + result["warnings"]
    result.update({"release": variant["release"], "version": variant["version"], "platform": platform,
                   "cuda": variant["cuda"], "build_number": variant["build_number"], "src_dir": src_dir,
                   "unset": unset})
    return result


def print_plan(result, out):
    out.write("torchwin build driver: PyTorch %s (%s), CUDA %s, build number %s\n"
              % (result["version"], result["platform"], result["cuda"], result["build_number"]))
    for key in sorted(result["env"]):
        out.write("  %s=%s\n" % (key, result["env"][key]))
    for command in result["commands"]:
        out.write("  command: %s\n" % " ".join(command))
    out.flush()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Build PyTorch for the variant the recipe passes (TORCHWIN_*).")
    parser.add_argument("--plan", action="store_true",
                        help="check the source and host, print the environment and commands; build nothing")
    parser.add_argument("--json", action="store_true", help="with --plan: print the plan as JSON")
    parser.add_argument("--platform", choices=PLATFORMS,
                        help="plan for this platform (default: the running one)")
    parser.add_argument("--wheel-dir", metavar="DIR",
                        help="after installing, also build a wheel of the same build into DIR")
    args = parser.parse_args(argv)
    if (args.json or args.platform) and not args.plan:
        parser.error("--json and --platform go with --plan")
    return args


def main(argv=None):
    args = parse_args(argv)
    environ = dict(os.environ)
    platform = args.platform or ("win-64" if sys.platform == "win32" else "linux-64")
    try:
        result = make_plan(environ, platform, plan_only=args.plan)
        if args.wheel_dir:
            result["commands"].append(wheel_command(environ, args.wheel_dir))
    except BuildConfigError as exc:
        print("torchwin build driver: error: %s" % exc, file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    for warning in result["warnings"]:
        print("torchwin build driver: warning: %s" % warning, file=sys.stderr)
    if args.plan:
        if args.json:
            json.dump({k: result[k] for k in sorted(result)}, sys.stdout, indent=2, sort_keys=True)
            sys.stdout.write("\n")
        else:
            print_plan(result, sys.stdout)
        return 0
    print_plan(result, sys.stdout)
    environ.update(result["env"])
    for command in result["commands"]:
        code = subprocess.call(command, env=environ)
        if code != 0:
            print("torchwin build driver: error: `%s` failed (exit %d)" % (" ".join(command), code),
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

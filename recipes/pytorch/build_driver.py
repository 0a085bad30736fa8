"""Build PyTorch for one variant: compute the build environment, print it, run setup.py.

Called by bld.bat / build.sh with the variant's own Python (3.5+), so this file
must stay valid Python 3.5: no f-strings, no annotations. The recipe passes
the variant through TORCHWIN_* environment variables; the host (compilers,
CUDA toolkit, cuDNN, MKL in the host prefix, compiler caches) is read from the
environment and the file system. `plan()` is pure and unit-tested; `main()`
only runs what `plan()` decided.
"""

import os
import re
import shutil
import subprocess
import sys

# Compute capabilities per CUDA version: what pytorch/builder shipped for these
# releases. "+PTX" keeps newer GPUs working through the JIT.
CUDA_ARCH_LIST = {
    "8.0": "3.5;5.0+PTX;6.0;6.1",
    "9.0": "3.5;5.0+PTX;6.0;7.0",
    "9.1": "3.5;5.0+PTX;6.0;6.1;7.0",
    "9.2": "3.5;5.0+PTX;6.0;6.1;7.0",
}
# 0.4.x shipped 6.1 kernels with CUDA 9.0 too; builder split the lists per
# release only from 1.0 on.
CUDA_ARCH_LIST_BEFORE_1_0 = {"9.0": "3.5;5.0+PTX;6.0;6.1;7.0"}

# nvcc of CUDA 9.0/9.1 rejects MSVC newer than toolset 14.11 (VS2017 15.4):
# "expression must have a constant value" (pytorch/pytorch#14203).
MAX_MSVC_TOOLSET = {"8.0": (14, 11), "9.0": (14, 11), "9.1": (14, 11), "9.2": (14, 13)}


class BuildConfigError(Exception):
    """A variant/host combination that cannot build; the message says how to fix it."""


def version_tuple(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def release_switches(pytorch_version, use_cuda, is_windows):
    """The spelling each release understands for its switches.

    0.4.x only reads NO_* variables; 1.0 added USE_* and still honours NO_*,
    so 1.x gets both spellings.
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
    # MKL-DNN needs OpenMP 3, which MSVC lacks; 0.4.x would look for an external one.
    switch("MKLDNN", not is_windows)
    # Tests add an hour of compiling and are not shipped.
    if old_style:
        env["NO_TEST"] = "1"
    else:
        env["BUILD_TEST"] = "0"
    return env


def nvcc_version(nvcc):
    """The release nvcc reports (`Cuda compilation tools, release 9.0, V9.0.176`), or None."""
    try:
        out = subprocess.check_output([nvcc, "--version"], universal_newlines=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out)
    return match.group(1) if match else None


def find_cuda_home(cuda_version, environ, is_windows, exists, nvcc_version=nvcc_version):
    """CUDA_PATH_V9_0-style variable first (what the installer sets), then CUDA_HOME, then the default folder."""
    major, minor = cuda_version.split(".")
    candidates = [
        environ.get("CUDA_PATH_V%s_%s" % (major, minor)),
        environ.get("CUDA_HOME"),
        environ.get("CUDA_PATH"),
    ]
    if is_windows:
        candidates.append(r"C:\Program Files\NVIDIA GPU Computing Toolkit\CUDA\v%s" % cuda_version)
    else:
        candidates.append("/usr/local/cuda-%s" % cuda_version)
    seen = []
    visited = set()
    for path in candidates:
        if not path or path in visited:
            continue
        visited.add(path)
        nvcc = join(is_windows, path, "bin", "nvcc.exe" if is_windows else "nvcc")
        if not exists(nvcc):
            continue
        found = nvcc_version(nvcc)
        if found == cuda_version:
            # setup.py reads the CUDA version from the folder name (...\\CUDA\\v9.0).
            if is_windows and not path.rstrip("\\/").lower().endswith("v" + cuda_version):
                raise BuildConfigError("CUDA folder %s must end in v%s: PyTorch's setup.py reads the version "
                                       "from the folder name" % (path, cuda_version))
            return path
        seen.append("%s (nvcc %s)" % (path, found or "unreadable"))
    raise BuildConfigError(
        "CUDA %s was requested but no CUDA %s toolkit was found (looked at CUDA_PATH_V%s_%s, CUDA_HOME, "
        "CUDA_PATH and the default folder%s); install it from https://developer.nvidia.com/cuda-toolkit-archive "
        "and check with `torchwin doctor --cuda %s`"
        % (cuda_version, cuda_version, major, minor, "; found " + ", ".join(seen) if seen else "", cuda_version))


def join(is_windows, *parts):
    sep = "\\" if is_windows else "/"
    return sep.join(p.rstrip("\\/") for p in parts)


def check_msvc(cuda_version, environ):
    """vcvarsall sets VCToolsVersion (e.g. 14.11.25503); refuse a toolset nvcc rejects."""
    limit = MAX_MSVC_TOOLSET.get(cuda_version)
    found = environ.get("VCToolsVersion", "")
    if not found:
        raise BuildConfigError("MSVC is not activated (VCToolsVersion is unset); build inside the vs2017 "
                               "compiler package's activation or run vcvarsall.bat x64 -vcvars_ver=14.11")
    if limit and version_tuple(found)[:2] > limit:
        raise BuildConfigError(
            "CUDA %s needs MSVC toolset %d.%d or older but VCToolsVersion is %s; install the component "
            "Microsoft.VisualStudio.Component.VC.Tools.14.11 and activate with vcvarsall.bat x64 "
            "-vcvars_ver=14.11" % (cuda_version, limit[0], limit[1], found))


def find_tool(names, which):
    for name in names:
        path = which(name)
        if path:
            return name, path
    return None, None


def plan(variant, environ, is_windows, exists=os.path.exists, which=shutil.which, cpu_count=None,
         nvcc_version=nvcc_version):
    """Return (environment additions, command) for this variant on this host.

    `variant` holds: version, build_number, cuda ("None" or "9.0"...), cudnn, python.
    """
    cuda = variant.get("cuda", "None")
    use_cuda = cuda not in ("None", "", None)
    env = {}
    env.update(release_switches(variant["version"], use_cuda, is_windows))
    env["PYTORCH_BUILD_VERSION"] = variant["version"]
    env["PYTORCH_BUILD_NUMBER"] = str(variant["build_number"])
    env["CMAKE_GENERATOR"] = "Ninja"
    jobs = environ.get("MAX_JOBS") or str(cpu_count or os.cpu_count() or 1)
    env["MAX_JOBS"] = jobs

    prefix = environ.get("PREFIX", "")
    if is_windows:
        library = environ.get("LIBRARY_PREFIX") or join(True, prefix, "Library")
        env["DISTUTILS_USE_SDK"] = "1"
        env["MSSdk"] = "1"
        # MKL from the host prefix (mkl-devel); CMake's FindMKL looks at these.
        env["CMAKE_INCLUDE_PATH"] = join(True, library, "include")
        env["LIB"] = join(True, library, "lib") + ";" + environ.get("LIB", "")
        env["CMAKE_PREFIX_PATH"] = library
    else:
        library = prefix
        env["CMAKE_PREFIX_PATH"] = prefix
        env["CMAKE_INCLUDE_PATH"] = join(False, prefix, "include")
        env["CMAKE_LIBRARY_PATH"] = join(False, prefix, "lib")

    if use_cuda:
        if cuda not in CUDA_ARCH_LIST:
            raise BuildConfigError("CUDA %s is not supported; supported: %s"
                                   % (cuda, ", ".join(sorted(CUDA_ARCH_LIST))))
        # On Linux the nvcc package's activation has already refused a gcc this CUDA rejects.
        if is_windows:
            check_msvc(cuda, environ)
        home = find_cuda_home(cuda, environ, is_windows, exists, nvcc_version)
        env["CUDA_HOME"] = home
        env["CUDA_PATH"] = home
        env["CUDA_TOOLKIT_ROOT_DIR"] = home
        arch_lists = CUDA_ARCH_LIST_BEFORE_1_0 if version_tuple(variant["version"]) < (1, 0) else {}
        env["TORCH_CUDA_ARCH_LIST"] = (environ.get("TORCH_CUDA_ARCH_LIST") or arch_lists.get(cuda)
                                       or CUDA_ARCH_LIST[cuda])
        env["TORCH_NVCC_FLAGS"] = "-Xfatbin -compress-all"
        cudnn_root = environ.get("CUDNN_ROOT") or home
        env["CUDNN_INCLUDE_DIR"] = join(is_windows, cudnn_root, "include")
        if is_windows:
            env["CUDNN_LIB_DIR"] = join(True, cudnn_root, "lib", "x64")
            env["CUDNN_LIBRARY"] = join(True, env["CUDNN_LIB_DIR"], "cudnn.lib")
        else:
            env["CUDNN_LIB_DIR"] = join(False, cudnn_root, "lib64")
            env["CUDNN_LIBRARY"] = join(False, env["CUDNN_LIB_DIR"], "libcudnn.so")
        if not exists(join(is_windows, env["CUDNN_INCLUDE_DIR"], "cudnn.h")):
            raise BuildConfigError("cuDNN %s for CUDA %s not found: no cudnn.h in %s; unpack cuDNN into the "
                                   "CUDA folder or set CUDNN_ROOT" % (variant.get("cudnn"), cuda,
                                                                      env["CUDNN_INCLUDE_DIR"]))
        magma_header = join(is_windows, library, "include", "magma.h")
        if exists(magma_header):
            env["MAGMA_HOME"] = library

    launcher_name, launcher = find_tool(("sccache", "clcache") if is_windows else ("sccache",), which)
    if launcher:
        env["CMAKE_C_COMPILER_LAUNCHER"] = launcher_name
        env["CMAKE_CXX_COMPILER_LAUNCHER"] = launcher_name
        if use_cuda and launcher_name == "sccache":
            env["CMAKE_CUDA_COMPILER_LAUNCHER"] = "sccache"
    python = environ.get("PYTHON") or sys.executable
    command = [python, "setup.py", "install", "--single-version-externally-managed", "--record=record.txt"]
    return env, command


def variant_from_environ(environ):
    """The variant as the recipe's build script passes it."""
    missing = [k for k in ("TORCHWIN_PYTORCH_VERSION", "TORCHWIN_BUILD_NUMBER") if not environ.get(k)]
    if missing:
        raise BuildConfigError("the recipe did not pass %s; run this through `conda build recipes/pytorch`"
                               % ", ".join(missing))
    return {
        "version": environ["TORCHWIN_PYTORCH_VERSION"],
        "build_number": environ["TORCHWIN_BUILD_NUMBER"],
        "cuda": environ.get("TORCHWIN_CUDA_VERSION", "None"),
        "cudnn": environ.get("TORCHWIN_CUDNN", "None"),
        "patches": environ.get("TORCHWIN_PATCHES", "").split(),
    }


SETUP_VERSION = re.compile(r"""^version\s*=\s*['"]([0-9][^'"]*)['"]""", re.MULTILINE)


def declared_version(src_dir):
    """The version a PyTorch checkout declares (version.txt, else setup.py's `version = '...'`), or None."""
    for name, pattern in (("version.txt", None), ("setup.py", SETUP_VERSION)):
        path = os.path.join(src_dir, name)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if pattern is None:
            return text.strip() or None
        match = pattern.search(text)
        if match:
            return match.group(1)
    return None


def check_source_version(expected, src_dir):
    """Refuse a checkout of another release (TORCHWIN_SOURCE_DIR feeds one tree to every variant).

    Only major.minor is compared: release tags declare e.g. 1.0.0a0 in setup.py, and a
    patch release may keep its branch's number. Nightlies (x.y.z.devN) build any ref.
    """
    if ".dev" in expected:
        return None
    found = declared_version(src_dir)
    if found is None:
        return "cannot tell the version of the source in %s; building it as %s" % (src_dir, expected)
    if version_tuple(found)[:2] != version_tuple(expected)[:2]:
        raise BuildConfigError("the source in %s is PyTorch %s, but this variant builds %s; check out v%s "
                               "(or pick the variant with --variant pytorch_version=%s)"
                               % (src_dir, found, expected, expected, found))
    return None


def apply_patches(patches, recipe_dir, run=subprocess.call):
    for patch in patches:
        path = os.path.join(recipe_dir, patch)
        for args in (["git", "apply", "--check", path], ["git", "apply", path]):
            if run(args) != 0:
                raise BuildConfigError("patch %s does not apply to this source (%s)" % (patch, " ".join(args)))


def main(argv=None):
    environ = dict(os.environ)
    is_windows = sys.platform == "win32"
    try:
        variant = variant_from_environ(environ)
        warning = check_source_version(variant["version"], environ.get("SRC_DIR") or os.getcwd())
        if warning:
            print("torchwin build driver: warning: %s" % warning, file=sys.stderr)
        additions, command = plan(variant, environ, is_windows)
        apply_patches(variant["patches"], environ.get("RECIPE_DIR", "."))
    except BuildConfigError as exc:
        print("torchwin build driver: error: %s" % exc, file=sys.stderr)
        return 2
    print("torchwin build driver: PyTorch %s, CUDA %s, build number %s"
          % (variant["version"], variant["cuda"], variant["build_number"]))
    for key in sorted(additions):
        print("  %s=%s" % (key, additions[key]))
    print("  command: %s" % " ".join(command))
    sys.stdout.flush()
    environ.update(additions)
    return subprocess.call(command, env=environ)


if __name__ == "__main__":
    sys.exit(main())

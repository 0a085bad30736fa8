"""CUDA probes for `torchwin doctor`: nvcc of the CUDA version asked for, cuDNN, NvToolsExt.

Where each is looked for follows what the build does (CUDA_PATH_V<X>_<Y>, CUDA_PATH, CUDA_HOME, the
standard install folders), and a FAIL names the archive page to download the right release from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from torchwin.doctor.host_probes import FAIL, OK, Check

CUDA_ARCHIVE_URL = "https://developer.nvidia.com/cuda-toolkit-archive"
CUDNN_ARCHIVE_URL = "https://developer.nvidia.com/rdp/cudnn-archive"


@dataclasses.dataclass(frozen=True)
class CudaFound:
    """The CUDA toolkit the nvcc package's activation would pick, and how it got there."""

    nvcc: Path | None  # None: no toolkit, or `variable` names a folder without nvcc
    how: str  # the place in the search that gave it: a variable name, "the default install folder"...
    root: Path | None  # the real toolkit folder (include/cuda_runtime.h beside bin/), for cuDNN and gcc
    output: str | None  # `nvcc --version`, None when it did not run
    looked: tuple = ()  # the places tried before, in order, each saying why it did not count
    home: Path | None = None  # the toolkit folder as the activation sets CUDA_HOME to it
    variable: str = ""  # the environment variable that chose it; set means the search stopped there

    @property
    def release(self):
        return parse_nvcc_release(self.output or "")

    @property
    def full_version(self):
        match = re.search(r"\bV(\d+\.\d+\.\d+)", self.output or "")
        return match.group(1) if match else None


def parse_nvcc_release(text):
    """'Cuda compilation tools, release 9.0, V9.0.176' -> '9.0'; None when absent."""
    match = re.search(r"release (\d+\.\d+)", text)
    return match.group(1) if match else None


def cuda_path_variable(cuda):
    """The variable the CUDA installer sets on Windows: 9.0 -> CUDA_PATH_V9_0."""
    return "CUDA_PATH_V" + cuda.replace(".", "_")


def _standard_cuda_dir(host, cuda, windows_target):
    """Where the CUDA installer puts version `cuda` by default."""
    if windows_target:
        base = host.getenv("ProgramFiles")
        return Path(base) / "NVIDIA GPU Computing Toolkit" / "CUDA" / ("v" + cuda) if base else None
    return host.sysroot / "usr" / "local" / ("cuda-" + cuda)


def _is_program(path, windows_target):
    # activate.sh.in tests `-x`; activate.bat.in tests `exist`.
    return path.is_file() and (windows_target or os.access(path, os.X_OK))


def cuda_search_order(cuda, windows_target):
    """The nvcc activation's search, in words, as its "no CUDA toolkit found" message lists it."""
    if windows_target:
        default = rf"%ProgramFiles%\NVIDIA GPU Computing Toolkit\CUDA\v{cuda}"
        return [cuda_path_variable(cuda), "CUDA_HOME", default, "CUDA_PATH"]
    return [cuda_path_variable(cuda), "CUDA_HOME", f"/usr/local/cuda-{cuda}", "/usr/local/cuda", "PATH"]


def find_cuda(host, cuda, windows_target):
    """The toolkit the nvcc package's activation would use, looked for exactly as it looks.

    recipes/nvcc/activate.sh.in (Linux): CUDA_PATH_Vx_y, CUDA_HOME, /usr/local/cuda-X.Y,
    /usr/local/cuda, then the nvcc on PATH when its bin/.. is a toolkit (has include/cuda_runtime.h).
    recipes/nvcc/activate.bat.in (Windows): CUDA_PATH_Vx_y, CUDA_HOME, the installer's default
    folder ...\\CUDA\\vX.Y, then CUDA_PATH (which the installer points at the newest toolkit).
    A variable that is set is an explicit choice: the activation uses it or fails, it never looks
    further, so neither does this. Doctor must agree with the activation: a toolkit that only doctor
    finds (or only the activation) makes its verdict wrong.
    """
    exe = "nvcc.exe" if windows_target else "nvcc"
    looked = []

    def chosen(home, how, variable=""):
        nvcc = home / "bin" / exe
        if not _is_program(nvcc, windows_target):
            return CudaFound(None, how, None, None, tuple(looked), home, variable)
        # The real toolkit folder (follows /usr/local/cuda -> cuda-X.Y links), for cuDNN and
        # host_config.h; none when bin/.. has no CUDA headers.
        root = nvcc.resolve().parent.parent
        if not (root / "include" / "cuda_runtime.h").is_file():
            root = None
        return CudaFound(nvcc, how, root, host.run([nvcc, "--version"]), tuple(looked), home, variable)

    for var in (cuda_path_variable(cuda), "CUDA_HOME"):
        value = host.getenv(var)
        if value:
            return chosen(Path(value), var, var)
        looked.append(f"{var} unset")
    standard = _standard_cuda_dir(host, cuda, windows_target)
    if windows_target:
        if standard is None:
            looked.append("ProgramFiles unset (no installer's default folder)")
        elif _is_program(standard / "bin" / exe, windows_target):
            return chosen(standard, "the CUDA installer's default folder")
        else:
            looked.append(f"no {standard / 'bin' / exe}")
        value = host.getenv("CUDA_PATH")
        if value:
            return chosen(Path(value), "CUDA_PATH", "CUDA_PATH")
        looked.append("CUDA_PATH unset")
        return CudaFound(None, "", None, None, tuple(looked))
    for folder in (standard, host.sysroot / "usr" / "local" / "cuda"):
        if _is_program(folder / "bin" / exe, windows_target):
            return chosen(folder, "the default install folders")
        looked.append(f"no {folder / 'bin' / exe}")
    on_path = host.which("nvcc")
    if on_path is None:
        looked.append("no nvcc on PATH")
    elif on_path.parent.name == "bin" and (on_path.parent.parent / "include" / "cuda_runtime.h").is_file():
        return chosen(on_path.parent.parent, "the nvcc on PATH")
    else:
        # A wrapper script such as /usr/local/bin/nvcc: the activation skips it, since CUDA_HOME
        # must be a toolkit folder.
        looked.append(f"the nvcc on PATH, {on_path}, is not in a toolkit's bin/ (no ../include/cuda_runtime.h)")
    return CudaFound(None, "", None, None, tuple(looked))


def _cuda_install_fix(host, cuda, windows_target):
    standard = _standard_cuda_dir(host, cuda, windows_target)
    if windows_target:
        sets = f"{cuda_path_variable(cuda)}={standard or 'its folder'}"
        return f"install CUDA {cuda} from {CUDA_ARCHIVE_URL} (its installer sets {sets})"
    if standard is not None and (standard / "bin" / "nvcc").is_file():
        return f"export CUDA_HOME={standard} PATH={standard}/bin:$PATH"
    folder = f"/usr/local/cuda-{cuda}"
    return (
        f"install CUDA {cuda} from {CUDA_ARCHIVE_URL} (runfile: --silent --toolkit --toolkitpath={folder}), "
        f"then export CUDA_HOME={folder} PATH={folder}/bin:$PATH"
    )


def _cuda_fix(host, found, cuda, windows_target):
    fix = _cuda_install_fix(host, cuda, windows_target)
    # A variable ahead of the default folder in the search hides any toolkit installed there; the
    # Linux fix sets CUDA_HOME itself, so only the one variable before it needs a word.
    ahead = {cuda_path_variable(cuda)} if not windows_target else {cuda_path_variable(cuda), "CUDA_HOME"}
    if found.variable in ahead:
        fix = f"unset {found.variable} or set it to the folder of a CUDA {cuda} toolkit; or " + fix
    return fix


def check_nvcc(host, found, cuda, windows_target):
    name = "nvcc (CUDA toolkit)"
    fix = _cuda_fix(host, found, cuda, windows_target)
    order = ", ".join(cuda_search_order(cuda, windows_target))
    if found.nvcc is None:
        if found.variable:
            exe = "nvcc.exe" if windows_target else "nvcc"
            return Check(
                name,
                FAIL,
                f"requested CUDA {cuda}; {found.variable} points at {found.home}, which has no bin/{exe}, "
                "and the nvcc activation looks no further",
                fix,
            )
        looked = "; ".join(found.looked)
        return Check(name, FAIL, f"requested CUDA {cuda}, found no nvcc (looked in order: {looked})", fix)
    where = f"{found.home} (found through {found.how})"
    # On a FAIL the order tells why this toolkit came before another one.
    searched = f"; searched as the nvcc activation does: {order}"
    if found.output is None:
        return Check(name, FAIL, f"requested CUDA {cuda}; {found.nvcc} did not run; toolkit {where}{searched}", fix)
    release = found.release
    if release is None:
        return Check(
            name,
            FAIL,
            f"requested CUDA {cuda}; `{found.nvcc} --version` printed no release: "
            f"{found.output.strip()[:200]!r}; toolkit {where}{searched}",
            fix,
        )
    if release == cuda:
        return Check(name, OK, f"CUDA {release} (nvcc V{found.full_version or release}) in {where}")
    return Check(
        name,
        FAIL,
        f"requested CUDA {cuda}, but the toolkit in {where} is CUDA {release} "
        f"(V{found.full_version or release}){searched}",
        fix,
    )


def parse_cudnn_version(text):
    """'7.1.4' from the CUDNN_MAJOR/MINOR/PATCHLEVEL defines, or None."""
    parts = []
    for key in ("MAJOR", "MINOR", "PATCHLEVEL"):
        match = re.search(rf"#\s*define\s+CUDNN_{key}\s+(\d+)", text)
        if not match:
            return None
        parts.append(match.group(1))
    return ".".join(parts)


def _cudnn_dirs(host, found, windows_target):
    """(include folders, library folders) where cuDNN is looked for, in order."""
    include, lib = [], []
    if host.getenv("CUDNN_INCLUDE_DIR"):
        include.append(Path(host.getenv("CUDNN_INCLUDE_DIR")))
    if host.getenv("CUDNN_LIB_DIR"):
        lib.append(Path(host.getenv("CUDNN_LIB_DIR")))
    if host.getenv("CUDNN_LIBRARY"):
        library = Path(host.getenv("CUDNN_LIBRARY"))
        lib.append(library.parent if library.suffix else library)
    roots = [Path(host.getenv(v)) for v in ("CUDNN_ROOT_DIR", "CUDNN_PATH") if host.getenv(v)]
    if found.root is not None:
        roots.append(found.root)
    prefix = host.getenv("CONDA_PREFIX")
    if prefix:
        roots.append(Path(prefix) / "Library" if windows_target else Path(prefix))
    if not windows_target:
        roots.append(host.sysroot / "usr" / "local" / "cuda")
    for root in roots:
        include.append(root / "include")
        lib += [root / "lib" / "x64", root / "lib"] if windows_target else [root / "lib64", root / "lib"]
    if not windows_target:
        include += [host.sysroot / "usr" / "include", host.sysroot / "usr" / "include" / "x86_64-linux-gnu"]
        lib.append(host.sysroot / "usr" / "lib" / "x86_64-linux-gnu")
    return include, lib


def _searched(dirs, variables):
    """'in A, B' for the folders searched, or why there were none: a message never ends in an empty list."""
    if dirs:
        return "in " + ", ".join(map(str, dirs))
    unset = ", ".join(variables + ("CUDNN_ROOT_DIR", "CUDNN_PATH", "CONDA_PREFIX"))
    return f"(no folder to search: no CUDA toolkit was found and {unset} are unset)"


def check_cudnn(host, found, cuda, windows_target, major=None):
    """cuDNN header and library, and their version against `major`, the variant's cuDNN major
    (variants.yaml `cudnn`; None: not compared, the version is only reported)."""
    name = "cuDNN"
    include_dirs, lib_dirs = _cudnn_dirs(host, found, windows_target)
    header, version = None, None
    for folder in include_dirs:
        # cuDNN 8+ keeps the version in cudnn_version.h; older ones in cudnn.h.
        for file_name in ("cudnn_version.h", "cudnn.h"):
            path = folder / file_name
            if path.is_file():
                version = parse_cudnn_version(path.read_text(encoding="utf-8", errors="replace"))
                if version:
                    header = path
                    break
        if header:
            break
    library = None
    patterns = ("cudnn.lib",) if windows_target else ("libcudnn.so*", "libcudnn_static.a")
    for folder in lib_dirs:
        for pattern in patterns:
            hits = sorted(folder.glob(pattern)) if folder.is_dir() else []
            if hits:
                library = hits[0]
                break
        if library:
            break
    # cuDNN goes into the toolkit it is for; not into another CUDA's that doctor found instead.
    root = found.root if found.release == cuda else None
    target = root or _standard_cuda_dir(host, cuda, windows_target) or "the CUDA folder"
    wanted = f"cuDNN {major}.x" if major else "cuDNN"
    fix = (
        f"download {wanted} for CUDA {cuda} from {CUDNN_ARCHIVE_URL} and copy its include/ and lib/ "
        f"into {target} (or set CUDNN_INCLUDE_DIR and CUDNN_LIB_DIR)"
    )
    if header and major and version.split(".")[0] != str(major):
        # The build links what it finds, and the package then depends on cudnn {major}: users
        # get a torch that fails to load (or loads another cuDNN than it was built with).
        return Check(
            name,
            FAIL,
            f"cuDNN {version} ({header}), but the CUDA {cuda} build is made with cuDNN {major} "
            "(recipes/pytorch/variants.yaml `cudnn`)",
            f"download cuDNN {major}.x for CUDA {cuda} (the 'cuDNN v{major}.x.x for CUDA {cuda}' downloads) "
            f"from {CUDNN_ARCHIVE_URL} and copy its include/ and lib/ into {target} in place of "
            f"cuDNN {version}, or set CUDNN_INCLUDE_DIR and CUDNN_LIB_DIR to a cuDNN {major} folder",
        )
    if header and library:
        wanted_note = f", the CUDA {cuda} build's cuDNN {major}" if major else ", not compared with a variant"
        return Check(name, OK, f"cuDNN {version}{wanted_note}: {header}, {library}")
    if header:
        looked = _searched(lib_dirs, ("CUDNN_LIB_DIR", "CUDNN_LIBRARY"))
        return Check(
            name,
            FAIL,
            f"cuDNN {version} header {header} but no library ({' or '.join(patterns)}) {looked}",
            fix,
        )
    missing = "no cudnn_version.h or cudnn.h with CUDNN_MAJOR " + _searched(include_dirs, ("CUDNN_INCLUDE_DIR",))
    if library:
        missing = f"library {library} but {missing}"
    return Check(name, FAIL, missing, fix)


# Where every Windows CUDA build of PyTorch 0.4.1-1.1.0 finds NvToolsExt when the upstream facts
# (recipes/pytorch/upstream/<release>.json `nvtoolsext`) cannot be read: outside a checkout.
NVTOOLSEXT_VARIABLE = "NVTOOLSEXT_PATH"
NVTOOLSEXT_DEFAULT = "C:/Program Files/NVIDIA Corporation/NvToolsExt"


def nvtoolsext_folder(host, variable=NVTOOLSEXT_VARIABLE, default=NVTOOLSEXT_DEFAULT):
    """(folder, how it was chosen): the folder a build uses, in the nvcc activation's order.

    The variable wins even when its folder lacks NvToolsExt (the activation and the build driver stop
    there too); else %ProgramFiles%\\NVIDIA Corporation\\NvToolsExt, which the activation exports as
    the variable; else, with no ProgramFiles (a win-64 check on another host), upstream's fixed folder.
    """
    given = host.getenv(variable)
    if given:
        return given.rstrip("\\/") or given, variable
    base = host.getenv("ProgramFiles")
    if base:
        return str(Path(base) / "NVIDIA Corporation" / "NvToolsExt"), "%ProgramFiles%, " + variable + " is unset"
    return default.replace("/", "\\"), "upstream's default folder, " + variable + " is unset"


def check_nvtoolsext(host, variable=NVTOOLSEXT_VARIABLE, default=NVTOOLSEXT_DEFAULT):
    """FAIL unless NvToolsExt's header and import library are where the build will look.

    Every Windows CUDA build links lib/x64/nvToolsExt64_1.lib (what the nvcc activation and the build
    driver check) and compiles torch/csrc/autograd/profiler.h, which includes nvToolsExt.h from its include/.
    """
    name = "NvToolsExt"
    folder, how = nvtoolsext_folder(host, variable, default)
    root = Path(folder)
    header = root / "include" / "nvToolsExt.h"
    library = root / "lib" / "x64" / "nvToolsExt64_1.lib"
    if header.is_file() and library.is_file():
        return Check(name, OK, f"{folder} (from {how})")
    missing = " and ".join(str(p) for p in (header, library) if not p.is_file())
    return Check(
        name,
        FAIL,
        f"missing {missing} (from {how}); a CUDA build stops there",
        "rerun the CUDA installer with its 'Nsight NVTX' component, which installs "
        r"C:\Program Files\NVIDIA Corporation\NvToolsExt, or unpack NvToolsExt anywhere and set "
        f"{variable} to that folder",
    )

"""What a PyTorch build string says: its Python and its CUDA release (or CPU).

Our builds (recipes/pytorch) are named py<XY>_cuda<XY>_cudnn<N>_<number> or py<XY>_cpu_<number>;
other channels' builds are read from their depends instead. The channel page, the "Try it"
lines and the records read by build all use these, so they live below all of them.
"""

import re

TORCH_NAMES = ("pytorch", "pytorch-cpu", "pytorch-nightly", "pytorch-nightly-cpu")
_BUILD_RE = re.compile(r"^py(?P<py>\d\d+)_(?:cuda(?P<cuda>\d\d+)_cudnn\d+|(?P<cpu>cpu))_\d+$")
_PY_DEP_RE = re.compile(r"^python\s+(?:>=|==|=)?\s*(\d+)\.(\d+)")
_CUDATOOLKIT_RE = re.compile(r"^cudatoolkit\s+(?:>=|==|=)?\s*(\d+)\.(\d+)")
_FEATURE_RE = re.compile(r"^cuda(\d\d+)$")


def python_of(build, depends):
    """'py36_...' -> '3.6', 'py310_...' -> '3.10'; else from a 'python >=3.6,<3.7' dependency."""
    match = re.match(r"^py(\d)(\d+)_", build)
    if match:
        return ".".join(match.groups())
    for dep in depends:
        match = _PY_DEP_RE.match(dep)
        if match:
            return ".".join(match.groups())
    return None


def compute_of(build, depends):
    """'..._cuda90_...' -> '9.0', '..._cpu_...' -> 'cpu'; else from cudatoolkit/cpuonly/pytorch-mutex."""
    match = _BUILD_RE.match(build)
    if match:
        return "cpu" if match.group("cpu") else _cuda_digits(match.group("cuda"))
    for dep in depends:
        parts = dep.split()
        match = _CUDATOOLKIT_RE.match(dep)
        if match:
            return ".".join(match.groups())
        if parts and parts[0] == "cpuonly":
            return "cpu"
        if parts and parts[0] == "pytorch-mutex" and len(parts) == 3:
            return "cpu" if parts[2] == "cpu" else None
        if parts and _FEATURE_RE.match(parts[0]):
            return _cuda_digits(_FEATURE_RE.match(parts[0]).group(1))
    return None


def _cuda_digits(digits):
    """'90' -> '9.0', '100' -> '10.0': the last digit is the minor version."""
    return f"{digits[:-1]}.{digits[-1]}"


def is_torch(name, build):
    return name in TORCH_NAMES or bool(_BUILD_RE.match(build))

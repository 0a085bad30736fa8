"""The host prefix of a build without conda: a CPython of the variant's version plus PyPI packages.

The engine would solve the recipe's `requirements: host` from conda channels into PREFIX. Here a
virtual environment of a CPython X.Y (pyenv's, or one named with --python-exe) plays PREFIX, and
each conda host requirement is translated into the PyPI requirements that put the same files in
the same places (`lib/`, `include/`, site-packages): `CONDA_TO_PYPI` is the one table of that.
A conda requirement the table does not know stops the build (it would silently go missing).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

from torchwin.errors import Failure, UserError

# conda host requirement name -> PyPI requirements standing in for it, per Python version where
# the era needs an older pin. "{spec}" is the conda version spec turned into a pip one.
#   - mkl-devel 2019: PyPI has no mkl-devel 2019 (2018.0.x, then 2021.1.1 on); the `mkl` 2019.0
#     wheel carries the unversioned libmkl_*.so that FindMKL links and mkl-include the headers.
#   - setuptools: these setup.py files use distutils APIs that setuptools 60 replaced.
#   - cffi/pycparser: the newest releases that still install on Python 3.6.
CONDA_TO_PYPI = {
    "python": [],
    "pip": [],
    "numpy": ["numpy{spec}"],
    "pyyaml": ["pyyaml{spec}"],
    "mkl-devel": ["mkl==2019.0", "mkl-include==2019.0", "intel-openmp==2019.0"],
    "setuptools": ["setuptools<60", "wheel<0.38"],
    "ninja": ["ninja"],
    "cffi": ["cffi<1.16", "pycparser<2.22"],
    "typing": [],  # in the standard library from Python 3.5
}

# The conda run requirements of a pytorch package -> the PyPI packages that stand in for them at
# run time (the wheel's test environment, and the conda packages repacked from them). mkl's
# wheel requires intel-openmp and cffi's pycparser, so each comes with its own requirement.
RUN_TO_PYPI = {
    "python": [],
    "pytorch-mutex": [],
    "numpy": None,  # the host prefix's numpy pin: the ABI the build compiled against
    "mkl": ["mkl==2019.0", "intel-openmp==2019.0"],
    "intel-openmp": ["intel-openmp==2019.0"],
    "cffi": ["cffi<1.16", "pycparser<2.22"],
}

MARKER = "torchwin-host-prefix.json"


def pip_spec(conda_spec: str) -> str:
    """`1.15.*` -> `==1.15.*`, `<6` -> `<6`, `>=1.15` -> `>=1.15`, `` -> ``."""
    spec = conda_spec.strip().replace(" ", "")
    if not spec:
        return ""
    if re.fullmatch(r"[0-9][0-9A-Za-z.*]*", spec):
        return "==" + spec
    return spec


def pypi_requirements(host_requirements: list[str], source: str = "recipes/pytorch") -> list[str]:
    """The PyPI requirements that stand in for the variant's conda host requirements."""
    out = []
    for requirement in host_requirements:
        name, _, spec = requirement.strip().partition(" ")
        if name not in CONDA_TO_PYPI:
            raise UserError("%s: host requirement %r has no PyPI stand-in (known: %s); this variant cannot be "
                            "built without conda" % (source, requirement, ", ".join(sorted(CONDA_TO_PYPI))))
        for item in CONDA_TO_PYPI[name]:
            if item not in out:
                out.append(item.format(spec=pip_spec(spec)))
    return out


def runtime_requirements(depends: list[str], host_requirements: list[str],
                         source: str = "recipes/pytorch") -> list[str]:
    """The PyPI packages standing in for a pytorch package's conda run requirements."""
    out = []
    for requirement in depends:
        name = requirement.split()[0]
        if name not in RUN_TO_PYPI:
            raise UserError("%s: run requirement %r has no PyPI stand-in (known: %s)"
                            % (source, requirement, ", ".join(sorted(RUN_TO_PYPI))))
        items = RUN_TO_PYPI[name]
        if items is None:
            items = [r for r in pypi_requirements(host_requirements, source) if r.split("=")[0].split("<")[0]
                     .split(">")[0] == name]
        out += [item for item in items if item not in out]
    return out


def find_python(version: str, explicit: str | None = None, environ=None) -> Path:
    """The CPython X.Y to build with: --python-exe, else pyenv's newest X.Y.*, else pythonX.Y on PATH."""
    environ = os.environ if environ is None else environ
    if explicit:
        path = Path(explicit)
        found = _python_version(path)
        if found is None:
            raise UserError("--python-exe %s: not a Python interpreter that runs" % explicit)
        if found != version:
            raise UserError("--python-exe %s is Python %s, but the variant needs %s" % (explicit, found, version))
        return path
    roots = [environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    candidates = []
    for root in roots:
        for folder in glob.glob(os.path.join(root, "versions", version + ".*")):
            if re.fullmatch(re.escape(version) + r"\.\d+", os.path.basename(folder)):
                candidates.append(Path(folder) / "bin" / ("python" + version))
    candidates.sort(key=lambda p: int(p.parent.parent.name.rsplit(".", 1)[1]), reverse=True)
    from shutil import which

    on_path = which("python" + version, path=environ.get("PATH"))
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if _python_version(candidate) == version:
            return candidate
    raise UserError("no CPython %s found (looked in pyenv's versions/%s.* and for python%s on PATH); install "
                    "it (`pyenv install %s`) or name one with --python-exe" % (version, version, version, version))


def _python_version(path: Path) -> str | None:
    try:
        out = subprocess.run([str(path), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def pip_environment(environ=None) -> dict:
    """pip with no site configuration: a machine-wide constraint file must not pin torch or numpy here."""
    env = dict(os.environ if environ is None else environ)
    env["PIP_CONFIG_FILE"] = os.devnull
    env.pop("PIP_CONSTRAINT", None)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def make_venv(python: Path, folder: Path, requirements: list[str], log) -> Path:
    """A virtual environment at `folder` with `requirements`; reused when it already has exactly these.

    Returns its interpreter. The marker file is written last, so an interrupted install is redone.
    """
    marker = folder / MARKER
    wanted = {"python": str(python), "requirements": requirements}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == wanted:
                return folder / "bin" / "python"
        except ValueError:
            pass
    _run([str(python), "-m", "venv", "--clear", str(folder)], log, "create the virtual environment %s" % folder)
    interpreter = folder / "bin" / "python"
    if requirements:
        _run([str(interpreter), "-m", "pip", "install", "--no-input", *requirements], log,
             "pip install %s" % " ".join(requirements), env=pip_environment())
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(wanted, indent=1) + "\n")
    tmp.replace(marker)
    return interpreter


def requirements_digest(requirements: list[str]) -> str:
    return hashlib.sha256("\n".join(requirements).encode()).hexdigest()[:12]


def _run(argv, log, what, env=None):
    log.write("$ %s\n" % " ".join(argv))
    log.flush()
    code = subprocess.call(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        raise Failure("could not %s (exit %d); see %s" % (what, code, getattr(log, "name", "the log")))

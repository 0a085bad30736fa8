"""`torchwin wheel`: the command line of a build without conda (see the package docstring)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from torchwin import recipes
from torchwin.checkout import require_repo_root
from torchwin.errors import Failure, UserError
from torchwin.wheel import conda_package, host_prefix, run, toolchain

DESCRIPTION = """\
Compile one PyTorch release from source on Linux without conda, exactly as the recipe
would: recipes/pytorch/build_driver.py runs in the environment the engine gives the
recipe's build script (SRC_DIR, PREFIX, RECIPE_DIR and the recipe's TORCHWIN_* values for
the variant, from the render). The host prefix is a virtual environment of a CPython of the
variant's version (pyenv's, or --python-exe) with PyPI packages standing in for the recipe's
conda host requirements (numpy, pyyaml, MKL 2019, ...).

The results, each installed fresh and checked with the package test
(recipes/pytorch/run_test.py, with the recipe's expectations):
  - a wheel in BUILD_DIR/dist (the 2017 Windows builds' install path), pip-installed into a
    new environment of the same Python;
  - a conda package of the same files in BUILD_DIR/conda, made by the engine under the
    rendered variant's name, build string and run requirements, and installed by conda
    (--conda, default: conda on PATH) from a local channel of its run requirements repacked
    from this machine (the CPython, numpy/MKL wheels, pytorch-select); without a conda it is
    made but not installed.
BUILD_DIR/result.json records the times, the memory peak and the test counts.

Run the same command again to resume: the source keeps its build/ folder, the host prefix
is reused, and ccache (on by default) answers every compile it has seen.
"""

EXAMPLES = """\
examples:
  torchwin wheel 1.4.0 --python 3.7 --source ~/src/pytorch-1.4.0
  torchwin wheel 1.4.0 --python 3.7 --source SRC --sysroot /srv/bullseye --cc gcc-9 --cxx g++-9
                                  gcc 9 from a Debian root made with
                                  `debootstrap --variant=minbase --include=g++-9 bullseye /srv/bullseye`
  torchwin wheel 0.3.1 --python 3.6 --source SRC --jobs 2 --build-dir /tmp/b
  torchwin wheel 1.4.0 --python 3.7 --source SRC --plan
                                  print the variant, the environment and the steps; build nothing

The source is a checkout of the release with its submodules, e.g.
  git clone --recursive --branch v1.4.0 https://github.com/pytorch/pytorch SRC
(from local mirrors: git -c url./srv/mirrors/pybind11.insteadOf=https://github.com/pybind/pybind11 ...).
The driver refuses a tree that declares another version or lacks a submodule it needs.
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "wheel",
        help="compile one release from source without conda, into a wheel, and test it",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("release", metavar="RELEASE", help="a pytorch_version of recipes/pytorch/variants.yaml")
    parser.add_argument("--python", required=True, metavar="X.Y", help="the variant's Python, e.g. 3.7")
    parser.add_argument("--cuda", default="none", metavar="none",
                        help="only `none` (the CPU build): CUDA builds need the recipe's toolchain packages")
    parser.add_argument("--source", required=True, metavar="DIR", help="the release's source tree (with submodules)")
    parser.add_argument("--build-dir", metavar="DIR",
                        help="where the prefix, logs, wheel and result go (default: build/wheel/<release>-py<XY>-cpu "
                             "in the checkout); reuse it to resume")
    parser.add_argument("--python-exe", metavar="PATH", help="the CPython X.Y to use (default: pyenv's newest X.Y.*)")
    parser.add_argument("--cc", default=os.environ.get("CC") or "gcc", metavar="NAME",
                        help="C compiler (default: $CC, else gcc); with --sysroot, a name in SYSROOT/usr/bin")
    parser.add_argument("--cxx", default=os.environ.get("CXX") or "g++", metavar="NAME",
                        help="C++ compiler (default: $CXX, else g++)")
    parser.add_argument("--sysroot", metavar="DIR",
                        help="a Debian root file system whose gcc builds (e.g. bullseye's gcc 9)")
    parser.add_argument("--jobs", type=int, metavar="N", help="parallel compiles (MAX_JOBS; default: all cores)")
    parser.add_argument("--ccache-dir", metavar="DIR",
                        help="ccache's folder (default: $CCACHE_DIR, else ~/.cache/torchwin/ccache)")
    parser.add_argument("--no-ccache", action="store_true", help="compile without ccache")
    parser.add_argument("--no-test", action="store_true", help="build the wheel, skip the package tests")
    parser.add_argument("--no-conda-package", action="store_true", help="make no conda package")
    parser.add_argument("--conda", metavar="PATH",
                        help="the conda that installs the conda package to test it (default: conda on PATH)")
    parser.add_argument("--plan", action="store_true", help="print what would run and stop")
    parser.set_defaults(func=main)


def pick_variant(release: str, python: str, cuda: str):
    """The rendered linux-64 pytorch variant for (release, python, CPU); a clear error lists what exists."""
    if cuda.lower() not in ("none", "cpu"):
        raise UserError("--cuda %s: only `none` is built by `torchwin wheel` (a CUDA build needs the nvcc "
                        "package's activation; use `torchwin build recipes/pytorch` on a CUDA machine)" % cuda)
    recipe_dir = require_repo_root() / "recipes" / "pytorch"
    if recipes.host_platform() != "linux-64":
        raise UserError("`torchwin wheel` builds on Linux only; on Windows use `conda build recipes/pytorch`")
    variants = [v for v in recipes.render_recipe(recipe_dir, "linux-64") if v.name == "pytorch"]
    releases = sorted({str(v.variant["pytorch_version"]) for v in variants}, key=recipes._version_key)
    if release not in releases:
        raise UserError("release %s: not in recipes/pytorch/variants.yaml; allowed: %s" % (release, ", ".join(releases)))
    cpu = [v for v in variants if str(v.variant["pytorch_version"]) == release
           and str(v.variant["cuda_compiler_version"]) == "None"]
    pythons = sorted({str(v.variant["python"]) for v in cpu})
    chosen = [v for v in cpu if str(v.variant["python"]) == python]
    if not chosen:
        raise UserError("--python %s: PyTorch %s has no linux-64 CPU build for it; allowed: %s"
                        % (python, release, ", ".join(pythons)))
    return chosen[0], recipe_dir


def main(args) -> int:
    variant, recipe_dir = pick_variant(args.release, args.python, args.cuda)
    source = run.check_source(Path(args.source))
    root = require_repo_root()
    build_dir = Path(args.build_dir or root / "build" / "wheel" / (
        "%s-py%s-cpu" % (args.release, args.python.replace(".", "")))).resolve()
    if args.jobs is not None and args.jobs < 1:
        raise UserError("--jobs %d: must be 1 or more" % args.jobs)
    requirements = host_prefix.pypi_requirements(variant.host_requirements)
    python = host_prefix.find_python(args.python, args.python_exe)
    ccache_dir = Path(args.ccache_dir or os.environ.get("CCACHE_DIR") or Path.home() / ".cache" / "torchwin" / "ccache")
    build_dir.mkdir(parents=True, exist_ok=True)
    tools = toolchain.resolve(args.cc, args.cxx, args.sysroot, not args.no_ccache, build_dir / "toolchain")
    prefix = build_dir / "prefix"
    env = {k: os.environ[k] for k in run.KEPT_VARIABLES if k in os.environ}
    env.update(run.engine_environment(variant, source, prefix, recipe_dir))
    env.update(tools.environment(None if args.no_ccache else ccache_dir))
    env["PATH"] = os.pathsep.join([str(prefix / "bin"), str(tools.wrapper_dir), os.environ.get("PATH", "")])
    env["MAX_JOBS"] = str(args.jobs or os.cpu_count() or 1)
    dist = build_dir / "dist"
    driver = [str(prefix / "bin" / "python"), str(recipe_dir / run.DRIVER), "--wheel-dir", str(dist)]
    say = print
    say("torchwin wheel: PyTorch %s, %s, Python %s (%s), %s" % (
        variant.version, variant.build_string, args.python, python, tools.describe()))
    say("  source %s, build folder %s" % (source, build_dir))
    say("  host requirements (PyPI stand-ins): %s" % " ".join(requirements))
    if args.plan:
        for key in sorted(env):
            if key.startswith(("TORCHWIN_", "SRC_DIR", "PREFIX", "RECIPE_DIR", "CC", "CXX", "MAX_JOBS", "CCACHE_")):
                say("  %s=%s" % (key, env[key]))
        say("  then: %s (in %s)" % (" ".join(driver), source))
        say("  then: install the wheel into %s and run %s" % (build_dir / "test-wheel", recipe_dir / run.RUN_TEST))
        return 0

    started = time.time()
    with open(build_dir / "logs-prefix.log", "a") as log:
        say("host prefix: %s" % prefix)
        host_prefix.make_venv(python, prefix, requirements, log)
    log_path = build_dir / "logs" / ("build-%s.log" % time.strftime("%Y%m%d-%H%M%S"))
    progress = run.Progress("compiling %s" % variant.version)
    code, seconds, peak_mb = run.run_logged(driver, env, source, log_path, progress)
    progress.done(code == 0)
    result = {
        "release": args.release, "version": variant.version, "platform": "linux-64", "python": args.python,
        "build_string": variant.build_string, "compiler": "gcc %s" % tools.version,
        "sysroot": str(tools.sysroot) if tools.sysroot else None, "ccache": bool(tools.ccache),
        "build_s": round(seconds, 1), "peak_rss_mb": peak_mb, "log": str(log_path), "exit_code": code,
    }
    if code != 0:
        run.write_json(build_dir / "result.json", result)
        raise Failure("the build failed (exit %d): %s; the whole log is %s"
                      % (code, run.last_error_line(log_path), log_path))
    wheel = run.wheel_file(dist, started)
    result["wheel"] = wheel.name
    say("wheel: %s (%.1f MB)" % (wheel, wheel.stat().st_size / 1e6))
    runtime = host_prefix.runtime_requirements(variant.depends, variant.host_requirements)
    test_env = run.test_environment(variant)
    failures = []
    if not args.no_test:
        report = run.test_wheel(python, wheel, build_dir, runtime, recipe_dir, test_env)
        result["run_test"] = run.summary_counts(report)
        say("package test on the wheel: %s" % report.get("summary", {}).get("line", result["run_test"]))
        if result["run_test"]["failed"]:
            failures.append("the wheel: %s (%s)" % (report["summary"]["line"],
                                                    build_dir / "logs" / "run_test-wheel.json"))
    # Written before the conda package is made, so what was measured survives a failure there.
    run.write_json(build_dir / "result.json", result)
    result.update(conda_step(args, variant, python, source, prefix, build_dir, runtime, test_env, say))
    if (result.get("conda_run_test") or {}).get("failed"):  # None: no conda to test with
        failures.append("the conda package: %d failed" % result["conda_run_test"]["failed"])
    run.write_json(build_dir / "result.json", result)
    say("result: %s" % (build_dir / "result.json"))
    if failures:
        raise Failure("the package test failed on %s" % "; on ".join(failures))
    return 0


def conda_step(args, variant, python, source, prefix, build_dir, runtime, test_env, say) -> dict:
    """Pack the build as the variant's conda package; install it with conda and test it when one is there."""
    import shutil

    if args.no_conda_package:
        return {"conda_package": None, "conda_package_why": "--no-conda-package"}
    record = source / "record.txt"
    package = conda_package.pack(variant, prefix, record, build_dir / "conda")
    say("conda package: %s (%.1f MB)" % (package, package.stat().st_size / 1e6))
    out = {"conda_package": package.name,
           "conda_package_why": "built by the engine from a generated recipe with the variant's identity and "
                                "run requirements (recipes/pytorch's host environment cannot be solved without "
                                "a conda channel), payload = the files setup.py install recorded"}
    conda = args.conda or shutil.which("conda")
    if args.no_test:
        return out
    if not conda:
        say("conda package not installed: no conda on PATH (pass --conda PATH to test it)")
        out["conda_run_test"] = None
        return out
    say("conda package test: a channel of its run requirements (%s), then conda create" % " ".join(runtime))
    deps = conda_package.dependency_channel(python, runtime, build_dir / "deps-channel",
                                            for_depends=variant.depends)
    ours = conda_package.index_channel(build_dir / "channel", [package])
    report = conda_package.install_and_test(
        conda, [ours, deps], ["%s=%s=%s" % (variant.name, variant.version, variant.build_string)],
        build_dir / "test-conda", run.run_test_arguments(test_env))
    (build_dir / "logs" / "run_test-conda.json").write_text(json.dumps(report, indent=2) + "\n")
    out["conda_run_test"] = {k: report[k] for k in ("passed", "failed", "skipped")}
    out["conda"] = str(conda)
    say("package test on the conda package: %s" % report["summary"]["line"])
    return out


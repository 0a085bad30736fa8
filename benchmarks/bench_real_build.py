#!/usr/bin/env python3
"""Measure a real compile with `torchwin wheel`: cold, then warm with ccache; record it.

Benchmarks assert nothing; they measure. The phases, each a full `torchwin wheel` run (compile,
install, wheel, package test) whose compile step is timed:

    cold         a copy of the pristine source, an empty ccache folder
    one_file     the same tree again after touching one source file (CMake/Ninja or distutils
                 redo that file and the links; ccache answers it: the content is the same)
    one_edit     the same tree again after appending a declaration to that file: a real
                 one-file change, compiled (a ccache miss), then the links; the line stays.
                 Not a comment: ccache's preprocessor mode drops comments and finds the object
    no_change    the same tree again, nothing changed
    fresh_tree   a second fresh copy of the source with the warm ccache (a new build folder:
                 every compile goes through ccache, so this is what the cache alone saves),
                 each under <its first folder's parent>-fresh with the same name: ccache finds
                 the objects only where the paths relative to each compile are the same

The result is one object per compiled release in benchmarks/results/real_build.json (merged by
release, platform and python; written atomically).

    python benchmarks/bench_real_build.py 0.3.1 --python 3.6 --source SRC --work /tmp/bench \\
        -- --sysroot /srv/bullseye --cc gcc-9 --cxx g++-9
    ... --phases one_file,no_change --work /tmp/bench    resume: the cold build is already in WORK

A cold build that outlasted one sitting (1.x on 2 cores) and was resumed with the same
`torchwin wheel` command is recorded from what those runs printed, not re-measured:

    ... --cold-from run1.out run2.out --cold-note "run 1 at nice 19 beside other jobs"

each file being one run's output (its last "compiling R: N/M compiled (...), H:MM:SS elapsed"
line, and "done in H:MM:SS" for the run that finished); the cold time is their sum and the entry
says it was resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "real_build.json"
PHASES = ("cold", "one_file", "one_edit", "no_change", "fresh_tree")
# A file every release compiles, in the order tried: touching it recompiles one object.
TOUCH_CANDIDATES = ("aten/src/ATen/native/Convolution.cpp", "torch/csrc/autograd/engine.cpp",
                    "torch/lib/TH/THGeneral.c")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("release")
    parser.add_argument("--python", required=True)
    parser.add_argument("--source", required=True, help="a pristine source tree (copied, never changed)")
    parser.add_argument("--work", required=True, help="folder for the copies, build folders and ccache")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ", ".join(PHASES))
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--cold-from", nargs="+", metavar="RUN_OUTPUT",
                        help="record the cold phase from the outputs of the runs of one resumed build")
    parser.add_argument("--cold-note", default="", help="the conditions of those runs (load, nice)")
    argv = list(sys.argv[1:] if argv is None else argv)
    # After `--`: more `torchwin wheel` options (--sysroot, --cc, --cxx, --jobs).
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        parser.error("--phases: unknown %s; allowed: %s" % (", ".join(unknown), ", ".join(PHASES)))
    work = Path(args.work).resolve()
    if args.cold_from:
        cold = cold_from_runs([Path(f) for f in args.cold_from], args.cold_note)
        print("cold (resumed, %d runs): compile %s s" % (len(cold["segments"]), cold["build_s"]), file=sys.stderr)
        record(Path(args.results), args, {"cold": cold})
        return 0
    work.mkdir(parents=True, exist_ok=True)
    ccache = work / "ccache"
    measured = {}
    for phase in phases:
        tree, build = work / "src", work / "build"
        if phase == "fresh_tree":
            tree, build = beside(tree), beside(build)
        if phase in ("cold", "fresh_tree"):
            for folder in (tree, build) + ((ccache,) if phase == "cold" else ()):
                shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(args.source, tree, symlinks=True)
        if phase in ("one_file", "one_edit"):
            touched = next((tree / c for c in TOUCH_CANDIDATES if (tree / c).is_file()), None)
            if touched is None:
                parser.error("none of %s is in the tree to touch" % ", ".join(TOUCH_CANDIDATES))
            if phase == "one_edit":
                with open(touched, "a") as source:
                    source.write("\nextern int torchwin_bench_one_edit_%s;\n"
                                 % datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"))
            else:
                touched.touch()
            measured["touched"] = str(touched.relative_to(tree))
        zero_stats(ccache)
        load_before = os.getloadavg()[0]
        result, wall = run_wheel(args.release, args.python, tree, build, ccache, extra)
        measured[phase] = {"build_s": result.get("build_s"), "wall_s": round(wall, 1),
                           "peak_rss_mb": result.get("peak_rss_mb"), "load_avg_before": round(load_before, 2),
                           "ccache": ccache_stats(ccache), "exit_code": result.get("exit_code"),
                           "run_test": result.get("run_test"), "wheel": result.get("wheel"),
                           "conda_package": result.get("conda_package"),
                           "conda_run_test": result.get("conda_run_test"),
                           "conda_package_why": result.get("conda_package_why"),
                           "wheel_command_exit_code": result.get("wheel_command_exit_code")}
        print("%s: compile %s s, peak %s MB, %s" % (phase, result.get("build_s"), result.get("peak_rss_mb"),
                                                   measured[phase]["ccache"]), file=sys.stderr)
        measured["compiler"] = result.get("compiler")
        # After every phase: an interrupted run keeps what it measured.
        record(Path(args.results), args, measured)
    return 0


PROGRESS_RE = re.compile(r"^compiling \S+: (\d+)/(\d+) compiled \(\d+%\), (\d+):(\d\d):(\d\d) elapsed$", re.M)
DONE_RE = re.compile(r"^compiling \S+: done in (\d+):(\d\d):(\d\d)$", re.M)


def cold_from_runs(outputs, note) -> dict:
    """The cold phase of a build resumed across runs: each run's compile time, from its output."""
    segments = []
    for path in outputs:
        text = path.read_text(errors="replace")
        done = DONE_RE.findall(text)
        steps = PROGRESS_RE.findall(text)
        if not done and not steps:
            raise SystemExit("%s: no `compiling ...` progress line: not the output of `torchwin wheel`" % path)
        if done:
            seconds = _seconds(*done[-1])
        else:
            seconds = _seconds(*steps[-1][2:])
        segment = {"output": path.name, "compile_s": seconds, "finished": bool(done)}
        if steps:
            segment["steps"] = "%s/%s" % steps[-1][:2]
        segments.append(segment)
    if not segments[-1]["finished"]:
        raise SystemExit("%s: the last run did not finish its compile" % outputs[-1])
    return {"build_s": float(sum(s["compile_s"] for s in segments)), "resumed": True, "segments": segments,
            "note": note or None, "wall_s": None, "ccache": None}


def _seconds(hours, minutes, seconds) -> int:
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds)


def beside(path: Path) -> Path:
    """WORK/src -> <parent>-fresh/src, of its real folder. ccache (CCACHE_BASEDIR=/) hashes paths relative
    to the compile's folder: a copy finds the cache only at the same depth and with the same names
    around it (1.x compiles name the host prefix in the build folder, e.g. its MKL headers)."""
    real = path.resolve()
    return real.parent.with_name(real.parent.name + "-fresh") / real.name


def run_wheel(release, python, tree, build, ccache, extra):
    # Real paths: WORK/src may be a link to a tree built before, whose CMake cache names the real one.
    tree, build, ccache = tree.resolve(), build.resolve(), ccache.resolve()
    argv = [sys.executable, "-m", "torchwin", "wheel", release, "--python", python, "--source", str(tree),
            "--build-dir", str(build), "--ccache-dir", str(ccache), *extra]
    result_file = build / "result.json"
    # A result left by an earlier run must never stand in for this one's.
    result_file.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=str(ROOT))
    wall = time.monotonic() - start
    if not result_file.is_file():
        raise SystemExit("torchwin wheel wrote no %s (exit %d)" % (result_file, proc.returncode))
    result = json.loads(result_file.read_text())
    result["wheel_command_exit_code"] = proc.returncode
    return result, wall


def zero_stats(ccache):
    subprocess.run(["ccache", "--zero-stats"], env=dict(os.environ, CCACHE_DIR=str(ccache)), capture_output=True)


def ccache_stats(ccache) -> dict:
    """Hits and misses of the phase (ccache --print-stats, zeroed before it)."""
    proc = subprocess.run(["ccache", "--print-stats"], env=dict(os.environ, CCACHE_DIR=str(ccache)),
                          capture_output=True, text=True)
    stats = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    keys = {"direct_cache_hit": "direct_hits", "preprocessed_cache_hit": "preprocessed_hits",
            "cache_miss": "misses"}
    return {name: int(stats.get(key, 0)) for key, name in keys.items()}


def record(path: Path, args, measured):
    """Merge this release's object into the results file."""
    entries = json.loads(path.read_text()) if path.is_file() else []
    key = (args.release, "linux-64", args.python)
    entry = next((e for e in entries if (e["release"], e["platform"], e["python"]) == key), None)
    if entry is None:
        entry = {"release": args.release, "platform": "linux-64", "python": args.python}
        entries.append(entry)
    entry.setdefault("phases", {}).update({p: measured[p] for p in PHASES if p in measured})
    phases = entry["phases"]
    if "touched" in measured:
        entry["touched"] = measured["touched"]
    entry["compiler"] = measured.get("compiler") or entry.get("compiler")
    cold = (phases.get("cold") or {}).get("build_s")
    warm = (phases.get("one_file") or {}).get("build_s")
    entry["cold_s"] = cold
    entry["warm_s"] = warm
    entry["warm_edit_s"] = (phases.get("one_edit") or {}).get("build_s")
    entry["warm_edit_over_cold"] = round(entry["warm_edit_s"] / cold, 3) if cold and entry["warm_edit_s"] else None
    entry["warm_no_change_s"] = (phases.get("no_change") or {}).get("build_s")
    entry["warm_fresh_tree_s"] = (phases.get("fresh_tree") or {}).get("build_s")
    entry["warm_over_cold"] = round(warm / cold, 3) if cold and warm else None
    entry["peak_rss_mb"] = max([p.get("peak_rss_mb") or 0 for p in phases.values()] or [0]) or None
    # Which phases that peak is over (a resumed cold build has none of its own).
    entry["peak_rss_phases"] = [name for name in PHASES if (phases.get(name) or {}).get("peak_rss_mb")]
    # The package tests of the newest phase: the same build, tested with the newest code.
    last = next(phases[p] for p in reversed(PHASES) if p in phases)
    entry["wheel"] = last.get("wheel")
    entry["run_test"] = last.get("run_test")
    entry["conda_package"] = last.get("conda_package")
    entry["conda_run_test"] = last.get("conda_run_test")
    entry["conda_package_why"] = last.get("conda_package_why")
    entry["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "measured": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    entries.sort(key=lambda e: (e["release"], e["platform"], e["python"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())

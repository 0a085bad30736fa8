#!/usr/bin/env python3
"""Measure torchwin's pipeline on this machine: render, package, index, solve, and each step's memory peak.

Benchmarks assert nothing; they measure. Each measurement runs in its own
Python process, so its peak memory is its own and one step's caches do not
speed up the next. Results: a table (stdout) and, with --json, JSON.

    python benchmarks/run.py --quick            under a minute on 2 cores
    python benchmarks/run.py --quick --json     JSON on stdout, the table on stderr
    python benchmarks/run.py --json full.json   the full run (tens of minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
try:  # a checkout where torchwin is not installed yet still runs
    import torchwin  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT / "scripts"))

import bench_util  # noqa: E402  (after the sys.path set-up above)
from bench_util import MB  # noqa: E402

STEPS = ("render", "packaging", "index", "solve")

# (tool, format, zstd or bzip2 level, threads); None = the tool's own default.
ENGINE = "rattler-build"
CPH = "conda-package-handling"
MODES = {
    "smoke": {
        "render_repeats": 1,
        "payload_bytes": 2 * MB,
        "pack": [(ENGINE, "conda", 3, 1), (ENGINE, "tar.bz2", 9, 1), (CPH, "conda", None, None)],
        "index_sizes": [5],
        "solve_sizes": [0],
        "solve_repeats": 1,
    },
    "quick": {
        "render_repeats": 3,
        "payload_bytes": 16 * MB,
        "pack": [(ENGINE, "conda", 3, 2), (ENGINE, "conda", 10, 2), (ENGINE, "conda", 19, 2),
                 (ENGINE, "tar.bz2", 9, 1), (CPH, "conda", None, None), (CPH, "conda", 10, 2)],
        "index_sizes": [10, 100],
        "solve_sizes": [0, 1000, 10000],
        "solve_repeats": 3,
    },
    "full": {
        "render_repeats": 10,
        "payload_bytes": None,  # the whole torch package
        "pack": [(ENGINE, "conda", 3, 1), (ENGINE, "conda", 3, 2), (ENGINE, "conda", 10, 1),
                 (ENGINE, "conda", 10, 2), (ENGINE, "conda", 15, 2), (ENGINE, "conda", 19, 1),
                 (ENGINE, "conda", 19, 2), (ENGINE, "conda", 22, 2), (ENGINE, "tar.bz2", 9, 1),
                 (CPH, "conda", None, None), (CPH, "conda", 10, 2)],
        "index_sizes": [10, 100, 1000],
        "solve_sizes": [0, 1000, 10000, 100000],
        "solve_repeats": 5,
    },
}


class StepFailed(Exception):
    pass


def child(name: str, params: dict, workdir: Path) -> dict:
    """Run one measurement in a fresh Python process; return its result (with its memory peak)."""
    jobs = workdir / "jobs"
    jobs.mkdir(exist_ok=True)
    stem = f"{len(list(jobs.iterdir())):03d}-{name}"
    params_path = jobs / (stem + ".params.json")
    result_path = jobs / (stem + ".result.json")
    log_path = jobs / (stem + ".log")
    bench_util.write_json(params_path, params)
    with open(log_path, "wb") as log:
        code = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--child", name,
                                str(params_path), str(result_path)], stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(ROOT))
    if code != 0 or not result_path.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-6:]
        raise StepFailed(f"{name} exited with {code}: {' | '.join(tail) or 'no output'}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def child_main(name: str, params_path: str, result_path: str) -> int:
    """Inside the child process: run the step, add the peak memory, write the result file."""
    import bench_index
    import bench_pack
    import bench_render
    import bench_solve

    steps = {
        "baseline": baseline,
        "render": bench_render.run,
        "pack": bench_pack.run,
        "build-tiny": bench_index.build,
        "index": bench_index.full_index,
        "add-one": bench_index.add_one,
        "solve-channel": bench_solve.write,
        "solve": bench_solve.run,
    }
    params = json.loads(Path(params_path).read_text(encoding="utf-8"))
    result = steps[name](params)
    result["peak_rss_mb"] = bench_util.peak_rss_mb()
    bench_util.write_json(Path(result_path), result)
    # py-rattler's background threads can crash a normal interpreter shutdown after index_fs
    # (SIGSEGV / "PyGILState_Release ... finalizing", about 1 run in 4 here): the result is
    # written, so leave without the shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def baseline(params: dict) -> dict:
    """The floor under every other figure: Python with the engine, the solver and torchwin imported."""
    import rattler  # noqa: F401
    import rattler_build  # noqa: F401
    import torchwin.channel.command
    import torchwin.recipes  # noqa: F401

    return {}


class Progress:
    def __init__(self, stream):
        self.stream = stream
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.stream, flush=True)


def run_render(mode, workdir, report, progress):
    progress.say(f"render: whole matrix x {mode['render_repeats']}")
    report["render"] = child("render", {"repeats": mode["render_repeats"]}, workdir)


def run_packaging(mode, workdir, report, progress):
    import bench_pack

    payload = bench_pack.prepare_payload(mode["payload_bytes"], workdir, mode["payload"])
    section = {"payload": payload, "rows": []}
    report["packaging"] = section
    version, why = bench_pack.cph_available()
    section["conda_package_handling"] = version or ("skipped: " + why)
    sampled = " (sample)" if payload.get("sampled") else ""
    progress.say(f"packaging: {payload['source']}, {payload['bytes'] / MB:.0f} MB in {payload['files']} files{sampled}")
    out_dir = workdir / "packages"
    cph_prefix = workdir / "cph-prefix"
    for tool, fmt, level, threads in mode["pack"]:
        row = {"tool": tool, "format": "." + fmt, "level": level, "threads": threads}
        if tool == CPH and not version:
            section["rows"].append({**row, "skipped": why})
            continue
        if tool == CPH and not cph_prefix.is_dir():
            section["rows"].append({**row, "skipped": "no engine-built package to take the info/ folder from"})
            continue
        progress.say("packaging: " + _pack_label(row))
        params = {"tool": tool, "format": fmt, "level": level, "threads": threads, "payload": payload,
                  "out_dir": str(out_dir)}
        if tool == ENGINE and fmt == "conda" and not cph_prefix.exists():
            # The first engine package, unpacked, is what conda-package-handling packs (same files + info/).
            params["keep_extract_to"] = str(cph_prefix)
        if tool == CPH:
            params["cph_prefix"] = str(cph_prefix)
        section["rows"].append(child("pack", params, workdir))
    shutil.rmtree(cph_prefix, ignore_errors=True)


def run_index(mode, workdir, report, progress):
    sizes = mode["index_sizes"]
    largest = max(sizes)
    adds = 5  # new packages added one by one after the full index; the median is reported
    progress.say(f"index: building {largest + adds} tiny packages with the engine")
    built = child("build-tiny", {"count": largest + adds, "out_dir": str(workdir / "tiny"),
                                 "recipe_dir": str(workdir / "tiny-recipe")}, workdir)
    files = built.pop("files")
    section = {"build": built, "rows": []}
    report["index"] = section
    for size in sizes:
        progress.say(f"index: full index of {size} packages")
        row = child("index", {"channel": str(workdir / f"channel-{size}"), "files": files[:size]}, workdir)
        section["rows"].append(row)
    progress.say(f"index: add one package to the {largest}-package channel")
    add = child("add-one", {"channel": str(workdir / f"channel-{largest}"), "files": files[largest:],
                            "channel_packages": largest}, workdir)
    full = next(r["index_s"] for r in section["rows"] if r["packages"] == largest)
    add["full_index_s"] = full
    add["ratio"] = round(add["seconds"] / full, 3) if full else None
    section["add_one"] = add


def run_solve(mode, workdir, report, progress):
    section = {"rows": []}
    report["solve"] = section
    for size in mode["solve_sizes"]:
        progress.say(f"solve: repodata of {size or 'the rendered'} records")
        channel = str(workdir / f"solve-{size}")
        written = child("solve-channel", {"records": size, "channel": channel}, workdir)
        result = child("solve", {"records": written["records"], "channel": channel,
                                 "repeats": mode["solve_repeats"]}, workdir)
        for row in result["rows"]:
            row["peak_rss_mb"] = result["peak_rss_mb"]
            section["rows"].append(row)


RUNNERS = {"render": run_render, "packaging": run_packaging, "index": run_index, "solve": run_solve}


def memory_rows(report) -> list:
    """Section 5: every step's peak, gathered from the rows above."""
    rows = []

    def add(step, value):
        rows.append({"step": step, "peak_rss_mb": value})

    base = report.get("memory_baseline")
    if base:
        add("baseline (python + rattler + rattler_build + torchwin imported)", base.get("peak_rss_mb"))
    if isinstance(report.get("render"), dict) and "peak_rss_mb" in report["render"]:
        add("render: whole matrix", report["render"]["peak_rss_mb"])
    for row in (report.get("packaging") or {}).get("rows", []):
        if "peak_rss_mb" in row:
            add(f"pack: {_pack_label(row)}", row["peak_rss_mb"])
    index = report.get("index") or {}
    if "build" in index:
        add(f"index: build {index['build']['packages']} tiny packages", index["build"].get("peak_rss_mb"))
    for row in index.get("rows", []):
        add(f"index: full index, {row['packages']} packages", row.get("peak_rss_mb"))
    if "add_one" in index:
        add(f"index: add one to {index['add_one']['channel_packages']}", index["add_one"].get("peak_rss_mb"))
    seen = set()
    for row in (report.get("solve") or {}).get("rows", []):
        if row["records"] not in seen:
            seen.add(row["records"])
            add(f"solve: {row['records']} records (both specs)", row.get("peak_rss_mb"))
    return rows


def _pack_label(row) -> str:
    tool = "cph" if row.get("tool") == CPH else "engine"
    level = row.get("level")
    threads = row.get("threads")
    if level is None and tool == "cph":
        return f"cph {row['format']} default (zstd 19, 1 thread)"
    if row["format"] == ".tar.bz2":
        return f"{tool} .tar.bz2 bzip2 level {level}"
    return f"{tool} {row['format']} level {level}, {threads} thread{'' if threads == 1 else 's'}"


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _s(value, digits=2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(headers, rows) -> str:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    return "\n".join(lines)


def format_report(report) -> str:
    meta = report["meta"]
    machine = meta["machine"]
    out = [
        f"torchwin benchmarks ({meta['mode']} mode), {meta['date']}, {meta.get('seconds')} s",
        (f"machine: {machine['cpus']} cores, {machine['cpu_model']}, {machine['os']}, Python {machine['python']}; "
         f"load average at start {meta.get('load_average_start')}, at end {meta.get('load_average_end')}"),
        "versions: " + ", ".join(f"{k} {v or 'missing'}" for k, v in sorted(meta["versions"].items())),
    ]
    out += ["note: " + note for note in meta.get("notes", [])]

    render = report.get("render")
    if render:
        out.append(f"\n1. Render: {render['variants']} variants of {render['recipes']} recipes for "
                   f"{', '.join(render['platforms'])}")
        out.append(f"   whole matrix: {render['seconds_median']:.3f} s median of {render['repeats']} "
                   f"(best {render['seconds_best']:.3f} s), {render['ms_per_variant']:.2f} ms per variant, "
                   f"peak {_mb(render['peak_rss_mb'])} MB")
        out.append("   " + ", ".join(f"{k} {v['variants']} variants {v['seconds']:.3f} s"
                                     for k, v in sorted(render["per_recipe"].items())))

    pack = report.get("packaging")
    if pack:
        payload = pack["payload"]
        whole = (f", a sample of {payload['whole_bytes'] / MB:.0f} MB / {payload['whole_files']} files"
                 if payload.get("sampled") else "")
        out.append(f"\n2. Packaging: {payload['source']}; {payload['bytes'] / MB:.1f} MB in {payload['files']} "
                   f"files{whole}")
        if payload.get("note"):
            out.append("   " + payload["note"])
        out.append(f"   conda-package-handling: {pack['conda_package_handling']}")
        rows = []
        for row in pack["rows"]:
            if "skipped" in row:
                rows.append([_pack_label(row), "skipped", "", "", "", "", "", "", ""])
                continue
            rows.append([_pack_label(row), _s(row["seconds"]), _s(row.get("cpu_s")), _s(row["mb_per_s"], 1),
                         _s(row["size_mb"], 1), _s(row["ratio"], 3), _s(row["extract_rattler_s"]),
                         _s(row["extract_cph_s"]), _mb(row.get("peak_rss_mb"))])
        out.append(table(["packer", "pack s", "cpu s", "MB/s", "size MB", "ratio", "unpack s (rattler)",
                          "unpack s (cph)", "peak MB"], rows))

    index = report.get("index")
    if index:
        build = index["build"]
        out.append(f"\n3. Channel index: {build['packages']} tiny packages built by the engine in "
                   f"{build['seconds']:.1f} s ({build['per_package_ms']:.0f} ms each)")
        rows = [[r["packages"], _s(r["index_s"], 3), _s(r["noop_reindex_s"], 3), r["repodata_bytes"],
                 _mb(r.get("peak_rss_mb"))] for r in index["rows"]]
        out.append(table(["packages", "full index s", "re-index unchanged s", "repodata bytes", "peak MB"], rows))
        add = index.get("add_one")
        if add:
            out.append(f"   add one package to the {add['channel_packages']}-package channel "
                       f"(torchwin.channel.command.add_packages, median of {add.get('adds', 1)}): {add['seconds']:.3f} s "
                       f"= {add['ratio']:.3f} x the full index ({add['full_index_s']:.3f} s), "
                       f"peak {_mb(add.get('peak_rss_mb'))} MB")

    solve = report.get("solve")
    if solve:
        out.append("\n4. Solve (py-rattler, win-64, median; cold = fresh gateway, repodata read again)")
        rows = [[r["spec"], r["records"], _s(r["cold_s"], 3), _s(r["warm_s"], 3), r["pytorch"],
                 _mb(r.get("peak_rss_mb"))] for r in solve["rows"]]
        out.append(table(["specs", "records", "cold s", "warm s", "pytorch picked", "peak MB"], rows))

    memory = report.get("memory")
    if memory:
        out.append(f"\n5. Memory peak per step ({memory['method']})")
        out.append(table(["step", "peak RSS MB"], [[r["step"], _mb(r["peak_rss_mb"])] for r in memory["rows"]]))
    out += [f"\nERROR {e['step']}: {e['error']}" for e in report.get("errors", [])]
    return "\n".join(out)


def pack_spec(text: str):
    """`conda:19:2` -> (engine, "conda", 19, 2); `cph:conda` -> (cph, "conda", None, None)."""
    parts = text.split(":")
    tool = ENGINE
    if parts[0] == "cph":
        tool = CPH
        parts = parts[1:]
    if not parts or parts[0] not in ("conda", "tar.bz2") or len(parts) > 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected [cph:]FORMAT[:LEVEL[:THREADS]], "
                                         "FORMAT conda or tar.bz2, e.g. conda:19:2")
    try:
        numbers = [int(p) for p in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: LEVEL and THREADS are whole numbers") from None
    low, high = (-7, 22) if parts[0] == "conda" else (1, 9)
    if numbers and not low <= numbers[0] <= high:
        raise argparse.ArgumentTypeError(f"{text!r}: level for {parts[0]} must be {low}..{high}")
    level = numbers[0] if numbers else (None if tool == CPH else 10 if parts[0] == "conda" else 9)
    threads = numbers[1] if len(numbers) > 1 else (None if tool == CPH else 1)
    return (tool, parts[0], level, threads)


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Measure render, packaging, channel index and solve on this machine (no assertions).",
        epilog="examples:\n  python benchmarks/run.py --quick\n  python benchmarks/run.py --json results.json\n"
               "  python benchmarks/run.py --smoke --json   (seconds; what tests/test_benchmarks.py runs)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a sampled payload and smaller channels: under a minute")
    size.add_argument("--smoke", action="store_true", help="the smallest sizes: checks that every step runs")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="write JSON to PATH, or to stdout (the table then goes to stderr)")
    parser.add_argument("--payload", default="torch", metavar="torch|synthetic|DIR",
                        help="what to pack: the installed torch (default; synthetic when torch is missing), "
                             "synthetic data, or a folder such as a Windows build's site-packages/torch")
    parser.add_argument("--pack", action="append", metavar="[cph:]FORMAT[:LEVEL[:THREADS]]", type=pack_spec,
                        help="pack with this configuration instead of the mode's list (repeatable), "
                             "e.g. conda:16:2, tar.bz2:9, cph:conda (conda-package-handling's default)")
    parser.add_argument("--only", action="append", choices=STEPS, help="run only this step (repeatable)")
    parser.add_argument("--workdir", help="where to put payloads, packages and channels (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder afterwards")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(*args.child)
    mode_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = dict(MODES[mode_name], payload=args.payload)
    if args.pack:
        mode["pack"] = args.pack
    if args.payload not in ("torch", "synthetic") and not Path(args.payload).is_dir():
        print(f"benchmarks/run.py: error: --payload {args.payload}: no such folder "
              "(allowed: torch, synthetic, or a folder)", file=sys.stderr)
        return 2
    json_to_stdout = args.json == "-"
    table_stream = sys.stderr if json_to_stdout else sys.stdout
    progress = Progress(sys.stderr)
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir = Path(tempfile.mkdtemp(prefix="torchwin-bench-"))
    report = {
        "meta": {
            "mode": mode_name,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": bench_util.machine(),
            "versions": {name: bench_util.package_version(name) for name in (
                "py-rattler-build", "py-rattler", "conda-package-handling", "torch")},
            "load_average_start": bench_util.load_average(),
            "notes": [],
        },
        "errors": [],
    }
    started = time.monotonic()
    try:
        try:
            report["memory_baseline"] = child("baseline", {}, workdir)
        except StepFailed as exc:
            report["errors"].append({"step": "baseline", "error": str(exc)})
        for step in STEPS:
            if args.only and step not in args.only:
                continue
            try:
                RUNNERS[step](mode, workdir, report, progress)
            except StepFailed as exc:
                report["errors"].append({"step": step, "error": str(exc)})
                progress.say(f"{step} failed: {exc}")
    finally:
        if args.keep:
            progress.say(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = report["meta"]
    meta["seconds"] = round(time.monotonic() - started, 1)
    meta["load_average_end"] = bench_util.load_average()
    if bench_util.peak_rss_mb() is None:
        meta["notes"].append("peak memory is n/a on this platform (no `resource` module)")
    payload = (report.get("packaging") or {}).get("payload") or {}
    if payload.get("note"):
        meta["notes"].append(payload["note"])
    if (report.get("packaging") or {}).get("conda_package_handling", "").startswith("skipped"):
        meta["notes"].append("conda-package-handling " + report["packaging"]["conda_package_handling"])
    report["memory"] = {"method": "peak RSS of each step's own process (getrusage), interpreter included",
                        "rows": memory_rows(report)}
    print(format_report(report), file=table_stream, flush=True)
    if args.json:
        text = json.dumps(report, indent=1, sort_keys=True)
        if json_to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

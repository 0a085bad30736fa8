"""Step 4, solve: `pytorch cuda90` and `pytorch cpuonly` for win-64 with py-rattler, at several repodata sizes.

The channel holds every rendered pytorch and pytorch-select record, the
dependencies the defaults channel would provide (one plausible version each,
as in tests/test_pytorch_solve.py), and filler records up to the size asked:
a quarter are older versions of those dependencies (the solver has to weigh
them), the rest unrelated packages depending on each other (parse cost only).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench_util import clock, median

SUBDIRS = ("win-64", "linux-64")
SPECS = (("pytorch", "cuda90"), ("pytorch", "cpuonly"))
EXTERNAL = (("numpy", "1.16.4"), ("mkl", "2019.4"), ("intel-openmp", "2019.4"), ("cffi", "1.12.3"),
            ("vc", "14.1"))


def external_records():
    from torchwin.channel import repodata

    out = []
    for subdir in SUBDIRS:
        for py in ("3.5.6", "3.6.8", "3.7.3"):
            out.append(repodata.record("python", py, "h0_0", subdir=subdir))
        for name, version in EXTERNAL:
            out.append(repodata.record(name, version, "h0_0", subdir=subdir))
        for version in ("8.0.61", "9.0.176", "9.1.85", "9.2.148"):
            out.append(repodata.record("cudatoolkit", version, "h0_0", subdir=subdir))
        out.append(repodata.record("cudnn", "7.6.0", "h0_0", subdir=subdir))
    return out


def filler_records(count: int):
    from torchwin.channel import repodata

    out = []
    names = [name for name, _ in EXTERNAL] + ["python", "cudatoolkit", "cudnn"]
    for i in range(count):
        subdir = ("win-64", "linux-64", "noarch")[i % 3]
        if i % 4 == 0:
            name = names[(i // 4) % len(names)]
            version = f"0.{i // 400}.{(i // 4) % 100}"
            deps = [] if name == "python" else ["python >=3.5"]
            out.append(repodata.record(name, version, f"old_{i}", subdir=subdir, depends=deps,
                                       noarch="generic" if subdir == "noarch" else None))
        else:
            deps = [f"filler-{(i * 7) % 50} >=1.0"] if i % 3 else []
            out.append(repodata.record(f"filler-{i % 997}", f"1.0.{i}", f"h{i}_0", subdir=subdir,
                                       depends=deps, noarch="generic" if subdir == "noarch" else None))
    return out


def base_records():
    from torchwin import recipes
    from torchwin.channel import repodata

    dirs = [d for d in recipes.all_recipe_dirs() if d.name in ("pytorch", "pytorch-select")]
    rendered = recipes.render(dirs, list(SUBDIRS))
    return repodata.variant_records(rendered) + external_records()


def _solve(source, specs, platform, gateway):
    import rattler

    return asyncio.run(rattler.solve(sources=[source], specs=specs, platforms=[platform, "noarch"],
                                     virtual_packages=[], gateway=gateway))


def write(params: dict) -> dict:
    """Write the channel (its own process, so the solve's memory peak is the solver's alone)."""
    from torchwin.channel import repodata

    base = base_records()
    size = max(int(params.get("records") or 0), len(base))
    entries = base + filler_records(size - len(base))
    repodata.write_channel(Path(params["channel"]), entries)
    return {"records": len(entries), "base_records": len(base)}


def run(params: dict) -> dict:
    import rattler

    channel = Path(params["channel"])
    source = rattler.Channel(channel.as_uri())
    repeats = int(params.get("repeats", 3))
    platform = params.get("platform", "win-64")
    records_count = int(params["records"])
    rows = []
    for specs in SPECS:
        specs = list(specs)
        cold = []
        for _ in range(repeats):  # a fresh gateway each time: repodata read and parsed again, as a new install
            started = clock()
            records = _solve(source, specs, platform, None)
            cold.append(clock() - started)
        gateway = rattler.Gateway()
        _solve(source, specs, platform, gateway)
        warm = []
        for _ in range(repeats):  # repodata already in the gateway: the solver alone
            started = clock()
            _solve(source, specs, platform, gateway)
            warm.append(clock() - started)
        picked = {r.name.normalized: f"{r.version} {r.build}" for r in records}
        rows.append({"spec": " ".join(specs), "records": records_count, "platform": platform,
                     "cold_s": round(median(cold), 4), "warm_s": round(median(warm), 4),
                     "pytorch": picked.get("pytorch"), "installs": len(records)})
    return {"records": records_count, "rows": rows}

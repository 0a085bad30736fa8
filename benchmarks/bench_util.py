"""Helpers shared by the benchmark steps: clocks, peak memory, machine facts, atomic JSON files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

MB = 1000 * 1000  # sizes and rates are in decimal megabytes, like download sizes


def clock() -> float:
    return time.perf_counter()


def median(values):
    return statistics.median(values) if values else None


def peak_rss_mb():
    """Peak resident memory of this process and the children it waited for, in MB; None where unknown.

    Each step runs in its own process, so this is the step's peak (the
    interpreter and imported libraries included: see the baseline row).
    `resource` does not exist on Windows, where the figure is n/a.
    """
    try:
        import resource
    except ImportError:
        return None
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return round(max(own, kids) * unit / MB, 1)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def package_version(name: str):
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def write_json(path: Path, data) -> None:
    """Write JSON next to its final name, then rename: a reader never sees half a file."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=1, sort_keys=True)
    os.replace(tmp, path)


def rate(nbytes: int, seconds: float):
    return round(nbytes / MB / seconds, 1) if seconds > 0 else None

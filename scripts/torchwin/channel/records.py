"""Every record of a channel's labels as an Entry: its name, version, build, size, date, and for
PyTorch builds the Python and CUDA release its build string (or depends) names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from torchwin.channel.build_string import compute_of, is_torch, python_of
from torchwin.channel.retention import from_millis
from torchwin.channel.store import iter_records


@dataclass(frozen=True)
class Entry:
    label: str
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    build_number: int
    size: int
    timestamp: datetime | None
    python: str | None
    compute: str | None  # "9.0" style CUDA version, "cpu", or None when not a PyTorch build
    depends: tuple = ()


def collect(channel_dir):
    """Every record of every label of the channel, as Entry objects."""
    entries = []
    for label, _root, subdir, filename, rec in iter_records(channel_dir):
        # Records another tool wrote may hold anything: keep the strings of a list, numbers as numbers.
        depends = [d for d in rec.get("depends") or [] if isinstance(d, str)] if isinstance(
            rec.get("depends"), list) else []
        build = str(rec.get("build", ""))
        name = str(rec.get("name", ""))
        torch = is_torch(name, build)
        entries.append(
            Entry(
                label=label,
                subdir=subdir,
                filename=filename,
                name=name,
                version=str(rec.get("version", "")),
                build=build,
                build_number=_int(rec.get("build_number")),
                size=_int(rec.get("size")),
                timestamp=from_millis(rec.get("timestamp")),
                python=python_of(build, depends) if torch else None,
                compute=(compute_of(build, depends) or "unknown") if torch else None,
                depends=tuple(depends),
            )
        )
    return entries


def _int(value):
    """A record's number, or 0 when another tool wrote something else there."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0

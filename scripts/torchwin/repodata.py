"""Turn rendered variants into conda repodata, so the solver can be asked questions before anything is built.

Used by the solver tests (does `conda install pytorch cuda90` pick the right
build?) and by the benchmarks. The records carry exactly what rendering knows:
name, version, build string and number, run requirements, constraints and
track_features, the fields a solver decides on.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def record(name, version, build, build_number=0, depends=(), constrains=(), track_features=(),
           subdir="noarch", noarch=None, timestamp=1546300800000) -> dict:
    """One repodata entry; the hashes are derived from the identity so records are stable."""
    fn = "%s-%s-%s.tar.bz2" % (name, version, build)
    digest = hashlib.sha256(("%s/%s" % (subdir, fn)).encode()).hexdigest()
    entry = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": int(build_number),
        "depends": list(depends),
        "subdir": subdir,
        "md5": digest[:32],
        "sha256": digest,
        "size": 1024,
        "timestamp": timestamp,
    }
    if constrains:
        entry["constrains"] = list(constrains)
    if track_features:
        entry["track_features"] = " ".join(track_features)
    if noarch:
        entry["noarch"] = noarch
    return fn, entry


def variant_record(variant) -> tuple:
    """A repodata entry for one rendered `torchwin.recipes.Variant`."""
    return record(variant.name, variant.version, variant.build_string, variant.build_number,
                  variant.depends, variant.constrains, variant.track_features,
                  subdir=variant.subdir, noarch=variant.noarch)


def write_channel(channel_dir: Path, entries) -> Path:
    """Write repodata.json for every subdir (noarch always present); return the channel folder."""
    subdirs: dict = {"noarch": {}}
    for fn, entry in entries:
        subdirs.setdefault(entry["subdir"], {})[fn] = entry
    for subdir, packages in subdirs.items():
        folder = channel_dir / subdir
        folder.mkdir(parents=True, exist_ok=True)
        data = {"info": {"subdir": subdir}, "packages": packages, "packages.conda": {}, "repodata_version": 1}
        handle, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(handle, "w") as stream:
            json.dump(data, stream, indent=1, sort_keys=True)
        os.replace(tmp, folder / "repodata.json")
    return channel_dir

"""Turn rendered variants into conda repodata, so the solver can be asked questions before anything is built.

Used by the solver tests (does `conda install pytorch cuda90` pick the right
build?) and by the benchmarks. The records carry what rendering knows (name,
version, build string and number, run requirements, constraints and
track_features, the fields a solver decides on) plus the run_exports of the
build and host dependencies rendered with them, which the engine adds at build
time (vs2017's vs2015_runtime, magma-cudaXY).
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


def variant_record(variant, exported=()) -> tuple:
    """A repodata entry for one rendered `torchwin.recipes.Variant`, plus `exported` run requirements."""
    depends = list(variant.depends) + [spec for spec in exported if spec not in variant.depends]
    return record(variant.name, variant.version, variant.build_string, variant.build_number,
                  depends, variant.constrains, variant.track_features,
                  subdir=variant.subdir, noarch=variant.noarch)


def variant_records(variants, exporters=None) -> list:
    """variant_record for each variant, with the run_exports of its build and host dependencies among `exporters`.

    The engine adds those when it builds, as conda-build does: the strong run_exports of build
    dependencies, the strong and weak ones of host dependencies. A win-64 pytorch built with
    vs2017_win-64 depends on vs2015_runtime, and a CUDA 9.0 pytorch built against magma-cuda90 on
    magma-cuda90, although recipe.yaml names neither under run. Render alone does not apply them.
    `exporters` defaults to `variants` itself.
    """
    exports = {}
    for tool in variants if exporters is None else exporters:
        for kind in ("strong", "weak"):
            exports.setdefault((tool.name, tool.subdir, kind), []).extend(tool.run_exports.get(kind, ()))
    out = []
    for variant in variants:
        exported = []
        sources = [(r, ("strong",)) for r in variant.build_requirements]
        sources += [(r, ("strong", "weak")) for r in variant.host_requirements]
        for requirement, kinds in sources:
            name = str(requirement).split()[0]
            for kind in kinds:
                for spec in exports.get((name, variant.subdir, kind), ()):
                    if spec not in exported:
                        exported.append(spec)
        out.append(variant_record(variant, exported))
    return out


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

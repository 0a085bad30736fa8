"""The "Try it" lines `torchwin build` prints: one solvable install line per platform and build selection.

What one build makes cannot all go into one environment: `cpuonly` excludes every `cudaXY`, two
`cudaXY` want different toolkits, and nvcc_linux-64 and nvcc_win-64 are for different platforms. So
a line is made per platform and per selection package built (cpuonly, cuda80 ... cuda92), holding
that selection, the platform's packages made for it (the nvcc of that CUDA release, the pytorch
builds for it) and the platform's packages made for any selection (vs2017_win-64, vc). The host's
lines install; another platform's are dry runs with `--subdir`. Each label other than main keeps
its own line, as users name it for anaconda.org (see torchwin.labels for why). A CUDA selection
whose toolkit only our cuda-runtime label carries (defaults never had it) gets that label when
this channel holds the toolkit, and no line when it does not: that line could not be solved.
A line needing a package this channel does not hold at all (cudatoolkit, vs2015_runtime: Anaconda's)
names `-c defaults`, and a note under the lines says which packages it is for: each line solves with
just the channels it names (tests/test_try_it.py, tests/test_real_conda.py).
"""

from __future__ import annotations

import re
from pathlib import Path

from torchwin import recipes

# cpuonly and cuda80 ... cuda92 (recipes/pytorch-select): the packages users name to pick a build.
CPU_SELECTOR = "cpuonly"
# Where what this channel does not build comes from (cudatoolkit, vs2015_runtime): Anaconda's channel.
DEFAULTS = "defaults"
CUDA_SELECTOR = re.compile(r"^cuda(\d)(\d)$")


def selection_of(name: str):
    """'cpu' for cpuonly, 'X.Y' for cudaXY, None for any other package."""
    if name == CPU_SELECTOR:
        return "cpu"
    match = CUDA_SELECTOR.match(name)
    return "%s.%s" % match.groups() if match else None


def made_for(variant) -> str | None:
    """The selection a package was built for ('cpu' or 'X.Y'), None when it serves every selection."""
    cuda = variant.variant.get("cuda_compiler_version")
    if cuda is None:
        return None
    return "cpu" if cuda == "None" else str(cuda)


def install_lines(outcomes, channel_dir: Path, host=None, records=None, label_only=None) -> list:
    """The lines to print, main's first."""
    return lines_and_note(outcomes, channel_dir, host, records, label_only)[0]


def lines_and_note(outcomes, channel_dir: Path, host=None, records=None, label_only=None):
    """(the lines, main's first; a note saying why some name `-c defaults`, or ""). `records`
    (channel.records.collect of channel_dir) and `label_only` ({(subdir, name, minor version)} that
    only a label of ours carries) are looked up when not given."""
    from torchwin.channel.config import MAIN

    host = host or recipes.host_platform()
    built = [o for o in outcomes if o.result == "built"]
    if not built:
        return [], ""
    uri = channel_dir.resolve().as_uri()
    if records is None:
        records = _records(channel_dir)
    lines, outside_all = [], set()
    for label in sorted({o.label for o in built}, key=lambda name: (name != MAIN, name)):
        variants = [o.variant for o in built if o.label == label]
        if label == MAIN:
            channels = ["-c " + uri]
        else:
            # Main first when it exists here: a local channel holding only this label has no main to add.
            has_main = (channel_dir / "noarch" / "repodata.json").is_file()
            channels = (["-c " + uri] if has_main else []) + ["-c %s/label/%s" % (uri, label)]
        for subdir, specs in _lines_of(variants, host):
            needed = []
            if label == MAIN:
                needed = _toolkit_labels(variants, subdir, specs, channel_dir, records, label_only)
                if needed is None:
                    continue  # its toolkit is nowhere this line can reach
            extra = ["-c %s/label/%s" % (uri, name) for name in needed]
            outside = missing_names(specs, subdir, records, [MAIN, label] + needed)
            # What this channel lacks comes from Anaconda's defaults: the line names it (a user whose
            # condarc lists only conda-forge, or nothing, would get an UnsatisfiableError naming nothing).
            outside_all.update(outside)
            external = ["-c " + DEFAULTS] if outside else []
            command = "conda install" if subdir == host else "conda create --dry-run --subdir %s" % subdir
            lines.append("%s %s %s" % (command, " ".join(channels + extra + external), " ".join(specs)))
    note = ("-c %s: for %s, which this channel does not build (Anaconda's own packages)"
            % (DEFAULTS, ", ".join(sorted(outside_all)))) if outside_all else ""
    return lines, note


def _records(channel_dir: Path) -> list:
    from torchwin.channel.records import collect

    return collect(channel_dir) if channel_dir.is_dir() else []


def missing_names(specs, subdir, records, labels) -> list:
    """The packages a line's specs need, directly or through the dependencies of what this channel
    (the given labels) holds for the platform, that the channel has under no version: sorted names."""
    from torchwin.channel.labels import specs_by_name

    have: dict = {}
    for r in records:
        if r.label in labels and r.subdir in (subdir, "noarch"):
            have.setdefault(r.name, []).append(r)
    todo, seen, missing = list(specs_by_name(specs)), set(), set()
    while todo:
        name = todo.pop()
        if name in seen or name.startswith("__"):  # __glibc, __cuda: virtual, the machine's
            continue
        seen.add(name)
        if name not in have:
            missing.add(name)
            continue
        for r in have[name]:
            todo.extend(specs_by_name(r.depends))
    return sorted(missing)


def _lines_of(variants, host):
    """(subdir, specs) per platform and selection, the host's platform first."""
    platforms = sorted({v.subdir for v in variants if v.subdir != "noarch"} or {host},
                       key=lambda p: (p != host, p))
    selections = sorted({selection_of(v.name) for v in variants if v.noarch} - {None},
                        key=lambda s: (s != "cpu", s))
    out = []
    for subdir in platforms:
        own = [v for v in variants if v.subdir == subdir]
        if not selections:
            names = sorted({v.name for v in variants if v.subdir in (subdir, "noarch")})
            out.append((subdir, names))
            continue
        for selection in selections:
            selector = CPU_SELECTOR if selection == "cpu" else "cuda" + selection.replace(".", "")
            fitting = [v for v in own if made_for(v) in (None, selection)]
            specs = [selector]
            for name in sorted({v.name for v in fitting}):
                versions = {v.version for v in fitting if v.name == name}
                others = {v.version for v in own if v.name == name} - versions
                # nvcc_linux-64 is built per CUDA release: name the one this selection wants.
                specs.append("%s=%s" % (name, versions.pop()) if others and len(versions) == 1 else name)
            out.append((subdir, specs))
    return out


def _toolkit_labels(variants, subdir, specs, channel_dir, records, label_only):
    """The labels of this channel a line's toolkit comes from ([] when defaults has it); None when it
    is a release only our label carries and this channel does not hold it."""
    from torchwin.channel.config import MAIN
    from torchwin.channel.labels import dependency_labels

    cuda = selection_of(specs[0])
    if cuda in (None, "cpu"):
        return []
    depends = ["cudatoolkit %s.*" % cuda]
    found = dependency_labels(MAIN, subdir, depends, records)
    if found:
        return found
    if label_only is None:
        label_only = labelled_toolkits([subdir])
    return None if (subdir, "cudatoolkit", cuda) in label_only else []


def labelled_toolkits(platforms) -> set:
    """{(subdir, name, 'X.Y')} of the packages our recipes put in a label other than main: the CUDA
    runtime releases defaults never had (recipes/cuda-runtime)."""
    import yaml

    from torchwin.channel.config import EXTRA_KEY, MAIN
    from torchwin.channel.labels import channel_labels

    dirs = []
    for recipe_dir in recipes.all_recipe_dirs():
        try:
            data = yaml.safe_load((recipe_dir / recipes.RECIPE_FILE).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data.get("extra"), dict) and EXTRA_KEY in data["extra"]:
            dirs.append(recipe_dir)
    if not dirs:
        return set()
    rendered = recipes.render(dirs, list(platforms))
    labels = channel_labels(rendered)
    return {(v.subdir, v.name, ".".join(v.version.split(".")[:2])) for v in rendered if labels[id(v)] != MAIN}

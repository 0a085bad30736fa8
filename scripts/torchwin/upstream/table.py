"""The per-release tables of upstream facts (recipes/pytorch/upstream/<release>.json): extract, write, check.

`extract` reads every fact of one release commit; `check` compares the tables on disk with a fresh
read and says what differs; tables are written atomically (temp file + rename).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import yaml

from torchwin.errors import UserError
from torchwin.upstream.compiler_cache import compiler_cache
from torchwin.upstream.cuda import cuda_arch, cuda_host_gcc, ninja, nvtoolsext
from torchwin.upstream.facts import (
    bare_yaml_loads,
    cmake_floors,
    declared_version,
    dll_directory_calls,
    env_reads,
    floor_summary,
    python_requires,
    submodule_floors,
    submodules,
)
from torchwin.upstream.tree import Tree, code_lines, group_of, is_build_file, is_wanted

SOURCE = "upstream pytorch/pytorch tag, read from a public fork carrying all tags (github:hterada/pytorch)"


# The table's groups of build files whose environment reads are recorded.
ENV_GROUPS = ("setup.py", "tools/setup_helpers", "tools/build_pytorch_libs", "cmake")


def extract(git, release, commit, mirrors=None, source=SOURCE):
    """The facts table of one release (a dict, JSON-ready)."""
    if not git.has_commit(commit):
        raise UserError("%s: commit %s of release %s is not in this repository" % (git.path, commit, release))
    tree = Tree(git, commit, is_wanted)
    env, dynamic = {g: set() for g in ENV_GROUPS}, {g: [] for g in ENV_GROUPS}
    by_script = {}  # the build scripts differ per platform (.bat on Windows, .sh on Linux)
    for path in sorted(tree.text):
        group = group_of(path)
        if group:
            names, dyn = env_reads(path, tree.text[path])
            env[group] |= names
            dynamic[group] += dyn
            if group == "tools/build_pytorch_libs":
                by_script[path] = sorted(names)
    yaml_calls = []
    for path in tree.files(lambda p: p.endswith(".py")):
        yaml_calls += bare_yaml_loads(path, tree.text[path])
    version, version_file = declared_version(tree)
    subs = submodules(git, tree)
    tags = git.tags_at(commit)
    wanted_tag = "v" + release
    facts = {
        "release": release,
        "tag": wanted_tag if wanted_tag in tags else (tags[0] if tags else None),
        "commit": commit,
        "source": source,
        "declared_version": version,
        "declared_version_file": version_file,
        "env_vars": {g: sorted(n) for g, n in env.items()},
        "env_var_prefix_reads": {g: d for g, d in dynamic.items() if d},
        "env_vars_by_build_script": by_script,
        "submodules": subs,
        "submodule_cmake_floors": submodule_floors(git, subs, mirrors),
        "cmake_minimum_required": floor_summary(cmake_floors(tree.text)),
        "bare_yaml_load": yaml_calls,
        "nvtoolsext": nvtoolsext(tree),
        "ninja": ninja(tree, env),
        "compiler_cache": compiler_cache(tree),
        "cuda_arch": cuda_arch(tree),
        "cuda_host_gcc": cuda_host_gcc(tree),
        "python_requires": python_requires(tree),
        "windows_dll_directory_calls": dll_directory_calls(tree),
        # distutils' _get_vc_env runs vcvarsall for the newest toolset unless DISTUTILS_USE_SDK is set.
        "distutils_vc_env_calls": [
            "%s:%d" % (path, number) for path in tree.files(is_build_file) if path.endswith(".py")
            for number, line in code_lines(tree.text[path], "#") if re.search(r"\b_get_vc_env\(", line)],
        "unreadable": sorted(tree.unreadable),
        "missing_blobs": tree.missing_blobs(),
    }
    return facts


def pinned_releases(variants_path):
    """[(release, commit)] from the zipped pytorch_version / pytorch_commit lists."""
    try:
        table = yaml.safe_load(Path(variants_path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError("%s: cannot read: %s" % (variants_path, str(exc).splitlines()[0])) from exc
    versions = (table or {}).get("pytorch_version")
    commits = (table or {}).get("pytorch_commit")
    if not isinstance(versions, list) or not isinstance(commits, list) or len(versions) != len(commits):
        raise UserError("%s: pytorch_version and pytorch_commit must be lists of equal length"
                        % variants_path)
    for commit in commits:
        if not re.fullmatch(r"[0-9a-f]{40}", str(commit)):
            raise UserError("%s: pytorch_commit %r is not a 40-hex commit" % (variants_path, commit))
    return [(str(v), str(c)) for v, c in zip(versions, commits)]


def render(facts):
    return json.dumps(facts, indent=2, sort_keys=True) + "\n"


def write_atomic(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="\n") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def differences(old, new, prefix=""):
    """One line per difference between two JSON values, naming the key path."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines = []
        for key in sorted(set(old) | set(new)):
            where = "%s.%s" % (prefix, key) if prefix else key
            if key not in new:
                lines.append("%s: in the table, not upstream" % where)
            elif key not in old:
                lines.append("%s: upstream has %s, the table has nothing" % (where, json.dumps(new[key])))
            else:
                lines += differences(old[key], new[key], where)
        return lines
    if isinstance(old, list) and isinstance(new, list) and all(
            isinstance(x, str) for x in old + new):
        lines = ["%s: upstream adds %s" % (prefix, x) for x in new if x not in old]
        lines += ["%s: upstream no longer has %s" % (prefix, x) for x in old if x not in new]
        if not lines and old != new:
            lines.append("%s: order differs" % prefix)
        return lines
    if old != new:
        return ["%s: table %s, upstream %s" % (prefix, json.dumps(old), json.dumps(new))]
    return []


def _unchecked_floors(old, new):
    """Submodule floors the table has but this run could not read (no mirror given): not drift."""
    notes = []
    old_by_path = {e["path"]: e for e in old.get("submodule_cmake_floors", [])}
    for entry in new.get("submodule_cmake_floors", []):
        before = old_by_path.get(entry["path"])
        if entry.get("unreadable") and before and before.get("version") and before["commit"] == entry["commit"]:
            entry.clear()
            entry.update(before)
            notes.append("%s: submodule %s floor not checked (its repository was not given)"
                         % (new["release"], entry["path"]))
    return notes


def check(tables, out_dir):
    """(drift lines, notes) of freshly extracted tables against the committed ones in out_dir."""
    drift, notes = [], []
    for facts in tables:
        path = out_dir / ("%s.json" % facts["release"])
        if not path.is_file():
            drift.append("%s: missing" % path)
            continue
        try:
            old = json.loads(path.read_text())
        except ValueError as exc:
            drift.append("%s: not JSON: %s" % (path, exc))
            continue
        notes += _unchecked_floors(old, facts)
        lines = ["%s: %s" % (path.name, line) for line in differences(old, facts)]
        if not lines and path.read_text() != render(facts):
            lines.append("%s: formatting differs from the generator's" % path.name)
        drift += lines
    return drift, notes


def stray_tables(out_dir, expected):
    return sorted(p.name for p in out_dir.glob("*.json") if p.name not in expected) if out_dir.is_dir() else []

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
    build_scripts,
    cmake_floors,
    declared_version,
    dll_directory_calls,
    env_reads,
    floor_summary,
    python_requires,
    submodule_floors,
    submodules,
)
from torchwin.upstream.linking import cuda_msvc_limits, cudnn_version_check, mkl, mkldnn
from torchwin.upstream.tree import Tree, code_lines, group_of, is_build_file, is_wanted

SOURCE = "upstream pytorch/pytorch tag, read from a public fork carrying all tags (github:hterada/pytorch)"
UPSTREAM_URL = "https://github.com/pytorch/pytorch"


# The table's groups of build files whose environment reads are recorded.
ENV_GROUPS = ("setup.py", "tools/setup_helpers", "tools/build_pytorch_libs", "cmake")
# Recorded only where the tree has them: 0.3's build scripts under torch/lib.
OPTIONAL_GROUPS = ("torch/lib/build_libs",)
BUILD_SCRIPT_GROUPS = ("tools/build_pytorch_libs", "torch/lib/build_libs")


class Pin:
    """One facts table the recipe needs: a release's commit in one repository.

    `table` names the file (upstream/<table>.json); `platform` is None for the release's tag (every
    platform without its own source) or the platform built from `repository` at `commit` instead.
    """

    def __init__(self, table, release, commit, repository=UPSTREAM_URL, platform=None):
        self.table, self.release, self.commit = table, release, commit
        self.repository, self.platform = repository, platform

    def __repr__(self):
        return "Pin(%r, %r, %r, %r, %r)" % (self.table, self.release, self.commit, self.repository, self.platform)


def fork_source(git, pin):
    """How a table read from a fork names where it came from: repository, branch(es) at the commit."""
    out = git.run("for-each-ref", "--points-at", pin.commit, "--format=%(refname)", "refs/heads",
                  "refs/remotes", check=False).stdout.decode()
    branches = sorted({re.sub(r"^refs/(?:heads|remotes/[^/]+)/", "", ref) for ref in out.split()} - {"HEAD"})
    return "%s, commit %s%s, built for %s instead of the release tag" % (
        pin.repository, pin.commit, " (tip of branch %s)" % ", ".join(branches) if branches else "",
        pin.platform)


def extract(git, release, commit, mirrors=None, source=SOURCE, repository=UPSTREAM_URL):
    """The facts table of one release (a dict, JSON-ready)."""
    if not git.has_commit(commit):
        raise UserError("%s: commit %s of release %s is not in this repository" % (git.path, commit, release))
    tree = Tree(git, commit, is_wanted)
    groups = ENV_GROUPS + tuple(g for g in OPTIONAL_GROUPS if any(group_of(p) == g for p in tree.text))
    env, dynamic = {g: set() for g in groups}, {g: [] for g in groups}
    by_script = {}  # the build scripts differ per platform (.bat on Windows, .sh on Linux)
    for path in sorted(tree.text):
        group = group_of(path)
        if group:
            names, dyn = env_reads(path, tree.text[path])
            env[group] |= names
            dynamic[group] += dyn
            if group in BUILD_SCRIPT_GROUPS:
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
        "repository": repository,
        "source": source,
        "declared_version": version,
        "declared_version_file": version_file,
        "env_vars": {g: sorted(n) for g, n in env.items()},
        "env_var_prefix_reads": {g: d for g, d in dynamic.items() if d},
        "env_vars_by_build_script": by_script,
        "submodules": subs,
        "build_scripts": build_scripts(tree),
        "submodule_cmake_floors": submodule_floors(git, subs, mirrors),
        "cmake_minimum_required": floor_summary(cmake_floors(tree.text)),
        "bare_yaml_load": yaml_calls,
        "nvtoolsext": nvtoolsext(tree),
        "ninja": ninja(tree, env),
        "compiler_cache": compiler_cache(tree),
        "cuda_arch": cuda_arch(tree),
        "cuda_host_gcc": cuda_host_gcc(tree),
        "cuda_msvc_limits": cuda_msvc_limits(tree),
        "cudnn_version_check": cudnn_version_check(tree),
        "mkl": mkl(tree),
        "mkldnn": mkldnn(tree),
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


def pins(variants_path):
    """Every facts table variants.yaml needs: one per release tag, plus one per platform whose builds
    come from another repository's commit (pytorch_git_win / pytorch_commit_win: 0.3's Windows fork)."""
    table = _load_variants(variants_path)
    result = [Pin(r, r, c) for r, c in pinned_releases(variants_path)]
    urls, commits = table.get("pytorch_git_win"), table.get("pytorch_commit_win")
    if urls is None and commits is None:
        return result
    if not isinstance(urls, list) or not isinstance(commits, list) or not len(urls) == len(commits) == len(result):
        raise UserError("%s: pytorch_git_win and pytorch_commit_win must be lists as long as pytorch_version"
                        % variants_path)
    for pin, url, commit in zip(list(result), urls, commits):
        url, commit = str(url or ""), str(commit or "")
        if bool(url) != bool(commit):
            raise UserError("%s: release %s: pytorch_git_win %r and pytorch_commit_win %r must both be set or "
                            "both empty" % (variants_path, pin.release, url, commit))
        if not commit:
            continue
        if not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise UserError("%s: pytorch_commit_win %r is not a 40-hex commit" % (variants_path, commit))
        result.append(Pin(table_name(pin.release, "win-64"), pin.release, commit,
                          re.sub(r"\.git$", "", url), "win-64"))
    return result


def table_name(release, platform=None):
    """upstream/<release>.json, or <release>-<platform>.json for a platform built from another commit."""
    return release if not platform else "%s-%s" % (release, platform)


def _load_variants(variants_path):
    try:
        return yaml.safe_load(Path(variants_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UserError("%s: cannot read: %s" % (variants_path, str(exc).splitlines()[0])) from exc


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
    """(drift lines, notes) of freshly extracted tables against the committed ones in out_dir.

    `tables`: facts, or (table name, facts) where the name is not the release (a fork's table).
    """
    drift, notes = [], []
    for item in tables:
        name, facts = item if isinstance(item, tuple) else (item["release"], item)
        path = out_dir / ("%s.json" % name)
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

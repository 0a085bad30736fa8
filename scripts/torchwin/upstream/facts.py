"""`torchwin upstream-facts`: read upstream PyTorch's own files at each pinned release commit.

The recipe and its build driver depend on facts about each upstream release:
the version its setup.py declares, the environment variables its build reads,
its submodules, its CMake floors, its bare `yaml.load` calls, how it finds
NvToolsExt and when it uses ninja. This module reads them from an upstream git
repository (bare or not; git plumbing only, so blobs missing from a mirror are
recorded, not fatal) at the commits `recipes/pytorch/variants.yaml` pins, and
writes one committed table per release, `recipes/pytorch/upstream/<release>.json`.
`--check` regenerates the tables in memory and reports every difference (drift).

The facts are read with patterns, not by running upstream's code; each finding
names the file (and line) it came from, so a reader can check it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

from torchwin.checkout import require_repo_root
from torchwin.errors import Failure, UserError

SOURCE = "upstream pytorch/pytorch tag, read from a public fork carrying all tags (github:hterada/pytorch)"
# The table's groups of build files whose environment reads are recorded.
ENV_GROUPS = ("setup.py", "tools/setup_helpers", "tools/build_pytorch_libs", "cmake")
CMAKE_BREAKING_FLOOR = (3, 5)  # CMake >= 4 refuses cmake_minimum_required(VERSION < 3.5)

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# `my_env.get('CC')` reads a copy of os.environ (1.1.0's build_pytorch_libs.py): still the environment.
_PY_ENV_READ = re.compile(
    r"(?:\bos\.getenv|\bgetenv|\benviron\.get|\b\w*_env\.get|\bcheck_env_flag|\bcheck_negative_env_flag)"
    r"\(\s*(['\"])(%s)\1(?=\s*[,)])" % _NAME)
_PY_ENV_INDEX = re.compile(r"\benviron\[\s*(['\"])(%s)\1\s*\](?!\s*=[^=])" % _NAME)
_PY_ENV_IN = re.compile(r"(['\"])(%s)\1\s+(?:not\s+)?in\s+os\.environ\b" % _NAME)
# A read whose name is built from a literal prefix, e.g. check_env_flag('NO_' + var).
_PY_ENV_DYNAMIC = re.compile(
    r"(?:\bos\.getenv|\bgetenv|\benviron\.get|\bcheck_env_flag|\bcheck_negative_env_flag)"
    r"\(\s*((['\"])\w*\2\s*\+\s*\w+)")
_CMAKE_ENV = re.compile(r"(?:\$ENV|\bDEFINED\s+ENV)\{(%s)\}" % _NAME)
_CMAKE_FLOOR = re.compile(r"cmake_minimum_required\s*\(\s*VERSION\s+([0-9]+(?:\.[0-9]+)*)", re.I)
_BAT_READ = re.compile(r"%%(%s)(?::[^%%\r\n]*)?%%|!(%s)!|\bdefined\s+(%s)" % (_NAME, _NAME, _NAME), re.I)
_BAT_SET = re.compile(r"\bset\s+(?:/[ap]\s+)?\"?(%s)\s*=" % _NAME, re.I)
# cmd.exe computes these itself; a script reading them reads no environment.
_CMD_PSEUDO = {"CD", "DATE", "TIME", "RANDOM", "ERRORLEVEL", "CMDCMDLINE", "CMDEXTVERSION"}
_SH_READ = re.compile(r"(?<!\\)\$\{#?(%s)|(?<!\\)\$(%s)" % (_NAME, _NAME))
_SH_SET = re.compile(r"(?:^\s*|[;&|(){]\s*|\bexport\s+|\blocal\s+|\breadonly\s+|\bdeclare\s+(?:-\w+\s+)*)"
                     r"(%s)\+?=|\bfor\s+(%s)\s+in\b|\bread\s+(?:-\w+\s+)*(%s)" % (_NAME, _NAME, _NAME))
_YAML_LOAD = re.compile(r"\byaml\.load\(")
_VERSION_LINE = re.compile(r"^version\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_PYTHON_REQUIRES = re.compile(r"python_requires\s*=\s*(?:(['\"])([^'\"]*)\1|([^,\n)]+(?:\([^)]*\))?))")
_NVTX_NAME = re.compile(r"\w*NVTOOL\w*")
_WINDOWS_PATH = re.compile(r"['\"]([A-Za-z]:[\\/]+[^'\"]*NvToolsExt)['\"]")


class Git:
    """Plumbing reads of one repository: trees, blobs (missing ones reported), refs."""

    def __init__(self, path):
        self.path = str(path)

    def run(self, *args, input=None, check=True):
        env = dict(os.environ, GIT_NO_LAZY_FETCH="1", GIT_TERMINAL_PROMPT="0")
        proc = subprocess.run(["git", "-C", self.path, *args], input=input, capture_output=True, env=env)
        if check and proc.returncode != 0:
            raise Failure("git %s in %s: %s" % (args[0], self.path, _first(proc.stderr)))
        return proc

    def is_repository(self):
        return self.run("rev-parse", "--git-dir", check=False).returncode == 0

    def has_commit(self, sha):
        return self.run("cat-file", "-e", "%s^{commit}" % sha, check=False).returncode == 0

    def tree(self, commit):
        """{path: (mode, type, sha)} of every entry at `commit`, submodule gitlinks included."""
        out = self.run("ls-tree", "-r", "-z", "--full-tree", commit).stdout
        entries = {}
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, path = record.split(b"\t", 1)
            mode, kind, sha = meta.decode().split()
            entries[path.decode("utf-8", "surrogateescape")] = (mode, kind, sha)
        return entries

    def blobs(self, shas):
        """{sha: bytes or None}; None for a blob the repository does not hold."""
        shas = sorted(set(shas))
        if not shas:
            return {}
        out = self.run("cat-file", "--batch", input=("\n".join(shas) + "\n").encode()).stdout
        found, pos = {}, 0
        for _ in shas:
            end = out.index(b"\n", pos)
            header = out[pos:end].decode().split()
            pos = end + 1
            if header[-1] == "missing":
                found[header[0]] = None
                continue
            size = int(header[2])
            found[header[0]] = out[pos:pos + size]
            pos += size + 1
        return found

    def missing(self, shas):
        """The subset of blob shas whose objects are absent."""
        shas = sorted(set(shas))
        if not shas:
            return set()
        out = self.run("cat-file", "--batch-check", input=("\n".join(shas) + "\n").encode()).stdout
        return {line.split()[0] for line in out.decode().splitlines() if line.endswith(" missing")}

    def tags_at(self, commit):
        out = self.run("for-each-ref", "--points-at", commit, "--format=%(refname:strip=2)",
                       "refs/tags").stdout.decode()
        return sorted(out.split())


def _first(data):
    text = data.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else "failed"


class Tree:
    """The files of one commit, read on demand; paths whose blobs are missing are remembered."""

    def __init__(self, git, commit, wanted):
        self.git, self.commit = git, commit
        self.entries = git.tree(commit)
        self.unreadable = []
        shas = {p: e[2] for p, e in self.entries.items() if e[1] == "blob" and wanted(p)}
        data = git.blobs(shas.values())
        self.text = {}
        for path, sha in sorted(shas.items()):
            if data.get(sha) is None:
                self.unreadable.append(path)
            else:
                self.text[path] = data[sha].decode("utf-8", "replace")

    def files(self, predicate):
        return sorted(p for p in self.text if predicate(p))

    def gitlinks(self):
        return {p: e[2] for p, e in self.entries.items() if e[0] == "160000"}

    def missing_blobs(self):
        shas = {}
        for path, entry in self.entries.items():
            if entry[1] == "blob":
                shas.setdefault(entry[2], []).append(path)
        return sorted(p for sha in self.git.missing(shas) for p in shas[sha])


# ---- which files ------------------------------------------------------------------------------------

def is_cmake(path):
    name = path.rsplit("/", 1)[-1]
    return name in ("CMakeLists.txt", "CMakeLists.txt.in") or name.endswith((".cmake", ".cmake.in"))


def _is_build_cmake(path):
    """CMake files the build runs (templates for consumers, *.in, are left out)."""
    return is_cmake(path) and not path.endswith(".in")


def _group_of(path):
    if path == "setup.py":
        return "setup.py"
    if path.startswith("tools/setup_helpers/") and path.endswith(".py"):
        return "tools/setup_helpers"
    if path.startswith("tools/build_pytorch_libs.") and path.rsplit(".", 1)[-1] in ("py", "sh", "bat"):
        return "tools/build_pytorch_libs"
    if _is_build_cmake(path):
        return "cmake"
    return None


# CUDA sources a torch build compiles (ATen/THC, c10, torch/csrc, the caffe2 core and math it links):
# where an intrinsic an old GPU lacks would stop the compile for that architecture.
_CUDA_SOURCE_DIRS = ("aten/src/", "c10/", "torch/csrc/", "caffe2/core/", "caffe2/utils/")
_CUDA_SOURCE_EXTS = (".cu", ".cuh", ".h", ".cpp", ".cc")


def _is_cuda_source(path):
    return path.startswith(_CUDA_SOURCE_DIRS) and path.endswith(_CUDA_SOURCE_EXTS) and "/hip/" not in path


def _wanted(path):
    return (path in (".gitmodules", "version.txt") or path.endswith((".py", ".sh", ".bat"))
            or is_cmake(path) or _is_cuda_source(path))


def _is_build_file(path):
    """Files that take part in `python setup.py install`: setup.py, tools/, CMake."""
    return (path == "setup.py" or (path.startswith("tools/") and path.endswith((".py", ".sh", ".bat")))
            or _is_build_cmake(path))


# ---- line helpers ----------------------------------------------------------------------------------

def _code_lines(text, comment):
    """(line number, line without its trailing comment) for every line."""
    for number, line in enumerate(text.splitlines(), 1):
        if comment == "rem":
            yield number, "" if re.match(r"\s*(?:rem\b|::)", line, re.I) else line
        else:
            cut = line.find(comment)
            yield number, line if cut < 0 else line[:cut]


def _comment_style(path):
    if path.endswith(".bat"):
        return "rem"
    return "#"


def _version_tuple(text):
    return tuple(int(p) for p in text.split("."))


# ---- the facts ---------------------------------------------------------------------------------------

def env_reads(path, text):
    """(sorted names the file reads from the environment, dynamic reads as 'file:line: expr')."""
    names, dynamic = set(), []
    if path.endswith(".py"):
        for number, line in _code_lines(text, "#"):
            if line.lstrip().startswith("def "):
                continue
            for regex in (_PY_ENV_READ, _PY_ENV_INDEX, _PY_ENV_IN):
                names.update(m.group(2) for m in regex.finditer(line))
            dynamic.extend("%s:%d: %s" % (path, number, m.group(1)) for m in _PY_ENV_DYNAMIC.finditer(line))
    elif _is_build_cmake(path):
        for _, line in _code_lines(text, "#"):
            names.update(_CMAKE_ENV.findall(line))
    elif path.endswith((".sh", ".bat")):
        names = _script_env_reads(path, text)
    return names, dynamic


def _script_env_reads(path, text):
    """Names a shell or batch script reads before it first assigns them itself: its inputs."""
    bat = path.endswith(".bat")
    read_re, set_re = (_BAT_READ, _BAT_SET) if bat else (_SH_READ, _SH_SET)
    first_read, first_set = {}, {}
    for number, line in _code_lines(text, "rem" if bat else "#"):
        for m in read_re.finditer(line):
            name = next(g for g in m.groups() if g)
            if not (bat and name.upper() in _CMD_PSEUDO):
                first_read.setdefault(name.upper() if bat else name, number)
        for m in set_re.finditer(line):
            name = next(g for g in m.groups() if g)
            first_set.setdefault(name.upper() if bat else name, number)
    # Same line counts as a read: X=${X:-default}, set X=%X:\=/%.
    return {n for n, line in first_read.items() if line <= first_set.get(n, line)}


def cmake_floors(tree_text):
    """Every cmake_minimum_required floor: [(version tuple, text, file, line)]."""
    floors = []
    for path in sorted(tree_text):
        if not is_cmake(path):
            continue
        for number, line in _code_lines(tree_text[path], "#"):
            for m in _CMAKE_FLOOR.finditer(line):
                floors.append((_version_tuple(m.group(1)), m.group(1), path, number))
    return floors


def floor_summary(floors):
    if not floors:
        return {"highest": None, "lowest": None, "below_3_5": []}
    ordered = sorted(floors, key=lambda f: (f[0], f[2], f[3]))
    low, high = ordered[0], sorted(floors, key=lambda f: (tuple(-x for x in f[0]), f[2], f[3]))[0]
    return {
        "highest": {"version": high[1], "file": high[2], "line": high[3]},
        "lowest": {"version": low[1], "file": low[2], "line": low[3]},
        "below_3_5": [{"version": f[1], "file": f[2], "line": f[3]}
                      for f in sorted(floors, key=lambda f: (f[2], f[3])) if f[0] < CMAKE_BREAKING_FLOOR],
    }


def bare_yaml_loads(path, text):
    """Lines of `yaml.load(` calls whose arguments name no Loader (an error under PyYAML >= 6)."""
    found = []
    lines = text.splitlines()
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    joined = "\n".join(lines)
    for m in _YAML_LOAD.finditer(joined):
        number = next(i for i in range(len(lines)) if offsets[i + 1] > m.start()) + 1
        before = lines[number - 1][:m.start() - offsets[number - 1]]
        if "#" in before:
            continue
        depth, end = 1, m.end()
        while end < len(joined) and depth:
            depth += {"(": 1, ")": -1}.get(joined[end], 0)
            end += 1
        if "Loader" not in joined[m.end():end]:
            found.append({"file": path, "line": number})
    return found


def declared_version(tree):
    setup = tree.text.get("setup.py")
    if setup is not None:
        m = _VERSION_LINE.search(setup)
        if m:
            return m.group(1), "setup.py"
    if "version.txt" in tree.text:
        return tree.text["version.txt"].strip(), "version.txt"
    return None, None


def python_requires(tree):
    setup = tree.text.get("setup.py", "")
    m = _PYTHON_REQUIRES.search(setup)
    if not m:
        return None
    text = m.group(2) if m.group(1) else m.group(3).strip()
    # 1.7 on: python_requires='>={}'.format(python_min_version_str), from python_min_version = (3, 6, 1).
    minimum = re.search(r"^python_min_version\s*=\s*\(([\d,\s]+)\)", setup, re.M)
    if "{}" in text and minimum:
        text = text.replace("{}", ".".join(p.strip() for p in minimum.group(1).split(",") if p.strip()))
    return text


def submodules(git, tree):
    """.gitmodules entries with the gitlink each path has at this commit."""
    links = tree.gitlinks()
    entries = {}
    if ".gitmodules" in tree.text:
        out = git.run("config", "--blob", "%s:.gitmodules" % tree.commit, "-z", "--get-regexp",
                      r"^submodule\..*\.(path|url)$", check=False).stdout.decode("utf-8", "replace")
        for record in out.split("\0"):
            if "\n" not in record:
                continue
            key, value = record.split("\n", 1)
            name, field = key[len("submodule."):].rsplit(".", 1)
            entries.setdefault(name, {})[field] = value
    result = []
    seen = set()
    for name, entry in entries.items():
        path = entry.get("path", name)
        seen.add(path)
        result.append({"path": path, "url": entry.get("url"), "commit": links.get(path)})
    # A gitlink without a .gitmodules entry cannot be cloned: record it too.
    result.extend({"path": p, "url": None, "commit": sha} for p, sha in links.items() if p not in seen)
    return sorted(result, key=lambda s: s["path"])


def _github_slug(url):
    m = re.match(r"(?:https?://|git://|git@)github\.com[/:]([^/]+)/([^/]+?)(?:\.git)?/?$", url or "")
    return (m.group(1), m.group(2)) if m else None


def submodule_floors(git, subs, mirrors):
    """The cmake floor of each submodule at its pinned commit, where a repository holding it is here."""
    result = []
    for sub in subs:
        if not sub["commit"]:
            continue
        entry = {"path": sub["path"], "commit": sub["commit"]}
        candidates = [(git, None)]
        slug = _github_slug(sub["url"])
        if mirrors and slug:
            # The exact repository first, then forks of the same name: a commit is the same tree wherever
            # it is stored (1.1.0 pins zdevito/sleef at a commit shibatch/sleef also holds).
            # GitHub names are case-insensitive (pytorch/fbgemm is pytorch/FBGEMM).
            folders = sorted(Path(mirrors).iterdir()) if Path(mirrors).is_dir() else []
            wanted = ("%s+%s" % slug).lower()
            bases = [p for p in folders if p.name.lower() == wanted]
            bases += [p for p in folders if p.name.lower().endswith("+" + slug[1].lower()) and p not in bases]
            for base in bases:
                folder = base / "repo" if (base / "repo").is_dir() else base
                if folder.is_dir():
                    candidates.append((Git(folder), "github:%s" % base.name.replace("+", "/", 1)))
        repo = next(((g, label) for g, label in candidates if g.has_commit(sub["commit"])), None)
        if repo is None:
            entry.update(version=None, file=None, source=None,
                         unreadable="commit not in any repository read (see --submodule-mirrors)")
        else:
            sub_git, label = repo
            sub_tree = Tree(sub_git, sub["commit"], is_cmake)
            floors = cmake_floors(sub_tree.text)
            # The floor a build meets first: the top CMakeLists.txt, else the shallowest (protobuf: cmake/).
            lists = [f for f in floors if f[2].rsplit("/", 1)[-1] == "CMakeLists.txt"]
            pick = min(lists, key=lambda f: (f[2].count("/"), f[2], f[3])) if lists else None
            entry.update(version=pick[1] if pick else None, file=pick[2] if pick else None,
                         lowest=floor_summary(floors)["lowest"],
                         source="%s at %s" % (label or "the superproject repository", sub["commit"]))
            if not floors:
                entry["note"] = "no cmake_minimum_required at this commit (not a CMake project)"
            if sub_tree.unreadable:
                entry["unreadable_files"] = sub_tree.unreadable
        result.append(entry)
    return result


def _enclosing_conditions(lines, index):
    """The `if` lines (Python indentation) around lines[index], outermost first."""
    conditions, indent = [], len(lines[index]) - len(lines[index].lstrip())
    for i in range(index - 1, -1, -1):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        own = len(line) - len(line.lstrip())
        if own < indent:
            indent = own
            if re.match(r"\s*(if|elif|else)\b", line):
                conditions.append(line.strip())
            if own == 0:
                break
    return list(reversed(conditions))


def _where(path, number, lines=None):
    text = "%s:%d" % (path, number)
    if lines is not None and path.endswith(".py"):
        conds = _enclosing_conditions(lines, number - 1)
        if conds:
            text += " (under %s)" % " ".join(conds)
    return text


def nvtoolsext(tree):
    """How a Windows CUDA build finds NvToolsExt, and what happens when it is not there."""
    env_vars, defaults, findings, files = {}, {}, [], set()
    helpers = {}  # python name computed from the env var -> defining file
    for path in tree.files(_is_build_file):
        text = tree.text[path]
        if not _NVTX_NAME.search(text) and "NvToolsExt" not in text:
            continue
        for number, line in _code_lines(text, _comment_style(path)):
            for m in _WINDOWS_PATH.finditer(line):
                defaults.setdefault(m.group(1), []).append("%s:%d" % (path, number))
            if path.endswith(".py"):
                for m in _PY_ENV_READ.finditer(line):
                    if "NVTOOL" in m.group(2):
                        env_vars.setdefault(m.group(2), set()).add(path)
                        files.add(path)
                        target = re.match(r"\s*(\w+)\s*=", line)
                        if target:
                            helpers[target.group(1)] = path
            else:
                for m in _CMAKE_ENV.finditer(line):
                    if "NVTOOL" in m.group(1):
                        env_vars.setdefault(m.group(1), set()).add(path)
                        files.add(path)
    for path in tree.files(_is_build_file):
        text = tree.text[path]
        if not _NVTX_NAME.search(text):
            continue
        lines = text.splitlines()
        for number, line in _code_lines(text, _comment_style(path)):
            if path.endswith(".py"):
                for name, home in helpers.items():
                    if path == home or name not in line:
                        continue
                    if re.search(r"\b%s\s*\+|os\.path\.join\(\s*%s\b" % (name, name), line):
                        files.add(path)
                        findings.append(("fatal-py", "%s builds a path from %s, a TypeError when it is None"
                                         % (_where(path, number, lines), name)))
                    elif re.search(r"\[\s*['\"]\w+['\"]\s*\]\s*=\s*%s\b" % name, line):
                        files.add(path)
                        findings.append(("fatal-py", "%s puts %s into a child's environment, a TypeError "
                                         "when it is None" % (_where(path, number, lines), name)))
            elif _is_build_cmake(path):
                m = re.search(r"set\s*\(\s*(\w*NVTOOL\w*)\s+\"([^\"]+)\"", line)
                if m:
                    files.add(path)
                    findings.append(("info", "%s:%d falls back to the fixed folder %s when CMake variable %s "
                                     "is unset" % (path, number, m.group(2), m.group(1))))
                m = re.search(r"\bif\s*\(\s*DEFINED\s+ENV\{(\w*NVTOOL\w*)\}", line)
                if m:
                    files.add(path)
                    findings.append(("passed", "%s:%d takes the folder from %s when it is set"
                                     % (path, number, m.group(1))))
                if re.search(r"\bif\s*\(\s*\$ENV\{\w*NVTOOL\w*\}\s*\)", line):
                    findings.append(("info", "%s:%d tests if($ENV{...}) unquoted, which is false for a path "
                                     "(CMake reads it as a variable name)" % (path, number)))
                m = re.search(r"\$\{\w*NVTOOL\w*\}/lib/x64/(\w+\.lib)", line)
                if m:
                    files.add(path)
                    findings.append(("fatal", "%s:%d links %s from that folder, so linking fails without it"
                                     % (path, number, m.group(1))))
            elif path.endswith(".bat"):
                if re.search(r"-D\w*NVTOOL\w*=", line):
                    files.add(path)
                    findings.append(("passed", "%s:%d passes the folder setup.py found to CMake" % (path, number)))
    if helpers and not any(kind == "fatal-py" for kind, _ in findings):
        for name, home in sorted(helpers.items()):
            findings.insert(0, ("info", "no build file uses %s, which %s computes from the environment"
                                % (name, home)))
    env_var = next((n for n in sorted(env_vars) if any(p.endswith(".py") for p in env_vars[n])),
                   min(env_vars) if env_vars else None)
    default = min(defaults) if defaults else None
    sentences = [text for _, text in findings]
    if env_var:
        readers = sorted(env_vars[env_var])
        sentences.insert(0, "%s read%s %s (default %s)" % (", ".join(readers), "s" if len(readers) == 1 else "",
                                                           env_var, default))
    return {
        "env_var": env_var,
        "env_vars_read": {n: sorted(p) for n, p in sorted(env_vars.items())},
        "default_path": default,
        "default_path_at": defaults.get(default, []) if default else [],
        "required_on_windows_cuda": any(kind.startswith("fatal") for kind, _ in findings),
        # False: setting env_var changes nothing; only default_path is searched.
        "env_var_honoured": bool(env_var) and any(kind in ("fatal-py", "passed") for kind, _ in findings),
        "files": sorted(files),
        "how": ("; ".join(sentences) + ".") if sentences else "no build file mentions NvToolsExt.",
    }


def ninja(tree, env_by_group):
    """How setup.py decides whether the build uses ninja."""
    findings, files = [], set()
    module_probe = path_probe = False
    for path in tree.files(lambda p: _group_of(p) in ("setup.py", "tools/setup_helpers",
                                                      "tools/build_pytorch_libs")):
        text = tree.text[path]
        lines = text.splitlines()
        for number, line in _code_lines(text, _comment_style(path)):
            if path.endswith(".py"):
                if re.match(r"\s*import\s+ninja\b", line):
                    module_probe = True
                    files.add(path)
                    findings.append("%s:%d imports the Python module `ninja` (ninja only when it imports)"
                                    % (path, number))
                if re.search(r"\bwhich\(\s*['\"]ninja['\"]\s*\)", line):
                    path_probe = True
                    files.add(path)
                    findings.append("%s:%d looks for a `ninja` program on PATH" % (path, number))
                if re.search(r"check_negative_env_flag\(\s*['\"]USE_NINJA['\"]", line):
                    files.add(path)
                    findings.append("%s:%d: USE_NINJA=0 turns it off" % (path, number))
                if re.search(r"\[\s*['\"]CMAKE_GENERATOR['\"]\s*\]\s*=", line):
                    files.add(path)
                    findings.append("%s sets CMAKE_GENERATOR for the build script" % _where(path, number, lines))
            elif path.endswith(".bat"):
                m = re.search(r"%CMAKE_GENERATOR%\"\s*==\s*\"(\w+)\"", line)
                if m:
                    files.add(path)
                    findings.append("%s:%d reads CMAKE_GENERATOR (%s selects it)" % (path, number, m.group(1)))
    reads = sorted(g for g, names in env_by_group.items() if g != "cmake" and "CMAKE_GENERATOR" in names)
    return {
        "how": ("; ".join(findings) + ".") if findings else "no build file decides on ninja.",
        "files": sorted(files),
        "python_module_probe": module_probe,
        "path_probe": path_probe,
        "reads_cmake_generator": bool(reads),
        "reads_cmake_generator_in": reads,
    }


_ARCH_NUMBER = re.compile(r'"(\d\.\d)(?:\+PTX)?"')
_CAPABILITY_WARNING = re.compile(r"minimum cuda capability that we support is (\d\.\d)")
_LDG_CALL = re.compile(r"\b__ldg\s*\(")
# CUDA 9.x compiles for compute capability 3.0 and up (sm_20, Fermi, was dropped in CUDA 9).
CUDA9_OLDEST_ARCH = "3.0"


def unguarded_ldg(path, text):
    """(lines calling __ldg, compute capability >= 3.2, outside an `#if`/`#elif` on __CUDA_ARCH__,
    lines writing it into a string: kernels generated at run time, compiled for the GPU at hand)."""
    found, generated, stack = [], [], []  # stack: per open #if, whether its branch tests __CUDA_ARCH__
    for number, line in _code_lines(text, "//"):
        directive = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        if directive:
            kind, rest = directive.groups()
            if kind in ("if", "ifdef", "ifndef"):
                stack.append("__CUDA_ARCH__" in rest)
            elif kind == "elif" and stack:
                stack[-1] = "__CUDA_ARCH__" in rest
            elif kind == "else" and stack:
                stack[-1] = False
            elif kind == "endif" and stack:
                stack.pop()
            continue
        call = _LDG_CALL.search(line)
        # A declaration of an overload (`__device__ Half __ldg(const Half* p)`) is not a call.
        if not call or any(stack) or re.search(r"\b(?!return\b)\w+\s+__ldg\s*\(", line):
            continue
        (generated if line[:call.start()].count('"') % 2 else found).append("%s:%d" % (path, number))
    return found, generated


def cuda_arch(tree):
    """The oldest GPU architecture this tree compiles for, with the evidence.

    What the tree allows: its CMake's own list of common architectures (FindCUDA's
    select_compute_arch.cmake, CUDA_COMMON_GPU_ARCHITECTURES) and the sources: __ldg needs
    compute capability 3.2, so a call outside an `#if __CUDA_ARCH__ ...` stops a 3.0 compile.
    The toolkit's floor (3.0 for CUDA 9.x, as for 8.0 here) is applied on top.
    """
    select = [p for p in tree.files(lambda p: p.endswith("select_compute_arch.cmake")) if "third_party" not in p]
    common, common_at = [], None
    for path in select:
        for number, line in _code_lines(tree.text[path], "#"):
            if re.match(r"\s*set\s*\(\s*CUDA_COMMON_GPU_ARCHITECTURES\b", line):
                common = sorted(set(_ARCH_NUMBER.findall(line)), key=_version_tuple)
                common_at = "%s:%d" % (path, number)
                break
        if common_at:
            break
    warning, warning_at = None, None
    init = tree.text.get("torch/cuda/__init__.py", "")
    for number, line in _code_lines(init, "#"):
        m = _CAPABILITY_WARNING.search(line)
        if m:
            warning, warning_at = m.group(1), "torch/cuda/__init__.py:%d" % number
    ldg, generated = [], []
    for path in tree.files(_is_cuda_source):
        calls, strings = unguarded_ldg(path, tree.text[path])
        ldg += calls
        generated += strings
    floors = [CUDA9_OLDEST_ARCH] + ([common[0]] if common else []) + (["3.5"] if ldg else [])
    oldest = max(floors, key=_version_tuple)
    return {
        "oldest": oldest,
        "cmake_common_oldest": common[0] if common else None,
        "cmake_common_at": common_at,
        "unguarded_ldg": ldg,
        # The JIT fuser's generated kernels: they fail at run time on a GPU below 3.2, the build does not.
        "generated_ldg": generated,
        "runtime_warning_below": warning,
        "runtime_warning_at": warning_at,
        "how": "oldest is the newest of: CUDA 9's floor %s; the CMake common list's first, %s (%s); %s"
               % (CUDA9_OLDEST_ARCH, common[0] if common else "none", common_at or "no select_compute_arch.cmake",
                  "3.5, for %d __ldg call(s) outside an __CUDA_ARCH__ guard" % len(ldg) if ldg
                  else "no __ldg call outside an __CUDA_ARCH__ guard"),
    }


def cuda_host_gcc(tree):
    """The gcc versions the tree's CMake refuses as nvcc's host compiler, per CUDA version, or None.

    0.4.1 on: cmake/public/cuda.cmake stops CUDA 9.0/9.1 with gcc >= 6 (their std::tuple bug)
    unless CUDAHOSTCXX names another host compiler; stricter than NVIDIA's own limit (gcc 6).
    """
    path = "cmake/public/cuda.cmake"
    lines = tree.text.get(path, "").splitlines()
    for index, line in enumerate(lines):
        if "not compatible with std::tuple from GCC" not in line:
            continue
        block = "\n".join(lines[max(0, index - 10):index])
        lower = re.search(r"CUDA_VERSION\s+VERSION_EQUAL\s+(\d+\.\d+)", block)
        upper = re.search(r"CUDA_VERSION\s+VERSION_LESS\s+(\d+\.\d+)", block)
        gcc = re.search(r"CMAKE_C_COMPILER_VERSION\s+VERSION_LESS\s+(\d+(?:\.\d+)?)", block)
        if not (lower and upper and gcc):
            return None
        start = next(i for i in range(index, -1, -1) if "VERSION_EQUAL" in lines[i])
        return {
            "cuda_from": lower.group(1), "cuda_below": upper.group(1), "gcc_below": gcc.group(1),
            "unless_env": "CUDAHOSTCXX" if "CUDA_HOST_COMPILER" in block else None,
            "at": "%s:%d" % (path, start + 1),
        }
    return None


def extract(git, release, commit, mirrors=None, source=SOURCE):
    """The facts table of one release (a dict, JSON-ready)."""
    if not git.has_commit(commit):
        raise UserError("%s: commit %s of release %s is not in this repository" % (git.path, commit, release))
    tree = Tree(git, commit, _wanted)
    env, dynamic = {g: set() for g in ENV_GROUPS}, {g: [] for g in ENV_GROUPS}
    by_script = {}  # the build scripts differ per platform (.bat on Windows, .sh on Linux)
    for path in sorted(tree.text):
        group = _group_of(path)
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
        "cuda_arch": cuda_arch(tree),
        "cuda_host_gcc": cuda_host_gcc(tree),
        "python_requires": python_requires(tree),
        # distutils' _get_vc_env runs vcvarsall for the newest toolset unless DISTUTILS_USE_SDK is set.
        "distutils_vc_env_calls": [
            "%s:%d" % (path, number) for path in tree.files(_is_build_file) if path.endswith(".py")
            for number, line in _code_lines(tree.text[path], "#") if re.search(r"\b_get_vc_env\(", line)],
        "unreadable": sorted(tree.unreadable),
        "missing_blobs": tree.missing_blobs(),
    }
    return facts


# ---- releases, tables, drift ---------------------------------------------------------------------------

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


# ---- command line ------------------------------------------------------------------------------------------

def add_parser(subparsers):
    parser = subparsers.add_parser(
        "upstream-facts", help="read upstream PyTorch at each pinned release; write or check the facts table",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --submodule-mirrors ~/mirrors\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --check\n"
        "  torchwin upstream-facts --repo ~/src/pytorch --ref v1.2.0   # any ref, printed, not written\n")
    parser.add_argument("--repo", required=True, metavar="PATH",
                        help="an upstream PyTorch git repository (bare or not) holding the pinned commits")
    parser.add_argument("--release", action="append", metavar="X.Y.Z",
                        help="only this release of variants.yaml (repeatable; default: all)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where the tables live (default: recipes/pytorch/upstream of the checkout)")
    parser.add_argument("--variants", type=Path, metavar="FILE",
                        help="the release list (default: recipes/pytorch/variants.yaml of the checkout)")
    parser.add_argument("--submodule-mirrors", metavar="DIR",
                        help="folder of submodule repositories named OWNER+NAME (or OWNER+NAME/repo) "
                        "after their GitHub URL, to read their CMake floors")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing every difference from the committed tables")
    parser.add_argument("--ref", metavar="REF",
                        help="print the facts of any commit or tag as JSON instead (not written)")
    parser.set_defaults(func=run)


def run(args):
    git = Git(args.repo)
    if not Path(args.repo).is_dir() or not git.is_repository():
        raise UserError("--repo %s: not a git repository" % args.repo)
    if args.ref:
        proc = git.run("rev-parse", "--verify", "-q", "%s^{commit}" % args.ref, check=False)
        if proc.returncode != 0:
            raise UserError("--ref %s: no such commit or tag in %s" % (args.ref, args.repo))
        commit = proc.stdout.decode().strip()
        release = args.ref[1:] if re.fullmatch(r"v\d.*", args.ref) else args.ref
        print(render(extract(git, release, commit, args.submodule_mirrors)), end="")
        return 0
    root = None if (args.variants and args.out) else require_repo_root()
    variants = args.variants or root / "recipes" / "pytorch" / "variants.yaml"
    out_dir = args.out or root / "recipes" / "pytorch" / "upstream"
    releases = pinned_releases(variants)
    if args.release:
        known = [r for r, _ in releases]
        for wanted in args.release:
            if wanted not in known:
                raise UserError("--release %s: not in %s; allowed: %s" % (wanted, variants, ", ".join(known)))
        releases = [(r, c) for r, c in releases if r in args.release]
    tables = [extract(git, release, commit, args.submodule_mirrors) for release, commit in releases]
    if args.check:
        drift, notes = check(tables, out_dir)
        if not args.release:
            drift += ["%s: no such release in %s" % (name, variants)
                      for name in stray_tables(out_dir, {"%s.json" % r for r, _ in releases})]
        for line in notes:
            print("note: " + line)
        for line in drift:
            print(line)
        if drift:
            raise Failure("%d difference(s) between %s and upstream; regenerate with "
                          "`torchwin upstream-facts --repo %s`" % (len(drift), out_dir, args.repo))
        print("%d table(s) match upstream" % len(tables))
        return 0
    for facts in tables:
        path = out_dir / ("%s.json" % facts["release"])
        write_atomic(path, render(facts))
        print("wrote %s" % path)
    return 0

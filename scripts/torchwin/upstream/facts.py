"""Facts about the build in one upstream release's files: what it reads and what it requires.

The build environment variables setup.py, the setup helpers and CMake read (and the scripts set),
the CMake floors of upstream and its submodules, the version setup.py declares, python_requires,
its submodules and its bare `yaml.load` calls. Each is a function of a `Tree` (one commit).
"""

from __future__ import annotations

import re
from pathlib import Path

from torchwin.upstream.tree import (
    NAME_PATTERN,
    Git,
    Tree,
    code_lines,
    group_of,
    is_build_cmake,
    is_cmake,
    version_tuple,
)

CMAKE_BREAKING_FLOOR = (3, 5)  # CMake >= 4 refuses cmake_minimum_required(VERSION < 3.5)


# `my_env.get('CC')` reads a copy of os.environ (1.1.0's build_pytorch_libs.py): still the environment.
PY_ENV_READ = re.compile(
    r"(?:\bos\.getenv|\bgetenv|\benviron\.get|\b\w*_env\.get|\bcheck_env_flag|\bcheck_negative_env_flag)"
    r"\(\s*(['\"])(%s)\1(?=\s*[,)])" % NAME_PATTERN)
_PY_ENV_INDEX = re.compile(r"\benviron\[\s*(['\"])(%s)\1\s*\](?!\s*=[^=])" % NAME_PATTERN)
_PY_ENV_IN = re.compile(r"(['\"])(%s)\1\s+(?:not\s+)?in\s+os\.environ\b" % NAME_PATTERN)


# A read whose name is built from a literal prefix, e.g. check_env_flag('NO_' + var).
_PY_ENV_DYNAMIC = re.compile(
    r"(?:\bos\.getenv|\bgetenv|\benviron\.get|\bcheck_env_flag|\bcheck_negative_env_flag)"
    r"\(\s*((['\"])\w*\2\s*\+\s*\w+)")
CMAKE_ENV = re.compile(r"(?:\$ENV|\bDEFINED\s+ENV)\{(%s)\}" % NAME_PATTERN)
_CMAKE_FLOOR = re.compile(r"cmake_minimum_required\s*\(\s*VERSION\s+([0-9]+(?:\.[0-9]+)*)", re.I)
_BAT_READ = re.compile(r"%%(%s)(?::[^%%\r\n]*)?%%|!(%s)!|\bdefined\s+(%s)" % (NAME_PATTERN, NAME_PATTERN, NAME_PATTERN), re.I)
_BAT_SET = re.compile(r"\bset\s+(?:/[ap]\s+)?\"?(%s)\s*=" % NAME_PATTERN, re.I)


# cmd.exe computes these itself; a script reading them reads no environment.
_CMD_PSEUDO = {"CD", "DATE", "TIME", "RANDOM", "ERRORLEVEL", "CMDCMDLINE", "CMDEXTVERSION"}
_SH_READ = re.compile(r"(?<!\\)\$\{#?(%s)|(?<!\\)\$(%s)" % (NAME_PATTERN, NAME_PATTERN))
_SH_SET = re.compile(r"(?:^\s*|[;&|(){]\s*|\bexport\s+|\blocal\s+|\breadonly\s+|\bdeclare\s+(?:-\w+\s+)*)"
                     r"(%s)\+?=|\bfor\s+(%s)\s+in\b|\bread\s+(?:-\w+\s+)*(%s)" % (NAME_PATTERN, NAME_PATTERN, NAME_PATTERN))
_YAML_LOAD = re.compile(r"\byaml\.load\(")
_VERSION_LINE = re.compile(r"^version\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_PYTHON_REQUIRES = re.compile(r"python_requires\s*=\s*(?:(['\"])([^'\"]*)\1|([^,\n)]+(?:\([^)]*\))?))")


def env_reads(path, text):
    """(sorted names the file reads from the environment, dynamic reads as 'file:line: expr')."""
    names, dynamic = set(), []
    if path.endswith(".py"):
        for number, line in code_lines(text, "#"):
            if line.lstrip().startswith("def "):
                continue
            for regex in (PY_ENV_READ, _PY_ENV_INDEX, _PY_ENV_IN):
                names.update(m.group(2) for m in regex.finditer(line))
            dynamic.extend("%s:%d: %s" % (path, number, m.group(1)) for m in _PY_ENV_DYNAMIC.finditer(line))
    elif is_build_cmake(path):
        for _, line in code_lines(text, "#"):
            names.update(CMAKE_ENV.findall(line))
    elif path.endswith((".sh", ".bat")):
        names = _script_env_reads(path, text)
    return names, dynamic


def _script_env_reads(path, text):
    """Names a shell or batch script reads before it first assigns them itself: its inputs."""
    bat = path.endswith(".bat")
    read_re, set_re = (_BAT_READ, _BAT_SET) if bat else (_SH_READ, _SH_SET)
    first_read, first_set = {}, {}
    for number, line in code_lines(text, "rem" if bat else "#"):
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
        for number, line in code_lines(tree_text[path], "#"):
            for m in _CMAKE_FLOOR.finditer(line):
                floors.append((version_tuple(m.group(1)), m.group(1), path, number))
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


def dll_directory_calls(tree):
    """Where `import torch` registers its DLL folders with os.add_dll_directory (torch/__init__.py).

    Python 3.8 on Windows no longer finds an extension module's DLLs through PATH: a torch that
    only prepends torch/lib to PATH (1.4.0) fails to import there with "DLL load failed".
    """
    text = tree.text.get("torch/__init__.py", "")
    return ["torch/__init__.py:%d" % number for number, line in code_lines(text, "#")
            if re.search(r"\badd_dll_directory\(", line)]


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


# A build script that runs `make` itself (0.3's torch/lib/build_libs.sh) builds with make whatever
# CMAKE_GENERATOR says; one that runs `${CMAKE_INSTALL}` (0.4 on) lets setup.py choose.
_MAKE_COMMAND = re.compile(r"^\s*(?:[\w]+=\S*\s+)*make\b(?!\s*=)")
_JOBS = re.compile(r"(?:^|\s)-j\s*(\$\([^)]*\)|\"[^\"]*\"|\S+)")
_BUILD_TOOL = re.compile(r"\bmake\b|\bninja\b|cmake\s+--build|\bmsbuild\b", re.I)


def build_scripts(tree):
    """What each native build script (the .sh / .bat setup.py runs) builds with, and its job count.

    {path: {"make_at": lines running `make` directly, "jobs": [{"at", "value"}] of every `-j`
    given to a build tool, "reads_cmake_generator": whether the script reads CMAKE_GENERATOR}}.
    """
    result = {}
    for path in tree.files(lambda p: group_of(p) in ("tools/build_pytorch_libs", "torch/lib/build_libs")
                           and p.endswith((".sh", ".bat"))):
        text = tree.text[path]
        bat = path.endswith(".bat")
        make_at, jobs = [], []
        for number, line in code_lines(text, "rem" if bat else "#"):
            if not bat and _MAKE_COMMAND.match(line):
                make_at.append("%s:%d" % (path, number))
            if _BUILD_TOOL.search(line):
                jobs += [{"at": "%s:%d" % (path, number), "value": m.group(1)} for m in _JOBS.finditer(line)]
        names, _ = env_reads(path, text)
        result[path] = {"make_at": make_at, "jobs": jobs, "reads_cmake_generator": "CMAKE_GENERATOR" in names}
    return result

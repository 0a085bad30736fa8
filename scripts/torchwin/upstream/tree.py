"""One commit of an upstream PyTorch git repository, and which of its files the facts come from.

`Git` runs git on a bare repository (no work tree, some large blobs absent: files are read with
`git cat-file`, never `git archive`); `Tree` is one commit's files. The helpers sort a file into
the groups the facts are read from (build CMake, setup helpers, CUDA sources) and strip comments.
"""

from __future__ import annotations

import os
import re
import subprocess

from torchwin.errors import Failure

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"


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


def is_cmake(path):
    name = path.rsplit("/", 1)[-1]
    return name in ("CMakeLists.txt", "CMakeLists.txt.in") or name.endswith((".cmake", ".cmake.in"))


def is_build_cmake(path):
    """CMake files the build runs (templates for consumers, *.in, are left out)."""
    return is_cmake(path) and not path.endswith(".in")


def group_of(path):
    if path == "setup.py":
        return "setup.py"
    if path.startswith("tools/setup_helpers/") and path.endswith(".py"):
        return "tools/setup_helpers"
    if path.startswith("tools/build_pytorch_libs.") and path.rsplit(".", 1)[-1] in ("py", "sh", "bat"):
        return "tools/build_pytorch_libs"
    # 0.3's setup.py runs torch/lib/build_libs.sh (the fork's Windows branch: build_libs.bat).
    if path in ("torch/lib/build_libs.sh", "torch/lib/build_libs.bat"):
        return "torch/lib/build_libs"
    if is_build_cmake(path):
        return "cmake"
    return None


# CUDA sources a torch build compiles (ATen/THC, c10, torch/csrc, the caffe2 core and math it links):
# where an intrinsic an old GPU lacks would stop the compile for that architecture.
_CUDA_SOURCE_DIRS = ("aten/src/", "c10/", "torch/csrc/", "caffe2/core/", "caffe2/utils/")
_CUDA_SOURCE_EXTS = (".cu", ".cuh", ".h", ".cpp", ".cc")


def is_cuda_source(path):
    return path.startswith(_CUDA_SOURCE_DIRS) and path.endswith(_CUDA_SOURCE_EXTS) and "/hip/" not in path


def is_wanted(path):
    return (path in (".gitmodules", "version.txt") or path.endswith((".py", ".sh", ".bat"))
            or is_cmake(path) or is_cuda_source(path))


def is_build_file(path):
    """Files that take part in `python setup.py install`: setup.py, tools/, CMake."""
    return (path == "setup.py" or (path.startswith("tools/") and path.endswith((".py", ".sh", ".bat")))
            or group_of(path) == "torch/lib/build_libs" or is_build_cmake(path))


def code_lines(text, comment):
    """(line number, line without its trailing comment) for every line."""
    for number, line in enumerate(text.splitlines(), 1):
        if comment == "rem":
            yield number, "" if re.match(r"\s*(?:rem\b|::)", line, re.I) else line
        else:
            cut = line.find(comment)
            yield number, line if cut < 0 else line[:cut]


def comment_style(path):
    if path.endswith(".bat"):
        return "rem"
    return "#"


def version_tuple(text):
    return tuple(int(p) for p in text.split("."))


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


def where_of(path, number, lines=None):
    text = "%s:%d" % (path, number)
    if lines is not None and path.endswith(".py"):
        conds = _enclosing_conditions(lines, number - 1)
        if conds:
            text += " (under %s)" % " ".join(conds)
    return text

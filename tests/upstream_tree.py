"""Helpers for the opt-in tests that read a local upstream PyTorch repository (TORCHWIN_UPSTREAM_REPO).

The repository may be bare and may lack some blobs (the mirror this project is developed with misses
a few large ones), so trees are read with git plumbing (`git ls-tree`, `git cat-file --batch`), never
`git archive` or a checkout. Submodule repositories are looked up in TORCHWIN_SUBMODULE_MIRRORS, a
folder laid out as `<owner>+<name>/repo` (the layout of the `fetch` tool's snapshots of GitHub
repositories); a submodule without one there is filled with a placeholder file, and the tests say so.
"""

import functools
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "pytorch"
PLACEHOLDER = "TORCHWIN_PLACEHOLDER"


def repo_from_env(variable, what):
    """The git repository an opt-in variable names, or a skip that says how to enable the test."""
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"opt-in: set {variable} to a local clone (bare is fine) of {what}")
    path = Path(value)
    if git(path, "rev-parse", "--git-dir", check=False).returncode != 0:
        pytest.fail(f"{variable}={value} is not a git repository", pytrace=False)
    return path


def upstream_repo():
    """The repository TORCHWIN_UPSTREAM_REPO names, or a skip that says how to enable the test."""
    return repo_from_env("TORCHWIN_UPSTREAM_REPO", "pytorch/pytorch with the release tags, e.g. the snapshot "
                         "of github:hterada/pytorch")


def fork_repo():
    """The repository TORCHWIN_FORK_REPO names (peterjc123/pytorch: 0.3's Windows builds), or a skip."""
    return repo_from_env("TORCHWIN_FORK_REPO", "peterjc123/pytorch, the 2017 Windows fork 0.3's win-64 builds "
                         "come from (`fetch github:peterjc123/pytorch`)")


def repo_for(release, platform=None):
    """The repository the release's build on `platform` comes from: the fork's where it has a table, else upstream."""
    return fork_repo() if forked(release, platform) else upstream_repo()


def forked(release, platform):
    return bool(platform) and (RECIPE / "upstream" / f"{release}-{platform}.json").is_file()


def git(repo, *args, input=None, check=True):
    return subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True, check=check)


def facts(release, platform=None):
    """upstream/<release>.json, or <release>-<platform>.json where that platform builds a fork's commit."""
    name = f"{release}-{platform}" if forked(release, platform) else release
    return json.loads((RECIPE / "upstream" / f"{name}.json").read_text())


def skipped(release):
    return json.loads((RECIPE / "submodules_skipped.json").read_text()).get(release, {})


def releases():
    """The releases the recipe builds, from variants.yaml (the one list of them)."""
    import yaml

    return [str(v) for v in yaml.safe_load((RECIPE / "variants.yaml").read_text())["pytorch_version"]]


def release_patches(release):
    """pytorch_patches of the release's row in variants.yaml (space separated there)."""
    import yaml

    table = yaml.safe_load((RECIPE / "variants.yaml").read_text())
    return (table["pytorch_patches"][table["pytorch_version"].index(release)] or "").split()


def releases_on(platform):
    """The releases with builds for `platform` (a release may build on Linux only: 1.7.x, no VS2017 build)."""
    import yaml

    table = yaml.safe_load((RECIPE / "variants.yaml").read_text())
    pythons = table["pytorch_python_win" if platform == "win-64" else "pytorch_python_linux"]
    return [str(v) for v, py in zip(table["pytorch_version"], pythons) if str(py).split()]


def tree_entries(repo, commit):
    """[(mode, type, sha, path)] of a commit's whole tree."""
    out = git(repo, "ls-tree", "-r", "-z", commit).stdout.decode("utf-8", "surrogateescape")
    entries = []
    for record in filter(None, out.split("\0")):
        meta, path = record.split("\t", 1)
        mode, kind, sha = meta.split()
        entries.append((mode, kind, sha, path))
    return entries


def missing_blobs(repo, commit):
    """{path: sha} of the blobs of the commit's tree that the repository does not have."""
    blobs = [(sha, path) for _, kind, sha, path in tree_entries(repo, commit) if kind == "blob"]
    out = git(repo, "cat-file", "--batch-check", input="".join(s + "\n" for s, _ in blobs).encode()).stdout
    lines = out.decode().splitlines()
    return {path: sha for (sha, path), line in zip(blobs, lines) if line.endswith(" missing")}


def export_tree(repo, commit, dest, symlinks=False):
    """Write the commit's tree to dest; returns {path: sha} of blobs the repository lacks (written empty).

    A symlink (mode 120000) becomes a file holding its target, or with `symlinks` a real symlink (what a
    checkout makes, and what a configure or compile of the tree needs).
    """
    entries = tree_entries(repo, commit)
    blobs = [(mode, sha, path) for mode, kind, sha, path in entries if kind == "blob"]
    for mode, kind, _, path in entries:
        if kind == "commit":
            (dest / path).mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    missing = {}
    try:
        for mode, sha, path in blobs:
            proc.stdin.write(sha.encode() + b"\n")
            proc.stdin.flush()
            header = proc.stdout.readline().decode().split()
            target = dest / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if header[-1] == "missing":
                missing[path] = sha
                target.write_bytes(b"")
                continue
            data = proc.stdout.read(int(header[2]))
            proc.stdout.read(1)
            if symlinks and mode == "120000":
                if target.is_symlink() or target.exists():
                    target.unlink()
                os.symlink(data.decode("utf-8", "surrogateescape"), target)
                continue
            target.write_bytes(data)
            if mode == "100755":
                target.chmod(0o755)
    finally:
        proc.stdin.close()
        proc.wait()
    return missing


def fill_placeholders(src, release, platform=None):
    """Put a placeholder file in every empty submodule folder the build needs; the paths filled."""
    filled = []
    for module in facts(release, platform)["submodules"]:
        path = module["path"]
        if path in skipped(release):
            continue
        folder = src / path
        folder.mkdir(parents=True, exist_ok=True)
        if not any(folder.iterdir()):
            (folder / PLACEHOLDER).write_text(f"placeholder for {module['url']} at {module['commit']}\n")
            filled.append(path)
    return filled


def github_slug(url):
    match = re.match(r"(?:https?://|git://|git@)github\.com[/:]([^/]+)/([^/]+?)(?:\.git)?/?$", url or "")
    return match.groups() if match else None


def submodule_mirror(url, commit):
    """A local repository for a submodule URL that has the commit and everything it needs, or None."""
    root = os.environ.get("TORCHWIN_SUBMODULE_MIRRORS")
    slug = github_slug(url)
    if not root or not slug:
        return None
    repo = Path(root) / f"{slug[0]}+{slug[1]}" / "repo"
    if not repo.is_dir() or git(repo, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode:
        return None
    return repo if _complete(repo) else None


@functools.cache
def _complete(repo):
    """A submodule clone fetches every branch and tag: a snapshot missing any object they reach cannot serve it."""
    objects = git(repo, "rev-list", "--objects", "--missing=print", "--all", check=False)
    return objects.returncode == 0 and not any(line.startswith(b"?") for line in objects.stdout.splitlines())


def nested_submodules(repo, commit):
    """[(name, path, url, commit)] of a repository's own submodules at a commit."""
    out = git(repo, "config", "--blob", f"{commit}:.gitmodules", "--get-regexp", r"^submodule\..*\.(path|url)$",
              check=False).stdout.decode()
    entries = {}
    for line in out.splitlines():
        key, value = line.split(" ", 1)
        name, field = key[len("submodule."):].rsplit(".", 1)
        entries.setdefault(name, {})[field] = value
    links = {path: sha for mode, kind, sha, path in tree_entries(repo, commit) if kind == "commit"}
    return [(name, e.get("path", name), e.get("url"), links.get(e.get("path", name))) for name, e in entries.items()]


def history_lacks_objects(repo, commit):
    """True when some object the commit reaches (its whole history) is missing from the repository."""
    out = git(repo, "rev-list", "--objects", "--missing=print", commit, check=False).stdout
    return any(line.startswith(b"?") for line in out.splitlines())


def shallow_tag_repo(repo, tag, dest):
    """A bare repository holding only `tag` at depth 1, fetched from repo."""
    git(dest.parent, "init", "-q", "--bare", str(dest))
    git(dest, "fetch", "-q", "--depth", "1", str(repo), f"+refs/tags/{tag}:refs/tags/{tag}")
    return dest


def shallow_commit_repo(repo, commit, dest):
    """A bare repository holding only `commit` at depth 1, fetched from repo through a ref that points at it
    (a fork's branch tip: refs/remotes/origin/v0.3.0_win in a clone), as refs/heads/<its name>."""
    refs = git(repo, "for-each-ref", "--points-at", commit, "--format=%(refname)").stdout.decode().split()
    ref = next(r for r in refs if not r.endswith("/HEAD"))
    git(dest.parent, "init", "-q", "--bare", str(dest))
    branch = f"refs/heads/{ref.rsplit('/', 1)[-1]}"
    git(dest, "fetch", "-q", "--depth", "1", str(repo), f"+{ref}:{branch}")
    git(dest, "symbolic-ref", "HEAD", branch)  # a clone starts from the remote's HEAD
    # The engine clones its (here shallow) cache into the checkout, and a clone from a shallow repository
    # copies only what branches and tags reach: its cache keeps branches as remotes/origin/*, so a tag
    # carries the commit across (a full clone, as from GitHub, copies every object).
    git(dest, "tag", f"torchwin-pin-{commit[:10]}", commit)
    return dest


def shallow_fetching_git(folder):
    """A folder with a `git` that runs the real one, adding --update-shallow to `git fetch`."""
    import shutil

    real = shutil.which("git")
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "git"
    shim.write_text(f'#!/bin/sh\nif [ "$1" = fetch ]; then shift; exec {real} fetch --update-shallow "$@"; fi\n'
                    f'exec {real} "$@"\n')
    shim.chmod(0o755)
    return folder


# Submodule URLs of the release tags whose GitHub repository was renamed or moved since (GitHub redirects
# the old name): the mirror is kept under the new name.
GITHUB_RENAMES = {
    ("Maratyszcza", "cpuinfo"): ("pytorch", "cpuinfo"),
    ("google", "protobuf"): ("protocolbuffers", "protobuf"),
    ("01org", "mkl-dnn"): ("intel", "mkl-dnn"),
}


def resolve_url(url, parent_slug):
    """(owner, name) of a submodule URL; a relative one (`../../owner/name`) is resolved against its parent's."""
    if url and url.startswith("../") and parent_slug:
        parts = [parent_slug[0], parent_slug[1]]
        for part in url.rstrip("/").split("/"):
            if part == "..":
                parts.pop() if parts else None
            elif part:
                parts.append(part)
        if len(parts) == 2:
            return parts[0], parts[1][:-4] if parts[1].endswith(".git") else parts[1]
        return None
    return github_slug(url)


def mirror_with_commit(slug, commit):
    """The repository under TORCHWIN_SUBMODULE_MIRRORS for a GitHub (owner, name) holding `commit`, or None.

    Only the commit's tree is read (for an export), so unlike submodule_mirror the mirror need not be complete.
    """
    root = os.environ.get("TORCHWIN_SUBMODULE_MIRRORS")
    if not root or not slug or not commit:
        return None
    # GitHub names are case-insensitive (.gitmodules says pytorch/fbgemm, the repository is pytorch/FBGEMM).
    folders = {entry.name.lower(): entry for entry in Path(root).iterdir()}
    for owner, name in (slug, GITHUB_RENAMES.get(slug)) if slug in GITHUB_RENAMES else (slug,):
        base = folders.get(f"{owner}+{name}".lower())
        if base is None:
            continue
        for folder in (base / "repo", base / "repo" / ".git"):
            if folder.is_dir() and git(folder, "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode == 0:
                return folder
    return None


def export_recursive(repo, commit, dest, slug=("pytorch", "pytorch"), prefix=""):
    """Write a commit's tree and, recursively, every submodule a mirror holds, with real symlinks.

    Returns {"missing_blobs": {path: sha}, "no_mirror": {path: "url@commit"}} over the whole tree (paths from
    the top): blobs the repositories lack are written empty, submodules without a mirror are left empty.
    """
    report = {"missing_blobs": {prefix + p: s for p, s in export_tree(repo, commit, dest, symlinks=True).items()},
              "no_mirror": {}}
    for _, path, url, sha in nested_submodules(repo, commit):
        if not sha:
            continue  # named in .gitmodules but not in this commit's tree
        sub_slug = resolve_url(url, slug)
        mirror = mirror_with_commit(sub_slug, sha)
        if mirror is None:
            report["no_mirror"][prefix + path] = f"{url}@{sha}"
            continue
        nested = export_recursive(mirror, sha, dest / path, sub_slug, prefix + path + "/")
        report["missing_blobs"].update(nested["missing_blobs"])
        report["no_mirror"].update(nested["no_mirror"])
    return report

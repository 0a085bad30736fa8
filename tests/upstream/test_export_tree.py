"""tests/upstream_tree.export_recursive: a tag's tree with its submodules, from mirrors, as a checkout has it.

Real git repositories made here: a parent with a symlink and two submodules (one under a GitHub name
that was renamed since, one no mirror holds), and a submodule with a nested one by relative URL.
"""

import os
import subprocess

import pytest
import upstream_tree as up


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path, files, links=(), gitmodules=None, gitlinks=()):
    """A repository with one commit: files {path: text}, symlinks {path: target}, gitlinks {path: sha}."""
    path.mkdir(parents=True)
    git(path, "init", "-q")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for name, target in dict(links).items():
        os.symlink(target, path / name)
    if gitmodules:
        (path / ".gitmodules").write_text(gitmodules)
    git(path, "add", "-A")
    for name, sha in dict(gitlinks).items():
        git(path, "update-index", "--add", "--cacheinfo", f"160000,{sha},{name}")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def mirrors(tmp_path, monkeypatch):
    root = tmp_path / "mirrors"
    leaf = make_repo(root / "pybind+leaf" / "repo", {"leaf.h": "int leaf;\n"})
    # cpuinfo moved from Maratyszcza to pytorch on GitHub: the mirror is kept under the new name.
    cpuinfo = make_repo(root / "pytorch+cpuinfo" / "repo", {"CMakeLists.txt": "project(cpuinfo)\n"},
                        gitmodules='[submodule "deps/leaf"]\n\tpath = deps/leaf\n\turl = ../../pybind/leaf\n',
                        gitlinks={"deps/leaf": leaf})
    monkeypatch.setenv("TORCHWIN_SUBMODULE_MIRRORS", str(root))
    return {"cpuinfo": cpuinfo, "leaf": leaf}


def test_submodules_come_from_mirrors_recursively_with_real_symlinks(tmp_path, mirrors):
    gone = "1" * 40
    parent = make_repo(
        tmp_path / "pytorch", {"setup.py": "version = '1.0'\n", "tools/shared/cwrap_common.py": "x = 1\n"},
        links={"tools/cwrap.py": "shared/cwrap_common.py"},
        gitmodules=('[submodule "third_party/cpuinfo"]\n\tpath = third_party/cpuinfo\n'
                    '\turl = https://github.com/Maratyszcza/cpuinfo.git\n'
                    '[submodule "third_party/gone"]\n\tpath = third_party/gone\n'
                    '\turl = https://github.com/NervanaSystems/nervanagpu.git\n'),
        gitlinks={"third_party/cpuinfo": mirrors["cpuinfo"], "third_party/gone": gone})
    dest = tmp_path / "tree"
    report = up.export_recursive(tmp_path / "pytorch", parent, dest)
    assert (dest / "tools" / "cwrap.py").is_symlink()
    assert (dest / "tools" / "cwrap.py").read_text() == "x = 1\n"
    assert (dest / "third_party" / "cpuinfo" / "CMakeLists.txt").read_text() == "project(cpuinfo)\n"
    assert (dest / "third_party" / "cpuinfo" / "deps" / "leaf" / "leaf.h").read_text() == "int leaf;\n"
    assert report == {"missing_blobs": {},
                      "no_mirror": {"third_party/gone": f"https://github.com/NervanaSystems/nervanagpu.git@{gone}"}}
    assert (dest / "third_party" / "gone").is_dir() and not any((dest / "third_party" / "gone").iterdir())


def test_relative_urls_resolve_against_the_parents_github_name():
    assert up.resolve_url("../../wjakob/clang-cindex-python3", ("pybind", "pybind11")) == (
        "wjakob", "clang-cindex-python3")
    assert up.resolve_url("https://github.com/pytorch/FBGEMM.git", None) == ("pytorch", "FBGEMM")

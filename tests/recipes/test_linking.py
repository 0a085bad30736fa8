"""recipes/pytorch: what the packages link and pin, against upstream's own facts (issue 24).

The cuDNN run pin is as strict as torch's own check of the cuDNN it loads; MKL-DNN is expected
exactly where the driver switches it on.
"""

import json
from pathlib import Path

import pytest
from torchwin import recipes

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "pytorch"


def facts(release):
    return json.loads((RECIPE / "upstream" / ("%s.json" % release)).read_text())


@pytest.fixture(scope="module")
def rendered():
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCHWIN_CUDNN_COMPILED", "7.1")
    try:
        yield recipes.render([RECIPE], ["linux-64", "win-64"])
    finally:
        mp.undo()


def test_cudnn_run_pin_is_as_strict_as_torchs_own_check(rendered):
    """0.4.x raise "cuDNN version mismatch" unless major.minor equal the compiled one; 1.x accept a newer
    minor of the same major. The pin comes from TORCHWIN_CUDNN_COMPILED, the cuDNN of the cudnn.h the
    driver checks."""
    builds = [v for v in rendered if v.name == "pytorch" and v.variant["cuda_compiler_version"] != "None"]
    assert builds
    for v in builds:
        pins = [d for d in v.depends if d.split()[0] == "cudnn"]
        rule = facts(v.variant["pytorch_version"])["cudnn_version_check"]["rule"]
        assert pins == (["cudnn 7.1.*"] if rule == "same_minor" else ["cudnn >=7.1,<8"]), (v.key, rule)
        assert v.rendered.recipe.build.to_dict()["script"]["env"]["TORCHWIN_CUDNN_COMPILED"] == "7.1", v.key


def test_mkldnn_expectation_is_passed_to_the_package_test(rendered):
    builds = [v for v in rendered if v.name == "pytorch"]
    assert builds
    for v in builds:
        script = next(t["script"] for t in v.tests if "script" in t)
        assert script["env"]["TORCHWIN_EXPECT_MKLDNN"] == "facts:" + v.variant["pytorch_version"], v.key


def test_the_default_cuda_and_randomtemp_decisions_are_written_with_their_evidence():
    """Issue 24 item 9: 9.0 stays the default CUDA on Windows for 1.3.0-1.6.0 (upstream's were 9.2), and
    randomtemp is not used by default; both say why where they are decided."""
    import yaml

    variants_text = (RECIPE / "variants.yaml").read_text()
    data = yaml.safe_load(variants_text)
    offsets = dict(zip(data["cuda_compiler_version"], data["cuda_build_offset"]))
    assert offsets["9.0"] > max(o for c, o in offsets.items() if c != "9.0")
    assert "7e1a5835" in variants_text and "1.3.0-1.6.0" in variants_text
    recipe_text = (RECIPE / "recipe.yaml").read_text()
    assert "randomtemp" in recipe_text and "pytorch#25393" in recipe_text and "builder #448" in recipe_text
    readme = (RECIPE / "README.md").read_text()
    assert "No randomtemp" in readme and "c3877de0" in readme


@pytest.mark.skipif(not __import__("os").environ.get("TORCHWIN_UPSTREAM_REPO"),
                    reason="set TORCHWIN_UPSTREAM_REPO to an upstream PyTorch clone to apply the patches to the tags")
def test_each_windows_patch_applies_to_its_releases_findmkl_at_the_tag(tmp_path):
    """The patch a release lists applies (`git apply --check`, as the driver runs it) to that tag's own
    FindMKL.cmake, and afterwards FindMKL also looks for the `_dll` names. Where win-64 builds a fork's
    commit (0.3: pytorch_commit_win), the patch must apply to that commit's FindMKL too
    (TORCHWIN_FORK_REPO, a clone of the fork; without it those are skipped, saying so)."""
    import os
    import subprocess

    import yaml

    repo = os.environ["TORCHWIN_UPSTREAM_REPO"]
    fork = os.environ.get("TORCHWIN_FORK_REPO")
    data = yaml.safe_load((RECIPE / "variants.yaml").read_text())
    checked, forks = 0, 0
    for index, release in enumerate(data["pytorch_version"]):
        sources = [(repo, data["pytorch_commit"][index], release)]
        if data["pytorch_commit_win"][index]:
            if fork:
                sources.append((fork, data["pytorch_commit_win"][index], release + "-win-64"))
            else:
                print("\n%s: win-64 builds %s at %s, not checked (set TORCHWIN_FORK_REPO)"
                      % (release, data["pytorch_git_win"][index], data["pytorch_commit_win"][index]))
        for patch in (data["pytorch_patches"][index] or "").split():
            if "findmkl" not in patch:
                continue
            for git_dir, commit, table in sources:
                find_module = facts(table)["mkl"]["find_module"]
                text = subprocess.run(["git", "--git-dir", git_dir, "show", "%s:%s" % (commit, find_module)],
                                      check=True, capture_output=True, text=True).stdout
                tree = tmp_path / table
                (tree / find_module).parent.mkdir(parents=True)
                (tree / find_module).write_text(text)
                subprocess.run(["git", "apply", str(RECIPE / patch)], cwd=tree, check=True, capture_output=True)
                assert "${_library}_dll" in (tree / find_module).read_text(), (table, commit)
                checked += 1
                forks += git_dir == fork
    assert checked >= 14
    assert forks == (2 if fork else 0)

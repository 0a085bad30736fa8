"""`torchwin render` with the real engine: every recipe, both platforms, JSON shape, bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchwin import recipes
from torchwin.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.name for p in (ROOT / "recipes").iterdir() if (p / "recipe.yaml").is_file())
JSON_KEYS = {"recipe", "name", "version", "build_string", "build_number", "subdir", "target_platform", "noarch",
             "variant", "depends", "constrains", "track_features", "build_requirements", "host_requirements",
             "tests"}


def render_json(capsys, *args):
    assert main(["render", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_repository_has_the_recipes_the_product_needs():
    assert {"pytorch", "pytorch-select", "vs2017", "nvcc"} <= set(RECIPES)
    for name in RECIPES:
        assert (ROOT / "recipes" / name / "variants.yaml").is_file(), name


# Recipes that only make sense for one platform render to nothing for the other.
PLATFORM_ONLY = {"vs2017": "win-64"}


@pytest.mark.parametrize("platform", ["win-64", "linux-64"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_recipe_renders_for_each_platform(capsys, recipe, platform):
    items = render_json(capsys, str(ROOT / "recipes" / recipe), "--target-platform", platform)
    if PLATFORM_ONLY.get(recipe, platform) != platform:
        assert items == [], "%s should skip %s" % (recipe, platform)
        return
    assert items, "%s rendered no variant for %s" % (recipe, platform)
    for item in items:
        assert set(item) == JSON_KEYS
        assert item["recipe"] == recipe
        assert item["subdir"] in (platform, "noarch")
        assert isinstance(item["variant"], dict) and isinstance(item["track_features"], list)
        assert all(isinstance(d, str) for d in item["depends"] + item["constrains"])
        assert all(isinstance(d, str) for d in item["build_requirements"] + item["host_requirements"])


def test_json_carries_the_requirements_and_tests_the_ci_stages_are_derived_from(capsys):
    # The CI matrix orders builds by them: pytorch's CUDA 9.x builds host-depend on magma, and the
    # test job reruns the recipe's own script test with its rendered environment.
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch"), "--target-platform", "win-64",
                        "--variant", "cuda_compiler_version=9.0", "--variant", "python=3.6")
    builds = [i for i in items if i["name"] == "pytorch"]
    assert builds
    for item in builds:
        # 0.3's CMake never looks for MAGMA (no MAGMA_HOME read; the 2017 builds had none): no magma for it.
        magma = not item["version"].startswith("0.3.")
        assert ("magma-cuda90 2.5.*" in item["host_requirements"]) == magma, item["host_requirements"]
        assert any(r.startswith("nvcc_win-64") for r in item["build_requirements"]), item["build_requirements"]
        scripts = [t["script"] for t in item["tests"] if "script" in t]
        assert scripts and scripts[0]["content"] == "python run_test.py"
        assert scripts[0]["env"]["TORCHWIN_EXPECT_MAGMA"] == ("1" if magma else "0")
    assert {i["version"] for i in builds} >= {"0.3.0", "0.3.1", "1.0.0"}


def test_render_all_lists_both_platforms_without_duplicates(capsys):
    items = render_json(capsys, "--target-platform", "all")
    keys = [(i["name"], i["version"], i["build_string"], i["subdir"]) for i in items]
    assert len(keys) == len(set(keys))
    subdirs = {i["subdir"] for i in items}
    assert {"win-64", "linux-64", "noarch"} <= subdirs


def test_pytorch_matrix_follows_the_release_table(capsys):
    table = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch"), "--target-platform", "all")
    torch_items = [i for i in items if i["name"] == "pytorch"]
    for index, version in enumerate(table["pytorch_version"]):
        for platform, suffix in (("win-64", "win"), ("linux-64", "linux")):
            cudas = set(table["pytorch_cuda_" + suffix][index].split()) | {"None"}
            pythons = set(table["pytorch_python_" + suffix][index].split())
            got = {(i["variant"]["cuda_compiler_version"], i["variant"]["python"])
                   for i in torch_items if i["version"] == version and i["subdir"] == platform}
            assert got == {(c, p) for c in cudas for p in pythons}, (version, platform)


def test_pytorch_cuda_builds_require_their_toolkit_and_mutex(capsys):
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch"), "--target-platform", "all")
    for item in (i for i in items if i["name"] == "pytorch"):
        cuda = item["variant"]["cuda_compiler_version"]
        if cuda == "None":
            assert "pytorch-mutex ==1.0 cpu" in item["depends"]
            assert not any(d.startswith("cudatoolkit") for d in item["depends"])
        else:
            assert "cudatoolkit %s.*" % cuda in item["depends"]
            assert "pytorch-mutex ==1.0 cuda" in item["depends"]
        assert "python %s.*" % item["variant"]["python"] in item["depends"]
        if item["subdir"] == "win-64":
            assert any(d.startswith("vc ") for d in item["depends"])


def test_pytorch_compilers_are_the_ones_our_toolchain_recipes_build():
    """Windows pins our vs2017_win-64 by its cl version; Linux takes conda's gcc 7 only where the CUDA allows."""
    tools = {v.name: v for v in recipes.render([ROOT / "recipes" / "vs2017"], ["win-64"])}
    for platform in ("win-64", "linux-64"):
        for v in recipes.render([ROOT / "recipes" / "pytorch"], [platform]):
            if v.name != "pytorch":
                continue
            compilers = [r for r in v.build_requirements if r.split()[0].endswith("_" + platform)]
            if platform == "win-64":
                vs = tools["vs2017_win-64"].version
                assert compilers[:2] == ["vs2017_win-64 %s.*" % vs] * 2, v.build_string
            elif v.variant["cuda_compiler_version"] in ("None", "9.2"):
                assert compilers[:2] == ["gcc_linux-64 7.*", "gxx_linux-64 7.*"], v.build_string
            else:  # CUDA 8.0/9.0/9.1 need a gcc older than any conda gcc: the machine's
                assert [c for c in compilers if c.startswith(("gcc", "gxx"))] == [], v.build_string


def test_release_table_columns_line_up():
    table = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    columns = [k for k in table if k.startswith("pytorch_")]
    assert {len(table[c]) for c in columns} == {len(table["pytorch_version"])}
    assert sorted(columns) == sorted(table["zip_keys"][1])
    for commit in table["pytorch_commit"]:
        assert re.fullmatch(r"[0-9a-f]{40}", commit), commit
    assert sum(1 for base in table["pytorch_nightly_base"] if base) == 1


def test_every_listed_patch_exists_and_has_a_header():
    table = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    listed = {p for row in table["pytorch_patches"] for p in row.split()}
    on_disk = {p.name for p in (ROOT / "recipes" / "pytorch" / "patches").glob("*.patch")}
    for name in listed:
        path = ROOT / "recipes" / "pytorch" / name
        assert path.is_file(), "listed patch missing: %s" % name
        head = path.read_text().split("\ndiff --git", 1)[0]
        assert re.search(r"^(Subject|Why):", head, re.M), "patch %s has no header saying why" % name
    assert {Path(p).name for p in listed} == on_disk, "patches on disk that no release lists"


def test_nightly_mode_builds_next_dev_version(monkeypatch):
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20190601")
    monkeypatch.setenv("TORCHWIN_GIT_REF", "0123abc")
    table = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    base = next(b for b in table["pytorch_nightly_base"] if b)
    # The newest release row (the nightly's base) may build on Linux only (1.7.x: no VS2017 build).
    variants = recipes.render([ROOT / "recipes" / "pytorch"], ["win-64", "linux-64"])
    assert variants and {v.version for v in variants} == {base + ".dev20190601"}
    torch_variant = next(v for v in variants if v.name == "pytorch")
    assert torch_variant.rendered.recipe.sources[0].to_dict()["rev"] == "0123abc"


def test_local_source_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHWIN_SOURCE_DIR", str(tmp_path))
    variants = recipes.render([ROOT / "recipes" / "pytorch"], ["linux-64"])
    torch_variant = next(v for v in variants if v.name == "pytorch")
    assert torch_variant.rendered.recipe.sources[0].to_dict() == {"path": str(tmp_path)}


def test_release_source_is_pinned_to_tag_and_commit():
    variants = recipes.render([ROOT / "recipes" / "pytorch"], ["win-64"])
    torch_variant = next(v for v in variants if v.name == "pytorch" and v.version == "1.0.1")
    source = torch_variant.rendered.recipe.sources[0].to_dict()
    assert source["rev"] == "refs/tags/v1.0.1"
    assert re.fullmatch(r"[0-9a-f]{40}", source["expected_commit"])


def test_variant_filter(capsys):
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch"), "--target-platform", "win-64",
                        "--variant", "cuda_compiler_version=9.0", "--variant", "python=3.6")
    torch_items = [i for i in items if i["name"] == "pytorch"]
    assert torch_items
    assert {(i["variant"]["cuda_compiler_version"], i["variant"]["python"]) for i in torch_items} == {("9.0", "3.6")}


def test_a_variant_key_drops_the_variants_without_it(capsys):
    # pytorch-select: pytorch-mutex has mutex_build; cpuonly and the cudaXY packages do not, so they go.
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch-select"), "--variant", "mutex_build=cpu")
    assert [(i["name"], i["build_string"]) for i in items] == [("pytorch-mutex", "cpu")]
    items = render_json(capsys, str(ROOT / "recipes" / "pytorch"), str(ROOT / "recipes" / "pytorch-cpu"),
                        "--target-platform", "win-64", "--variant", "pytorch_version=1.1.0")
    assert {i["name"] for i in items} == {"pytorch", "pytorch-cpu"}  # both have the key: both stay
    assert {i["version"] for i in items} == {"1.1.0"}


def test_table_output_names_the_columns(capsys):
    assert main(["render", str(ROOT / "recipes" / "pytorch"), "--target-platform", "win-64"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:5] == ["RECIPE", "PACKAGE", "VERSION", "BUILD", "SUBDIR"]
    assert "py36_cuda90_cudnn7_" in out and re.search(r"^\d+ variant\(s\)$", out, re.M)


BAD_INPUT = [
    (["render", "recipes/does-not-exist"], "recipes/does-not-exist: no such recipe folder"),
    (["render", "--target-platform", "osx-arm64"], "unknown target platform 'osx-arm64'; allowed: linux-64, win-64"),
    (["render", "recipes/pytorch", "--variant", "cuda=9.0"],
     "--variant cuda: unknown key (no variant of recipes/pytorch has it); allowed: c_compiler"),
    (["render", "recipes/pytorch", "--variant", "mutex_build=cpu"],
     "--variant mutex_build: unknown key (no variant of recipes/pytorch has it); allowed:"),
    (["render", "recipes/pytorch", "--variant", "cuda_compiler_version=9.3"],
     "--variant cuda_compiler_version=9.3: unknown value; allowed: None, 8.0, 9.0, 9.1, 9.2"),
    (["render", "recipes/pytorch", "--variant", "python"], "expected KEY=VALUE"),
    (["render", "recipes/pytorch", "--json", "--markdown"], "--json and --markdown: give one"),
    (["render", "recipes/nvcc", "--markdown"],
     "--markdown: recipes/nvcc has no pytorch variants; the table is the pytorch matrix: allowed with "
     "recipes/pytorch or no RECIPE_DIR"),
    (["render", "recipes/pytorch", "--markdown", "--target-platform", "linux-64", "--variant",
      "cuda_compiler_version=8.0", "--variant", "pytorch_version=1.1.0"],
     "--markdown: no pytorch variant matches the --variant values"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUT)
def test_bad_input_is_one_line_exit_2(argv, message):
    out = subprocess.run([sys.executable, "-m", "torchwin", *argv], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_malformed_recipe_names_the_file(tmp_path):
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "recipe.yaml").write_text("package:\n  name: [unclosed\n")
    out = subprocess.run([sys.executable, "-m", "torchwin", "render", str(bad)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert str(bad / "recipe.yaml") in out.stderr or "broken/recipe.yaml" in out.stderr
    assert "Traceback" not in out.stderr
    debug = subprocess.run([sys.executable, "-m", "torchwin", "render", str(bad), "--debug"], cwd=ROOT,
                           capture_output=True, text=True)
    assert "Traceback" in debug.stderr
    assert debug.returncode == 2, "--debug adds the traceback, the exit code stays bad input's"
    assert debug.stderr.rstrip().splitlines()[-1].startswith("torchwin: error: ")


def test_bad_nightly_date_is_refused(monkeypatch):
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "2019-06-01")
    out = subprocess.run([sys.executable, "-m", "torchwin", "render", "recipes/pytorch"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "TORCHWIN_NIGHTLY" in out.stderr and "YYYYMMDD" in out.stderr


def test_build_order_puts_compilers_before_pytorch():
    order = [p.name for p in recipes.build_order(recipes.all_recipe_dirs(), ["win-64"])]
    assert order.index("vs2017") < order.index("pytorch")
    assert order.index("nvcc") < order.index("pytorch")

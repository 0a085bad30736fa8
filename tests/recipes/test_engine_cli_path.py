"""The recipes build the way `rattler-build build --recipe recipes/X` builds them: no flags, no torchwin.

`rattler_build.build_recipes` is the engine's own command-line entry point; it
finds variants.yaml beside the recipe by itself, as rattler-build and
conda-build 26 do. What it produces must be what `torchwin render` promises.
"""

import json
import warnings
from pathlib import Path

import pytest
from rattler_build import build_recipes
from torchwin import recipes

ROOT = Path(__file__).resolve().parents[2]
SCRIPT_ONLY = ["vs2017", "nvcc", "pytorch-select"]


@pytest.mark.parametrize("platform", ["win-64", "linux-64"])
@pytest.mark.parametrize("name", SCRIPT_ONLY)
def test_engine_entry_point_builds_what_render_lists(tmp_path, name, platform):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        build_recipes([ROOT / "recipes" / name / "recipe.yaml"], target_platform=platform, output_dir=tmp_path,
                      channel=[tmp_path.as_uri()], test="skip", no_build_id=True)
    built = set()
    for repodata in tmp_path.glob("*/repodata.json"):
        data = json.loads(repodata.read_text())
        for record in {**data.get("packages", {}), **data.get("packages.conda", {})}.values():
            built.add((record["name"], record["version"], record["build"], record["subdir"]))
    promised = {(v.name, v.version, v.build_string, v.subdir)
                for v in recipes.render([ROOT / "recipes" / name], [platform])}
    assert built == promised

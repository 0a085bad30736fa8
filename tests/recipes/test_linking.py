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

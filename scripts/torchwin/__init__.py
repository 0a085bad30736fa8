"""torchwin: build, test and publish PyTorch conda packages for Windows (VS2017 + CUDA 9 + MKL).

The folders follow the pipeline: recipes are rendered (`recipes.py`, `render.py`), built
(`build.py`, `build_report.py`, `try_it.py`), indexed into a channel (`channel/`) and published to anaconda.org
(`publish/`); `ci/` drives all of it on GitHub Actions. Beside the pipeline, each usable on its
own: `doctor/` (can this host build variant X?) and `smoke.py` (does this torch work?).
`upstream/` reads upstream PyTorch's own files for the facts the recipes depend on.

What a module may import is LAYERS below: a module imports from its own layer and the layers
its entry names, nothing else (tests/test_layers.py checks every module, function-level imports
included, that no two layers may import each other, and that no two modules do, even around a
loop: a fact two modules share lives in a module below both). Where data flows down the pipeline the
import goes the other way: build hands its packages to the channel by calling it, so channel
must not import build; publish uploads what the channel checked; ci runs every step.
"""

__version__ = "0.1.0"

# layer: (its top-level modules and packages, the layers it may import besides its own)
LAYERS = {
    "base": (("errors", "checkout"), ()),
    "recipes": (("recipes", "render", "upstream"), ("base",)),
    "doctor": (("doctor",), ("base", "recipes")),
    "smoke": (("smoke",), ("base",)),
    "channel": (("channel",), ("base", "recipes")),
    "build": (("build", "build_report", "try_it", "wheel"), ("base", "recipes", "doctor", "channel")),
    "publish": (("publish",), ("base", "recipes", "channel")),
    "ci": (("ci",), ("base", "recipes", "doctor", "smoke", "channel", "build", "publish")),
    "command line": (
        ("cli", "__main__"),
        ("base", "recipes", "doctor", "smoke", "channel", "build", "publish", "ci"),
    ),
}

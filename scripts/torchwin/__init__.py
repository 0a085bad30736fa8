"""torchwin: build, test and publish PyTorch conda packages for Windows (VS2017 + CUDA 9 + MKL).

The folders follow the pipeline: recipes are rendered (`recipes.py`, `render.py`), built
(`build.py`, `try_it.py`), indexed into a channel (`channel/`) and published to anaconda.org
(`publish/`); `ci/` drives all of it on GitHub Actions. Beside the pipeline, each usable on its
own: `doctor/` (can this host build variant X?) and `smoke.py` (does this torch work?).
`upstream/` reads upstream PyTorch's own files for the facts the recipes depend on.

What a module may import follows from LAYERS below, lowest layer first: a module imports from
its own layer and the layers before it, never from a later one (tests/test_layers.py checks every
module, function-level imports included). Where data flows up the pipeline the import goes the
other way: build calls the channel to add its packages, so channel sits below build and must
not import it; publish uploads what the channel checked; ci runs every step.
"""

__version__ = "0.1.0"

# (layer, the top-level modules and packages in it), lowest first.
LAYERS = (
    ("base", ("errors", "checkout")),
    ("recipes", ("recipes", "render", "upstream")),
    ("beside the pipeline", ("doctor", "smoke")),
    ("channel", ("channel",)),
    ("build", ("build", "try_it")),
    ("publish", ("publish",)),
    ("ci", ("ci",)),
    ("command line", ("cli", "__main__")),
)

"""Every Python file under recipes/ runs under a variant's own Python or the build machine's (3.5 and up).

Build drivers, install scripts and package tests are called by bld.bat/build.sh or a recipe's test
section with whatever Python that environment has, so each must stay valid Python 3.5. One check over
the whole folder, so a new recipe's script is covered without being named here.
"""

import subprocess
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SCRIPTS = sorted(RECIPES.glob("*/**/*.py"))


def test_recipes_have_scripts_to_check():
    assert {p.parent.name for p in SCRIPTS} >= {"pytorch", "nvcc", "vs2017", "cuda-runtime", "magma", "torchvision"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(RECIPES)))
def test_recipe_script_is_valid_python_3_5(script):
    pytest.importorskip("vermin")
    command = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())",
               "-t=3.5-", "--no-tips", "--violations", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

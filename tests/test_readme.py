"""README.md stays true: its matrix is render's output, its commands are the ones CI runs."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin import recipes
from torchwin.render import markdown_matrix

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def block_after(marker):
    match = re.search(re.escape(marker) + r"\s*```\n(.*?)```", README, re.S)
    assert match, marker
    return match.group(1).strip()


def test_matrix_section_equals_render_output():
    section = README.split("<!-- matrix:begin -->\n", 1)[1].split("<!-- matrix:end -->", 1)[0]
    variants = recipes.render([ROOT / "recipes" / "pytorch"], list(recipes.PLATFORMS))
    assert section == markdown_matrix(variants), (
        "README matrix is stale: regenerate with `torchwin render recipes/pytorch --target-platform all --markdown`")


def test_two_maintainer_commands():
    main_command = block_after("<!-- ci:main-command -->")
    test_command = block_after("<!-- ci:test-command -->")
    assert main_command.endswith("torchwin build") and "pip install -e ." in main_command
    assert test_command.endswith("pytest") and "'.[test]'" in test_command


@pytest.mark.skipif(sys.platform == "win32", reason=".ci/run is a POSIX shell script run on Linux CI")
def test_ci_runs_the_readme_test_command():
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extract = re.search(r"test_command=\$\((awk .*?README\.md)\)", script).group(1)
    out = subprocess.run(["bash", "-c", extract], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == block_after("<!-- ci:test-command -->")


def test_user_install_lines():
    for line in ("conda install -c torchwin pytorch ", "conda install -c torchwin pytorch cuda90",
                 "conda install -c torchwin pytorch cpuonly"):
        assert line in README

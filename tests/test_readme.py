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


def gpu_table():
    """README's GPUs-per-release table: per release, its facts' oldest architecture and the driver's lists."""
    import json

    import yaml

    sys.path.insert(0, str(ROOT / "recipes" / "pytorch"))
    import build_driver

    table = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text())
    lines = ["| PyTorch | oldest GPU (compute capability) | compiled for (TORCH_CUDA_ARCH_LIST) |", "|---|---|---|"]
    for release, win, linux in zip(table["pytorch_version"], table["pytorch_cuda_win"], table["pytorch_cuda_linux"]):
        facts = json.loads((ROOT / "recipes" / "pytorch" / "upstream" / ("%s.json" % release)).read_text())
        by_list = {}
        for cuda in sorted(set(str(win).split() + str(linux).split()), key=lambda c: tuple(map(int, c.split(".")))):
            by_list.setdefault(build_driver.cuda_arch_list(facts, cuda), []).append(cuda)
        compiled = "; ".join("`%s` (CUDA %s)" % (k, ", ".join(v)) for k, v in by_list.items())
        lines.append("| %s | %s | %s |" % (release, facts["cuda_arch"]["oldest"], compiled))
    return "\n".join(lines) + "\n"


def test_gpu_table_follows_the_facts_and_the_driver():
    section = README.split("<!-- gpus:begin -->\n", 1)[1].split("<!-- gpus:end -->", 1)[0]
    assert section == gpu_table(), "README's GPUs per release table is stale:\n" + gpu_table()
    # Kepler 3.0 is served wherever a release compiles for it.
    assert "| 1.0.1 | 3.0 |" in section


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


SCREEN = 24  # lines: what a reader sees without scrolling


def section(heading):
    """README's text from `heading` up to the next heading of any level."""
    text = README.split(heading + "\n", 1)[1]
    return re.split(r"^#{1,6} ", text, maxsplit=1, flags=re.M)[0].strip("\n")


def test_the_user_install_section_fits_a_screen_and_links_the_details():
    """Before issue 26 one paragraph of channel priority and per-solver picks sat between the
    install lines and the rest; the command a user needs comes first, the details are linked."""
    text = section("## Install (users)")
    assert len(text.splitlines()) <= SCREEN, len(text.splitlines())
    assert text.lstrip().startswith("`conda install -c torchwin pytorch cuda90`")
    assert "[docs/install.md](docs/install.md)" in text
    details = (ROOT / "docs" / "install.md").read_text(encoding="utf-8")
    assert "conda's classic solver" in details and "channel_priority: strict" in details
    assert "conda's classic solver" not in README  # one home for it


def test_the_maintainer_quick_start_fits_a_screen():
    text = section("### Quick start on a fresh Linux machine (Python 3.11)")
    assert len(text.splitlines()) <= SCREEN, len(text.splitlines())
    assert "<!-- ci:main-command -->" in text and "<!-- ci:test-command -->" in text

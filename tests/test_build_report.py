"""What `torchwin build` prints (torchwin.build_report): the outcome first, skips grouped by reason,
every line within the terminal's width, a live progress line only on a terminal.

Built for real: recipes/nvcc (compiled nowhere, built by the engine) beside recipes/pytorch, which
this host cannot build (no VS2017, no CUDA 9 toolchain), so almost every variant is skipped.
Before issue 26 this printed a line per variant, a table row per skipped one and each reason whole.
"""

import contextlib
import io
from pathlib import Path

import pytest
from torchwin import recipes
from torchwin.build_report import Progress
from torchwin.cli import main

ROOT = Path(__file__).resolve().parents[1]
COLUMNS = 80


def build(channel, *extra):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["build", str(ROOT / "recipes" / "nvcc"), str(ROOT / "recipes" / "pytorch"),
                     "--target-platform", "linux-64", "--variant", "cuda_compiler_version=9.2",
                     "--channel-dir", str(channel), *extra])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def printed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("COLUMNS", str(COLUMNS))
    try:
        tmp = tmp_path_factory.mktemp("report")
        plain = build(tmp / "channel")
        verbose = build(tmp / "channel", "--verbose")
    finally:
        mp.undo()
    return plain, verbose


def skipped_count():
    rendered = recipes.render([ROOT / "recipes" / "pytorch"], ["linux-64"], {"cuda_compiler_version": ["9.2"]})
    return len(rendered)


def test_the_outcome_comes_first_and_every_line_fits(printed):
    (code, out), _ = printed
    assert code == 0, out
    lines = out.splitlines()
    fitted = [line for line in lines if not line.startswith("  conda ")]  # a command is never cut
    assert max(len(line) for line in fitted) <= COLUMNS, max(fitted, key=len)
    summary = lines[lines.index("") + 1]
    assert summary.startswith("1 built, 0 failed, %d skipped; in " % skipped_count()), out
    # No line per skipped variant, no table row for one: the built nvcc is the only row.
    assert not [line for line in lines if line.endswith(" skipped")], out
    assert [line.split()[0] for line in lines if line.startswith("nvcc_linux-64 ")] == ["nvcc_linux-64"]
    assert len(lines) < 30, out


def test_skips_are_grouped_by_reason_with_counts(printed):
    (_, out), _ = printed
    groups = [line for line in out.splitlines() if line.startswith("  pytorch for ")]
    assert groups, out
    counted = sum(int(line.split("(")[1].split()[0]) for line in groups)
    assert counted == skipped_count()
    assert "(--verbose: the whole reasons)" in out


def test_verbose_lists_every_variant_and_whole_reasons(printed):
    (_, plain), (code, out) = printed
    assert code == 0, out
    assert len([line for line in out.splitlines() if line.endswith(" skipped")]) >= skipped_count()
    assert len(out) > len(plain)
    assert "e.g. on a Linux build machine: torchwin build recipes/pytorch --target-platform linux-64 " \
           "--channel defaults --variant" in out


def test_the_try_it_lines_are_never_cut(printed):
    (_, out), _ = printed
    lines = out.split("\nTry it:\n", 1)[1].splitlines()
    assert lines[0].strip().startswith("conda install -c file://")
    assert "…" not in lines[0]


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_one_line_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    live = Terminal()
    progress = Progress(live)
    for i in range(3):
        progress.skip("[%d/3] pytorch 1.1.0 py36_cpu_1 (linux-64) skipped" % i)
    progress.line("[3/3] nvcc built in 1.0s")
    text = live.getvalue()
    assert text.count("\n") == 1 and text.count("\r\033[K") == 4
    assert all(len(part) <= 40 for part in text.replace("\r\033[K", "\n").splitlines())
    piped = io.StringIO()
    progress = Progress(piped)
    progress.skip("[1/3] pytorch skipped")
    progress.status("[2/3] nvcc building...")
    progress.line("[2/3] nvcc built in 1.0s")
    assert piped.getvalue() == "[2/3] nvcc building...\n[2/3] nvcc built in 1.0s\n"

"""`torchwin build`'s "Try it" lines, solved as printed with the real solver (py-rattler).

The toolchain and selection recipes are built for both platforms with the engine into a fresh
channel; every printed line is parsed (its channels, --subdir and specs) and solved with exactly
the channels it names: the local one, and `defaults` only where the line names it (then the
stand-in of test_pytorch_solve: Anaconda's real CUDA 8.0/9.0/9.2 packages). Before issue 26 every
line was solved with the stand-in added, and the lines that need defaults did not name it.
tests/test_real_conda.py solves the same lines with conda's classic solver.
"""

import asyncio
import contextlib
import io
import shlex
from pathlib import Path

import pytest
from torchwin.cli import main

rattler = pytest.importorskip("rattler")
from test_pytorch_solve import external_records  # noqa: E402
from torchwin.channel import repodata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOST = "linux-64"


def build_printing(channel, *recipes):
    """Build the recipes for both platforms into channel; return (exit code, printed text)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["build", *[str(ROOT / "recipes" / r) for r in recipes], "--target-platform", "all",
                     "--channel-dir", str(channel)])
    return code, out.getvalue()


def try_lines(printed):
    lines = printed.split("\nTry it:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.strip() for line in lines if line.strip().startswith("conda ")]


def try_note(printed):
    """The note after the commands that says why some name `-c defaults` ("" when none does), unwrapped."""
    lines = printed.split("\nTry it:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return " ".join(line.strip() for line in lines if line.strip() and not line.strip().startswith("conda "))


def parse_line(line, host=HOST):
    """(subdir, channel URLs, specs) of a printed `conda install` / `conda create --dry-run` line."""
    words = shlex.split(line, comments=True)
    assert words[0] == "conda" and words[1] in ("install", "create"), line
    subdir, channels, specs, i = host, [], [], 2
    while i < len(words):
        if words[i] in ("-c", "--subdir"):
            if words[i] == "-c":
                channels.append(words[i + 1])
            else:
                subdir = words[i + 1]
            i += 2
            continue
        if not words[i].startswith("-"):
            specs.append(words[i])
        i += 1
    return subdir, channels, specs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("try")
    channel = tmp / "channel"
    code, printed = build_printing(channel, "vs2017", "nvcc", "pytorch-select")
    assert code == 0, printed
    defaults = repodata.write_channel(tmp / "defaults", external_records())
    return channel, defaults, try_lines(printed), try_note(printed)


def named_channels(channels, defaults):
    """The line's channels, `defaults` standing for the stand-in (anaconda.org is not reachable here)."""
    return [defaults.as_uri() if c == "defaults" else c for c in channels]


def solve(line, defaults):
    subdir, channels, specs = parse_line(line)
    records = asyncio.run(rattler.solve(
        sources=[rattler.Channel(c) for c in named_channels(channels, defaults)],
        specs=[rattler.MatchSpec(s, strict=False) for s in specs],
        platforms=[subdir, "noarch"], virtual_packages=[]))
    return subdir, specs, {r.name.normalized: r for r in records}


def test_every_printed_line_solves_and_installs_what_it_names(built):
    """Before issue 13 the one line named cpuonly, every cudaXY and both nvcc packages: never solvable."""
    channel, defaults, lines, note = built
    covered, taken = set(), set()
    for line in lines:
        subdir, specs, got = solve(line, defaults)
        selector = specs[0]
        for spec in specs:
            name, _, version = spec.partition("=")
            assert name in got, (line, name)
            if version:
                assert str(got[name].version) == version, (line, spec)
        if selector == "cpuonly":
            assert str(got["pytorch-mutex"].build) == "cpu" and "cudatoolkit" not in got
        else:
            cuda = selector[4] + "." + selector[5]
            assert str(got["cudatoolkit"].version).startswith(cuda), line
            nvcc = "nvcc_%s" % subdir
            assert str(got[nvcc].version) == cuda, line
        # What the line takes from defaults it names, and says so; the rest comes from the local channel.
        from_defaults = {n for n, r in got.items() if str(r.channel).rstrip("/").endswith("/defaults")}
        assert bool(from_defaults) == (" -c defaults " in line), line
        taken |= from_defaults
        covered.add((subdir, selector))
    # The note names what the lines take from defaults, and nothing else.
    assert note == "(-c defaults: for %s, which this channel does not build (Anaconda's own packages))" % (
        ", ".join(sorted(taken)))
    assert taken == {"cudatoolkit", "vs2015_runtime"}
    # One line per platform and selection; none for the toolkits only our cuda-runtime label carries
    # (9.1, and 9.2 on Windows), which this channel does not hold.
    assert covered == {("linux-64", s) for s in ("cpuonly", "cuda80", "cuda90", "cuda92")} | {
        ("win-64", s) for s in ("cpuonly", "cuda80", "cuda90")}
    assert len(lines) == len(covered)


def test_other_platforms_lines_are_dry_runs_with_their_subdir(built):
    _, _, lines, _ = built
    for line in lines:
        subdir, _, specs = parse_line(line)
        if subdir == HOST:
            assert line.startswith("conda install -c "), line
        else:
            assert line.startswith("conda create --dry-run --subdir %s -c " % subdir), line
            assert "vs2017_win-64" in specs


def test_a_cuda_runtime_label_in_the_channel_goes_into_that_selection_line(tmp_path):
    """With the label's cudatoolkit 9.1 in the local channel, the cuda91 lines name the label, and only they."""
    from packages import make_package
    from torchwin.channel import command as tw_channel

    channel = tmp_path / "channel"
    for subdir in ("linux-64", "win-64"):
        path = make_package(tmp_path / "made", "cudatoolkit", "9.1.85", "0", subdir=subdir)
        tw_channel.add_packages(channel, [path], label="cuda-runtime")
    code, printed = build_printing(channel, "nvcc", "pytorch-select")
    assert code == 0, printed
    lines = try_lines(printed)
    uri = channel.resolve().as_uri()
    with_label = [line for line in lines if "/label/cuda-runtime" in line]
    assert sorted(parse_line(line)[2][0] for line in with_label) == ["cuda91", "cuda91"]
    defaults = repodata.write_channel(tmp_path / "defaults", external_records())
    for line in with_label:
        assert "-c %s -c %s/label/cuda-runtime" % (uri, uri) in line
        _, _, got = solve(line, defaults)
        assert str(got["cudatoolkit"].channel).rstrip("/").endswith("/label/cuda-runtime")

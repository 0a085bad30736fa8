"""The install-time scheme, checked with the real solver (py-rattler) against repodata made from render.

Every pytorch variant, selection package and CUDA runtime package is rendered
with the engine, turned into repodata, and the install lines users type are
solved for every Python and both platforms, next to a model of what Anaconda's
defaults channel offers. What each line must pick is worked out here from the
rendered matrix itself (newest release, then the preferred CUDA), so a change
to variants.yaml changes the expectation with it.
"""

import asyncio
from pathlib import Path

import pytest
from torchwin import recipes, repodata

rattler = pytest.importorskip("rattler")
from rattler.exceptions import SolverError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("win-64", "linux-64")
# The default CUDA first, then newer 9.x before older: the order the build-number offsets encode.
CUDA_PREFERENCE = ("9.0", "9.2", "9.1", "8.0")


# Anaconda's defaults channel as it was for these releases: cudatoolkit 8.0 and 9.0 on both platforms
# and 9.2 on linux-64 only, never 9.1 (ContinuumIO/anaconda-recipes#140, tuna/issues#507 and #637),
# with the short versions defaults used ("9.0", not "9.0.176"); cudnn builds pinned to their toolkit
# (e.g. cudnn-7.1.2-cuda9.0_0 depends on "cudatoolkit 9.0.*"). recipes/cuda-runtime fills the gaps.
DEFAULTS_CUDA = {
    "linux-64": [("8.0", "3", "7.1.3"), ("9.0", "h13b8566_0", "7.1.2"), ("9.2", "0", "7.2.1")],
    "win-64": [("8.0", "3", "7.1.3"), ("9.0", "1", "7.1.2")],
}


def external_records():
    """What the defaults channel provides: one plausible version of each dependency, its real CUDA packages."""
    out = []
    for subdir in PLATFORMS:
        for py in ("3.5.6", "3.6.8", "3.7.3"):
            out.append(repodata.record("python", py, "h0_0", subdir=subdir))
        for name, version in (("numpy", "1.16.4"), ("mkl", "2019.4"), ("intel-openmp", "2019.4"),
                              ("cffi", "1.12.3"), ("vc", "14.1")):
            out.append(repodata.record(name, version, "h0_0", subdir=subdir))
        for cuda, build, cudnn in DEFAULTS_CUDA[subdir]:
            out.append(repodata.record("cudatoolkit", cuda, build, subdir=subdir))
            out.append(repodata.record("cudnn", cudnn, "cuda%s_0" % cuda, depends=["cudatoolkit %s.*" % cuda],
                                       subdir=subdir))
    return out


def minor(version):
    """'9.1' of '9.1.85' and of '9.1'."""
    return ".".join(str(version).split(".")[:2])


@pytest.fixture(scope="module")
def rendered():
    dirs = [ROOT / "recipes" / "pytorch", ROOT / "recipes" / "pytorch-select", ROOT / "recipes" / "cuda-runtime"]
    missing = [d for d in dirs if not (d / "recipe.yaml").is_file()]
    assert not missing, "recipes missing: %s" % missing
    return recipes.render(dirs, list(PLATFORMS))


@pytest.fixture(scope="module")
def channel(rendered, tmp_path_factory):
    entries = [repodata.variant_record(v) for v in rendered] + external_records()
    return repodata.write_channel(tmp_path_factory.mktemp("solve-channel"), entries)


class Picked:
    """What the solver chose for one package, as plain strings."""

    def __init__(self, record):
        self.version = str(record.version)
        self.build = str(record.build)
        self.channel = str(record.channel)


def solve(channel, platform, specs, channels=None):
    """Solve against one channel, or against several in priority order with conda's default (flexible) priority."""
    sources = [rattler.Channel(c.as_uri()) for c in (channels or [channel])]
    records = asyncio.run(rattler.solve(
        sources=sources, specs=specs, platforms=[platform, "noarch"], virtual_packages=[],
        channel_priority=rattler.ChannelPriority.Flexible))
    return {r.name.normalized: Picked(r) for r in records}


def pytorch_builds(rendered, platform, python):
    return [v for v in rendered if v.name == "pytorch" and v.subdir == platform and v.variant["python"] == python]


def newest(variants, cuda):
    """The build a user should get for this CUDA ("None" = CPU): newest release, then highest build."""
    matching = [v for v in variants if v.variant["cuda_compiler_version"] == cuda]
    if not matching:
        return None
    return max(matching, key=lambda v: (recipes._version_key(v.version), v.build_number))


def default_build(variants):
    """Newest release; within it CUDA 9.0, else its newest 9.x, else any CUDA, never CPU."""
    top = max(recipes._version_key(v.version) for v in variants)
    release = [v for v in variants if recipes._version_key(v.version) == top]
    for cuda in CUDA_PREFERENCE:
        chosen = newest(release, cuda)
        if chosen is not None:
            return chosen
    raise AssertionError("release without a CUDA build")


CASES = [(p, py) for p in PLATFORMS for py in ("3.5", "3.6", "3.7")]


@pytest.mark.parametrize("platform,python", CASES)
def test_plain_install_gets_newest_release_with_default_cuda(rendered, channel, platform, python):
    want = default_build(pytorch_builds(rendered, platform, python))
    got = solve(channel, platform, ["pytorch", "python %s.*" % python])["pytorch"]
    assert (got.version, got.build) == (want.version, want.build_string)
    assert "_cpu_" not in got.build


@pytest.mark.parametrize("platform,python", CASES)
@pytest.mark.parametrize("cuda", ["8.0", "9.0", "9.1", "9.2"])
def test_cuda_selector_package_picks_that_cuda(rendered, channel, platform, python, cuda):
    want = newest(pytorch_builds(rendered, platform, python), cuda)
    selector = "cuda" + cuda.replace(".", "")
    specs = ["pytorch", selector, "python %s.*" % python]
    if want is None:
        with pytest.raises(SolverError):
            solve(channel, platform, specs)
        return
    got = solve(channel, platform, specs)
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert minor(got["cudatoolkit"].version) == cuda


@pytest.mark.parametrize("platform,python", CASES)
@pytest.mark.parametrize("specs", [["pytorch", "cpuonly"], ["pytorch-cpu"]])
def test_cpu_selection(rendered, channel, platform, python, specs):
    want = newest(pytorch_builds(rendered, platform, python), "None")
    got = solve(channel, platform, specs + ["python %s.*" % python])
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert "cudatoolkit" not in got
    assert got["pytorch-mutex"].build == "cpu"


@pytest.mark.parametrize("platform", PLATFORMS)
def test_cpuonly_with_cuda90_is_unsatisfiable_and_names_the_mutex(channel, platform):
    with pytest.raises(SolverError) as info:
        solve(channel, platform, ["pytorch", "cpuonly", "cuda90"])
    assert "pytorch-mutex" in str(info.value)


@pytest.mark.parametrize("platform,python", CASES)
def test_build_string_spec_and_toolkit_pin(rendered, channel, platform, python):
    want = newest(pytorch_builds(rendered, platform, python), "9.2")
    for specs in (["pytorch * *cuda92*"], ["pytorch", "cudatoolkit=9.2"]):
        if want is None:
            with pytest.raises(SolverError):
                solve(channel, platform, specs + ["python %s.*" % python])
            continue
        got = solve(channel, platform, specs + ["python %s.*" % python])["pytorch"]
        assert got.build == want.build_string


def test_release_without_cuda90_defaults_to_newest_9x(rendered, tmp_path):
    """A channel holding only 0.4.1 without its 9.0 builds: a plain install must pick 9.2, not CPU or 8.0."""
    kept = [v for v in rendered if not (v.name == "pytorch" and (
        v.version != "0.4.1" or v.variant.get("cuda_compiler_version") == "9.0"))]
    entries = [repodata.variant_record(v) for v in kept] + external_records()
    chan = repodata.write_channel(tmp_path, entries)
    for platform in PLATFORMS:
        builds = [v for v in kept if v.name == "pytorch" and v.subdir == platform and v.variant["python"] == "3.6"]
        want = default_build(builds)
        got = solve(chan, platform, ["pytorch", "python 3.6.*"])["pytorch"]
        assert got.build == want.build_string
        assert "cuda92" in got.build


def test_cpu_builds_are_down_prioritized(rendered):
    for v in rendered:
        if v.name == "pytorch":
            cpu = v.variant["cuda_compiler_version"] == "None"
            assert bool(v.track_features) == cpu, v.build_string


def test_build_strings_are_readable(rendered):
    import re

    pattern = re.compile(r"^py\d{2}_(cpu|cuda\d{2}_cudnn\d+)_\d+$")
    torch_builds = [v for v in rendered if v.name == "pytorch"]
    assert torch_builds
    for v in torch_builds:
        assert pattern.match(v.build_string), v.build_string
        assert v.build_string.endswith("_%d" % v.build_number)


@pytest.fixture(scope="module")
def torchwin_and_defaults(rendered, tmp_path_factory):
    """Our rendered packages and the defaults model as two channels, in the order `-c torchwin` gives."""
    tmp = tmp_path_factory.mktemp("two-channels")
    return (repodata.write_channel(tmp / "torchwin", [repodata.variant_record(v) for v in rendered]),
            repodata.write_channel(tmp / "defaults", external_records()))


def cuda_needs(rendered):
    """(subdir, cudatoolkit spec, cudnn spec) -> the pytorch builds that need them."""
    needs: dict = {}
    for v in rendered:
        if v.name == "pytorch" and v.variant["cuda_compiler_version"] != "None":
            toolkit = [d for d in v.depends if d.split()[0] == "cudatoolkit"]
            cudnn = [d for d in v.depends if d.split()[0] == "cudnn"]
            assert len(toolkit) == 1 and len(cudnn) == 1, v.build_string
            needs.setdefault((v.subdir, toolkit[0], cudnn[0]), []).append("%s %s" % (v.version, v.build_string))
    return needs


def test_every_cuda_build_finds_its_toolkit_and_cudnn_in_defaults_plus_torchwin(rendered, torchwin_and_defaults):
    """A CUDA release pytorch is built for but neither channel has a cudatoolkit/cudnn of fails here."""
    needs = cuda_needs(rendered)
    assert {subdir for subdir, _, _ in needs} == set(PLATFORMS)
    unsatisfied = []
    for (subdir, toolkit, cudnn), builds in sorted(needs.items()):
        try:
            got = solve(None, subdir, [toolkit, cudnn], channels=torchwin_and_defaults)
        except SolverError:
            unsatisfied.append("%s: %s + %s (needed by pytorch %s)" % (subdir, toolkit, cudnn, ", ".join(builds)))
            continue
        assert "cudatoolkit %s.*" % minor(got["cudatoolkit"].version) == toolkit
        assert got["cudnn"].version.startswith("7.")
    assert not unsatisfied, "no package in defaults or torchwin for: " + "; ".join(unsatisfied)


def test_torchwin_only_fills_the_gaps_of_defaults(rendered):
    """Our cudatoolkit/cudnn never duplicate a CUDA release defaults has for that platform."""
    ours = {(v.subdir, v.name, minor(v.variant["cuda_compiler_version"])) for v in rendered
            if v.name in ("cudatoolkit", "cudnn")}
    theirs = {(subdir, name, cuda) for subdir, rows in DEFAULTS_CUDA.items() for cuda, _, _ in rows
              for name in ("cudatoolkit", "cudnn")}
    assert ours == {(subdir, name, cuda) for subdir, cuda in
                    [("linux-64", "9.1"), ("win-64", "9.1"), ("win-64", "9.2")] for name in ("cudatoolkit", "cudnn")}
    assert not ours & theirs


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("cuda", ["9.0", "9.1", "9.2"])
def test_selectors_with_torchwin_before_defaults_take_each_toolkit_from_where_it_is(
        rendered, torchwin_and_defaults, platform, cuda):
    """`conda install -c torchwin pytorch cudaXY` with conda's default channel priority (flexible)."""
    want = newest(pytorch_builds(rendered, platform, "3.6"), cuda)
    got = solve(None, platform, ["pytorch", "cuda" + cuda.replace(".", ""), "python 3.6.*"],
                channels=torchwin_and_defaults)
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert minor(got["cudatoolkit"].version) == cuda and got["cudnn"].build.startswith("cuda%s_" % cuda)
    from_torchwin = (platform, cuda) in {("linux-64", "9.1"), ("win-64", "9.1"), ("win-64", "9.2")}
    for name in ("cudatoolkit", "cudnn"):
        assert got[name].channel.rstrip("/").endswith("torchwin" if from_torchwin else "defaults"), name

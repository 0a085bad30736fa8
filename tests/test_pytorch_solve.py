"""The install-time scheme, checked with the real solver (py-rattler) against repodata made from render.

Every pytorch variant, selection package and CUDA runtime package is rendered
with the engine and turned into repodata, split as the channel publishes it:
torchwin's label main, its label cuda-runtime (recipes/cuda-runtime names it),
and a model of what Anaconda's defaults channel offers. The install lines users
type (README "Install") are solved for every Python and both platforms with
the channels those lines name, in their order, under strict channel priority
(rattler's default; conda's `channel_priority: strict`) and flexible (conda's
default). What each line must pick is worked out here from the rendered matrix
itself (newest release, then the preferred CUDA), so a change to variants.yaml
changes the expectation with it.
"""

import asyncio
from pathlib import Path

import pytest
from torchwin import recipes
from torchwin.channel import repodata
from torchwin.channel.labels import channel_labels
from torchwin.ci import downloads

rattler = pytest.importorskip("rattler")
from rattler.exceptions import SolverError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("win-64", "linux-64")
# The default CUDA first, then newer 9.x before older: the order the build-number offsets encode.
CUDA_PREFERENCE = ("9.0", "9.2", "9.1", "8.0")
LABEL = "cuda-runtime"
# The channels of the two install lines, first to last (conda puts -c channels before defaults):
#   conda install -c torchwin pytorch ...
#   conda install -c torchwin -c torchwin/label/cuda-runtime pytorch cuda91
MAIN_LINE = ("torchwin", "defaults")
LABEL_LINE = ("torchwin", "torchwin/label/" + LABEL, "defaults")
PRIORITIES = ("strict", "flexible")


# Anaconda's defaults channel as it was for these releases: cudatoolkit 8.0 and 9.0 on both platforms
# and 9.2 on linux-64 only, never 9.1 (ContinuumIO/anaconda-recipes#140, tuna/issues#507 and #637),
# with the short versions defaults used ("9.0", not "9.0.176"); cudnn builds pinned to their toolkit
# (e.g. cudnn-7.1.2-cuda9.0_0 depends on "cudatoolkit 9.0.*"). recipes/cuda-runtime fills the gaps.
# cuDNN per CUDA: the first defaults had (7.1.3 for 8.0, 7.1.2 for 9.0, 7.2.1 for 9.2) and its last cuDNN 7,
# 7.6.5, built for its 9.0 and 9.2 too: public `conda list` outputs show cudnn 7.6.5 cuda9.0_0 from defaults
# beside cudatoolkit 9.0 build 1 on win-64, cudnn 7.6.5 cuda9.2_0 beside cudatoolkit 9.2 0 on linux-64,
# and an explicit linux-64 list fetches repo.anaconda.com/pkgs/main/linux-64/cudnn-7.6.5-cuda9.0_0.conda.
# None for 8.0 is modelled (no record of one found), and no 7.6 for 9.1 (defaults has no 9.1 at all).
DEFAULTS_CUDA = {
    "linux-64": [("8.0", "3", ("7.1.3",)), ("9.0", "h13b8566_0", ("7.1.2", "7.6.5")), ("9.2", "0", ("7.2.1", "7.6.5"))],
    "win-64": [("8.0", "3", ("7.1.3",)), ("9.0", "1", ("7.1.2", "7.6.5"))],
}


# The final VS2017 (15.9) redistributable, the floor vs2017_win-64's run_exports set.
VS2015_RUNTIME = "14.16.27012"


def external_records(vs2015_runtime=VS2015_RUNTIME):
    """What the defaults channel provides: one plausible version of each dependency, its real CUDA packages."""
    out = [repodata.record("vs2015_runtime", vs2015_runtime, "hf0eaf9b_0", subdir="win-64")]
    for subdir in PLATFORMS:
        for py in ("3.5.6", "3.6.8", "3.7.3", "3.8.1"):
            out.append(repodata.record("python", py, "h0_0", subdir=subdir))
        # numpy 1.15 for 3.5-3.7 and 1.17 on for 3.8 (these records carry no python pin).
        for name, version in (("numpy", "1.16.4"), ("numpy", "1.18.1"), ("mkl", "2019.4"),
                              ("intel-openmp", "2019.4"), ("cffi", "1.12.3"), ("vc", "14.1")):
            out.append(repodata.record(name, version, "h0_0", subdir=subdir))
        for cuda, build, cudnns in DEFAULTS_CUDA[subdir]:
            out.append(repodata.record("cudatoolkit", cuda, build, subdir=subdir))
            for cudnn in cudnns:
                out.append(repodata.record("cudnn", cudnn, "cuda%s_0" % cuda, depends=["cudatoolkit %s.*" % cuda],
                                           subdir=subdir))
    return out


def minor(version):
    """'9.1' of '9.1.85' and of '9.1'."""
    return ".".join(str(version).split(".")[:2])


def ci_cudnn_compiled():
    """(subdir, CUDA X.Y) -> the cuDNN major.minor `torchwin ci install-cuda` installs and exports as
    TORCHWIN_CUDNN_COMPILED (scripts/torchwin/data/ci_downloads.yaml): what a CI build pins cudnn to."""
    table = downloads.load_table()
    return {(platform, str(cuda)): minor(entry["cudnn"]["version"])
            for cuda, per_platform in table["cuda"].items() for platform, entry in per_platform.items()
            if entry.get("cudnn", {}).get("version")}


def render_as_ci(dirs, platforms):
    """The recipes rendered as CI builds them: each CUDA build of pytorch with the cudnn run pin its CI job
    writes (TORCHWIN_CUDNN_COMPILED of its CUDA and platform), not the render-only `cudnn 7.*`."""
    compiled = ci_cudnn_compiled()

    def cuda_build(v):
        return v.recipe == "pytorch" and v.variant.get("cuda_compiler_version", "None") != "None"

    out = [v for v in recipes.render(dirs, platforms) if not cuda_build(v)]
    torch_dirs = [d for d in dirs if d.name == "pytorch"]
    for value in sorted(set(compiled.values())):
        mp = pytest.MonkeyPatch()
        mp.setenv("TORCHWIN_CUDNN_COMPILED", value)
        try:
            again = recipes.render(torch_dirs, platforms)
        finally:
            mp.undo()
        out += [v for v in again if cuda_build(v)
                and compiled.get((v.subdir, v.variant["cuda_compiler_version"])) == value]
    every = [v for v in recipes.render(torch_dirs, platforms) if cuda_build(v)]
    lost = {(v.subdir, v.variant["cuda_compiler_version"]) for v in every} - set(compiled)
    assert not lost, "CUDA builds no CI job installs a cuDNN for: %s" % sorted(lost)
    assert len([v for v in out if cuda_build(v)]) == len(every)
    return out


@pytest.fixture(scope="module")
def rendered():
    dirs = [ROOT / "recipes" / d for d in ("pytorch", "pytorch-cpu", "pytorch-select", "cuda-runtime", "vs2017", "magma")]
    missing = [d for d in dirs if not (d / "recipe.yaml").is_file()]
    assert not missing, "recipes missing: %s" % missing
    return render_as_ci(dirs, list(PLATFORMS))


@pytest.fixture(scope="module")
def channels(rendered, tmp_path_factory):
    """torchwin (label main), torchwin/label/cuda-runtime and defaults, each a channel of its own.

    Which label a package goes in is what `torchwin build` decides from its recipe.
    """
    return write_channels(rendered, tmp_path_factory.mktemp("channels"))


def write_channels(variants, folder, defaults=None):
    """The three channels, each package in the label `torchwin build` gives it, run_exports applied."""
    labels = channel_labels(variants)
    records = repodata.variant_records(variants)
    by_name = {"defaults": repodata.write_channel(folder / "defaults", defaults or external_records())}
    for label, name in (("main", "torchwin"), (LABEL, "torchwin/label/" + LABEL)):
        by_name[name] = repodata.write_channel(
            folder / name, [r for v, r in zip(variants, records) if labels[id(v)] == label])
    return by_name


class Picked:
    """What the solver chose for one package, as plain strings."""

    def __init__(self, record):
        self.version = str(record.version)
        self.build = str(record.build)
        self.channel = str(record.channel).rstrip("/")


def solve(channels, line, platform, specs, priority):
    """Solve specs against the channels of an install line, in its order, with that channel priority."""
    records = asyncio.run(rattler.solve(
        sources=[rattler.Channel(channels[name].as_uri()) for name in line], specs=specs,
        platforms=[platform, "noarch"], virtual_packages=[],
        channel_priority={"strict": rattler.ChannelPriority.Strict,
                          "flexible": rattler.ChannelPriority.Flexible}[priority]))
    return {r.name.normalized: Picked(r) for r in records}


def from_label(picked):
    return picked.channel.endswith("/label/" + LABEL)


def line_for(platform, cuda):
    """The install line README gives for this CUDA release: the label's where defaults has no toolkit."""
    return MAIN_LINE if cuda in {row[0] for row in DEFAULTS_CUDA[platform]} else LABEL_LINE


def pytorch_builds(rendered, platform, python):
    return [v for v in rendered if v.name == "pytorch" and v.subdir == platform and v.variant["python"] == python]


def linked_magma(variant):
    """{magma-cudaXY} a pytorch build host-depends on (CUDA 9.x builds; none for CPU and CUDA 8.0)."""
    return {str(r).split()[0] for r in variant.host_requirements if str(r).startswith("magma-")}


def magma_of(picked):
    return {name for name in picked if name.startswith("magma-")}


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


# Every Python of the matrix (variants.yaml) on both platforms.
PYTHONS = tuple(str(p) for p in recipes.load_variant_config(ROOT / "recipes" / "pytorch", "linux-64").to_dict()["python"])
CASES = [(p, py) for p in PLATFORMS for py in PYTHONS]


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform,python", CASES)
def test_plain_install_gets_newest_release_with_default_cuda(rendered, channels, platform, python, priority):
    """`conda install -c torchwin pytorch`: the newest release's CUDA 9.0 build, its toolkit from defaults."""
    want = default_build(pytorch_builds(rendered, platform, python))
    got = solve(channels, MAIN_LINE, platform, ["pytorch", "python %s.*" % python], priority)
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert "_cpu_" not in got["pytorch"].build
    assert minor(got["cudatoolkit"].version) == want.variant["cuda_compiler_version"] == "9.0"
    assert got["cudatoolkit"].channel.endswith("/defaults")


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform,python", CASES)
@pytest.mark.parametrize("cuda", ["8.0", "9.0", "9.1", "9.2"])
def test_cuda_selector_package_picks_that_cuda(rendered, channels, platform, python, cuda, priority):
    """`pytorch cudaXY` with the line README gives for it: the label's for 9.1 and Windows 9.2."""
    want = newest(pytorch_builds(rendered, platform, python), cuda)
    line = line_for(platform, cuda)
    specs = ["pytorch", "cuda" + cuda.replace(".", ""), "python %s.*" % python]
    if want is None:
        with pytest.raises(SolverError):
            solve(channels, line, platform, specs, priority)
        return
    got = solve(channels, line, platform, specs, priority)
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert minor(got["cudatoolkit"].version) == cuda and got["cudnn"].build.startswith("cuda%s_" % cuda)
    for name in ("cudatoolkit", "cudnn"):
        assert from_label(got[name]) == (line == LABEL_LINE), (name, got[name].channel)
    # The MAGMA the build linked comes along (its run_exports), from torchwin's main label.
    assert magma_of(got) == linked_magma(want)
    assert all(got[name].channel.endswith("/torchwin") for name in magma_of(got))


def test_the_label_line_is_used_for_exactly_what_defaults_lacks():
    """README: the label for cuda91 on both platforms and cuda92 on Windows; nothing else needs it."""
    assert {(p, c) for p in PLATFORMS for c in ("8.0", "9.0", "9.1", "9.2") if line_for(p, c) == LABEL_LINE} == {
        ("linux-64", "9.1"), ("win-64", "9.1"), ("win-64", "9.2")}


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform,python", CASES)
@pytest.mark.parametrize("specs", [["pytorch", "cpuonly"], ["pytorch-cpu"]])
def test_cpu_selection(rendered, channels, platform, python, specs, priority):
    want = newest(pytorch_builds(rendered, platform, python), "None")
    got = solve(channels, MAIN_LINE, platform, specs + ["python %s.*" % python], priority)
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert "cudatoolkit" not in got and magma_of(got) == set()
    assert got["pytorch-mutex"].build == "cpu"


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_cpuonly_with_cuda90_is_unsatisfiable_and_names_the_mutex(channels, platform, priority):
    with pytest.raises(SolverError) as info:
        solve(channels, MAIN_LINE, platform, ["pytorch", "cpuonly", "cuda90"], priority)
    assert "pytorch-mutex" in str(info.value)


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform,python", CASES)
def test_build_string_spec_and_toolkit_pin(rendered, channels, platform, python, priority):
    want = newest(pytorch_builds(rendered, platform, python), "9.2")
    for specs in (["pytorch * *cuda92*"], ["pytorch", "cudatoolkit=9.2"]):
        specs = specs + ["python %s.*" % python]
        if want is None:
            with pytest.raises(SolverError):
                solve(channels, line_for(platform, "9.2"), platform, specs, priority)
            continue
        got = solve(channels, line_for(platform, "9.2"), platform, specs, priority)["pytorch"]
        assert got.build == want.build_string


@pytest.mark.parametrize("platform", PLATFORMS)
def test_under_strict_priority_the_label_hides_defaults_toolkits(rendered, channels, platform):
    """Why the label line is only for 9.1 and Windows 9.2 (README says so): under strict priority the
    first channel that has any cudatoolkit is the only one cudatoolkit comes from, so with the label
    named, defaults' 8.0/9.0/9.2 are out of reach and a plain `pytorch` falls back to the newest release
    with a build for a toolkit only the label has (win-64: 9.2; linux-64: 9.1, i.e. 0.4.x). It is also
    why no cudatoolkit may ever be in main (test_main_holds_no_cuda_runtime_package)."""
    with pytest.raises(SolverError):
        solve(channels, LABEL_LINE, platform, ["pytorch", "cuda90", "python 3.6.*"], "strict")
    label_only = {"9.1", "9.2"} - {row[0] for row in DEFAULTS_CUDA[platform]}
    reachable = [v for v in pytorch_builds(rendered, platform, "3.6") if v.variant["cuda_compiler_version"] in label_only]
    want = max(reachable, key=lambda v: (recipes._version_key(v.version), v.build_number))
    got = solve(channels, LABEL_LINE, platform, ["pytorch", "python 3.6.*"], "strict")
    assert (got["pytorch"].version, got["pytorch"].build) == (want.version, want.build_string)
    assert from_label(got["cudatoolkit"])
    if platform == "linux-64":  # defaults' 9.2: named with the label, strict priority cannot reach it
        with pytest.raises(SolverError):
            solve(channels, LABEL_LINE, platform, ["pytorch", "cuda92", "python 3.6.*"], "strict")
    # Flexible priority still reaches defaults' toolkits through the label line.
    got = solve(channels, LABEL_LINE, platform, ["pytorch", "python 3.6.*"], "flexible")
    assert minor(got["cudatoolkit"].version) == "9.0" and got["cudatoolkit"].channel.endswith("/defaults")


def test_main_holds_no_cuda_runtime_package():
    """No recipe may put a cudatoolkit or cudnn into label main: under strict priority one record there
    hides all of defaults' (test_under_strict_priority_the_label_hides_defaults_toolkits shows the effect)."""
    every = recipes.render(recipes.all_recipe_dirs(), list(PLATFORMS))
    labels = channel_labels(every)
    in_main = sorted({"%s %s %s (recipes/%s)" % (v.name, v.version, v.subdir, v.recipe) for v in every
                      if v.name in ("cudatoolkit", "cudnn") and labels[id(v)] == "main"})
    assert not in_main, "cudatoolkit/cudnn in label main: " + "; ".join(in_main)
    assert {v.name for v in every if labels[id(v)] == LABEL} == {"cudatoolkit", "cudnn"}


def readme_install_lines():
    """The `conda install` lines of README's user section: (channels, specs), comments dropped."""
    import shlex

    section = (ROOT / "README.md").read_text().split("## Install (users)", 1)[1].split("\n#", 1)[0]
    block = section.split("```", 2)[1]
    lines = []
    for text in block.splitlines():
        words = shlex.split(text.split("#", 1)[0])
        if not words:
            continue
        assert words[:2] == ["conda", "install"], text
        channels = tuple(words[i + 1] for i, w in enumerate(words) if w == "-c") + ("defaults",)
        specs = [w for i, w in enumerate(words[2:], 2) if w != "-c" and words[i - 1] != "-c"]
        lines.append((channels, specs))
    return lines


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_readme_install_lines_solve_as_written(channels, platform, priority):
    """Every line README gives users, with its channels in its order, on both platforms."""
    lines = readme_install_lines()
    assert (LABEL_LINE, ["pytorch", "cuda91"]) in lines and (MAIN_LINE, ["pytorch", "cuda90"]) in lines
    for line, specs in lines:
        # Parsed leniently, as conda reads them (conda's `name=version=build` is not strict syntax).
        parsed = [rattler.MatchSpec(s, strict=False) for s in specs + ["python 3.6.*"]]
        got = solve(channels, line, platform, parsed, priority)["pytorch"]
        cpu = "cpuonly" in specs or "pytorch-cpu" in specs
        assert ("_cpu_" if cpu else "_cuda91_" if "cuda91" in specs else "_cuda90_") in got.build, (specs, got.build)


def test_release_without_cuda90_defaults_to_newest_9x(rendered, tmp_path):
    """A channel holding only 0.4.1 without its 9.0 builds: a plain install must pick 9.2, not CPU or 8.0.

    This checks the build-number ranking, not the channels: every toolkit is in reach (label line,
    flexible priority)."""
    kept = [v for v in rendered if not (v.name == "pytorch" and (
        v.version != "0.4.1" or v.variant.get("cuda_compiler_version") == "9.0"))]
    chans = write_channels(kept, tmp_path)
    for platform in PLATFORMS:
        builds = [v for v in kept if v.name == "pytorch" and v.subdir == platform and v.variant["python"] == "3.6"]
        want = default_build(builds)
        got = solve(chans, LABEL_LINE, platform, ["pytorch", "python 3.6.*"], "flexible")["pytorch"]
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


@pytest.mark.parametrize("priority", PRIORITIES)
def test_every_cuda_build_finds_its_toolkit_and_cudnn_through_its_install_line(rendered, channels, priority):
    """A CUDA release pytorch is built for but neither defaults nor torchwin has a cudatoolkit/cudnn of,
    through the line README gives for it, fails here."""
    needs = cuda_needs(rendered)
    assert {subdir for subdir, _, _ in needs} == set(PLATFORMS)
    unsatisfied = []
    for (subdir, toolkit, cudnn), builds in sorted(needs.items()):
        cuda = toolkit.split()[1].rstrip(".*")
        try:
            got = solve(channels, line_for(subdir, cuda), subdir, [toolkit, cudnn], priority)
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


def test_windows_builds_carry_the_compilers_run_exports(rendered, tmp_path):
    """vs2017_win-64's strong run_exports reach every win-64 pytorch record, as the engine applies them."""
    tools = {v.name: v for v in rendered if v.recipe == "vs2017"}
    exported = tools["vs2017_win-64"].run_exports["strong"]
    assert any(spec.startswith("vs2015_runtime >=") for spec in exported)
    for variant, record in zip(rendered, repodata.variant_records(rendered)):
        if variant.name == "pytorch":
            depends = record[1]["depends"]
            assert all((spec in depends) == (variant.subdir == "win-64") for spec in exported), variant.build_string
    # The runtime floor is real: a defaults with only the VS2015 runtime cannot take a VS2017 build.
    got = solve(write_channels(rendered, tmp_path / "new"), MAIN_LINE, "win-64", ["pytorch"], "strict")
    assert got["vs2015_runtime"].version == VS2015_RUNTIME
    old = write_channels(rendered, tmp_path / "old", defaults=external_records(vs2015_runtime="14.0.25123"))
    with pytest.raises(SolverError, match="vs2015_runtime"):
        solve(old, MAIN_LINE, "win-64", ["pytorch"], "strict")


# -- 0.3: the seed's own releases (win-64 from peterjc123/pytorch's commits), selected like every row --------

OLD_RELEASES = ("0.3.0", "0.3.1")
OLD_PYTHONS = ("3.5", "3.6")


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("python", OLD_PYTHONS)
def test_a_plain_pytorch_never_picks_0_3(rendered, channels, platform, python, priority):
    """0.3 rows exist for every Python a newer release also has: the plain line gets the newer one."""
    assert any(v.version in OLD_RELEASES for v in pytorch_builds(rendered, platform, python))
    for line in (MAIN_LINE, LABEL_LINE):
        got = solve(channels, line, platform, ["pytorch", "python %s.*" % python], priority)
        assert got["pytorch"].version not in OLD_RELEASES, (line, got["pytorch"].version)


@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("release", OLD_RELEASES)
def test_0_3_is_selected_by_version_with_cpuonly_cudaxy_and_pytorch_cpu(rendered, channels, platform, release,
                                                                       priority):
    builds = [v for v in rendered if v.name == "pytorch" and v.subdir == platform and v.version == release]
    cudas = {v.variant["cuda_compiler_version"] for v in builds}
    # What the 2017 builds had: CPU and CUDA 9.0 everywhere (the fork's `cuda90`), CUDA 8.0 where our
    # toolchain builds it (Linux: nvcc 8.0 needs VS2015 on Windows).
    assert cudas == ({"None", "9.0"} if platform == "win-64" else {"None", "8.0", "9.0"})
    assert {v.variant["python"] for v in builds} == set(OLD_PYTHONS)
    for python in OLD_PYTHONS:
        pin = ["pytorch %s.*" % release, "python %s.*" % python]
        got = solve(channels, MAIN_LINE, platform, pin, priority)
        assert got["pytorch"].version == release and "_cuda90_cudnn7_" in got["pytorch"].build
        assert minor(got["cudatoolkit"].version) == "9.0" and got["cudnn"].version.startswith("7")
        assert not magma_of(got)  # 0.3 links no MAGMA
        for specs in (pin + ["cpuonly"], ["pytorch-cpu %s.*" % release, "python %s.*" % python]):
            got = solve(channels, MAIN_LINE, platform, specs, priority)
            assert got["pytorch"].version == release and got["pytorch"].build == "py%s_cpu_1" % python.replace(".", "")
            assert "cudatoolkit" not in got
        if "8.0" in cudas:
            got = solve(channels, MAIN_LINE, platform, pin + ["cuda80"], priority)
            assert got["pytorch"].build.startswith("py%s_cuda80_cudnn7_" % python.replace(".", ""))
            assert minor(got["cudatoolkit"].version) == "8.0"
        else:
            with pytest.raises(SolverError):
                solve(channels, MAIN_LINE, platform, pin + ["cuda80"], priority)

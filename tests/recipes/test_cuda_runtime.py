"""recipes/cuda-runtime: built for real by `torchwin build` from fake CUDA installs, indexed and installed.

No CUDA 9.1/9.2 toolkit exists here, so the edge is faked: folders laid out as NVIDIA's installers lay
them out (version.txt, the libraries with their SONAME links, cuDNN's cudnn.h), holding dummy files.
Everything else is real: the engine builds the linux-64 and win-64 packages (win-64 cross-target, from a
copy of a Windows layout, as a Linux build machine would), `torchwin build` indexes them into the
channel's label cuda-runtime (never main), py-rattler solves and installs them into prefixes, and the
refusals are those a maintainer would see.

The expected file names below are written out by hand from NVIDIA's layouts, independently of
runtime_files.txt, so a wrong line there fails here.
"""

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rattler
from torchwin import recipes
from torchwin.cli import main

# The fake Linux toolkit keeps NVIDIA's SONAME symlinks, which Windows creates only with extra
# privileges; both platforms' packages are built (win-64 cross-target) where these tests run, on Linux.
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fakes a Linux CUDA toolkit with symlinks")

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "cuda-runtime"
SCRIPT = RECIPE / "install_runtime.py"
# The label recipe.yaml keeps these packages in: channel DIR's label L is DIR/label/L/.
LABEL = "cuda-runtime"
# Every variable the recipe reads; cleared so this host's own settings cannot leak in.
VARIABLES = ("CUDA_PATH_V9_1", "CUDA_PATH_V9_2", "TORCHWIN_CUDNN_PATH_V9_1", "TORCHWIN_CUDNN_PATH_V9_2",
             "NVTOOLSEXT_PATH", "ProgramFiles")

# What defaults lacks: (package, version, build, subdir). See variants.yaml.
EXPECTED = {
    ("cudatoolkit", "9.1.85", "0", "linux-64"),
    ("cudnn", "7.1.3", "cuda9.1_0", "linux-64"),
    ("cudatoolkit", "9.1.85", "0", "win-64"),
    ("cudatoolkit", "9.2.148", "0", "win-64"),
    ("cudnn", "7.1.3", "cuda9.1_0", "win-64"),
    ("cudnn", "7.6.5", "cuda9.2_0", "win-64"),
}

LINUX_LIBS = ("cudart", "cublas", "cufft", "curand", "cusparse", "nvrtc")


def linux_toolkit(root: Path, toolkit="9.1.85", cudnn="7.1.3", version_txt=None, drop=()) -> Path:
    """A /usr/local/cuda-9.1 look-alike: real files named libX.so.9.1.85 behind SONAME and dev links."""
    cuda = ".".join(toolkit.split(".")[:2])
    lib = root / "lib64"
    lib.mkdir(parents=True)
    (root / "bin").mkdir()
    (root / "include").mkdir()
    (root / "version.txt").write_text(version_txt or "CUDA Version %s\n" % toolkit)
    (root / "bin" / "nvcc").write_text("not packaged")

    def library(stem, full, soname):
        if stem in drop:
            return
        (lib / full).write_text("fake %s" % full)
        (lib / soname).symlink_to(full)
        (lib / (stem + ".so")).symlink_to(soname)

    for name in LINUX_LIBS:
        library("lib" + name, "lib%s.so.%s" % (name, toolkit), "lib%s.so.%s" % (name, cuda))
    library("libnvrtc-builtins", "libnvrtc-builtins.so.%s" % toolkit, "libnvrtc-builtins.so.%s" % cuda)
    library("libnvToolsExt", "libnvToolsExt.so.1.0.0", "libnvToolsExt.so.1")
    # Present in a real toolkit, not wanted in the runtime package.
    (lib / ("libcusolver.so.%s" % toolkit)).write_text("not packaged")
    (lib / "libcudart_static.a").write_text("not packaged")
    # cuDNN copied into the toolkit, as NVIDIA's install guide has it.
    major, minor, patch = cudnn.split(".")
    (root / "include" / "cudnn.h").write_text(
        "#define CUDNN_MAJOR %s\n#define CUDNN_MINOR %s\n#define CUDNN_PATCHLEVEL %s\n" % (major, minor, patch))
    library("libcudnn", "libcudnn.so.%s" % cudnn, "libcudnn.so.%s" % major)
    return root


def windows_toolkit(root: Path, toolkit="9.2.148", cudnn="7.6.5", dll_tag=None) -> Path:
    """A copy of C:\\Program Files\\NVIDIA GPU Computing Toolkit\\CUDA\\v9.2 (cuDNN copied in)."""
    tag = dll_tag or "".join(toolkit.split(".")[:2])
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "version.txt").write_text("CUDA Version %s\n" % toolkit)
    for name in ("cudart64", "cublas64", "cufft64", "curand64", "cusparse64", "nvrtc64", "nvrtc-builtins64",
                 "cusolver64", "cufftw64"):
        (root / "bin" / ("%s_%s.dll" % (name, tag))).write_text("fake %s" % name)
    (root / "bin" / "nvcc.exe").write_text("not packaged")
    major, minor, patch = cudnn.split(".")
    (root / "include" / "cudnn.h").write_text(
        "#define CUDNN_MAJOR %s\n#define CUDNN_MINOR %s\n#define CUDNN_PATCHLEVEL %s\n" % (major, minor, patch))
    (root / "bin" / ("cudnn64_%s.dll" % major)).write_text("fake cudnn %s" % cudnn)
    return root


def nvtoolsext(root: Path) -> Path:
    """C:\\Program Files\\NVIDIA Corporation\\NvToolsExt, which the CUDA installer puts apart from the toolkit."""
    (root / "bin" / "x64").mkdir(parents=True)
    (root / "bin" / "x64" / "nvToolsExt64_1.dll").write_text("fake nvtx")
    return root


def read_version(folder: Path) -> str:
    path = folder / "version.txt"
    words = path.read_text().split("\n", 1)[0].split() if path.is_file() else []
    return words[-1] if words else ""


def build(channel, platform, capsys=None):
    """`torchwin build --verbose`: the whole reasons of the skips, each on one line."""
    code = main(["build", str(RECIPE), "--target-platform", platform, "--channel-dir", str(channel), "--verbose"])
    out = capsys.readouterr().out if capsys else ""
    return code, out


def clean_environment(patch):
    for name in VARIABLES:
        patch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-installs")
    return {
        "linux91": linux_toolkit(tmp / "linux" / "cuda-9.1"),
        "win91": windows_toolkit(tmp / "win" / "v9.1", toolkit="9.1.85", cudnn="7.1.3"),
        "win92": windows_toolkit(tmp / "win" / "v9.2"),
        "nvtx": nvtoolsext(tmp / "win" / "NvToolsExt"),
    }


@pytest.fixture(scope="module")
def channel(fakes, tmp_path_factory):
    """Every package built: linux-64 from the Linux layout, win-64 (cross-target) from the Windows copies."""
    chan = tmp_path_factory.mktemp("cuda-runtime") / "channel"
    with pytest.MonkeyPatch.context() as patch:
        clean_environment(patch)
        patch.setenv("CUDA_PATH_V9_1", str(fakes["linux91"]))
        assert build(chan, "linux-64")[0] == 0
        patch.setenv("CUDA_PATH_V9_1", str(fakes["win91"]))
        patch.setenv("CUDA_PATH_V9_2", str(fakes["win92"]))
        patch.setenv("NVTOOLSEXT_PATH", str(fakes["nvtx"]))
        assert build(chan, "win-64")[0] == 0
    return chan


def in_label(channel):
    return channel / "label" / LABEL


def records(channel, label=LABEL):
    """Every repodata record of one label of the channel (file names repeat across subdirs, so a list)."""
    root = channel if label == "main" else channel / "label" / label
    out = []
    for subdir in ("noarch", "linux-64", "win-64"):
        path = root / subdir / "repodata.json"
        if path.is_file():
            data = json.loads(path.read_text())
            out += [*data.get("packages", {}).values(), *data.get("packages.conda", {}).values()]
    return out


def install(channel, specs, prefix, platform):
    """Install from the channel's label cuda-runtime, where `torchwin build` put the packages."""
    found = asyncio.run(rattler.solve(sources=[rattler.Channel(in_label(channel).as_uri())], specs=specs,
                                      platforms=[platform, "noarch"], virtual_packages=[]))
    asyncio.run(rattler.install(found, prefix, platform=rattler.Subdir(platform),
                                cache_dir=prefix.parent / "pkgs", show_progress=False))
    return {r.name.normalized: r for r in found}


def listing(folder: Path) -> dict:
    """name -> link target (for links) or file text."""
    return {p.name: ("-> " + os.readlink(p)) if p.is_symlink() else p.read_text() for p in folder.iterdir()}


def installed_files(prefix: Path) -> set:
    """Every path the installed packages put into the prefix, from their conda-meta records."""
    files = set()
    for meta in (prefix / "conda-meta").glob("*.json"):
        files.update(json.loads(meta.read_text())["files"])
    return files


def test_render_lists_exactly_the_releases_defaults_lacks():
    got = {(v.name, v.version, v.build_string, v.subdir) for v in recipes.render([RECIPE], list(recipes.PLATFORMS))}
    assert got == EXPECTED


def test_each_cudnn_is_the_minor_pytorchs_builds_of_its_cuda_are_compiled_against():
    """pytorch's CUDA builds pin the cuDNN minor of the cudnn.h their CI job compiled against
    (ci_downloads.yaml; `cudnn 7.N.*` for 0.3/0.4, `>=7.N,<8` after): a cudnn of an older minor here
    satisfies neither, a newer one not 0.3/0.4's."""
    from torchwin.ci import downloads

    table = downloads.load_table()["cuda"]
    for v in recipes.render([RECIPE], list(recipes.PLATFORMS)):
        if v.name != "cudnn":
            continue
        compiled = table[v.variant["cuda_compiler_version"]][v.subdir]["cudnn"]["version"]
        assert v.version.split(".")[:2] == str(compiled).split(".")[:2], (v.subdir, v.version, compiled)


def test_every_package_is_built_into_the_label_and_cudnn_pins_its_toolkit(channel):
    assert records(channel, "main") == [], "a cudatoolkit in main hides defaults' under strict priority"
    got = records(channel)
    assert sorted((r["name"], r["version"], r["build"], r["subdir"]) for r in got) == sorted(EXPECTED)
    for r in got:
        if r["name"] == "cudnn":
            cuda = r["build"][len("cuda"):].split("_")[0]
            assert r["depends"] == ["cudatoolkit %s.*" % cuda]
        else:
            assert r["depends"] == []
        assert not r.get("track_features")


def test_linux_packages_install_the_libraries_with_their_soname_links(channel, tmp_path):
    prefix = tmp_path / "env"
    installed = install(channel, ["cudnn"], prefix, "linux-64")
    assert {n: str(r.version) for n, r in installed.items()} == {"cudnn": "7.1.3", "cudatoolkit": "9.1.85"}
    expected = {}
    for name in LINUX_LIBS:
        expected["lib%s.so.9.1.85" % name] = "fake lib%s.so.9.1.85" % name
        expected["lib%s.so.9.1" % name] = "-> lib%s.so.9.1.85" % name
    expected.update({
        # CUDA 9's NVRTC opens its builtins by the unversioned name, so that link is packaged too.
        "libnvrtc-builtins.so": "-> libnvrtc-builtins.so.9.1",
        "libnvrtc-builtins.so.9.1": "-> libnvrtc-builtins.so.9.1.85",
        "libnvrtc-builtins.so.9.1.85": "fake libnvrtc-builtins.so.9.1.85",
        "libnvToolsExt.so.1": "-> libnvToolsExt.so.1.0.0",
        "libnvToolsExt.so.1.0.0": "fake libnvToolsExt.so.1.0.0",
        "libcudnn.so.7": "-> libcudnn.so.7.1.3",
        "libcudnn.so.7.1.3": "fake libcudnn.so.7.1.3",
    })
    # Nothing else: no dev links (libcudart.so), static libraries, cuSOLVER or tools.
    assert listing(prefix / "lib") == expected
    assert installed_files(prefix) == {"lib/" + name for name in expected}


def test_real_shared_libraries_are_packaged_byte_for_byte(tmp_path, capsys, monkeypatch):
    """NVIDIA's ELF libraries go in unmodified: the engine's RPATH rewriting is off for them."""
    import sysconfig

    elf = next((p for p in sorted(Path(sysconfig.get_config_var("DESTSHARED") or "/nonexistent").glob("*.so"))
                if p.read_bytes()[:4] == b"\x7fELF"), None)
    if elf is None:
        pytest.skip("no ELF shared object at hand to stand in for NVIDIA's")
    toolkit = linux_toolkit(tmp_path / "cuda-9.1")
    for path in (toolkit / "lib64").iterdir():
        if not path.is_symlink() and ".so." in path.name:
            path.write_bytes(elf.read_bytes())
    clean_environment(monkeypatch)
    monkeypatch.setenv("CUDA_PATH_V9_1", str(toolkit))
    code, out = build(tmp_path / "channel", "linux-64", capsys)
    assert code == 0 and "2 built, 0 failed" in out, out
    assert "cudnn 7.1.3 cuda9.1_0 (linux-64) building into label cuda-runtime..." in out
    # The install line names the label (no main here: this channel holds nothing else).
    assert "conda install -c %s cudatoolkit cudnn" % in_label(tmp_path / "channel").resolve().as_uri() in out
    assert not (tmp_path / "channel" / "linux-64").exists()
    prefix = tmp_path / "env"
    install(tmp_path / "channel", ["cudnn"], prefix, "linux-64")
    copies = [p for p in (prefix / "lib").iterdir() if not p.is_symlink()]
    assert len(copies) == len(LINUX_LIBS) + 3
    assert all(p.read_bytes() == elf.read_bytes() for p in copies)


@pytest.mark.parametrize("cuda,toolkit,cudnn,tag", [("9.1", "9.1.85", "7.1.3", "91"), ("9.2", "9.2.148", "7.6.5", "92")])
def test_windows_packages_install_the_dlls_into_library_bin(channel, tmp_path, cuda, toolkit, cudnn, tag):
    prefix = tmp_path / "env"
    installed = install(channel, ["cudnn %s.*" % cudnn], prefix, "win-64")
    assert {n: str(r.version) for n, r in installed.items()} == {"cudnn": cudnn, "cudatoolkit": toolkit}
    expected = {"%s_%s.dll" % (name, tag): "fake " + name
                for name in ("cudart64", "cublas64", "cufft64", "curand64", "cusparse64", "nvrtc64",
                             "nvrtc-builtins64")}
    expected["nvToolsExt64_1.dll"] = "fake nvtx"
    expected["cudnn64_7.dll"] = "fake cudnn " + cudnn
    assert listing(prefix / "Library" / "bin") == expected
    assert installed_files(prefix) == {"Library/bin/" + name for name in expected}


def test_no_toolkit_means_skipped_with_the_reason_and_the_command(tmp_path, capsys, monkeypatch):
    if any(read_version(Path(d)).startswith("9.1.") for d in ("/usr/local/cuda-9.1", "/usr/local/cuda")):
        pytest.skip("this host has a CUDA 9.1 toolkit in a default folder")
    clean_environment(monkeypatch)
    channel = tmp_path / "channel"
    code, out = build(channel, "all", capsys)
    assert code == 0, out
    assert "0 built, 0 failed, 6 skipped" in out
    assert ("cuda-runtime for win-64 (1 variant): cudatoolkit 9.2.148 (win-64): no CUDA 9.2.148 toolkit: "
            "CUDA_PATH_V9_2 is not set; this host has no default folder for win-64 toolkits. "
            "Install CUDA 9.2.148, or set CUDA_PATH_V9_2 to the folder of one") in out
    assert "cudatoolkit 9.1.85 (linux-64): no CUDA 9.1.85 toolkit: CUDA_PATH_V9_1 is not set; " in out
    assert "/usr/local/cuda-9.1" in out
    assert ("e.g. where that is installed: torchwin build recipes/cuda-runtime --target-platform win-64 "
            "--variant cuda_compiler_version=9.2") in out
    assert not channel.exists(), "nothing may be written for skipped packages"


def test_the_windows_default_folders_are_where_the_cuda_installer_puts_them(tmp_path, capsys, monkeypatch):
    """With ProgramFiles set (as on Windows) and no CUDA_PATH_V9_2, the installer's folders are used."""
    clean_environment(monkeypatch)
    program_files = tmp_path / "Program Files"
    windows_toolkit(program_files / "NVIDIA GPU Computing Toolkit" / "CUDA" / "v9.2")
    nvtoolsext(program_files / "NVIDIA Corporation" / "NvToolsExt")
    monkeypatch.setenv("ProgramFiles", str(program_files))
    channel = tmp_path / "channel"
    code = main(["build", str(RECIPE), "--target-platform", "win-64", "--variant", "cuda_compiler_version=9.2",
                 "--channel-dir", str(channel)])
    out = capsys.readouterr().out
    assert code == 0 and "2 built, 0 failed, 0 skipped" in out, out


def test_a_toolkit_of_another_release_is_refused(tmp_path, capsys, monkeypatch):
    clean_environment(monkeypatch)
    wrong = linux_toolkit(tmp_path / "cuda-9.0", toolkit="9.1.85", version_txt="CUDA Version 9.0.176\n")
    monkeypatch.setenv("CUDA_PATH_V9_1", str(wrong))
    code, out = build(tmp_path / "channel", "linux-64", capsys)
    assert code == 0 and "0 built, 0 failed, 2 skipped" in out, out
    assert ("cudatoolkit 9.1.85 (linux-64): no CUDA 9.1.85 toolkit: CUDA_PATH_V9_1=%s, but %s is CUDA 9.0.176 "
            "(version.txt). Install CUDA 9.1.85, or set CUDA_PATH_V9_1 to the folder of one" % (wrong, wrong)) in out


def test_windows_dlls_of_another_release_are_missing_files(tmp_path, capsys, monkeypatch):
    """A 9.2 folder holding 9.1's DLLs (version.txt edited): the DLL names carry the release, 92."""
    clean_environment(monkeypatch)
    mixed = windows_toolkit(tmp_path / "v9.2", dll_tag="91")
    monkeypatch.setenv("CUDA_PATH_V9_2", str(mixed))
    monkeypatch.setenv("NVTOOLSEXT_PATH", str(nvtoolsext(tmp_path / "nvtx")))
    code, out = build(tmp_path / "channel", "win-64", capsys)
    assert code == 0, out
    assert ("cudatoolkit 9.2.148 (win-64): %s (from CUDA_PATH_V9_2) lacks bin/cudart64_92.dll, "
            "bin/cublas64_92.dll, bin/cufft64_92.dll, bin/curand64_92.dll, bin/cusparse64_92.dll, "
            "bin/nvrtc64_92.dll, bin/nvrtc-builtins64_92.dll. Install the missing components" % mixed) in out
    # cuDNN is complete there, so its package still builds.
    assert "cudnn 7.6.5 cuda9.2_0 (win-64) built" in out


def test_missing_and_wrong_cudnn_are_refused_and_the_toolkit_still_builds(tmp_path, capsys, monkeypatch):
    clean_environment(monkeypatch)
    monkeypatch.setenv("CUDA_PATH_V9_1", str(linux_toolkit(tmp_path / "cuda-9.1", cudnn="7.0.5")))
    code, out = build(tmp_path / "channel", "linux-64", capsys)
    assert code == 0 and "1 built, 0 failed, 1 skipped" in out, out
    assert "cudnn 7.1.3 for CUDA 9.1 (linux-64): no cuDNN 7.1.3: looked in %s (the CUDA toolkit from " \
           "CUDA_PATH_V9_1): %s holds cuDNN 7.0.5 (include/cudnn.h)" % (tmp_path / "cuda-9.1", tmp_path / "cuda-9.1") in out

    separate = tmp_path / "cudnn-9.1-linux-x64-v7.1" / "cuda"
    monkeypatch.setenv("TORCHWIN_CUDNN_PATH_V9_1", str(separate))
    code, out = build(tmp_path / "channel2", "linux-64", capsys)
    assert "no cuDNN 7.1.3: looked in %s (TORCHWIN_CUDNN_PATH_V9_1): %s does not exist" % (separate, separate) in out
    # An unpacked cuDNN archive elsewhere is used when the variable names it.
    (separate / "include").mkdir(parents=True)
    (separate / "lib64").mkdir()
    (separate / "include" / "cudnn.h").write_text(
        "#define CUDNN_MAJOR 7\n#define CUDNN_MINOR 1\n#define CUDNN_PATCHLEVEL 3\n")
    (separate / "lib64" / "libcudnn.so.7.1.3").write_text("unpacked archive")
    (separate / "lib64" / "libcudnn.so.7").symlink_to("libcudnn.so.7.1.3")
    code, out = build(tmp_path / "channel3", "linux-64", capsys)
    assert "2 built, 0 failed, 0 skipped" in out, out


def test_a_missing_library_is_named_with_the_folder(tmp_path, capsys, monkeypatch):
    clean_environment(monkeypatch)
    toolkit = linux_toolkit(tmp_path / "cuda-9.1", drop=("libcurand", "libnvToolsExt"))
    monkeypatch.setenv("CUDA_PATH_V9_1", str(toolkit))
    code, out = build(tmp_path / "channel", "linux-64", capsys)
    assert code == 0 and "1 built, 0 failed, 1 skipped" in out, out
    assert ("cudatoolkit 9.1.85 (linux-64): %s (from CUDA_PATH_V9_1) lacks lib64/libcurand.so.9.1*, "
            "lib64/libnvToolsExt.so.1*. Install the missing components (a full install of CUDA 9.1.85 has them)"
            % toolkit) in out


def script_environment(**values):
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env.update({"TORCHWIN_PACKAGE": "cudatoolkit", "target_platform": "linux-64", "TORCHWIN_CUDA_VERSION": "9.1",
                "TORCHWIN_CUDATOOLKIT_VERSION": "9.1.85", "TORCHWIN_CUDNN_VERSION": "7.1.3",
                "RECIPE_DIR": str(RECIPE)})
    env.update(values)
    return env


def test_the_build_script_itself_refuses_with_one_line(tmp_path):
    """What conda-build or rattler-build users see: exit status 1 and the reason, nothing copied."""
    wrong = linux_toolkit(tmp_path / "cuda", version_txt="CUDA Version 9.2.148\n")
    prefix = tmp_path / "prefix"
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                            env=script_environment(TORCHWIN_CUDA_HOME=str(wrong), PREFIX=str(prefix)))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "cudatoolkit 9.1.85 (linux-64): no CUDA 9.1.85 toolkit: CUDA_PATH_V9_1=%s, but %s is CUDA 9.2.148 "
        "(version.txt). Install CUDA 9.1.85, or set CUDA_PATH_V9_1 to the folder of one" % (wrong, wrong)]
    assert not prefix.exists()


def test_a_broken_file_list_fails_the_build_instead_of_skipping(tmp_path, capsys):
    recipe = tmp_path / "cuda-runtime"
    shutil.copytree(RECIPE, recipe)
    with open(recipe / "runtime_files.txt", "a") as f:
        f.write("cudatoolkit  win-64  toolkit  bin/{cuda_major}.dll\n")
    code = main(["build", str(recipe), "--target-platform", "win-64", "--channel-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 1
    assert "install_runtime.py: cannot check this host:" in err and "{cuda_major}: allowed: {cuda}" in err

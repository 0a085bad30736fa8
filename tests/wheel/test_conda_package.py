"""torchwin.wheel.conda_package: the install record's files as the variant's conda package, through the engine.

The payload is a stand-in made here (compiling torch is the job of `torchwin wheel`): a `torch`
package folder in a host prefix laid out as `torchwin wheel` makes it (lib/pythonX.Y/site-packages),
with a compiled torch/_C.so that links libmkl_rt.so from the prefix's lib/ (a stub with MKL's
soname and one MKL function, as the real build links the PyPI mkl's), a text file and a script that
name the prefix, and the record `setup.py install --record` writes. The unit tests read what the
engine wrote; the `real_conda` test has the real conda install it beside the real packages
dependency_channel makes (the pyenv CPython, PyPI's numpy / mkl / intel-openmp, pytorch-select),
and imports it there: the stand-in's _C.so must then find the real MKL through the engine's rpath.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin.channel.package_read import read_info_file
from torchwin.errors import UserError
from torchwin.wheel import conda_package, repack

ROOT = Path(__file__).resolve().parents[2]
PYENV_37 = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions" / "3.7.16" / "bin" / "python3.7"
PIP_REQUIREMENTS = ["numpy==1.15.4", "mkl==2019.0", "intel-openmp==2019.0"]

needs_gcc = pytest.mark.skipif(not shutil.which("gcc"), reason="no gcc: the stand-in payload compiles a .so")
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the engine relinks ELF files here"
)

MKL_STUB = r"""
#include <string.h>
void MKL_Get_Version_String(char *buf, int len) { strncpy(buf, "stub", len); }
"""
TORCH_C = r"""
void MKL_Get_Version_String(char *buf, int len);
void torch_mkl_version(char *buf, int len) { MKL_Get_Version_String(buf, len); }
"""
# Enough of torch's surface for run_test.py's import and version checks.
TORCH_INIT = """\
import ctypes
import os

import numpy

__version__ = "1.4.0"
Tensor = tensor = nn = autograd = utils = None
_lib = ctypes.CDLL(os.path.join(os.path.dirname(__file__), "_C.so"))


def mkl_version():
    buf = ctypes.create_string_buffer(256)
    _lib.torch_mkl_version(buf, 256)
    return buf.value.decode()
"""


@pytest.fixture(scope="module")
def variant():
    """recipes/pytorch's 1.4.0 CPU build for Python 3.7 on linux-64."""
    found = conda_package.cpu_variant("1.4.0", "3.7")
    assert (found.name, found.version, found.build_string) == ("pytorch", "1.4.0", "py37_cpu_1")
    assert found.variant["python"] == "3.7" and found.variant["cuda_compiler_version"] == "None"
    return found


def test_cpu_variant_names_what_is_offered():
    with pytest.raises(
        UserError, match=r"no CPU build of 0\.4\.0 for Python 3\.7 on linux-64; allowed: .*0\.4\.0/py3\.6"
    ):
        conda_package.cpu_variant("0.4.0", "3.7")


def make_standin(root: Path, python="3.7"):
    """(prefix, the files installed, relative to it): a host prefix with a stand-in torch installed."""
    prefix = root / "prefix"
    site = prefix / "lib" / ("python%s" % python) / "site-packages"
    torch = site / "torch"
    (torch / "share" / "cmake" / "Torch").mkdir(parents=True)
    (prefix / "bin").mkdir()
    (root / "mkl_stub.c").write_text(MKL_STUB)
    (root / "torch_c.c").write_text(TORCH_C)
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-Wl,-soname,libmkl_rt.so",
            "-o",
            str(prefix / "lib" / "libmkl_rt.so"),
            str(root / "mkl_stub.c"),
        ],
        check=True,
    )
    # As torch's setup.py links: against the prefix's MKL, with the prefix's lib/ as an absolute rpath.
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-o",
            str(torch / "_C.so"),
            str(root / "torch_c.c"),
            "-L%s" % (prefix / "lib"),
            "-lmkl_rt",
            "-Wl,-rpath,%s" % (prefix / "lib"),
        ],
        check=True,
    )
    (torch / "__init__.py").write_text(TORCH_INIT)
    (torch / "share" / "cmake" / "Torch" / "TorchConfig.cmake").write_text(
        "set(TORCH_INSTALL_PREFIX %s)\n" % torch
    )
    (prefix / "bin" / "convert-standin").write_text("#!%s/bin/python\nimport torch\n" % prefix)
    (prefix / "bin" / "convert-standin").chmod(0o755)
    # A link to a text file naming the prefix: it stays a link (conda relocates its target).
    (prefix / "bin" / "convert-link").symlink_to("convert-standin")
    egg = site / ("torch-1.4.0-py%s.egg-info" % python)
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: torch\nVersion: 1.4.0\n")
    installed = sorted(
        str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file() and p.name != "libmkl_rt.so"
    )
    return prefix, installed


def write_record(path: Path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def unpack(package: Path, into: Path) -> Path:
    """The package's files, extracted with the real conda-package-handling way: zip of two tar.zst."""
    import tarfile
    import zipfile

    from backports import zstd  # noqa: F401 - the project's dependency below Python 3.14

    with zipfile.ZipFile(package) as archive:
        for name in archive.namelist():
            if name.endswith(".tar.zst"):
                with (
                    archive.open(name) as raw,
                    zstd.ZstdFile(raw) as stream,
                    tarfile.open(fileobj=stream, mode="r|") as tar,
                ):
                    tar.extractall(into, filter="tar")
    return into


# ---------------------------------------------------------------- the record


def test_record_paths_absolute_and_relative_to_site_packages(tmp_path):
    prefix = tmp_path / "prefix"
    site = prefix / "lib" / "python3.7" / "site-packages"
    (site / "torch").mkdir(parents=True)
    (prefix / "bin").mkdir()
    for f in (site / "torch" / "__init__.py", site / "torch" / "_C.so", prefix / "bin" / "tool"):
        f.write_text("x")
    absolute = write_record(
        tmp_path / "abs.txt",
        [
            str(site / "torch" / "__init__.py"),
            "",
            str(site / "torch" / "_C.so"),
            str(prefix / "bin" / "tool"),
            str(site / "torch" / "__init__.py"),
        ],
    )
    relative = write_record(tmp_path / "rel.txt", ["torch/__init__.py", "torch/_C.so", "../../../bin/tool"])
    want = [
        "lib/python3.7/site-packages/torch/__init__.py",
        "lib/python3.7/site-packages/torch/_C.so",
        "bin/tool",
    ]
    assert conda_package.payload_files(prefix, absolute, "3.7") == want
    assert conda_package.payload_files(prefix, relative, "3.7") == want
    # pip's .dist-info/RECORD: CSV, a path with a comma quoted.
    (site / "torch" / "a,b.py").write_text("x")
    wheel_record = write_record(
        tmp_path / "RECORD",
        [
            "torch/__init__.py,sha256=abc,1",
            "torch/_C.so,,",
            "../../../bin/tool,sha256=def,1",
            '"torch/a,b.py",,',
        ],
    )
    assert conda_package.payload_files(prefix, wheel_record, "3.7") == want + [
        "lib/python3.7/site-packages/torch/a,b.py"
    ]
    # The prefix as a link to it (a record names the path the build used).
    link = tmp_path / "link"
    link.symlink_to(prefix)
    assert conda_package.payload_files(link, absolute, "3.7") == want


def test_a_folder_in_the_record_stands_for_its_files(tmp_path):
    """Upstream v1.4.0's setup.py (build_ext.get_outputs, line 482) appends the caffe2 package folder
    itself to the outputs, so `setup.py install --record` lists `.../site-packages/caffe2` beside its
    files: the payload takes every file under it, once."""
    prefix = tmp_path / "prefix"
    site = prefix / "lib" / "python3.7" / "site-packages"
    (site / "caffe2" / "python").mkdir(parents=True)
    for f in (site / "caffe2" / "__init__.py", site / "caffe2" / "python" / "core.py"):
        f.write_text("x")
    record = write_record(tmp_path / "record.txt", [str(site / "caffe2" / "__init__.py"), str(site / "caffe2")])
    assert conda_package.payload_files(prefix, record, "3.7") == [
        "lib/python3.7/site-packages/caffe2/__init__.py",
        "lib/python3.7/site-packages/caffe2/python/core.py",
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("/etc/passwd", "is outside the prefix"),
        ("../../../../../etc/passwd", "leads outside the prefix"),
        ("torch/missing.py", "no such file"),
    ],
)
def test_record_bad_lines_name_the_file_and_line(tmp_path, line, message):
    prefix = tmp_path / "prefix"
    (prefix / "lib" / "python3.7" / "site-packages" / "torch").mkdir(parents=True)
    (prefix / "lib" / "python3.7" / "site-packages" / "torch" / "__init__.py").write_text("")
    record = write_record(tmp_path / "record.txt", ["torch/__init__.py", line])
    with pytest.raises(UserError, match=r"record\.txt:2: .*%s" % message):
        conda_package.payload_files(prefix, record, "3.7")


def test_record_empty_or_missing(tmp_path):
    with pytest.raises(UserError, match="lists no files"):
        conda_package.payload_files(tmp_path, write_record(tmp_path / "r.txt", ["", "  "]), "3.7")
    with pytest.raises(UserError, match="cannot read the install record"):
        conda_package.payload_files(tmp_path, tmp_path / "none.txt", "3.7")


# ---------------------------------------------------------------- the package the engine writes


@pytest.fixture(scope="module")
def packed(tmp_path_factory, variant):
    """(package, prefix, installed files): the stand-in packed as the variant, by the engine."""
    if not shutil.which("gcc"):
        pytest.skip("no gcc: the stand-in payload compiles a .so")
    root = tmp_path_factory.mktemp("standin")
    prefix, installed = make_standin(root)
    record = write_record(root / "record.txt", [str(prefix / f) for f in installed])
    package = conda_package.pack(variant, prefix, record, root / "out", package_format="conda:1")
    return package, prefix, installed


@linux_only
def test_pack_index_json_is_the_variants(packed, variant):
    package = packed[0]
    assert package.name == variant.filename_stem + ".conda"
    index = json.loads(read_info_file(package, "info/index.json"))
    assert {k: index[k] for k in ("name", "version", "build", "build_number", "subdir", "depends")} == {
        "name": "pytorch",
        "version": "1.4.0",
        "build": variant.build_string,
        "build_number": variant.build_number,
        "subdir": "linux-64",
        "depends": variant.depends,
    }
    assert index["depends"] == ["python 3.7.*", "numpy >=1.15", "mkl >=2019", "pytorch-mutex ==1.0 cpu"]
    # The CPU build's down-prioritisation, spelled as the engine spells it for recipes/pytorch itself.
    assert index["track_features"] == " ".join(variant.track_features) == "pytorch-p-0"
    assert "constrains" not in index
    about = json.loads(read_info_file(package, "info/about.json"))
    rendered = variant.rendered.recipe.to_dict()
    assert about["summary"] == rendered["about"]["summary"]
    assert about["home"] == "https://pytorch.org/"
    assert (
        about["extra"] == rendered["extra"] == {"upstream_commit": "7f73f1d591afba823daa4a99a939217fb54d7688"}
    )


@linux_only
def test_pack_paths_json_holds_exactly_the_record(packed, tmp_path):
    package, prefix, installed = packed
    paths = json.loads(read_info_file(package, "info/paths.json"))
    assert paths["paths_version"] == 1
    entries = {p["_path"]: p for p in paths["paths"]}
    assert sorted(entries) == installed  # not the prefix's libmkl_rt.so: mkl's package brings it
    files = unpack(package, tmp_path / "unpacked")
    for rel, entry in entries.items():
        link = rel == "bin/convert-link"
        assert entry["path_type"] == ("softlink" if link else "hardlink"), rel
        assert (files / rel).is_symlink() == link, rel
        assert entry["size_in_bytes"] == (files / rel).lstat().st_size, rel
    assert os.readlink(files / "bin" / "convert-link") == "convert-standin"
    # Text naming the build prefix now names the engine's placeholder, recorded for conda to replace.
    for rel in (
        "bin/convert-standin",
        "lib/python3.7/site-packages/torch/share/cmake/Torch/TorchConfig.cmake",
    ):
        entry = entries[rel]
        assert entry["file_mode"] == "text", rel
        text = (files / rel).read_text()
        assert entry["prefix_placeholder"] in text and str(prefix) not in text, rel
    assert os.access(files / "bin" / "convert-standin", os.X_OK)
    # Untouched bytes elsewhere.
    init = "lib/python3.7/site-packages/torch/__init__.py"
    assert "prefix_placeholder" not in entries[init]
    assert (files / init).read_bytes() == (prefix / init).read_bytes()


@linux_only
def test_pack_relinks_binaries_to_the_environments_lib(packed, tmp_path):
    """The absolute rpath to the build prefix's lib/ becomes the engine's relative one ($ORIGIN/../../..
    from site-packages/torch is the environment's lib/), where mkl's package puts libmkl_rt.so."""
    package, prefix, _ = packed
    files = unpack(package, tmp_path / "unpacked")
    dynamic = subprocess.run(
        ["readelf", "-d", str(files / "lib/python3.7/site-packages/torch/_C.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "libmkl_rt.so" in dynamic
    paths = [line.split("[", 1)[1].rstrip("]") for line in dynamic.splitlines() if "PATH)" in line]
    assert paths == ["$ORIGIN/../../.."], dynamic
    assert str(prefix) not in dynamic


@needs_gcc
@linux_only
def test_pack_refuses_a_bad_record_before_building(tmp_path, variant):
    prefix, installed = make_standin(tmp_path)
    record = write_record(
        tmp_path / "record.txt", [str(prefix / installed[0]), str(prefix / "lib" / "nope.so")]
    )
    with pytest.raises(UserError, match=r"record\.txt:2: .*nope\.so: no such file"):
        conda_package.pack(variant, prefix, record, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError, match=r"/usr: too short a path for a build prefix"):
        conda_package.pack(variant, Path("/usr"), record, tmp_path / "out")


# ---------------------------------------------------------------- the real conda


def find_conda():
    named = os.environ.get("TORCHWIN_TEST_CONDA")
    return (shutil.which(named) or named) if named else shutil.which("conda")


CONDA = find_conda()


@pytest.mark.real_conda
@needs_gcc
@linux_only
@pytest.mark.skipif(
    not CONDA,
    reason="no real conda: set TORCHWIN_TEST_CONDA to a conda command "
    "(../shared/tools/real-conda/setup.sh prints one) or put conda on PATH",
)
@pytest.mark.skipif(
    not PYENV_37.exists(), reason="no pyenv CPython 3.7.16 at %s to repack as python" % PYENV_37
)
def test_real_conda_installs_the_package_and_its_repacked_dependencies(packed, variant, tmp_path):
    """The first run repacks python and PyPI's mkl (260 MB) with the engine, ~2 minutes; later runs take
    them from the cache (TORCHWIN_PACKAGE_CACHE, default ~/.cache/torchwin/conda-packages)."""
    package = packed[0]
    deps = conda_package.dependency_channel(
        PYENV_37, PIP_REQUIREMENTS, tmp_path / "deps", for_depends=variant.depends
    )
    ours = conda_package.index_channel(tmp_path / "ours", [package])
    env = tmp_path / "env"
    report = conda_package.install_and_test(
        CONDA,
        [deps, ours],
        ["pytorch=1.4.0", "cpuonly"],
        env,
        ["--only", "import,version", "--expect-version", "1.4.0"],
        pkgs_dir=tmp_path / "pkgs",
    )
    assert (report["passed"], report["failed"], report["exit_code"]) == (2, 0, 0), report
    assert report["python"]["executable"].startswith(str(env))
    installed = {
        json.loads(p.read_text())["name"]: json.loads(p.read_text())
        for p in (env / "conda-meta").glob("*.json")
    }
    assert sorted(installed) == [
        "cpuonly",
        "intel-openmp",
        "mkl",
        "numpy",
        "python",
        "pytorch",
        "pytorch-mutex",
    ]
    assert installed["pytorch"]["build"] == variant.build_string
    assert installed["pytorch-mutex"]["build"] == "cpu"
    assert installed["python"]["version"] == "3.7.16"
    # The stand-in's _C.so found the real MKL of the mkl package through the engine's rpath, not the stub.
    out = subprocess.run(
        [
            str(env / "bin" / "python"),
            "-c",
            "import torch, numpy; print(torch.mkl_version()); print(numpy.__version__, torch.__file__)",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    mkl_line, numpy_line = out.stdout.splitlines()
    assert "Math Kernel Library Version 2019.0" in mkl_line
    assert numpy_line.split()[0] == "1.15.4" and numpy_line.split()[1].startswith(str(env / "lib"))
    # conda relocated the prefix the engine recorded.
    assert (env / "bin" / "convert-standin").read_text().startswith("#!%s/bin/python\n" % env)
    # A failing check comes back as a report, not an error.
    failing = conda_package.run_test_in_env(env, ["--only", "version", "--expect-version", "9.9.9"])
    assert (failing["passed"], failing["failed"], failing["exit_code"]) == (0, 1, 1), failing


def test_index_channel_keeps_noarch_records_and_indexes_the_empty_platform(tmp_path):
    """A channel of noarch packages only (the selection packages) still gets linux-64/repodata.json,
    which conda reads for every channel, and keeps its noarch records."""
    select = repack.select_packages(tmp_path / "cache", names=("pytorch-mutex",))
    assert sorted(p.name for p in select) == ["pytorch-mutex-1.0-cpu.conda", "pytorch-mutex-1.0-cuda.conda"]
    channel = conda_package.index_channel(tmp_path / "channel", select)
    noarch = json.loads((channel / "noarch" / "repodata.json").read_text())
    assert sorted(noarch["packages.conda"]) == ["pytorch-mutex-1.0-cpu.conda", "pytorch-mutex-1.0-cuda.conda"]
    assert noarch["packages.conda"]["pytorch-mutex-1.0-cpu.conda"]["track_features"] == "pytorch-mutex-p-0"
    platform = json.loads((channel / "linux-64" / "repodata.json").read_text())
    assert (
        platform["info"]["subdir"] == "linux-64"
        and not platform["packages"]
        and not platform["packages.conda"]
    )
    # Cached: a second call builds nothing and gives the same files.
    assert repack.select_packages(tmp_path / "cache", names=("pytorch-mutex",)) == select


PYENV_36 = PYENV_37.parents[2] / "3.6.15" / "bin" / "python3.6"


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("TORCHWIN_SLOW_TESTS"),
    reason="slow (pip downloads and installs a wheel "
    "with two Pythons, ~25 s): set TORCHWIN_SLOW_TESTS=1 to run it",
)
@linux_only
@pytest.mark.skipif(
    not (PYENV_36.exists() and PYENV_37.exists()), reason="needs pyenv CPython 3.6.15 and 3.7.16"
)
def test_wheel_of_libraries_is_one_package_for_every_python(tmp_path):
    """intel-openmp's wheel holds libraries in lib/ and only its .dist-info in site-packages: repacked,
    it is one package for any Python (no python dependency, build string 0), made once; mkl's (260 MB)
    is the same kind."""
    cache = tmp_path / "cache"
    first = repack.wheel_package(PYENV_36, "intel-openmp==2019.0", cache)
    again = repack.wheel_package(PYENV_37, "intel-openmp==2019.0", cache)
    assert first == again and first.name == "intel-openmp-2019.0-0.conda"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [first.parent.name]
    index = json.loads(read_info_file(first, "info/index.json"))
    assert index["depends"] == [] and index["subdir"] == "linux-64"
    paths = [p["_path"] for p in json.loads(read_info_file(first, "info/paths.json"))["paths"]]
    assert "lib/libiomp5.so" in paths and not [p for p in paths if "site-packages" in p]


def test_create_env_replaces_only_a_conda_environment(tmp_path):
    keep = tmp_path / "data"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    with pytest.raises(
        UserError, match=r"data: exists and is not a conda environment; refusing to replace it"
    ):
        conda_package.create_env("conda-not-run", [tmp_path], ["python"], keep)
    assert (keep / "precious.txt").read_text() == "x"


def test_a_requirement_no_dependency_package_provides_is_named(tmp_path, variant):
    select = repack.select_packages(tmp_path / "cache")
    assert variant.depends[0] == "python 3.7.*"
    conda_package.check_names(select, ["pytorch-mutex ==1.0 cpu"], [])  # cpuonly's is there too
    with pytest.raises(
        UserError,
        match=r"the package requires numpy >=1\.15, which none of the dependency "
        r"packages is .*pip requirements mkl==2019\.0\); add its PyPI name",
    ):
        conda_package.check_names(select, variant.depends[1:], ["mkl==2019.0"])

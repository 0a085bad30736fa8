"""torchwin upstream-facts: the extractor on a small real git repository, the committed tables, drift.

The opt-in test regenerates the committed tables from a local upstream clone:
TORCHWIN_UPSTREAM_REPO=/path/to/pytorch (bare or not, holding the pinned commits);
TORCHWIN_UPSTREAM_SUBMODULE_MIRRORS=DIR also checks the submodule floors read from there.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from torchwin.cli import main
from torchwin.upstream import table, tree

ROOT = Path(__file__).resolve().parents[2]
TABLES = ROOT / "recipes" / "pytorch" / "upstream"
VARIANTS = ROOT / "recipes" / "pytorch" / "variants.yaml"

SETUP_PY = """\
import os
from tools.setup_helpers.env import check_env_flag
from tools.setup_helpers.nvtoolext import NVTOOLEXT_HOME

for var in ['CUDA']:
    if check_env_flag('NO_' + var):
        os.environ['USE_' + var] = '0'
max_jobs = os.getenv("MAX_JOBS")
DEBUG = check_env_flag('DEBUG')
# os.getenv('COMMENTED_OUT')
if 'FROM_IN' in os.environ:
    pass
try:
    import ninja
    USE_NINJA = True
except ImportError:
    USE_NINJA = False

version = '2.0.0a0'


def build_libs():
    my_env = os.environ.copy()
    if not IS_WINDOWS:
        if USE_NINJA:
            my_env["CMAKE_GENERATOR"] = '-GNinja'

if USE_CUDA:
    if IS_WINDOWS:
        nvtoolext_lib_path = NVTOOLEXT_HOME + '/lib/x64/'

setup(name='torch', version=version, python_requires='>=3.5')
"""

NVTOOLEXT_PY = """\
import os
WINDOWS_HOME = 'C:/Program Files/NVIDIA Corporation/NvToolsExt'
NVTOOLEXT_HOME = os.getenv('NVTOOLSEXT_PATH', WINDOWS_HOME)
"""

CUDA_PY = """\
import os
CUDA_HOME = os.environ.get('CUDA_HOME')
os.environ['WRITTEN_ONLY'] = '1'
LIB = os.environ['CUDA_LIB']
my_env = os.environ.copy()
cc = my_env.get('CC', 'cl')
vc_env = _get_vc_env('x64')
"""

BUILD_SH = """\
#!/bin/bash
CMAKE_INSTALL=${CMAKE_INSTALL-make install}
LOCAL_ONLY=1
echo "$LOCAL_ONLY $CFLAGS"
LDFLAGS="$LDFLAGS -Wl,-rpath,\\$ORIGIN"
"""

BUILD_BAT = """\
@echo off
rem %REMARKED%
set FOO=1
echo %FOO% %CD%
IF NOT DEFINED MAX_JOBS set MAX_JOBS=4
IF "%CMAKE_GENERATOR%"=="Ninja" (
  set MAKE_COMMAND=ninja
)
"""

TOP_CMAKE = """\
cmake_minimum_required(VERSION 3.5 FATAL_ERROR)
# cmake_minimum_required(VERSION 2.4)
set(MAGMA $ENV{MAGMA_HOME})
"""

CWRAP_PARSER = """\
import yaml
def parse(f):
    a = yaml.load(f)
    b = yaml.load(f, Loader=Loader)
    c = yaml.load(
        f,
        Loader=Loader)
    # yaml.load(f)
    return yaml.load(open(f).read())
"""


def git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def make_repo(path, files):
    path.mkdir(parents=True)
    git(path, "init", "-q")
    git(path, "config", "user.email", "t@example.invalid")
    git(path, "config", "user.name", "t")
    for name, text in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        git(path, "add", name)
    return path


def commit(path, message="c"):
    git(path, "commit", "-q", "-m", message)
    return git(path, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """A tiny 'PyTorch' with a tag, two submodules (one readable from a mirror) and a missing blob."""
    base = tmp_path_factory.mktemp("upstream")
    mirror = make_repo(base / "mirrors" / "someone+floorlib" / "repo",
                       {"CMakeLists.txt": "cmake_minimum_required(VERSION 3.1)\n",
                        "sub/CMakeLists.txt": "cmake_minimum_required(VERSION 2.8.12)\n"})
    floorlib = commit(mirror)
    repo = make_repo(base / "pytorch", {
        "setup.py": SETUP_PY,
        "tools/setup_helpers/nvtoolext.py": NVTOOLEXT_PY,
        "tools/setup_helpers/cuda.py": CUDA_PY,
        "tools/build_pytorch_libs.sh": BUILD_SH,
        "tools/build_pytorch_libs.bat": BUILD_BAT,
        "CMakeLists.txt": TOP_CMAKE,
        "torch/lib/libshm/CMakeLists.txt": "cmake_minimum_required(VERSION 2.6)\n",
        "aten/CMakeLists.txt": "  cmake_minimum_required(VERSION 3.0)\n",
        "cmake/Dependencies.cmake": "if($ENV{TORCH_CUDA_ARCH_LIST})\nendif()\n",
        "aten/src/ATen/cwrap_parser.py": CWRAP_PARSER,
        "gone.py": "import os\nos.getenv('NEVER_SEEN')\n",
        ".gitmodules": ('[submodule "third_party/floorlib"]\n\tpath = third_party/floorlib\n'
                        '\turl = https://github.com/someone/floorlib.git\n'
                        '[submodule "third_party/dead"]\n\tpath = third_party/dead\n'
                        '\turl = https://github.com/gone/dead.git\n'),
    })
    dead = "1234567890abcdef1234567890abcdef12345678"
    git(repo, "update-index", "--add", "--cacheinfo", "160000,%s,third_party/floorlib" % floorlib)
    git(repo, "update-index", "--add", "--cacheinfo", "160000,%s,third_party/dead" % dead)
    sha = commit(repo)
    git(repo, "tag", "v2.0.0")
    # A mirror without some blobs: remove one loose object.
    blob = git(repo, "rev-parse", "HEAD:gone.py")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    variants = base / "variants.yaml"
    variants.write_text(yaml.safe_dump({"pytorch_version": ["2.0.0"], "pytorch_commit": [sha]}))
    facts = table.extract(tree.Git(repo), "2.0.0", sha, mirrors=base / "mirrors")
    return {"repo": repo, "sha": sha, "variants": variants, "mirrors": base / "mirrors", "facts": facts,
            "floorlib": floorlib, "dead": dead}


# ---- the extractor on a real repository ------------------------------------------------------------------

def test_release_tag_commit_and_declared_version(upstream):
    facts = upstream["facts"]
    assert (facts["release"], facts["tag"], facts["commit"]) == ("2.0.0", "v2.0.0", upstream["sha"])
    assert (facts["declared_version"], facts["declared_version_file"]) == ("2.0.0a0", "setup.py")
    assert facts["python_requires"] == ">=3.5"
    assert facts["source"] == table.SOURCE
    assert facts["distutils_vc_env_calls"] == ["tools/setup_helpers/cuda.py:7"]


def test_env_vars_are_the_reads_of_each_group(upstream):
    env = upstream["facts"]["env_vars"]
    assert env["setup.py"] == ["DEBUG", "FROM_IN", "MAX_JOBS"]  # not NO_ (a prefix), not the comment
    assert env["tools/setup_helpers"] == ["CC", "CUDA_HOME", "CUDA_LIB", "NVTOOLSEXT_PATH"]  # not WRITTEN_ONLY
    assert env["cmake"] == ["MAGMA_HOME", "TORCH_CUDA_ARCH_LIST"]
    by_script = upstream["facts"]["env_vars_by_build_script"]
    # Read before the script assigns them: inputs. LOCAL_ONLY / FOO are the script's own; \$ORIGIN is literal;
    # %CD% is cmd's; a rem line is not code.
    assert by_script["tools/build_pytorch_libs.sh"] == ["CFLAGS", "CMAKE_INSTALL", "LDFLAGS"]
    assert by_script["tools/build_pytorch_libs.bat"] == ["CMAKE_GENERATOR", "MAX_JOBS"]
    assert env["tools/build_pytorch_libs"] == ["CFLAGS", "CMAKE_GENERATOR", "CMAKE_INSTALL", "LDFLAGS",
                                               "MAX_JOBS"]
    assert upstream["facts"]["env_var_prefix_reads"] == {"setup.py": ["setup.py:6: 'NO_' + var"]}


def test_submodules_with_their_gitlinks(upstream):
    assert upstream["facts"]["submodules"] == [
        {"path": "third_party/dead", "url": "https://github.com/gone/dead.git", "commit": upstream["dead"]},
        {"path": "third_party/floorlib", "url": "https://github.com/someone/floorlib.git",
         "commit": upstream["floorlib"]},
    ]


def test_submodule_floors_from_a_mirror_or_said_unreadable(upstream):
    dead, floorlib = upstream["facts"]["submodule_cmake_floors"]
    assert dead["path"] == "third_party/dead" and dead["version"] is None
    assert "not in any repository" in dead["unreadable"]
    assert floorlib["version"] == "3.1" and floorlib["file"] == "CMakeLists.txt"
    assert floorlib["lowest"] == {"version": "2.8.12", "file": "sub/CMakeLists.txt", "line": 1}
    assert floorlib["source"] == "github:someone/floorlib at %s" % upstream["floorlib"]


def test_submodule_mirror_found_case_insensitively_or_by_a_fork_of_the_same_name(upstream, tmp_path):
    """GitHub names ignore case (pytorch/fbgemm is pytorch+FBGEMM); 1.1.0 pins zdevito/sleef at a commit
    shibatch/sleef holds."""
    repo = make_repo(tmp_path / "r", {".gitmodules": (
        '[submodule "a"]\n\tpath = a\n\turl = https://github.com/SomeOne/FloorLib\n'
        '[submodule "b"]\n\tpath = b\n\turl = git@github.com:forker/floorlib.git\n')})
    for path in ("a", "b"):
        git(repo, "update-index", "--add", "--cacheinfo", "160000,%s,%s" % (upstream["floorlib"], path))
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo), mirrors=upstream["mirrors"])
    got = [(e["path"], e["version"], e["source"].split(" ")[0]) for e in facts["submodule_cmake_floors"]]
    assert got == [("a", "3.1", "github:someone/floorlib"), ("b", "3.1", "github:someone/floorlib")]


def test_cmake_floors_highest_lowest_and_below_3_5(upstream):
    floors = upstream["facts"]["cmake_minimum_required"]
    assert floors["highest"] == {"version": "3.5", "file": "CMakeLists.txt", "line": 1}
    assert floors["lowest"] == {"version": "2.6", "file": "torch/lib/libshm/CMakeLists.txt", "line": 1}
    assert floors["below_3_5"] == [{"version": "3.0", "file": "aten/CMakeLists.txt", "line": 1},
                                   {"version": "2.6", "file": "torch/lib/libshm/CMakeLists.txt", "line": 1}]


def test_bare_yaml_load_calls_only(upstream):
    assert upstream["facts"]["bare_yaml_load"] == [
        {"file": "aten/src/ATen/cwrap_parser.py", "line": 3},
        {"file": "aten/src/ATen/cwrap_parser.py", "line": 9},
    ]


def test_nvtoolsext_env_var_default_and_the_failure_when_missing(upstream):
    nvtx = upstream["facts"]["nvtoolsext"]
    assert nvtx["env_var"] == "NVTOOLSEXT_PATH"
    assert nvtx["default_path"] == "C:/Program Files/NVIDIA Corporation/NvToolsExt"
    assert nvtx["default_path_at"] == ["tools/setup_helpers/nvtoolext.py:2"]
    assert nvtx["required_on_windows_cuda"] is True and nvtx["env_var_honoured"] is True
    assert nvtx["files"] == ["setup.py", "tools/setup_helpers/nvtoolext.py"]
    assert "setup.py:30 (under if USE_CUDA: if IS_WINDOWS:)" in nvtx["how"] and "TypeError" in nvtx["how"]


def test_nvtoolsext_read_but_unused_is_not_honoured(tmp_path):
    repo = make_repo(tmp_path / "r", {
        "tools/setup_helpers/nvtoolext.py": NVTOOLEXT_PY,
        "torch/CMakeLists.txt": ('if (NOT NVTOOLEXT_HOME)\n  set(NVTOOLEXT_HOME "C:/Program Files/NVIDIA '
                                 'Corporation/NvToolsExt")\nendif()\nif ($ENV{NVTOOLEXT_HOME})\nendif()\n'
                                 'set(L ${NVTOOLEXT_HOME}/lib/x64/nvToolsExt64_1.lib)\n')})
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo))
    nvtx = facts["nvtoolsext"]
    assert nvtx["required_on_windows_cuda"] is True  # the link needs it
    assert nvtx["env_var_honoured"] is False  # nothing uses what NVTOOLSEXT_PATH gives
    assert "no build file uses NVTOOLEXT_HOME" in nvtx["how"]
    assert "torch/CMakeLists.txt:6 links nvToolsExt64_1.lib" in nvtx["how"]
    assert facts["tag"] is None and facts["declared_version"] is None


def test_ninja_decision(upstream):
    ninja = upstream["facts"]["ninja"]
    assert ninja["python_module_probe"] is True and ninja["path_probe"] is False
    assert ninja["reads_cmake_generator"] is True
    assert ninja["reads_cmake_generator_in"] == ["tools/build_pytorch_libs"]
    assert ninja["files"] == ["setup.py", "tools/build_pytorch_libs.bat"]
    assert "setup.py:14 imports the Python module `ninja`" in ninja["how"]
    assert "(under if not IS_WINDOWS: if USE_NINJA:) sets CMAKE_GENERATOR" in ninja["how"]


def test_missing_blobs_are_recorded_not_fatal(upstream):
    assert upstream["facts"]["unreadable"] == ["gone.py"]
    assert upstream["facts"]["missing_blobs"] == ["gone.py"]
    assert "NEVER_SEEN" not in json.dumps(upstream["facts"]["env_vars"])


def test_nvtoolsext_from_cmake_when_the_variable_is_defined(tmp_path):
    """1.2.0 and later: CMake itself takes NVTOOLSEXT_PATH, tested with DEFINED (which works for a path)."""
    repo = make_repo(tmp_path / "r", {"cmake/public/cuda.cmake": (
        'if(NOT NVTOOLEXT_HOME)\n  set(NVTOOLEXT_HOME "C:/Program Files/NVIDIA Corporation/NvToolsExt")\n'
        'endif()\nif(DEFINED ENV{NVTOOLSEXT_PATH})\n  set(NVTOOLEXT_HOME $ENV{NVTOOLSEXT_PATH})\nendif()\n'
        'set(L ${NVTOOLEXT_HOME}/lib/x64/nvToolsExt64_1.lib)\n')})
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo))
    nvtx = facts["nvtoolsext"]
    assert (nvtx["env_var"], nvtx["env_var_honoured"], nvtx["required_on_windows_cuda"]) == (
        "NVTOOLSEXT_PATH", True, True)
    assert "cmake/public/cuda.cmake:4 takes the folder from NVTOOLSEXT_PATH when it is set" in nvtx["how"]
    assert facts["env_vars"]["cmake"] == ["NVTOOLSEXT_PATH"]


def test_version_txt_when_setup_py_declares_none(tmp_path):
    repo = make_repo(tmp_path / "r", {"setup.py": ("version = open('version.txt').read()\n"
                                                   "setup(python_requires='>=2.7, !=3.0.*', name='torch')\n"),
                                      "version.txt": "1.6.0a0\n"})
    facts = table.extract(tree.Git(repo), "1.6.0", commit(repo))
    assert (facts["declared_version"], facts["declared_version_file"]) == ("1.6.0a0", "version.txt")
    assert facts["python_requires"] == ">=2.7, !=3.0.*"


def test_dll_directory_calls_of_torchs_import(tmp_path):
    """Python 3.8 on Windows: where torch/__init__.py hands its DLL folders to os.add_dll_directory."""
    init = ("import os\n# os.add_dll_directory(p) would be needed on 3.8\nif sys.version_info >= (3, 8):\n"
            "    for p in dll_paths:\n        os.add_dll_directory(p)\n")
    repo = make_repo(tmp_path / "r", {"setup.py": "version = '1.5.0a0'\n", "torch/__init__.py": init,
                                      "tools/other.py": "os.add_dll_directory(x)\n"})
    facts = table.extract(tree.Git(repo), "1.5.0", commit(repo))
    assert facts["windows_dll_directory_calls"] == ["torch/__init__.py:5"]
    repo = make_repo(tmp_path / "old", {"setup.py": "version = '1.4.0a0'\n",
                                        "torch/__init__.py": "os.environ['PATH'] = ';'.join(dll_paths)\n"})
    assert table.extract(tree.Git(repo), "1.4.0", commit(repo))["windows_dll_directory_calls"] == []


def test_python_requires_built_from_python_min_version(tmp_path):
    """1.7 on: python_requires='>={}'.format(python_min_version_str)."""
    repo = make_repo(tmp_path / "r", {"setup.py": ("python_min_version = (3, 6, 2)\nversion = '1.7.0a0'\n"
                                                   "setup(python_requires='>={}'.format(python_min_version_str))\n")})
    facts = table.extract(tree.Git(repo), "1.7.1", commit(repo))
    assert facts["python_requires"] == ">=3.6.2"


SELECT_ARCH = 'set(CUDA_KNOWN_GPU_ARCHITECTURES "Kepler")\nset(CUDA_COMMON_GPU_ARCHITECTURES "%s" "5.0")\n'
GUARDED = ("__device__ T load(const T* p) {\n#if __CUDA_ARCH__ >= 350\n  return __ldg(p);\n#else\n"
           "  return *p;\n#endif\n}\n__device__ Half __ldg(const Half* p);\n// __ldg(p) in a comment\n")


@pytest.mark.parametrize("common,sources,oldest,unguarded", [
    ("3.0", {"aten/src/THC/Load.cuh": GUARDED}, "3.0", []),
    ("3.0", {"aten/src/THC/Load.cuh": GUARDED, "caffe2/utils/math/elementwise.cu":
             "#ifdef USE_X\n#endif\n__global__ void k(const float* x) { y = __ldg(x + 1); }\n"},
     "3.5", ["caffe2/utils/math/elementwise.cu:3"]),
    ("3.5", {"aten/src/THC/Load.cuh": GUARDED}, "3.5", []),
    # An __ldg in an #else branch of an arch test is not guarded by it.
    ("3.0", {"c10/util/L.h": "#if __CUDA_ARCH__ < 350\n#else\n  return __ldg(p);\n#endif\n"},
     "3.5", ["c10/util/L.h:3"]),
])
def test_oldest_gpu_architecture_from_the_cmake_list_and_unguarded_ldg(tmp_path, common, sources, oldest,
                                                                        unguarded):
    """__ldg needs compute capability 3.2: one call outside an __CUDA_ARCH__ test stops a 3.0 compile."""
    files = {"cmake/Modules_CUDA_fix/upstream/FindCUDA/select_compute_arch.cmake": SELECT_ARCH % common,
             "torch/csrc/jit/codegen.cpp": 'env.s("access", format("__ldg(&t.data[i])", env));\n'}
    files.update(sources)
    repo = make_repo(tmp_path / "r", files)
    arch = table.extract(tree.Git(repo), "9.9.9", commit(repo))["cuda_arch"]
    assert (arch["oldest"], arch["unguarded_ldg"], arch["cmake_common_oldest"]) == (oldest, unguarded, common)
    assert arch["generated_ldg"] == ["torch/csrc/jit/codegen.cpp:1"]  # run-time kernels: not a build stopper
    assert arch["cmake_common_at"].endswith("select_compute_arch.cmake:2")


CUDA_CMAKE_GCC = """\
# CUDA 9.0 & 9.1 require GCC version <= 5
if((CUDA_VERSION VERSION_EQUAL   9.0) OR
    (CUDA_VERSION VERSION_GREATER 9.0  AND CUDA_VERSION VERSION_LESS 9.2))
  if(CMAKE_C_COMPILER_ID STREQUAL "GNU" AND
      NOT CMAKE_C_COMPILER_VERSION VERSION_LESS 6.0 AND
      CUDA_HOST_COMPILER STREQUAL CMAKE_C_COMPILER)
    message(FATAL_ERROR
      "CUDA ${CUDA_VERSION} is not compatible with std::tuple from GCC version "
      ">= 6. Please upgrade to CUDA 9.2 or set the following environment ")
  endif()
endif()
"""


def test_host_gcc_the_cmake_refuses_per_cuda(tmp_path):
    repo = make_repo(tmp_path / "r", {"cmake/public/cuda.cmake": CUDA_CMAKE_GCC})
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo))
    assert facts["cuda_host_gcc"] == {"cuda_from": "9.0", "cuda_below": "9.2", "gcc_below": "6.0",
                                      "unless_env": "CUDAHOSTCXX", "at": "cmake/public/cuda.cmake:2"}
    repo = make_repo(tmp_path / "s", {"cmake/public/cuda.cmake": "find_package(CUDA)\n"})
    assert table.extract(tree.Git(repo), "9.9.9", commit(repo))["cuda_host_gcc"] is None


def test_committed_tables_name_the_oldest_architecture_with_its_evidence():
    for path in sorted(TABLES.glob("*.json")):
        arch = json.loads(path.read_text())["cuda_arch"]
        assert arch["oldest"] in ("3.0", "3.5"), path.name
        assert (arch["oldest"] == "3.0") == (arch["cmake_common_oldest"] == "3.0" and not arch["unguarded_ldg"])


# ---- the command: write, check, bad input ------------------------------------------------------------------

def run_cli(capsys, *args):
    code = main(["upstream-facts", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_one_deterministic_table_per_release(upstream, tmp_path, capsys):
    out = tmp_path / "tables"
    args = ("--repo", upstream["repo"], "--variants", upstream["variants"], "--out", out,
            "--submodule-mirrors", upstream["mirrors"])
    assert run_cli(capsys, *args)[0] == 0
    first = (out / "2.0.0.json").read_text()
    assert run_cli(capsys, *args)[0] == 0
    assert (out / "2.0.0.json").read_text() == first
    assert sorted(p.name for p in out.iterdir()) == ["2.0.0.json"]  # no temp file left
    assert first == json.dumps(json.loads(first), indent=2, sort_keys=True) + "\n"
    assert json.loads(first)["declared_version"] == "2.0.0a0"


def test_check_reports_each_difference_and_exits_1(upstream, tmp_path, capsys):
    out = tmp_path / "tables"
    base = ("--repo", upstream["repo"], "--variants", upstream["variants"], "--out", out,
            "--submodule-mirrors", upstream["mirrors"])
    run_cli(capsys, *base)
    assert run_cli(capsys, *base, "--check")[0] == 0
    facts = json.loads((out / "2.0.0.json").read_text())
    facts["declared_version"] = "2.0.0"
    facts["env_vars"]["setup.py"].append("INVENTED")
    (out / "2.0.0.json").write_text(table.render(facts))
    (out / "7.7.7.json").write_text("{}\n")
    code, stdout, err = run_cli(capsys, *base, "--check")
    assert code == 1
    lines = stdout.splitlines()
    assert '2.0.0.json: declared_version: table "2.0.0", upstream "2.0.0a0"' in lines
    assert "2.0.0.json: env_vars.setup.py: upstream no longer has INVENTED" in lines
    assert any(line.startswith("7.7.7.json: no such release") for line in lines)
    assert err.count("\n") == 1 and "3 difference(s)" in err


def test_check_without_the_submodule_mirror_notes_what_it_could_not_check(upstream, tmp_path, capsys):
    out = tmp_path / "tables"
    run_cli(capsys, "--repo", upstream["repo"], "--variants", upstream["variants"], "--out", out,
            "--submodule-mirrors", upstream["mirrors"])
    code, stdout, _ = run_cli(capsys, "--repo", upstream["repo"], "--variants", upstream["variants"],
                              "--out", out, "--check")
    assert code == 0
    assert "note: 2.0.0: submodule third_party/floorlib floor not checked" in stdout


@pytest.mark.parametrize("args, message", [
    (("--repo", "{tmp}/nowhere"), "--repo {tmp}/nowhere: not a git repository"),
    (("--release", "0.1.2"), "--release 0.1.2: not in"),
    (("--ref", "v9.9.9"), "--ref v9.9.9: no such commit or tag"),
])
def test_bad_input_is_one_line_and_exit_2(upstream, tmp_path, capsys, args, message):
    argv = ["--repo", upstream["repo"], "--variants", upstream["variants"], "--out", tmp_path / "t"]
    argv += [a.format(tmp=tmp_path) for a in args]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and message.format(tmp=tmp_path) in err
    assert not (tmp_path / "t").exists()


def test_a_pinned_commit_the_repository_lacks_is_bad_input(upstream, tmp_path, capsys):
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump({"pytorch_version": ["3.0.0"], "pytorch_commit": ["ab" * 20]}))
    code, _, err = run_cli(capsys, "--repo", upstream["repo"], "--variants", variants, "--out", tmp_path / "t")
    assert code == 2 and "commit %s of release 3.0.0 is not in this repository" % ("ab" * 20) in err


def test_ref_prints_the_facts_of_any_tag(upstream, capsys):
    code, out, _ = run_cli(capsys, "--repo", upstream["repo"], "--ref", "v2.0.0")
    assert code == 0
    facts = json.loads(out)
    assert (facts["release"], facts["commit"]) == ("2.0.0", upstream["sha"])


# ---- the committed tables, always ----------------------------------------------------------------------------

def pinned():
    table = yaml.safe_load(VARIANTS.read_text())
    return list(zip(table["pytorch_version"], table["pytorch_commit"]))


def test_every_release_in_the_matrix_has_its_table_and_no_other():
    names = sorted("%s.json" % p.table for p in table.pins(VARIANTS))
    assert sorted(p.name for p in TABLES.glob("*")) == names
    # 0.3's Windows builds come from the 2017 fork: a second table each, named for the platform.
    assert {"0.3.0.json", "0.3.0-win-64.json", "0.3.1.json", "0.3.1-win-64.json"} <= set(names)


@pytest.mark.parametrize("release, commit", pinned())
def test_table_matches_the_pinned_commit_and_is_generator_output(release, commit):
    text = (TABLES / ("%s.json" % release)).read_text()
    facts = json.loads(text)
    assert (facts["release"], facts["commit"], facts["tag"]) == (release, commit, "v" + release)
    assert facts["repository"] == table.UPSTREAM_URL and facts["source"] == table.SOURCE
    assert text == table.render(facts)  # sorted keys, 2-space indent, trailing newline
    for key in ("declared_version", "declared_version_file", "env_vars", "submodules", "cmake_minimum_required",
                "bare_yaml_load", "nvtoolsext", "ninja", "python_requires", "windows_dll_directory_calls",
                "unreadable"):
        assert key in facts, (release, key)


FORK_PINS = [p for p in table.pins(VARIANTS) if p.platform]


@pytest.mark.parametrize("pin", FORK_PINS, ids=[p.table for p in FORK_PINS])
def test_a_forks_table_records_its_repository_commit_and_build_scripts(pin):
    """0.3's win-64 tables: read from peterjc123/pytorch at the pinned commit, not upstream's tag."""
    text = (TABLES / ("%s.json" % pin.table)).read_text()
    facts = json.loads(text)
    assert (facts["release"], facts["commit"], facts["tag"]) == (pin.release, pin.commit, None)
    assert facts["repository"] == pin.repository == "https://github.com/peterjc123/pytorch"
    assert pin.commit in facts["source"] and "branch v%s_win" % pin.release in facts["source"]
    assert text == table.render(facts)
    # The fork's setup.py runs torch\lib\build_libs.bat, which picks Ninja from CMAKE_GENERATOR and
    # takes -j from NUMBER_OF_PROCESSORS; CUDA comes from CUDA_PATH on Windows.
    assert "torch/lib/build_libs.bat" in facts["env_vars_by_build_script"]
    bat = facts["build_scripts"]["torch/lib/build_libs.bat"]
    assert bat["reads_cmake_generator"] and bat["make_at"] == []
    assert [j["value"] for j in bat["jobs"]] == ["%NUMBER_OF_PROCESSORS%"]
    assert {"CUDA_PATH", "NO_CUDA", "NO_CUDNN", "CUDNN_LIB_DIR", "CUDNN_INCLUDE_DIR", "NVTOOLSEXT_PATH"} <= set(
        facts["env_vars"]["tools/setup_helpers"])
    assert {"CC", "CXX", "CMAKE_GENERATOR"} <= set(facts["env_vars"]["torch/lib/build_libs"])
    assert facts["nvtoolsext"]["required_on_windows_cuda"]
    assert [s["path"] for s in facts["submodules"]] == ["torch/lib/gloo", "torch/lib/nanopb", "torch/lib/pybind11"]


@pytest.mark.parametrize("release", ["0.3.0", "0.3.1"])
def test_upstream_03_tags_build_their_libraries_with_make(release):
    """v0.3.x's torch/lib/build_libs.sh runs `make install -j$(getconf ...)` whatever CMAKE_GENERATOR says."""
    facts = json.loads((TABLES / ("%s.json" % release)).read_text())
    script = facts["build_scripts"]["torch/lib/build_libs.sh"]
    assert script["make_at"] and not script["reads_cmake_generator"]
    assert [j["value"] for j in script["jobs"]] == ["$(getconf _NPROCESSORS_ONLN)"]
    assert not facts["ninja"]["reads_cmake_generator"]
    assert {"NO_CUDA", "NO_CUDNN", "NO_NNPACK", "NO_SYSTEM_NCCL", "CUDA_HOME"} <= set(
        facts["env_vars"]["tools/setup_helpers"])
    assert "NO_DISTRIBUTED" in facts["env_vars"]["setup.py"]


def test_build_scripts_record_make_calls_and_job_counts(tmp_path):
    repo = make_repo(tmp_path / "p", {
        "setup.py": "version = '0.3.0b0'\n",
        "torch/lib/build_libs.sh": "#!/bin/bash\nCMAKE_INSTALL=${CMAKE_INSTALL-make install}\n"
                                   "  make install -j$(getconf _NPROCESSORS_ONLN)\n# make -j9\n",
        "torch/lib/build_libs.bat": 'IF "%CMAKE_GENERATOR%"=="Ninja" (\n'
                                    "  set MAKE_COMMAND=cmake --build . -- -j%NUMBER_OF_PROCESSORS%\n)\n",
    })
    facts = table.extract(tree.Git(repo), "0.3.0", commit(repo))
    assert facts["build_scripts"] == {
        "torch/lib/build_libs.bat": {"jobs": [{"at": "torch/lib/build_libs.bat:2", "value": "%NUMBER_OF_PROCESSORS%"}],
                                     "make_at": [], "reads_cmake_generator": True},
        "torch/lib/build_libs.sh": {"jobs": [{"at": "torch/lib/build_libs.sh:3",
                                              "value": "$(getconf _NPROCESSORS_ONLN)"}],
                                    "make_at": ["torch/lib/build_libs.sh:3"], "reads_cmake_generator": False}}
    assert facts["env_vars"]["torch/lib/build_libs"] == ["CMAKE_GENERATOR", "CMAKE_INSTALL", "NUMBER_OF_PROCESSORS"]
    assert facts["ninja"]["reads_cmake_generator_in"] == ["torch/lib/build_libs"]


def test_a_fork_commit_is_read_from_the_repo_holding_it(upstream, tmp_path, capsys):
    """--repo repeats: a fork's commit (pytorch_git_win / pytorch_commit_win) comes from the fork's clone."""
    fork = make_repo(tmp_path / "fork", {"setup.py": "version = '2.0.0b0'\n"})
    sha = commit(fork)
    git(fork, "branch", "-q", "v2.0.0_win")
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump({"pytorch_version": ["2.0.0"], "pytorch_commit": [upstream["sha"]],
                                        "pytorch_git_win": ["https://github.com/someone/pytorch.git"],
                                        "pytorch_commit_win": [sha]}))
    out = tmp_path / "t"
    base = ("--variants", variants, "--out", out)
    code, _, err = run_cli(capsys, "--repo", upstream["repo"], *base)
    assert code == 2 and "commit %s of release 2.0.0 (https://github.com/someone/pytorch, for win-64) is in none" \
        % sha in err and not out.exists()
    assert run_cli(capsys, "--repo", upstream["repo"], "--repo", fork, *base)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["2.0.0-win-64.json", "2.0.0.json"]
    win = json.loads((out / "2.0.0-win-64.json").read_text())
    assert (win["commit"], win["repository"], win["declared_version"]) == (
        sha, "https://github.com/someone/pytorch", "2.0.0b0")
    assert "tip of branch" in win["source"] and "v2.0.0_win" in win["source"]
    assert json.loads((out / "2.0.0.json").read_text())["repository"] == "https://github.com/pytorch/pytorch"
    assert run_cli(capsys, "--repo", upstream["repo"], "--repo", fork, *base, "--check")[0] == 0
    win["commit"] = "0" * 40
    (out / "2.0.0-win-64.json").write_text(table.render(win))
    code, stdout, _ = run_cli(capsys, "--repo", upstream["repo"], "--repo", fork, *base, "--check")
    assert code == 1 and "2.0.0-win-64.json: commit:" in stdout


@pytest.mark.parametrize("extra, message", [
    ({"pytorch_git_win": ["https://x/y.git"], "pytorch_commit_win": [""]}, "must both be set or both empty"),
    ({"pytorch_git_win": ["https://x/y.git"], "pytorch_commit_win": ["abc"]}, "is not a 40-hex commit"),
    ({"pytorch_git_win": [], "pytorch_commit_win": []}, "must be lists as long as pytorch_version"),
])
def test_bad_fork_pins_are_bad_input(upstream, tmp_path, capsys, extra, message):
    variants = tmp_path / "variants.yaml"
    variants.write_text(yaml.safe_dump(dict({"pytorch_version": ["2.0.0"], "pytorch_commit": [upstream["sha"]]},
                                            **extra)))
    code, _, err = run_cli(capsys, "--repo", upstream["repo"], "--variants", variants, "--out", tmp_path / "t")
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "t").exists()


# ---- opt-in: regenerate from a real upstream clone ------------------------------------------------------------

@pytest.mark.skipif(not os.environ.get("TORCHWIN_UPSTREAM_REPO"),
                    reason="set TORCHWIN_UPSTREAM_REPO to a local upstream PyTorch clone to check the tables")
def test_tables_match_upstream(capsys):
    args = ["--repo", os.environ["TORCHWIN_UPSTREAM_REPO"], "--check"]
    # 0.3's Windows tables come from the 2017 fork (TORCHWIN_FORK_REPO); without it they cannot be checked.
    if os.environ.get("TORCHWIN_FORK_REPO"):
        args += ["--repo", os.environ["TORCHWIN_FORK_REPO"]]
    else:
        forked = {p.release for p in FORK_PINS}
        for release in dict.fromkeys(p.release for p in table.pins(VARIANTS)):
            args += [] if release in forked else ["--release", release]
    if os.environ.get("TORCHWIN_UPSTREAM_SUBMODULE_MIRRORS"):
        args += ["--submodule-mirrors", os.environ["TORCHWIN_UPSTREAM_SUBMODULE_MIRRORS"]]
    code, out, err = run_cli(capsys, *args)
    assert code == 0, out + err


def test_each_release_builds_only_pythons_its_source_allows():
    """variants.yaml's Pythons against the tables: every one within setup.py's python_requires, and
    Python 3.8 on Windows exactly where `import torch` calls os.add_dll_directory (3.8 there no longer
    finds torch's DLLs through PATH)."""
    from packaging.specifiers import SpecifierSet

    data = yaml.safe_load(VARIANTS.read_text())
    windows_38 = []
    for index, release in enumerate(data["pytorch_version"]):
        facts = json.loads((TABLES / ("%s.json" % release)).read_text())
        allowed = SpecifierSet(facts["python_requires"] or "")
        for suffix in ("win", "linux"):
            for python in data["pytorch_python_" + suffix][index].split():
                assert python + ".99" in allowed, (release, suffix, python, facts["python_requires"])
        win = data["pytorch_python_win"][index].split()
        if win:
            assert ("3.8" in win) == bool(facts["windows_dll_directory_calls"]), (release, win)
            windows_38 += [release] if "3.8" in win else []
    assert windows_38, "no release builds Python 3.8 on Windows"


# ---- what the build links (issue 24): MKL, MKL-DNN, the MSVC limit per CUDA, the cuDNN check -------------

FIND_MKL = """\
IF (WIN32)
ENDIF (WIN32)
IF ("${SIZE_OF_VOIDP}" EQUAL 8)
  SET(mkl64s "_lp64")
ELSE ("${SIZE_OF_VOIDP}" EQUAL 8)
  SET(mkl64s)
ENDIF ("${SIZE_OF_VOIDP}" EQUAL 8)
IF(CMAKE_COMPILER_IS_GNUCC)
  SET(mklthreads "mkl_gnu_thread" "mkl_intel_thread")
  SET(mklifaces  "intel" "gf")
ELSE(CMAKE_COMPILER_IS_GNUCC)
  IF ("${MKL_THREADING}" STREQUAL "TBB")
    SET(mklthreads "mkl_tbb_thread")
  ELSE()
    SET(mklthreads "mkl_intel_thread")
    SET(mklrtls "iomp5" "guide")
    IF (MSVC)
      SET(mklrtls "libiomp5md")
    ENDIF (MSVC)
  ENDIF()
  SET(mklifaces  "intel")
ENDIF (CMAKE_COMPILER_IS_GNUCC)
MACRO(CHECK_ALL_LIBRARIES LIBRARIES _name _list _flags)
  FIND_LIBRARY(${_prefix}_${_library}_LIBRARY NAMES ${_library})
ENDMACRO(CHECK_ALL_LIBRARIES)
CHECK_ALL_LIBRARIES(MKL_LIBRARIES cblas_sgemm "mkl_${mkliface}${mkl64};${mklthread};mkl_core;${mklrtl}" "")
"""

FIND_MKLDNN_MSVC = """\
SET(MKLDNN_LIBRARIES)
IF(MSVC)
  MESSAGE(STATUS "MKL-DNN needs omp 3+ which is not supported in MSVC so far")
  RETURN()
ENDIF(MSVC)
SET(IDEEP_ROOT "${PROJECT_SOURCE_DIR}/third_party/ideep")
"""

CUDA_CMAKE_MSVC = """\
if((CUDA_VERSION VERSION_EQUAL   9.0) OR
    (CUDA_VERSION VERSION_GREATER 9.0  AND CUDA_VERSION VERSION_LESS 9.2))
  if(CMAKE_CXX_COMPILER_ID STREQUAL "MSVC" AND
      NOT CMAKE_CXX_COMPILER_VERSION VERSION_LESS 19.12 AND
      NOT DEFINED ENV{CUDAHOSTCXX})
        message(FATAL_ERROR "CUDA ${CUDA_VERSION} is not compatible")
  endif()
elseif(CUDA_VERSION VERSION_EQUAL   9.2)
  if(CMAKE_CXX_COMPILER_ID STREQUAL "MSVC" AND
      NOT CMAKE_CXX_COMPILER_VERSION VERSION_LESS 19.14 AND
      NOT DEFINED ENV{CUDAHOSTCXX})
    message(FATAL_ERROR "CUDA ${CUDA_VERSION} is not compatible")
  endif()
endif()
"""

CUDNN_04 = """\
            compile_version = torch._C._cudnn_version()
            # Check that cuDNN major and minor versions match
            if (__cudnn_version // 100) != (compile_version // 100):
                raise RuntimeError('cuDNN version mismatch')
"""
CUDNN_1X = """\
            elif runtime_major < 7:
                cudnn_compatible = runtime_minor == compile_minor
            else:
                cudnn_compatible = runtime_minor >= compile_minor
"""
CUDA_INIT_04 = """\
    old_gpu_warn = '''
    Found GPU%d %s which is of cuda capability %d.%d.
    PyTorch no longer supports this GPU because it is too old.
    '''
    for d in range(device_count()):
        if CUDA_VERSION < 8000 and major >= 6:
            pass
        elif capability == (3, 0) or major < 3:
            warnings.warn(old_gpu_warn % (d, name, major, capability[1]))
"""


def test_linking_facts_from_the_build_files(tmp_path):
    repo = make_repo(tmp_path / "r", {
        "cmake/Modules/FindMKL.cmake": FIND_MKL,
        # Caffe2's own FindMKL of 0.4.0 (no CHECK_ALL_LIBRARIES) is not the one torch's build uses.
        "aten/FindMKL.cmake": "# Find the MKL libraries\n",
        "cmake/Modules/FindMKLDNN.cmake": FIND_MKLDNN_MSVC,
        "cmake/public/cuda.cmake": CUDA_CMAKE_MSVC,
        "torch/backends/cudnn/__init__.py": CUDNN_04,
        "torch/cuda/__init__.py": CUDA_INIT_04,
    })
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo))
    assert facts["mkl"] == {
        "find_module": "cmake/Modules/FindMKL.cmake",
        "msvc_libraries": ["mkl_intel_lp64", "mkl_intel_thread", "mkl_core"], "msvc_openmp": "libiomp5md",
        "looks_for_dll_import_libraries": False,
        "at": {"mkl64s": "cmake/Modules/FindMKL.cmake:4", "mklthreads": "cmake/Modules/FindMKL.cmake:15",
               "mklrtls": "cmake/Modules/FindMKL.cmake:18", "mklifaces": "cmake/Modules/FindMKL.cmake:21"}}
    assert facts["mkldnn"] == {"find_module": "cmake/Modules/FindMKLDNN.cmake", "bundled": True,
                               "msvc_returns_early_at": "cmake/Modules/FindMKLDNN.cmake:2"}
    assert facts["cuda_msvc_limits"] == [
        {"cuda_from": "9.0", "cuda_below": "9.2", "msvc_below": "19.12", "unless_env": "CUDAHOSTCXX",
         "at": "cmake/public/cuda.cmake:3"},
        {"cuda_from": "9.2", "cuda_below": "9.3", "msvc_below": "19.14", "unless_env": "CUDAHOSTCXX",
         "at": "cmake/public/cuda.cmake:9"}]
    assert facts["cudnn_version_check"] == {"rule": "same_minor", "at": "torch/backends/cudnn/__init__.py:3"}
    arch = facts["cuda_arch"]
    # 0.4.x warns for 3.0 without the message's "minimum ... is 3.5".
    assert (arch["runtime_warning_for"], arch["runtime_warning_at"], arch["runtime_warning_below"]) == (
        ["3.0", "below 3.0"], "torch/cuda/__init__.py:8", None)


def test_linking_facts_absent_or_lenient(tmp_path):
    repo = make_repo(tmp_path / "r", {
        "cmake/Modules/FindMKLDNN.cmake": "find_library(MKLDNN_LIBRARY mkldnn)\n",
        "torch/backends/cudnn/__init__.py": CUDNN_1X,
    })
    facts = table.extract(tree.Git(repo), "9.9.9", commit(repo))
    assert facts["mkl"] is None and facts["cuda_msvc_limits"] == []
    assert facts["mkldnn"] == {"find_module": "cmake/Modules/FindMKLDNN.cmake", "bundled": False,
                               "msvc_returns_early_at": None}
    assert facts["cudnn_version_check"] == {"rule": "minor_at_least", "at": "torch/backends/cudnn/__init__.py:4"}


def committed(release):
    return json.loads((TABLES / ("%s.json" % release)).read_text())


def test_committed_tables_record_what_the_build_links():
    """The per-release facts issue 24 found, as read from each tag."""
    for release, _ in pinned():
        facts = committed(release)
        assert facts["mkl"]["msvc_libraries"] == ["mkl_intel_lp64", "mkl_intel_thread", "mkl_core"], release
        assert facts["mkl"]["looks_for_dll_import_libraries"] is False, release
        version = tuple(int(x) for x in release.split("."))
        # 0.4.x: 3.0 warned about at run time too (was null: the warning has no "minimum" sentence there).
        # 0.3.0's _check_capability warns only about a CUDA too old for a new GPU; 0.3.1 added the old-GPU one.
        assert bool(facts["cuda_arch"]["runtime_warning_at"]) == (release != "0.3.0"), release
        assert ("3.0" in facts["cuda_arch"]["runtime_warning_for"]) == (release != "0.3.0"), release
        rule = facts["cudnn_version_check"]["rule"]
        assert rule == ("same_minor" if version < (1, 0) else "minor_at_least"), release
        if version < (0, 4):
            assert facts["mkldnn"] is None, release  # 0.3 has no MKL-DNN to find
            assert facts["cuda_msvc_limits"] == [], release
            continue
        early = facts["mkldnn"]["msvc_returns_early_at"]
        # "Enable mkldnn on windows" (19bb496a0d) is in v1.5.0, not v1.4.0; 0.4.x looks for an installed one.
        assert bool(early) == (release in ("1.0.0", "1.0.1", "1.1.0", "1.2.0", "1.3.0", "1.3.1", "1.4.0")), release
        assert facts["mkldnn"]["bundled"] == (not release.startswith("0.4")), release
        limit_92 = [x["msvc_below"] for x in facts["cuda_msvc_limits"] if x["cuda_from"] == "9.2"]
        expected = [] if version < (1, 2) else ["19.14"] if version >= (1, 6) else ["19.13"]
        assert limit_92 == expected, release

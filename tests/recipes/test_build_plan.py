"""build_driver.py --plan for every release x platform x CUDA the recipe renders, judged by upstream's facts.

Each case builds a source tree from the committed table (recipes/pytorch/upstream/<release>.json:
the declared version in the file upstream declares it in, every submodule the build fetches non-empty)
and a machine at its edge: a CUDA toolkit folder (an nvcc stub on Linux, `version.txt` where nvcc.exe
cannot run), cuDNN's header, NvToolsExt's library, ninja on PATH and the `ninja` module in the host
prefix. The driver runs as the recipe runs it, with the script environment the engine renders.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "recipes" / "pytorch"
DRIVER = RECIPE / "build_driver.py"
sys.path.insert(0, str(ROOT / "scripts"))

from torchwin import recipes  # noqa: E402

FACTS = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((RECIPE / "upstream").glob("*.json"))}
# The releases: a table per tag, plus <release>-win-64 where win-64 builds another repository's commit (0.3's fork).
RELEASES = {f["release"] for f in FACTS.values()}


def facts_for(release, platform):
    """The table the driver reads for this release on this platform."""
    return FACTS.get("%s-%s" % (release, platform)) or FACTS[release]


def build_script(facts, platform):
    """The facts of the native build script setup.py runs on this platform (0.3's torch/lib/build_libs.*)."""
    suffix = ".bat" if platform == "win-64" else ".sh"
    return next((v for k, v in sorted(facts.get("build_scripts", {}).items()) if k.endswith(suffix)), {})


def runs_make(facts, platform):
    script = build_script(facts, platform)
    return bool(script.get("make_at")) and not script.get("reads_cmake_generator")
SKIPPED_FILE = RECIPE / "submodules_skipped.json"
SKIPPED = json.loads(SKIPPED_FILE.read_text(encoding="utf-8")) if SKIPPED_FILE.exists() else {}
ON_WINDOWS = sys.platform == "win32"
NEW_MSVC = "14.16.27023"


def rendered_builds():
    """{(release, platform, cuda): the rendered pytorch variant}, Python versions folded (the driver ignores them)."""
    builds = {}
    for v in recipes.render([RECIPE], ["win-64", "linux-64"]):
        if v.name == "pytorch":
            key = (v.variant["pytorch_version"], v.target_platform, v.variant["cuda_compiler_version"])
            builds.setdefault(key, v)
    return builds


BUILDS = rendered_builds()
BUILD_IDS = ["%s-%s-%s" % (r, p, "cpu" if c == "None" else "cuda" + c) for r, p, c in sorted(BUILDS)]


def script_env(variant):
    return dict(variant.rendered.recipe.build.to_dict()["script"]["env"])


def write(path, text="", executable=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IEXEC | stat.S_IXGRP | stat.S_IXOTH)


def source_tree(root, facts, declared=None):
    """A checkout as the source step leaves it: the declared version, every fetched submodule non-empty."""
    name = facts["declared_version_file"]
    version = declared or facts["declared_version"]
    write(root / name, version + "\n" if name.endswith("version.txt") else "version = '%s'\n" % version)
    skipped = SKIPPED.get(facts["release"], {})
    for module in facts["submodules"]:
        if module["path"] not in skipped:
            write(root / module["path"] / "CMakeLists.txt", "# %s\n" % module["commit"])
    return root


class Machine:
    """A build machine laid out under one folder; `environ` is what the engine hands the build script."""

    def __init__(self, root, key):
        self.root = root
        self.release, self.platform, self.cuda = key
        self.facts = facts_for(self.release, self.platform)
        self.windows = self.platform == "win-64"
        self.variant = BUILDS[key]
        self.src = source_tree(root / "src", self.facts)
        self.prefix = root / "h_env"
        # The host requirement `ninja` carries the module setup.py imports.
        site = ("Lib/site-packages" if self.windows else "lib/python3.6/site-packages")
        write(self.prefix / site / "ninja" / "__init__.py")
        write(root / "bin" / "ninja", "#!/bin/sh\n", executable=True)
        # The build requirement `make`, where the recipe asks for it (0.3's build_libs.sh runs make).
        if "make" in names(self.variant.build_requirements):
            write(root / "bin" / "make", "#!/bin/sh\n", executable=True)
        self.environ = dict(script_env(self.variant))
        self.environ.update({
            "PATH": str(root / "bin"), "SRC_DIR": str(self.src), "PREFIX": str(self.prefix),
            "RECIPE_DIR": str(RECIPE), "PYTHON": sys.executable, "MAX_JOBS": "3",
            "SYSTEMROOT": os.environ.get("SYSTEMROOT", r"C:\Windows"),
        })
        if self.windows:
            self.environ["LIBRARY_PREFIX"] = str(self.prefix / "Library")
            self.environ["VCToolsVersion"] = "14.11.25503"
            # mkl-devel's Windows import libraries, as FindMKL (with the recipe's patch) finds them.
            for name in ("mkl_intel_lp64_dll.lib", "mkl_intel_thread_dll.lib", "mkl_core_dll.lib", "mkl_rt.lib"):
                write(self.prefix / "Library" / "lib" / name)
        if self.cuda != "None":
            self.add_cuda()

    def add_cuda(self):
        if self.windows:
            self.cuda_home = self.root / "CUDA" / ("v" + self.cuda)
            write(self.cuda_home / "bin" / "nvcc.exe")  # cannot run here: version.txt says the version
            write(self.cuda_home / "version.txt", "CUDA Version %s.176\n" % self.cuda)
            self.nvtx = self.root / "NvToolsExt"
            write(self.nvtx / "lib" / "x64" / "nvToolsExt64_1.lib")
            write(self.nvtx / "include" / "nvToolsExt.h")
            self.environ["NVTOOLSEXT_PATH"] = str(self.nvtx)
            # The installer's variable, with the trailing separator setup.py would stumble on.
            self.environ["CUDA_PATH_V" + self.cuda.replace(".", "_")] = str(self.cuda_home) + os.sep
            if self.facts["nvtoolsext"].get("env_var_honoured", True) is False:
                self.add_default_nvtoolsext()
        else:
            # The machine's gcc (linux_host_gcc: system): 5, which every release's CMake accepts with CUDA 9.0/9.1.
            write(self.root / "bin" / "gcc", "#!/bin/sh\necho 5.4.0\n", executable=True)
            self.cuda_home = self.root / ("cuda-" + self.cuda)
            write(self.cuda_home / "bin" / "nvcc",
                  "#!/bin/sh\necho 'Cuda compilation tools, release %s, V%s.176'\n" % (self.cuda, self.cuda),
                  executable=True)
            self.environ["CUDA_HOME"] = str(self.cuda_home) + "/"
        write(self.cuda_home / "include" / "cudnn.h", "#define CUDNN_MAJOR 7\n#define CUDNN_MINOR 1\n")
        # What `torchwin ci install-cuda` exports with that cuDNN; the recipe's run pin follows it.
        self.environ["TORCHWIN_CUDNN_COMPILED"] = "7.1"

    def add_default_nvtoolsext(self):
        # Under --plan, TORCHWIN_PLAN_PROGRAM_FILES stands for C:\Program Files, where upstream's fixed folder is.
        self.program_files = self.root / "Program Files"
        self.environ["TORCHWIN_PLAN_PROGRAM_FILES"] = str(self.program_files)
        default = self.facts["nvtoolsext"]["default_path"].replace("\\", "/")
        assert default.lower().startswith("c:/program files/"), default
        self.default_nvtx = self.program_files / default[len("c:/program files/"):]
        write(self.default_nvtx / "lib" / "x64" / "nvToolsExt64_1.lib")
        write(self.default_nvtx / "include" / "nvToolsExt.h")

    def run(self, *args, plan=True):
        command = [sys.executable, str(DRIVER)] + (["--plan", "--json", "--platform", self.platform] if plan else [])
        return subprocess.run(command + list(args), cwd=self.root, env=self.environ, capture_output=True,
                              text=True, timeout=120)

    def plan(self):
        out = self.run()
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def refused(self, *expected):
        """The one line the driver prints when the build would fail; --plan and the build say the same."""
        lines = []
        for plan in (True, False):
            if not plan and self.windows != ON_WINDOWS:
                continue  # the build itself runs only on its own platform
            out = self.run(plan=plan)
            assert out.returncode == 1, (out.stdout, out.stderr)
            assert out.stdout == "" and "Traceback" not in out.stderr
            assert out.stderr.count("\n") == 1 and out.stderr.startswith("torchwin build driver: error: ")
            for text in expected:
                assert text in out.stderr, out.stderr
            lines.append(out.stderr)
        assert len(set(lines)) == 1
        return lines[0]


def snapshot(root):
    return sorted((str(p), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_the_matrix_is_the_rendered_one():
    """Every release of variants.yaml, both platforms, CPU and CUDA builds: nothing typed here."""
    assert {r for r, _, _ in BUILDS} == RELEASES
    # A platform table only where that platform builds; its release's tag table always.
    for name, facts in FACTS.items():
        if name != facts["release"]:
            assert any(r == facts["release"] and name == "%s-%s" % (r, p) for r, p, _ in BUILDS), name
    assert {p for _, p, _ in BUILDS} == {"win-64", "linux-64"}
    assert any(c != "None" for _, _, c in BUILDS) and any(c == "None" for _, _, c in BUILDS)


@pytest.mark.parametrize("key", sorted(BUILDS), ids=BUILD_IDS)
def test_plan_of_every_rendered_build(tmp_path, key):
    machine = Machine(tmp_path, key)
    before = snapshot(tmp_path)
    result = machine.plan()
    assert snapshot(tmp_path) == before, "--plan wrote something"
    env, facts = result["env"], machine.facts
    assert result["release"] == machine.release and result["platform"] == machine.platform
    if facts["repository"] == "https://github.com/pytorch/pytorch":
        assert env["PYTORCH_BUILD_VERSION"] == machine.variant.version
    else:  # a fork's commit: what it declares, with the commit as a PEP 440 local version
        assert env["PYTORCH_BUILD_VERSION"] == "%s+%s" % (facts["declared_version"], facts["commit"][:7])
    assert env["MAX_JOBS"] == "3"
    use_cuda = machine.cuda != "None"
    assert env["NO_CUDA"] == ("0" if use_cuda else "1")
    # 0.x reads NO_* only; 1.x reads USE_* too.
    assert ("USE_CUDA" in env) == (not machine.release.startswith("0."))
    # Each switch passed is one the release reads (0.3 reads neither NO_MKLDNN nor NO_TEST).
    reads = set().union(*facts["env_vars"].values())
    if machine.release.startswith("0.3."):
        assert {k for k in env if k.startswith("NO_")} <= reads
    # The releases whose build script reads CMAKE_GENERATOR get Ninja; 0.3's build_libs.sh runs make
    # (CMake must generate Makefiles); the others find ninja on PATH.
    if runs_make(facts, machine.platform):
        assert env["CMAKE_GENERATOR"] == "Unix Makefiles"
    else:
        assert env.get("CMAKE_GENERATOR") == ("Ninja" if facts["ninja"]["reads_cmake_generator"] else None)
    assert "CMAKE_CUDA_COMPILER_LAUNCHER" not in env
    if use_cuda:
        home = str(machine.cuda_home)
        assert env["CUDA_PATH"] == env["CUDA_HOME"] == home  # trailing separator gone
        assert os.path.basename(env["CUDA_PATH"]) == ("v" + machine.cuda if machine.windows else "cuda-" + machine.cuda)
        assert env["CUDNN_INCLUDE_DIR"] == os.path.join(home, "include")
        assert env["TORCH_CUDA_ARCH_LIST"]
        if machine.windows:
            assert env["NVTOOLSEXT_PATH"] == str(machine.nvtx)
    else:
        assert "CUDA_HOME" not in env and "NVTOOLSEXT_PATH" not in env
    if machine.windows:
        assert env["DISTUTILS_USE_SDK"] == "1" and env["NO_DISTRIBUTED"] == "1"
    # The win-* patches (FindMKL's *_dll names) on Windows only.
    patches = [os.path.join(str(RECIPE), p) for p in machine.variant.variant["pytorch_patches"].split()
               if machine.windows or not p.startswith("patches/win-")]
    assert result["commands"] == [c for p in patches for c in (["git", "apply", "--check", p], ["git", "apply", p])] + [
        [sys.executable, "setup.py", "install", "--single-version-externally-managed", "--record=record.txt"]]
    jobs = [j for j in build_script(facts, machine.platform).get("jobs", ())
            if "MAX_JOBS" not in j["value"] and "NUMBER_OF_PROCESSORS" not in j["value"]]
    assert result["warnings"] == ["%s gives make -j%s (%s), not MAX_JOBS=3: the libraries build with one job per CPU"
                                  % (j["at"].split(":")[0], j["value"], j["at"]) for j in jobs]
    if any("NUMBER_OF_PROCESSORS" in j["value"] for j in build_script(facts, machine.platform).get("jobs", ())):
        assert env["NUMBER_OF_PROCESSORS"] == "3"  # build_libs.bat's only job count


def first(predicate):
    for key in sorted(BUILDS):
        if predicate(*key):
            return key
    raise AssertionError("the recipe renders no such build")


RELEASE_PLATFORMS = sorted({(r, p) for r, p, _ in BUILDS})


@pytest.mark.parametrize("release, platform", RELEASE_PLATFORMS)
def test_a_tree_declaring_another_version_is_refused(tmp_path, release, platform):
    machine = Machine(tmp_path, first(lambda r, p, c: r == release and p == platform))
    other = next(f["declared_version"] for f in FACTS.values() if f["declared_version"] != machine.facts["declared_version"])
    source_tree(machine.src, machine.facts, declared=other)
    if machine.facts["tag"]:
        machine.refused("declares %s" % other, "PyTorch %s's tag declares %s" % (release, machine.facts["declared_version"]))
    else:  # the fork's commit
        machine.refused("declares %s" % other, "the commit PyTorch %s builds here (%s at %s) declares %s" % (
            release, machine.facts["repository"], machine.facts["commit"], machine.facts["declared_version"]))


def test_0_4_1_tree_declares_0_5_0a0_and_plans_as_0_4_1(tmp_path):
    """The v0.4.1 tag's setup.py says 0.5.0a0; the old check refused every 0.4.1 build."""
    assert FACTS["0.4.1"]["declared_version"] == "0.5.0a0"
    machine = Machine(tmp_path, first(lambda r, p, c: r == "0.4.1"))
    assert (machine.src / "setup.py").read_text() == "version = '0.5.0a0'\n"
    assert machine.plan()["env"]["PYTORCH_BUILD_VERSION"] == "0.4.1"


def test_a_1_0_0_tree_under_the_1_1_0_variant_is_refused(tmp_path):
    machine = Machine(tmp_path, first(lambda r, p, c: r == "1.1.0"))
    for child in machine.src.iterdir():
        if child.is_file():
            child.unlink()
    source_tree(machine.src, FACTS["1.0.0"])
    machine.refused("declares %s" % FACTS["1.0.0"]["declared_version"], "check out v1.1.0")


@pytest.mark.parametrize("release, platform", RELEASE_PLATFORMS)
def test_an_empty_submodule_is_refused(tmp_path, release, platform):
    machine = Machine(tmp_path, first(lambda r, p, c: r == release and p == platform))
    skipped = SKIPPED.get(release, {})
    needed = [m["path"] for m in machine.facts["submodules"] if m["path"] not in skipped]
    (machine.src / needed[0] / "CMakeLists.txt").unlink()
    machine.refused("submodule %s is empty or missing" % needed[0])


def test_skipped_submodules_may_be_absent(tmp_path):
    """submodules_skipped.json names what the source step does not fetch; the tree lacks it and plans."""
    release = next((r for r in sorted(SKIPPED) if SKIPPED[r] and r in FACTS), None)
    if release is None:
        pytest.skip("no release skips a submodule")
    machine = Machine(tmp_path, first(lambda r, p, c: r == release))
    for path in SKIPPED[release]:
        assert not (machine.src / path).exists()
    machine.plan()


def test_no_facts_for_the_release_is_refused(tmp_path):
    machine = Machine(tmp_path, first(lambda r, p, c: True))
    machine.environ["RECIPE_DIR"] = str(tmp_path / "empty-recipe")
    machine.refused("no upstream facts for PyTorch %s" % machine.release, "upstream-facts")


CUDA_BUILDS = sorted(k for k in BUILDS if k[2] != "None")
WIN_CUDA = [k for k in CUDA_BUILDS if k[1] == "win-64"]


def package_test_env(variant):
    """The environment of the recipe's run_test.py test of this variant."""
    tests = variant.rendered.recipe.to_dict()["tests"]
    return next(t["script"]["env"] for t in tests if "run_test.py" in str(t.get("script", {}).get("content")))


@pytest.mark.parametrize("key", CUDA_BUILDS, ids=lambda k: "-".join(k))
def test_the_package_test_expects_every_architecture_the_build_compiles(tmp_path, key):
    """One source: the driver's rule and the release's facts give both TORCH_CUDA_ARCH_LIST and the
    list run_test.py checks the installed package against."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("torchwin_run_test", RECIPE / "run_test.py")
    run_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_test)
    machine = Machine(tmp_path, key)
    env = package_test_env(machine.variant)
    promised = run_test.expected_archs(env["TORCHWIN_EXPECT_ARCHS"], env["TORCHWIN_EXPECT_VARIANT"], "env")
    compiled = machine.plan()["env"]["TORCH_CUDA_ARCH_LIST"]
    assert promised == compiled
    oldest = machine.facts["cuda_arch"]["oldest"]
    assert compiled.startswith(oldest + ";") and compiled.endswith("+PTX"), compiled


@pytest.mark.parametrize("key", CUDA_BUILDS, ids=lambda k: "-".join(k))
def test_missing_cudnn_is_refused(tmp_path, key):
    machine = Machine(tmp_path, key)
    (machine.cuda_home / "include" / "cudnn.h").unlink()
    machine.refused("cuDNN", "no cudnn.h in %s" % (machine.cuda_home / "include"))


@pytest.mark.parametrize("key", WIN_CUDA, ids=lambda k: "-".join(k))
def test_missing_nvtoolsext_on_windows_cuda_is_refused(tmp_path, key):
    machine = Machine(tmp_path, key)
    (machine.nvtx / "lib" / "x64" / "nvToolsExt64_1.lib").unlink()
    machine.refused("NvToolsExt", "NVTOOLSEXT_PATH")


FIXED_NVTX = [k for k in WIN_CUDA if facts_for(k[0], k[1])["nvtoolsext"].get("env_var_honoured", True) is False]


@pytest.mark.skipif(ON_WINDOWS, reason="the build (not --plan) would probe this machine's own Program Files")
@pytest.mark.parametrize("key", FIXED_NVTX, ids=lambda k: "-".join(k))
def test_release_linking_nvtoolsext_from_its_fixed_folder_is_refused_without_it(tmp_path, key):
    """NVTOOLSEXT_PATH alone does not do for these (1.1.0): its CMake links from the default folder."""
    machine = Machine(tmp_path, key)
    assert machine.plan()["env"]["NVTOOLSEXT_PATH"] == str(machine.nvtx)
    (machine.default_nvtx / "lib" / "x64" / "nvToolsExt64_1.lib").unlink()
    machine.refused("links NvToolsExt only from", "ignores NVTOOLSEXT_PATH")


def gcc_refused(key):
    rule = facts_for(key[0], key[1]).get("cuda_host_gcc")
    return bool(rule) and rule["cuda_from"] <= key[2] < rule["cuda_below"]


LINUX_STRICT_GCC = [k for k in CUDA_BUILDS if k[1] == "linux-64" and gcc_refused(k)]


@pytest.mark.parametrize("key", LINUX_STRICT_GCC, ids=lambda k: "-".join(k))
def test_gcc_the_releases_cmake_refuses_for_this_cuda_is_refused(tmp_path, key):
    """cmake/public/cuda.cmake (0.4.1 on) stops CUDA 9.0/9.1 with gcc >= 6, stricter than NVIDIA's limit."""
    machine = Machine(tmp_path, key)
    write(tmp_path / "bin" / "gcc", "#!/bin/sh\necho 6.5.0\n", executable=True)
    machine.refused("stops CUDA %s builds with gcc 6.0 or newer" % key[2], "is gcc 6.5.0", "CUDAHOSTCXX")
    # A gcc 5 named as nvcc's host compiler is what that CMake asks for.
    machine.environ["CUDAHOSTCXX"] = "/opt/gcc5/bin/g++"
    assert machine.plan()["warnings"] == []


def test_the_strict_gcc_rule_is_in_the_facts_from_0_4_1_on():
    assert LINUX_STRICT_GCC and not FACTS["0.4.0"]["cuda_host_gcc"]
    assert not any(FACTS[r]["cuda_host_gcc"] for r in FACTS if r.startswith(("0.3.", "0.4.0")))
    assert {FACTS[r]["cuda_host_gcc"]["gcc_below"] for r in RELEASES if version_key(r) >= (0, 4, 1)} == {"6.0"}


@pytest.mark.parametrize("key", WIN_CUDA, ids=lambda k: "-".join(k))
def test_msvc_toolset_too_new_is_refused(tmp_path, key):
    machine = Machine(tmp_path, key)
    machine.environ["VCToolsVersion"] = NEW_MSVC
    machine.refused("VCToolsVersion is %s" % NEW_MSVC, "-vcvars_ver=14.11")


@pytest.mark.parametrize("key", CUDA_BUILDS, ids=lambda k: "-".join(k))
def test_toolkit_of_another_cuda_is_refused(tmp_path, key):
    machine = Machine(tmp_path, key)
    wrong = "8.0" if machine.cuda != "8.0" else "9.0"
    write(machine.cuda_home / "version.txt", "CUDA Version %s.61\n" % wrong)
    write(machine.cuda_home / "bin" / "nvcc", "#!/bin/sh\necho 'Cuda compilation tools, release %s, V%s.61'\n"
          % (wrong, wrong), executable=True)
    machine.refused("CUDA %s was requested" % machine.cuda, "CUDA %s" % wrong)


PROBING = sorted({(r, p) for r, p, _ in BUILDS if p == "linux-64" and facts_for(r, p)["ninja"]["python_module_probe"]})


def test_some_release_picks_ninja_by_importing_it():
    """The facts say which: 0.4.1 and 1.0.x on Linux fall back to make without the module."""
    assert PROBING


@pytest.mark.parametrize("release, platform", PROBING)
def test_linux_release_that_imports_ninja_is_refused_without_the_module(tmp_path, release, platform):
    machine = Machine(tmp_path, first(lambda r, p, c: r == release and p == platform))
    (machine.prefix / "lib" / "python3.6" / "site-packages" / "ninja" / "__init__.py").unlink()
    machine.refused("imports the Python module `ninja`", "make")


def test_ninja_missing_from_path_is_refused(tmp_path):
    machine = Machine(tmp_path, first(lambda r, p, c: not facts_for(r, p)["ninja"]["python_module_probe"]
                                      and not runs_make(facts_for(r, p), p)))
    (tmp_path / "bin" / "ninja").unlink()
    machine.refused("ninja is not on PATH")


MAKE_BUILDS = sorted({(r, p) for r, p, _ in BUILDS if runs_make(facts_for(r, p), p)})


def test_make_is_a_build_requirement_exactly_where_the_build_script_runs_it():
    """0.3's torch/lib/build_libs.sh runs `make install` itself; no other build script does."""
    assert MAKE_BUILDS == [("0.3.0", "linux-64"), ("0.3.1", "linux-64")]
    for (release, platform, _), variant in BUILDS.items():
        assert ("make" in names(variant.build_requirements)) == ((release, platform) in MAKE_BUILDS), (release, platform)


@pytest.mark.parametrize("release, platform", MAKE_BUILDS)
def test_a_build_script_running_make_is_refused_without_make(tmp_path, release, platform):
    machine = Machine(tmp_path, first(lambda r, p, c: r == release and p == platform))
    (tmp_path / "bin" / "make").unlink()
    machine.refused("runs `make` itself", "make is not on PATH")


def test_empty_host_variables_count_as_unset(tmp_path):
    """The recipe passes an unset host variable as "": FindCUDA would take an empty CUDA_NVCC_EXECUTABLE."""
    machine = Machine(tmp_path, first(lambda r, p, c: p == "linux-64" and c != "None"))
    machine.environ.update({"CUDA_NVCC_EXECUTABLE": "", "TORCH_CUDA_ARCH_LIST": "", "NVTOOLSEXT_PATH": "", "CC": ""})
    result = machine.plan()
    assert {"CUDA_NVCC_EXECUTABLE", "TORCH_CUDA_ARCH_LIST", "NVTOOLSEXT_PATH", "CC"} <= set(result["unset"])
    assert result["env"]["TORCH_CUDA_ARCH_LIST"] and "CUDA_NVCC_EXECUTABLE" not in result["env"]


@pytest.mark.skipif(ON_WINDOWS, reason="the fake setup.py run uses a POSIX layout")
def test_the_build_runs_the_planned_command_with_the_planned_environment(tmp_path):
    """Without --plan the driver runs the same plan: setup.py sees the planned variables."""
    machine = Machine(tmp_path, first(lambda r, p, c: p == "linux-64" and c == "None"))
    setup = machine.src / machine.facts["declared_version_file"]
    setup.write_text(setup.read_text() + "import os, sys\nprint('SETUP', sys.argv[1:], os.environ['NO_CUDA'], "
                     "os.environ['PYTORCH_BUILD_VERSION'], 'CUDA_NVCC_EXECUTABLE' in os.environ, 'CC' in os.environ)\n")
    machine.environ.update({"CUDA_NVCC_EXECUTABLE": "", "CC": ""})
    planned = machine.plan()
    out = subprocess.run([sys.executable, str(DRIVER)], cwd=machine.src, env=machine.environ, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "  NO_CUDA=1" in out.stdout
    assert "SETUP %s 1 %s False False" % (planned["commands"][-1][2:], machine.variant.version) in out.stdout


def test_usage_errors_exit_2(tmp_path):
    out = subprocess.run([sys.executable, str(DRIVER), "--plan", "--platform", "osx-64"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2 and "osx-64" in out.stderr
    out = subprocess.run([sys.executable, str(DRIVER), "--plan"], capture_output=True, text=True, timeout=120,
                         env={"PATH": "", "SYSTEMROOT": os.environ.get("SYSTEMROOT", r"C:\Windows")})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "TORCHWIN_PYTORCH_VERSION" in out.stderr


def names(requirements):
    return [r.split()[0] for r in requirements]


def spec(requirements, name):
    from rattler import MatchSpec, VersionSpec

    found = [r for r in requirements if r.split()[0] == name]
    assert len(found) == 1, (name, requirements)
    version = MatchSpec(found[0]).version
    assert version, "%s is unpinned: %s" % (name, found[0])
    return VersionSpec(version)


def version_key(text):
    return tuple(int(p) for p in text.split("."))


def just_below(text):
    """3.5 -> 3.4.999: the newest version a floor of `text` refuses."""
    parts = [int(p) for p in text.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    parts[-1] -= 1
    return ".".join(str(p) for p in parts) + ".999"


def test_cmake_and_pyyaml_pins_follow_the_facts():
    """CMake 4 refuses cmake_minimum_required below 3.5; PyYAML 6 refuses a bare yaml.load."""
    from rattler import Version

    highest = max((f["cmake_minimum_required"]["highest"]["version"] for f in FACTS.values()), key=version_key)
    below_3_5 = any(f["cmake_minimum_required"]["below_3_5"] for f in FACTS.values())
    bare_yaml_load = any(f["bare_yaml_load"] for f in FACTS.values())
    for key, variant in BUILDS.items():
        cmake = spec(variant.build_requirements, "cmake")
        assert cmake.matches(Version(highest)), key
        assert not cmake.matches(Version(just_below(highest))), key
        if below_3_5:
            assert not cmake.matches(Version("4.0.0")) and not cmake.matches(Version("4.1.2")), key
        pyyaml = spec(variant.host_requirements, "pyyaml")
        assert pyyaml.matches(Version("5.4.1")), key
        if bare_yaml_load:
            assert not pyyaml.matches(Version("6.0")) and not pyyaml.matches(Version("6.0.2")), key


def test_every_build_gets_ninja_the_way_its_release_looks_for_it():
    for (release, platform, _), variant in BUILDS.items():
        assert "ninja" in names(variant.build_requirements)  # the executable, on PATH
        if FACTS[release]["ninja"]["python_module_probe"]:
            assert "ninja" in names(variant.host_requirements), (release, platform)  # the module setup.py imports


def test_script_env_passes_every_host_variable_the_driver_reads(monkeypatch):
    """Recent rattler-build filters the build script's environment: the recipe names each one."""
    import importlib.util

    loader = importlib.util.spec_from_file_location("build_driver", DRIVER)
    driver = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(driver)
    cudas = {c for _, _, c in BUILDS if c != "None"}
    assert {"CUDA_PATH_V" + c.replace(".", "_") for c in cudas} <= set(driver.host_variables())
    for name in driver.host_variables():
        monkeypatch.setenv(name, "from-host-" + name)
    for variant in recipes.render([RECIPE], ["win-64", "linux-64"]):
        if variant.name != "pytorch":
            continue
        env = script_env(variant)
        for name in driver.host_variables():
            assert env.get(name) == "from-host-" + name, (name, variant.target_platform)
        assert env["TORCHWIN_RELEASE"] == variant.variant["pytorch_version"]


def test_a_nightly_plans_any_tree_with_its_rows_facts(tmp_path, monkeypatch):
    """A nightly builds a moving ref: no version or submodule check, the release row's facts for the rest."""
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20190601")
    nightlies = [v for v in recipes.render([RECIPE], ["linux-64"]) if v.name == "pytorch" and ".dev" in v.version]
    assert nightlies
    variant = nightlies[0]
    monkeypatch.delenv("TORCHWIN_NIGHTLY")
    machine = Machine(tmp_path, (variant.variant["pytorch_version"], "linux-64",
                                 variant.variant["cuda_compiler_version"]))
    machine.environ.update(script_env(variant))
    write(machine.src / "version.txt", "1.2.0a0\n")
    write(machine.src / "setup.py", "print()\n")
    out = machine.run("--plan", plan=False)  # the text form
    assert out.returncode == 0, out.stderr
    assert "PYTORCH_BUILD_VERSION=%s" % variant.version in out.stdout
    assert "command: %s setup.py install" % sys.executable in out.stdout
    assert "warning: nightly %s: the source is not checked" % variant.version in out.stderr

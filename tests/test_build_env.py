"""What a build script sees, measured with both engines: py-rattler-build (`torchwin build`) and conda-build.

Two small probe recipes are written by the tests:
- an environment probe whose Python build script writes the variables it sees to a file, once without
  and once with them listed in `script.env` (issue 12: which of the variables the pytorch build needs
  reach the script; recipes/pytorch/README.md has the table these tests measure);
- an activation probe with nvcc_linux-64 9.0 in its build requirements (from a channel `torchwin
  build` makes), built with a matching and a mismatched CUDA toolkit (fakes at the edge: an nvcc
  stub and a gcc 6 stub, as in test_toolchain_activation.py): a failed activation must stop the build.
The conda-build halves need a real conda (see test_real_conda.py) and skip without one.
"""

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import yaml
from test_real_conda import CONDA, conda
from test_toolchain_activation import fake_gcc, fake_toolkit
from torchwin.cli import main

pytest.importorskip("rattler_build")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the probes use POSIX paths and sh stubs")

ROOT = Path(__file__).resolve().parents[1]
# What recipes/pytorch's build and its activations read from the machine (issue 12), and one unrelated name.
PROBED = ("CUDA_PATH_V9_0", "NVTOOLSEXT_PATH", "CUDNN_ROOT", "MAX_JOBS", "SCCACHE_DIR", "TORCH_CUDA_ARCH_LIST",
          "CC", "CXX", "VCToolsVersion", "FOO")
HOST_VALUES = {name: "probe-%s" % name.lower() for name in PROBED}
needs_conda = pytest.mark.skipif(not CONDA, reason="no real conda: set TORCHWIN_TEST_CONDA (see test_real_conda.py)")


def env_probe_recipe(folder: Path, listed: bool) -> Path:
    """A recipe whose build script writes {name: value or None} of PROBED to folder/seen.json."""
    folder.mkdir(parents=True)
    script = {
        "interpreter": "python",
        "content": "import json, os\n"
                   "names = %r\n"
                   "with open(%r, 'w') as f:\n"
                   "    json.dump({n: os.environ.get(n) for n in names}, f)\n" % (list(PROBED),
                                                                             str(folder / "seen.json")),
    }
    if listed:
        script["env"] = {name: '${{ env.get("%s", default="") }}' % name for name in PROBED}
    recipe = {"schema_version": 1, "package": {"name": "envprobe", "version": "1.0"},
              "build": {"number": 0, "script": script}}
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


def torchwin_build(recipe: Path, channel: Path, *extra):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["build", str(recipe), "--target-platform", "linux-64", "--channel-dir", str(channel),
                     "--no-test", *extra])
    return code, out.getvalue()


def conda_build(recipe: Path, out_dir: Path, *channels, env=None, check=True):
    args = ["build", str(recipe), "--output-folder", str(out_dir), "--no-anaconda-upload", "--no-test"]
    if channels:
        args += ["--override-channels"]
        for channel in channels:
            args += ["-c", channel.resolve().as_uri()]
    return conda(*args, env=env, check=check)


ENGINES = ["py-rattler-build", pytest.param("conda-build", marks=[needs_conda, pytest.mark.real_conda])]


def build_with(engine, recipe, tmp_path, channels=(), env=None):
    """Build recipe with one engine under env (added to this process's environment); (ok, output)."""
    if engine == "conda-build":
        out = conda_build(recipe, tmp_path / "conda-out", *channels, env=env, check=False)
        return out.returncode == 0, out.stdout + out.stderr
    extra = [arg for channel in channels for arg in ("--channel", channel.resolve().as_uri())]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (env or {}).items():
            patch.setenv(name, value)
        code, printed = torchwin_build(recipe, tmp_path / "tw-channel", *extra)
    return code == 0, printed


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("listed", [False, True], ids=["not-listed", "listed"])
def test_which_variables_reach_the_build_script(engine, listed, tmp_path):
    """Measured: none of them unless listed in script.env; every one when listed (both engines filter
    the environment: py-rattler-build's default isolation is strict, and conda-build 26 calls it so)."""
    recipe = env_probe_recipe(tmp_path / "envprobe", listed)
    ok, output = build_with(engine, recipe, tmp_path, env=HOST_VALUES)
    assert ok, output
    seen = json.loads((recipe / "seen.json").read_text())
    assert seen == (HOST_VALUES if listed else dict.fromkeys(PROBED)), seen


def test_the_pytorch_recipe_passes_what_its_build_reads_from_the_machine():
    """Each variable the driver and the nvcc/vs2017 activations read from the machine is listed in
    recipes/pytorch's script.env (else, as measured above, the build never sees it)."""
    text = (ROOT / "recipes" / "pytorch" / "recipe.yaml").read_text()
    listed = set()
    for output in yaml.safe_load(text)["outputs"]:
        script = (output.get("build") or {}).get("script") or {}
        if isinstance(script, dict):
            listed |= set(script.get("env") or {})
    needed = {"CUDA_PATH_V8_0", "CUDA_PATH_V9_0", "CUDA_PATH_V9_1", "CUDA_PATH_V9_2", "CUDA_HOME", "CUDA_PATH",
              "NVTOOLSEXT_PATH", "CUDNN_ROOT", "MAX_JOBS", "TORCH_CUDA_ARCH_LIST", "SCCACHE_DIR",
              # Linux CUDA 8.0/9.0/9.1 builds use the machine's gcc through CC/CXX (nvcc's activation checks it)
              "CC", "CXX",
              # vs2017_win-64's activation settings (README "Toolchain and build-selection packages")
              "TORCHWIN_VCVARS_VER", "TORCHWIN_ALLOW_NEWER_MSVC"}
    assert sorted(needed - listed) == []


# -- a failed activation stops the build -----------------------------------------------------------------

@pytest.fixture(scope="module")
def nvcc_channel(tmp_path_factory):
    channel = tmp_path_factory.mktemp("nvcc") / "channel"
    code, printed = torchwin_build(ROOT / "recipes" / "nvcc", channel, "--variant", "cuda_compiler_version=9.0")
    assert code == 0, printed
    return channel


def activation_probe_recipe(folder: Path) -> Path:
    """Needs nvcc_linux-64 9.0 at build time; its script records what the activation set."""
    folder.mkdir(parents=True)
    recipe = {
        "schema_version": 1,
        "package": {"name": "actprobe", "version": "1.0"},
        "build": {"number": 0, "script": {
            # The activation reads these from the machine; pass them as recipes/pytorch does.
            "env": {name: '${{ env.get("%s", default="") }}' % name for name in ("CUDA_PATH_V9_0", "CC")},
            "content": ['echo "CUDA_HOME=$CUDA_HOME" > "%s"' % (folder / "seen.txt")]}},
        "requirements": {"build": ["nvcc_linux-64 9.0.*"],
                         # its cudatoolkit run_export needs a defaults channel this probe does without
                         "ignore_run_exports": {"from_package": ["nvcc_linux-64"]}},
    }
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return folder


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_nvcc_activation_stops_the_build(engine, nvcc_channel, tmp_path):
    recipe = activation_probe_recipe(tmp_path / "actprobe")
    gcc = fake_gcc(tmp_path / "gcc6", "6.5.0")
    wrong = fake_toolkit(tmp_path / "wrong", "9.2")
    ok, output = build_with(engine, recipe, tmp_path, [nvcc_channel],
                            env={"CUDA_PATH_V9_0": str(wrong), "CC": str(gcc)})
    assert not ok, output
    assert not (recipe / "seen.txt").exists()
    # The matching toolkit builds, and the script sees what the activation set.
    right = fake_toolkit(tmp_path / "right", "9.0")
    ok, output = build_with(engine, recipe, tmp_path, [nvcc_channel],
                            env={"CUDA_PATH_V9_0": str(right), "CC": str(gcc)})
    assert ok, output
    assert (recipe / "seen.txt").read_text().strip() == "CUDA_HOME=%s" % right

"""Both package tests (recipes/pytorch/run_test.py, recipes/torchvision/run_test.py) on upstream's own
Linux wheels of every release x Python PyPI has (tests/recipes/upstream_wheels.py says which and what
each wheel is), on the CPU.

Opt-in, marker `upstream_wheels`: set TORCHWIN_WHEEL_CACHE to a folder outside the checkout (the wheels
are 0.5-0.8 GB each, ~22 GB in all), e.g.

    TORCHWIN_WHEEL_CACHE=/work/cache/upstream-wheels pytest -m upstream_wheels tests/recipes/test_upstream_wheels.py
    TORCHWIN_WHEEL_CACHE=/work/cache/upstream-wheels python tests/recipes/upstream_wheels.py   # the README tables

Wheels missing from the folder are downloaded (pip download, PyPI); each pair gets a virtual environment
under DIR/venvs, removed after its run unless TORCHWIN_WHEEL_KEEP_VENVS=1. pip runs with
PIP_CONFIG_FILE=/dev/null: a machine-wide pip configuration may constrain `torch` or add indexes.
The tests without the marker check the matrix and the committed tables and always run.
"""

import datetime
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import upstream_wheels as uw
from torchwin import recipes

ROOT = uw.ROOT
CACHE = os.environ.get(uw.CACHE_ENV, "")
PIP_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
INSTALL_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 1200


def release_key(release):
    return tuple(int(p) for p in release.split("."))


@pytest.fixture(scope="module")
def rendered():
    return recipes.render([ROOT / "recipes" / "pytorch", ROOT / "recipes" / "torchvision"], ["linux-64"])


# ---- always: the matrix and the committed tables -----------------------------------------------

def test_matrix_covers_every_paired_release_with_a_wheel():
    """Every torch release of recipes/torchvision/variants.yaml from 1.0.0 on has an upstream Linux wheel
    (PyPI has none for 0.4.x), and each has a CUDA version and Pythons on record."""
    pairs = uw.torchvision_pairs()
    assert set(uw.WHEEL_CUDA) == {r for r in pairs if release_key(r) >= (1, 0, 0)}
    assert set(uw.WHEEL_PYTHONS) == set(uw.WHEEL_CUDA) == set(uw.WHEEL_GPU_CODE)
    assert set(uw.VISION_GPU_CODE) == {pairs[r] for r in uw.WHEEL_CUDA}
    cells = uw.matrix()
    assert len(cells) == len(set(cells)) == 31
    assert {p for _, p in cells} <= set(uw.PYENV_PYTHONS)


@pytest.mark.parametrize("readme, which", [("pytorch", "pytorch"), ("torchvision", "torchvision")])
def test_readme_table_has_a_row_per_release_and_python(readme, which, rendered):
    """The committed table lists every release x Python of the matrix once, with a result or `not run`."""
    rows = uw.table_rows((ROOT / "recipes" / readme / "README.md").read_text())
    pairs = uw.torchvision_pairs()
    if which == "pytorch":
        got = [(r[0], r[1]) for r in rows]
        assert [r[2] for r in rows] == [uw.WHEEL_CUDA[t] for t, _ in got]
        assert [r[3] for r in rows] == [uw.gpu_code_note(t) for t, _ in got]
        results = [r[4] for r in rows]
        assert [r[5] for r in rows] == [uw.what_the_wheel_is(rendered, *cell) for cell in got]
    else:
        got = [(r[1], r[2]) for r in rows]
        assert [r[3] for r in rows] == [uw.VISION_GPU_CODE[pairs[t]] or "none" for t, _ in got]
        results = [r[4] for r in rows]
        assert [r[0] for r in rows] == [uw.PYPI_TORCHVISION.get(pairs[t], pairs[t]) for t, _ in got]
    assert got == uw.matrix()
    for cell in results:
        assert cell == "not run" or (cell.endswith("skipped") and " passed, " in cell), cell


def test_regenerating_keeps_the_results_the_cache_has_no_record_of(rendered):
    """A table rewritten where the cache lacks a run (another machine, a cleaned cache) keeps its result cell."""
    notes = {cell: "n" for cell in uw.matrix()}
    record = {"pytorch": {"passed": 1, "failed": 0, "skipped": 2}, "torchvision": {"passed": 3, "failed": 0,
                                                                                   "skipped": 0}}
    first = uw.table({("1.0.0", "3.6"): record}, "pytorch", notes)
    earlier = {(r[0], r[1]): r[4] for r in uw.table_rows("%s\n%s\n%s" % (uw.BEGIN, first, uw.END))}
    again = uw.table({}, "pytorch", notes, earlier)
    assert again == first and "| 1.0.0 | 3.6 |" in again and "1 passed, 0 failed, 2 skipped" in again
    assert uw.table({}, "pytorch", notes).count("not run") == len(uw.matrix())


def test_replace_table_refuses_a_readme_without_its_markers():
    with pytest.raises(SystemExit, match="expected one table between the markers"):
        uw.replace_table("no markers here", "| a |", "README.md")
    text = "intro\n%s\nold\n%s\nrest\n" % (uw.BEGIN, uw.END)
    assert uw.replace_table(text, "| new |", "README.md") == "intro\n%s\n| new |\n%s\nrest\n" % (uw.BEGIN, uw.END)


@pytest.mark.parametrize("spec, want", [
    ("numpy 1.15.*", "numpy==1.15.*"), ("pillow >=4.1.1,<7", "pillow>=4.1.1,<7"), ("six", "six"),
])
def test_conda_specs_become_pip_requirements(spec, want):
    assert uw.conda_to_pip(spec) == want


@pytest.mark.parametrize("release, python, want, unwanted", [
    ("1.0.1", "3.7", ["the wheel is CUDA 9.0.176, as torchwin's linux-64 cuda9.0 build",
                      "run_test.py skips the archs (torch lists them without a GPU from 1.6 on)"], ["no Python"]),
    ("1.7.1", "3.9", ["the wheel is CUDA 10.2, torchwin builds 1.7.1 for linux-64 as CUDA 9.0, CUDA 9.2 and CPU: "
                      "checked as the CUDA 10.2 build it is", "torchwin has no Python 3.9 row for 1.7.1",
                      "run_test.py checks the archs torch lists, 3.7;5.0;6.0;7.0;7.5"], []),
    ("1.4.0", "3.8", ["the wheel is CUDA 10.1, torchwin builds 1.4.0"], ["no Python"]),
])
def test_each_wheel_says_what_it_is_against_the_torchwin_rows(rendered, release, python, want, unwanted):
    """A wheel that is not what recipes/pytorch would build (CUDA 10 for a CUDA 9 row) says so."""
    text = uw.what_the_wheel_is(rendered, release, python)
    for part in want:
        assert part in text
    for part in unwanted:
        assert part not in text


def test_era_requirements_come_from_the_recipes(rendered):
    """numpy: the pin recipes/pytorch builds against for that Python, below 2; pillow/six/tqdm: torchvision's."""
    assert uw.era_requirements(rendered, "1.0.1", "3.6") == ["numpy==1.15.*,<2", "pillow>=4.1.1,<7", "six", "tqdm"]
    assert uw.era_requirements(rendered, "1.7.1", "3.8") == ["numpy==1.17.*,<2", "pillow>=4.1.1"]
    assert uw.era_requirements(rendered, "1.7.1", "3.9") == [uw.NUMPY_WITHOUT_ROW["3.9"], "pillow>=4.1.1"]


def fat_binary(entries):
    """A fat binary as nvcc embeds it: header, then (kind, arch) entries with a payload each."""
    body = b""
    for kind, arch in entries:
        payload = b"\xab" * 24
        header = struct.pack("<HHIQ", kind, 0x101, 64, len(payload)) + b"\0" * 12 + struct.pack("<I", arch)
        body += header + b"\0" * (64 - len(header)) + payload
    return struct.pack("<IHHQ", uw.FATBIN_MAGIC, 1, 16, len(body)) + body


def test_fatbin_reader_counts_machine_code_and_ptx():
    """Two fat binaries, 8-byte aligned with padding between, as in an ELF's .nv_fatbin section."""
    data = fat_binary([(2, 35), (2, 70), (1, 70)]) + b"\0" * 8 + fat_binary([(2, 35), (1, 50), (7, 99)])
    assert uw.fatbin_archs(data) == {"sm_35": 2, "sm_70": 1, "compute_70": 1, "compute_50": 1}
    assert uw.fatbin_archs(b"\0" * 64) == {}


def test_wheel_gpu_code_reads_the_nv_fatbin_section_of_each_library(tmp_path):
    """An ELF64 library with a .nv_fatbin section inside a wheel; files that are not ELF count for nothing."""
    fatbin = fat_binary([(2, 37), (2, 75), (1, 37)])
    names = b"\0.shstrtab\0.nv_fatbin\0"
    data_offset, names_offset = 64, 64 + len(fatbin)
    table = names_offset + len(names)
    table += -table % 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + b"\0" * 9 + struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, table, 0,
                                                                          64, 0, 0, 64, 3, 1)
    sections = (b"\0" * 64 + struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, names_offset, len(names), 0, 0, 1, 0)
                + struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, data_offset, len(fatbin), 0, 0, 8, 0))
    blob = header + fatbin + names
    blob += b"\0" * (table - len(blob)) + sections
    wheel = tmp_path / "torch-0-cp37-cp37m-linux_x86_64.whl"
    with zipfile.ZipFile(str(wheel), "w") as archive:
        archive.writestr("torch/lib/libfake.so", blob)
        archive.writestr("torch/lib/libnot_elf.so.1", b"not an ELF file")
        archive.writestr("torch/other/libskipped.so", blob)
    assert uw.wheel_gpu_code(wheel, "torch/lib/") == "sm_37 sm_75 compute_37"
    assert uw.wheel_gpu_code(wheel, "torchvision/") == ""


# ---- opt-in: the runs -------------------------------------------------------------------------------

def pyenv_python(python):
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which(
        "pyenv") else os.path.expanduser("~/.pyenv")
    return Path(root) / "versions" / uw.PYENV_PYTHONS[python] / "bin" / "python"


def run(command, timeout, env=None):
    """Run with a clean environment: no TORCHWIN_* expectations of ours, no Python path, pip without config."""
    full = dict(os.environ)
    for name in list(full):
        if name.startswith("TORCHWIN_") or name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            del full[name]
    full.update(PIP_ENV)
    full.update(env or {})
    proc = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout, env=full)
    return proc


def wheel(cache, name, version, python):
    """The cached wheel of name==version for this Python, downloaded when missing."""
    tag = "cp" + python.replace(".", "")

    def found():
        hits = sorted(cache.glob("%s-%s-%s-*.whl" % (name, version, tag))) + sorted(
            cache.glob("%s-%s-py2.py3-none-any.whl" % (name, version)))
        return hits[0] if hits else None

    if found() is None:
        proc = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", uw.PYENV_PYTHONS[python], "--platform", "manylinux1_x86_64",
                    "--platform", "linux_x86_64", "%s==%s" % (name, version), "-d", cache], INSTALL_TIMEOUT_S)
        if found() is None:
            pytest.fail("pip download %s==%s for Python %s failed: %s" % (name, version, python,
                                                                          (proc.stderr or proc.stdout)[-1500:]))
    return found()


def prepared_venv(cache, release, python, rendered):
    """A virtual environment with upstream's torch and torchvision wheels and the era's numpy/pillow."""
    interpreter = pyenv_python(python)
    if not interpreter.is_file():
        pytest.fail("no CPython %s at %s (pyenv install %s)" % (python, interpreter, uw.PYENV_PYTHONS[python]))
    vision = uw.torchvision_pairs()[release]
    wheels = [wheel(cache, "torch", release, python), wheel(cache, "torchvision",
                                                            uw.PYPI_TORCHVISION.get(vision, vision), python)]
    venv = cache / "venvs" / ("py%s-torch%s" % (python, release))
    done = venv / "torchwin-upstream-wheels.json"
    requirements = uw.era_requirements(rendered, release, python)
    wanted = {"wheels": [w.name for w in wheels], "requirements": requirements}
    if done.is_file() and json.loads(done.read_text()) == wanted:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    proc = run([interpreter, "-m", "venv", venv], 300)
    assert proc.returncode == 0, proc.stderr
    proc = run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", "--prefer-binary"]
               + wheels + requirements, INSTALL_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail("installing %s with %s failed: %s" % ([w.name for w in wheels], requirements,
                                                         (proc.stderr or proc.stdout)[-2000:]))
    done.write_text(json.dumps(wanted))
    return venv


def torchvision_summary(stdout):
    lines = [line for line in stdout.splitlines() if line.strip()]
    last = lines[-1].split() if lines else []
    if len(last) != 6 or last[1] != "passed,":
        return None
    return {"passed": int(last[0]), "failed": int(last[2]), "skipped": int(last[4])}


@pytest.mark.upstream_wheels
@pytest.mark.skipif(not CACHE, reason="opt-in: set %s to a download cache folder outside the checkout "
                    "to run both package tests on upstream's Linux wheels (~22 GB)" % uw.CACHE_ENV)
@pytest.mark.parametrize("release, python", uw.matrix(), ids=["torch%s-py%s" % c for c in uw.matrix()])
def test_package_tests_on_upstream_wheels(release, python, rendered, record_property):
    cache = Path(CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    wheel_is = uw.what_the_wheel_is(rendered, release, python)
    record_property("wheel_is", wheel_is)
    print("torch %s, Python %s: %s" % (release, python, wheel_is))
    venv = prepared_venv(cache, release, python, rendered)
    python_exe = venv / "bin" / "python"
    try:
        cuda = uw.WHEEL_CUDA[release]
        short = ".".join(cuda.split(".")[:2])
        env = {"TORCHWIN_EXPECT_VERSION": release, "TORCHWIN_EXPECT_VARIANT": "cuda" + short}
        if release in uw.WHEEL_ARCHS:
            env["TORCHWIN_EXPECT_ARCHS"] = uw.WHEEL_ARCHS[release]
        torch_proc = run([python_exe, ROOT / "recipes" / "pytorch" / "run_test.py", "--json"], RUN_TIMEOUT_S, env)
        vision = uw.torchvision_pairs()[release]
        vision_proc = run([python_exe, ROOT / "recipes" / "torchvision" / "run_test.py"], RUN_TIMEOUT_S,
                          {"TORCHWIN_EXPECT_VERSION": vision, "TORCHWIN_EXPECT_VARIANT": "cuda" + short})
        versions = run([python_exe, "-c", "import numpy, PIL, platform; print(numpy.__version__, "
                        "getattr(PIL, '__version__', getattr(PIL, 'PILLOW_VERSION', '?')), "
                        "platform.python_version())"], 120).stdout.split()
    finally:
        if os.environ.get(uw.KEEP_VENVS_ENV) != "1":
            shutil.rmtree(venv, ignore_errors=True)
    try:
        doc = json.loads(torch_proc.stdout)
    except ValueError:
        pytest.fail("recipes/pytorch/run_test.py --json printed no JSON (exit %d): %s" % (
            torch_proc.returncode, (torch_proc.stderr or torch_proc.stdout)[-2000:]))
    vision_summary = torchvision_summary(vision_proc.stdout)
    # What the README tables show; a torchvision run without a summary line counts as one failure.
    record = {"release": release, "python": python, "torchvision_release": vision, "wheel_is": wheel_is,
              "pytorch": {k: doc["summary"][k] for k in ("passed", "failed", "skipped")},
              "torchvision": vision_summary or {"passed": 0, "failed": 1, "skipped": 0},
              "numpy_pillow_python": versions, "ran": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")}
    uw.write_result(cache, release, python, record)

    # recipes/pytorch/run_test.py: nothing fails, and what must apply on a CPU did pass.
    by_name = {c["name"]: c for c in doc["checks"]}
    failed = ["%s: %s" % (c["name"], c["reason"]) for c in doc["checks"] if c["status"] == "FAIL"]
    assert not failed, "recipes/pytorch/run_test.py on torch %s (Python %s): %s" % (release, python, failed)
    assert doc["torch"]["cuda"] == cuda, "the wheel's torch.version.cuda is %s, on record %s" % (
        doc["torch"]["cuda"], cuda)
    must_pass = ["import", "version", "config.cuda", "config.mkl", "cpu.tensor_math", "cpu.autograd",
                 "cpu.conv_linear", "cpu.save_load", "dataloader.workers", "dataloader.worker_error",
                 "regression.backward_error", "regression.dataloader_memory"]
    if release in uw.WHEEL_ARCHS:
        must_pass.append("config.cuda_archs")
    else:
        assert "does not report the GPU architectures" in by_name["config.cuda_archs"]["reason"]
    for name in must_pass:
        assert by_name[name]["status"] == "PASS", (name, by_name[name])
    for name, chk in by_name.items():
        if name.startswith("cuda."):
            assert chk["status"] == "SKIP" and "no GPU is visible" in chk["reason"], chk

    # recipes/torchvision/run_test.py: exit 0 and every check its release has passed.
    out = vision_proc.stdout
    assert vision_proc.returncode == 0 and vision_summary, "recipes/torchvision/run_test.py on torchvision %s " \
        "(torch %s, Python %s) exit %d:\n%s%s" % (vision, release, python, vision_proc.returncode, out,
                                                  vision_proc.stderr[-1500:])
    want = ["PASS torchvision %s on torch %s (CUDA %s)" % (vision, release, cuda), "PASS transforms.Normalize"]
    tv = release_key(vision + ".0" if vision.count(".") == 1 else vision)
    if tv >= (0, 3, 0):
        want += ["PASS ops.nms and ops.roi_align on the CPU", "SKIP ops on the GPU: no GPU visible"]
    if tv >= (0, 5, 0):
        want.append("PASS no video reader")
    if tv >= (0, 8, 0):
        want.append("PASS io.encode_png/encode_jpeg")
    for line in want:
        assert line in out, "%r missing from:\n%s" % (line, out)
    assert vision_summary["passed"] == len([w for w in want if w.startswith("PASS")])


@pytest.mark.upstream_wheels
@pytest.mark.skipif(not CACHE, reason="opt-in: set %s to a download cache folder outside the checkout "
                    "to read the GPU code of upstream's Linux wheels" % uw.CACHE_ENV)
@pytest.mark.parametrize("release", list(uw.WHEEL_CUDA))
def test_gpu_code_of_upstream_wheels_is_on_record(release):
    """What each release's wheel carries for the GPU (its cp37 wheel; every Python's is built the same way),
    read from the .nv_fatbin sections without a GPU; from 1.6 on it holds what torch itself lists."""
    cache = Path(CACHE)
    vision = uw.torchvision_pairs()[release]
    torch_code = uw.wheel_gpu_code(wheel(cache, "torch", release, "3.7"), "torch/lib/")
    assert torch_code == uw.WHEEL_GPU_CODE[release]
    vision_code = uw.wheel_gpu_code(wheel(cache, "torchvision", uw.PYPI_TORCHVISION.get(vision, vision), "3.7"),
                                    "torchvision/")
    assert vision_code == uw.VISION_GPU_CODE[vision]
    if release in uw.WHEEL_ARCHS:
        listed = ["sm_" + a.replace(".", "") for a in uw.WHEEL_ARCHS[release].split(";")]
        assert set(listed) <= set(torch_code.split())

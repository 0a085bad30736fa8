"""`torchwin smoke` and recipes/pytorch/run_test.py, run for real.

Against the installed torch (a CPU build here and in CI): every CPU check passes, the CUDA
checks skip, --require-cuda turns that into a failure, --json is complete. Against fake
`torch` modules put first on the path: a torch that fails to import, one missing its
attributes, one that crashes the interpreter, one that hangs; each gives FAILs, never a
traceback. vermin holds run_test.py to Python 3.5.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from torchwin import cli, smoke
from torchwin.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RUN_TEST = REPO / "recipes" / "pytorch" / "run_test.py"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed, (\d+) skipped$")


def load_run_test():
    """run_test.py as a module (it imports no torch at import time), for its list of checks."""
    spec = importlib.util.spec_from_file_location("torchwin_run_test", RUN_TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ALL_CHECKS = [chk.name for chk in load_run_test().CHECKS]


def clean_env(**extra):
    """The environment without any TORCHWIN_* setting a CI job may have made."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHWIN_")}
    env.update(extra)
    return env


def run(argv, env=None, via_cli=False, timeout=600):
    """Run run_test.py (or `python -m torchwin smoke`) and return the completed process."""
    head = [sys.executable, "-m", "torchwin", "smoke"] if via_cli else [sys.executable, str(RUN_TEST)]
    return subprocess.run(head + list(argv), env=env or clean_env(), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO), check=False)


def by_name(document):
    return {c["name"]: c for c in document["checks"]}


def gpu_visible(torch):
    return torch.version.cuda is not None and torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# The real torch
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def full_run(torch):
    """One complete `torchwin smoke --json` for the whole module: the slow part (DataLoader workers)."""
    variant = "cpu" if torch.version.cuda is None else "cuda"
    proc = run(["--json", "--expect-version", torch.__version__, "--expect-variant", variant], via_cli=True)
    return proc, json.loads(proc.stdout)


def test_full_run_passes_every_cpu_check(full_run, torch):
    proc, document = full_run
    checks = by_name(document)
    not_passed = {name: (c["status"], c["reason"]) for name, c in checks.items()
                  if not name.startswith("cuda.") and c["status"] != "PASS"}
    # 0.3 has no API that reports MKL-DNN (nor builds it): the check says so and skips.
    assert not_passed.pop("config.mkldnn", ("SKIP", "no API"))[0] == "SKIP"
    assert not not_passed, not_passed
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert document["ok"] is True
    # The checks that prove the Windows-specific paths really ran, not just "passed".
    assert "spawned worker" in checks["dataloader.workers"]["reason"]
    assert "reached the caller" in checks["dataloader.worker_error"]["reason"]
    assert "bound 24 MiB" in checks["regression.dataloader_memory"]["reason"]
    assert torch.__version__ in checks["version"]["reason"]


def test_full_run_cuda_checks_skip_without_a_gpu(full_run, torch):
    if gpu_visible(torch):
        pytest.skip("a GPU is visible: the CUDA checks run instead of skipping")
    _, document = full_run
    cuda = {n: c for n, c in by_name(document).items() if n.startswith("cuda.")}
    assert len(cuda) >= 9
    for name, result in cuda.items():
        assert result["status"] == "SKIP", (name, result)
        assert "CPU-only build" in result["reason"] or "no GPU is visible" in result["reason"]


def test_json_report_is_complete(full_run, torch):
    _, document = full_run
    assert [c["name"] for c in document["checks"]] == ALL_CHECKS
    for result in document["checks"]:
        assert set(result) == {"name", "status", "reason", "seconds"}
        assert result["status"] in ("PASS", "FAIL", "SKIP")
        assert isinstance(result["reason"], str) and result["reason"]
        assert isinstance(result["seconds"], (int, float)) and result["seconds"] >= 0
    summary = document["summary"]
    statuses = [c["status"] for c in document["checks"]]
    assert (summary["passed"], summary["failed"], summary["skipped"]) == (
        statuses.count("PASS"), statuses.count("FAIL"), statuses.count("SKIP"))
    assert summary["line"] == (
        f"{summary['passed']} passed, {summary['failed']} failed, {summary['skipped']} skipped")
    assert document["torch"]["version"] == torch.__version__
    assert document["torch"]["cuda"] == torch.version.cuda
    assert document["torch"]["mkl"] is True
    assert document["python"]["executable"]
    assert document["options"]["expect_version"] == torch.__version__


def test_progress_lines_and_summary_go_to_stderr_with_json(full_run):
    proc, document = full_run
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == document["summary"]["line"]
    assert SUMMARY.match(lines[-1])
    for name in ALL_CHECKS:
        assert any(re.match(rf"^(PASS|FAIL|SKIP)\s+{re.escape(name)}\s+\d+\.\d\ds  \S", line)
                   for line in lines), name


def test_require_cuda_fails_with_a_clear_message(torch):
    if gpu_visible(torch):
        pytest.skip("a GPU is visible: --require-cuda is satisfied")
    proc = run(["--require-cuda", "--only", "import,cuda"], via_cli=True)
    assert proc.returncode == 1
    fails = [line for line in proc.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == len([n for n in ALL_CHECKS if n.startswith("cuda.")])
    for line in fails:
        assert "a GPU is required (--require-cuda or TORCHWIN_REQUIRE_CUDA=1), but" in line
    assert proc.stdout.strip().splitlines()[-1] == f"1 passed, {len(fails)} failed, 0 skipped"
    assert "torchwin: error: the smoke test found problems" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_require_cuda_env_var_fails_but_not_for_an_expected_cpu_variant(torch):
    if gpu_visible(torch):
        pytest.skip("a GPU is visible: the requirement is satisfied")
    proc = run(["--json", "--only", "cuda.device"], env=clean_env(TORCHWIN_REQUIRE_CUDA="1"))
    assert proc.returncode == 1
    assert by_name(json.loads(proc.stdout))["cuda.device"]["status"] == "FAIL"
    if torch.version.cuda is None:
        # A GPU job sets the variable for every package; the CPU package's test must still pass.
        env = clean_env(TORCHWIN_REQUIRE_CUDA="1", TORCHWIN_EXPECT_VARIANT="cpu")
        proc = run(["--json", "--only", "cuda.device,config.cuda"], env=env)
        checks = by_name(json.loads(proc.stdout))
        assert proc.returncode == 0, checks
        assert checks["cuda.device"]["status"] == "SKIP"
        assert checks["config.cuda"]["status"] == "PASS"


def test_wrong_version_and_variant_fail(torch):
    wrong_variant = "cuda9.0" if torch.version.cuda is None else "cpu"
    proc = run(["--json", "--only", "version,config.cuda", "--expect-version", "0.4.1",
                "--expect-variant", wrong_variant])
    assert proc.returncode == 1
    checks = by_name(json.loads(proc.stdout))
    assert checks["version"]["status"] == "FAIL"
    assert "expected 0.4.1" in checks["version"]["reason"]
    assert checks["config.cuda"]["status"] == "FAIL"


def test_version_check_accepts_local_parts_and_rebuilds_only(tmp_path):
    env = fake_torch(tmp_path, '__version__ = "1.0.0.post2"\n')
    for expected, status in (("1.0.0", "PASS"), ("1.0.0.post2", "PASS"), ("1.0", "FAIL"), ("1.0.1", "FAIL")):
        proc = run(["--json", "--only", "version", "--expect-version", expected], env=env)
        assert by_name(json.loads(proc.stdout))["version"]["status"] == status, expected


def test_variant_names_follow_build_strings():
    module = load_run_test()
    assert module.parse_variant("CPU", "x") == "cpu"
    assert module.parse_variant("cuda90", "x") == "cuda9.0"
    assert module.parse_variant("cuda10.0", "x") == "cuda10.0"
    assert module.parse_variant("cuda100", "x") == "cuda10.0"
    for bad in ("gpu", "cuda9", "cuda9.0.1", "cudax"):
        with pytest.raises(ValueError, match="expected cpu, cuda or cudaX.Y"):
            module.parse_variant(bad, "x")


def test_bad_options_are_usage_errors():
    proc = run(["--expect-variant", "gpu"])
    assert proc.returncode == 2
    assert "expected cpu, cuda or cudaX.Y" in proc.stderr
    proc = run(["--only", "cpu,nonsense"], via_cli=True)
    assert proc.returncode == 2
    assert "unknown check nonsense" in proc.stderr
    assert "torchwin: error:" in proc.stderr
    proc = run(["--require-cuda", "--expect-variant", "cpu"])
    assert proc.returncode == 2


# ---------------------------------------------------------------------------------------------
# Broken environments: a fake torch first on the path
# ---------------------------------------------------------------------------------------------

def fake_torch(tmp_path, source):
    folder = tmp_path / "fake"
    folder.mkdir()
    (folder / "torch.py").write_text(source)
    return clean_env(PYTHONPATH=str(folder))


def assert_no_traceback(proc):
    assert "Traceback (most recent call last)" not in proc.stdout + proc.stderr


def test_torch_that_fails_to_import_fails_the_import_check(tmp_path):
    env = fake_torch(tmp_path,
                     'raise ImportError("DLL load failed: The specified module could not be found.")\n')
    proc = run(["--json"], env=env, via_cli=True)
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    checks = by_name(document)
    assert checks["import"]["status"] == "FAIL"
    assert "import torch failed: ImportError: DLL load failed" in checks["import"]["reason"]
    others = [c for n, c in checks.items() if n != "import"]
    assert others and all(c["status"] == "SKIP" and "did not import" in c["reason"] for c in others)
    assert document["summary"]["line"] == f"0 passed, 1 failed, {len(others)} skipped"
    assert_no_traceback(proc)


def test_torch_missing_attributes_fails_each_check_with_a_message(tmp_path):
    env = fake_torch(tmp_path, '__version__ = "0.0.0"\n')
    proc = run(["--json"], env=env)
    assert proc.returncode == 1
    checks = by_name(json.loads(proc.stdout))
    assert checks["import"]["status"] == "FAIL"
    assert "lacks Tensor, tensor" in checks["import"]["reason"]
    assert str(tmp_path / "fake" / "torch.py") in checks["import"]["reason"]
    for name in ("cpu.tensor_math", "cpu.autograd", "cpu.conv_linear", "cpu.save_load",
                 "dataloader.workers", "regression.backward_error"):
        assert checks[name]["status"] == "FAIL", (name, checks[name])
        assert "Error:" in checks[name]["reason"] or "torch" in checks[name]["reason"]
    assert_no_traceback(proc)


CUDA_TORCH = """\
__version__ = "{version}"
class version:
    cuda = "9.2"
class _C:
    {flags}
"""
# What build_driver.py derives for 1.0.1 (facts: Kepler 3.0 compiles) with CUDA 9.2.
KEPLER_FLAGS = "sm_30 sm_35 sm_50 sm_60 sm_61 sm_70 compute_70"


@pytest.mark.parametrize("flags,status,reason", [
    (KEPLER_FLAGS, "PASS", "compiled for sm_30 sm_35 sm_50 sm_60 sm_61 sm_70 compute_70, as expected"),
    (KEPLER_FLAGS.replace("sm_30 ", ""), "FAIL", "but sm_30 is not compiled in"),
    (KEPLER_FLAGS.replace(" compute_70", ""), "FAIL", "but compute_70 is not compiled in"),
    (None, "SKIP", "does not report the GPU architectures compiled in"),
])
def test_architectures_compiled_in_are_checked_against_the_promise(tmp_path, flags, status, reason):
    """TORCHWIN_EXPECT_ARCHS=facts:X.Y.Z: the list the build driver derives from upstream/X.Y.Z.json.

    The torch here is a stand-in for a CUDA build (none can be installed without a GPU toolkit):
    only torch._C._cuda_getArchFlags, which reads what the build compiled in, matters to this check."""
    method = ("@staticmethod\n    def _cuda_getArchFlags():\n        return %r" % flags) if flags else "pass"
    env = fake_torch(tmp_path, CUDA_TORCH.format(version="1.6.0", flags=method))
    env.update(TORCHWIN_EXPECT_ARCHS="facts:1.0.1", TORCHWIN_EXPECT_VARIANT="cuda9.2")
    proc = run(["--json", "--only", "config.cuda_archs"], env=env)
    result = by_name(json.loads(proc.stdout))["config.cuda_archs"]
    assert (result["status"], proc.returncode) == (status, 1 if status == "FAIL" else 0), result
    assert reason in result["reason"]
    if flags is None:
        assert "expected 3.0;3.5;5.0;6.0;6.1;7.0+PTX" in result["reason"]
    assert_no_traceback(proc)


def test_architectures_without_an_expectation_are_reported(tmp_path):
    env = fake_torch(tmp_path, CUDA_TORCH.format(version="1.7.1", flags=(
        "@staticmethod\n    def _cuda_getArchFlags():\n        return 'sm_35 sm_70 compute_70'")))
    proc = run(["--json", "--only", "config.cuda_archs"], env=env)
    result = by_name(json.loads(proc.stdout))["config.cuda_archs"]
    assert result["status"] == "PASS" and "compiled for sm_35 sm_70 compute_70 (nothing expected" in result["reason"]


@pytest.mark.parametrize("archs,variant,message", [
    ("facts:9.9.9", "cuda9.2", "TORCHWIN_EXPECT_ARCHS=facts:9.9.9: no upstream facts for PyTorch 9.9.9"),
    ("facts:1.0.1", "cpu", "TORCHWIN_EXPECT_ARCHS=facts:1.0.1 needs the CUDA version too"),
    ("3.5;sm_70", "cuda9.2", "TORCHWIN_EXPECT_ARCHS='3.5;sm_70': expected architectures such as"),
])
def test_bad_architecture_expectations_are_usage_errors(archs, variant, message):
    proc = run(["--only", "config.cuda_archs"],
               env=clean_env(TORCHWIN_EXPECT_ARCHS=archs, TORCHWIN_EXPECT_VARIANT=variant))
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert_no_traceback(proc)


def test_torch_that_crashes_the_interpreter_is_a_fail(tmp_path):
    env = fake_torch(tmp_path, "import os\nos._exit(3)\n")
    proc = run(["--json", "--only", "import,cpu"], env=env)
    assert proc.returncode == 1
    checks = by_name(json.loads(proc.stdout))
    assert checks["import"]["status"] == "FAIL"
    assert "died during this check (exit code 3)" in checks["import"]["reason"]
    assert checks["cpu.autograd"]["status"] == "SKIP"
    assert_no_traceback(proc)


def test_hanging_check_times_out_and_the_next_check_still_runs(tmp_path):
    source = ("import time\n__version__ = '9.9'\nfloat64 = None\n"
              "def tensor(*args, **kwargs):\n    time.sleep(600)\n")
    env = fake_torch(tmp_path, source)
    # The stack dump comes at 0.9x the limit, the kill at 1x, both counted from the check's start; 0.1 makes
    # the limit 12 s and leaves 1.2 s between them for a loaded machine.
    proc = run(["--json", "--only", "cpu.tensor_math,cpu.save_load", "--timeout-scale", "0.1"], env=env)
    assert proc.returncode == 1
    checks = by_name(json.loads(proc.stdout))
    assert checks["cpu.tensor_math"]["status"] == "FAIL"
    assert "timed out after" in checks["cpu.tensor_math"]["reason"]
    assert "in tensor" in checks["cpu.tensor_math"]["reason"]  # where it hung, from faulthandler
    # save_load ran in a fresh child after the hung one was killed, and failed on its own terms.
    assert checks["cpu.save_load"]["status"] == "FAIL"
    assert "manual_seed" in checks["cpu.save_load"]["reason"]
    assert_no_traceback(proc)


def test_a_slow_interpreter_start_does_not_count_against_the_first_check(tmp_path):
    """Each check is timed from the child's `start` event, not from the child's launch."""
    env = fake_torch(tmp_path, "__version__ = '9.9'\nTensor = tensor = nn = autograd = utils = object()\n")
    # Every interpreter these runs start (the parent and each child) first sleeps 3 s in sitecustomize.
    (tmp_path / "fake" / "sitecustomize.py").write_text("import time\ntime.sleep(3)\n")
    # import's bound: 300 s x 0.005 = 1.5 s, far less than the child's 3 s start.
    proc = run(["--json", "--only", "import", "--timeout-scale", "0.005"], env=env)
    checks = by_name(json.loads(proc.stdout))
    assert checks["import"]["status"] == "PASS", checks["import"]
    assert proc.returncode == 0


# ---------------------------------------------------------------------------------------------
# The script itself and the subcommand around it
# ---------------------------------------------------------------------------------------------


def test_run_test_imports_nothing_but_the_standard_library():
    """Spawned DataLoader workers re-import the file; torch must only be imported inside checks."""
    source = RUN_TEST.read_text()
    top_level = [line for line in source.splitlines() if re.match(r"^(import|from) ", line)]
    stdlib = set(sys.stdlib_module_names)
    assert all(re.split(r"[ .]", line)[1] in stdlib for line in top_level), top_level


def test_find_run_test_in_the_checkout():
    assert smoke.find_run_test() == RUN_TEST


def test_find_run_test_in_a_checkout_without_it_is_a_user_error(tmp_path, monkeypatch):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    monkeypatch.setenv("TORCHWIN_ROOT", str(tmp_path))
    with pytest.raises(UserError, match="run_test.py: no such file"):
        smoke.find_run_test()


def test_outside_a_checkout_the_copy_a_wheel_installs_is_used(tmp_path, monkeypatch):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    # pyproject installs exactly this script to <prefix>/share/torchwin with a wheel...
    data_files = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "data-files"]
    folder = smoke.INSTALLED_RUN_TEST.parent.as_posix()
    assert data_files[folder] == [RUN_TEST.relative_to(REPO).as_posix()]
    # ...and find_run_test takes it from there when no checkout is found.
    monkeypatch.setattr(smoke, "repo_root", lambda: None)
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    with pytest.raises(UserError, match="not in a torchwin checkout .* and not installed at"):
        smoke.find_run_test()
    installed = tmp_path / smoke.INSTALLED_RUN_TEST
    installed.parent.mkdir(parents=True)
    installed.write_text(RUN_TEST.read_text(encoding="utf-8"), encoding="utf-8")
    assert smoke.find_run_test() == installed


def test_smoke_help_teaches(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["smoke", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--require-cuda", "--expect-version", "--json", "examples:", "TORCHWIN_REQUIRE_CUDA"):
        assert text in out


MKLDNN_TORCH = """\
__version__ = "1.6.0"
class _C:
    has_mkldnn = {has}
"""


@pytest.mark.parametrize("expect,has,status", [
    ("1", True, "PASS"), ("1", False, "FAIL"), ("0", True, "FAIL"), ("0", False, "PASS"),
    # On Linux (where this runs) 1.4.0 builds the bundled MKL-DNN; on Windows it would be switched off.
    ("facts:1.4.0", True, "PASS"), ("facts:1.4.0", False, "FAIL"), (None, False, "PASS"),
])
def test_mkldnn_compiled_in_is_checked_against_what_the_build_switched_on(tmp_path, expect, has, status):
    """TORCHWIN_EXPECT_MKLDNN (the recipe passes facts:X.Y.Z): torch's own report, torch._C.has_mkldnn, in a
    stand-in torch (only that attribute matters to the check)."""
    env = fake_torch(tmp_path, MKLDNN_TORCH.format(has=has))
    if expect:
        env["TORCHWIN_EXPECT_MKLDNN"] = expect
    proc = run(["--json", "--only", "config.mkldnn"], env=env)
    result = by_name(json.loads(proc.stdout))["config.mkldnn"]
    assert (result["status"], proc.returncode) == (status, 1 if status == "FAIL" else 0), result
    assert "torch._C.has_mkldnn" in result["reason"]
    assert_no_traceback(proc)


def test_mkldnn_expectation_follows_the_build_driver_for_each_platform(monkeypatch):
    module = load_run_test()
    monkeypatch.setattr(sys, "platform", "win32")
    assert module.expected_mkldnn("facts:1.4.0", "X") is False  # FindMKLDNN returns early under MSVC
    assert module.expected_mkldnn("facts:1.5.0", "X") is True   # "Enable mkldnn on windows" (19bb496a0d)
    assert module.expected_mkldnn("facts:0.4.1", "X") is False  # looks for an installed MKL-DNN
    monkeypatch.setattr(sys, "platform", "linux")
    assert module.expected_mkldnn("facts:1.4.0", "X") is True
    with pytest.raises(ValueError, match="expected 1, 0 or facts"):
        module.expected_mkldnn("yes", "X")


def test_bad_mkldnn_expectation_is_a_usage_error():
    proc = run(["--only", "config.mkldnn"], env=clean_env(TORCHWIN_EXPECT_MKLDNN="facts:9.9.9"))
    assert proc.returncode == 2 and "TORCHWIN_EXPECT_MKLDNN=facts:9.9.9: no upstream facts" in proc.stderr


def test_smoke_and_run_test_have_one_option_set(capsys):
    """Issue 26: run_test.py took --expect-archs, `torchwin smoke` called it an unrecognized argument
    and its help lacked it. Every option of run_test.py's help is smoke's, and passes through as given."""
    own = subprocess.run([sys.executable, str(RUN_TEST), "--help"], capture_output=True, text=True,
                         check=True).stdout
    with pytest.raises(SystemExit):
        cli.main(["smoke", "--help"])
    theirs = capsys.readouterr().out
    options = set(re.findall(r"^  (--[a-z-]+)", own, re.M)) - {"--help"}
    assert "--expect-archs" in options
    assert options == set(re.findall(r"^  (--[a-z-]+)", theirs, re.M)) - {"--help"}
    given = ["--expect-archs", "3.5;7.0+PTX", "--expect-version", "1.0.0", "--require-cuda",
             "--timeout-scale", "2", "--only", "cpu", "--json"]
    args = cli.make_parser().parse_args(["smoke", *given])
    assert smoke.script_argv(args) == ["--require-cuda", "--expect-version", "1.0.0", "--expect-archs",
                                          "3.5;7.0+PTX", "--timeout-scale", "2.0", "--only", "cpu", "--json"]


# ---------------------------------------------------------------------------------------------
# Opt-in: a real torch 0.3 (the 2017 API: Variables, volatile, no torch.tensor / .item() /
# torch.version.cuda). None installs here from a package index; point TORCHWIN_TORCH03_PYTHON at
# the Python of an environment where a compiled 0.3.x is installed.
# ---------------------------------------------------------------------------------------------

TORCH03_PYTHON = os.environ.get("TORCHWIN_TORCH03_PYTHON")


@pytest.mark.skipif(not TORCH03_PYTHON, reason="opt-in: set TORCHWIN_TORCH03_PYTHON to a Python with torch 0.3.x")
def test_every_check_is_meaningful_on_torch_0_3():
    probe = subprocess.run([TORCH03_PYTHON, "-c", "import torch, sys; sys.stdout.write(torch.__version__)"],
                           capture_output=True, text=True, timeout=300, check=True, cwd="/")
    version = probe.stdout.strip()
    assert version.startswith("0.3"), version
    proc = subprocess.run([TORCH03_PYTHON, str(RUN_TEST), "--json", "--expect-version", version,
                           "--expect-variant", "cpu"], env=clean_env(), capture_output=True, text=True,
                          timeout=1800, cwd=str(REPO), check=False)
    document = json.loads(proc.stdout)
    checks = by_name(document)
    assert [c["name"] for c in document["checks"]] == ALL_CHECKS
    # Every check that needs no GPU passes, the 2017 regressions and the documented limits included.
    not_passed = {name: (c["status"], c["reason"]) for name, c in checks.items()
                  if not name.startswith("cuda.") and c["status"] != "PASS"}
    # 0.3 has no API that reports MKL-DNN (nor builds it): the check says so and skips.
    assert not_passed.pop("config.mkldnn", ("SKIP", "no API"))[0] == "SKIP"
    assert not not_passed, not_passed
    assert "volatile Variable stops tracking" in checks["cpu.autograd"]["reason"]
    assert "an MKL library loaded" in checks["config.mkl"]["reason"]
    assert "bound 24 MiB" in checks["regression.dataloader_memory"]["reason"]
    assert proc.returncode == 0, proc.stderr[-3000:]


# 0.3's torch/version.py holds only __version__; the CUDA extension says what it was compiled with.
TORCH03_CUDA = """\
__version__ = "0.3.0b0+591e73e"
class version:
    pass
class _C:
    has_cudnn = True
    @staticmethod
    def _cuda_getCompiledVersion():
        return 9000
"""


def test_a_0_3_cuda_build_is_recognised_without_torch_version_cuda(tmp_path):
    env = fake_torch(tmp_path, TORCH03_CUDA)
    env.update(TORCHWIN_EXPECT_VARIANT="cuda9.0", TORCHWIN_EXPECT_VERSION="facts:0.3.0-win-64")
    proc = run(["--json", "--only", "config.cuda,version"], env=env)
    checks = by_name(json.loads(proc.stdout))
    assert checks["config.cuda"]["status"] == "PASS", checks["config.cuda"]
    assert checks["config.cuda"]["reason"] == "CUDA 9.0 compiled in with cuDNN, as expected"
    # The fork's build stamps its own version; the recipe's facts: value derives it.
    assert checks["version"]["status"] == "PASS" and "0.3.0b0+591e73e" in checks["version"]["reason"]
    assert proc.returncode == 0
    env.update(TORCHWIN_EXPECT_VARIANT="cuda9.2")
    checks = by_name(json.loads(run(["--json", "--only", "config.cuda"], env=env).stdout))
    assert "expected CUDA 9.2, but torch.version.cuda is 9.0" in checks["config.cuda"]["reason"]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows builds document no torch.distributed")
def test_a_linux_torch_without_distributed_fails_the_distributed_check(tmp_path):
    env = fake_torch(tmp_path, '__version__ = "0.3.0"\n')
    proc = run(["--json", "--only", "config.distributed"], env=env)
    result = by_name(json.loads(proc.stdout))["config.distributed"]
    assert (result["status"], proc.returncode) == ("FAIL", 1)
    assert "torch.distributed is not available (no module); the Linux builds ship it" in result["reason"]


@pytest.mark.skipif(sys.platform == "win32", reason="on Windows every release documents no torch.distributed")
def test_a_0_3_torch_without_distributed_passes_as_documented(tmp_path):
    """The 2017 builds listed no torch.distributed among their limits: absent is a PASS for 0.3."""
    env = fake_torch(tmp_path, '__version__ = "0.3.1"\nclass FloatTensor:\n    pass\n')
    proc = run(["--json", "--only", "config.distributed"], env=env)
    result = by_name(json.loads(proc.stdout))["config.distributed"]
    assert (result["status"], proc.returncode) == ("PASS", 0), result
    assert result["reason"] == "torch.distributed is not compiled in, as documented for the 0.3 builds (torch 0.3.1)"


def test_the_0_3_api_is_told_by_the_function_torch_tensor_not_the_name():
    """0.3 has a submodule torch.tensor (torch/tensor.py): taken for 0.4's torch.tensor(), the save/load
    check wrote to a BytesIO, which 0.3's serializer refuses (found on a 0.3.1 compiled here)."""
    import types

    module = load_run_test()
    torch03 = types.SimpleNamespace(FloatTensor=object, tensor=types.ModuleType("torch.tensor"))
    torch04 = types.SimpleNamespace(FloatTensor=object, tensor=lambda data: data)
    assert module.legacy_api(torch03) is True
    assert module.legacy_api(torch04) is False

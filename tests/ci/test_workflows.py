"""The GitHub workflows: linted, hardened, and wired to the commands they run.

The nightly must work on the first night it runs, so everything that can be
checked without GitHub is checked here: the linters (zizmor, GitHub's
workflow schema, yamllint, shellcheck on every `run:` step), the hardening
rules, that every `torchwin` command line in a step is one our CLI accepts,
and -- running the plan job's own commands -- that the build matrix is exactly
what `torchwin render` says the recipe builds, and that the variant file each
build job writes makes `conda build` pick exactly that build. Steps that call
conda or torchwin are run in bash with those commands stubbed, to check the
argv they produce: the channels, the zstd level (build.py's), and which files
the publish job uploads with --skip-rebuilt.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from torchwin.ci import matrix as ci_matrix
from torchwin.ci import stages as ci_stages
from torchwin.cli import main, make_parser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "nightly.yml"
CI = WORKFLOWS / "ci.yml"
FILES = sorted(WORKFLOWS.glob("*.yml"))
USES_RE = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$")
SHA_RE = re.compile(r"^[0-9a-f]{40}$")
VERSION_RE = re.compile(r"^v\d+\.\d+\.\d+$")


def tool(name):
    """A linter from the test extra: next to this Python first (the venv), else on PATH."""
    folder = Path(sys.executable).parent
    for candidate in (folder / name, folder / (name + ".exe")):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; it comes with the test extra: pip install -e '.[test]'")
    return found


def load(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    # PyYAML reads the key `on` as the boolean True (YAML 1.1); GitHub reads it as "on".
    if True in data:
        data["on"] = data.pop(True)
    return data


@pytest.fixture(scope="module")
def workflows():
    return {path.name: load(path) for path in FILES}


def steps_of(workflow):
    for job_name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, job, step


def shell_of(workflow, job, step):
    return (step.get("shell") or job.get("defaults", {}).get("run", {}).get("shell")
            or workflow.get("defaults", {}).get("run", {}).get("shell") or "bash")


def bash_steps(workflow):
    for job_name, job, step in steps_of(workflow):
        if "run" in step and shell_of(workflow, job, step).startswith("bash"):
            yield job_name, job, step


def test_both_workflows_exist():
    assert {p.name for p in FILES} >= {"nightly.yml", "ci.yml"}


# ---------------------------------------------------------------- linters


def test_zizmor_finds_nothing():
    # Offline: the online audits (impostor commits, version comments) run in ci.yml's lint job.
    result = subprocess.run([tool("zizmor"), "--offline", "--no-progress", "--persona", "pedantic",
                             str(WORKFLOWS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def test_github_workflow_schema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
                             *map(str, FILES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_is_clean():
    paths = [ROOT / ".yamllint", *FILES, ROOT / "scripts" / "torchwin" / "data" / "ci_downloads.yaml"]
    result = subprocess.run([tool("yamllint"), "--strict", "-c", str(ROOT / ".yamllint"), *map(str, paths)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_shellcheck_every_bash_step(workflows, tmp_path):
    scripts = []
    for name, workflow in workflows.items():
        for job_name, job, step in bash_steps(workflow):
            path = tmp_path / f"{name}-{job_name}-{len(scripts)}.sh"
            # GitHub runs bash steps with -e and pipefail; say so, so shellcheck reads them the same way.
            header = f"#!/usr/bin/env bash\nset -eo pipefail\n# step: {step.get('name', '?')}\n"
            path.write_text(header + step["run"] + "\n", encoding="utf-8")
            scripts.append(path)
    assert len(scripts) > 10
    result = subprocess.run([tool("shellcheck"), "--shell=bash", *map(str, scripts)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- hardening


def test_every_action_is_pinned_by_a_full_commit_with_its_version():
    pins = {}
    for path in FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "uses:" not in line:
                continue
            match = USES_RE.match(line)
            assert match, f"{path.name}:{number}: cannot read {line.strip()!r}"
            action, ref, comment = match.groups()
            where = f"{path.name}:{number}: {action}"
            assert SHA_RE.match(ref), f"{where} is pinned by {ref!r}, not a 40-hex commit"
            assert comment and VERSION_RE.match(comment), f"{where} needs a `# vX.Y.Z` comment"
            pins.setdefault(action, set()).add((ref, comment))
    # One version of each action across the workflows: an update is one decision.
    assert all(len(v) == 1 for v in pins.values()), pins
    for needed in ("actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact",
                   "actions/download-artifact", "conda-incubator/setup-miniconda",
                   "mozilla-actions/sccache-action"):
        assert needed in pins


def test_permissions_are_empty_at_the_top_and_read_only_per_job(workflows):
    for name, workflow in workflows.items():
        assert workflow["permissions"] == {}, name
        for job_name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{name}: job {job_name} sets no permissions"
            granted = job["permissions"] or {}
            assert granted == {"contents": "read"}, f"{name}: job {job_name} asks for {granted}"


def test_every_job_has_a_timeout(workflows):
    for name, workflow in workflows.items():
        for job_name, job in workflow["jobs"].items():
            minutes = job.get("timeout-minutes")
            assert isinstance(minutes, int) and 0 < minutes <= 360, f"{name}: job {job_name}: {minutes}"


def test_checkouts_do_not_keep_credentials(workflows):
    count = 0
    for name, workflow in workflows.items():
        for job_name, _, step in steps_of(workflow):
            if step.get("uses", "").startswith("actions/checkout@"):
                count += 1
                assert step.get("with", {}).get("persist-credentials") is False, f"{name}: {job_name}"
    assert count >= 8


def test_no_dangerous_triggers_or_insecure_downloads(workflows):
    for name, workflow in workflows.items():
        triggers = workflow["on"]
        assert "pull_request_target" not in triggers and "workflow_run" not in triggers, name
        text = (WORKFLOWS / name).read_text(encoding="utf-8")
        for bad in ("curl -k", "curl --insecure", "--no-check-certificate", "pull_request_target"):
            assert bad not in text, f"{name} contains {bad!r}"


def test_no_expression_is_expanded_inside_a_script(workflows):
    # `${{ }}` in `run:` is pasted into the script before bash sees it (template injection);
    # values reach scripts through `env:` instead.
    for name, workflow in workflows.items():
        for job_name, _, step in steps_of(workflow):
            assert "${{" not in step.get("run", ""), f"{name}: {job_name}: {step.get('name')}"


def test_the_anaconda_token_only_reaches_the_publish_job(workflows):
    for name, workflow in workflows.items():
        assert "secrets" not in json.dumps(workflow.get("env", {})), name
        for job_name, job in workflow["jobs"].items():
            if "secrets." in json.dumps(job):
                assert (name, job_name) == ("nightly.yml", "publish")
    publish = workflows["nightly.yml"]["jobs"]["publish"]
    assert "secrets" not in json.dumps(publish.get("env", {}))
    users = [s for s in publish["steps"] if "secrets." in json.dumps(s)]
    assert users and all(s["env"]["ANACONDA_API_TOKEN"] == "${{ secrets.ANACONDA_API_TOKEN }}" for s in users)
    assert all("dry_run" in s["if"] for s in users)


# ---------------------------------------------------------------- the nightly's shape


def test_nightly_triggers_and_inputs(workflows):
    nightly = workflows["nightly.yml"]
    assert nightly["on"]["schedule"][0]["cron"]
    inputs = nightly["on"]["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"git_ref", "force", "variants", "label", "dry_run"}
    assert inputs["dry_run"]["type"] == "boolean" and inputs["label"]["default"] == "nightly"
    # force rebuilds a commit the last published nightly was already built from.
    assert inputs["force"] == {"description": inputs["force"]["description"], "type": "boolean", "default": False}
    assert nightly["concurrency"] == {"group": "nightly", "cancel-in-progress": False}


def test_no_matrix_is_typed_into_the_nightly(workflows):
    for job_name, job in workflows["nightly.yml"]["jobs"].items():
        matrix = job.get("strategy", {}).get("matrix")
        if matrix is not None:
            assert isinstance(matrix, str) and matrix.startswith("${{ fromJSON(needs.plan.outputs."), job_name


def test_publish_needs_every_build_and_test_and_runs_only_from_the_default_branch(workflows):
    jobs = workflows["nightly.yml"]["jobs"]
    publish = jobs["publish"]
    assert publish["environment"] == "publish"
    assert set(publish["needs"]) >= {"build-windows", "build-linux", "test", "gpu-test"}
    condition = " ".join(publish["if"].split())
    for needed in ("github.event_name == 'schedule'", "github.event_name == 'workflow_dispatch'",
                   "github.ref_name == github.event.repository.default_branch",
                   "needs.test.result == 'success'", "needs.build-windows.result == 'success'",
                   "needs.build-linux.result == 'success'", "needs.gpu-test.result == 'success'"):
        assert needed in condition
    runs = " ".join(s.get("run", "") for s in publish["steps"])
    assert "torchwin publish --label" in runs and "torchwin publish --prune" in runs


def test_gpu_job_runs_only_where_a_gpu_runner_is_declared(workflows):
    jobs = workflows["nightly.yml"]["jobs"]
    assert "needs.plan.outputs.gpu-count != '0'" in jobs["gpu-test"]["if"]
    plan_env = next(s for s in jobs["plan"]["steps"] if s.get("id") == "matrix")["env"]
    assert plan_env["GPU_RUNNER"] == "${{ vars.TORCHWIN_GPU_RUNNER }}"
    # Every package test honours TORCHWIN_REQUIRE_CUDA (run_test.py's --require-cuda, check_library.py).
    test_step = next(s for s in jobs["gpu-test"]["steps"] if s.get("name", "").startswith("Package test"))
    assert test_step["env"]["TORCHWIN_REQUIRE_CUDA"] == "1"


def test_build_jobs_install_the_toolchain_from_the_pinned_table(workflows):
    windows = workflows["nightly.yml"]["jobs"]["build-windows"]
    runs = [s.get("run", "") for s in windows["steps"]]
    assert any(r.startswith("torchwin ci install-vs2017") for r in runs)
    assert any(r.startswith("torchwin ci install-cuda") for r in runs)
    assert any(r.startswith("torchwin doctor") for r in runs)
    cache_keys = [s["with"]["key"] for s in windows["steps"]
                  if s.get("uses", "").startswith("actions/cache@")]
    assert any("hashFiles('scripts/torchwin/data/ci_downloads.yaml')" in k for k in cache_keys)
    assert any("matrix.cache_key" in k for k in cache_keys)
    assert "vars.TORCHWIN_WINDOWS_RUNNER || 'windows-2022'" in json.dumps(workflows["nightly.yml"])
    # Linux too: doctor judges the machine's gcc only for the variants that use it.
    linux = workflows["nightly.yml"]["jobs"]["build-linux"]
    steps = [s.get("run", "") for s in linux["steps"]]
    doctor = next(i for i, r in enumerate(steps) if r.startswith("torchwin doctor --target-platform linux-64"))
    assert doctor < next(i for i, r in enumerate(steps) if "conda build" in r)


# conda-build 26 hands a recipe.yaml to py-rattler-build and refuses every option outside this list
# (conda_build/_rattler_build/compat.py, VALID_ARGS["build"], 26.3-26.7) -- `--variants` among them.
CONDA_BUILD_V1_FLAGS = {"-m", "--variant-config-files", "-e", "--exclusive-config-files", "--output-folder",
                        "--no-anaconda-upload", "-c", "--channel", "--override-channels", "--package-format",
                        "--no-test", "--skip-existing", "--no-include-recipe", "--build-only", "--quiet",
                        "--debug", "--extra-meta", "--zstd-compression-level", "--user", "--token"}


def _steps_running(workflow, command):
    """(job name, job, step) of every bash step with a line that starts with command."""
    return [(job_name, job, step) for job_name, job, step in bash_steps(workflow)
            if any(line.startswith(command) for line in _logical_lines(step["run"]))]


def _bash():
    """The bash GitHub runs `shell: bash` steps with (on Windows Git's, not WSL's System32 one)."""
    if os.name == "nt":
        git_bash = Path(os.environ.get("ProgramFiles", r"C:\Program Files")) / "Git" / "bin" / "bash.exe"
        if not git_bash.is_file():
            pytest.skip("needs Git for Windows' bash")
        return str(git_bash)
    found = shutil.which("bash")
    if found is None:
        pytest.skip("bash is not installed")
    return found


def _run_with_stubs(step, env, stubs, cwd, fails=False):
    """Run a bash step with the named commands replaced by functions that record their argv.

    Returns one argv list per stubbed call, in order. Values of the step's `env:` come from
    env (a test's stand-ins for the `${{ }}` expressions GitHub would fill in). fails: the step
    must exit non-zero instead (its stderr is returned).
    """
    bash = _bash()
    record = Path(cwd) / "calls.txt"
    record.unlink(missing_ok=True)
    lines = ["set -eo pipefail"]
    for name in stubs:
        lines.append(f"{name}() {{ printf '%s\\0' {name} \"$@\"; printf '\\n'; }} >> \"$CALLS\"")
    script = "\n".join(lines) + "\n" + step["run"]
    missing = set(step.get("env", {})) - set(env)
    assert not missing, f"no stand-in for {missing}"
    result = subprocess.run([bash, "-c", script], cwd=cwd, capture_output=True, text=True, check=False,
                            env={**os.environ, "CALLS": record.as_posix(), **env})
    if fails:
        assert result.returncode != 0, result.stdout
        return result.stdout + result.stderr
    assert result.returncode == 0, result.stderr
    text = record.read_text(encoding="utf-8") if record.exists() else ""
    return [line.split("\0")[:-1] for line in text.splitlines() if line]


BUILD_JOBS = {f"{stage}-{kind}" for stage in ("magma", "build", "torchvision") for kind in ("windows", "linux")}


# Stand-ins for a job that takes nothing from the published label (the usual first night).
NOTHING_PUBLISHED = {"FROM_CHANNEL": "", "PUBLISHED_CHANNEL": "torchwin/label/nightly"}


def _conda_build_calls(workflow, tmp_path, dependency_channels="defaults"):
    calls = {}
    for job_name, job, step in _steps_running(workflow, "conda build"):
        env = {"RECIPE_DIR": "recipes/pytorch", "COMPANION_DIR": "", "DEPENDENCY_CHANNELS": dependency_channels,
               "ZSTD_LEVEL": "7", "GITHUB_WORKSPACE": "/ws", "RUNNER_TEMP": "/tmp/rt", **NOTHING_PUBLISHED}
        calls[job_name] = _run_with_stubs(step, env, ["conda"], tmp_path)
    return calls


def test_conda_build_uses_only_options_conda_build_26_accepts_for_v1_recipes(workflows, tmp_path):
    calls = _conda_build_calls(workflows["nightly.yml"], tmp_path)
    assert set(calls) == BUILD_JOBS
    for job_name, argvs in calls.items():
        assert len(argvs) == 1 and argvs[0][:3] == ["conda", "build", "recipes/pytorch"], job_name
        flags = {word for word in argvs[0] if word.startswith("-")}
        assert flags <= CONDA_BUILD_V1_FLAGS, flags - CONDA_BUILD_V1_FLAGS
        assert "-m" in flags and "--output-folder" in flags


def _option(argv, flag):
    return [argv[i + 1] for i, word in enumerate(argv) if word == flag]


def test_conda_build_packs_with_the_nightly_zstd_level_of_torchwin_build(workflows, tmp_path):
    """build.py's NIGHTLY_PACKAGE_FORMAT (chosen from the benchmarks) is the one source of the level."""
    from torchwin import build

    kind, _, level = build.NIGHTLY_PACKAGE_FORMAT.partition(":")
    assert kind == "conda" and level.isdigit()
    nightly = workflows["nightly.yml"]
    calls = _conda_build_calls(nightly, tmp_path)
    assert set(calls) == BUILD_JOBS
    for job_name, job, build_step in _steps_running(nightly, "conda build"):
        (argv,) = calls[job_name]
        assert _option(argv, "--package-format") == ["conda"], job_name
        assert _option(argv, "--zstd-compression-level") == ["7"], job_name  # the ZSTD_LEVEL stand-in
        build_index = job["steps"].index(build_step)
        assert build_step["env"]["ZSTD_LEVEL"] == "${{ steps.package-format.outputs.zstd-level }}"
        # The step that fills it in runs before, with the nightly switch of the job set...
        level_index, level_step = next((i, s) for i, s in enumerate(job["steps"])
                                       if s.get("id") == "package-format")
        assert level_index < build_index
        assert job["env"]["TORCHWIN_NIGHTLY"] == "${{ needs.plan.outputs.date }}"
        # ...and, run as written, writes build.py's nightly level to $GITHUB_OUTPUT.
        (line,) = _logical_lines(level_step["run"])
        words = shlex.split(line)
        assert words[0] == "torchwin", words
        output = tmp_path / f"github-output-{job_name}"
        result = subprocess.run([sys.executable, "-m", "torchwin", *words[1:]], capture_output=True, text=True,
                                check=False, env={**os.environ, "TORCHWIN_NIGHTLY": "20190601",
                                                  "GITHUB_OUTPUT": str(output)})
        assert result.returncode == 0, result.stderr
        assert output.read_text().splitlines() == ["package-format=conda", f"zstd-level={level}"], job_name


# conda-forge's cudatoolkit starts at 9.2; 8.0 and 9.0 (and the cuDNN 7 / MKL 2019 builds that go
# with them) were only ever published to Anaconda's `defaults`.
CONDA_FORGE_FIRST_CUDATOOLKIT = (9, 2)


def _dependency_channels(step):
    value = step["env"]["DEPENDENCY_CHANNELS"]
    assert value == "${{ vars.TORCHWIN_CONDA_CHANNELS || 'defaults' }}", value
    return [_expression_default(value, {})]


def test_builds_and_tests_get_their_dependencies_from_channels_that_have_them(workflows, plan, tmp_path):
    nightly = workflows["nightly.yml"]
    entries = json.loads(plan["outputs"]["all"])["include"]
    old_cuda = sorted({e["cuda"] for e in entries if e["cuda"] != "none"
                       and tuple(map(int, e["cuda"].split("."))) < CONDA_FORGE_FIRST_CUDATOOLKIT})
    assert old_cuda, "the matrix builds CUDA 8.0/9.0 variants: cudatoolkit for them is only in defaults"
    steps = (_steps_running(nightly, "conda build") + _steps_running(nightly, "conda create"))
    assert {job for job, _, _ in steps} == BUILD_JOBS | {"test", "gpu-test"}
    for job_name, _, step in steps:
        assert "defaults" in _dependency_channels(step), job_name
    # What the steps run: first this run's own channel, then the dependency channels, nothing else.
    for dependency_channels, expected in (("defaults", ["defaults"]),
                                          ("defaults, conda-forge", ["defaults", "conda-forge"])):
        for job_name, argvs in _conda_build_calls(nightly, tmp_path, dependency_channels).items():
            assert "--override-channels" in argvs[0]
            assert _option(argvs[0], "-c") == ["/ws/toolchain-channel", *expected], job_name
        for job_name, _, step in _steps_running(nightly, "conda create"):
            env = {"PYTHON_VERSION": "3.6", "PACKAGE_SPECS": "pytorch ==1.2.0.dev20190601 py36_cpu_0;cpuonly",
                   "DEPENDENCY_CHANNELS": dependency_channels, "GITHUB_WORKSPACE": "/ws", "RUNNER_TEMP": "/rt",
                   **NOTHING_PUBLISHED}
            (argv,) = _run_with_stubs(step, env, ["conda"], tmp_path)
            assert "--override-channels" in argv
            assert _option(argv, "-c") == ["/ws/test-channel", *expected], job_name
            assert argv[-3:] == ["python=3.6", "pytorch ==1.2.0.dev20190601 py36_cpu_0", "cpuonly"]
    # The conda set-up steps install tools only, from conda-forge, with strict priority: the first
    # channel that has a name (ours, for vc and pytorch-mutex) is the only one it comes from.
    setups = [s for _, _, s in steps_of(nightly) if s.get("uses", "").startswith("conda-incubator/")]
    assert len(setups) == len(BUILD_JOBS) + 2
    for step in setups:
        assert step["with"]["channels"] == "conda-forge"
        assert step["with"]["channel-priority"] == "strict"


def test_publish_keeps_rebuilt_toolchain_and_magma_packages_and_guards_pytorch_builds(workflows, tmp_path):
    publish = workflows["nightly.yml"]["jobs"]["publish"]
    magma = "packages/packages-magma-win-64-cuda9.0/win-64/magma-cuda90-2.5.0-0.conda"
    for name in ("toolchain/win-64/vs2017_win-64-19.11-h0_0.conda", "toolchain/noarch/cpuonly-1.0-0.conda", magma,
                 "packages/packages-pytorch-win-64-py3.6-cpu/win-64/pytorch-1.2.0.dev20190601-py36_cpu_0.conda",
                 "packages/packages-pytorch-linux-64-py3.6-cpu/pytorch-1.2.0.dev20190601-py36_cpu_0.tar.bz2",
                 "packages/packages-torchvision-win-64-py3.6-cpu/win-64/torchvision-0.3.0-py36_cpu_1.conda"):
        (tmp_path / "dist" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "dist" / name).write_bytes(b"")
    download = next(s for s in publish["steps"] if s.get("name") == "Download every package")
    # One folder per artifact, so that the files of the rebuilt artifacts can be told apart.
    assert download["with"]["pattern"] == "packages-*" and "merge-multiple" not in download["with"]
    for step_name, dry in (("Upload to anaconda.org", []), ("Show what would be published and pruned (dry run)",
                                                             ["--dry-run"])):
        step = next(s for s in publish["steps"] if s["name"] == step_name)
        assert step["env"]["REBUILT"] == "${{ needs.plan.outputs.skip-rebuilt-artifacts }}"
        env = {k: "x" for k in step.get("env", {})} | {"LABEL": "nightly",
                                                      "REBUILT": "packages-magma-win-64-cuda9.0 packages-magma-x"}
        calls = _run_with_stubs(step, env, ["torchwin"], tmp_path)
        uploads = [argv for argv in calls if "--prune" not in argv]
        toolchain, packages = uploads
        # Toolchain and magma first (what the PyTorch builds depend on), and only they with --skip-rebuilt.
        head = ["torchwin", "publish", *dry, "--label", "nightly"]
        assert toolchain[:len(head) + 1] == [*head, "--skip-rebuilt"], step_name
        assert sorted(toolchain[len(head) + 1:]) == ["dist/" + magma, "dist/toolchain/noarch/cpuonly-1.0-0.conda",
                                                     "dist/toolchain/win-64/vs2017_win-64-19.11-h0_0.conda"]
        assert packages[:len(head)] == head and "--skip-rebuilt" not in packages, step_name
        assert sorted(packages[len(head):]) == [
            "dist/packages/packages-pytorch-linux-64-py3.6-cpu/pytorch-1.2.0.dev20190601-py36_cpu_0.tar.bz2",
            "dist/packages/packages-pytorch-win-64-py3.6-cpu/win-64/pytorch-1.2.0.dev20190601-py36_cpu_0.conda",
            "dist/packages/packages-torchvision-win-64-py3.6-cpu/win-64/torchvision-0.3.0-py36_cpu_1.conda"]


# ---------------------------------------------------------------- the commands the steps run


def _logical_lines(script):
    return [line.strip() for line in script.replace("\\\n", " ").splitlines() if line.strip()]


def _arguments(line, env):
    """The argv of one shell line, with variables replaced by their (stand-in) values."""
    line = line.split(" > ")[0]
    line = re.sub(r'"\$\{(\w+)\[@\]\}"', "placeholder.conda", line)
    words = shlex.split(line)
    return [re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), "x"), w) for w in words]


def _placeholder(parser, argv):
    sub = parser._subparsers._group_actions[0].choices[argv[0]]
    return "not yet written" in (sub.description or "") + (sub.format_help() or "")


def test_every_torchwin_command_line_in_the_workflows_is_accepted_by_the_cli(workflows):
    parser = make_parser()
    seen = set()
    for name, workflow in workflows.items():
        for job_name, _, step in bash_steps(workflow):
            env = {k: "x" for k in step.get("env", {})}
            for line in _logical_lines(step["run"]):
                if not line.startswith("torchwin "):
                    continue
                argv = _arguments(line, env)[1:]
                if _placeholder(parser, argv):
                    continue
                try:
                    parser.parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{name}: {job_name}: `{line}` is not accepted by the torchwin CLI")
                seen.add(" ".join(argv[:2]) if argv[0] == "ci" else argv[0])
    assert {"nightly-version", "render", "ci upstream", "ci nightly-gate", "ci matrix", "ci install-vs2017",
            "ci install-cuda", "ci variant-file", "doctor", "build", "channel", "publish"} <= seen


# ---------------------------------------------------------------- the plan job, run for real


def _expression_default(value, known):
    """What a step's env value is on a plain scheduled run: `vars.X || 'd'` -> d, `vars.X` -> ''."""
    value = str(value)
    for key, result in known.items():
        if key in value:
            return result
    fallback = re.search(r"\|\|\s*'([^']*)'\s*}}$", value)
    return fallback.group(1) if fallback else ("" if "${{" in value else value)


def _read_outputs(path):
    """Parse a GITHUB_OUTPUT file (NAME=VALUE lines and NAME<<DELIM heredocs)."""
    outputs, lines = {}, path.read_text(encoding="utf-8").splitlines()
    while lines:
        line = lines.pop(0)
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            while lines[0] != delimiter:
                body.append(lines.pop(0))
            lines.pop(0)
            outputs[name] = "\n".join(body)
        else:
            name, _, value = line.partition("=")
            outputs[name] = value
    return outputs


def _nightly_base():
    from torchwin.ci import nightly

    return nightly.upstream_source()[2]


@pytest.fixture(scope="module")
def plan(tmp_path_factory, workflows):
    """Run the plan job's render and matrix steps as the workflow writes them; return what they produced."""
    tmp = tmp_path_factory.mktemp("plan")
    mp = pytest.MonkeyPatch()
    try:
        steps = workflows["nightly.yml"]["jobs"]["plan"]["steps"]
        render_step = next(s for s in steps if s.get("run", "").startswith("torchwin render"))
        matrix_step = next(s for s in steps if s.get("id") == "matrix")
        mp.chdir(ROOT)
        mp.setenv("RUNNER_TEMP", str(tmp))
        mp.setenv("GITHUB_OUTPUT", str(tmp / "outputs"))
        # What the version step would have handed on for the nightly of 2019-06-01, on the
        # release line `torchwin ci upstream` picks (its <next>).
        mp.setenv("TORCHWIN_NIGHTLY", "20190601")
        mp.setenv("TORCHWIN_NIGHTLY_BASE", _nightly_base())
        mp.delenv("TORCHWIN_SOURCE_DIR", raising=False)
        argv = _arguments(_logical_lines(render_step["run"])[0], {})
        assert render_step["run"].rstrip().endswith('> "$RUNNER_TEMP/render.json"')
        out = subprocess.run([sys.executable, "-m", "torchwin", *argv[1:]], capture_output=True, text=True,
                             check=False)
        assert out.returncode == 0, out.stderr
        (tmp / "render.json").write_text(out.stdout, encoding="utf-8")
        records = json.loads(out.stdout)
        versions = {r["version"] for r in records if r["recipe"] == "pytorch"}
        assert len(versions) == 1, versions
        known = {"steps.version.outputs.version": versions.pop()}
        env = {k: _expression_default(v, known) for k, v in matrix_step["env"].items()}
        env["RUNNER_TEMP"] = str(tmp)
        # The published step's answer on a first night: nothing (tests/ci/test_nightly.py asks a fake
        # anaconda.org for the nights after).
        (tmp / "published.json").write_text("[]\n", encoding="utf-8")
        argv = _arguments(_logical_lines(matrix_step["run"])[0], env)
        assert main(argv[1:]) == 0
        return {"records": records, "outputs": _read_outputs(tmp / "outputs"), "tmp": tmp}
    finally:
        mp.undo()


def _render_builds(records):
    builds = {}
    for r in records:
        if r["recipe"] == "pytorch" and not r["noarch"]:
            variant = r["variant"]
            key = (r["target_platform"], str(variant["python"]), ci_matrix.cuda_of(variant), r["version"])
            builds.setdefault(key, set()).add(f"{r['name']} {r['build_string']}")
    return builds


def test_plan_matrix_equals_the_rendered_variants(plan):
    outputs = plan["outputs"]
    entries = json.loads(outputs["windows"])["include"] + json.loads(outputs["linux"])["include"]
    assert json.loads(outputs["all"])["include"] == entries
    assert outputs["count"] == str(len(entries))
    from_matrix = {(e["target_platform"], e["python"], e["cuda"], e["version"]): set(e["packages"])
                   for e in entries}
    assert len(from_matrix) == len(entries), "one job per variant"
    assert from_matrix == _render_builds(plan["records"])
    assert {e["target_platform"] for e in json.loads(outputs["windows"])["include"]} == {"win-64"}
    assert all(e["runner"] == "windows-2022" for e in json.loads(outputs["windows"])["include"])
    assert all(e["runner"] == "ubuntu-24.04" for e in json.loads(outputs["linux"])["include"])
    assert len({e["id"] for e in entries}) == len(entries)
    # No GPU runner declared on a plain run: no GPU jobs.
    assert json.loads(outputs["gpu"]) == {"include": []} and outputs["gpu-count"] == "0"


def test_plan_names_the_script_only_recipes_for_the_toolchain_job(plan):
    # magma compiles (nvcc + MSVC/gcc) and torchvision builds on pytorch: both get build jobs instead.
    rendered = {r["recipe"] for r in plan["records"]}
    assert {"magma", "pytorch"} <= rendered
    # pytorch-cpu needs pytorch's build: it rides along with a pytorch job (its companion).
    assert "pytorch-cpu" in rendered
    expected = sorted(f"recipes/{r}" for r in rendered - {"pytorch", "magma", "torchvision", "pytorch-cpu"})
    assert plan["outputs"]["support-recipes"].split() == expected
    assert {"recipes/vs2017", "recipes/nvcc", "recipes/pytorch-select"} <= set(expected)


def test_the_alias_rides_along_with_one_cpu_job(plan, workflows, tmp_path):
    """recipes/pytorch-cpu has no jobs: the first CPU pytorch job (Linux's) builds it right after its
    own build, from its output folder (never without its pytorch), and its test installs both. One
    job only: publish refuses two different files of one name, and the alias is noarch."""
    entries = [e for k in ("windows", "linux") for e in json.loads(plan["outputs"][k])["include"]]
    carriers = [e for e in entries if e["companion_dir"]]
    assert [e["target_platform"] for e in carriers] == ["linux-64"]
    for carrier in carriers:
        cpu = sorted((e for e in entries if e["target_platform"] == carrier["target_platform"]
                      and e["cuda"] == "none"), key=lambda e: tuple(int(x) for x in e["python"].split(".")))
        assert carrier["id"] == cpu[0]["id"]
        assert carrier["companion_dir"] == "recipes/pytorch-cpu"
        assert set(carrier["companion_variant"]) == {"pytorch_commit", "pytorch_nightly_base"}
        alias = [s for s in carrier["test_specs"] if s.startswith("pytorch-cpu ")]
        assert alias == ["pytorch-cpu ==%s cpu_1" % carrier["version"]]
    assert all(e["companion_variant"] == {} for e in entries if not e["companion_dir"])
    # The steps: a second variant file, a second conda build whose first channel is the output folder.
    job = workflows["nightly.yml"]["jobs"]["build-linux"]
    pin = next(s for s in job["steps"] if s.get("name") == "Pin this variant")
    env = {"VARIANT": "{}", "TARGET_PLATFORM": "linux-64", "RECIPE_DIR": "recipes/pytorch",
           "COMPANION_VARIANT": json.dumps(carriers[0]["companion_variant"]), "COMPANION_DIR": "recipes/pytorch-cpu",
           "RUNNER_TEMP": "/tmp/rt"}
    calls = _run_with_stubs(pin, env, ["torchwin"], tmp_path)
    assert [c[c.index("--recipe") + 1] for c in calls] == ["recipes/pytorch", "recipes/pytorch-cpu"]
    assert _run_with_stubs(pin, dict(env, COMPANION_DIR=""), ["torchwin"], tmp_path)[1:] == []
    build = next(s for s in job["steps"] if s.get("name") == "conda build")
    env = {"RECIPE_DIR": "recipes/pytorch", "COMPANION_DIR": "recipes/pytorch-cpu", "DEPENDENCY_CHANNELS": "defaults",
           "ZSTD_LEVEL": "7", "GITHUB_WORKSPACE": "/ws", "RUNNER_TEMP": "/tmp/rt", **NOTHING_PUBLISHED}
    first, second = _run_with_stubs(build, env, ["conda"], tmp_path)
    assert first[:3] == ["conda", "build", "recipes/pytorch"]
    assert second[:3] == ["conda", "build", "recipes/pytorch-cpu"]
    assert _option(second, "-m") == ["/tmp/rt/companion.yaml"]
    assert _option(second, "-c") == ["/ws/output", *_option(first, "-c")]
    assert _option(second, "--output-folder") == ["output"]


def test_each_variant_file_makes_conda_build_pick_exactly_that_build(plan, workflows, monkeypatch):
    """Replays conda-build 26's v1 path for every build job of every stage: the recipe's variants.yaml,
    merged with the -m file the job writes, rendered."""
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20190601")
    monkeypatch.setenv("TORCHWIN_NIGHTLY_BASE", _nightly_base())
    jobs = workflows["nightly.yml"]["jobs"]
    checked = set()
    for job_name in sorted(BUILD_JOBS):
        job = jobs[job_name]
        step = next(s for s in job["steps"] if s.get("run", "").startswith("torchwin ci variant-file"))
        output = _matrix_output(job)
        for entry in json.loads(plan["outputs"][output])["include"]:
            _check_variant_file(step, entry, plan["tmp"])
            checked.add(entry["recipe"])
    assert checked >= {"magma", "pytorch"}


def _matrix_output(job):
    """`${{ fromJSON(needs.plan.outputs.X) }}` -> X."""
    match = re.fullmatch(r"\$\{\{ fromJSON\(needs\.plan\.outputs\.([\w-]+)\) \}\}", job["strategy"]["matrix"])
    assert match, job["strategy"]["matrix"]
    return match.group(1)


def _check_variant_file(step, entry, tmp):
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, VariantConfig
    from torchwin import recipes

    recipe_dir = ROOT / entry["recipe_dir"]
    recipe = Stage0Recipe.from_file(recipe_dir / "recipe.yaml")
    variant_file = tmp / f"{entry['id']}.yaml"
    argv = _arguments(_logical_lines(step["run"])[0],
                      {"VARIANT": json.dumps(entry["variant"]), "RUNNER_TEMP": str(tmp),
                       "TARGET_PLATFORM": entry["target_platform"], "RECIPE_DIR": str(recipe_dir)})
    argv[argv.index("--output") + 1] = str(variant_file)
    assert main(argv[1:]) == 0
    platform = entry["target_platform"]
    config = recipes.load_variant_config(recipe_dir, platform)
    config = config.merge(VariantConfig.from_file(variant_file))
    rendered = recipe.render(config, RenderConfig(platform=PlatformConfig(target_platform=platform)))
    built = {f"{v.recipe.package.name} {v.recipe.build.string}" for v in rendered
             if not v.recipe.build.to_dict().get("noarch")}
    assert built == set(entry["packages"]), entry["id"]


# ---------------------------------------------------------------- `torchwin ci matrix` on a small sample


def _record(platform, python, cuda, name="pytorch", version="1.2.0.dev20190601", noarch=None, **extra):
    variant = {"python": python, "cuda_compiler_version": cuda, "target_platform": platform, **extra}
    tag = "cpu" if cuda == "None" else "cuda" + cuda.replace(".", "")
    return {"recipe": "pytorch", "name": name, "version": version,
            "build_string": f"py{python.replace('.', '')}_{tag}_1", "build_number": 1, "subdir": platform,
            "target_platform": platform, "noarch": noarch, "variant": {} if noarch else variant,
            "depends": [], "constrains": [], "track_features": [],
            # As the recipe renders its package test (recipes/pytorch/recipe.yaml `tests:`).
            "tests": [{"script": {"content": "python run_test.py",
                                  "env": {"TORCHWIN_EXPECT_VERSION": version, "TORCHWIN_REQUIRE_CUDA": "0"}}}]}


SAMPLE = [
    _record("win-64", "3.6", "9.0"),
    _record("win-64", "3.6", "None"),
    _record("linux-64", "3.7", "9.2"),
    _record("linux-64", "3.7", "9.2", name="pytorch-tests"),  # a second output of the same build
    _record("linux-64", "", "", name="pytorch-cpu", noarch="generic"),
    {**_record("win-64", "3.6", "9.0"), "recipe": "pytorch-select", "name": "cuda90", "variant": {}},
]


def _no_zips(recipe_dir, platform):
    return [], {}


def test_matrix_groups_outputs_of_one_build_and_skips_noarch():
    matrix = ci_matrix.build_matrix(SAMPLE, zip_info=_no_zips)
    ids = [e["id"] for e in matrix["windows"] + matrix["linux"]]
    assert ids == ["pytorch-win-64-py3.6-cuda9.0", "pytorch-win-64-py3.6-cpu",
                   "pytorch-linux-64-py3.7-cuda9.2"]
    linux = matrix["linux"][0]
    assert linux["packages"] == ["pytorch py37_cuda92_1", "pytorch-tests py37_cuda92_1"]
    assert linux["specs"][0] == "pytorch ==1.2.0.dev20190601 py37_cuda92_1"
    assert linux["cuda"] == "9.2" and linux["expect_variant"] == "cuda9.2"
    assert "target_platform" not in linux["variant"]  # the build machine decides that
    assert matrix["windows"][1]["cuda"] == "none" and matrix["windows"][1]["expect_variant"] == "cpu"
    assert ci_matrix.support_recipes(SAMPLE) == ["recipes/pytorch-select"]


def test_runner_labels_by_platform_and_cuda():
    runners = ci_matrix.Runners(windows="windows-2022", windows_cuda="self-hosted, windows, cuda",
                                gpu="self-hosted,windows,gpu")
    matrix = ci_matrix.build_matrix(SAMPLE, runners=runners, zip_info=_no_zips)
    by_id = {e["id"]: e for e in matrix["windows"]}
    assert by_id["pytorch-win-64-py3.6-cpu"]["runner"] == "windows-2022"
    assert by_id["pytorch-win-64-py3.6-cuda9.0"]["runner"] == ["self-hosted", "windows", "cuda"]
    assert by_id["pytorch-win-64-py3.6-cuda9.0"]["test_runner"] == "windows-2022"
    assert [(e["id"], e["runner"]) for e in matrix["gpu"]] == [
        ("pytorch-win-64-py3.6-cuda9.0", ["self-hosted", "windows", "gpu"])]


def test_only_filters_by_id_globs():
    only = ci_matrix.parse_only(["pytorch-win-64-*-cuda9.0, pytorch-linux-64-*"])
    matrix = ci_matrix.build_matrix(SAMPLE, only=only, zip_info=_no_zips)
    assert [e["id"] for e in matrix["windows"] + matrix["linux"]] == [
        "pytorch-win-64-py3.6-cuda9.0", "pytorch-linux-64-py3.7-cuda9.2"]
    with pytest.raises(ci_matrix.UserError, match="matches no variant"):
        ci_matrix.build_matrix(SAMPLE, only=["nothing-*"], zip_info=_no_zips)


def test_several_releases_of_one_variant_get_distinct_ids():
    records = [_record("win-64", "3.6", "9.0", version="1.0.1", pytorch_version="1.0.1"),
               _record("win-64", "3.6", "9.0", version="1.1.0", pytorch_version="1.1.0")]
    matrix = ci_matrix.build_matrix(records, zip_info=_no_zips)
    assert [e["id"] for e in matrix["windows"]] == ["pytorch-win-64-py3.6-cuda9.0-1.0.1",
                                                    "pytorch-win-64-py3.6-cuda9.0-1.1.0"]
    # The compiler cache is shared across versions: the key leaves the version out.
    assert {e["cache_key"] for e in matrix["windows"]} == {"pytorch-win-64-py3.6-cuda9.0"}


def test_zip_partners_of_pinned_keys_are_pinned_too():
    def zips(recipe_dir, platform):
        return [["cuda_compiler_version", "cudnn"]], {"cuda_compiler_version": ["None", "9.0"],
                                                       "cudnn": ["None", "7"]}

    matrix = ci_matrix.build_matrix([_record("win-64", "3.6", "9.0")], zip_info=zips)
    assert matrix["windows"][0]["variant"]["cudnn"] == "7"


def test_version_disagreement_with_nightly_version_fails():
    with pytest.raises(ci_matrix.Failure, match="nightly-version says 1.3.0.dev20190601"):
        ci_matrix.build_matrix(SAMPLE, expect_version="1.3.0.dev20190601", zip_info=_no_zips)


def test_outputs_of_one_build_that_disagree_fail():
    records = [_record("win-64", "3.6", "9.0", blas="mkl"),
               _record("win-64", "3.6", "9.0", name="x", blas="openblas")]
    with pytest.raises(ci_matrix.Failure, match="disagree on blas"):
        ci_matrix.build_matrix(records, zip_info=_no_zips)


def test_matrix_cli_bad_input(tmp_path, capsys):
    bad = tmp_path / "render.json"
    bad.write_text("[{\"recipe\": \"pytorch\"}]", encoding="utf-8")
    assert main(["ci", "matrix", str(bad)]) == 2
    assert "item 0 lacks name" in capsys.readouterr().err
    bad.write_text("not json", encoding="utf-8")
    assert main(["ci", "matrix", str(bad)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_multiline_outputs_use_a_heredoc(tmp_path, monkeypatch):
    from torchwin.ci import gha

    target = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(target))
    gha.write_outputs([("one", "a"), ("two", "b\nc")])
    assert _read_outputs(target) == {"one": "a", "two": "b\nc"}


def test_variant_file_pins_one_value_per_key(tmp_path, capsys):
    out = tmp_path / "v.yaml"
    assert main(["ci", "variant-file", "--variant-json", '{"python": "3.6", "cuda_build_offset": 200}',
                 "--output", str(out), "--target-platform", "win-64"]) == 0
    pinned = yaml.safe_load(out.read_text())
    # The zip partners of the pinned offset come along: 200 is the CUDA 9.0 / cuDNN 7 row.
    assert pinned["python"] == ["3.6"] and pinned["cuda_build_offset"] == [200]
    assert pinned["cuda_compiler_version"] == ["9.0"] and pinned["cudnn"] == ["7"]
    assert "pytorch_version" not in pinned
    # --output: the file, and one line saying so (issue 26: it printed the file's text too).
    printed = capsys.readouterr().out
    assert printed.count("\n") == 1 and printed.startswith("wrote %s: " % out) and "python=3.6" in printed
    assert main(["ci", "variant-file", "--variant-json", "[1]", "--output", str(out)]) == 2


@pytest.mark.parametrize("variant, message", [
    ('{"python": "2.7"}', "--variant-json: python='2.7' is not in recipes/pytorch/variants.yaml (for win-64); "
                          "allowed: 3.5, 3.6, 3.7"),
    ('{"pyhton": "3.6"}', "--variant-json: pyhton is not a key of recipes/pytorch/variants.yaml (for win-64)"),
    ('{"cuda_compiler_version": "9.0", "cudnn": "None"}', "--variant-json: no row of the zip"),
    ('{"python": "3.6", "target_platform": "linux-64"}', "target_platform='linux-64' is not in"),
])
def test_variant_file_refuses_a_pin_the_matrix_does_not_have(tmp_path, capsys, monkeypatch, variant, message):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sub" / "v.yaml"
    assert main(["ci", "variant-file", "--variant-json", variant, "--output", str(out),
                 "--target-platform", "win-64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "sub").exists()  # nothing written


# ---------------------------------------------------------------- stages: magma -> pytorch -> torchvision


def _job_recipes(workflows):
    """The --job-recipes list the plan job hands `torchwin ci matrix`."""
    step = next(s for s in workflows["nightly.yml"]["jobs"]["plan"]["steps"] if s.get("id") == "matrix")
    argv = _arguments(_logical_lines(step["run"])[0], {})
    return ci_matrix.parse_only([argv[argv.index("--job-recipes") + 1]])


@pytest.fixture(scope="module")
def releases(workflows):
    """`torchwin render --target-platform all --json` of every release (no nightly), and its matrix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHWIN_")}
    out = subprocess.run([sys.executable, "-m", "torchwin", "render", "--target-platform", "all", "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=False, env=env)
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    job_recipes = _job_recipes(workflows)

    def matrix(**kwargs):
        return ci_matrix.build_matrix(records, job_recipes=job_recipes, recipes_root="recipes", **kwargs)

    return {"records": records, "matrix": matrix, "full": matrix(), "job_recipes": job_recipes}


def _entries(matrix):
    return [e for kinds in matrix["recipes"].values() for k in ("windows", "linux") for e in kinds[k]]


def test_stages_come_from_the_render_magma_then_pytorch_then_torchvision(releases):
    full = releases["full"]
    assert full["stages"] == [["magma"], ["pytorch"], ["torchvision"]]
    # The workflow's jobs run in that order, and nothing compiled is left to the toolchain job.
    assert releases["job_recipes"] == ["magma", "pytorch", "torchvision"]
    support = ci_matrix.support_recipes(releases["records"])
    assert "recipes/magma" not in support and "recipes/torchvision" not in support
    assert {"recipes/vs2017", "recipes/nvcc", "recipes/pytorch-select"} <= set(support)
    for entry in _entries(full):
        assert entry["stage"] == full["stages"].index([entry["recipe"]])
        assert entry["artifact"] == "packages-" + entry["id"]
        assert entry["test_script"] == {"magma": "recipes/magma/check_library.py"}.get(
            entry["recipe"], f"recipes/{entry['recipe']}/run_test.py")


def test_each_cuda_pytorch_job_needs_the_magma_job_of_its_platform_and_cuda(releases):
    full = releases["full"]
    by_id = {e["id"]: e for e in _entries(full)}
    needed = set()
    pytorch = [e for e in by_id.values() if e["recipe"] == "pytorch"]
    assert len(pytorch) > 100
    for entry in pytorch:
        magma = [by_id[d] for d in entry["needs"]]
        if entry["cuda"] == "none" or entry["version"].startswith("0.3."):  # 0.3 links no MAGMA
            assert magma == [], entry["id"]
            assert "TORCHWIN_EXPECT_MAGMA=0" in entry["test_env"], entry["id"]
            continue
        assert [(m["recipe"], m["target_platform"], m["cuda"]) for m in magma] == [
            ("magma", entry["target_platform"], entry["cuda"])], entry["id"]
        assert entry["needs_artifacts"] == [magma[0]["artifact"]] == [entry["needs_pattern"]]
        assert entry["test_artifacts"] == sorted([entry["artifact"], magma[0]["artifact"]])
        # The package test requires MAGMA where the build links it (the recipe's own test env).
        assert "TORCHWIN_EXPECT_MAGMA=1" in entry["test_env"], entry["id"]
        needed.add((entry["target_platform"], entry["cuda"]))
    # One magma job per (platform, CUDA) the pytorch jobs need, no other.
    assert sorted((m["target_platform"], m["cuda"]) for m in by_id.values() if m["recipe"] == "magma") == sorted(
        needed)
    assert ("win-64", "9.1") in needed and ("linux-64", "9.2") in needed and ("linux-64", "8.0") in needed


def test_each_torchvision_job_needs_the_pytorch_jobs_of_its_variant_and_their_magma(releases):
    entries = _entries(releases["full"])
    by_id = {e["id"]: e for e in entries}
    torchvision = [e for e in entries if e["recipe"] == "torchvision"]
    assert torchvision
    for entry in torchvision:
        needs = [by_id[d] for d in entry["needs"]]
        torch = [n for n in needs if n["recipe"] == "pytorch"]
        assert torch, entry["id"]
        for dep in torch:
            assert (dep["target_platform"], dep["python"], dep["cuda"]) == (
                entry["target_platform"], entry["python"], entry["cuda"]), (entry["id"], dep["id"])
        # ...and whatever those pytorch jobs need (their magma) is there for the build's tests too.
        assert {d for t in torch for d in t["needs"]} <= set(entry["needs"])
        assert entry["needs_artifacts"] == sorted(n["artifact"] for n in needs)
        assert entry["test_artifacts"] == sorted([entry["artifact"], *entry["needs_artifacts"]])
        if len(entry["needs_artifacts"]) > 1:
            assert entry["needs_pattern"] == "{" + ",".join(entry["needs_artifacts"]) + "}"
    one = by_id["torchvision-win-64-py3.6-cuda9.0-0.3.0"]
    assert one["needs_artifacts"] == ["packages-magma-win-64-cuda9.0", "packages-pytorch-win-64-py3.6-cuda9.0-1.1.0"]
    assert one["test_env"] == ["TORCHWIN_EXPECT_VARIANT=cuda9.0", "TORCHWIN_EXPECT_VERSION=0.3.0"]


@pytest.mark.parametrize("only, expected", [
    # A pytorch job brings the magma job it needs and the torchvision job built on it alone.
    ("pytorch-win-64-py3.6-cuda9.0-1.1.0", ["magma-win-64-cuda9.0", "pytorch-win-64-py3.6-cuda9.0-1.1.0",
                                            "torchvision-win-64-py3.6-cuda9.0-0.3.0"]),
    # CPU builds need no magma.
    ("pytorch-linux-64-py3.7-cpu-1.1.0", ["pytorch-linux-64-py3.7-cpu-1.1.0", "torchvision-linux-64-py3.7-cpu-0.3.0"]),
    # A torchvision job brings what it builds on, and nothing else built on that.
    ("torchvision-linux-64-py3.6-cuda9.0-0.3.0", ["magma-linux-64-cuda9.0", "pytorch-linux-64-py3.6-cuda9.0-1.1.0",
                                                  "torchvision-linux-64-py3.6-cuda9.0-0.3.0"]),
])
def test_only_prunes_magma_and_torchvision_to_what_the_selected_jobs_need(releases, only, expected):
    matrix = releases["matrix"](only=[only])
    assert sorted(e["id"] for e in _entries(matrix)) == expected
    # The build matrices and the test matrix agree; the main outputs stay pytorch's.
    assert sorted(e["id"] for e in matrix["tests"]) == expected
    assert {e["recipe"] for e in matrix["windows"] + matrix["linux"]} == {"pytorch"}


def test_the_nightly_builds_magma_only_for_the_cuda_releases_its_pytorch_jobs_use(plan):
    outputs = plan["outputs"]
    pytorch = json.loads(outputs["all"])["include"]
    magma = json.loads(outputs["magma-windows"])["include"] + json.loads(outputs["magma-linux"])["include"]
    wanted = {(e["target_platform"], e["cuda"]) for e in pytorch if e["needs"]}
    assert wanted and sorted((m["target_platform"], m["cuda"]) for m in magma) == sorted(wanted)
    magma_variants = {"9.0", "9.1", "9.2"}  # recipes/magma/variants.yaml builds more than the nightly needs
    assert {c for _, c in wanted} < magma_variants
    # magma is rebuilt from an unchanged recipe every night: publish keeps the copy already there.
    assert outputs["skip-rebuilt-artifacts"].split() == sorted(m["artifact"] for m in magma)
    assert json.loads(outputs["stages"])[:2] == [["magma"], ["pytorch"]]
    tests = json.loads(outputs["tests"])["include"]
    assert {e["id"] for e in pytorch} | {m["id"] for m in magma} <= {e["id"] for e in tests}
    assert outputs["tests-count"] == str(len(tests))
    # What torchvision renders for the nightly builds on tonight's pytorch jobs, one per variant.
    torchvision = (json.loads(outputs["torchvision-windows"])["include"]
                   + json.loads(outputs["torchvision-linux"])["include"])
    rendered = [r for r in plan["records"] if r["recipe"] == "torchvision" and not r["noarch"]]
    assert len(torchvision) == len(rendered)
    by_variant = {(e["target_platform"], e["python"], e["cuda"]): e["id"] for e in pytorch}
    for entry in torchvision:
        own = by_variant[(entry["target_platform"], entry["python"], entry["cuda"])]
        assert own in entry["needs"] and set(entry["needs"]) - {own} == set(
            next(e for e in pytorch if e["id"] == own)["needs"]), entry["id"]


def test_every_plan_output_the_jobs_read_is_declared_and_written_by_the_matrix_step(workflows, plan):
    nightly = workflows["nightly.yml"]
    declared = nightly["jobs"]["plan"]["outputs"]
    text = NIGHTLY.read_text(encoding="utf-8")
    used = set(re.findall(r"needs\.plan\.outputs\.([\w-]+)", text))
    assert used <= set(declared), used - set(declared)
    from_matrix = {name: re.fullmatch(r"\$\{\{ steps\.matrix\.outputs\.([\w-]+) \}\}", value)
                   for name, value in declared.items()}
    for name, match in from_matrix.items():
        if match:
            assert match.group(1) == name and name in plan["outputs"], name
    for recipe in _job_recipes(workflows):
        for kind in ("windows", "linux"):
            assert f"{recipe}-{kind}" in plan["outputs"] and f"{recipe}-{kind}-count" in plan["outputs"]


def _job_of_output(jobs, output):
    (name,) = [n for n, j in jobs.items() if "strategy" in j and _matrix_output(j) == output]
    return name


def test_nightly_jobs_run_in_stage_order_then_test_then_publish(workflows):
    jobs = workflows["nightly.yml"]["jobs"]
    order = _job_recipes(workflows)
    builds = set()
    for kind in ("windows", "linux"):
        chain = [_job_of_output(jobs, kind if recipe == "pytorch" else f"{recipe}-{kind}") for recipe in order]
        assert chain == [f"magma-{kind}", f"build-{kind}", f"torchvision-{kind}"]
        for before, after in zip(chain, chain[1:]):
            assert before in jobs[after]["needs"], (after, before)
        for name in chain:
            builds.add(name)
            assert "toolchain" in jobs[name]["needs"]
            # Every build job downloads what its entry names and uploads its own artifact.
            steps = jobs[name]["steps"]
            download = next(s for s in steps if s.get("name") == "Download the packages this build needs")
            assert download["with"] == {"pattern": "${{ matrix.needs_pattern }}", "path": "stage-artifacts"}
            upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
            assert upload["with"]["name"] == "${{ matrix.artifact }}"
            names = [s.get("name") for s in steps]
            assert names.index("Make the stage channel") < names.index("conda build")
    assert builds == BUILD_JOBS
    assert set(jobs["test"]["needs"]) >= builds
    assert _job_of_output(jobs, "tests") == "test" and _job_of_output(jobs, "gpu") == "gpu-test"
    assert set(jobs["gpu-test"]["needs"]) >= {f"{r}-windows" for r in ("magma", "build", "torchvision")}
    assert set(jobs["publish"]["needs"]) >= builds | {"test", "gpu-test"}
    condition = " ".join(jobs["publish"]["if"].split())
    for name in builds:
        assert f"needs.{name}.result == 'success'" in condition, name


def test_a_build_job_indexes_the_artifacts_it_needs_and_fails_without_one(workflows, tmp_path):
    job = workflows["nightly.yml"]["jobs"]["torchvision-windows"]
    step = next(s for s in job["steps"] if s.get("name") == "Make the stage channel")
    assert step["env"]["NEEDS_ARTIFACTS"] == "${{ join(matrix.needs_artifacts, ' ') }}"
    names = ["packages-magma-win-64-cuda9.0", "packages-pytorch-win-64-py3.6-cuda9.0"]
    files = [f"stage-artifacts/{names[0]}/win-64/magma-cuda90-2.5.0-0.conda",
             f"stage-artifacts/{names[1]}/pytorch-1.6.0.dev20190601-py36_cuda90_cudnn7_201.conda"]
    (tmp_path / files[0]).parent.mkdir(parents=True)
    (tmp_path / files[0]).write_bytes(b"")
    # The pytorch job failed: its artifact never came.
    message = _run_with_stubs(step, {"NEEDS_ARTIFACTS": " ".join(names)}, ["torchwin"], tmp_path, fails=True)
    assert f"artifact {names[1]} has no package" in message
    (tmp_path / files[1]).parent.mkdir(parents=True)
    (tmp_path / files[1]).write_bytes(b"")
    (argv,) = _run_with_stubs(step, {"NEEDS_ARTIFACTS": " ".join(names)}, ["torchwin"], tmp_path)
    assert argv == ["torchwin", "channel", "add", *files, "--channel-dir", "stage-channel"]
    # ...and conda build then looks there, after the toolchain channel, before the dependency channels.
    (tmp_path / "stage-channel").mkdir()
    build = next(s for s in job["steps"] if s.get("name") == "conda build")
    env = {"RECIPE_DIR": "recipes/torchvision", "COMPANION_DIR": "", "DEPENDENCY_CHANNELS": "defaults", "ZSTD_LEVEL": "7",
           "GITHUB_WORKSPACE": "/ws", "RUNNER_TEMP": "/tmp/rt", **NOTHING_PUBLISHED}
    (argv,) = _run_with_stubs(build, env, ["conda"], tmp_path)
    assert argv[:3] == ["conda", "build", "recipes/torchvision"]
    assert _option(argv, "-c") == ["/ws/toolchain-channel", "/ws/stage-channel", "defaults"]
    # A magma not built tonight (already published) comes from the nightly's label, before the dependencies.
    env["FROM_CHANNEL"] = "magma-cuda90 2.5.0 h0_0"
    (argv,) = _run_with_stubs(build, env, ["conda"], tmp_path)
    assert _option(argv, "-c") == ["/ws/toolchain-channel", "/ws/stage-channel", "torchwin/label/nightly",
                                   "defaults"]


def test_the_test_job_runs_the_recipes_own_test_script_with_its_environment(workflows, tmp_path):
    job = workflows["nightly.yml"]["jobs"]["test"]
    download = next(s for s in job["steps"] if s.get("name") == "Download the packages of this variant")
    assert download["with"] == {"pattern": "${{ matrix.test_pattern }}", "path": "artifacts/packages"}
    channel = next(s for s in job["steps"] if s.get("name", "").startswith("Make the test channel"))
    own = "packages-torchvision-win-64-py3.6-cpu"
    (tmp_path / "artifacts" / "packages" / own).mkdir(parents=True)
    (tmp_path / "artifacts" / "packages" / own / "torchvision-0.3.0-py36_cpu_1.conda").write_bytes(b"")
    env = {"TEST_ARTIFACTS": f"{own} packages-pytorch-win-64-py3.6-cpu"}
    assert "packages-pytorch-win-64-py3.6-cpu has no package" in _run_with_stubs(
        channel, env, ["torchwin"], tmp_path, fails=True)
    step = next(s for s in job["steps"] if s.get("name") == "Package test")
    calls = _run_with_stubs(step, {"TEST_SCRIPT": "recipes/torchvision/run_test.py", "RUNNER_TEMP": "/rt",
                                   "TEST_ENV": "TORCHWIN_EXPECT_VARIANT=cpu TORCHWIN_EXPECT_VERSION=0.3.0"},
                            ["conda", "env"], tmp_path)
    assert calls == [["conda", "activate", "/rt/smoke-env"],
                     ["env", "TORCHWIN_EXPECT_VARIANT=cpu", "TORCHWIN_EXPECT_VERSION=0.3.0", "python",
                      "recipes/torchvision/run_test.py"]]
    # magma's test has no Python of its own to pin: the install names none, the test's own spec brings one.
    install = next(s for s in job["steps"] if s.get("name") == "Install the exact build into a new environment")
    (argv,) = _run_with_stubs(install, {"PYTHON_VERSION": "", "PACKAGE_SPECS": "magma-cuda90 ==2.5.0 0;python >=3.5",
                                        "DEPENDENCY_CHANNELS": "defaults", "GITHUB_WORKSPACE": "/ws",
                                        "RUNNER_TEMP": "/rt", **NOTHING_PUBLISHED}, ["conda"], tmp_path)
    assert argv[-2:] == ["magma-cuda90 ==2.5.0 0", "python >=3.5"] and not any(a.startswith("python=") for a in argv)


# ---------------------------------------------------------------- stage derivation on small samples


def _rec(recipe, name, platform="win-64", variant=None, host=(), run=(), build=(), version="1.0", string="0"):
    return {"recipe": recipe, "name": name, "version": version, "build_string": string, "build_number": 0,
            "subdir": platform, "target_platform": platform, "noarch": None,
            "variant": {"target_platform": platform, **(variant or {})}, "depends": list(run),
            "constrains": [], "track_features": [], "build_requirements": list(build),
            "host_requirements": list(host), "tests": []}


def test_a_recipe_is_compiled_when_it_calls_a_compiler_or_builds_on_one_that_does():
    records = [_rec("gpu-lib", "gpu-lib", variant={"cuda_compiler": "nvcc"}, build=["nvcc_win-64 9.0"]),
               _rec("nvcc", "nvcc_win-64"),
               _rec("pytorch", "pytorch", host=["gpu-lib 1.0.*"], variant={"python": "3.6"}, version="1.1.0"),
               _rec("addon", "addon", run=["pytorch ==1.1.0"], variant={"python": "3.6"})]
    assert ci_stages.compiled_recipes(records, ("pytorch",)) == {"gpu-lib", "pytorch", "addon"}
    assert ci_stages.stages(records, {"gpu-lib", "pytorch", "addon"}) == [["gpu-lib"], ["pytorch"], ["addon"]]
    assert ci_matrix.support_recipes(records) == ["recipes/nvcc"]


def test_recipes_that_need_each_other_are_refused():
    records = [_rec("a", "a", variant={"c_compiler": "x"}, host=["b"]),
               _rec("b", "b", variant={"c_compiler": "x"}, host=["a"])]
    with pytest.raises(ci_matrix.Failure, match="cycle"):
        ci_stages.stages(records, {"a", "b"})


def test_a_pin_that_no_rendered_build_matches_is_an_error():
    records = [_rec("pytorch", "pytorch", variant={"python": "3.6"}, version="1.6.0.dev20190601"),
               _rec("addon", "addon", host=["pytorch ==1.1.0 *_cpu_*"], variant={"python": "3.6"})]
    with pytest.raises(ci_matrix.Failure, match=r"addon-win-64-py3.6-cpu requires 'pytorch ==1.1.0 \*_cpu_\*'"):
        ci_matrix.build_matrix(records, zip_info=_no_zips)


def test_of_several_matching_builds_a_job_needs_the_one_of_its_python():
    records = [_rec("pytorch", "pytorch", variant={"python": p}, string=f"py{p.replace('.', '')}_cpu_1")
               for p in ("3.6", "3.7")]
    records.append(_rec("addon", "addon", host=["pytorch * *_cpu_*"], variant={"python": "3.7"}))
    matrix = ci_matrix.build_matrix(records, zip_info=_no_zips)
    (addon,) = matrix["recipes"]["addon"]["windows"]
    assert addon["needs"] == ["pytorch-win-64-py3.7-cpu"]
    assert addon["needs_pattern"] == "packages-pytorch-win-64-py3.7-cpu"


@pytest.mark.parametrize("job_recipes, message", [
    (["pytorch"], "the render has the compiled recipe(s) gpu-lib, which would be built nowhere"),
    (["pytorch", "gpu-lib"], "pytorch is listed before gpu-lib, but builds in a later stage"),
])
def test_job_recipes_must_cover_the_stages_in_order(tmp_path, capsys, job_recipes, message):
    records = [_rec("gpu-lib", "gpu-lib", variant={"cuda_compiler": "nvcc"}),
               _rec("pytorch", "pytorch", host=["gpu-lib"], variant={"python": "3.6"})]
    render = tmp_path / "render.json"
    render.write_text(json.dumps(records), encoding="utf-8")
    assert main(["ci", "matrix", str(render), "--job-recipes", ",".join(job_recipes)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "0: gpu-lib, 1: pytorch" in err
    # Listed but not rendered: empty matrices (the workflow's job has nothing to do), not an error.
    matrix = ci_matrix.build_matrix(records, zip_info=_no_zips, job_recipes=["gpu-lib", "pytorch", "extra"])
    assert matrix["recipes"]["extra"] == {"windows": [], "linux": []}
    outputs = dict(ci_matrix.github_outputs(matrix))
    assert outputs["extra-windows-count"] == "0" and json.loads(outputs["extra-windows"]) == {"include": []}


def test_every_build_job_of_a_platform_runs_the_same_steps():
    """magma, pytorch and torchvision are built the same way per platform: one steps list (a YAML anchor),
    not copies that drift; only needs, if and the matrix differ."""
    jobs = yaml.safe_load(NIGHTLY.read_text(encoding="utf-8"))["jobs"]
    for kind, first in (("windows", "magma-windows"), ("linux", "magma-linux")):
        for name in ("build-" + kind, "torchvision-" + kind):
            assert jobs[name]["steps"] is jobs[first]["steps"], name  # an alias loads as the same object
            assert jobs[name]["env"] is jobs[first]["env"], name
    assert "Let git write long paths" in {s.get("name") for s in jobs["build-windows"]["steps"]}

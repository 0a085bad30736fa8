"""`torchwin nightly-version` against real git repositories with commits at chosen times."""

import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
import yaml
from torchwin.ci import nightly
from torchwin.cli import main
from torchwin.errors import Failure, UserError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
ROOT = Path(__file__).resolve().parents[2]


class Repo:
    """A throwaway git repository; commit() takes the committer time explicitly (ISO 8601)."""

    def __init__(self, path):
        self.path = path
        path.mkdir()
        self.git("init", "-q")
        self.git("checkout", "-q", "-b", "main")

    def git(self, *args, env=None):
        full_env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="t",
                        GIT_AUTHOR_EMAIL="t@example.org", GIT_COMMITTER_NAME="t",
                        GIT_COMMITTER_EMAIL="t@example.org", **(env or {}))
        full_env["HOME"] = str(self.path)  # no user config (signing, hooks) leaks in
        result = subprocess.run(["git", "-C", str(self.path), *args], capture_output=True, text=True,
                                env=full_env, check=True)
        return result.stdout.strip()

    def commit(self, when, message="c", version_txt=None):
        if version_txt is not None:
            (self.path / "version.txt").write_text(version_txt + "\n", encoding="utf-8")
            self.git("add", "version.txt")
        # Author time differs on purpose: the committer time is what decides.
        self.git("commit", "-q", "--allow-empty", "-m", message,
                 env={"GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": "2001-01-01T00:00:00Z"})
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    return Repo(tmp_path / "upstream")


def test_without_date_uses_the_ref_commit_date_in_utc(repo):
    # 23:30 at UTC-5 is already the next day in UTC.
    sha = repo.commit("2019-04-29T23:30:00-05:00", version_txt="1.2.0a0")
    result = nightly.nightly_version(repo.path)
    assert result.version == "1.2.0.dev20190430"
    assert result.commit == sha
    assert result.commit_time == "2019-04-30T04:30:00Z"
    assert result.next == "1.2.0" and result.next_source == "version.txt"


def test_date_picks_the_last_commit_before_the_midnight_that_ends_it(repo):
    repo.commit("2019-04-29T10:00:00Z", version_txt="1.1.0a0")
    last_of_day = repo.commit("2019-04-30T23:59:59Z", version_txt="1.2.0a0")
    repo.commit("2019-05-01T00:00:00Z")  # exactly midnight: belongs to the next day
    result = nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 30))
    assert (result.commit, result.version) == (last_of_day, "1.2.0.dev20190430")


def test_next_comes_from_version_txt_of_the_chosen_commit(repo):
    repo.commit("2019-04-29T10:00:00Z", version_txt="1.1.0a0")
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    assert nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 29)).version == "1.1.0.dev20190429"


def test_a_day_without_commits_builds_the_previous_commit_under_its_own_date(repo):
    sha = repo.commit("2019-04-28T12:00:00Z", version_txt="1.2.0a0")
    result = nightly.nightly_version(repo.path, date=datetime.date(2019, 5, 2))
    assert (result.commit, result.version) == (sha, "1.2.0.dev20190502")


def test_only_the_first_parent_line_counts(repo):
    repo.commit("2019-04-28T12:00:00Z", version_txt="1.2.0a0")
    repo.git("checkout", "-q", "-b", "side")
    repo.commit("2019-04-29T12:00:00Z", "side work")
    repo.git("checkout", "-q", "main")
    main_before = repo.commit("2019-04-29T08:00:00Z", "main work")
    repo.git("merge", "-q", "--no-ff", "side", "-m", "merge",
             env={"GIT_COMMITTER_DATE": "2019-04-30T09:00:00Z", "GIT_AUTHOR_DATE": "2019-04-30T09:00:00Z"})
    # The side commit (12:00 on the 29th) is newer than main's, but main only pointed at it after the merge.
    result = nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 29))
    assert result.commit == main_before


def test_base_is_used_only_without_version_txt(repo):
    repo.commit("2018-07-26T12:00:00Z")
    assert nightly.nightly_version(repo.path, base="0.4.1").version == "0.4.1.dev20180726"
    with pytest.raises(UserError, match="no version.txt.*--base"):
        nightly.nightly_version(repo.path)
    repo.commit("2018-07-27T12:00:00Z", version_txt="1.0.0a0")
    result = nightly.nightly_version(repo.path, base="0.4.1")
    assert (result.version, result.next_source) == ("1.0.0.dev20180727", "version.txt")


def test_same_question_same_answer_whatever_the_local_timezone(repo, monkeypatch):
    repo.commit("2019-04-30T22:00:00Z", version_txt="1.2.0a0")
    answers = set()
    for tz in ("UTC", "Asia/Tokyo", "America/Los_Angeles"):
        monkeypatch.setenv("TZ", tz)
        answers.add(nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 30)))
    assert len(answers) == 1 and answers.pop().version == "1.2.0.dev20190430"


def test_no_commit_before_the_date_is_bad_input_like_a_missing_version_txt(repo, capsys):
    # One rule (module docstring): a question the history cannot answer as asked is exit 2.
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    with pytest.raises(UserError, match="--date: no commit on .* before 2019-04-30 00:00 UTC"):
        nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 29))
    assert main(["nightly-version", "--repo", str(repo.path), "--date", "2019-04-29"]) == 2
    assert main(["nightly-version", "--repo", str(repo.path), "--date", "2019-04-30"]) == 0
    repo.git("rm", "-q", "version.txt")
    repo.commit("2019-05-02T10:00:00Z", "drop version.txt")
    assert main(["nightly-version", "--repo", str(repo.path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 2 and all(line.startswith("torchwin: error: ") for line in lines)
    assert "no version.txt" in lines[-1] and "Traceback" not in err


def test_a_repository_url_is_refused_as_written(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = "https://github.com/pytorch/pytorch"
    assert main(["nightly-version", "--repo", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--repo {url} is a URL" in err and "https:/g" not in err
    assert list(tmp_path.iterdir()) == []  # nothing cloned or written


@pytest.mark.parametrize("argv", [["render", "recipes/pytorch", "--target-platform", "win-64"],
                                  ["ci", "package-format"]])
def test_torchwin_nightly_must_be_a_calendar_date(monkeypatch, capsys, argv):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20191399")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == "torchwin: error: TORCHWIN_NIGHTLY=20191399: expected a date as YYYYMMDD, e.g. 20190601\n"


def test_parse_date_words_are_utc_days():
    today = datetime.date(2019, 3, 1)
    assert nightly.parse_date("yesterday", today=today) == datetime.date(2019, 2, 28)
    assert nightly.parse_date("today", today=today) == today
    assert nightly.parse_date("2019-04-30") == datetime.date(2019, 4, 30)


def test_cli_json_and_github_output(repo, tmp_path, capsys, monkeypatch):
    sha = repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    outputs = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    # --base "" is what the workflow passes when the repository variable is unset.
    code = main(["nightly-version", "--repo", str(repo.path), "--date", "2019-04-30", "--base", "", "--json",
                 "--github-output"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"] == "1.2.0.dev20190430" and printed["commit"] == sha
    lines = outputs.read_text(encoding="utf-8").splitlines()
    assert lines == ["version=1.2.0.dev20190430", "date=20190430", "commit=" + sha, "next=1.2.0"]


def test_cli_prints_just_the_version(repo, capsys):
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    assert main(["nightly-version", "--repo", str(repo.path)]) == 0
    assert capsys.readouterr().out == "1.2.0.dev20190430\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--date", "2019-13-01"], "--date '2019-13-01' is not a date"),
        (["--ref", "no-such-branch"], "--ref 'no-such-branch' does not name a commit"),
        (["--base", "1.2"], "--base '1.2' is not a version of the form X.Y.Z"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(repo, capsys, argv, message):
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    assert main(["nightly-version", "--repo", str(repo.path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("torchwin: error: ") and message in err and "Traceback" not in err


def test_cli_not_a_repository(tmp_path, capsys):
    assert main(["nightly-version", "--repo", str(tmp_path)]) == 2
    assert "is not a git repository" in capsys.readouterr().err


def test_github_output_outside_actions_is_bad_input(repo, capsys, monkeypatch):
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    assert main(["nightly-version", "--repo", str(repo.path), "--github-output"]) == 2
    assert "GITHUB_OUTPUT is not set" in capsys.readouterr().err


# ---------------------------------------------------------------- the plan job, against a made-up upstream
#
# The plan job's own steps (read from nightly.yml) run here: `torchwin ci upstream`, the
# checkout of upstream (a clone of a git history this test writes), `torchwin nightly-version`
# and `torchwin ci nightly-gate`, which asks an anaconda.org stand-in on 127.0.0.1 (the API's
# /package and /download answers, serving a pytorch-cpu package the engine really built) which
# commit the last published nightly came from.

NIGHTLY_YML = ROOT / ".github" / "workflows" / "nightly.yml"
OWNER = "torchwin"


class FakeAnacondaOrg(ThreadingHTTPServer):
    """GET /package/<owner>/<name> (the file list) and /download/... (a redirect to the file)."""

    daemon_threads = True

    def __init__(self):
        self.packages = {}  # name -> [(record, bytes)]
        self.requests = []
        self.unavailable = 0  # answer this many requests with 503 first
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def publish(self, path, label="nightly", version="1.2.0.dev20190601", timestamp=1559347200000):
        name = path.name.split("-1.")[0]
        record = {"basename": f"noarch/{path.name}", "version": version, "labels": [label],
                  "attrs": {"subdir": "noarch", "timestamp": timestamp}, "upload_time": "2019-06-01T03:00:00Z"}
        self.packages.setdefault(name, []).append((record, path.read_bytes()))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        if server.unavailable:
            server.unavailable -= 1
            return self._send(503, b"busy", "text/plain")
        parts = [unquote(p) for p in self.path.split("/") if p]
        if parts[:2] == ["package", OWNER] and len(parts) == 3 and parts[2] in server.packages:
            body = json.dumps({"name": parts[2], "files": [r for r, _ in server.packages[parts[2]]]}).encode()
            return self._send(200, body, "application/json")
        if parts[:2] == ["download", OWNER] and len(parts) == 6:
            for record, _ in server.packages.get(parts[2], []):
                if record["basename"] == "/".join(parts[4:]):
                    self.send_response(302)
                    self.send_header("Location", "/files/" + record["basename"])
                    self.end_headers()
                    return None
        if parts[:1] == ["files"]:
            for files in server.packages.values():
                for record, data in files:
                    if record["basename"] == "/".join(parts[1:]):
                        return self._send(200, data, "application/octet-stream")
        return self._send(404, b'{"error": "not found"}', "application/json")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def anaconda(tmp_path, monkeypatch):
    server = FakeAnacondaOrg()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "channel.yaml"
    config.write_text(f'name: torchwin\nanaconda: {{owner: {OWNER}, api_url: "{server.url}"}}\n'
                      "labels: [main, nightly]\n", encoding="utf-8")
    monkeypatch.setenv("TORCHWIN_CHANNEL_CONFIG", str(config))
    yield server
    server.shutdown()
    server.server_close()


def built_probe(out, commit, version="1.2.0.dev20190601"):
    """pytorch-cpu as the recipe makes it: noarch, with extra.upstream_commit -- built by the engine."""
    from rattler_build import PlatformConfig, RenderConfig, Stage0Recipe, ToolConfiguration, VariantConfig

    recipe = Stage0Recipe.from_yaml(
        "schema_version: 1\n"
        f"package: {{name: pytorch-cpu, version: '{version}'}}\n"
        "build: {number: 1, string: cpu_1, noarch: generic, script: ['echo packaged']}\n"
        f"extra: {{upstream_commit: '{commit}'}}\n")
    [variant] = recipe.render(VariantConfig(), RenderConfig(platform=PlatformConfig(target_platform="noarch")))
    result = variant.run_build(tool_config=ToolConfiguration(test_strategy="skip"), output_dir=out, channels=[],
                               no_build_id=True, package_format="conda")
    [path] = result.packages
    return Path(path)


def newest_nightly_line():
    """(release, next) of the newest variants.yaml row with a pytorch_nightly_base, read directly."""
    data = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text(encoding="utf-8"))
    rows = [(r, b) for r, b in zip(data["pytorch_version"], data["pytorch_nightly_base"]) if b]
    return max(rows, key=lambda row: tuple(int(x) for x in row[0].split(".")))


def upstream_history(tmp_path):
    """An upstream with the newest nightly release line as its release branch and a newer `main`.

    The branch tip declares what upstream's tag declares (recipes/pytorch/upstream/<release>.json,
    read from the tag by `torchwin upstream-facts`): e.g. 1.6.0a0 in version.txt.
    """
    release, _ = newest_nightly_line()
    facts = json.loads((ROOT / "recipes" / "pytorch" / "upstream" / f"{release}.json").read_text(encoding="utf-8"))
    repo = Repo(tmp_path / "made-up-upstream")
    if facts["declared_version_file"] == "version.txt":
        (repo.path / "setup.py").write_text("import os\n", encoding="utf-8")
        repo.git("add", "setup.py")
        repo.commit("2020-07-24T22:18:09Z", f"v{release}", version_txt=facts["declared_version"])
    else:
        (repo.path / "setup.py").write_text(f"import os\nversion = '{facts['declared_version']}'\n",
                                            encoding="utf-8")
        repo.git("add", "setup.py")
        repo.commit("2019-04-30T23:00:00Z", f"v{release}")
    branch = nightly.release_branch(release)
    repo.git("branch", branch)
    # main has moved on to a version this toolchain cannot build.
    repo.commit("2021-12-04T12:00:00Z", "newer upstream", version_txt="1.11.0a0")
    return repo, branch


def _expr(text, ctx):
    """The few `${{ }}` forms the plan job uses: names, 'literals', ==, || and &&."""
    text = str(text).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2].strip()
    if "==" in text:
        left, right = text.split("==", 1)
        return _expr(left, ctx) == _expr(right, ctx)
    value = ""
    for alternative in text.split("||"):
        for term in alternative.split("&&"):
            term = term.strip()
            if term[:1] == "'":
                value = term.strip("'")
            else:
                value = ctx
                for part in term.split("."):
                    value = value.get(part, "") if isinstance(value, dict) else ""
            if not value:
                break
        if value:
            return value
    return value


def _env_value(value):
    return {True: "true", False: "false"}.get(value, str(value)) if isinstance(value, bool) else str(value)


def run_plan(workdir, upstream, monkeypatch, capsys, variables=None, inputs=None):
    """Run the plan job's steps up to and including the gate; return (context, gate exit code, printed)."""
    workflow = yaml.safe_load(NIGHTLY_YML.read_text(encoding="utf-8"))
    ctx = {"vars": variables or {}, "inputs": inputs or {}, "steps": {}}
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    printed = []
    for step in workflow["jobs"]["plan"]["steps"]:
        if "if" in step and not _expr(step["if"], ctx):
            continue
        if "uses" in step:
            with_ = step.get("with", {})
            if with_.get("path") == "upstream":
                # actions/checkout of the upstream history, here from the made-up repository.
                assert _expr(with_["repository"], ctx) == "pytorch/pytorch"
                ref = _expr(with_["ref"], ctx)
                subprocess.run(["git", "clone", "-q", str(upstream.path), "upstream"], check=True)
                subprocess.run(["git", "-C", "upstream", "fetch", "-q", "origin", ref], check=True)
                subprocess.run(["git", "-C", "upstream", "checkout", "-q", "--detach", "FETCH_HEAD"], check=True)
            continue
        if not step["run"].startswith("torchwin "):
            continue  # installing torchwin: this test runs the checkout's own
        outputs = workdir / f"outputs-{step.get('id', 'x')}"
        outputs.write_text("", encoding="utf-8")
        monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
        env = {k: _env_value(_expr(v, ctx)) for k, v in step.get("env", {}).items()}
        line = " ".join(step["run"].split())
        if line.startswith("torchwin render"):
            break  # render and matrix are run by tests/ci/test_workflows.py's plan fixture
        words = [re.sub(r"\$(\w+)", lambda m: env[m.group(1)], w) for w in shlex.split(line)]
        code = main(words[1:])
        printed.append(capsys.readouterr())
        ctx["steps"][step["id"]] = {"outputs": dict(
            x.split("=", 1) for x in outputs.read_text(encoding="utf-8").splitlines() if "=" in x)}
        if code != 0:
            return ctx, code, printed
    return ctx, 0, printed


def _later_steps_run(ctx):
    """Whether the render and matrix steps, and the jobs after the plan, would run."""
    workflow = yaml.safe_load(NIGHTLY_YML.read_text(encoding="utf-8"))
    steps = workflow["jobs"]["plan"]["steps"]
    render = next(s for s in steps if s.get("run", "").startswith("torchwin render"))
    matrix = next(s for s in steps if s.get("id") == "matrix")
    needs = {"needs": {"plan": {"outputs": {"build": ctx["steps"]["gate"]["outputs"]["build"]}}}}
    toolchain = workflow["jobs"]["toolchain"]
    return bool(_expr(render["if"], ctx)), bool(_expr(matrix["if"], ctx)), bool(_expr(toolchain["if"], needs))


def test_plan_follows_the_newest_release_line_and_skips_a_commit_already_published(
        tmp_path, monkeypatch, capsys, anaconda):
    upstream, branch = upstream_history(tmp_path)
    tip = upstream.git("rev-parse", branch)

    # The first night: nothing published yet -> build, from the line's release branch (variants.yaml's line).
    ctx, code, printed = run_plan(tmp_path / "night1", upstream, monkeypatch, capsys)
    assert code == 0
    source = ctx["steps"]["source"]["outputs"]
    assert source == {"repo": "pytorch/pytorch", "ref": f"refs/heads/{branch}", "base": newest_nightly_line()[1]}
    assert ctx["steps"]["version"]["outputs"]["commit"] == tip
    assert ctx["steps"]["gate"]["outputs"] == {"build": "true"}
    assert "no nightly published yet" in printed[-1].out
    assert _later_steps_run(ctx) == (True, True, True)

    # That nightly is published; the branch has not moved -> stop after the plan, with a notice.
    anaconda.publish(built_probe(tmp_path / "built", tip))
    ctx, code, printed = run_plan(tmp_path / "night2", upstream, monkeypatch, capsys)
    assert code == 0 and ctx["steps"]["gate"]["outputs"] == {"build": "false"}
    assert printed[-1].out.startswith("::notice title=nightly skipped::upstream commit " + tip[:12])
    assert _later_steps_run(ctx) == (False, False, False)
    assert any(r.startswith("/download/torchwin/pytorch-cpu/") for r in anaconda.requests)

    # A dispatch with force=true rebuilds the same commit.
    ctx, code, _ = run_plan(tmp_path / "night3", upstream, monkeypatch, capsys, inputs={"force": True})
    assert code == 0 and ctx["steps"]["gate"]["outputs"] == {"build": "true"}

    # The branch moves: build again.
    upstream.git("checkout", "-q", branch)
    moved = upstream.commit("2021-12-05T10:00:00Z", "a backported Windows fix")
    ctx, code, printed = run_plan(tmp_path / "night4", upstream, monkeypatch, capsys)
    assert code == 0 and ctx["steps"]["version"]["outputs"]["commit"] == moved
    assert ctx["steps"]["gate"]["outputs"] == {"build": "true"}
    assert f"last published: {tip[:12]}" in printed[-1].out


def test_plan_refuses_a_ref_whose_version_the_matrix_does_not_build(tmp_path, monkeypatch, capsys, anaconda):
    upstream, branch = upstream_history(tmp_path)
    ctx, code, printed = run_plan(tmp_path / "night", upstream, monkeypatch, capsys, inputs={"git_ref": "main"})
    assert code == 2
    err = printed[-1].err
    assert err.count("\n") == 1 and err.startswith("torchwin: error: upstream commit ")
    assert "declares version 1.11.0a0 (version.txt)" in err and f"refs/heads/{branch}" in err
    assert "gate" not in ctx["steps"] or ctx["steps"]["gate"]["outputs"] == {}
    assert anaconda.requests == []  # refused before asking anaconda.org anything


def test_the_recipe_records_the_commit_a_nightly_builds(monkeypatch):
    from torchwin import recipes

    commit = "0b868b19063645afed59d6d49aff1e43d1665b88"
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20190601")
    monkeypatch.setenv("TORCHWIN_GIT_REF", commit)
    monkeypatch.delenv("TORCHWIN_SOURCE_DIR", raising=False)
    variants = (recipes.render_recipe(ROOT / "recipes" / "pytorch", "linux-64")
                + recipes.render_recipe(ROOT / "recipes" / nightly.PROBE_PACKAGE, "linux-64"))
    assert [v.name for v in variants].count(nightly.PROBE_PACKAGE) == 1  # the nightly's release line only
    for variant in variants:
        assert variant.rendered.recipe.to_dict()["extra"][nightly.COMMIT_KEY] == commit


def test_gate_bad_input(tmp_path, capsys, anaconda):
    upstream, _ = upstream_history(tmp_path)
    assert main(["ci", "nightly-gate", "--repo", str(upstream.path), "--commit", "nope"]) == 2
    assert "--commit 'nope' does not name a commit" in capsys.readouterr().err
    assert main(["ci", "nightly-gate", "--repo", str(upstream.path), "--label", "weekly"]) == 2
    assert "--label 'weekly' is not a label" in capsys.readouterr().err
    assert main(["ci", "upstream", "--repo", "https://github.com/pytorch/pytorch"]) == 2
    assert "TORCHWIN_UPSTREAM_REPO=https://github.com/pytorch/pytorch: expected a GitHub owner/name" in \
        capsys.readouterr().err


def test_anaconda_org_hiccups_are_retried_and_an_outage_is_one_line(tmp_path, anaconda, capsys):
    upstream, branch = upstream_history(tmp_path)
    tip = upstream.git("rev-parse", branch)
    anaconda.publish(built_probe(tmp_path / "built", tip))
    sleeps = []
    anaconda.unavailable = 2
    assert nightly.last_published_commit(anaconda.url, OWNER, "nightly", sleep=sleeps.append) == tip
    assert sleeps == [2, 4]
    anaconda.unavailable = 3
    with pytest.raises(Failure, match=r"HTTP 503 .*cannot tell whether the ref changed"):
        nightly.last_published_commit(anaconda.url, OWNER, "nightly", sleep=sleeps.append)
    # Another label, or a package never published: nothing to compare with, so the nightly builds.
    assert nightly.last_published_commit(anaconda.url, OWNER, "main", sleep=sleeps.append) is None
    assert nightly.last_published_commit(anaconda.url, OWNER, "nightly", package="nope") is None


def test_release_branch_names_follow_upstreams_two_schemes():
    assert nightly.release_branch("1.1.0") == "v1.1.0"
    assert nightly.release_branch("1.3.1") == "v1.3.1"
    assert nightly.release_branch("1.4.0") == "release/1.4"
    assert nightly.release_branch("1.6.0") == "release/1.6"


@pytest.mark.skipif(not os.environ.get("TORCHWIN_UPSTREAM_REPO"),
                    reason="opt-in: TORCHWIN_UPSTREAM_REPO=<a clone or mirror of pytorch/pytorch>")
def test_every_release_branch_exists_upstream_and_the_nightly_line_is_supported():
    """Against a real upstream: each release's branch exists, and the nightly line's tip passes the gate."""
    upstream = os.environ["TORCHWIN_UPSTREAM_REPO"]
    data = yaml.safe_load((ROOT / "recipes" / "pytorch" / "variants.yaml").read_text(encoding="utf-8"))
    missing = []
    # From 1.1.0 on, the releases a nightly line can follow (the mirror used here has no branch of 0.4.x/1.0.0).
    for release in [r for r in data["pytorch_version"] if nightly._version_key(r) >= (1, 1, 0)]:
        ref = f"refs/heads/{nightly.release_branch(release)}"
        if subprocess.run(["git", "-C", upstream, "rev-parse", "-q", "--verify", ref],
                          capture_output=True).returncode != 0:
            missing.append(ref)
    assert missing == []
    _, ref, base = nightly.upstream_source()
    tip = subprocess.run(["git", "-C", upstream, "rev-parse", ref], capture_output=True, text=True,
                         check=True).stdout.strip()
    line = nightly.check_supported(upstream, tip)
    assert (line.release, line.next) == newest_nightly_line() and base == line.next


# ---- earlier-stage builds already published (magma) ------------------------------------------------------

def _nightly_render(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCHWIN_NIGHTLY", "20190601")
    monkeypatch.setenv("TORCHWIN_NIGHTLY_BASE", newest_nightly_line()[1])
    monkeypatch.delenv("TORCHWIN_SOURCE_DIR", raising=False)
    assert main(["render", "--target-platform", "all", "--json"]) == 0
    path = tmp_path / "render.json"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    return path, json.loads(path.read_text(encoding="utf-8"))


def test_magma_already_under_the_label_is_taken_from_it_not_built_again(tmp_path, monkeypatch, capsys, anaconda):
    render, records = _nightly_render(tmp_path, monkeypatch, capsys)
    magma = {(r["subdir"], r["name"]): r for r in records if r["recipe"] == "magma"}
    win90, linux92 = magma[("win-64", "magma-cuda90")], magma[("linux-64", "magma-cuda92")]
    for record, label in ((win90, "nightly"), (linux92, "main")):  # main is not the nightly's label
        basename = f"{record['subdir']}/{record['name']}-{record['version']}-{record['build_string']}.conda"
        anaconda.packages[record["name"]] = [({"basename": basename, "version": record["version"],
                                               "labels": [label]}, b"")]
    published = tmp_path / "published.json"
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    assert main(["ci", "published", str(render), "--label", "nightly", "--output", str(published),
                 "--github-output"]) == 0
    key = f"win-64/magma-cuda90-{win90['version']}-{win90['build_string']}"
    assert json.loads(published.read_text(encoding="utf-8")) == [key]
    assert outputs.read_text(encoding="utf-8").splitlines() == ["channel=torchwin/label/nightly", "count=1"]
    # Only the magma packages were asked about (the stages before pytorch's), each once.
    assert sorted(r.split("/")[-1] for r in anaconda.requests) == sorted({r["name"] for r in magma.values()})
    capsys.readouterr()

    assert main(["ci", "matrix", str(render), "--job-recipes", "magma,pytorch,torchvision",
                 "--published", str(published)]) == 0
    matrix = json.loads(capsys.readouterr().out)
    magma_jobs = {e["id"] for k in ("windows", "linux") for e in matrix["recipes"]["magma"][k]}
    assert "magma-win-64-cuda9.0" not in magma_jobs and "magma-linux-64-cuda9.2" in magma_jobs
    taken = f"magma-cuda90 {win90['version']} {win90['build_string']}"
    for recipe in ("pytorch", "torchvision"):
        for entry in matrix["recipes"][recipe]["windows"]:
            if entry["cuda"] == "9.0":
                assert entry["from_channel"] == [taken], entry["id"]
                assert not any("magma" in a for a in entry["needs_artifacts"] + entry["test_artifacts"])
            else:
                assert entry["from_channel"] == [], entry["id"]
    assert all(e["from_channel"] == [] for e in matrix["recipes"]["pytorch"]["linux"])
    assert "packages-magma-win-64-cuda9.0" not in matrix["skip_rebuilt_artifacts"]
    assert "packages-magma-linux-64-cuda9.2" in matrix["skip_rebuilt_artifacts"]


def test_published_list_bad_input_is_one_line(tmp_path, capsys, anaconda):
    render = tmp_path / "render.json"
    render.write_text("[]", encoding="utf-8")
    out = tmp_path / "published.json"
    assert main(["ci", "published", str(render), "--label", "weekly", "--output", str(out)]) == 2
    assert "--label 'weekly' is not a label" in capsys.readouterr().err
    assert not out.exists() and anaconda.requests == []  # refused before asking or writing anything
    bad = tmp_path / "published.json"
    bad.write_text('{"win-64/magma-cuda90-2.5.0-0": true}', encoding="utf-8")
    assert main(["ci", "matrix", str(render), "--published", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "expected a JSON list of build keys" in err

"""`torchwin nightly-version` against real git repositories with commits at chosen times."""

import datetime
import json
import os
import shutil
import subprocess

import pytest
from torchwin import nightly
from torchwin.cli import main
from torchwin.errors import Failure, UserError

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


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


def test_no_commit_before_the_date_is_a_failure(repo):
    repo.commit("2019-04-30T10:00:00Z", version_txt="1.2.0a0")
    with pytest.raises(Failure, match="no commit on .* before 2019-04-30 00:00 UTC"):
        nightly.nightly_version(repo.path, date=datetime.date(2019, 4, 29))


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

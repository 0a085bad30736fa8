"""`torchwin nightly-version`: the version string of a nightly build, from git.

A nightly of day D is built from the last commit on the ref before midnight
(UTC) that ends day D, and is versioned `<next>.devYYYYMMDD` -- the scheme
pytorch/builder used for its nightlies. The answer comes from the git history
(commit times in UTC, `version.txt` at that commit), not from the time zone or
clock of the machine that asks (only the words `today`/`yesterday` read the UTC
clock), so the same question always gets the same answer. Without --date the
ref's own commit is used and D is its commit date.

`<next>` is the X.Y.Z at the start of `version.txt` at that commit (upstream
writes e.g. `1.2.0a0` there); refs from before upstream had that file need
--base.
"""

import argparse
import datetime
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from torchwin import gha
from torchwin.errors import Failure, UserError

EXAMPLES = """\
examples:
  # the nightly version of the checkout in the current folder (its HEAD commit)
  torchwin nightly-version

  # what the nightly of 2019-04-30 builds from an upstream clone, and its version
  torchwin nightly-version --repo ../pytorch --ref origin/master --date 2019-04-30 --json

  # the scheduled nightly: yesterday (UTC) as it stood at midnight, for a ref without version.txt
  torchwin nightly-version --repo upstream --ref FETCH_HEAD --date yesterday --base 1.1.0

  # inside GitHub Actions: also write version/date/commit/next as step outputs
  torchwin nightly-version --repo upstream --date yesterday --github-output
"""

_NEXT_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)")
_BASE_RE = re.compile(r"^\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class NightlyVersion:
    """The answer: the version string and where it came from."""

    version: str  # e.g. 1.2.0.dev20190430
    date: str  # YYYYMMDD, what TORCHWIN_NIGHTLY is set to
    commit: str  # the full commit the nightly builds
    commit_time: str  # that commit's committer time, ISO 8601 in UTC
    next: str  # X.Y.Z the nightly leads up to
    next_source: str  # "version.txt" or "--base"


def parse_date(text, today=None):
    """YYYY-MM-DD, or `today` / `yesterday` (in UTC) -> datetime.date."""
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    if text == "today":
        return today
    if text == "yesterday":
        return today - datetime.timedelta(days=1)
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--date {text!r} is not a date: use YYYY-MM-DD (e.g. 2019-04-30), 'today' or 'yesterday' (UTC)"
        ) from None


def _git(repo, *args):
    git = shutil.which("git")
    if git is None:
        raise Failure("git was not found on PATH; nightly-version reads the commit history with git")
    # LC_ALL/TZ do not matter: we only read raw hashes and Unix times (%ct), which carry no locale or zone.
    result = subprocess.run(
        [git, "-C", str(repo), *args],
        check=False,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    return result.returncode, result.stdout, result.stderr.strip()


def _resolve(repo, ref):
    code, out, _ = _git(repo, "rev-parse", "--git-dir")
    if code != 0:
        raise UserError(f"--repo {repo} is not a git repository (or git cannot read it)")
    code, out, _ = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if code != 0 or not out.strip():
        raise UserError(f"--ref {ref!r} does not name a commit in {repo}")
    return out.strip()


def _utc(seconds):
    return datetime.datetime.fromtimestamp(int(seconds), tz=datetime.timezone.utc)


def _commit_before(repo, tip, cutoff):
    """The newest commit on tip's first-parent line with a committer time before cutoff."""
    limit = int(cutoff.timestamp())
    # First parent only: the commits the branch itself pointed at, not the insides of merged branches
    # (whose dates can be older or newer than the merge).
    code, out, err = _git(repo, "log", "--first-parent", "--format=%H %ct", tip)
    if code != 0:
        raise Failure(f"git log failed in {repo}: {err}")
    last_time = None
    for line in out.splitlines():
        sha, _, seconds = line.partition(" ")
        last_time = int(seconds)
        if last_time < limit:
            return sha, last_time
    shallow = _git(repo, "rev-parse", "--is-shallow-repository")[1].strip() == "true"
    hint = " (the clone is shallow: fetch more history)" if shallow else ""
    raise Failure(
        "no commit on {} before {}{}".format(tip[:12], cutoff.strftime("%Y-%m-%d %H:%M UTC"), hint)
    )


def _next_from_version_txt(repo, commit):
    code, out, _ = _git(repo, "show", f"{commit}:version.txt")
    if code != 0:
        return None
    first = out.strip().splitlines()[0].strip() if out.strip() else ""
    match = _NEXT_RE.match(first)
    if not match:
        raise Failure(f"version.txt at {commit[:12]} reads {first!r}, which does not start with X.Y.Z")
    return "{}.{}.{}".format(*match.groups())


def nightly_version(repo=".", ref="HEAD", date=None, base=None):
    """Compute the nightly version of `ref` in the git repository `repo`.

    date: a datetime.date (the nightly of that day: the last commit before the
    midnight that ends it), or None (the ref's own commit, dated by its commit time).
    base: X.Y.Z to use when the commit has no version.txt.
    """
    repo = Path(repo)
    if base is not None and not _BASE_RE.match(base):
        raise UserError(f"--base {base!r} is not a version of the form X.Y.Z (e.g. 1.1.0)")
    tip = _resolve(repo, ref)
    if date is None:
        code, out, err = _git(repo, "show", "-s", "--format=%ct", tip)
        if code != 0:
            raise Failure(f"git show failed in {repo}: {err}")
        commit, seconds = tip, int(out.strip())
        day = _utc(seconds).date()
    else:
        cutoff = datetime.datetime.combine(
            date + datetime.timedelta(days=1), datetime.time(0, 0), tzinfo=datetime.timezone.utc
        )
        commit, seconds = _commit_before(repo, tip, cutoff)
        day = date
    next_version = _next_from_version_txt(repo, commit)
    source = "version.txt"
    if next_version is None:
        if base is None:
            raise UserError(
                f"commit {commit[:12]} has no version.txt: "
                "pass --base X.Y.Z (the release this nightly leads up to)"
            )
        next_version, source = base, "--base"
    stamp = day.strftime("%Y%m%d")
    return NightlyVersion(
        version=f"{next_version}.dev{stamp}",
        date=stamp,
        commit=commit,
        commit_time=_utc(seconds).strftime("%Y-%m-%dT%H:%M:%SZ"),
        next=next_version,
        next_source=source,
    )


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "nightly-version",
        help="print the nightly version <next>.devYYYYMMDD of a git ref",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--repo", default=".", metavar="PATH", help="git checkout to read (default: .)")
    parser.add_argument("--ref", default="HEAD", help="branch, tag or commit (default: HEAD)")
    parser.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="build the ref as it stood at the end of this UTC day ('today' and 'yesterday' work too); "
        "default: the ref's own commit and its commit date",
    )
    parser.add_argument("--base", metavar="X.Y.Z", help="<next> when the commit has no version.txt")
    parser.add_argument("--json", action="store_true", help="print all fields as JSON")
    parser.add_argument(
        "--github-output",
        action="store_true",
        help="also append version, date, commit and next to $GITHUB_OUTPUT (GitHub Actions)",
    )
    parser.set_defaults(func=run)


def run(args):
    date = parse_date(args.date) if args.date else None
    # An empty --base (an unset repository variable in CI) means "none given".
    result = nightly_version(repo=args.repo, ref=args.ref, date=date, base=args.base or None)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(result.version)
    if args.github_output:
        gha.write_outputs([("version", result.version), ("date", result.date),
                           ("commit", result.commit), ("next", result.next)])
    return 0

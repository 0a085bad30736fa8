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

Exit codes: 2 (bad input) whenever the question cannot be answered as asked --
--repo is not a local clone, --ref names nothing, no commit is older than
--date, or the commit has no version.txt and no --base was given: a different
argument (or a deeper clone) answers it. 1 only when git itself fails or the
repository holds something unreadable (a version.txt that is not X.Y.Z...).

The nightly's plan job also uses this module (through `torchwin ci upstream`
and `torchwin ci nightly-gate`): which upstream ref the nightly follows by
default, whether a ref declares a version this toolchain builds, and whether
the last published nightly was already built from the same commit.
"""

import argparse
import datetime
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from torchwin.ci import gha
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


_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^[^/\\\s]+@[^/\\\s]+:")


def check_repo(repo):
    """--repo as given; a URL is refused: history is read from a local clone."""
    repo = str(repo)
    if _URL_RE.match(repo):
        raise UserError(f"--repo {repo} is a URL; nightly-version reads a local clone: "
                        f"git clone --filter=tree:0 {repo} upstream, then --repo upstream")
    return repo


def _resolve(repo, ref, option="--ref"):
    code, out, _ = _git(repo, "rev-parse", "--git-dir")
    if code != 0:
        raise UserError(f"--repo {repo} is not a git repository (or git cannot read it)")
    code, out, _ = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if code != 0 or not out.strip():
        raise UserError(f"{option} {ref!r} does not name a commit in {repo}")
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
    hint = "the clone is shallow: fetch more history" if shallow else "pass a later --date"
    # Bad input, like a ref that names nothing: the question has no answer in this history.
    raise UserError(
        "--date: no commit on {} before {} ({})".format(tip[:12], cutoff.strftime("%Y-%m-%d %H:%M UTC"), hint)
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
    repo = check_repo(repo)
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


# ---------------------------------------------------------------- the nightly's upstream

DEFAULT_UPSTREAM_REPO = "pytorch/pytorch"
# The package whose last nightly says which commit it was built from: the noarch
# pytorch-cpu metapackage (recipes/pytorch-cpu), a few KB, built beside the nightly's CPU build.
PROBE_PACKAGE = "pytorch-cpu"
COMMIT_KEY = "upstream_commit"  # `extra:` of recipes/pytorch-cpu/recipe.yaml (and of recipes/pytorch)
_SETUP_VERSION_RE = re.compile(r"""^version\s*=\s*['"]([^'"]+)['"]""", re.MULTILINE)
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class ReleaseLine:
    """A row of recipes/pytorch/variants.yaml that nightlies build on."""

    release: str  # pytorch_version, e.g. 1.6.0
    next: str  # pytorch_nightly_base, e.g. 1.6.0

    @property
    def branch(self):
        return release_branch(self.release)


def release_branch(release):
    """Upstream's release branch of a release: the tag plus the fixes made after it.

    Upstream named them v<X.Y.Z> up to 1.3.1 (v1.1.0, v1.2.0, v1.3.0, v1.3.1) and release/<X.Y>
    from 1.4 on (release/1.4 ... release/1.7); tests/ci/test_nightly.py checks every release of
    variants.yaml from 1.1.0 on against an upstream mirror's branches (TORCHWIN_UPSTREAM_REPO).
    """
    major, minor, _ = _version_key(release)
    return f"v{release}" if (major, minor) < (1, 4) else f"release/{major}.{minor}"


def nightly_lines(recipe_dir=None):
    """The release lines variants.yaml gives a pytorch_nightly_base, oldest first."""
    from torchwin import recipes

    recipe_dir = Path(recipe_dir) if recipe_dir else recipes.require_repo_root() / "recipes" / "pytorch"
    # pytorch_* keys carry no selectors: any platform renders them the same.
    values = recipes.load_variant_config(recipe_dir, "linux-64").to_dict()
    releases, bases = values.get("pytorch_version") or [], values.get("pytorch_nightly_base") or []
    lines = [ReleaseLine(str(r), str(b)) for r, b in zip(releases, bases) if str(b or "")]
    if not lines:
        raise Failure(f"{recipe_dir}/variants.yaml names no pytorch_nightly_base: no release line builds nightlies")
    return sorted(lines, key=lambda line: _version_key(line.release))


def _version_key(text):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def upstream_source(repo="", ref="", base="", recipe_dir=None):
    """(repo, ref, base) the nightly builds: the given values, else the newest release line's."""
    newest = nightly_lines(recipe_dir)[-1]
    repo = repo or DEFAULT_UPSTREAM_REPO
    if not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", repo):
        raise UserError(f"TORCHWIN_UPSTREAM_REPO={repo}: expected a GitHub owner/name, e.g. pytorch/pytorch")
    if base and not _BASE_RE.match(base):
        raise UserError(f"TORCHWIN_NIGHTLY_BASE={base}: expected a version X.Y.Z, e.g. {newest.next}")
    # A full ref name: up to 1.3.1 upstream has both a branch and a tag called vX.Y.Z, and the
    # branch carries the fixes made after the release.
    return repo, ref or f"refs/heads/{newest.branch}", base or newest.next


def declared_version(repo, commit):
    """(version, file) upstream declares at commit: version.txt, else setup.py's `version = '...'`."""
    for name in ("version.txt", "setup.py"):
        code, out, _ = _git(repo, "show", f"{commit}:{name}")
        if code != 0:
            continue
        if name == "version.txt":
            text = out.strip().splitlines()[0].strip() if out.strip() else ""
            if text:
                return text, name
        else:
            match = _SETUP_VERSION_RE.search(out)
            if match:
                return match.group(1), name
    return None, None


def check_supported(repo, commit, recipe_dir=None):
    """The release line a commit belongs to; UserError when its declared version is not one we build.

    Supported: a line's own release (its release branch, e.g. 1.1.0) or the release it leads up
    to (e.g. 1.2.0a0 on master after 1.1.0), whose matrix the nightly builds with.
    """
    lines = nightly_lines(recipe_dir)
    declared, where = declared_version(repo, commit)
    allowed = sorted({v for line in lines for v in (line.release, line.next)}, key=_version_key)
    if declared is None:
        raise UserError(f"upstream commit {commit[:12]} declares no version (no version.txt, no "
                        f"`version = '...'` in setup.py); the nightly builds {', '.join(allowed)}")
    match = _NEXT_RE.match(declared)
    xyz = "{}.{}.{}".format(*match.groups()) if match else None
    for line in lines:
        if xyz in (line.release, line.next):
            return line
    raise UserError(
        f"upstream commit {commit[:12]} declares version {declared} ({where}); the nightly builds only "
        f"{', '.join(allowed)} (pytorch_nightly_base in recipes/pytorch/variants.yaml): point "
        f"TORCHWIN_UPSTREAM_REF at one of those lines (default refs/heads/{lines[-1].branch})"
    )


def last_published_commit(api_url, owner, label, package=PROBE_PACKAGE, attempts=3, sleep=None, timeout=60):
    """The upstream commit the newest `package` file under `label` on anaconda.org was built from.

    None when the package or label has no file yet (the first nightly), or when that file
    does not record one (built before the recipe did).
    """
    import urllib.parse

    from torchwin.ci import anaconda_api

    quote = urllib.parse.quote
    unknown = "cannot tell whether the ref changed (re-run, or dispatch with force)"
    kwargs = {"attempts": attempts, "sleep": sleep, "timeout": timeout}
    files = anaconda_api.package_files(api_url, owner, package, unknown, **kwargs)
    labelled = [f for f in files if label in (f.get("labels") or ["main"]) and f.get("version") is not None]
    if not labelled:
        return None
    newest = max(labelled, key=_published_at)
    data = anaconda_api.api_get("{}/download/{}/{}/{}/{}".format(
        api_url.rstrip("/"), quote(owner), quote(package), quote(str(newest["version"])),
        quote(newest["basename"])), unknown, **kwargs)
    if data is None:
        return None
    return _commit_in(data, newest["basename"])


def _published_at(record):
    attrs = record.get("attrs") or {}
    stamp = attrs.get("timestamp")
    # index.json's timestamp (ms) when there is one, else the upload time; the version breaks ties.
    return (float(stamp) if isinstance(stamp, (int, float)) else 0.0, str(record.get("upload_time", "")),
            _version_key(str(record.get("version", ""))))


def _commit_in(data, basename):
    import tempfile

    from torchwin.channel import package_check

    name = basename.rsplit("/", 1)[-1]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            commit = package_check.about_extra(path).get(COMMIT_KEY)
        except (UserError, Failure, OSError, ValueError) as exc:
            # The channel's file, not the user's input: a broken one is a failure to look into.
            raise Failure(f"the last published {basename} cannot be read ({exc})") from None
    return commit if isinstance(commit, str) and _SHA_RE.match(commit) else None


def nightly_gate(repo, commit, api_url, owner, label="nightly", force=False, recipe_dir=None):
    """(build?, message): refuse an unsupported ref; skip one the last published nightly was built from."""
    repo = check_repo(repo)
    commit = _resolve(repo, commit, "--commit")
    line = check_supported(repo, commit, recipe_dir)
    if force:
        return True, f"building {commit[:12]} (release line {line.release}): a rebuild was asked for"
    last = last_published_commit(api_url, owner, label)
    if last == commit:
        return False, (f"upstream commit {commit[:12]} is the one the last published nightly "
                       f"({owner}/label/{label}) was built from: nothing to build")
    since = f"last published: {last[:12]}" if last else "no nightly published yet"
    return True, f"building {commit[:12]} (release line {line.release}; {since})"


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

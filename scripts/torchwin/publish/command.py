"""`torchwin publish`: upload package files to anaconda.org and prune old builds there.

Uploads go through anaconda-client's Python API (binstar_client), the same
calls `anaconda upload` makes: look for the file, create the package and
release when missing, then stage, upload and commit the file with its label.
Every file is looked up before anything is uploaded, and each gets one
decision: upload it; skip it (the same file is already there); or refuse it
(a file of that name is there with other content -- unless --skip-rebuilt says
that for these files a rebuild of an unchanged recipe is expected, and the
copy there is kept). One refusal stops the run before any upload. --dry-run
makes the same look-ups and prints the decisions, changing nothing.

The owner and API URL come from channel/channel.yaml; the token only from the
environment variable ANACONDA_API_TOKEN, and it is never printed: every
message passes through a filter that blanks it, even one an error response
echoes back, and while publish runs a logging filter does the same for what
anaconda-client, requests and urllib3 log themselves (anaconda-client logs a
server's Conda-Token-Warning header as it comes). Network errors, 5xx answers
and 429 (rate limit) are retried with exponential back-off; any other 4xx is
final, and so is a host name that does not resolve (offline, or a wrong API
URL: retrying cannot help). Uploads stop at the first file that fails; a table
then says, for every file, uploaded / skipped / failed / not attempted.
`--prune` applies channel.yaml's retention to the files on anaconda.org, as
`torchwin channel prune` does locally.

A package whose recipe keeps it in one label (`extra: torchwin: label: L`, which
the engine copies into its info/about.json; recipes/cuda-runtime's label
cuda-runtime) is refused under any other --label, before any look-up.
"""

import argparse
import logging
import os
import re
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from torchwin import retention
from torchwin.channel_config import MAIN, load_channel_config
from torchwin.errors import Failure, UserError
from torchwin.package_check import check_package, check_pinned_labels

TOKEN_ENV = "ANACONDA_API_TOKEN"
ATTEMPTS = 6  # 1 try + 5 retries: 2+4+8+16+32 s of back-off rides out a minute-long outage
BASE_DELAY = 2.0
MAX_DELAY = 60.0

DESCRIPTION = """\
Upload package files to the anaconda.org channel of channel/channel.yaml
(owner `anaconda.owner`), with a label (default main). Every file is looked up
first: one already there is skipped; one whose name is there with other
content is refused, and then nothing is uploaded -- unless --skip-rebuilt, for
packages every run rebuilds from an unchanged recipe (same name, version and
build; only timestamps differ), where the copy on anaconda.org is kept.

The token is read from ANACONDA_API_TOKEN only and never printed. Transient
failures (network, 5xx, 429) are retried with exponential back-off; other 4xx
are final. --dry-run makes the same look-ups (with the token if it is set,
anonymously otherwise) and prints, per file, upload / skip / refuse and the
label; it exits 1 if the real run would refuse a file.

--prune applies the retention rules of channel.yaml to what is on anaconda.org
(a file labelled main is never removed). Always look first with --dry-run.

Packages whose recipe names a label (extra: torchwin: label: L in recipe.yaml,
e.g. recipes/cuda-runtime's cudatoolkit and cudnn: label cuda-runtime) are
published only with --label L; under another label the run stops first.
"""

EPILOG = """\
examples:
  torchwin publish --dry-run --label nightly output/win-64/*.conda
  ANACONDA_API_TOKEN=... torchwin publish --label nightly output/win-64/*.conda
  ANACONDA_API_TOKEN=... torchwin publish --label nightly --skip-rebuilt toolchain-channel/*/*.conda
  torchwin publish --prune --label nightly --dry-run
  ANACONDA_API_TOKEN=... torchwin publish --label cuda-runtime channel/local/label/cuda-runtime/*/*.conda
"""

UPLOAD, SKIP, REFUSE = "upload", "skip", "refuse"
UPLOADED, SKIPPED, FAILED, NOT_ATTEMPTED = "uploaded", "skipped", "failed", "not attempted"
# Loggers of the libraries publish calls: their records may quote headers, URLs or answers.
LIBRARY_LOGGERS = ("binstar", "binstar_client", "requests", "urllib3")


@dataclass
class Decision:
    """What publishing one checked package file does: UPLOAD, SKIP or REFUSE, and why."""

    pkg: object  # package_check.PackageFile
    action: str
    where: str  # owner/name/version/subdir/filename on anaconda.org
    reason: str = ""


class Redactor:
    """Blanks the token out of any text on its way to the terminal or an exception."""

    def __init__(self, secret):
        self.secret = secret or None

    def __call__(self, text):
        text = str(text)
        return text.replace(self.secret, "***") if self.secret else text


class RedactingFilter(logging.Filter):
    """A logging filter that blanks the token in a record's message before any handler formats it."""

    def __init__(self, redact):
        super().__init__()
        self.redact = redact

    def filter(self, record):
        if self.redact.secret:
            message = record.getMessage()
            clean = self.redact(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


class redacted_logging:
    """While active, the token is blanked in every log record the libraries or their handlers see.

    Logger filters catch records logged on those loggers; handler filters (the root's handlers and
    logging.lastResort, which prints when nothing is configured) catch those of child loggers
    that propagate to them.
    """

    def __init__(self, redact):
        self.filter = RedactingFilter(redact)
        self.targets = []

    def __enter__(self):
        names = [n for n in list(logging.root.manager.loggerDict)
                 if n.split(".", 1)[0] in LIBRARY_LOGGERS] + list(LIBRARY_LOGGERS)
        loggers = [logging.getLogger(n) for n in dict.fromkeys(names)]
        handlers = list(logging.root.handlers) + [h for lg in loggers for h in lg.handlers]
        if logging.lastResort is not None:
            handlers.append(logging.lastResort)
        self.targets = list(dict.fromkeys(loggers + handlers))
        for target in self.targets:
            target.addFilter(self.filter)
        return self

    def __exit__(self, *exc):
        for target in self.targets:
            target.removeFilter(self.filter)
        return False


def status_of(exc):
    """HTTP status of a binstar_client error (its second argument), or None."""
    args = getattr(exc, "args", ())
    return args[1] if len(args) > 1 and isinstance(args[1], int) else None


def unresolved_host(exc):
    """The host name whose look-up failed somewhere in exc's chain, or None.

    requests wraps urllib3's NameResolutionError (built on socket.gaierror) in a ConnectionError.
    """
    seen = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, socket.gaierror) or type(err).__name__ == "NameResolutionError":
            match = re.search(r"Failed to resolve '([^']+)'", str(exc))
            return match.group(1) if match else "the API host"
        todo += [*err.args, getattr(err, "reason", None), err.__cause__, err.__context__]
    return None


def is_transient(exc):
    """Worth retrying: no connection or an interrupted one, a timeout, 5xx, or 429 Too Many Requests."""
    import requests

    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    status = status_of(exc)
    return status is not None and (status >= 500 or status == 429)


class Publisher:
    """Talks to anaconda.org for one owner; every call goes through call() and its retries."""

    def __init__(self, api, owner, redact=None, sleep=time.sleep, attempts=ATTEMPTS, out=print):
        self.api = api
        self.owner = owner
        self.redact = redact or Redactor(None)
        self.sleep = sleep
        self.attempts = attempts
        self.out = out

    def say(self, text):
        self.out(self.redact(text))

    def call(self, what, fn, *args, **kwargs):
        """fn(*args, **kwargs), retried on transient errors; any other error (404 too) is final."""
        return self._call(what, fn, args, kwargs, missing_ok=False)

    def lookup(self, what, fn, *args):
        """fn(*args) like call(), but a 404 answer returns None: the thing is not there."""
        return self._call(what, fn, args, {}, missing_ok=True)

    def _call(self, what, fn, args, kwargs, missing_ok):
        from binstar_client import errors

        delay = BASE_DELAY
        for attempt in range(1, self.attempts + 1):
            try:
                return fn(*args, **kwargs)
            except errors.NotFound as exc:
                if missing_ok:
                    return None
                raise Failure(f"anaconda.org: {what}: {self.redact(_one_line(exc))}") from None
            except Exception as exc:  # noqa: BLE001 - sorted into transient/final below
                host = unresolved_host(exc)
                if host is not None:
                    raise Failure(f"anaconda.org: {what}: cannot resolve the host name {host} (offline, or a "
                                  "wrong --api-url / anaconda.api_url?)") from None
                message = self.redact(_one_line(exc))
                if not is_transient(exc):
                    status = status_of(exc)
                    hint = " (is ANACONDA_API_TOKEN valid for this owner?)" if status in (401, 403) else ""
                    raise Failure(f"anaconda.org: {what}: {message}{hint}") from None
                if attempt == self.attempts:
                    raise Failure(
                        f"anaconda.org: {what}: still failing after {attempt} tries: {message}"
                    ) from None
                self.say(f"  {what}: {message}; retrying in {delay:.0f} s ({attempt}/{self.attempts - 1})")
                self.sleep(delay)
                delay = min(delay * 2, MAX_DELAY)
        raise AssertionError("unreachable")

    def exists(self, name, version, basename):
        """The file's record on anaconda.org, or None."""
        return self.lookup("look for " + basename, self.api.distribution, self.owner, name, version, basename)

    def decide(self, pkg, skip_rebuilt=False, earlier=None):
        """The Decision for one package file, from a look-up on anaconda.org (changes nothing).

        earlier maps `where` to the sha256 of files decided before in the same run, so the
        same file given twice is uploaded once and two different files of one name are refused.
        """
        basename = f"{pkg.subdir}/{pkg.filename}"
        where = f"{self.owner}/{pkg.name}/{pkg.version}/{basename}"
        if earlier is not None and where in earlier:
            if earlier[where] == pkg.sha256:
                return Decision(pkg, SKIP, where, "the same file is given twice")
            return Decision(pkg, REFUSE, where, "given twice in this run, with different content")
        if earlier is not None:
            earlier[where] = pkg.sha256
        found = self.exists(pkg.name, pkg.version, basename)
        if found is None:
            return Decision(pkg, UPLOAD, where)
        record = found if isinstance(found, dict) else {}
        labels = ", ".join(record.get("labels") or [MAIN])
        theirs = record.get("sha256")
        if not theirs or theirs == pkg.sha256:
            return Decision(pkg, SKIP, where, f"already on anaconda.org (labels: {labels})")
        differ = f"sha256 there {theirs[:12]}..., local {pkg.sha256[:12]}..."
        if skip_rebuilt:
            return Decision(pkg, SKIP, where, f"a rebuild of what is already on anaconda.org (labels: {labels}; "
                            f"{differ}); --skip-rebuilt keeps the copy there")
        return Decision(pkg, REFUSE, where, f"already on anaconda.org with other content ({differ}); "
                        "remove it there first, or give the new build another build number")

    def publish(self, packages, label, skip_rebuilt=False, dry_run=False):
        """Decide every file, then (unless dry_run or a file is refused) upload those to upload."""
        earlier = {}
        decisions = [self.decide(pkg, skip_rebuilt, earlier) for pkg in packages]
        skip, refuse = ("would skip", "would refuse") if dry_run else ("skipped", "refused")
        refused = [d for d in decisions if d.action == REFUSE]
        for d in decisions:
            if d.action == UPLOAD:
                if dry_run:  # a real run says "uploaded" as each one is done
                    self.say(f"would upload {d.where} (label {label}) from {d.pkg.path}")
            elif d.action == SKIP:
                self.say(f"{skip} {d.where}: {d.reason}")
            else:
                self.say(f"{refuse} {d.where} from {d.pkg.path}: {d.reason}")
        counts = {a: sum(d.action == a for d in decisions) for a in (UPLOAD, SKIP, REFUSE)}
        if refused:
            what = "would refuse" if dry_run else "refused"
            first = refused[0]
            raise Failure(
                f"{first.pkg.path}: {first.where} is {first.reason}"
                + (f" (and {len(refused) - 1} more, listed above)" if len(refused) > 1 else "")
                + f"; {what} {len(refused)} of {len(decisions)} file(s), nothing uploaded"
            )
        if dry_run:
            self.say(f"dry run: {counts[UPLOAD]} to upload, {counts[SKIP]} to skip; nothing changed")
            return decisions
        # Stop at the first failure: it is final (a 4xx, an unknown host) or outlasted every retry,
        # so the next files would meet it too; a second run skips what went up.
        results = []  # (decision, result, detail)
        failure = None
        for d in decisions:
            if d.action == SKIP:
                results.append((d, SKIPPED, d.reason))
            elif failure is not None:
                results.append((d, NOT_ATTEMPTED, "stopped after the failure above"))
            else:
                try:
                    self.upload(d.pkg, label, d.where)
                    results.append((d, UPLOADED, ""))
                except Failure as exc:
                    failure = exc
                    results.append((d, FAILED, str(exc)))
        tally = self.summary(results, label)
        if failure is not None:
            raise Failure(f"{failure}; publish stopped there: {tally} (table above); "
                          "running it again skips the files already uploaded")
        return decisions

    def summary(self, results, label):
        """Print one row per file (result, where, detail) and return the counts as one phrase."""
        width = max(len(r) for r in (UPLOADED, SKIPPED, FAILED, NOT_ATTEMPTED))
        self.say(f"\nlabel {label}, {len(results)} file(s):")
        for d, result, detail in results:
            self.say(f"  {result.ljust(width)}  {d.where}" + (f"  ({detail})" if detail else ""))
        tally = ", ".join(f"{sum(r == k for _, r, _ in results)} {k}"
                          for k in (UPLOADED, SKIPPED, FAILED, NOT_ATTEMPTED))
        self.say(tally)
        return tally

    def upload(self, pkg, label, where):
        """Upload one checked package file with label (decide() said UPLOAD)."""
        from binstar_client.inspect_package.conda import inspect_conda_package
        from binstar_client.utils.config import PackageType

        basename = f"{pkg.subdir}/{pkg.filename}"
        package_attrs, release_attrs, file_attrs = inspect_conda_package(str(pkg.path))
        if self.lookup("look up package " + pkg.name, self.api.package, self.owner, pkg.name) is None:
            self.call(
                "create package " + pkg.name,
                self.api.add_package,
                self.owner,
                pkg.name,
                package_attrs.get("summary") or pkg.name,
                package_attrs.get("license"),
                public=True,
                attrs=package_attrs,
                license_url=package_attrs.get("license_url"),
                license_family=package_attrs.get("license_family"),
                package_type=PackageType.CONDA,
            )
        release = self.lookup(
            "look up release " + pkg.version, self.api.release, self.owner, pkg.name, pkg.version
        )
        if release is None:
            self.call(
                f"create release {pkg.name} {pkg.version}",
                self.api.add_release,
                self.owner,
                pkg.name,
                pkg.version,
                [],
                None,
                release_attrs,
            )

        def send():
            # A retry after a lost answer would upload twice: look first.
            if self.exists(pkg.name, pkg.version, basename) is not None:
                return None
            with open(pkg.path, "rb") as stream:
                return self.api.upload(
                    self.owner,
                    pkg.name,
                    pkg.version,
                    basename,
                    stream,
                    PackageType.CONDA,
                    "",
                    dependencies=file_attrs.get("dependencies"),
                    attrs=file_attrs["attrs"],
                    channels=[label],
                )

        self.call("upload " + basename, send)
        self.say(f"uploaded {where} (label {label})")

    def remote_builds(self, labels):
        """retention.Build for every file on anaconda.org carrying one of labels (and not main)."""
        packages = self.call("list packages of " + self.owner, self.api.user_packages, self.owner)
        builds = []
        for package in sorted(packages, key=lambda p: p.get("name", "")):
            name = package.get("name")
            info = self.call("list files of " + str(name), self.api.package, self.owner, name)
            for record in info.get("files") or []:
                file_labels = record.get("labels") or [MAIN]
                if MAIN in file_labels or not set(file_labels) & set(labels):
                    continue
                stamp = self._timestamp(name, record)
                builds += [_remote_build(name, record, lab, stamp) for lab in file_labels if lab in labels]
        return builds

    def _timestamp(self, name, record):
        """When the file was built: attrs.timestamp, else its upload_time, else None (its age is
        unknown and retention keeps it). A timestamp out of range is said and not used: a server's
        bad value must never make a removal more likely, nor stop the pruning of other files."""
        where = f"{self.owner}/{name}/{record.get('version')}/{record.get('basename')}"
        raw = (record.get("attrs") or {}).get("timestamp")
        stamp = retention.from_millis(raw)
        if stamp is None and isinstance(raw, (int, float)) and not isinstance(raw, bool) and raw != 0:
            self.say(f"warning: {where}: attrs.timestamp {raw!r} is not a date (out of range); "
                     "its upload_time is used instead")
        if stamp is None and record.get("upload_time"):
            try:
                stamp = datetime.fromisoformat(str(record["upload_time"]).replace("Z", "+00:00"))
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=timezone.utc)
            except ValueError:
                stamp = None
        return stamp

    def prune(self, config, labels, dry_run, now=None):
        """Remove (or with dry_run list) the files that retention lets go on every label they carry."""
        rules = {lab: rule for lab, rule in config.retention.items() if lab in labels}
        builds = self.remote_builds(set(rules))
        plan = retention.plan(builds, rules, now=now)
        doomed = {}
        for build, reason in plan:
            doomed.setdefault(id(build.handle), (build, []))[1].append(reason)
        done = []
        for build, reasons in doomed.values():
            record = build.handle
            file_labels = set(record.get("labels") or [MAIN])
            if len(reasons) < len(file_labels):
                continue  # some other label of this file still keeps it
            basename = record["basename"]
            spec = f"{self.owner}/{build.name}/{build.version}/{basename}"
            if dry_run:
                self.say(f"would remove {spec} -- {'; '.join(reasons)}")
                self.say("  " + _command(["anaconda", "remove", "--force", spec]))
            else:
                self.call(
                    "remove " + spec, self.api.remove_dist, self.owner, build.name, build.version, basename
                )
                self.say(f"removed {spec} -- {'; '.join(reasons)}")
            done.append(spec)
        if not done:
            self.say("nothing to prune on anaconda.org")
        return done


def _remote_build(name, record, label, stamp):
    attrs = record.get("attrs") or {}
    basename = record.get("basename", "")
    subdir = attrs.get("subdir") or (basename.split("/", 1)[0] if "/" in basename else "noarch")
    return retention.Build(
        label=label,
        subdir=subdir,
        filename=basename.rsplit("/", 1)[-1],
        name=name,
        version=str(record.get("version", "0")),
        build=str(attrs.get("build", "")),
        build_number=int(attrs.get("build_number") or 0),
        timestamp=stamp,
        handle=record,
    )


def make_api(token, api_url):
    """anaconda-client's API object for api_url; deliberately not get_server_api(), which would
    fall back to BINSTAR_API_TOKEN or a token stored by `anaconda login`."""
    from binstar_client import Binstar

    return Binstar(token=token, domain=api_url)


def _command(words):
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


def _one_line(exc):
    status = status_of(exc)
    if status is not None and isinstance(exc.args[0], str):  # binstar_client's (message, status)
        text = f"{exc.args[0].strip()} (HTTP {status})"
    else:
        text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


# ---------------------------------------------------------------- command line


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "publish",
        help="upload packages to anaconda.org; prune old nightlies there",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="*", metavar="FILE", type=Path, help=".conda or .tar.bz2 files")
    parser.add_argument("--label", metavar="L", help="label from channel.yaml (default: main)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="look each file up and print upload / skip / refuse with the label; change nothing "
        "(no token needed: without ANACONDA_API_TOKEN the look-ups are anonymous)",
    )
    parser.add_argument(
        "--skip-rebuilt",
        action="store_true",
        help="a file whose name is already on anaconda.org with other content is skipped, not refused: "
        "for packages rebuilt every run from an unchanged recipe (the nightly's toolchain packages)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="also remove builds retention lets go (of --label, or of every label with a rule)",
    )
    parser.add_argument("--config", metavar="FILE", type=Path, help="default: channel/channel.yaml")
    parser.add_argument("--api-url", metavar="URL", help="anaconda.org API (default: from channel.yaml)")
    parser.set_defaults(func=run)


def run(args, sleep=time.sleep):
    if not args.files and not args.prune:
        raise UserError("nothing to do: give package FILEs to upload and/or --prune")
    config = load_channel_config(args.config)
    label = config.check_label(args.label)
    packages = [check_package(f) for f in args.files]  # all checked before anything is looked up
    check_pinned_labels([pkg.path for pkg in packages], label, config, "publish it", "nothing uploaded")
    token = os.environ.get(TOKEN_ENV) or None
    if not args.dry_run and token is None:
        raise UserError(f"{TOKEN_ENV} is not set: export an anaconda.org API token to publish")
    redact = Redactor(token)
    out = _printer(redact)
    if args.dry_run:
        how = "with the token" if token else f"anonymously ({TOKEN_ENV} is not set: private files are not seen)"
        out(f"# dry run: looking up on anaconda.org ({config.owner}) {how}; nothing is changed")

    publisher = Publisher(
        make_api(token, args.api_url or config.api_url), config.owner, redact, sleep, out=out
    )
    with redacted_logging(redact):
        if packages:
            publisher.publish(packages, label, skip_rebuilt=args.skip_rebuilt, dry_run=args.dry_run)
        if args.prune:
            labels = [label] if args.label else list(config.retention)
            publisher.prune(config, labels, dry_run=args.dry_run)
    return 0


def _printer(redact):
    def out(text):
        print(redact(text), flush=True)

    return out

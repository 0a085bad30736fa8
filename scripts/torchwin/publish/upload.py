"""Upload checked package files to anaconda.org: look every file up, decide, then upload.

Each file gets one decision: upload it; skip it (the same file is already there); or refuse it (a
file of that name is there with other content -- unless skip_rebuilt says a rebuild of an
unchanged recipe is expected, and the copy there is kept). One refusal stops the run before any
upload; uploads stop at the first file that fails, and a table then says what happened to each.
A record on anaconda.org without a sha256 cannot be compared: it is refused, never taken as the
same file. The bytes sent are the bytes checked: see storage.py.
"""

from dataclasses import dataclass

from torchwin.channel.config import MAIN
from torchwin.errors import Failure
from torchwin.publish.anaconda import Client
from torchwin.publish.storage import send_checked

UPLOAD, SKIP, REFUSE = "upload", "skip", "refuse"
UPLOADED, SKIPPED, FAILED, NOT_ATTEMPTED = "uploaded", "skipped", "failed", "not attempted"


@dataclass
class Decision:
    """What publishing one checked package file does: UPLOAD, SKIP or REFUSE, and why."""

    pkg: object  # package_check.PackageFile
    action: str
    where: str  # owner/name/version/subdir/filename on anaconda.org
    reason: str = ""


class Uploader(Client):
    """Decides and uploads package files: publish() looks every file up (decide), refuses before any
    upload, uploads (upload) and prints the table (summary).

    Over the ~120 lines a class gets here because anaconda-client's upload protocol (package, then
    release, then the file, each looked up first so a retry never uploads twice) is one sequence;
    the parts share the client and the run's decisions, and apart they would read worse.
    """

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
        if theirs == pkg.sha256:
            return Decision(pkg, SKIP, where, f"already on anaconda.org (labels: {labels})")
        if not isinstance(theirs, str) or not theirs:
            differ = "anaconda.org's record of it has no sha256 to compare"
        else:
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
            return send_checked(self.api, self.owner, pkg, basename, label, file_attrs)

        self.call("upload " + basename, send)
        self.say(f"uploaded {where} (label {label})")

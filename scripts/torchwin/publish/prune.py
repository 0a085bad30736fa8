"""Apply channel.yaml's retention to the files on anaconda.org, as `torchwin channel prune` does locally.

A file is removed only when every label it carries lets it go; a file labelled main never is.
"""

import os
import shlex
import subprocess
from datetime import datetime, timezone

from torchwin.channel import retention
from torchwin.channel.config import MAIN
from torchwin.publish.anaconda import Client


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


def _command(words):
    return subprocess.list2cmdline(words) if os.name == "nt" else shlex.join(words)


class Pruner(Client):
    """Lists the files on anaconda.org that carry a label with a retention rule, and removes those
    retention lets go on every label they carry."""

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

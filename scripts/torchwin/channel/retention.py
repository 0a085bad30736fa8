"""Which package builds a label's retention rule lets go: one rule for the local channel and anaconda.org.

Builds are grouped by label, package name, platform (subdir) and variant (the
build string without its trailing build number, e.g. py36_cuda90_cudnn7).
In each group the newest `keep_newest` builds always stay; an older build goes
once it is more than `keep_days` days old. A build whose age is unknown stays.
Labels without a rule (main among them) are never touched.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from rattler import Version


@dataclass(frozen=True)
class Build:
    """One package file as retention sees it; `handle` is the caller's own reference to it."""

    label: str
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    build_number: int
    timestamp: datetime | None
    handle: object = None


def variant_of(build, build_number):
    """'py36_cuda90_cudnn7_201' (number 201) -> 'py36_cuda90_cudnn7'; 'hb0f4dca_0' -> 'hb0f4dca'."""
    suffix = f"_{build_number}"
    if build.endswith(suffix) and len(build) > len(suffix):
        return build[: -len(suffix)]
    return build


def from_millis(value):
    """repodata/index.json timestamps are milliseconds since the epoch (old ones: seconds)."""
    if not isinstance(value, (int, float)) or value <= 0:
        return None
    if value > 1e11:  # later than 1973 in ms, i.e. certainly not seconds
        value = value / 1000.0
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):  # past year 9999 (e.g. 1e20 from a server): age unknown
        return None


def _newest_first_key(build):
    stamp = build.timestamp.timestamp() if build.timestamp else 0.0
    return (Version(build.version), build.build_number, stamp)


def plan(builds, rules, now=None):
    """Return [(Build, reason)] for the builds the rules let go, in a stable order."""
    now = now or datetime.now(timezone.utc)
    groups = {}
    for build in builds:
        if build.label in rules:
            key = (build.label, build.name, build.subdir, variant_of(build.build, build.build_number))
            groups.setdefault(key, []).append(build)
    doomed = []
    for key in sorted(groups):
        label, name, subdir, variant = key
        rule = rules[label]
        members = sorted(groups[key], key=_newest_first_key, reverse=True)
        for build in members[rule.keep_newest :]:
            if build.timestamp is None:
                continue
            age = now - build.timestamp
            if age > timedelta(days=rule.keep_days):
                reason = (
                    f"{label}: built {build.timestamp:%Y-%m-%d}, {age.days} days old (> {rule.keep_days}); "
                    f"the newest {rule.keep_newest} {name} {subdir} {variant} build(s) stay"
                )
                doomed.append((build, reason))
    return doomed

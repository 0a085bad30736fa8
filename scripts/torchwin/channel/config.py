"""channel/channel.yaml: the channel's name, anaconda.org owner, labels and retention, validated on load.

Also finds the repository root, from which the default channel folder
(channel/local) and the default config file are derived, and checks the label
a recipe keeps its packages in (`pinned_label`).
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from torchwin.checkout import require_repo_root
from torchwin.errors import UserError

MAIN = "main"
# A label becomes a URL path segment (anaconda.org/<owner>/label/<L>) and a folder name.
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TOP_KEYS = ("name", "anaconda", "labels", "retention")
_ANACONDA_KEYS = ("owner", "api_url")
_RETENTION_KEYS = ("keep_days", "keep_newest")
# A recipe keeps its packages in one label with `extra: {torchwin: {label: L}}` (recipes/cuda-runtime);
# the engine copies `extra` into every package's info/about.json, so the package carries it too.
EXTRA_KEY = "torchwin"


@dataclass(frozen=True)
class Retention:
    """Builds older than keep_days go, except the newest keep_newest per package/platform/variant."""

    keep_days: int
    keep_newest: int


@dataclass(frozen=True)
class ChannelConfig:
    name: str
    owner: str
    api_url: str
    labels: tuple
    retention: dict = field(default_factory=dict)  # label -> Retention; absent label: never pruned
    path: Path | None = None

    def check_label(self, label):
        """Return label (main when None) or raise UserError naming the allowed labels."""
        label = label or MAIN
        if label not in self.labels:
            raise UserError(
                f"unknown label {label!r} (channel.yaml {self.path or 'labels'} allows: "
                f"{', '.join(self.labels)})"
            )
        return label

    def pinned_label(self, extra, where):
        """The label `extra` (a recipe's, or a package's about.json's) keeps packages in, else None.

        `extra: {torchwin: {label: L}}` means: these packages belong in label L and in no other.
        L must be one of `labels`; anything malformed is one UserError line naming `where`.
        """
        section = extra.get(EXTRA_KEY) if isinstance(extra, dict) else None
        if section is None:
            return None
        if not isinstance(section, dict) or set(section) != {"label"}:
            raise UserError(f"{where}: extra.{EXTRA_KEY} must be a mapping with the one key label, got {section!r}")
        label = section["label"]
        if label not in self.labels:
            raise UserError(f"{where}: extra.{EXTRA_KEY}.label {label!r} is not a label of "
                            f"{self.path or 'channel.yaml'} (it lists: {', '.join(self.labels)})")
        return label


def default_config_path():
    env = os.environ.get("TORCHWIN_CHANNEL_CONFIG")
    if env:
        return Path(env)
    root = require_repo_root("or set TORCHWIN_CHANNEL_CONFIG to the channel.yaml to use")
    return root / "channel" / "channel.yaml"


def load_channel_config(path=None):
    """Read and validate channel.yaml; any problem is one UserError line naming the file and key."""
    path = Path(path) if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot read channel config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}" if where is not None else ""
        raise UserError(f"{path}:{line} is not valid YAML ({getattr(exc, 'problem', exc)})") from None
    return parse_channel_config(data, path)


def parse_channel_config(data, path="channel.yaml"):
    def bad(key, msg):
        return UserError(f"{path}: {key} {msg}")

    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping with keys {', '.join(_TOP_KEYS)}")
    _no_unknown(data, _TOP_KEYS, "", bad)

    name = _string(data, "name", "", bad)
    anaconda = data.get("anaconda")
    if not isinstance(anaconda, dict):
        raise bad("anaconda", f"must be a mapping with keys {', '.join(_ANACONDA_KEYS)}")
    _no_unknown(anaconda, _ANACONDA_KEYS, "anaconda.", bad)
    owner = _string(anaconda, "owner", "anaconda.", bad)
    api_url = anaconda.get("api_url", "https://api.anaconda.org")
    if not isinstance(api_url, str) or not re.match(r"^https?://[^/\s]+", api_url):
        raise bad("anaconda.api_url", f"must be an http(s) URL, got {api_url!r}")

    labels = data.get("labels")
    if not isinstance(labels, list) or not labels:
        raise bad("labels", "must be a non-empty list of label names, e.g. [main, nightly]")
    for label in labels:
        if not isinstance(label, str) or not _LABEL_RE.match(label):
            raise bad("labels", f"entry {label!r} is not a label name (letters, digits, _ . -)")
    if len(set(labels)) != len(labels):
        raise bad("labels", "lists a label twice")
    if MAIN not in labels:
        raise bad("labels", f"must include {MAIN!r} (what `-c <channel>` installs from)")

    retention = {}
    raw = data.get("retention") or {}
    if not isinstance(raw, dict):
        raise bad("retention", "must be a mapping of label -> {keep_days, keep_newest}")
    for label, rule in raw.items():
        key = f"retention.{label}"
        if label == MAIN:
            raise bad(key, "is not allowed: the main label is never pruned")
        if label not in labels:
            raise bad(key, f"names a label that is not in labels ({', '.join(labels)})")
        if not isinstance(rule, dict):
            raise bad(key, "must be a mapping with keys keep_days, keep_newest")
        _no_unknown(rule, _RETENTION_KEYS, key + ".", bad)
        values = {}
        for rkey, minimum in (("keep_days", 0), ("keep_newest", 1)):
            value = rule.get(rkey)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise bad(f"{key}.{rkey}", f"must be an integer >= {minimum}, got {value!r}")
            values[rkey] = value
        retention[label] = Retention(**values)

    return ChannelConfig(
        name=name,
        owner=owner,
        api_url=api_url.rstrip("/"),
        labels=tuple(labels),
        retention=retention,
        path=Path(path),
    )


def _no_unknown(mapping, allowed, prefix, bad):
    for key in mapping:
        if key not in allowed:
            raise bad(prefix + str(key), f"is not a known key (allowed: {', '.join(allowed)})")


def _string(mapping, key, prefix, bad):
    value = mapping.get(key)
    if not isinstance(value, str) or not _LABEL_RE.match(value):
        raise bad(prefix + key, f"must be a name (letters, digits, _ . -), got {value!r}")
    return value

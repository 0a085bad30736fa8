"""Read-only questions to anaconda.org's API that the nightly's plan job asks, with retries.

`api_get` fetches one URL (None for 404; a few retries on 5xx, 429 and network errors, then one
Failure line saying what the run cannot tell); `published_builds` lists the builds a channel label
already has, so that the nightly need not compile them again. No token: these are public reads.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from torchwin.ci import fetch
from torchwin.errors import Failure

PACKAGE_EXTENSIONS = (".conda", ".tar.bz2")


def api_get(url, unknown, attempts=3, sleep=None, timeout=60):
    """The body at url, or None when it is 404. unknown: what a failure leaves unanswered, for its message."""
    sleep = sleep or time.sleep
    fetch.check_url(url)
    opener = urllib.request.build_opener(fetch.NoDowngrade())
    for attempt in range(attempts):
        try:
            with opener.open(url, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code < 500 and exc.code != 429 or attempt == attempts - 1:
                raise Failure(f"{url}: HTTP {exc.code} {exc.reason}; {unknown}") from None
        except OSError as exc:
            if attempt == attempts - 1:
                reason = getattr(exc, "reason", None) or exc
                raise Failure(f"{url}: {reason}; {unknown}") from None
        sleep(2 ** (attempt + 1))


def package_files(api_url, owner, name, unknown, **kwargs):
    """The file records anaconda.org lists for owner/name ([] when the package does not exist)."""
    quote = urllib.parse.quote
    url = f"{api_url.rstrip('/')}/package/{quote(owner)}/{quote(name)}"
    body = api_get(url, unknown, **kwargs)
    if body is None:
        return []
    try:
        files = json.loads(body).get("files") or []
    except (ValueError, AttributeError):
        raise Failure(f"{url}: the answer is not the JSON package record") from None
    return [f for f in files if isinstance(f, dict) and isinstance(f.get("basename"), str)]


def build_key(subdir, name, version, build):
    """`win-64/magma-cuda90-2.5.0-h1234_0`: a build, whatever its package format."""
    return f"{subdir}/{name}-{version}-{build}"


def published_builds(api_url, owner, label, names, **kwargs):
    """build_key of every file of `names` that owner's `label` holds on anaconda.org."""
    found = set()
    for name in sorted(set(names)):
        for record in package_files(api_url, owner, name, "cannot tell which builds are published "
                                    "(re-run; the nightly would otherwise rebuild them)", **kwargs):
            if label not in (record.get("labels") or ["main"]):
                continue
            basename = record["basename"]
            for extension in PACKAGE_EXTENSIONS:
                if basename.endswith(extension):
                    found.add(basename[: -len(extension)])
    return found

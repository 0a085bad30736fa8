"""anaconda.org through anaconda-client's Python API (binstar_client): every call retried on transient errors.

Network errors, timeouts, 5xx answers and 429 (rate limit) are retried with exponential back-off;
any other 4xx is final, and so is a host name that does not resolve (offline, or a wrong API URL).
Every call has a connect and a read timeout (TIMEOUTS): a server that accepts and never answers
is a transient error, not a hang. Every message passes through the Redactor, so the token never
reaches the terminal.
"""

import re
import socket
import time

from torchwin.errors import Failure
from torchwin.publish.redact import Redactor

ATTEMPTS = 6  # 1 try + 5 retries: 2+4+8+16+32 s of back-off rides out a minute-long outage
BASE_DELAY = 2.0
MAX_DELAY = 60.0
# (connect, read) seconds. Read is the longest silence allowed mid-answer, not the whole call:
# an upload of a 1 GB package goes on as long as bytes move.
TIMEOUTS = (30.0, 300.0)


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


class Client:
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
            except Failure:
                raise
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


def make_api(token, api_url):
    """anaconda-client's API object for api_url; deliberately not get_server_api(), which would
    fall back to BINSTAR_API_TOKEN or a token stored by `anaconda login`."""
    from binstar_client import Binstar

    api = Binstar(token=token, domain=api_url)
    request = api.session.request

    def request_with_timeouts(method, url, **kwargs):
        kwargs.setdefault("timeout", TIMEOUTS)  # read when called: tests shrink it
        return request(method, url, **kwargs)

    api.session.request = request_with_timeouts
    return api


def _one_line(exc):
    status = status_of(exc)
    if status is not None and isinstance(exc.args[0], str):  # binstar_client's (message, status)
        text = f"{exc.args[0].strip()} (HTTP {status})"
    else:
        text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

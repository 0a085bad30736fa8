"""Keep the anaconda.org token out of every message: ours, an error answer's, and the libraries' own logs."""

import json
import logging
from urllib.parse import quote, quote_plus

# Loggers of the libraries publish calls: their records may quote headers, URLs or answers.
LIBRARY_LOGGERS = ("binstar", "binstar_client", "requests", "urllib3")


class Redactor:
    """Blanks the token out of any text on its way to the terminal or an exception.

    Every spelling that can reach a message is blanked: as set (a pasted CI secret may end in a
    newline), stripped, URL-quoted, and escaped as repr() or JSON show it (requests quotes a bad
    header value with repr()).
    """

    def __init__(self, secret):
        self.secret = secret or None
        self.spellings = sorted(spellings(secret), key=len, reverse=True) if secret else []

    def __call__(self, text):
        text = str(text)
        for spelling in self.spellings:
            text = text.replace(spelling, "***")
        return text


def spellings(secret):
    """The forms of secret a message may quote."""
    forms = set()
    for value in {secret, secret.strip()}:
        if not value:
            continue
        forms |= {value, quote(value), quote(value, safe=""), quote_plus(value), json.dumps(value)[1:-1],
                  repr(value)[1:-1], value.encode("unicode_escape").decode("ascii")}
    return {f for f in forms if f}


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

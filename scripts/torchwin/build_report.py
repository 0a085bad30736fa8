"""What `torchwin build` prints: progress while it works, then the outcome a person came for.

The summary leads with the counts, then a table of what was built (or failed), then the skipped
variants grouped by reason, one line per reason with its count, then the "Try it" lines. Every
line fits the terminal (COLUMNS, else 80 when not a terminal): a reason longer than that is cut
with "…"; `--verbose` adds every variant's row, whole reasons and the command for each group.
On a terminal the progress is one line rewritten in place; elsewhere (CI logs, pipes) it is
plain lines, one per variant built, none for the skipped (the summary counts them).
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

ELLIPSIS = "…"


def width() -> int:
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def cut(text: str, columns: int) -> str:
    return text if len(text) <= columns else text[: columns - 1] + ELLIPSIS


def wrap(text: str, columns: int, indent: str = "", more: str = "    ") -> list:
    """text as lines of at most `columns`, words never split (a path or URL longer than that is cut)."""
    lines = textwrap.wrap(text, columns, initial_indent=indent, subsequent_indent=indent + more,
                          break_long_words=False, break_on_hyphens=False) or [indent]
    return [cut(line, columns) for line in lines]


def say(text: str, out) -> None:
    """A message of the run (a recipe added, replaced, not built), wrapped to the width."""
    for line in wrap(text, width()):
        print(line, file=out, flush=True)


class Progress:
    """One status line on a terminal, rewritten as variants go by; plain lines elsewhere."""

    def __init__(self, out, verbose=False):
        self.out = out
        self.verbose = verbose
        self.live = bool(getattr(out, "isatty", lambda: False)())
        self.shown = False

    def status(self, text: str) -> None:
        """Work starting (a variant building): the live line, or a plain line."""
        self._show(text, plain=True)

    def skip(self, text: str) -> None:
        """Passing news (a variant skipped): the live line, or a plain line only when verbose."""
        self._show(text, plain=self.verbose)

    def _show(self, text: str, plain: bool) -> None:
        if self.live:
            self.out.write("\r\033[K" + cut(text, width() - 1))
            self.out.flush()
            self.shown = True
        elif plain:
            print(cut(text, width()), file=self.out, flush=True)

    def line(self, text: str) -> None:
        """News that stays (a variant built or failed)."""
        self.clear()
        print(cut(text, width()), file=self.out, flush=True)

    def clear(self) -> None:
        if self.shown:
            self.out.write("\r\033[K")
            self.out.flush()
            self.shown = False


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def print_summary(outcomes, channel_dir: Path, out=None, verbose=False, lines_and_note=None) -> None:
    out = out or sys.stdout
    columns = width()
    counts = {k: sum(1 for o in outcomes if o.result == k) for k in ("built", "failed", "skipped", "not added")}
    added = sum(1 for o in outcomes if o.result == "built" and o.files)
    head = "%(built)d built, %(failed)d failed, %(skipped)d skipped" % counts
    if counts["not added"]:
        head += ", %d built but not added (a package of their recipe failed)" % counts["not added"]
    if added:
        head += "; in %s" % channel_dir
    print("", file=out)
    for line in wrap(head, columns):
        print(line, file=out)
    shown = [o for o in outcomes if verbose or o.result != "skipped"]
    if shown:
        print_table(shown, out, columns)
    for o in outcomes:
        if o.result in ("failed", "not added"):
            for line in wrap("%s %s %s: %s" % (o.variant.name, o.variant.version, o.variant.build_string,
                                               o.reason), columns, "  "):
                print(line, file=out)
    print_skipped(outcomes, out, verbose, columns)
    lines, note = lines_and_note(outcomes, channel_dir) if lines_and_note else ([], "")
    if lines:
        print("\nTry it:", file=out)
        for line in lines:
            print("  " + line, file=out)  # whole: a command cut or wrapped cannot be pasted
        if note:
            for line in wrap("(%s)" % note, columns, "  ", " "):
                print(line, file=out)


def print_table(outcomes, out, columns) -> None:
    rows = [("PACKAGE", "BUILD", "SUBDIR", "SIZE", "SECONDS", "RESULT")]
    for o in outcomes:
        v = o.variant
        rows.append(("%s %s" % (v.name, v.version), v.build_string, v.subdir,
                     _size(o.size) if o.files else "-", "%.1f" % o.seconds, o.result))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print("", file=out)
    for r in rows:
        print(cut("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), columns), file=out)


def print_skipped(outcomes, out, verbose=False, columns=80) -> None:
    """Skipped variants grouped by recipe, platform and reason: one line per group with its count,
    then one command that builds the group elsewhere."""
    groups: dict = {}
    for o in outcomes:
        if o.result == "skipped":
            reason = o.reason if verbose else (o.short or o.reason)
            groups.setdefault((o.variant.recipe, o.variant.subdir, reason), []).append(o)
    if not groups:
        return
    print("\nSkipped, by reason%s:" % ("" if verbose else " (--verbose: the whole reasons)"), file=out)
    for (recipe, subdir, reason), members in groups.items():
        text = "%s for %s (%d variant%s): %s" % (recipe, subdir, len(members), "" if len(members) == 1 else "s",
                                                reason)
        hint = "e.g. %s" % members[0].hint
        if verbose:
            print("  " + text, file=out)
            print("    " + hint, file=out)
        else:
            print(cut("  " + text, columns), file=out)
            for line in wrap(hint, columns, "    "):
                print(line, file=out)

"""`torchwin channel page`: a static index.html for the channel, with no external assets.

The page shows, for each label and PyTorch version, a matrix of platform and
Python (rows) by CUDA version or CPU (columns); each cell holds the install
command for exactly that build, its size, its date and, on labels other than
main, its age. Python and CUDA are the records' (torchwin.channel.records).
Everything else in the channel is listed below the matrices.
"""

import html
import os
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from rattler import Version

from torchwin.channel.config import MAIN
from torchwin.channel.labels import dependency_labels
from torchwin.channel.records import collect
from torchwin.channel.store import reading

STALE_DAYS = 3  # the smoke tests call a nightly stale from this age on


def write_page(channel_dir, config, channel_url=None, output=None, now=None):
    """Render the page for channel_dir and write it (atomically) to output or DIR/index.html."""
    channel_dir = Path(channel_dir)
    with reading(channel_dir):
        entries = collect(channel_dir)
    text = render(entries, config, channel_url=channel_url, now=now)
    output = Path(output) if output else channel_dir / "index.html"
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".index-", suffix=".html", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output, entries


# ---------------------------------------------------------------- rendering

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  margin:0 auto;max-width:1200px;padding:1.5em;color:#1d2329;background:#fff}
h1{font-size:1.6em;margin:.2em 0}
h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:1px solid #d5dbe1;padding-bottom:.2em}
.sub{color:#59636e;margin:.2em 0 1em}
.badge{display:inline-block;font-size:.75em;padding:.1em .55em;border-radius:1em;vertical-align:middle;
  background:#e6f0fa;color:#0b4a8b;margin-left:.4em}
.badge.nightly{background:#fff1d6;color:#7a4b00}
table{border-collapse:collapse;width:100%;margin:.4em 0 1em}
th,td{border:1px solid #d5dbe1;padding:.45em .6em;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}
td.none{color:#9aa4ae;text-align:center}
code{font:13px/1.4 ui-monospace,Consolas,"Liberation Mono",Menlo,monospace;background:#f6f8fa;
  padding:.2em .35em;border-radius:4px;display:block;white-space:pre-wrap;word-break:break-all;
  user-select:all}
.meta{color:#59636e;font-size:.85em;margin-top:.3em}
.stale{color:#a40e26;font-weight:600}
.fresh{color:#116329;font-weight:600}
ul.summary{padding-left:1.2em}
"""


def render(entries, config, channel_url=None, now=None):
    now = now or datetime.now(timezone.utc)
    base = (channel_url or config.name).rstrip("/")
    labels = sorted({e.label for e in entries}, key=lambda lab: (lab != MAIN, lab))
    torch = [e for e in entries if e.compute is not None]
    others = [e for e in entries if e.compute is None]
    names_by_label = {}
    for e in entries:
        names_by_label.setdefault(e.label, set()).add(e.name)

    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(config.name)}: PyTorch conda packages</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(config.name)}: PyTorch conda packages</h1>",
        (
            f'<p class="sub">Channel <code style="display:inline">{_e(base)}</code> &middot; '
            f"page generated {now:%Y-%m-%d %H:%M} UTC</p>"
        ),
    ]
    if not entries:
        out.append(
            "<p>No packages in this channel yet. Add some with "
            '<code style="display:inline">torchwin channel add FILE</code>.</p>'
        )
    out.append(_summary(entries, labels, now))
    for label in labels:
        versions = {}
        for e in torch:
            if e.label == label:
                versions.setdefault(e.version, []).append(e)
        for version in sorted(versions, key=_version_key, reverse=True):
            out.append(_matrix(label, version, versions[version], base, names_by_label, now, entries))
    if others:
        out.append(_others(others, now))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _summary(entries, labels, now):
    items = []
    for label in labels:
        mine = [e for e in entries if e.label == label]
        size = sum(e.size for e in mine)
        text = f"<b>{_e(label)}</b>: {len(mine)} package file(s), {_size(size)}"
        if label != MAIN:
            stamped = [e for e in mine if e.timestamp and e.compute is not None] or [
                e for e in mine if e.timestamp
            ]
            if stamped:
                newest = max(stamped, key=lambda e: e.timestamp)
                days = (now - newest.timestamp).days
                css = "stale" if days >= STALE_DAYS else "fresh"
                text += (
                    f"; newest build {_e(newest.name)} {_e(newest.version)} is "
                    f'<span class="{css}">{_age(days)}</span>'
                )
        items.append(f"<li>{text}</li>")
    return f'<ul class="summary">{"".join(items)}</ul>' if items else ""


def _compute_sort(compute):
    if compute == "cpu":
        return (1, 0.0)
    try:
        return (0, float(compute))
    except ValueError:
        return (2, 0.0)


def _compute_title(compute):
    if compute == "cpu":
        return "CPU"
    if compute == "unknown":
        return "other"
    return f"CUDA {compute}"


def _matrix(label, version, cells, base, names_by_label, now, entries=()):
    computes = sorted({e.compute for e in cells}, key=_compute_sort)
    rows = sorted({(e.subdir, e.python or "") for e in cells}, key=lambda r: (r[0], _py_key(r[1])))
    newest = {}
    for e in cells:
        key = (e.subdir, e.python or "", e.compute)
        if key not in newest or _newer(e, newest[key]):
            newest[key] = e
    badge = "nightly" if label != MAIN else ""
    out = [
        f'<h2>PyTorch {_e(version)} <span class="badge {badge}">{_e(label)}</span></h2>',
        "<table><thead><tr><th>Platform</th><th>Python</th>"
        + "".join(f"<th>{_e(_compute_title(c))}</th>" for c in computes)
        + "</tr></thead><tbody>",
    ]
    for subdir, python in rows:
        out.append(f"<tr><td>{_e(subdir)}</td><td>{_e(python or 'any')}</td>")
        for compute in computes:
            e = newest.get((subdir, python, compute))
            if e is None:
                out.append('<td class="none">&mdash;</td>')
                continue
            meta = [_size(e.size)]
            if e.timestamp:
                meta.append("built " + e.timestamp.strftime("%Y-%m-%d"))
                if label != MAIN:
                    days = (now - e.timestamp).days
                    css = "stale" if days >= STALE_DAYS else "fresh"
                    meta.append(f'<span class="{css}">{_age(days)}</span>')
            command = install_command(e, base, names_by_label, entries)
            shown = (f"<code>{_e(command)}</code>" if command else
                     "<div>no install command: its name, version or build has characters a shell would read</div>")
            out.append(f'<td>{shown}<div class="meta">{" &middot; ".join(meta)}</div></td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def install_command(e, base, names_by_label, entries=()):
    """The conda command that installs exactly this build (newest build number of its variant).

    None when a word of it holds a character that cmd, PowerShell or a POSIX shell would read even
    inside double quotes (`$`, backquote, `!`, `%`, quotes): the page hands out commands to paste.
    """
    suffix = f"_{e.build_number}"
    # Build number as a wildcard: the solver then takes the newest build of this variant.
    build = e.build[: -len(suffix) + 1] + "*" if e.build.endswith(suffix) else e.build
    spec = f"{e.name}={e.version}={build}"
    channels = [_label_url(base, e.label)]
    extra = []
    # The one-line selection packages (cuda90, cpuonly), when the channel has them.
    if e.compute == "cpu":
        selector = "cpuonly"
    else:
        selector = "cuda" + e.compute.replace(".", "")
    if selector:
        if selector in names_by_label.get(e.label, ()):
            extra.append(selector)
        elif e.label != MAIN and selector in names_by_label.get(MAIN, ()):
            extra.append(selector)
            channels.append(_label_url(base, MAIN))
    needed = dependency_labels(e.label, e.subdir, e.depends, entries)
    channels += [_label_url(base, lab) for lab in needed if _label_url(base, lab) not in channels]
    words = ["conda", "install"]
    for channel in channels:
        words += ["-c", channel]
    words += [spec, *extra]
    if not all(_SAFE_WORD.match(w) for w in words):
        return None
    return " ".join(f'"{w}"' if w == spec else w for w in words)


# Characters no shell expands inside double quotes (and that need none outside them but `*` and `=`).
_SAFE_WORD = re.compile(r"^[A-Za-z0-9_.+=*/:@,~-]+$")


def _label_url(base, label):
    return base if label == MAIN else f"{base}/label/{label}"


def _others(entries, now):
    out = [
        "<h2>Other packages</h2>",
        (
            "<table><thead><tr><th>Package</th><th>Version</th><th>Build</th><th>Platform</th>"
            "<th>Label</th><th>Size</th><th>Built</th></tr></thead><tbody>"
        ),
    ]
    for e in sorted(entries, key=lambda e: (e.name, e.label, e.subdir, _version_key(e.version), e.build)):
        built = e.timestamp.strftime("%Y-%m-%d") if e.timestamp else "&mdash;"
        cells = [_e(e.name), _e(e.version), _e(e.build), _e(e.subdir), _e(e.label), _size(e.size), built]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _version_key(text):
    """A version to sort by; one another tool wrote that does not parse sorts first."""
    try:
        return (1, Version(text))
    except Exception:  # noqa: BLE001 - rattler's parse errors have several types
        return (0, Version("0"))


def _newer(a, b):
    return (a.build_number, a.timestamp or datetime.min.replace(tzinfo=timezone.utc)) > (
        b.build_number,
        b.timestamp or datetime.min.replace(tzinfo=timezone.utc),
    )


def _py_key(python):
    try:
        return tuple(int(x) for x in python.split("."))
    except ValueError:
        return (0,)


def _age(days):
    if days <= 0:
        return "built today"
    return f"{days} day{'' if days == 1 else 's'} old"


def _size(size):
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _e(text):
    return html.escape(str(text), quote=True)

"""Get one pinned file onto the machine and prove it is the one the table pins, then unpack it.

Downloads go over https only (plain http just to this machine, file:// for local copies; a redirect
never leaves https), to a temporary name renamed into place once the sha256 (or NVIDIA's md5)
matches, so the download folder CI caches never holds a file that failed its check. A file that
names a signer must carry a valid Authenticode signature of that organisation before it runs.
Archives are unpacked member by member, refusing names that would land outside the target.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from torchwin.errors import Failure

_CHUNK = 1 << 20
PIN_HINT = (
    "pin it: on a trusted machine run `torchwin ci hash %s`, which downloads the file, checks "
    "NVIDIA's published md5 where the table has one and prints the sha256; put that value in "
    "scripts/torchwin/data/ci_downloads.yaml"
)


@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, its name on disk, and the hashes it must have."""

    label: str  # what `torchwin ci hash` takes to fetch it again, e.g. "cuda 9.0 --platform win-64"
    url: str
    file: str
    sha256: str | None
    md5: str | None = None
    signer: str | None = None  # the organisation its Authenticode signature must name
    source: str | None = None  # where the hash was published

    @property
    def pinned(self):
        """A sha256; or, where the vendor published only an md5, the md5 and the signer together."""
        return bool(self.sha256 or (self.md5 and self.signer))



def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def url_allowed(url):
    """https anywhere; plain http only to this machine (tests, a local mirror); file:// for local copies."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("https", "file"):
        return True
    return parts.scheme == "http" and _is_loopback(parts.hostname or "")


def check_url(url):
    if not url_allowed(url):
        raise Failure(f"refusing to download {url}: only https (or http to 127.0.0.1) is allowed")


class NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow redirects (NVIDIA's and Microsoft's short links redirect) but never away from https."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def file_hashes(path: Path):
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(download: Download, sha, md5):
    if download.sha256 and sha != download.sha256:
        return f"sha256 {sha}, expected {download.sha256}"
    if download.md5 and md5 != download.md5:
        return f"md5 {md5}, expected NVIDIA's {download.md5}"
    return ""


def fetch(download: Download, download_dir: Path, out, require_pin=True, timeout=60) -> Path:
    """The verified file in download_dir: reused when its hashes match, else downloaded and checked.

    A download is written to a temporary name and only renamed into place once it
    matches, so the folder (which CI caches) never holds a file that failed its check.
    """
    if require_pin and not download.pinned:
        raise Failure(f"{download.url} has no pinned sha256, so it will not be run; "
                      f"{PIN_HINT % download.label}")
    download_dir.mkdir(parents=True, exist_ok=True)
    target = download_dir / download.file
    if target.is_file() and download.pinned:
        sha, md5 = file_hashes(target)
        if not _mismatch(download, sha, md5):
            print(f"reusing {target} (sha256 verified)", file=out, flush=True)
            return target
        print(f"discarding {target}: its hashes do not match the table", file=out, flush=True)
        target.unlink()
    check_url(download.url)
    print(f"downloading {download.url}", file=out, flush=True)
    handle, temp_name = tempfile.mkstemp(prefix=".part-", dir=download_dir)
    temp = Path(temp_name)
    try:
        opener = urllib.request.build_opener(NoDowngrade())
        with os.fdopen(handle, "wb") as sink, opener.open(download.url, timeout=timeout) as response:
            shutil.copyfileobj(response, sink, _CHUNK)
        sha, md5 = file_hashes(temp)
        problem = _mismatch(download, sha, md5)
        if problem:
            raise Failure(f"{download.url}: {problem}; the file was discarded and nothing was installed")
        os.replace(temp, target)
    except OSError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Failure(f"download of {download.url} failed: {reason}") from None
    finally:
        if temp.exists():
            temp.unlink()
    print(f"  sha256 {sha} verified" if download.sha256 else f"  md5 {md5} verified", file=out, flush=True)
    return target


def _signature_matches(subject, signer):
    """Whether a certificate subject (`CN=..., O=NVIDIA Corporation, ...`) names signer as its organisation."""
    fields = re.findall(r'(?:^|,)\s*O=("[^"]*"|[^,]*)', subject)
    return any(value.strip().strip('"') == signer for value in fields)


def check_signature(path: Path, signer: str, out):
    """Windows' own verdict on the file's Authenticode signature: Valid, and signed by signer."""
    shell = shutil.which("powershell") or shutil.which("pwsh")
    if shell is None:
        raise Failure(f"cannot check the signature of {path.name}: PowerShell (Get-AuthenticodeSignature) "
                      "was not found")
    # The path travels in the environment, never inside the command text.
    script = ("$s = Get-AuthenticodeSignature -LiteralPath $env:TORCHWIN_SIGNED_FILE; "
              "Write-Output ('{0}|{1}' -f $s.Status, $s.SignerCertificate.Subject)")
    result = subprocess.run([shell, "-NoProfile", "-NonInteractive", "-Command", script], check=False,
                            capture_output=True, text=True, env={**os.environ, "TORCHWIN_SIGNED_FILE": str(path)})
    status, _, subject = result.stdout.strip().partition("|")
    if result.returncode != 0 or status != "Valid" or not _signature_matches(subject, signer):
        seen = f"{status or 'no answer'}, {subject or 'no signer'}"
        raise Failure(f"{path.name}: its Authenticode signature is not a valid one by {signer} ({seen}); "
                      "nothing was run")
    print(f"  signature valid, signed by {signer}", file=out, flush=True)


def _members(names, strip):
    """(archive name, relative destination) pairs, refusing anything that would land outside dest."""
    for name in names:
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if strip and parts and parts[0] == strip:
            parts = parts[1:]
        if not parts:
            continue
        if any(p in ("..", "") for p in parts) or parts[0].endswith(":") or name.startswith("/"):
            raise Failure(f"archive member {name!r} would be written outside the target folder")
        yield name, Path(*parts)


def extract(archive: Path, dest: Path, strip: str, out):
    print(f"unpacking {archive.name} into {dest}", file=out, flush=True)
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                for _, rel in _members([info.filename], strip):
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, target.open("wb") as sink:
                        shutil.copyfileobj(src, sink, _CHUNK)
        return
    if not tarfile.is_tarfile(archive):
        raise Failure(f"{archive} is neither a zip nor a tar archive")
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            for _, rel in _members([member.name], strip):
                target = dest / rel
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.issym():
                    # cuDNN ships libcudnn.so -> libcudnn.so.7 links; keep them, but only inside dest.
                    link = PurePosixPath(member.linkname)
                    if link.is_absolute() or ".." in link.parts:
                        raise Failure(f"archive link {member.name!r} -> {member.linkname!r} "
                                      "points outside the target folder")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if target.is_symlink() or target.exists():
                        target.unlink()
                    os.symlink(member.linkname, target)
                elif member.isfile():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(member) as src, target.open("wb") as sink:
                        shutil.copyfileobj(src, sink, _CHUNK)

"""Send one checked package file to anaconda.org: stage, the storage POST, commit.

The calls anaconda-client's Binstar.upload makes, made here so that the bytes sent are the
bytes checked, and every call has a timeout: the file is opened once, hashed from that handle
(sha256, md5, size) and compared with what package_check measured, then streamed from the same
handle through CheckedReader, which hashes again on the way and holds back the last bytes unless
they still hash to the checked sha256. A file replaced or rewritten after its check is never
committed. The stage call names the checked sha256, the storage POST carries the md5 the
storage checks. A storage answer that is not 201 is an error with its HTTP status, whatever its
body (empty, HTML, XML): a 5xx is then retried like any other.
"""

import base64
import hashlib

from torchwin.channel.package_read import CHUNK
from torchwin.errors import Failure
from torchwin.publish import anaconda


class Changed(Exception):
    """The package file's bytes are no longer those checked."""


class CheckedReader:
    """A file handle read for upload: sha256 on the way, and the last chunk only if it all matches."""

    def __init__(self, stream, sha256, size):
        self.stream, self.sha256, self.size = stream, sha256, size
        self.digest, self.sent = hashlib.sha256(), 0

    @property
    def len(self):
        """What is left to send: requests_toolbelt's MultipartEncoder reads until it is 0."""
        return max(self.size - self.sent, 0)

    def read(self, size=-1):
        data = self.stream.read(CHUNK if size is None or size < 0 else min(size, CHUNK))
        self.digest.update(data)
        self.sent += len(data)
        if self.sent > self.size or (self.sent == self.size and self.digest.hexdigest() != self.sha256):
            raise Changed("its bytes changed while they were uploaded")
        if not data and self.sent < self.size:
            raise Changed("it got shorter while it was uploaded")
        return data

    def tell(self):
        return self.sent


def _measure(stream):
    sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
    for chunk in iter(lambda: stream.read(CHUNK), b""):
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    stream.seek(0)
    return sha256.hexdigest(), md5, size


def send_checked(api, owner, pkg, basename, label, file_attrs):
    """Stage, upload and commit pkg's file as basename with label; Failure if it is not the file checked."""
    from urllib.parse import quote

    import requests
    from binstar_client import errors
    from binstar_client.utils.config import PackageType
    from requests_toolbelt import MultipartEncoder

    changed = f"{pkg.path} changed after it was checked; nothing of it was committed on anaconda.org"
    with open(pkg.path, "rb") as stream:
        sha256, md5, size = _measure(stream)
        if (sha256, size) != (pkg.sha256, pkg.size):
            raise Failure(f"{changed} (sha256 now {sha256[:12]}..., checked {pkg.sha256[:12]}...)")
        path = "/".join(quote(p, safe="") for p in (owner, pkg.name, pkg.version)) + "/" + quote(basename)
        payload = {"distribution_type": PackageType.CONDA.value, "description": "", "attrs": file_attrs["attrs"],
                   "dependencies": file_attrs.get("dependencies"), "channels": [label], "sha256": pkg.sha256}
        res = api.session.post(f"{api.domain}/stage/{path}", json=payload)
        api._check_response(res)  # binstar_client's own errors, with the HTTP status
        staged = res.json()
        form = dict(staged["form_data"])
        form["Content-Length"] = str(size)
        form["Content-MD5"] = base64.b64encode(md5.digest()).decode("ascii")
        form["file"] = (basename, CheckedReader(stream, pkg.sha256, size))
        encoder = MultipartEncoder(form)
        try:
            answer = requests.post(staged["post_url"], data=encoder, headers={"Content-Type": encoder.content_type},
                                   timeout=anaconda.TIMEOUTS, verify=api.session.verify)
        except Changed as exc:
            raise Failure(f"{changed} ({exc})") from None
        if answer.status_code != 201:
            raise errors.BinstarError(f"storage refused the upload: {_storage_error(answer)}", answer.status_code)
        res = api.session.post(f"{api.domain}/commit/{path}", json={"dist_id": staged["dist_id"]})
        api._check_response(res)
        return res.json()


def _storage_error(answer):
    """The storage's error code from its XML answer, or the first line of whatever it sent instead."""
    import defusedxml.ElementTree as ET

    text = answer.text.strip()
    try:
        code = ET.fromstring(text).findtext("Code")
    except Exception:  # noqa: BLE001 - empty, HTML or truncated: not XML
        code = None
    return code or (text.splitlines()[0][:200] if text else "an empty answer")

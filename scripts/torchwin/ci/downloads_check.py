"""The rules of the download table (data/ci_downloads.yaml), checked whenever it is loaded.

Every key is known, every URL pinned (a sha256, or an md5 with the signer its signature must
name), every placeholder one the plans fill in, every platform, installer kind and CUDA version one
the plans know; a break is one UserError naming the entry and the key.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from torchwin.ci.fetch import url_allowed
from torchwin.errors import UserError

TABLE_NAME = "ci_downloads.yaml"
PLATFORMS = ("win-64", "linux-64")
INSTALLER_KINDS = ("local", "network")

PLACEHOLDERS = ("install_dir", "home", "version")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CUDA_RE = re.compile(r"^\d+\.\d+$")
VS_KEYS = {"download", "install_dir", "components", "args", "ok_exit_codes", "expect", "channel", "vswhere"}
CUDA_KEYS = {"version", "installers", "runner", "args", "subpackages", "install_dir", "ok_exit_codes",
             "cudnn", "expect", "patches"}
# A toolkit patch (e.g. CUDA 9.2.148's "Patch 1"), run after the toolkit's installer.
PATCH_KEYS = {"download", "args"}
DOWNLOAD_KEYS = ("url", "file", "sha256", "md5", "signer", "source", "version")
SIGNERS = ("NVIDIA Corporation", "Microsoft Corporation")


def _need(cond, where, message):
    if not cond:
        raise UserError(f"{where}: {message}")


def _check_download(entry, where):
    _need(isinstance(entry, dict), where, "must be a mapping with url, file and sha256")
    unknown = set(entry) - set(DOWNLOAD_KEYS)
    _need(not unknown, where,
          f"unknown key(s) {', '.join(sorted(map(str, unknown)))}; allowed: {', '.join(DOWNLOAD_KEYS)}")
    url = entry.get("url")
    _need(isinstance(url, str) and url_allowed(url), where + ".url",
          f"{url!r} must be an https:// URL (plain http only to this machine, e.g. a local mirror)")
    name = entry.get("file")
    _need(isinstance(name, str) and name and PurePosixPath(name).name == name and "\\" not in name
          and name not in (".", ".."), where + ".file", f"{name!r} must be a plain file name")
    _need("sha256" in entry, where, "sha256 is missing (write `sha256: null` while it is not pinned)")
    sha = entry["sha256"]
    _need(sha is None or (isinstance(sha, str) and _SHA256_RE.match(sha)), where + ".sha256",
          f"{sha!r} must be 64 lowercase hex digits, or null while not pinned")
    md5 = entry.get("md5")
    _need(md5 is None or (isinstance(md5, str) and _MD5_RE.match(md5)), where + ".md5",
          f"{md5!r} must be 32 lowercase hex digits")
    signer = entry.get("signer")
    _need(signer is None or signer in SIGNERS, where + ".signer",
          f"{signer!r} must be one of: {', '.join(SIGNERS)}")
    # A pin nobody can trace is worth little: every hash names where it was published.
    source = entry.get("source")
    _need(not (sha or md5) or (isinstance(source, str) and source.startswith("https://")), where + ".source",
          "a pinned hash needs `source:` -- the https URL of the manifest or page that publishes it")


def _check_strings(value, where, what="a list of strings"):
    _need(isinstance(value, list) and all(isinstance(v, str) and v for v in value), where,
          f"must be {what}")
    for item in value:
        for name in re.findall(r"{(\w*)}", item):
            allowed = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            _need(name in PLACEHOLDERS, where,
                  f"unknown placeholder {{{name}}} in {item!r}; allowed: {allowed}")


def validate_table(data, where=TABLE_NAME):
    _need(isinstance(data, dict), where, "must be a mapping with schema, vs2017 and cuda")
    _need(data.get("schema") == 1, where + ".schema", "must be 1")
    unknown = set(data) - {"schema", "vs2017", "cuda"}
    _need(not unknown, where, "unknown key(s) {}".format(", ".join(sorted(map(str, unknown)))))

    vs = data.get("vs2017")
    _need(isinstance(vs, dict) and "win-64" in vs, where + ".vs2017", "must have a win-64 entry")
    for platform, entry in vs.items():
        here = f"{where}.vs2017.{platform}"
        _need(platform in PLATFORMS, here, "unknown platform; allowed: {}".format(", ".join(PLATFORMS)))
        _need(isinstance(entry, dict), here, "must be a mapping")
        _check_keys(entry, VS_KEYS, here)
        _check_download(entry.get("download"), here + ".download")
        _check_strings(entry.get("args"), here + ".args")
        _check_strings(entry.get("components"), here + ".components")
        _check_strings(entry.get("expect", []), here + ".expect")
        _need(isinstance(entry.get("install_dir"), str), here + ".install_dir", "must be a path")
        _check_codes(entry.get("ok_exit_codes", [0]), here + ".ok_exit_codes")
        _need(isinstance(entry.get("channel", ""), str) and url_allowed(entry.get("channel", "https://")),
              here + ".channel", "must be the https URL of the release channel manifest")
        vswhere = entry.get("vswhere", {})
        _need(isinstance(vswhere, dict) and set(vswhere) <= {"version", "requires"}
              and isinstance(vswhere.get("version", ""), str), here + ".vswhere",
              "must be a mapping with version (a vswhere range like [15.9,16.0)) and requires (components)")
        _check_strings(vswhere.get("requires", []), here + ".vswhere.requires")

    cuda = data.get("cuda")
    _need(isinstance(cuda, dict) and cuda, where + ".cuda", "must map CUDA versions to platforms")
    for version, platforms in cuda.items():
        here = f"{where}.cuda.{version}"
        # YAML reads an unquoted 9.0 as the float 9.0 (and 9.10 as 9.1): versions must be quoted strings.
        _need(isinstance(version, str) and _CUDA_RE.match(version), here,
              "CUDA version keys must be quoted strings like \"9.0\"")
        _need(isinstance(platforms, dict) and platforms, here, "must map platforms to entries")
        for platform, entry in platforms.items():
            where_p = f"{here}.{platform}"
            _need(platform in PLATFORMS, where_p, f"unknown platform; allowed: {', '.join(PLATFORMS)}")
            _need(isinstance(entry, dict), where_p, "must be a mapping")
            _check_keys(entry, CUDA_KEYS, where_p)
            full = str(entry.get("version", ""))
            _need(full.startswith(version + "."), where_p + ".version",
                  f"{full!r} must be the full version of CUDA {version} (e.g. {version}.176)")
            installers = entry.get("installers")
            _need(isinstance(installers, dict) and "local" in installers, where_p + ".installers",
                  "must have a `local` installer")
            for kind, download in installers.items():
                _need(kind in INSTALLER_KINDS, f"{where_p}.installers.{kind}",
                      "unknown installer kind; allowed: {}".format(", ".join(INSTALLER_KINDS)))
                _check_download(download, f"{where_p}.installers.{kind}")
            _check_strings(entry.get("args"), where_p + ".args")
            _check_strings(entry.get("runner", []), where_p + ".runner")
            _check_strings(entry.get("subpackages", []), where_p + ".subpackages")
            if platform == "win-64":
                _need(entry.get("subpackages"), where_p + ".subpackages",
                      "a Windows silent install needs its sub-package list")
            _need(isinstance(entry.get("install_dir"), str), where_p + ".install_dir", "must be a path")
            _check_codes(entry.get("ok_exit_codes", [0]), where_p + ".ok_exit_codes")
            _check_strings(entry.get("expect", []), where_p + ".expect")
            if "cudnn" in entry:
                _check_download(entry["cudnn"], where_p + ".cudnn")
            patches = entry.get("patches", [])
            _need(isinstance(patches, list), where_p + ".patches", "must be a list of {download, args}")
            for number, patch in enumerate(patches, 1):
                where_n = f"{where_p}.patches[{number}]"
                _need(isinstance(patch, dict), where_n, "must be a mapping with download and args")
                _check_keys(patch, PATCH_KEYS, where_n)
                _check_download(patch.get("download"), where_n + ".download")
                _check_strings(patch.get("args"), where_n + ".args")


def _check_keys(entry, allowed, where):
    unknown = sorted(map(str, set(entry) - allowed))
    _need(not unknown, where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _check_codes(value, where):
    _need(isinstance(value, list) and value and all(isinstance(v, int) for v in value), where,
          "must be a list of integers")

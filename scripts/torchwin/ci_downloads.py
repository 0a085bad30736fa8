"""Set up a CI build machine from the pinned download table (data/ci_downloads.yaml).

The table says, per tool, version and platform: what to download (URL, file
name, sha256, optionally NVIDIA's md5), how to install it silently (arguments,
sub-packages) and what must exist afterwards. This module turns one table
entry into a `Plan` (a list of steps), prints it, and carries it out:

1. refuse any file whose sha256 is not pinned (say how to pin it);
2. download every file (or reuse a verified copy in the download folder) and
   check its hashes -- all of them, before anything runs;
3. run the installers / unpack the archives, checking exit codes and the
   files each must leave behind;
4. tell later CI steps where things are (GITHUB_ENV / GITHUB_PATH).

`--dry-run` stops after printing the plan: nothing is downloaded or changed.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath

import yaml

from torchwin.errors import Failure, UserError

TABLE_NAME = "ci_downloads.yaml"
PLATFORMS = ("win-64", "linux-64")
INSTALLER_KINDS = ("local", "network")
PLACEHOLDERS = ("install_dir", "home", "version")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
_CUDA_RE = re.compile(r"^\d+\.\d+$")
_CHUNK = 1 << 20
VS_KEYS = {"download", "install_dir", "components", "args", "ok_exit_codes", "expect"}
CUDA_KEYS = {"version", "installers", "runner", "args", "subpackages", "install_dir", "ok_exit_codes",
             "cudnn"}

PIN_HINT = (
    "pin it: on a trusted machine run `torchwin ci hash %s`, which downloads the file, checks "
    "NVIDIA's published md5 where the table has one and prints the sha256; put that value in "
    "scripts/torchwin/data/ci_downloads.yaml"
)


# ---------------------------------------------------------------- the table


def default_table_path() -> Path:
    return Path(str(resources.files("torchwin") / "data" / TABLE_NAME))


def load_table(path=None) -> dict:
    """Read and validate the table; a bad entry is one UserError naming its key."""
    path = Path(path) if path else default_table_path()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    validate_table(data, str(path))
    return data


def _need(cond, where, message):
    if not cond:
        raise UserError(f"{where}: {message}")


def _check_download(entry, where):
    _need(isinstance(entry, dict), where, "must be a mapping with url, file and sha256")
    unknown = set(entry) - {"url", "file", "sha256", "md5", "version"}
    _need(not unknown, where,
          f"unknown key(s) {', '.join(sorted(unknown))}; allowed: url, file, sha256, md5, version")
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
            if "cudnn" in entry:
                _check_download(entry["cudnn"], where_p + ".cudnn")


def _check_keys(entry, allowed, where):
    unknown = sorted(map(str, set(entry) - allowed))
    _need(not unknown, where, f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _check_codes(value, where):
    _need(isinstance(value, list) and value and all(isinstance(v, int) for v in value), where,
          "must be a list of integers")


# ---------------------------------------------------------------- plans


@dataclass(frozen=True)
class Download:
    """One file to fetch: where from, its name on disk, and the hashes it must have."""

    label: str  # what `torchwin ci hash` takes to fetch it again, e.g. "cuda 9.0 --platform win-64"
    url: str
    file: str
    sha256: str | None
    md5: str | None = None


@dataclass
class Step:
    """One thing to do with a downloaded file: run it, or unpack it somewhere."""

    title: str
    download: Download
    action: str  # "run" or "extract"
    args: list = field(default_factory=list)  # for "run": the arguments after the file
    runner: list = field(default_factory=list)  # for "run": program in front of the file (e.g. sh)
    ok_exit_codes: tuple = (0,)
    dest: str = ""  # for "extract": the folder to unpack into
    strip: str = ""  # for "extract": leading folder of the archive to drop
    expect: list = field(default_factory=list)  # paths (globs) that must exist afterwards

    def argv(self, path: Path) -> list:
        return [*self.runner, str(path), *self.args]


@dataclass
class Plan:
    title: str
    platform: str
    steps: list
    env: dict = field(default_factory=dict)  # variables later CI steps should see
    paths: list = field(default_factory=list)  # folders later CI steps should have on PATH


def host_platform() -> str:
    return "win-64" if sys.platform == "win32" else "linux-64"


def _fill(text, values):
    return text.format(**values)


def _download(entry, label) -> Download:
    return Download(label=label, url=entry["url"], file=entry["file"], sha256=entry.get("sha256"),
                    md5=entry.get("md5"))


def _join(base, rel, platform):
    # Table paths use forward slashes; a Windows plan keeps Windows separators even when printed elsewhere.
    if platform.startswith("win"):
        return base.rstrip("\\/") + "\\" + rel.replace("/", "\\")
    return base.rstrip("/") + "/" + rel


def vs2017_plan(table, platform="win-64") -> Plan:
    entries = table["vs2017"]
    if platform not in entries:
        raise UserError(f"ci_downloads.yaml has no vs2017 entry for {platform}; "
                        "the VS2017 Build Tools are Windows-only")
    entry = entries[platform]
    values = {"install_dir": entry["install_dir"], "home": str(Path.home()), "version": "15"}
    args = [_fill(a, values) for a in entry["args"]]
    for component in entry["components"]:
        args += ["--add", component]
    step = Step(
        title="Visual Studio 2017 Build Tools",
        download=_download(entry["download"], "vs2017"),
        action="run",
        args=args,
        ok_exit_codes=tuple(entry.get("ok_exit_codes", [0])),
        expect=[_join(values["install_dir"], e, platform) for e in entry.get("expect", [])],
    )
    return Plan(title="VS2017 Build Tools with the MSVC 14.11 toolset", platform=platform, steps=[step],
                env={"TORCHWIN_VS2017_DIR": values["install_dir"]})


def subpackage_args(entry, version) -> list:
    """Windows silent-install components: each sub-package gets the `_X.Y` suffix the installer wants."""
    return [f"{name}_{version}" for name in entry.get("subpackages", [])]


def cuda_plan(table, version, platform=None, installer="local", install_dir=None, with_cudnn=True) -> Plan:
    platform = platform or host_platform()
    known = table["cuda"]
    if version not in known:
        raise UserError(f"CUDA {version} is not in ci_downloads.yaml; known: {', '.join(sorted(known))}")
    if platform not in known[version]:
        have = ", ".join(sorted(known[version]))
        raise UserError(f"CUDA {version} has no {platform} entry in ci_downloads.yaml; it has: {have}")
    entry = known[version][platform]
    if installer not in entry["installers"]:
        have = ", ".join(sorted(entry["installers"]))
        raise UserError(f"CUDA {version} {platform} has no {installer!r} installer in ci_downloads.yaml; "
                        f"it has: {have}")
    values = {"install_dir": install_dir or entry["install_dir"], "home": str(Path.home()),
              "version": entry["version"]}
    values["install_dir"] = _fill(values["install_dir"], values)
    target = values["install_dir"]
    label = f"cuda {version} --platform {platform}"
    exe = ".exe" if platform.startswith("win") else ""
    toolkit = Step(
        title="CUDA {} toolkit ({} installer)".format(entry["version"], installer),
        download=_download(entry["installers"][installer],
                           label + ("" if installer == "local" else " --installer " + installer)),
        action="run",
        runner=[_fill(r, values) for r in entry.get("runner", [])],
        args=[_fill(a, values) for a in entry["args"]] + subpackage_args(entry, version),
        ok_exit_codes=tuple(entry.get("ok_exit_codes", [0])),
        expect=[_join(target, "bin/nvcc" + exe, platform)],
    )
    steps = [toolkit]
    if with_cudnn and "cudnn" in entry:
        cudnn = entry["cudnn"]
        steps.append(Step(
            title="cuDNN {} for CUDA {}".format(cudnn.get("version", "?"), version),
            download=_download(cudnn, label),
            action="extract",
            dest=target,
            # NVIDIA's archives hold everything under a top-level cuda/ folder.
            strip="cuda",
            expect=[_join(target, "include/cudnn.h", platform)],
        ))
    tag = version.replace(".", "_")
    env = {"CUDA_PATH": target, f"CUDA_PATH_V{tag}": target, "CUDA_HOME": target}
    if platform.startswith("win"):
        # CMake's FindCUDA and PyTorch's build look for NvToolsExt here (pytorch/builder set it too).
        env["NVTOOLSEXT_PATH"] = r"C:\Program Files\NVIDIA Corporation\NvToolsExt"
    return Plan(title=f"CUDA {version} ({platform}) with cuDNN", platform=platform, steps=steps,
                env=env, paths=[_join(target, "bin", platform)])


# ---------------------------------------------------------------- printing


def describe(plan: Plan, download_dir: Path) -> list:
    """The plan as lines a person reads: every URL with its sha256, every command."""
    lines = [f"{plan.title} -- {len(plan.steps)} step(s) for {plan.platform}"]
    for number, step in enumerate(plan.steps, 1):
        d = step.download
        lines.append(f"  {number}. {step.title}")
        lines.append(f"     url:    {d.url}")
        lines.append("     sha256: %s" % (d.sha256 or "NOT PINNED -- the install refuses to run it"))
        if d.md5:
            lines.append(f"     md5:    {d.md5} (NVIDIA's published checksum)")
        path = download_dir / d.file
        if step.action == "run":
            lines.append("     run:    {}".format(" ".join(_quote(a) for a in step.argv(path))))
            lines.append("     ok exit codes: {}".format(", ".join(str(c) for c in step.ok_exit_codes)))
        else:
            lines.append(f"     unpack: {path} (dropping its top folder {step.strip}/) into {step.dest}")
        for pattern in step.expect:
            lines.append(f"     expect: {pattern}")
    for name, value in plan.env.items():
        lines.append(f"  then set {name}={value}")
    for folder in plan.paths:
        lines.append(f"  then put on PATH: {folder}")
    return lines


def _quote(arg):
    return f'"{arg}"' if (" " in arg or not arg) else arg


# ---------------------------------------------------------------- downloading


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


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
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
    if require_pin and not download.sha256:
        raise Failure(f"{download.url} has no pinned sha256, so it will not be run; "
                      f"{PIN_HINT % download.label}")
    download_dir.mkdir(parents=True, exist_ok=True)
    target = download_dir / download.file
    if target.is_file() and download.sha256:
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
        opener = urllib.request.build_opener(_NoDowngrade())
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
    print(f"  sha256 {sha} verified", file=out, flush=True)
    return target


# ---------------------------------------------------------------- carrying out


def _run(step: Step, path: Path, out):
    argv = step.argv(path)
    print("running: {}".format(" ".join(_quote(a) for a in argv)), file=out, flush=True)
    try:
        code = subprocess.run(argv, check=False).returncode
    except OSError as exc:
        raise Failure(f"could not start {path}: {exc.strerror or exc}") from None
    if code not in step.ok_exit_codes:
        expected = " or ".join(str(c) for c in step.ok_exit_codes)
        raise Failure(f"{path.name} exited with code {code} (expected {expected})")


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


def _check_expected(step: Step):
    for pattern in step.expect:
        folder, name = os.path.split(pattern)
        found = Path(folder).is_dir() and any(fnmatch.fnmatch(p.name, name) for p in Path(folder).iterdir())
        if not found:
            raise Failure(f"{step.title} finished but {pattern} is missing")


def execute(plan: Plan, download_dir: Path, out=None, dry_run=False, github_env=False) -> int:
    """Print the plan; unless dry_run, verify every download first, then install. Returns an exit code."""
    out = out or sys.stdout
    for line in describe(plan, download_dir):
        print(line, file=out)
    if dry_run:
        unpinned = [s.download.url for s in plan.steps if not s.download.sha256]
        if unpinned:
            print(f"dry run: {len(unpinned)} file(s) are not pinned; a real run refuses them until "
                  "their sha256 is in the table (see `torchwin ci hash --help`)", file=out)
        print("dry run: nothing was downloaded or changed", file=out, flush=True)
        return 0
    if plan.platform != host_platform():
        raise UserError(f"this plan is for {plan.platform} but this machine is {host_platform()}; "
                        "run it there (or use --dry-run to look)")
    # Every pin is checked, and every file fetched and verified, before the first installer runs.
    for step in plan.steps:
        if not step.download.sha256:
            raise Failure(f"{step.download.url} has no pinned sha256, so it will not be run; "
                          f"{PIN_HINT % step.download.label}")
    files = [fetch(step.download, download_dir, out) for step in plan.steps]
    for step, path in zip(plan.steps, files):
        print(f"== {step.title}", file=out, flush=True)
        if step.action == "run":
            _run(step, path, out)
        else:
            extract(path, Path(step.dest), step.strip, out)
        _check_expected(step)
    if github_env:
        from torchwin import gha

        gha.write_outputs(sorted(plan.env.items()), variable="GITHUB_ENV")
        gha.add_paths(plan.paths)
        print("exported {} for the next steps".format(", ".join(sorted(plan.env))), file=out)
    print(f"done: {plan.title}", file=out, flush=True)
    return 0


def hash_downloads(plan: Plan, download_dir: Path, out=None) -> int:
    """Download each file of a plan (without running anything) and print its sha256 to pin it."""
    out = out or sys.stdout
    for step in plan.steps:
        path = fetch(step.download, download_dir, out, require_pin=False)
        sha, _md5 = file_hashes(path)
        note = ""
        if step.download.md5:
            note = f"  # md5 matches NVIDIA's published {step.download.md5}"
        elif step.download.sha256:
            note = "  # matches the pinned value"
        print(f"{step.download.url}\n  sha256: {sha}{note}", file=out, flush=True)
    return 0

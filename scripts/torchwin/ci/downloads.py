"""Set up a CI build machine from the pinned download table (data/ci_downloads.yaml).

The table says, per tool, version and platform: what to download (URL, file
name, sha256 and where it was published, optionally NVIDIA's md5 and the
Authenticode signer), how to install it silently (arguments, sub-packages) and
what must exist afterwards. This module turns one table entry into a `Plan`
(a list of steps), prints it, and carries it out:

1. refuse any file that is not pinned: a sha256, or (where the vendor only
   published an md5) the md5 together with the signer its signature must name;
2. download every file (or reuse a verified copy in the download folder) and
   check its hashes -- all of them, before anything runs; check the
   Authenticode signature of each file that names a signer;
3. run the installers / unpack the archives, checking exit codes and the
   files each must leave behind (VS2017: vswhere must list the instance; a
   machine that already has it skips the download);
4. tell later CI steps where things are (GITHUB_ENV / GITHUB_PATH).

`--dry-run` stops after printing the plan: nothing is downloaded or changed.
The table's rules are in downloads_check.py; downloading, verifying and unpacking in fetch.py.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from torchwin.ci.downloads_check import TABLE_NAME, validate_table
from torchwin.ci.fetch import PIN_HINT, Download, check_signature, extract, fetch, file_hashes
from torchwin.errors import Failure, UserError


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
    vswhere: dict = field(default_factory=dict)  # VS: the instance vswhere must list afterwards

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
                    md5=entry.get("md5"), signer=entry.get("signer"), source=entry.get("source"))


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
    if entry.get("channel"):
        # The release channel the bootstrapper installs from (VS 15 = 2017, now only 15.9.x).
        args += ["--channelUri", entry["channel"]]
    for component in entry["components"]:
        args += ["--add", component]
    vswhere = dict(entry.get("vswhere") or {})
    if vswhere:
        vswhere["path"] = values["install_dir"]
    step = Step(
        title="Visual Studio 2017 Build Tools",
        download=_download(entry["download"], "vs2017"),
        action="run",
        args=args,
        ok_exit_codes=tuple(entry.get("ok_exit_codes", [0])),
        expect=[_join(values["install_dir"], e, platform) for e in entry.get("expect", [])],
        vswhere=vswhere,
    )
    return Plan(title="VS2017 Build Tools with the MSVC 14.11 toolset", platform=platform, steps=[step],
                env={"TORCHWIN_VS2017_DIR": values["install_dir"]})


def _native(path, platform):
    return path.replace("/", "\\") if platform.startswith("win") else path


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
        # The table's own expectations (e.g. NvToolsExt, which lands outside the toolkit) are absolute.
        expect=[_join(target, "bin/nvcc" + exe, platform)]
        + [_native(_fill(e, values), platform) for e in entry.get("expect", [])],
    )
    steps = [toolkit]
    # NVIDIA's patches to the toolkit, in order, each a runfile/installer of its own.
    for number, patch in enumerate(entry.get("patches", []), 1):
        steps.append(Step(
            title="CUDA {} patch {}".format(entry["version"], number),
            download=_download(patch["download"], label),
            action="run",
            runner=[_fill(r, values) for r in entry.get("runner", [])],
            args=[_fill(a, values) for a in patch["args"]],
            expect=[_join(target, "bin/nvcc" + exe, platform)],
        ))
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
    if with_cudnn and entry.get("cudnn", {}).get("version"):
        # The cuDNN major.minor recipes/pytorch writes its cudnn run pin from (its driver checks cudnn.h).
        env["TORCHWIN_CUDNN_COMPILED"] = ".".join(str(entry["cudnn"]["version"]).split(".")[:2])
    if platform.startswith("win"):
        # CMake's FindCUDA and PyTorch's build look for NvToolsExt here (pytorch/builder set it too).
        env["NVTOOLSEXT_PATH"] = r"C:\Program Files\NVIDIA Corporation\NvToolsExt"
    return Plan(title=f"CUDA {version} ({platform}) with cuDNN", platform=platform, steps=steps,
                env=env, paths=[_join(target, "bin", platform)])


def describe(plan: Plan, download_dir: Path) -> list:
    """The plan as lines a person reads: every URL with its sha256, every command."""
    lines = [f"{plan.title} -- {len(plan.steps)} step(s) for {plan.platform}"]
    for number, step in enumerate(plan.steps, 1):
        d = step.download
        lines.append(f"  {number}. {step.title}")
        lines.append(f"     url:    {d.url}")
        if d.sha256:
            lines.append(f"     sha256: {d.sha256}")
        elif d.pinned:
            lines.append("     sha256: none published; pinned by md5 and signer instead")
        else:
            lines.append("     sha256: NOT PINNED -- the install refuses to run it")
        if d.md5:
            lines.append(f"     md5:    {d.md5} (NVIDIA's published checksum)")
        if d.signer:
            lines.append(f"     signer: {d.signer} (Authenticode signature checked before it runs)")
        if d.source:
            lines.append(f"     pinned from: {d.source}")
        path = download_dir / d.file
        if step.action == "run":
            lines.append("     run:    {}".format(" ".join(_quote(a) for a in step.argv(path))))
            lines.append("     ok exit codes: {}".format(", ".join(str(c) for c in step.ok_exit_codes)))
        else:
            lines.append(f"     unpack: {path} (dropping its top folder {step.strip}/) into {step.dest}")
        for pattern in step.expect:
            lines.append(f"     expect: {pattern}")
        if step.vswhere:
            lines.append("     vswhere: -version {} -requires {} lists {}".format(
                step.vswhere.get("version", ""), " ".join(step.vswhere.get("requires", [])),
                step.vswhere["path"]))
    for name, value in plan.env.items():
        lines.append(f"  then set {name}={value}")
    for folder in plan.paths:
        lines.append(f"  then put on PATH: {folder}")
    return lines


def _quote(arg):
    return f'"{arg}"' if (" " in arg or not arg) else arg


def _vswhere():
    found = shutil.which("vswhere")
    if found:
        return found
    folder = os.environ.get("ProgramFiles(x86)", r"C:\Program Files (x86)")
    candidate = Path(folder) / "Microsoft Visual Studio" / "Installer" / "vswhere.exe"
    return str(candidate) if candidate.is_file() else None


def vs_instances(query):
    """installationPath of every instance vswhere lists for the query's version range and components."""
    tool = _vswhere()
    if tool is None:
        return []
    argv = [tool, "-products", "*", "-format", "value", "-property", "installationPath"]
    if query.get("version"):
        argv += ["-version", query["version"]]
    for component in query.get("requires", []):
        argv += ["-requires", component]
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()] if result.returncode == 0 else []


def _same_path(a, b):
    return os.path.normcase(os.path.normpath(a)).rstrip("\\/") == os.path.normcase(os.path.normpath(b)).rstrip("\\/")


def _vs_present(query):
    return any(_same_path(found, query["path"]) for found in vs_instances(query))


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
        unpinned = [s.download.url for s in plan.steps if not s.download.pinned]
        print("dry run: nothing was downloaded or changed", file=out, flush=True)
        if unpinned:  # fails as the real run would (publish --dry-run does the same)
            raise Failure(f"{len(unpinned)} file(s) are not pinned ({', '.join(unpinned)}); a real run refuses "
                          "them until their sha256 is in the table (see `torchwin ci hash --help`)")
        return 0
    if plan.platform != host_platform():
        raise UserError(f"this plan is for {plan.platform} but this machine is {host_platform()}; "
                        "run it there (or use --dry-run to look)")
    # Every pin is checked, and every file fetched and verified, before the first installer runs.
    for step in plan.steps:
        if not step.download.pinned:
            raise Failure(f"{step.download.url} has no pinned sha256, so it will not be run; "
                          f"{PIN_HINT % step.download.label}")
    # An instance vswhere already lists (a self-hosted runner, a re-run) is not installed again.
    todo = []
    for step in plan.steps:
        if step.vswhere and _vs_present(step.vswhere):
            print(f"== {step.title}: already installed at {step.vswhere['path']} (vswhere)", file=out, flush=True)
            continue
        todo.append(step)
    files = [fetch(step.download, download_dir, out) for step in todo]
    for step, path in zip(todo, files):
        if step.download.signer:
            check_signature(path, step.download.signer, out)
    for step, path in zip(todo, files):
        print(f"== {step.title}", file=out, flush=True)
        if step.action == "run":
            _run(step, path, out)
        else:
            extract(path, Path(step.dest), step.strip, out)
        _check_expected(step)
        if step.vswhere and not _vs_present(step.vswhere):
            raise Failure(f"{step.title} finished but vswhere -version {step.vswhere.get('version')} does not "
                          f"list {step.vswhere['path']} with {', '.join(step.vswhere.get('requires', []))}")
    if github_env:
        from torchwin.ci import gha

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
        if step.download.sha256 and step.download.md5:
            note = "  # matches the pinned sha256 and NVIDIA's published md5"
        elif step.download.md5:
            note = f"  # md5 matches NVIDIA's published {step.download.md5}"
        elif step.download.sha256:
            note = "  # matches the pinned value"
        print(f"{step.download.url}\n  sha256: {sha}{note}", file=out, flush=True)
    return 0

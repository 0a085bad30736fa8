"""`torchwin doctor`: check that this machine can build a variant before a multi-hour build fails.

Runs the host probes (doctor/*_probes.py) for one target platform and CUDA version and
prints one line per check: OK, WARN or FAIL, what was found, and for each WARN/FAIL the exact fix.
Exits 1 when any check FAILs (WARN does not fail). `torchwin build` of a compiled recipe calls
`run_checks()` and `ok()` before it starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import re
from pathlib import Path

from torchwin.doctor import cuda_probes, host_probes, linux_probes, windows_probes
from torchwin.doctor.host_probes import FAIL, OK, WARN, Host
from torchwin.errors import UserError

TARGET_PLATFORMS = ("win-64", "linux-64")
FALLBACK_CUDA = "9.0"

DESCRIPTION = """\
Check this machine before a PyTorch build: the toolchain a build of the given target platform and
CUDA version needs (VS2017 + the MSVC 14.11 toolset for CUDA 9.0/9.1, the Windows 10 SDK, CUDA,
cuDNN, NvToolsExt, MKL on Windows; a gcc that nvcc accepts on Linux), free disk space, long paths,
PATH length and a compiler cache.

--cuda takes the CUDA versions recipes/pytorch builds for the target platform (or none); cuDNN must
have the major version those builds use (variants.yaml `cudnn`). The CUDA toolkit is looked for
where the nvcc package's activation looks, in its order; a variable that is set wins even without
a toolkit there (as in the activation), a folder only when it holds nvcc:
  Linux:   CUDA_PATH_VX_Y, CUDA_HOME, /usr/local/cuda-X.Y, /usr/local/cuda, the nvcc on PATH
  Windows: CUDA_PATH_VX_Y, CUDA_HOME, %ProgramFiles%\\NVIDIA GPU Computing Toolkit\\CUDA\\vX.Y, CUDA_PATH

Each line reads STATUS  NAME  what was found; WARN and FAIL lines are followed by the fix.
Exit code: 0 when nothing FAILs (WARNs allowed), 1 when a check FAILs, 2 for bad arguments.
Asking for win-64 on a Linux host runs the Windows probes that can run there and FAILs the
64-bit Windows check: win-64 packages are built on Windows.
"""

EXAMPLES = """\
examples:
  torchwin doctor                                   # this host, the pytorch recipe's default CUDA
  torchwin doctor --target-platform win-64 --cuda 9.0 --build-dir D:\\build
  torchwin doctor --target-platform linux-64 --cuda none     # a CPU-only build
  torchwin doctor --json                            # {"ok": ..., "checks": [...]} for scripts
  torchwin doctor --target-platform linux-64 --release 0.3.1 --cuda 8.0   # what one release needs too
"""


def host_platform():
    """The conda subdir of this machine, for the targets torchwin builds."""
    return "win-64" if platform.system() == "Windows" else "linux-64"


@dataclasses.dataclass(frozen=True)
class RecipeCuda:
    """What recipes/pytorch builds for one platform, as rendered: the one source of these facts."""

    recipe_dir: Path
    cudnn: dict  # CUDA version -> cuDNN major of its builds ("9.0" -> "7"); None when the recipe has no cudnn
    default: str  # the CUDA of the build a plain `conda install pytorch` gets, or "none"
    # CUDA version ("none" for CPU) -> the conda gcc package its builds install ("gcc_linux-64 7.*"),
    # absent when they use the machine's gcc (variants.yaml `linux_host_gcc`).
    conda_gcc: dict = dataclasses.field(default_factory=dict)

    def allowed(self):
        """The values --cuda accepts for this platform: the recipe's CUDA versions, then none."""
        return sorted(self.cudnn, key=host_probes.version_key) + ["none"]


def _pytorch_recipe_dir():
    from torchwin.checkout import repo_root

    root = repo_root()
    return None if root is None else root / "recipes" / "pytorch"


def release_facts(release, target_platform, recipe_dir=None):
    """The facts table the build driver reads for `release` on `target_platform`: upstream/<release>-<platform>.json
    where that platform builds another repository's commit (0.3's Windows fork), else <release>.json."""
    recipe_dir = Path(recipe_dir) if recipe_dir is not None else _pytorch_recipe_dir()
    if recipe_dir is None:
        raise UserError(f"--release {release}: run inside a torchwin checkout (the facts are recipes/pytorch/upstream)")
    for name in (f"{release}-{target_platform}", release):
        path = recipe_dir / "upstream" / f"{name}.json"
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise UserError(f"{path}: not a table of upstream facts ({exc}); regenerate it with "
                                "`torchwin upstream-facts`") from None
    raise UserError(f"--release {release}: no facts table {recipe_dir / 'upstream' / (release + '.json')}")


def release_checks(host, release, target_platform, facts):
    """What one release's own build scripts need beyond the toolchain (facts' build_scripts), and where
    its source comes from (0.3 on win-64: peterjc123's fork, not the tag)."""
    where = facts.get("repository") or "https://github.com/pytorch/pytorch"
    commit = facts.get("commit") or "?"
    origin = f"the tag {facts['tag']}" if facts.get("tag") else "not upstream's tag"
    checks = [host_probes.Check(f"PyTorch {release} source", OK,
                                f"{where} at {commit[:10]} ({origin}), declares {facts.get('declared_version')}")]
    suffix = ".bat" if target_platform == "win-64" else ".sh"
    for path, script in sorted((facts.get("build_scripts") or {}).items()):
        if not path.endswith(suffix):
            continue
        if script.get("make_at") and not script.get("reads_cmake_generator"):
            make = host_probes.check_tool(host, "make", f"apt-get install make (PyTorch {release}'s {path} runs "
                                                        f"make itself, {script['make_at'][0]})")
            checks.append(dataclasses.replace(make, name=f"make ({path})"))
        for jobs in script.get("jobs") or ():
            if "MAX_JOBS" not in jobs["value"] and "NUMBER_OF_PROCESSORS" not in jobs["value"]:
                checks.append(host_probes.Check(
                    f"job count ({path})", WARN,
                    f"{jobs['at']} runs make -j{jobs['value']}: one job per CPU, MAX_JOBS does not limit it",
                    "on a machine short of memory, build on fewer CPUs (taskset) or expect swapping"))
    return checks


def recipe_cuda(target_platform=None, recipe_dir=None):
    """The pytorch recipe's CUDA builds for a platform (RecipeCuda); None outside a checkout."""
    recipe_dir = Path(recipe_dir) if recipe_dir is not None else _pytorch_recipe_dir()
    if recipe_dir is None:
        return None
    # The render reads the TORCHWIN_* switches (a nightly renders fewer rows): they are part of the key.
    switches = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("TORCHWIN_")))
    return _render_cuda(target_platform or host_platform(), str(recipe_dir.resolve()), switches)


@functools.lru_cache(maxsize=16)
def _render_cuda(target_platform, recipe_dir, _switches):
    # Cached: `torchwin doctor` and `torchwin build` ask several times per run, and a render costs ~0.2 s.
    from torchwin import recipes

    builds = [v for v in recipes.render([Path(recipe_dir)], [target_platform]) if v.name == "pytorch"]
    cudnn, conda_gcc = {}, {}
    for build in builds:
        cuda = str(build.variant.get("cuda_compiler_version", "None"))
        gcc = [spec for spec in build.build_requirements if str(spec).startswith("gcc_")]
        if gcc:
            conda_gcc["none" if cuda == "None" else cuda] = str(gcc[0])
        if cuda != "None":
            major = build.variant.get("cudnn")
            cudnn[cuda] = None if major in (None, "None") else str(major)
    default = FALLBACK_CUDA
    if builds:
        # Newest release, highest build number: the build-number offsets in variants.yaml rank the CUDA builds.
        best = max(builds, key=lambda v: (recipes._version_key(v.version), v.build_number))
        cuda = str(best.variant.get("cuda_compiler_version", "None"))
        default = "none" if cuda == "None" else cuda
    return RecipeCuda(Path(recipe_dir), cudnn, default, conda_gcc)


def release_cuda(release, target_platform, facts):
    """`facts` (RecipeCuda) narrowed to one release's CUDA builds on the platform; a UserError for a
    release the recipe does not build there."""
    if facts is None:
        return None
    from torchwin import recipes

    builds = [v for v in recipes.render([facts.recipe_dir], [target_platform])
              if v.name == "pytorch" and str(v.variant.get("pytorch_version")) == release]
    if not builds:
        known = sorted({str(v.variant.get("pytorch_version")) for v in recipes.render([facts.recipe_dir], [target_platform])
                        if v.name == "pytorch"}, key=host_probes.version_key)
        raise UserError(f"--release {release}: recipes/{facts.recipe_dir.name} builds no {release} for {target_platform}; "
                        f"use one of {', '.join(known)}")
    cudnn = {}
    for build in builds:
        cuda = str(build.variant.get("cuda_compiler_version", "None"))
        if cuda != "None":
            cudnn[cuda] = str(build.variant.get("cudnn"))
    best = max(builds, key=lambda v: v.build_number)
    cuda = str(best.variant.get("cuda_compiler_version", "None"))
    return dataclasses.replace(facts, cudnn=cudnn, default="none" if cuda == "None" else cuda)


def default_cuda(target_platform=None, recipe_dir=None):
    """The CUDA of the pytorch build a plain `conda install pytorch` gets on that platform.

    Rendered from the recipe (newest release, highest build number: the build-number
    offsets in variants.yaml rank the CUDA builds); "9.0" outside a checkout.
    """
    facts = recipe_cuda(target_platform, recipe_dir)
    return FALLBACK_CUDA if facts is None else facts.default


def check_target_platform(value):
    if value not in TARGET_PLATFORMS:
        raise UserError(f"--target-platform {value!r} is not supported: use {' or '.join(TARGET_PLATFORMS)}")
    return value


def parse_cuda(value):
    """'9.0' -> '9.0'; 'none' (any case) or None -> None; anything else is a UserError."""
    if value is None or str(value).strip().lower() == "none":
        return None
    text = str(value).strip()
    if not re.fullmatch(r"\d+\.\d+", text):
        raise UserError(f"--cuda {value!r} is not a CUDA version: use X.Y (e.g. 9.0, 9.2, 10.0) or none")
    return text


def check_cuda_allowed(value, target_platform, facts):
    """--cuda must be a CUDA the pytorch recipe builds for that platform (or none): a UserError otherwise.

    Outside a checkout there is no recipe to ask, and any X.Y passes.
    """
    cuda = parse_cuda(value)
    if cuda is None or facts is None or cuda in facts.cudnn:
        return cuda
    raise UserError(
        f"--cuda {value!r}: recipes/{facts.recipe_dir.name} has no CUDA {cuda} build for {target_platform}; "
        f"use one of {', '.join(facts.allowed())}"
    )


def expected_cudnn(target_platform, cuda):
    """The cuDNN major the recipe's CUDA `cuda` builds use ("7"), or None when it cannot say."""
    facts = recipe_cuda(target_platform) if cuda else None
    return None if facts is None else facts.cudnn.get(cuda)


def nvtoolsext_facts(recipe_dir=None):
    """(variable, default folder, required) for NvToolsExt, as upstream's files say (torchwin upstream-facts).

    Read from recipes/pytorch/upstream/<release>.json, the tables the build driver reads, so doctor looks
    where the build will. Releases that need it decide; outside a checkout, or before the tables
    exist, the probes' constants (the same facts) stand in.
    """
    fallback = (cuda_probes.NVTOOLSEXT_VARIABLE, cuda_probes.NVTOOLSEXT_DEFAULT, True)
    recipe_dir = Path(recipe_dir) if recipe_dir is not None else _pytorch_recipe_dir()
    tables = sorted((recipe_dir / "upstream").glob("*.json"), key=lambda p: host_probes.version_key(p.stem)) \
        if recipe_dir is not None else []
    found = []
    for path in tables:
        try:
            info = json.loads(path.read_text(encoding="utf-8")).get("nvtoolsext") or {}
        except (OSError, ValueError, AttributeError) as exc:
            raise UserError(f"{path}: not a table of upstream facts ({exc}); regenerate it with "
                            "`torchwin upstream-facts`") from None
        if info.get("required_on_windows_cuda"):
            found.append((info.get("env_var") or fallback[0], info.get("default_path") or fallback[1], True))
    if not tables:
        return fallback
    # The newest release's answer; the releases agree today (a test checks it).
    return found[-1] if found else (fallback[0], fallback[1], False)


def run_checks(target_platform, cuda, build_dir=None, host=None, cudnn=None, channels=(), release=None):
    """All checks for building `target_platform` with CUDA `cuda` ('9.0', or None / 'none' for CPU).

    `cudnn` is the variant's cuDNN major ("7"); None takes it from the rendered pytorch recipe.
    `channels`: the --channel values `torchwin build` would get (checked last).
    `release` adds what that release's own build needs (release_checks).
    """
    if release is not None:
        host = host or Host.this_machine()
        facts = release_facts(release, check_target_platform(target_platform))
        return run_checks(target_platform, cuda, build_dir, host, cudnn, channels) + release_checks(
            host, release, target_platform, facts)
    target_platform = check_target_platform(target_platform)
    cuda = parse_cuda(cuda)
    host = host or Host.this_machine()
    build_dir = Path(build_dir) if build_dir else Path.cwd()
    if cuda and cudnn is None:
        cudnn = expected_cudnn(target_platform, cuda)
    if target_platform == "win-64":
        checks = _windows_checks(host, cuda, build_dir, cudnn)
    else:
        facts = recipe_cuda(target_platform)
        conda_gcc = None if facts is None else facts.conda_gcc.get(cuda or "none")
        checks = _linux_checks(host, cuda, build_dir, cudnn, conda_gcc)
    return checks + [host_probes.check_channels(list(channels))]


def _windows_checks(host, cuda, build_dir, cudnn=None):
    checks = [
        windows_probes.check_windows_64(host),
        host_probes.check_python_64(host, windows_target=True),
        host_probes.check_disk(host, build_dir, cuda),
        host_probes.check_git_longpaths(host),
    ]
    if host.windows:
        # The registry exists only there; on another host the 64-bit Windows check already says why.
        checks.append(windows_probes.check_windows_longpaths(host))
    installs, notes = windows_probes.find_vs2017(host)
    checks.append(windows_probes.check_vs2017(host, installs, notes))
    if cuda in windows_probes.MSVC_TOOLSET_FOR_CUDA:
        checks.append(windows_probes.check_msvc_toolset(host, installs, cuda))
    checks.append(windows_probes.check_windows_sdk(host, installs))
    if cuda:
        found = cuda_probes.find_cuda(host, cuda, windows_target=True)
        checks += [
            cuda_probes.check_nvcc(host, found, cuda, windows_target=True),
            cuda_probes.check_cudnn(host, found, cuda, windows_target=True, major=cudnn),
        ]
        variable, default, required = nvtoolsext_facts()
        if required:
            checks.append(cuda_probes.check_nvtoolsext(host, variable, default))
    checks += [
        linux_probes.check_mkl(host),
        host_probes.check_tool(host, "ninja", "pip install ninja (or conda install ninja)"),
        host_probes.check_tool(host, "cmake", "pip install cmake (or conda install cmake)"),
        host_probes.check_compiler_cache(host, cuda),
        windows_probes.check_path_length(host),
        host_probes.check_path_duplicates(host),
    ]
    return checks


def _linux_checks(host, cuda, build_dir, cudnn=None, conda_gcc=None):
    """`conda_gcc`: the gcc package the variant's build installs (then the machine's gcc is not used)."""
    checks = [host_probes.check_python_64(host, windows_target=False), host_probes.check_disk(host, build_dir, cuda)]
    if cuda:
        found = cuda_probes.find_cuda(host, cuda, windows_target=False)
        gcc = (host_probes.Check("host compiler (gcc)", OK, f"{conda_gcc} from conda: the build installs it, "
                            "and the nvcc package's activation checks it against CUDA " + cuda)
               if conda_gcc else linux_probes.check_gcc(host, cuda, found))
        checks += [
            gcc,
            cuda_probes.check_nvcc(host, found, cuda, windows_target=False),
            cuda_probes.check_cudnn(host, found, cuda, windows_target=False, major=cudnn),
        ]
    checks += [
        host_probes.check_tool(host, "ninja", "pip install ninja (or apt-get install ninja-build)"),
        host_probes.check_tool(host, "cmake", "pip install cmake (or apt-get install cmake)"),
        host_probes.check_compiler_cache(host, cuda),
    ]
    return checks


def ok(checks):
    """True when no check FAILed; WARNs do not count."""
    return not any(c.status == FAIL for c in checks)


def as_json(checks):
    return {"ok": ok(checks), "checks": [c.as_dict() for c in checks]}


def format_report(checks, target_platform, cuda, build_dir, cudnn=None):
    width = max((len(c.name) for c in checks), default=0)
    variant = (f"CUDA {cuda}" + (f" + cuDNN {cudnn}" if cudnn else "")) if cuda else "no CUDA"
    host = f"{platform.system()} {platform.machine()}"
    lines = [f"torchwin doctor: {target_platform}, {variant}, build folder {build_dir} (this host: {host})"]
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.found}")
        if c.status != OK and c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in (FAIL, WARN, OK)}
    verdict = "ready to build" if ok(checks) else "not ready: fix the FAIL lines first"
    if ok(checks) and any(c.name == host_probes.CHANNEL_CHECK and c.status != OK for c in checks):
        verdict = "ready to build with conda build; torchwin build needs --channel (see above)"
    lines.append(f"{counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[OK]} OK: {verdict}")
    return "\n".join(lines)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine's toolchain before a build",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target-platform",
        default=None,
        metavar="PLATFORM",
        help=f"win-64 or linux-64 (default: this host's, {host_platform()})",
    )
    parser.add_argument(
        "--cuda",
        default=None,
        metavar="X.Y|none",
        help="CUDA version to check for (one the pytorch recipe builds for the target platform), or none "
        f"for a CPU build (default: the pytorch recipe's default variant, else {FALLBACK_CUDA})",
    )
    parser.add_argument(
        "--build-dir",
        default=None,
        metavar="DIR",
        help="folder the build will use, for the disk space check (default: current folder)",
    )
    parser.add_argument("--channel", action="append", default=[], metavar="CHANNEL",
                        help="the channel(s) you will give `torchwin build --channel` (repeatable)")
    parser.add_argument("--json", action="store_true", help='print {"ok": bool, "checks": [...]} instead')
    parser.add_argument(
        "--release",
        default=None,
        metavar="X.Y.Z",
        help="also check what this release's build needs (its facts table: e.g. make for 0.3 on Linux) and "
        "limit --cuda to the CUDA versions it is built with",
    )
    parser.set_defaults(func=run)


def run(args):
    target_platform = check_target_platform(args.target_platform or host_platform())
    facts = recipe_cuda(target_platform)
    if args.release is not None:
        facts = release_cuda(args.release, target_platform, facts)
    if args.cuda is not None:
        cuda = check_cuda_allowed(args.cuda, target_platform, facts)
    else:
        cuda = parse_cuda(FALLBACK_CUDA if facts is None else facts.default)
    cudnn = facts.cudnn.get(cuda) if facts is not None and cuda else None
    build_dir = Path(args.build_dir).resolve() if args.build_dir else Path.cwd()
    checks = run_checks(target_platform, cuda, build_dir, cudnn=cudnn, channels=args.channel,
                        release=args.release)
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        print(format_report(checks, target_platform, cuda, build_dir, cudnn))
    return 0 if ok(checks) else 1

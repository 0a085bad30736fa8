"""`torchwin doctor`: check that this machine can build a variant before a multi-hour build fails.

Runs the host probes (scripts/torchwin/probes.py) for one target platform and CUDA version and
prints one line per check: OK, WARN or FAIL, what was found, and for each WARN/FAIL the exact fix.
Exits 1 when any check FAILs (WARN does not fail). `torchwin build` of a compiled recipe calls
`run_checks()` and `ok()` before it starts.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path

from torchwin import probes
from torchwin.errors import UserError
from torchwin.probes import FAIL, OK, WARN, Host

TARGET_PLATFORMS = ("win-64", "linux-64")
FALLBACK_CUDA = "9.0"

DESCRIPTION = """\
Check this machine before a PyTorch build: the toolchain a build of the given target platform and
CUDA version needs (VS2017 + the MSVC 14.11 toolset for CUDA 9.0/9.1, the Windows 10 SDK, CUDA,
cuDNN, NvToolsExt, MKL on Windows; a gcc that nvcc accepts on Linux), free disk space, long paths,
PATH length and a compiler cache.

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
"""


def host_platform():
    """The conda subdir of this machine, for the targets torchwin builds."""
    return "win-64" if platform.system() == "Windows" else "linux-64"


def default_cuda(target_platform=None, recipe_dir=None):
    """The CUDA of the pytorch build a plain `conda install pytorch` gets on that platform.

    Rendered from the recipe (newest release, highest build number: the build-number
    offsets in variants.yaml rank the CUDA builds); "9.0" outside a checkout.
    """
    from torchwin import recipes
    from torchwin.checkout import repo_root

    if recipe_dir is None:
        root = repo_root()
        if root is None:
            return FALLBACK_CUDA
        recipe_dir = root / "recipes" / "pytorch"
    builds = [v for v in recipes.render([Path(recipe_dir)], [target_platform or host_platform()])
              if v.name == "pytorch"]
    if not builds:
        return FALLBACK_CUDA
    best = max(builds, key=lambda v: (recipes._version_key(v.version), v.build_number))
    cuda = str(best.variant.get("cuda_compiler_version", "None"))
    return "none" if cuda == "None" else cuda


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


def run_checks(target_platform, cuda, build_dir=None, host=None):
    """All checks for building `target_platform` with CUDA `cuda` ('9.0', or None / 'none' for CPU)."""
    target_platform = check_target_platform(target_platform)
    cuda = parse_cuda(cuda)
    host = host or Host.this_machine()
    build_dir = Path(build_dir) if build_dir else Path.cwd()
    if target_platform == "win-64":
        return _windows_checks(host, cuda, build_dir)
    return _linux_checks(host, cuda, build_dir)


def _windows_checks(host, cuda, build_dir):
    checks = [
        probes.check_windows_64(host),
        probes.check_python_64(host, windows_target=True),
        probes.check_disk(host, build_dir, cuda),
        probes.check_git_longpaths(host),
    ]
    if host.windows:
        # The registry exists only there; on another host the 64-bit Windows check already says why.
        checks.append(probes.check_windows_longpaths(host))
    installs, notes = probes.find_vs2017(host)
    checks.append(probes.check_vs2017(host, installs, notes))
    if cuda in probes.MSVC_TOOLSET_FOR_CUDA:
        checks.append(probes.check_msvc_toolset(host, installs, cuda))
    checks.append(probes.check_windows_sdk(host, installs))
    if cuda:
        found = probes.find_cuda(host, cuda, windows_target=True)
        checks += [
            probes.check_nvcc(host, found, cuda, windows_target=True),
            probes.check_cudnn(host, found, cuda, windows_target=True),
            probes.check_nvtoolsext(host),
        ]
    checks += [
        probes.check_mkl(host),
        probes.check_tool(host, "ninja", "pip install ninja (or conda install ninja)"),
        probes.check_tool(host, "cmake", "pip install cmake (or conda install cmake)"),
        probes.check_compiler_cache(host),
        probes.check_path_length(host),
        probes.check_path_duplicates(host),
    ]
    return checks


def _linux_checks(host, cuda, build_dir):
    checks = [probes.check_python_64(host, windows_target=False), probes.check_disk(host, build_dir, cuda)]
    if cuda:
        found = probes.find_cuda(host, cuda, windows_target=False)
        checks += [
            probes.check_gcc(host, cuda, found),
            probes.check_nvcc(host, found, cuda, windows_target=False),
            probes.check_cudnn(host, found, cuda, windows_target=False),
        ]
    checks += [
        probes.check_tool(host, "ninja", "pip install ninja (or apt-get install ninja-build)"),
        probes.check_tool(host, "cmake", "pip install cmake (or apt-get install cmake)"),
        probes.check_compiler_cache(host),
    ]
    return checks


def ok(checks):
    """True when no check FAILed; WARNs do not count."""
    return not any(c.status == FAIL for c in checks)


def as_json(checks):
    return {"ok": ok(checks), "checks": [c.as_dict() for c in checks]}


def format_report(checks, target_platform, cuda, build_dir):
    width = max((len(c.name) for c in checks), default=0)
    variant = f"CUDA {cuda}" if cuda else "no CUDA"
    host = f"{platform.system()} {platform.machine()}"
    lines = [f"torchwin doctor: {target_platform}, {variant}, build folder {build_dir} (this host: {host})"]
    for c in checks:
        lines.append(f"{c.status:<4}  {c.name:<{width}}  {c.found}")
        if c.status != OK and c.fix:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in (FAIL, WARN, OK)}
    verdict = "ready to build" if ok(checks) else "not ready: fix the FAIL lines first"
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
        help="CUDA version to check for, or none for a CPU build (default: the pytorch "
        f"recipe's default variant, else {FALLBACK_CUDA})",
    )
    parser.add_argument(
        "--build-dir",
        default=None,
        metavar="DIR",
        help="folder the build will use, for the disk space check (default: current folder)",
    )
    parser.add_argument("--json", action="store_true", help='print {"ok": bool, "checks": [...]} instead')
    parser.set_defaults(func=run)


def run(args):
    target_platform = check_target_platform(args.target_platform or host_platform())
    cuda = parse_cuda(args.cuda if args.cuda is not None else default_cuda(target_platform))
    build_dir = Path(args.build_dir).resolve() if args.build_dir else Path.cwd()
    checks = run_checks(target_platform, cuda, build_dir)
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        print(format_report(checks, target_platform, cuda, build_dir))
    return 0 if ok(checks) else 1

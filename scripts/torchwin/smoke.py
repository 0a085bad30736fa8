"""`torchwin smoke`: check that the torch in this environment works.

It runs recipes/pytorch/run_test.py, the very file the pytorch recipe runs as its package
test, with the current interpreter, so a user's "does my install work?" and the build's
"does this package work?" are the same question with the same answers. The script does the
work and prints the report; this module finds it, passes the options on, and turns its exit
code into ours.
"""

import argparse
import subprocess
import sys
from pathlib import Path

from torchwin.checkout import repo_root
from torchwin.errors import Failure, UserError

RUN_TEST = Path("recipes", "pytorch", "run_test.py")
INSTALLED_RUN_TEST = Path("share", "torchwin", "run_test.py")

DESCRIPTION = """\
Check that the torch importable by this Python works: import, version, MKL and CUDA
configuration, CPU math, autograd, a small conv net, save/load, DataLoader workers started
with spawn (as on Windows), two regressions from the first Windows builds (a deadlock after an
error in backward, memory growth over DataLoader epochs) and, when a GPU is visible, CUDA,
cuDNN, streams, memory, MAGMA and multi-GPU copies.

Each check prints PASS, FAIL or SKIP with its time and reason; the last line reads
`N passed, N failed, N skipped`. Exit code 0 when nothing failed, 1 otherwise. Without a
GPU the CUDA checks SKIP, unless --require-cuda (or TORCHWIN_REQUIRE_CUDA=1) makes them FAIL.

This runs recipes/pytorch/run_test.py, the pytorch package's own test; that script also
runs on its own (`python recipes/pytorch/run_test.py --help`) where torchwin is not installed.
"""

EXAMPLES = """\
examples:
  torchwin smoke                                  check whatever torch is installed
  torchwin smoke --expect-version 1.0.0 --expect-variant cuda9.0
                                                  and that it is the build you meant to install
  torchwin smoke --require-cuda                   on a GPU machine: no GPU is a failure
  torchwin smoke --only cpu,dataloader            just these groups of checks
  torchwin smoke --json > smoke.json              a machine-readable report (progress on stderr)
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "smoke",
        help="check that the installed torch works (CPU, DataLoader, CUDA)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # run_test.py's own options, from run_test.py: one option set, one help for both.
    script = _script_module(quiet=True)
    if script is not None:
        script.add_options(parser)
    parser.set_defaults(func=run)


def find_run_test():
    """recipes/pytorch/run_test.py of the torchwin checkout, else the copy a wheel install put
    under <prefix>/share/torchwin (pyproject's data-files), so `pip install torchwin` users have it."""
    root = repo_root()
    if root is not None:
        candidate = root / RUN_TEST
        if not candidate.is_file():
            raise UserError("%s: no such file in the torchwin checkout" % candidate)
        return candidate
    installed = Path(sys.prefix, INSTALLED_RUN_TEST)
    if installed.is_file():
        return installed
    raise UserError("cannot find run_test.py: not in a torchwin checkout (set TORCHWIN_ROOT) and not "
                    "installed at %s; reinstall torchwin with pip" % installed)


def _script_module(quiet=False):
    """run_test.py loaded as a module (its checks do not run): its options and how to pass them on.
    None when quiet and it cannot be found (the parser is built for every command; `smoke` then says why)."""
    import importlib.util

    try:
        path = find_run_test()
    except UserError:
        if quiet:
            return None
        raise
    spec = importlib.util.spec_from_file_location("torchwin_run_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_argv(args):
    """run_test.py's own flags, for the options given on our command line."""
    return _script_module().given_argv(args)


def run(args):
    script = find_run_test()
    # The report goes straight to our stdout/stderr; with --json, stdout stays pure JSON.
    code = subprocess.call([sys.executable, str(script), *script_argv(args)])
    if code == 0:
        return 0
    if code == 1:
        raise Failure("the smoke test found problems: see the FAIL lines above")
    if code == 2:
        raise UserError(f"{script.name} rejected the options (its message is above)")
    raise Failure(f"{script} ended with exit code {code} before reporting")

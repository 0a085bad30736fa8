"""The `torchwin` command: argument parsing, exit codes, and the one place errors are printed.

Exit codes: 0 success, 1 the work failed, 2 bad input. Each subcommand lives
in its own module exposing `add_parser(subparsers)`; the parser it adds sets
`func`, a callable taking the parsed arguments and returning an exit code.
"""

import argparse
import importlib
import os
import sys
import traceback

from torchwin import __version__
from torchwin.errors import Failure, UserError

# Order is the order of `torchwin --help`: the pipeline first, then helpers.
COMMAND_MODULES = (
    "render",
    "build",
    "wheel.command",
    "channel.command",
    "publish.command",
    "doctor.command",
    "smoke",
    "ci.nightly",
    "ci.command",
    "upstream.command",
)

DESCRIPTION = """\
Build PyTorch conda packages for Windows (VS2017 + CUDA 9 + MKL) and Linux,
test them, and publish them to the anaconda.org channel `torchwin`.

The pipeline: render -> build -> channel -> publish. Start with
`torchwin render --target-platform all` to see the variant matrix.
"""


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on usage errors already; keep its one-line message."""


def make_parser():
    parser = _Parser(
        prog="torchwin",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version="torchwin " + __version__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module("torchwin." + name)
        module.add_parser(subparsers)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug is accepted anywhere on the line, before or after the subcommand.
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = make_parser()
    args = parser.parse_args(argv)
    args.debug = debug
    try:
        return int(args.func(args) or 0)
    except (UserError, Failure) as exc:
        if args.debug:  # the traceback too; the exit code stays the error's (2 bad input, 1 failure)
            traceback.print_exc()
        print("torchwin: error: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("torchwin: interrupted", file=sys.stderr)
        return 130


def entry():
    """The console script: main(), then leave without interpreter finalization.

    py-rattler 0.28 can crash while the interpreter finalizes after its async
    calls (seen in about 1 of 5 runs on a loaded machine), which would turn a
    finished, successful command into a failed CI step. Output is flushed first.
    """
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `torchwin render --json | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()

"""Placeholder: the `torchwin nightly` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("nightly", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin nightly is not written yet")

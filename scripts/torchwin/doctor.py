"""Placeholder: the `torchwin doctor` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("doctor", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin doctor is not written yet")

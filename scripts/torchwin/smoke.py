"""Placeholder: the `torchwin smoke` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("smoke", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin smoke is not written yet")

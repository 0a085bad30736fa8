"""Placeholder: the `torchwin ci` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("ci", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin ci is not written yet")

"""Placeholder: the `torchwin publish` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("publish", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin publish is not written yet")

"""Placeholder: the `torchwin channel` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("channel", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin channel is not written yet")

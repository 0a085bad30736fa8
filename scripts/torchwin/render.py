"""Placeholder: the `torchwin render` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("render", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin render is not written yet")

"""Placeholder: the `torchwin build` subcommand is being written."""

from torchwin.errors import Failure


def add_parser(subparsers):
    parser = subparsers.add_parser("build", help="(not yet written)")
    parser.set_defaults(func=run)


def run(args):
    raise Failure("torchwin build is not written yet")

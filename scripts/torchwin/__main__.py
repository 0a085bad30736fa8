"""`python -m torchwin` is the same as the `torchwin` command."""

from torchwin.cli import entry

entry()

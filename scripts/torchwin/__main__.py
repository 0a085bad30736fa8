"""`python -m torchwin` is the same as the `torchwin` command."""

import sys

from torchwin.cli import main

sys.exit(main())

"""The two kinds of failure the command line tells apart.

UserError: bad input (a missing recipe, an unknown variant value, a broken
config file). The CLI prints one line and exits 2.
Failure: the input was fine but the work failed (a build, a test, a check).
The CLI prints one line and exits 1.
"""


class UserError(Exception):
    """Bad input: printed as one line, exit code 2."""

    exit_code = 2


class Failure(Exception):
    """Valid input, failed work: printed as one line, exit code 1."""

    exit_code = 1

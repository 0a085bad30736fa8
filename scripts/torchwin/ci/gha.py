"""Hand values to later GitHub Actions steps through the files the runner names.

A step passes values on by appending lines to the files named by the
environment variables GITHUB_OUTPUT (step outputs), GITHUB_ENV (environment
of later steps) and GITHUB_PATH (PATH of later steps). Our commands write them
themselves, so the workflow needs no shell or jq to move a value along.
"""

import os
import uuid
from pathlib import Path

from torchwin.errors import UserError


def _target(variable):
    path = os.environ.get(variable)
    if not path:
        raise UserError(
            f"{variable} is not set: this option only works inside a GitHub Actions step "
            "(the runner names the file to write)"
        )
    return Path(path)


def _format(name, value):
    value = str(value)
    if "\n" not in value:
        return f"{name}={value}\n"
    # Multi-line values use the heredoc form with a delimiter that cannot occur in the value.
    delimiter = "ghadelimiter_" + uuid.uuid4().hex
    return f"{name}<<{delimiter}\n{value}\n{delimiter}\n"


def write_outputs(pairs, variable="GITHUB_OUTPUT"):
    """Append NAME=VALUE lines for each (name, value) to the file in $variable."""
    path = _target(variable)
    text = "".join(_format(name, value) for name, value in pairs)
    # Appending is the protocol here: the runner owns this file and reads it after the step.
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    return text


def add_paths(paths):
    """Prepend each folder to PATH for the later steps of the job."""
    path = _target("GITHUB_PATH")
    with path.open("a", encoding="utf-8", newline="\n") as handle:
        for folder in paths:
            handle.write(f"{folder}\n")

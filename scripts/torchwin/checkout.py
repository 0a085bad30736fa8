"""Find the torchwin checkout the tools work on: its recipes/, channel/ and tests.

`TORCHWIN_ROOT` wins; otherwise the folder above the installed package (an
editable install), then the current folder and its parents.
"""

from __future__ import annotations

import os
from pathlib import Path

import torchwin
from torchwin.errors import UserError


def _is_checkout(folder: Path) -> bool:
    return (folder / "recipes").is_dir() and (folder / "pyproject.toml").is_file()


def repo_root() -> Path | None:
    """The checkout, or None when torchwin runs outside one."""
    env = os.environ.get("TORCHWIN_ROOT")
    if env:
        return Path(env).resolve()
    for start in (Path(torchwin.__file__).resolve().parent, Path.cwd()):
        for folder in (start, *start.parents):
            if _is_checkout(folder):
                return folder
    return None


def require_repo_root(hint: str = "") -> Path:
    """The checkout, or a UserError that says how to point at one."""
    root = repo_root()
    if root is None:
        raise UserError("cannot find the torchwin checkout (a folder with recipes/ and pyproject.toml); "
                        "run from inside one or set TORCHWIN_ROOT" + ("; " + hint if hint else ""))
    return root

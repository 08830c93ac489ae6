"""The errors of the command line."""

from __future__ import annotations


class InputError(Exception):
    """A usage or input problem the user can fix: reported on one line, exit status 2."""

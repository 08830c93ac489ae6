"""The errors of the command line and the program name its messages and outputs show (no torch import)."""

from __future__ import annotations

#: The program name: usage lines, ``lightning-igos: error: ...`` messages, report titles and the table's header.
PROG = "lightning-igos"


class InputError(Exception):
    """A usage or input problem the user can fix: reported on one line, exit status 2."""

"""Mistakes in ``check``'s arguments that are caught before torch is imported (which takes seconds).

A missing checkpoint or probe file and a threshold no AUC can meet are reported at once, in the
words the later checks use; everything else is checked after the imports.

Example:
    >>> threshold_problem("--min-insertion", 1.5, normalized=False)
    '--min-insertion 1.5 could never pass: raw AUCs lie in [0, 1].'
    >>> threshold_problem("--min-insertion", 1.5, normalized=True) is None
    True
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightning_igos.cli.errors import InputError

__all__ = ["early_input_error", "file_problem", "threshold_problem"]


def threshold_problem(option: str, value: float | None, normalized: bool) -> str | None:
    """Why ``--min-insertion`` / ``--max-deletion`` ``value`` could never decide, or None when it can.

    Raw AUCs lie in [0, 1]; normalised ones are >= 0 (and may exceed 1).
    """
    if value is None:
        return None
    lower = option == "--min-insertion"  # the AUC must be at least the value
    if normalized and value < 0:
        return f"{option} {value:g} could never {'fail' if lower else 'pass'}: normalized AUCs are >= 0."
    if not normalized and not 0 <= value <= 1:
        verdict = "pass" if (value > 1) == lower else "fail"
        return f"{option} {value:g} could never {verdict}: raw AUCs lie in [0, 1]."
    return None


def file_problem(path: Path, what: str) -> str | None:
    """Why ``path`` is not an existing regular file (``what`` names it: ``"checkpoint"``), or None.

    Example:
        >>> file_problem(Path("no/such.ckpt"), "checkpoint")
        "checkpoint file 'no/such.ckpt' does not exist."
    """
    if path.is_dir():
        return f"{what} '{path}' is a directory, not a file."
    if not path.exists():
        return f"{what} file '{path}' does not exist."
    if not path.is_file():
        return f"{what} '{path}' is not a regular file."
    return None


def early_input_error(args: argparse.Namespace) -> InputError | None:
    """The first mistake of a parsed ``check`` that needs no torch to see: a missing input file, an impossible
    threshold; None when there is none."""
    normalized = bool(getattr(args, "normalized", False))
    problems = [
        file_problem(Path(args.checkpoint), "checkpoint"),
        # A probe that exists but is no file gets the probe loader's own words later.
        None if Path(args.probe).exists() else f"probe file '{args.probe}' does not exist.",
        threshold_problem("--min-insertion", getattr(args, "min_insertion", None), normalized),
        threshold_problem("--max-deletion", getattr(args, "max_deletion", None), normalized),
    ]
    first = next((p for p in problems if p is not None), None)
    return None if first is None else InputError(first)

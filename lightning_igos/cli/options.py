"""The ``check`` options of the solver and the metrics, generated from ``IGOSConfig``'s field declarations.

Each field declared with :func:`lightning_igos.core.config.option` becomes one option
(``ig_steps`` -> ``--ig-steps``) with its help, how its text is read and its choices. The
declarations are read from the config module's source text, so building the parser (and
``--help``) imports no torch; :func:`config_options` gives them in field order.

Example:
    >>> [o.flag for o in config_options()][:3]
    ['--method', '--mask-size', '--iterations']
    >>> next(o for o in config_options() if o.name == "ig_steps").default
    10
"""

from __future__ import annotations

import argparse
import ast
import functools
import math
import re
from dataclasses import dataclass
from typing import Any

from lightning_igos.cli.source import source_tree, source_value

__all__ = ["ConfigOption", "add_config_options", "config_options", "number", "positive_int"]

CONFIG_MODULE = "lightning_igos.core.config"


def number(value: str) -> float:
    """A finite number (the options that no ``IGOSConfig`` field validates: thresholds, margins)."""
    try:
        parsed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not math.isfinite(parsed):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return parsed


def positive_int(value: str) -> int:
    """An integer >= 1 (``--max-probe-elements``)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


# The config's options are only read here: IGOSConfig checks their values, in its own words.


def _integer(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {value!r}") from None


def _real(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None


def _mask_size(value: str) -> int | tuple[int, int]:
    parts = re.split(r"[x,]", value.strip().lower())
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"must be an integer N or HxW, got {value!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


#: How each ``kind`` of :func:`~lightning_igos.core.config.option` reads its text (the kind's range is the
#: config's to check).
KINDS = {"count": _integer, "positive_int": _integer, "seed": _integer, "non_negative": _real,
         "positive_number": _real, "mask_size": _mask_size, "text": str}


@dataclass(frozen=True)
class ConfigOption:
    """One ``IGOSConfig`` field as a command-line option."""

    name: str
    default: Any
    help: str
    kind: str = "text"
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    default_text: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def help_text(self) -> str:
        shown = self.default_text
        if shown is None:
            shown = ("on" if self.default else "off") if self.kind == "flag" else str(self.default)
        explainers = ", ".join(source_value("lightning_igos.core.explainers", "BUILTIN_EXPLAINERS"))
        return f"{self.help.replace('{explainers}', explainers)} (default: {shown})"


def _choices(name: str) -> tuple[str, ...]:
    module, _, constant = name.rpartition(".")
    return tuple(source_value(f"lightning_igos.core.{module}" if module else CONFIG_MODULE, constant))


@functools.cache
def config_options() -> tuple[ConfigOption, ...]:
    """The ``IGOSConfig`` fields declared with ``option(...)``, in field order, read from the source."""
    tree = source_tree(CONFIG_MODULE)
    body = next(s for s in tree.body if isinstance(s, ast.ClassDef) and s.name == "IGOSConfig").body
    out = []
    for statement in body:
        call = statement.value if isinstance(statement, ast.AnnAssign) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "option"):
            continue
        default, text = (ast.literal_eval(arg) for arg in call.args[:2])
        keywords = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
        choices = keywords.pop("choices", None)
        out.append(ConfigOption(statement.target.id, default, text, choices=None if choices is None
                                else _choices(choices), **keywords))
    return tuple(out)


def add_config_options(group: argparse._ArgumentGroup) -> None:
    """One option per :func:`config_options` entry; each default is left unset (filled in after parsing)."""
    for option in config_options():
        common = dict(default=argparse.SUPPRESS, help=option.help_text(), dest=option.name)
        if option.kind == "flag":
            group.add_argument(option.flag, action=argparse.BooleanOptionalAction, **common)
        elif option.choices is not None:
            group.add_argument(option.flag, choices=option.choices, metavar=option.metavar, **common)
        else:
            group.add_argument(option.flag, type=KINDS[option.kind], metavar=option.metavar, **common)

"""Human-readable class names: read them, check them, and write ``3 (tabby cat)`` next to an index.

Class names come as a sequence (``names[i]`` is class ``i``), a mapping from index to
name (only some classes may be named), or a file (one name per line, or a JSON list or
object). They are checked once, where they are given; :meth:`ClassNames.check_fits`
then checks them against a model's number of classes and the indices that will be shown.

Example:
    >>> names = ClassNames.from_value(["cat", "dog"])
    >>> names.label(1), names.label(1, style="short")
    ('1 (dog)', '1 dog')
    >>> ClassNames.from_value({0: "cat", 7: "truck"}).label(3)
    '3'
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

__all__ = ["ClassNames", "ClassNamesLike", "read_class_names", "module_class_names"]

ClassNamesLike = Union[Sequence[str], Mapping[int, str]]

# LightningModule attributes that commonly hold the class names, in the order they are tried.
MODULE_ATTRIBUTES = ("class_names", "classes")


@dataclass(frozen=True)
class ClassNames:
    """Names of (some of) a classifier's classes.

    Attributes:
        names: index -> name.
        complete: True when given as a sequence (or a JSON list, or a text file): then
            every class from 0 to ``len(names) - 1`` is named and the model must have exactly
            that many classes. A mapping may name only some classes.
    """

    names: Mapping[int, str]
    complete: bool

    @classmethod
    def from_value(cls, value: object, what: str = "`class_names`") -> ClassNames:
        """Check and normalise a sequence of names or an index -> name mapping.

        Raises ``TypeError`` for a value that is neither, or for names that are not strings
        or indices that are not integers; ``ValueError`` for no names, empty names,
        negative indices or repeated indices.

        Example:
            >>> ClassNames.from_value(("a", "b")).names
            {0: 'a', 1: 'b'}
            >>> ClassNames.from_value(["a", 3])
            Traceback (most recent call last):
            ...
            TypeError: `class_names` must hold strings; entry 1 is int (3).
        """
        if isinstance(value, ClassNames):
            return value
        if isinstance(value, Mapping):
            pairs = list(value.items())
            complete = False
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            pairs = list(enumerate(value))
            complete = True
        else:
            raise TypeError(
                f"{what} must be a sequence of names (names[i] is class i) or a mapping from class index "
                f"to name, got {type(value).__name__}."
            )
        if not pairs:
            raise ValueError(f"{what} is empty; give at least one name.")
        names: dict[int, str] = {}
        for key, name in pairs:
            index = _index(key, what)
            if not isinstance(name, str):
                raise TypeError(f"{what} must hold strings; entry {key!r} is {type(name).__name__} ({name!r}).")
            if not name.strip():
                raise ValueError(f"{what}: the name of class {index} is empty.")
            if index in names:
                raise ValueError(f"{what} names class {index} twice ({names[index]!r} and {name!r}).")
            names[index] = " ".join(name.split())  # one line, single spaces: it goes into headers and tables
        return cls(dict(sorted(names.items())), complete)

    # ------------------------------------------------------------------ checks

    def check_fits(self, num_classes: int | None = None, indices: Iterable[int] = (), what: str = "class names",
                   indices_what: str = "index") -> None:
        """``ValueError`` unless the names fit a model with ``num_classes`` classes and cover ``indices``.

        A complete list must have exactly ``num_classes`` names; a mapping may not name a
        class beyond ``num_classes - 1``; every index in ``indices`` (targets, predictions)
        must have a name when the list is complete.

        Example:
            >>> ClassNames.from_value(["a", "b"]).check_fits(num_classes=3)
            Traceback (most recent call last):
            ...
            ValueError: 2 class names were given but the model has 3 classes.
        """
        if num_classes is not None:
            if self.complete and len(self.names) != num_classes:
                raise ValueError(f"{len(self.names)} {what} were given but the model has {num_classes} classes.")
            beyond = [i for i in self.names if i >= num_classes]
            if beyond:
                raise ValueError(f"{what} name class {beyond[0]}, but the model has {num_classes} classes "
                                 f"(0 to {num_classes - 1}).")
        if self.complete:
            missing = sorted({int(i) for i in indices if int(i) not in self.names})
            if missing:
                raise ValueError(f"{indices_what} {missing[0]} is beyond the {len(self.names)} {what} "
                                 f"(classes 0 to {len(self.names) - 1} are named).")

    # ------------------------------------------------------------------ display

    def name(self, index: int) -> str | None:
        """The name of class ``index``, or None."""
        return self.names.get(int(index))

    def label(self, index: int, style: str = "long") -> str:
        """``"3 (tabby cat)"`` (``style="long"``), ``"3 tabby cat"`` (``"short"``), or ``"3"`` if unnamed."""
        name = self.name(index)
        if name is None:
            return str(int(index))
        return f"{int(index)} ({name})" if style == "long" else f"{int(index)} {name}"

    def to_json(self) -> dict[str, str]:
        """The names as a JSON object (string keys), e.g. for a report."""
        return {str(i): n for i, n in self.names.items()}


def label(index: int, names: ClassNames | None, style: str = "long") -> str:
    """:meth:`ClassNames.label`, or the bare index without names.

    Example:
        >>> label(4, None)
        '4'
    """
    return str(int(index)) if names is None else names.label(index, style)


def _index(key: object, what: str) -> int:
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        key = int(key)  # JSON object keys are strings
    if isinstance(key, bool) or not isinstance(key, numbers.Integral):
        raise TypeError(f"{what}: class indices must be integers, got {key!r}.")
    if key < 0:
        raise ValueError(f"{what}: class indices must be >= 0, got {key}.")
    return int(key)


def read_class_names(path: str | Path) -> ClassNames:
    """Read class names from a file: a JSON list or object, else one name per line.

    In a text file line ``i`` (from 0) names class ``i``; blank lines at the end are
    ignored, a blank line in between is an error (it would shift every later class).
    Raises ``ValueError`` (``TypeError`` for JSON of the wrong kind, ``OSError`` for an
    unreadable file) with a message naming the file.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "names.txt")
        >>> _ = Path(path).write_text("cat\\ndog\\n")
        >>> read_class_names(path).names
        {0: 'cat', 1: 'dog'}
    """
    path = Path(path)
    what = f"class names file '{path}'"
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} is not UTF-8 text: {err}") from err
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"{what} is empty.")
    if stripped[0] in "[{":
        try:
            value: Any = json.loads(stripped)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} starts like JSON but does not parse: {err}") from err
        return ClassNames.from_value(value, what)
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = [i for i, line in enumerate(lines) if not line]
    if blank:
        raise ValueError(f"{what}: line {blank[0] + 1} is blank; give one name per line, class 0 first.")
    return ClassNames.from_value(lines, what)


def module_class_names(module: object) -> ClassNames | None:
    """Names a model already carries (``module.class_names`` or ``module.classes``), or None.

    An attribute that is not a list of names (``classes = 10``, a tensor, ...) is not
    taken for one.

    Example:
        >>> class Net: classes = ["cat", "dog"]
        >>> module_class_names(Net()).names
        {0: 'cat', 1: 'dog'}
        >>> class Counted: classes = 10
        >>> module_class_names(Counted()) is None
        True
    """
    for attribute in MODULE_ATTRIBUTES:
        value = getattr(module, attribute, None)
        if value is None:
            continue
        try:
            return ClassNames.from_value(value)
        except (TypeError, ValueError):
            continue
    return None


def fitting_class_names(given: ClassNames | None, module: object, num_classes: int | None, indices: list[int],
                        what: str = "`class_names`", indices_what: str = "class") -> ClassNames | None:
    """The names to show: ``given`` checked against the model's classes and the shown ``indices`` (a misfit
    is a ValueError naming ``what``), else the module's ``class_names``/``classes`` when they fit, else None.

    Example:
        >>> fitting_class_names(None, object(), 3, [0, 2]) is None
        True
        >>> fitting_class_names(ClassNames.from_value(["a", "b", "c"]), None, 3, [2]).name(2)
        'c'
    """
    if given is not None:
        given.check_fits(num_classes, indices, what=what, indices_what=indices_what)
        return given
    names = module_class_names(module)
    if names is None:
        return None
    try:
        names.check_fits(num_classes, indices)
    except ValueError:
        return None
    return names


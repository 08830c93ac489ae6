"""Facts read from the package's source text, so ``lightning-igos --help`` and ``--version`` import no torch.

The option defaults and choices live in modules that import torch (``IGOSConfig``,
``BASELINE_KINDS``, ``MAX_PROBE_ELEMENTS``), so the parser reads them from those modules'
source text, where each is a literal, and never keeps a copy. A parsed ``check`` command
gets its defaults from the imported modules themselves, so what runs never depends on this
reading; a value that is not a literal in the source is taken from the imported module.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import operator
from pathlib import Path
from typing import Any

__all__ = ["imported_value", "source_tree", "source_value"]

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow}


def _literal(node: ast.expr) -> Any:
    """The value of a literal expression; also numbers combined with ``+ - * **`` (``64 * 3 * 512 * 512``)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _literal(node.left), _literal(node.right)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError("not a number")
        return _ARITHMETIC[type(node.op)](left, right)
    return ast.literal_eval(node)


@functools.cache
def source_tree(module: str) -> ast.Module:
    """The parsed source of ``module`` (``lightning_igos.core.config``), found from the top package's folder: no
    package in between is imported (``lightning_igos.core`` imports torch)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(folder, *rest.split(".")) for folder in folders] if rest else []
    files = [path for base in candidates for path in (base.with_suffix(".py"), base / "__init__.py") if path.is_file()]
    if not files:
        raise LookupError(f"no source for {module}")
    return ast.parse(files[0].read_text(encoding="utf-8"), filename=str(files[0]))


def _assigned(body: list[ast.stmt], name: str) -> ast.expr:
    """The expression last assigned to ``name`` at the top level of ``body`` (a dataclass ``field(default=...)``
    or the config's ``option(default, ...)`` counts as its default)."""
    found = None
    for statement in body:
        if isinstance(statement, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in statement.targets):
                found = statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            if isinstance(statement.target, ast.Name) and statement.target.id == name:
                found = statement.value
    if isinstance(found, ast.Call):
        # dataclasses.field(default=...) and the config's option(default, help, ...)
        default = [k.value for k in found.keywords if k.arg == "default"]
        if default:
            found = default[0]
        elif isinstance(found.func, ast.Name) and found.func.id == "option" and found.args:
            found = found.args[0]
    if found is None:
        raise LookupError(name)
    return found


def imported_value(module: str, name: str, owner: str | None) -> Any:
    imported = importlib.import_module(module)
    if owner is None:
        return getattr(imported, name)
    cls = getattr(imported, owner)
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}[name]
    return getattr(cls, name)


@functools.cache
def source_value(module: str, name: str, owner: str | None = None) -> Any:
    """The value of ``module.name`` (or of the class attribute ``module.owner.name``) read from its source.

    Falls back on importing ``module`` when the value is not a literal there.

    Example:
        >>> source_value("lightning_igos.core.config", "method", "IGOSConfig")
        'igos'
        >>> source_value("lightning_igos.core.explainers", "BUILTIN_EXPLAINERS")[:2]
        ('igos', 'igos++')
        >>> source_value("lightning_igos.probe", "MAX_PROBE_ELEMENTS")
        50331648
    """
    try:
        body = source_tree(module).body
        if owner is not None:
            classes = [s for s in body if isinstance(s, ast.ClassDef) and s.name == owner]
            if not classes:
                raise LookupError(owner)
            body = classes[-1].body
        return _literal(_assigned(body, name))
    except (LookupError, ValueError, TypeError, SyntaxError, OSError):
        return imported_value(module, name, owner)

"""Loading a model class and its checkpoint for ``lightning-igos check``.

Every problem a user can fix (a class that cannot be imported, a checkpoint that
does not fit it) is raised as :class:`InputError` with a one-line message.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_igos.cli.early import file_problem
from lightning_igos.cli.errors import PROG, InputError
from lightning_igos.core.runtime import load_failure_reason, load_weights_only, safe_loading


def working_directory_importable() -> None:
    """Put the working directory on ``sys.path`` (``--model train:Net``, ``--plugin my_plugin``).

    A console script does not put it there; ``python -m`` does.
    """
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())


def import_model_class(spec: str) -> type[nn.Module]:
    """Import ``package.module:ClassName`` (the current directory is importable too).

    Example:
        >>> import_model_class("lightning_igos.demo.synthetic:SmallCNN").__name__
        'SmallCNN'
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--model must look like package.module:ClassName, got {spec!r}.")
    working_directory_importable()
    before = file_states(Path.cwd())
    try:
        target: Any = importlib.import_module(module_name)
    except (Exception, SystemExit) as err:  # ImportError, or anything the module raises (sys.exit too)
        raise InputError(f"cannot import module {module_name!r} for --model {spec}: {type(err).__name__}: {err}") \
            from err
    changed = changed_files(before, file_states(Path.cwd()))
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        print(f"{PROG}: warning: importing {module_name!r} for --model changed files under the working "
              f"directory ({shown}): the module runs code when imported (a training script without an "
              "`if __name__ == \"__main__\":` guard trains again); the check reads the files as they are now.",
              file=sys.stderr)
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"cannot import --model {spec}: {module_name!r} has no attribute {attribute!r}.")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise InputError(f"--model {spec} must name a torch.nn.Module subclass, got {target!r}.")
    return target


#: At most this many files under the working directory are watched while the model's module is imported.
MAX_WATCHED_FILES = 20_000


def file_states(root: Path, limit: int = MAX_WATCHED_FILES) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of the files under ``root`` (hidden folders, ``__pycache__`` and
    virtual environments left out; at most ``limit`` files), to see what importing a module changes."""
    states: dict[str, tuple[int, int]] = {}
    folders = [root]
    while folders and len(states) < limit:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith(".") and entry.name not in ("__pycache__", "venv", "node_modules"):
                        folders.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    states[os.path.relpath(entry.path, root)] = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                continue
    return states


def changed_files(before: Mapping[str, tuple[int, int]], after: Mapping[str, tuple[int, int]]) -> list[str]:
    """The files written, created or removed between two :func:`file_states`, sorted.

    Example:
        >>> changed_files({"a.pt": (1, 5), "b.py": (2, 5)}, {"a.pt": (1, 9), "b.py": (2, 5), "c.ckpt": (3, 9)})
        ['a.pt', 'c.ckpt']
    """
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def check_input_file(path: Path, what: str) -> Path:
    """``path`` must name an existing regular file; ``what`` (e.g. ``"checkpoint"``) names it in the error.

    Example:
        >>> check_input_file(Path("no/such.ckpt"), "checkpoint")
        Traceback (most recent call last):
        ...
        lightning_igos.cli.errors.InputError: checkpoint file 'no/such.ckpt' does not exist.
    """
    problem = file_problem(path, what)
    if problem is not None:
        raise InputError(problem)
    return path


def read_checkpoint(checkpoint: Path, spec: str) -> object:
    """The content of ``checkpoint``, read with ``torch.load(weights_only=True)``: no pickled code runs.

    Whatever the torch version or ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``; a file that cannot be read
    that way is an :class:`InputError`.
    """
    check_input_file(checkpoint, "checkpoint")
    try:
        return load_weights_only(checkpoint)
    except Exception as err:
        reason = load_failure_reason(err)
        if not zipfile.is_zipfile(checkpoint):
            raise InputError(f"checkpoint '{checkpoint}' is not a file written by torch.save ({reason}).") from err
        raise InputError(
            f"checkpoint '{checkpoint}' cannot be read without running code from it (torch.load with "
            f"weights_only=True: {reason}); {PROG} check never runs pickled code. Keep only plain "
            f"values in the hyper-parameters, or give --model {spec} a file holding its state dict."
        ) from err


def load_model(model_class: type[nn.Module], checkpoint: Path, device: torch.device, spec: str = "") -> nn.Module:
    """Load ``checkpoint`` into ``model_class`` on ``device``, in eval mode, without running pickled code.

    The file is read once with ``torch.load(weights_only=True)``. A Lightning checkpoint (a dict
    with ``"state_dict"``) given to a class with ``load_from_checkpoint`` (a LightningModule) is
    handed to it from that content, so its hyper-parameters build the module; any other
    ``nn.Module`` is built without arguments and given the state dict in the file (a raw state
    dict or a Lightning checkpoint's ``"state_dict"``, with a common key prefix such as
    ``"model."`` or ``"module."`` stripped when that makes the keys match).
    """
    spec = spec or model_class.__name__
    content = read_checkpoint(checkpoint, spec)
    lightning = hasattr(model_class, "load_from_checkpoint")
    if lightning and isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        model = _lightning_model(model_class, content, device, checkpoint, spec)
    elif lightning and not _is_state_dict(content):
        raise InputError(_not_lightning_checkpoint(checkpoint, content))
    else:
        model = _state_dict_model(model_class, content, device, checkpoint, spec)
    if not isinstance(model, nn.Module):  # a load_from_checkpoint that returns something else
        raise InputError(f"--model {spec}: loading '{checkpoint}' gave a {type(model).__name__}, not an nn.Module.")
    return model.to(device).eval()


def _lightning_model(
    model_class: type[nn.Module], content: Mapping, device: torch.device, checkpoint: Path, spec: str
) -> nn.Module:
    """``model_class.load_from_checkpoint`` on content already read safely.

    The content is written back to memory holding only what the safe load let through, and
    ``weights_only=True`` is passed where Lightning accepts it: Lightning's own ``torch.load``
    runs no code whatever the torch version or environment.
    """
    buffer = io.BytesIO()
    torch.save(without_code_references(content), buffer)
    buffer.seek(0)
    loader = model_class.load_from_checkpoint
    options: dict[str, Any] = {"map_location": device}
    try:
        if "weights_only" in inspect.signature(loader).parameters:
            options["weights_only"] = True
    except (TypeError, ValueError):  # no signature to read: rely on the sanitised buffer
        pass
    try:
        with safe_loading():
            return loader(buffer, **options)
    except (Exception, SystemExit) as err:
        raise InputError(f"checkpoint '{checkpoint}' does not fit --model {spec}: {type(err).__name__}: {err}") \
            from err


#: The hyper-parameter entries that older Lightning releases (before 2.6.6) import and call, or import, when
#: loading: ``load_from_checkpoint`` ran ``hyper_parameters["_instantiator"]`` (a dotted name, which passes
#: weights-only loading) to build the module.
CODE_REFERENCE_KEYS = ("_instantiator", "_class_path")
#: Where a checkpoint keeps the module's hyper-parameters (the current key and those of old releases).
HYPER_PARAMETER_KEYS = ("hyper_parameters", "hparams", "module_arguments")


def without_code_references(content: Mapping) -> dict:
    """A copy of a Lightning checkpoint's content without the hyper-parameters that name code to run.

    The module is then built as ``cls(**hyper_parameters)`` on every Lightning version: a crafted
    checkpoint cannot make ``load_from_checkpoint`` import and call what it names.

    Example:
        >>> clean = without_code_references({"state_dict": {}, "hyper_parameters": {
        ...     "_instantiator": "builtins.print", "width": 4}})
        >>> clean["hyper_parameters"]
        {'width': 4}
    """
    cleaned = dict(content)
    for key in HYPER_PARAMETER_KEYS:
        params = cleaned.get(key)
        if isinstance(params, Mapping) and any(name in params for name in CODE_REFERENCE_KEYS):
            cleaned[key] = {name: value for name, value in params.items() if name not in CODE_REFERENCE_KEYS}
    return cleaned


def _not_lightning_checkpoint(checkpoint: Path, content: object) -> str:
    if isinstance(content, Mapping):
        keys = ", ".join(repr(k) for k in list(content)[:5])
        return f"checkpoint '{checkpoint}' is not a Lightning checkpoint: it has no 'state_dict' (keys: {keys})."
    kind = type(content).__name__
    return f"checkpoint '{checkpoint}' is not a Lightning checkpoint or a state dict: it holds a {kind}."


def _is_state_dict(content: object) -> bool:
    return (
        isinstance(content, Mapping)
        and len(content) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items())
    )


def _state_dict_model(
    model_class: type[nn.Module], content: object, device: torch.device, checkpoint: Path, spec: str
) -> nn.Module:
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = content["state_dict"]
    if not _is_state_dict(content):
        raise InputError(
            f"checkpoint '{checkpoint}' holds no state dict for --model {spec} "
            "(expected a dict of tensors or a Lightning checkpoint with 'state_dict')."
        )
    try:
        model = model_class()
    except (Exception, SystemExit) as err:
        raise InputError(f"--model {spec} cannot be built without arguments: {type(err).__name__}: {err}") from err
    state = match_state_dict_keys(content, model.state_dict().keys())
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise InputError(f"checkpoint '{checkpoint}' does not fit --model {spec}: {err}") from err
    return model


def match_state_dict_keys(state: Mapping[str, Tensor], expected_keys: Any) -> Mapping[str, Tensor]:
    """Strip the shortest dotted key prefix that makes ``state``'s keys equal ``expected_keys``.

    Keys without the prefix are dropped, so a LightningModule's ``"model."`` submodule can be
    loaded into the bare network. Returns ``state`` unchanged when nothing matches.

    Example:
        >>> import torch
        >>> sorted(match_state_dict_keys({"model.w": torch.zeros(1), "loss.t": torch.zeros(1)}, ["w"]))
        ['w']
    """
    expected = set(expected_keys)
    if set(state) == expected:
        return state
    prefixes = {key[: i + 1] for key in state for i, char in enumerate(key) if char == "."}
    for prefix in sorted(prefixes, key=len):
        stripped = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if set(stripped) == expected:
            return stripped
    return state

"""Loading a model class and its checkpoint for ``lightning-igos check``.

Every problem a user can fix (a class that cannot be imported, a checkpoint that
does not fit it) is raised as :class:`InputError` with a one-line message.
"""

from __future__ import annotations

import importlib
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn


class InputError(Exception):
    """A usage or input problem: reported on one line, exit status 2."""


def import_model_class(spec: str) -> type[nn.Module]:
    """Import ``package.module:ClassName`` (the current directory is importable too).

    Example:
        >>> import_model_class("lightning_igos.synthetic:SmallCNN").__name__
        'SmallCNN'
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--model must look like package.module:ClassName, got {spec!r}.")
    # A console script does not put the working directory on sys.path; `python -m` does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or anything the module raises while it is imported
        raise InputError(f"cannot import module {module_name!r} for --model {spec}: {type(err).__name__}: {err}") \
            from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"cannot import --model {spec}: {module_name!r} has no attribute {attribute!r}.")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise InputError(f"--model {spec} must name a torch.nn.Module subclass, got {target!r}.")
    return target


def load_model(model_class: type[nn.Module], checkpoint: Path, device: torch.device, spec: str = "") -> nn.Module:
    """Load ``checkpoint`` into ``model_class`` on ``device``, in eval mode.

    A class with ``load_from_checkpoint`` (a LightningModule) is loaded with it; a plain
    ``nn.Module`` is built without arguments and given the state dict in the file (a raw
    state dict or a Lightning checkpoint's ``"state_dict"``, with a common key prefix such as
    ``"model."`` or ``"module."`` stripped when that makes the keys match).
    """
    spec = spec or model_class.__name__
    if hasattr(model_class, "load_from_checkpoint"):
        try:
            model = model_class.load_from_checkpoint(checkpoint, map_location=device)
        except Exception as err:
            content = _read_state_file(checkpoint, spec, quiet=True)
            if not _is_state_dict(content):
                raise InputError(_lightning_load_failure(checkpoint, spec, content, err)) from err
            model = _state_dict_model(model_class, content, device, checkpoint, spec)
    else:
        content = _read_state_file(checkpoint, spec)
        model = _state_dict_model(model_class, content, device, checkpoint, spec)
    if not isinstance(model, nn.Module):  # a load_from_checkpoint that returns something else
        raise InputError(f"--model {spec}: loading '{checkpoint}' gave a {type(model).__name__}, not an nn.Module.")
    return model.to(device).eval()


def _lightning_load_failure(checkpoint: Path, spec: str, content: object, err: Exception) -> str:
    """Say why ``load_from_checkpoint`` failed in the terms a user can act on."""
    if not zipfile.is_zipfile(checkpoint) and content is None:
        return f"checkpoint '{checkpoint}' is not a file written by torch.save ({type(err).__name__}: {err})."
    if isinstance(content, Mapping) and "state_dict" not in content:
        keys = ", ".join(repr(k) for k in list(content)[:5])
        return f"checkpoint '{checkpoint}' is not a Lightning checkpoint: it has no 'state_dict' (keys: {keys})."
    return f"checkpoint '{checkpoint}' does not fit --model {spec}: {type(err).__name__}: {err}"


def _read_state_file(checkpoint: Path, spec: str, quiet: bool = False) -> object:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        if quiet:
            return None
        raise InputError(
            f"checkpoint '{checkpoint}' cannot be read for --model {spec} (torch.load with weights_only=True): "
            f"{type(err).__name__}: {err}"
        ) from err


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
    except Exception as err:
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

"""The demo: a small CNN trained on generated images while :class:`IGOSCallback` explains it.

* :mod:`~lightning_igos.demo.app`: the training run (:func:`main`, ``python -m lightning_igos.demo``),
  its per-epoch :class:`EpochTable` and the ``tensorboard`` command printed at the end;
* :mod:`~lightning_igos.demo.synthetic`: the generated object-on-noise task (images, labels and boxes)
  and :class:`SmallCNN`, shared with the tests and the benchmarks;
* :mod:`~lightning_igos.demo.toy_module`: :class:`ObjectClassifier`, the LightningModule the demo trains.

The names of :mod:`~lightning_igos.demo.app` are imported on first use (PEP 562), so importing
:mod:`~lightning_igos.demo.synthetic` alone does not pull in Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_igos.demo.app import (
        DEFAULT_LOGDIR,
        DEMO_IGOS,
        DEMO_NOISE,
        EpochTable,
        main,
        parse_args,
        table_columns,
        tensorboard_command,
    )

__all__ = [
    "DEFAULT_LOGDIR",
    "DEMO_IGOS",
    "DEMO_NOISE",
    "EpochTable",
    "main",
    "parse_args",
    "table_columns",
    "tensorboard_command",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("lightning_igos.demo.app"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

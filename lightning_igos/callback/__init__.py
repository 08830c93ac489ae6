"""The Lightning callback: :class:`IGOSCallback` (``pytorch_lightning``) and ``LightningIGOSCallback``.

* :mod:`~lightning_igos.callback.hooks`: the callback class, read as its Lightning hooks
  (capture the probe, evaluate it, log);
* :mod:`~lightning_igos.callback.probe_state`: the probe it explains, how it is read or
  captured from validation batches, and its checkpoint state;
* :mod:`~lightning_igos.callback.scalars`: the scalars it logs, and the declarations of the
  statistics that span epochs (``stability``, ``sanity_correlation``);
* :mod:`~lightning_igos.callback.outputs`: logging the scalars and writing the panels;
* :mod:`~lightning_igos.callback.loggers`: which loggers take the panels, and the TensorBoard layout;
* :mod:`~lightning_igos.callback.monitors`: what ``ModelCheckpoint``/``EarlyStopping`` see on
  epochs without fresh values;
* :mod:`~lightning_igos.callback.status`: the progress shown while explaining, and the cost line;
* :mod:`~lightning_igos.callback.lightning_internals`: every use of Lightning's private state (and of
  the progress bars' internals), each with what it relies on;
* :mod:`~lightning_igos.callback.probe_state`, :mod:`~lightning_igos.callback.report_writer` and
  :mod:`~lightning_igos.callback.messages`: the probe, ``save_report`` and the warnings;
* :mod:`~lightning_igos.callback.lightning_namespace`: ``LightningIGOSCallback``, the class for
  the ``lightning`` package (``lightning.pytorch.cli.LightningCLI``, YAML configs).
"""

from __future__ import annotations

from typing import Any

from lightning_igos.callback.hooks import EmptyExplanationWarning, IGOSCallback, IGOSWarning

__all__ = [
    "SCALARS", "SCALAR_NAMES", "EmptyExplanationWarning", "IGOSCallback", "IGOSWarning", "LightningIGOSCallback",
]


def __getattr__(name: str) -> Any:
    """``LightningIGOSCallback`` (a ``lightning.pytorch.Callback``), imported from
    :mod:`~lightning_igos.callback.lightning_namespace` on first access, so ``lightning`` is
    imported only when asked for."""
    if name in ("SCALARS", "SCALAR_NAMES"):  # the default callback's scalars, from the statistics registry
        from lightning_igos.callback import scalars

        return getattr(scalars, name)
    if name == "LightningIGOSCallback":
        from lightning_igos.callback.lightning_namespace import LightningIGOSCallback

        globals()[name] = LightningIGOSCallback
        return LightningIGOSCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"LightningIGOSCallback", "SCALARS", "SCALAR_NAMES"})

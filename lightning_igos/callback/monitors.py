"""What ``ModelCheckpoint`` and ``EarlyStopping`` see of the callback's scalars on an epoch without them.

On a validation epoch that is not explained (``every_n_epochs``) or whose explanation failed
(``on_error="warn"``), the callback logs nothing. A monitor would then find its key missing
(``ModelCheckpoint`` and a strict ``EarlyStopping`` raise) or, since Lightning keeps the last
value in ``trainer.callback_metrics``, the value of an older epoch (which lets an unexplained
checkpoint take a top-k place). :class:`MonitorStandIns` prevents both:

* every monitored ``<prefix>/`` key reads the worst finite value of its monitor's ``mode``
  (:data:`WORST`): ``ModelCheckpoint`` ranks it below every
  explained epoch, so a top-k place goes to an unexplained epoch only while there are fewer
  explained epochs than places, and an explained epoch takes it back;
* a monitored key's stand-in never crosses the ``divergence_threshold`` of an ``EarlyStopping``
  on that key, and is finite (``check_finite``);
* an ``EarlyStopping`` on a ``<prefix>/`` key does not count the epoch towards its
  ``patience``: its ``wait_count`` is held back by one just before its check, which counts the
  stand-in, so its count is the same after the epoch as before;
* an unmonitored ``<prefix>/`` key is removed from ``trainer.callback_metrics``, so nothing there
  reads as measured at that epoch; a key that a learning-rate scheduler monitors
  (``ReduceLROnPlateau``) is left as Lightning keeps it, the last measured value, since the
  scheduler needs it and has no way to skip an epoch.

No logger records a stand-in: they go to ``trainer.callback_metrics`` only.

Example:
    >>> {mode: f"{value:.1e}" for mode, value in WORST.items()}
    {'max': '-3.4e+38', 'min': '3.4e+38'}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from lightning_igos.callback.lightning_internals import (
    checks_on_train_epoch_end,
    drop_callback_metric,
    early_stopping_classes,
    hold_patience,
    release_patience,
    set_callback_metric,
)

__all__ = ["WORST", "MonitorStandIns"]

#: The worst finite value of each monitor mode (float32's largest magnitude): the stand-in's value.
WORST = {"max": -torch.finfo(torch.float32).max, "min": torch.finfo(torch.float32).max}


class MonitorStandIns:
    """The stand-ins of one callback's scalars, and the ``EarlyStopping`` epochs it held back."""

    def __init__(self) -> None:
        # id(EarlyStopping) -> epoch held, for those that check once per training epoch.
        self._held_epochs: dict[int, int] = {}

    def apply(self, trainer: Any, names: Iterable[str], fresh: set[str]) -> None:
        """Give the monitors of ``names`` their stand-ins, except for the ``fresh`` names logged this epoch."""
        callbacks = list(getattr(trainer, "callbacks", []))
        stopping_classes = early_stopping_classes()
        fitting = getattr(getattr(trainer, "state", None), "fn", None) == "fit" and not trainer.sanity_checking
        schedulers = getattr(trainer, "lr_scheduler_configs", None) or []
        scheduled = {getattr(config, "monitor", None) for config in schedulers}
        for name in names:
            monitors = [cb for cb in callbacks if getattr(cb, "monitor", None) == name
                        and getattr(cb, "mode", None) in WORST]
            stoppers = [cb for cb in monitors if isinstance(cb, stopping_classes)]
            if name in fresh:
                for stopper in stoppers:
                    self._release(stopper, trainer.current_epoch)
                continue
            if not monitors:
                if name not in scheduled:
                    drop_callback_metric(trainer, name)
                continue
            mode = monitors[0].mode
            value = WORST[mode]
            for stopper in stoppers:
                threshold = getattr(stopper, "divergence_threshold", None)
                if threshold is not None and stopper.mode == mode:
                    value = max(value, float(threshold)) if mode == "max" else min(value, float(threshold))
            set_callback_metric(trainer, name, torch.tensor(value, dtype=torch.float32))
            if fitting:
                for stopper in stoppers:
                    self._hold(stopper, trainer.current_epoch)

    def _hold(self, stopper: Any, epoch: int) -> None:
        """Hold back ``stopper``'s patience count by one: its next check counts the stand-in."""
        if checks_on_train_epoch_end(stopper):
            # One check per training epoch, after its last validation: hold once per epoch.
            if self._held_epochs.get(id(stopper)) == epoch:
                return
            self._held_epochs[id(stopper)] = epoch
        hold_patience(stopper)

    def _release(self, stopper: Any, epoch: int) -> None:
        """A later validation of the same training epoch was explained: its check counts as usual."""
        if self._held_epochs.get(id(stopper)) == epoch:
            del self._held_epochs[id(stopper)]
            release_patience(stopper)

"""Every place the callback relies on Lightning's private state, or on a progress bar's internals.

Nothing else in the package reads or writes these; each function says what it relies on, and
``tests/test_lightning_internals.py`` checks each reliance on the installed Lightning (both the
``pytorch_lightning`` and the ``lightning.pytorch`` namespaces), so a release that changes one
fails there, loudly, rather than in a user's run. Each reach degrades to the public behaviour
where it can (a missing counter reads as ``trainer.global_step``, a missing flag as "check on
validation end").

* :func:`batches_that_stepped`: the step of the epoch-end scalars, for the panels;
* :func:`checks_on_train_epoch_end`, :func:`hold_patience`, :func:`release_patience`:
  ``EarlyStopping``'s patience on an epoch without fresh values;
* :func:`set_callback_metric`, :func:`drop_callback_metric`: what the monitors read;
* :func:`terminal_output`, :func:`take_over_progress_bar`: the explaining shown on the
  validation bar of ``TQDMProgressBar`` and ``RichProgressBar``;
* :func:`summary_file_writer`: TensorBoard's ``SummaryWriter`` file writer, for a layout of
  margin charts with several bands.

Example:
    >>> from types import SimpleNamespace
    >>> batches_that_stepped(SimpleNamespace()) is None  # not a Lightning trainer: the caller's fallback
    True
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = [
    "batches_that_stepped", "checks_on_train_epoch_end", "drop_callback_metric", "early_stopping_classes",
    "hold_patience", "release_patience", "set_callback_metric", "summary_file_writer", "take_over_progress_bar",
    "terminal_output",
]

# --------------------------------------------------------------------------- the trainer's loops


def batches_that_stepped(trainer: Any) -> int | None:
    """The optimizer steps taken before this validation, as Lightning counts them for the loggers; None if unknown.

    Relies on ``trainer.fit_loop.epoch_loop._batches_that_stepped``: an ``int`` that Lightning's
    logger connector passes as ``step`` to ``logger.log_metrics`` for the epoch-end metrics
    (``trainer.global_step`` less one inside an epoch's last batch), so panels logged at this step
    line up with the scalars.
    """
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    step = getattr(loop, "_batches_that_stepped", None)
    return step if isinstance(step, int) else None


# --------------------------------------------------------------------------- EarlyStopping


def early_stopping_classes() -> tuple[type, ...]:
    """``EarlyStopping`` of ``pytorch_lightning`` and, if that package is in use, of ``lightning.pytorch``."""
    from pytorch_lightning.callbacks import EarlyStopping

    classes: list[type] = [EarlyStopping]
    # lightning.pytorch's own class, only if that package is in use (never imported here).
    module = sys.modules.get("lightning.pytorch.callbacks.early_stopping")
    if module is not None and isinstance(getattr(module, "EarlyStopping", None), type):
        classes.append(module.EarlyStopping)
    return tuple(classes)


def checks_on_train_epoch_end(stopper: Any) -> bool:
    """Whether ``stopper`` checks once per training epoch (after its last validation) rather than per validation.

    Relies on ``EarlyStopping._check_on_train_epoch_end``: the constructor's
    ``check_on_train_epoch_end``, or, when that was None, set in ``setup`` (True when validation runs once
    per training epoch). Read after ``setup``; a missing attribute reads as a check per validation.
    """
    return bool(getattr(stopper, "_check_on_train_epoch_end", False))


def hold_patience(stopper: Any) -> None:
    """Take one from ``stopper``'s patience count, so its next check, which counts the stand-in, leaves it as it was.

    Relies on ``EarlyStopping.wait_count``: an int that a check without improvement raises by exactly one
    (and an improvement resets to 0), stopping when it reaches ``patience``. A stand-in is the worst
    value of the mode, never an improvement, so the check adds the one taken here back.
    """
    stopper.wait_count -= 1


def release_patience(stopper: Any) -> None:
    """Undo :func:`hold_patience` (a later validation of the same training epoch was explained)."""
    stopper.wait_count += 1


# --------------------------------------------------------------------------- what the monitors read


def set_callback_metric(trainer: Any, name: str, value: Tensor) -> None:
    """Let the monitors read ``value`` under ``name`` at this epoch's checks, without any logger recording it.

    Relies on ``trainer.callback_metrics`` being the logger connector's one persistent dict (the same
    object on every access, refreshed from the epoch's logged results), which ``ModelCheckpoint`` and
    ``EarlyStopping`` read after ``on_validation_epoch_end``; a key written here stays until it is
    logged again or removed.
    """
    trainer.callback_metrics[name] = value


def drop_callback_metric(trainer: Any, name: str) -> None:
    """Remove ``name`` from what the monitors read (an older epoch's value would read as this epoch's).

    Relies on the same persistent ``trainer.callback_metrics`` dict as :func:`set_callback_metric`.
    """
    trainer.callback_metrics.pop(name, None)


# --------------------------------------------------------------------------- progress bars


def terminal_output(callback: Any) -> bool:
    """Whether the progress bar draws on a terminal (redrawn in place) rather than into a log.

    Relies on ``RichProgressBar.progress.console.is_terminal`` (Rich) and on
    ``TQDMProgressBar.val_progress_bar.fp``, the stream tqdm writes to (stdout when unknown).
    """
    progress = getattr(callback, "progress", None)  # Rich
    console = getattr(progress, "console", None)
    if console is not None and hasattr(console, "is_terminal"):
        return bool(console.is_terminal)
    stream = None
    try:
        stream = getattr(callback.val_progress_bar, "fp", None)
    except Exception:  # no validation bar (yet)
        stream = None
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except Exception:
        return False


Draw = Callable[[], None]


def take_over_progress_bar(callback: Any, total: int | None, live: bool, describe: Callable[[], str],
                           done: Callable[[], int]) -> tuple[Draw, Draw] | None:
    """Turn the validation bar of ``callback`` into a bar of ``total`` passes; ``(draw, restore)``, or None.

    ``draw()`` shows ``describe()`` and ``done()`` (redrawn when ``live``, on a terminal; into a log
    only the count moves); ``restore()`` puts the validation bar back as it was. None when the
    callback has no validation bar this function knows.

    Relies on, for ``RichProgressBar``: ``progress`` (a ``rich.progress.Progress``) and
    ``val_progress_bar_id`` (its validation task), ``Progress.tasks[id]`` with ``description``,
    ``total`` and ``completed``, and ``Progress.reset/update/refresh``. For ``TQDMProgressBar``: the
    ``val_progress_bar`` property (raises while there is none: between ``on_validation_start`` and
    ``on_validation_end`` there is one), a tqdm whose ``total``, ``n``, ``desc``, ``unit``,
    ``start_t``, ``last_print_t`` and ``last_print_n`` are plain attributes, with ``reset``,
    ``update`` and ``set_description_str``.
    """
    progress, task_id = getattr(callback, "progress", None), getattr(callback, "val_progress_bar_id", None)
    if progress is not None and task_id is not None and callable(getattr(progress, "reset", None)):
        return _take_over_rich(progress, task_id, total, live, describe, done)
    try:
        bar = callback.val_progress_bar
    except Exception:
        return None
    if bar is not None and callable(getattr(bar, "set_description_str", None)):
        return _take_over_tqdm(bar, total, live, describe, done)
    return None


def _take_over_rich(progress: Any, task_id: Any, total: int | None, live: bool, describe: Callable[[], str],
                    done: Callable[[], int]) -> tuple[Draw, Draw]:
    task = progress.tasks[task_id]
    old = (task.description, task.total, task.completed)

    def draw() -> None:
        progress.update(task_id, description=describe(), completed=done())
        if live:
            progress.refresh()

    def restore() -> None:
        description, old_total, completed = old
        progress.reset(task_id, total=old_total, completed=completed, description=description)

    # A fresh task clock: the time and speed columns then measure the explaining.
    progress.reset(task_id, total=total, completed=0, description=describe())
    if live:
        progress.refresh()
    return draw, restore


def _take_over_tqdm(bar: Any, total: int | None, live: bool, describe: Callable[[], str],
                    done: Callable[[], int]) -> tuple[Draw, Draw]:
    names = ("total", "n", "desc", "unit", "start_t", "last_print_t", "last_print_n")
    old = {name: getattr(bar, name, None) for name in names}

    def draw() -> None:
        if live:
            bar.update(done() - bar.n)  # tqdm's own rate and time left follow the passes
            bar.set_description_str(describe(), refresh=True)
        else:
            bar.n = done()

    def restore() -> None:
        for name, value in old.items():
            if value is not None or name == "total":
                setattr(bar, name, value)
        bar.set_description_str(old["desc"] or "", refresh=False)

    if total is not None:
        bar.unit = " passes"
        if live:
            bar.reset(total=total)  # a fresh clock and rate: the bar's numbers are the explaining's
        else:
            bar.total, bar.n = total, 0
    bar.set_description_str(describe(), refresh=live)
    return draw, restore


# --------------------------------------------------------------------------- TensorBoard


def summary_file_writer(experiment: Any) -> Any | None:
    """The file writer of torch's ``SummaryWriter`` (None for another writer).

    Relies on ``SummaryWriter._get_file_writer()``, whose ``add_summary`` writes a ``Summary`` proto
    as it is (``add_custom_scalars`` cannot write a margin chart with several bands).
    """
    file_writer = getattr(experiment, "_get_file_writer", None)
    return file_writer() if callable(file_writer) else None

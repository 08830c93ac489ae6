"""Show on Lightning's progress bar how far the explanations are, and count the model passes.

:class:`ExplainStatus` is a context manager around one explanation run of the callback. It
counts the images that go through the model (it listens to the evaluation's model runner,
``evaluate(..., on_forward=status.count)``) and, when the
trainer shows a progress bar (Lightning's ``TQDMProgressBar`` or ``RichProgressBar``), writes

    I-GOS: explaining 8 probe images, 640/1440 passes, 0:05 elapsed, ETA 0:12

into the validation bar's description, and puts the old description back afterwards. The
total is known before the first pass, from the configuration
(:func:`~lightning_igos.core.evaluation.planned_passes`): the explainer's gradient passes (for
``igos`` at most ``iterations * ig_steps`` per image, twice for ``igos++``) and the metrics'
passes (``2 * metric_steps - 1`` per image after the shared clean forward).
When every image converges before ``iterations`` the count jumps to the end of the solver's
share. The solver's forward-only line-search trials are not in the count but are in the
time, so the ETA (the time per counted pass so far, times the passes left) includes them.

Outside a terminal (a CI log, output sent to a file) the bar is not redrawn while explaining:
a log would get a status line per redraw. The callback prints one line per explained epoch
instead (:meth:`ExplainStatus.summary`, through the progress bar's own ``print``). Without a
progress bar it only counts.

Example:
    >>> from types import SimpleNamespace
    >>> with ExplainStatus(SimpleNamespace(progress_bar_callback=None), num_images=4) as status:
    ...     status.count(4, False); status.count(2, True)
    >>> status.passes, status.passes_per_image
    (6, 1.5)
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["ExplainStatus", "clock", "cost_line", "progress_bar", "terminal_output"]


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``), as progress bars show time.

    Example:
        >>> clock(5.2), clock(125), clock(3725)
        ('0:05', '2:05', '1:02:05')
    """
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_bar(trainer: Any) -> Any:
    """The trainer's progress bar callback when it shows anything (rank 0, enabled), else None."""
    callback = getattr(trainer, "progress_bar_callback", None)
    if callback is None or not getattr(callback, "is_enabled", False):
        return None
    return callback


def terminal_output(callback: Any) -> bool:
    """Whether the progress bar draws on a terminal (redrawn in place) rather than into a log."""
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


class ExplainStatus:
    """Count the images passed through ``module`` and show the run's progress on the trainer's progress bar.

    Attributes (after the ``with`` block): ``passes`` (images through the model, all
    forwards counted, with or without gradients), ``passes_per_image``, ``seconds``
    (wall time of the block), ``done`` and ``total`` (the counted passes, see the module's
    doc; ``total`` is None without a ``config``).
    """

    INTERVAL_S = 0.25

    def __init__(self, trainer: Any, num_images: int, config: Any = None) -> None:
        from lightning_igos.core.evaluation import planned_passes

        self.trainer, self.num_images = trainer, num_images
        self.passes = 0
        self.seconds = 0.0
        self.solver_budget, metric_budget = planned_passes(config, num_images) if config is not None else (0, 0)
        self.total: int | None = self.solver_budget + metric_budget if config is not None else None
        self.done = 0
        self.stage = "explaining"
        self._started = self._drawn = 0.0
        self._bar: Any = None
        self._restore: Any = None
        self._live = False  # the bar is on a terminal: redraw it

    @property
    def passes_per_image(self) -> float:
        return self.passes / self.num_images if self.num_images else 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._started if self._started else self.seconds

    def text(self) -> str:
        """The progress bar's text: passes done of the total, time so far and the time left."""
        lead = f"I-GOS: explaining {self.num_images} probe images"
        if self.total is None:
            return f"{lead}, {self.passes} passes"
        elapsed = self.elapsed()
        eta = "--" if self.done == 0 else clock(elapsed / self.done * (self.total - self.done))
        return f"{lead}, {self.done}/{self.total} passes, {clock(elapsed)} elapsed, ETA {eta}"

    def summary(self, epoch: int) -> str:
        """The one line of an explained epoch, for a log (no terminal)."""
        counted = "" if self.total is None else f", {self.done}/{self.total} passes"
        return (f"I-GOS epoch {epoch}: explained {self.num_images} probe images in {self.seconds:.1f} s"
                f"{counted} ({self.passes} model passes in all)")

    def on_stage(self, stage: str) -> None:
        """``evaluate``'s stage callback: at ``"scoring"`` the solver's share is done, converged early or not."""
        self.stage = stage
        if stage == "scoring":
            self.done = max(self.done, self.solver_budget)
            self._draw(force=True)

    def __enter__(self) -> ExplainStatus:
        self._started = time.perf_counter()
        try:
            self._show(self.text())
        except Exception:  # a progress bar we cannot write to never stops the explanations
            self._bar = self._restore = None
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self._started = 0.0
        if self._restore is not None:
            try:
                self._restore()
            except Exception:
                pass
        self._bar = self._restore = None

    # ------------------------------------------------------------------ internals

    def count(self, num_images: int, with_grad: bool) -> None:
        """The model runner's listener: ``num_images`` went through the model, with gradients or not."""
        self.passes += num_images
        if self.total is not None and (self.stage == "scoring" or with_grad):
            # Gradient passes are the explainer's; every pass of the scoring stage is a metric point.
            self.done = min(self.done + num_images, self.total)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if self._bar is None:
            return
        now = time.perf_counter()
        if force or now - self._drawn >= self.INTERVAL_S:
            self._drawn = now
            try:
                self._bar(self.text())
            except Exception:
                self._bar = None

    def _show(self, text: str) -> None:
        """Find the validation bar of the trainer's progress bar callback and write ``text`` into it.

        On a terminal the bar is redrawn; into a log the text is only set (nothing is written).
        """
        callback = progress_bar(self.trainer)
        if callback is None:
            return
        live = self._live = terminal_output(callback)
        # Rich: a task of a rich.progress.Progress.
        progress, task_id = getattr(callback, "progress", None), getattr(callback, "val_progress_bar_id", None)
        if progress is not None and task_id is not None and callable(getattr(progress, "update", None)):
            old = progress.tasks[task_id].description

            def show_rich(value: str) -> None:
                progress.update(task_id, description=value)
                if live:
                    progress.refresh()

            show_rich(text)
            self._bar, self._restore = show_rich, lambda: show_rich(old)
            return
        # tqdm: the validation bar exists between on_validation_start and on_validation_end.
        try:
            bar = callback.val_progress_bar
        except Exception:
            return
        if bar is None or not callable(getattr(bar, "set_description_str", None)):
            return
        old_desc = getattr(bar, "desc", "")

        def show_tqdm(value: str) -> None:
            bar.set_description_str(value, refresh=live)

        show_tqdm(text)
        self._bar, self._restore = show_tqdm, lambda: show_tqdm(old_desc)


def cost_line(num_images: int, passes: int, seconds: float, every_n_epochs: int, device: object) -> str:
    """The one line the callback prints after its first run: what explaining costs per epoch.

    Example:
        >>> cost_line(8, 1200, 3.14159, 2, "cpu")  # doctest: +NORMALIZE_WHITESPACE
        'IGOSCallback: explaining 8 probe images took 3.1 s on cpu (150 model passes per image,
        1200 in all), every 2 epochs: about 1.6 s per epoch on average (every_n_epochs sets how often).'
    """
    per_epoch = seconds / every_n_epochs
    per_image = passes / num_images if num_images else 0.0
    often = "every epoch" if every_n_epochs == 1 else f"every {every_n_epochs} epochs"
    return (f"IGOSCallback: explaining {num_images} probe images took {seconds:.1f} s on {device} "
            f"({per_image:.0f} model passes per image, {passes} in all), {often}: about {per_epoch:.1f} s per "
            "epoch on average (every_n_epochs sets how often).")

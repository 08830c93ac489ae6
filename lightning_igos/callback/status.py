"""Show on Lightning's progress bar how far the explanations are, and count the model passes.

:class:`ExplainStatus` is a context manager around one explanation run of the callback. It
counts the images that go through the model (it listens to the evaluation's model runner,
``evaluate(..., on_forward=status.count)``) and, when the trainer shows a progress bar
(Lightning's ``TQDMProgressBar`` or ``RichProgressBar``), turns the validation bar into a bar of
the explaining while it runs:

    igos: explaining 8 probe images with I-GOS:  29%|###      | 320/1112 [00:05<00:12, 64.0 passes/s]

The bar counts passes done out of the total, with its own clock, rate and time left (the
validation batches' bar would sit at 100% while its rate fell); afterwards the validation
bar is put back. The total is known before the first pass, from the configuration
(:func:`~lightning_igos.core.evaluation.planned_passes`): the explainer's gradient passes (for
``igos`` at most ``iterations * ig_steps`` per image, twice for ``igos++``) and the metrics'
passes (``2 * metric_steps - 1`` per image after the shared clean forward).
When every image converges before ``iterations`` the count jumps to the end of the solver's
share. The solver's forward-only line-search trials are not in the count but are in the
time, so the time left (the time per counted pass so far, times the passes left) includes them.
Every line starts with the callback's prefix and names the method the callback runs (``I-GOS``,
``iGOS++``, else the registered explainer's name: :func:`method_label`).

Outside a terminal (a CI log, output sent to a file) the bar is not redrawn while explaining:
a log would get a status line per redraw. The log gets one line when the explaining starts
(:meth:`ExplainStatus.start_line`) and the callback prints one when it ends
(:meth:`ExplainStatus.summary`), both through the progress bar's own ``print``. Without a
progress bar it only counts.

Example:
    >>> from types import SimpleNamespace
    >>> with ExplainStatus(SimpleNamespace(progress_bar_callback=None), num_images=4) as status:
    ...     status.count(4, False); status.count(2, True)
    >>> status.passes, status.passes_per_image
    (6, 1.5)
"""

from __future__ import annotations

import time
from typing import Any

from lightning_igos.callback.lightning_internals import take_over_progress_bar, terminal_output

__all__ = ["ExplainStatus", "clock", "cost_line", "method_label", "progress_bar", "terminal_output"]


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


def method_label(method: str) -> str:
    """The explainer's name as people write it: ``I-GOS``, ``iGOS++``, else the registered name.

    Example:
        >>> method_label("igos"), method_label("igos++"), method_label("integrated_gradients")
        ('I-GOS', 'iGOS++', 'integrated_gradients')
    """
    return {"igos": "I-GOS", "igos++": "iGOS++"}.get(method, method)


class ExplainStatus:
    """Count the images passed through ``module`` and show the run's progress on the trainer's progress bar.

    ``prefix`` (the callback's) leads every line, so two callbacks' lines are told apart.
    Attributes (after the ``with`` block): ``passes`` (images through the model, all
    forwards counted, with or without gradients), ``passes_per_image``, ``seconds``
    (wall time of the block), ``done`` and ``total`` (the counted passes, see the module's
    doc; ``total`` is None without a ``config``).
    """

    INTERVAL_S = 0.25

    def __init__(self, trainer: Any, num_images: int, config: Any = None, prefix: str = "igos") -> None:
        from lightning_igos.core.evaluation import planned_passes

        self.trainer, self.num_images, self.prefix = trainer, num_images, prefix
        self.method = method_label(getattr(config, "method", "igos"))
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

    def lead(self) -> str:
        """What is explained, by whom: the start of every line."""
        return f"{self.prefix}: explaining {self.num_images} probe images with {self.method}"

    def text(self) -> str:
        """The status in words: passes done of the total, time so far and the time left."""
        if self.total is None:
            return f"{self.lead()}, {self.passes} passes"
        elapsed = self.elapsed()
        eta = "--" if self.done == 0 else clock(elapsed / self.done * (self.total - self.done))
        return f"{self.lead()}, {self.done}/{self.total} passes, {clock(elapsed)} elapsed, ETA {eta}"

    def start_line(self) -> str:
        """The line a log gets when the explaining starts (its last bar would otherwise read 100%)."""
        planned = "" if self.total is None else f", {self.total} passes planned"
        return f"{self.lead()}{planned} ..."

    def summary(self, epoch: int) -> str:
        """The one line of an explained epoch, for a log (no terminal)."""
        counted = "" if self.total is None else f", {self.done}/{self.total} passes"
        return (f"{self.prefix} epoch {epoch}: {self.method} explained {self.num_images} probe images in "
                f"{self.seconds:.1f} s{counted} ({self.passes} model passes in all)")

    def on_stage(self, stage: str) -> None:
        """``evaluate``'s stage callback: at ``"scoring"`` the solver's share is done, converged early or not."""
        self.stage = stage
        if stage == "scoring":
            self.done = max(self.done, self.solver_budget)
            self._draw(force=True)

    def __enter__(self) -> ExplainStatus:
        self._started = time.perf_counter()
        try:
            self._show()
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
                self._bar()
            except Exception:
                self._bar = None

    def _show(self) -> None:
        """Turn the validation bar of the trainer's progress bar callback into a bar of the explaining.

        While the probe is explained the bar counts passes done out of the total (its clock, rate
        and time left are those of the explaining, not of the validation batches, and it never
        reads 100% before the end); afterwards the validation bar is put back as it was. On a
        terminal the bar is redrawn; into a log it is not (a log would get a line per redraw):
        the log gets :meth:`start_line` now, and the callback prints :meth:`summary` at the end.
        """
        callback = progress_bar(self.trainer)
        if callback is None:
            return
        live = self._live = terminal_output(callback)
        if not live and callable(getattr(callback, "print", None)):
            callback.print(self.start_line())
        taken = take_over_progress_bar(callback, self.total, live, self._description, lambda: self.done)
        if taken is not None:
            self._bar, self._restore = taken

    def _description(self) -> str:
        # With a total the bar itself shows done/total, the time and the rate; the words say what runs.
        return self.lead() if self.total is not None else self.text()


def cost_line(num_images: int, passes: int, seconds: float, every_n_epochs: int, device: object,
              prefix: str = "igos", method: str = "igos") -> str:
    """The one line the callback prints after its first run: what explaining costs per epoch.

    Example:
        >>> cost_line(8, 1200, 3.14159, 2, "cpu", prefix="igos_pp", method="igos++")  # doctest: +NORMALIZE_WHITESPACE
        'IGOSCallback igos_pp: explaining 8 probe images with iGOS++ took 3.1 s on cpu (150 model passes per
        image, 1200 in all), every 2 epochs: about 1.6 s per epoch on average (every_n_epochs sets how often).'
    """
    per_epoch = seconds / every_n_epochs
    per_image = passes / num_images if num_images else 0.0
    often = "every epoch" if every_n_epochs == 1 else f"every {every_n_epochs} epochs"
    return (f"IGOSCallback {prefix}: explaining {num_images} probe images with {method_label(method)} took "
            f"{seconds:.1f} s on {device} ({per_image:.0f} model passes per image, {passes} in all), {often}: "
            f"about {per_epoch:.1f} s per epoch on average (every_n_epochs sets how often).")

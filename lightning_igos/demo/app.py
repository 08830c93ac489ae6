"""Demo: train a small CNN on generated images and watch its explanations improve.

Trains :class:`~lightning_igos.demo.toy_module.ObjectClassifier` on
:func:`~lightning_igos.demo.synthetic.make_object_images` data with an
:class:`~lightning_igos.callback.IGOSCallback` and a TensorBoard logger,
prints one table row per validation epoch (accuracy and the I-GOS causal
AUCs) and ends with the ``tensorboard`` command that shows the panels.

Run it with ``python examples/train_with_igos.py`` or
``python -m lightning_igos.demo --epochs 5``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_igos.callback import IGOSCallback
from lightning_igos.core.statistics import statistics
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.quiet_logs import lightning_info_hidden

# The solver runs with its defaults (at most 4 iterations of 10 integration steps): the demo shows what users get.
DEMO_IGOS = dict(num_probe=8, metric_steps=50)
# Noisier than the default, so that learning the task takes more than one epoch.
DEMO_NOISE = 0.3
DEFAULT_LOGDIR = "runs/demo"  # `make tensorboard` shows it



def table_columns(callback: IGOSCallback) -> list[tuple[str, str]]:
    """``(header, key in trainer.callback_metrics)``: the validation accuracy, then every statistic with a
    table label that the callback logs (from the statistics registry)."""
    labels = {s.scalar_name: s.label for s in statistics(callback.config, callback.store.boxes is not None)}
    columns = [("val_acc", "val_acc")]
    for name in callback.scalar_names:
        label = labels.get(name.split("/", 1)[1], "")
        if label:
            columns.append((label, name))
    return columns


class EpochTable(pl.Callback):
    """Prints validation accuracy and the IGOS AUCs after each validation epoch.

    Example:
        >>> table = EpochTable([("val_acc", "val_acc"), ("insertion AUC", "igos/insertion_auc")])
        >>> table.rows
        []
    """

    def __init__(self, columns: Sequence[tuple[str, str]]) -> None:
        self.columns = list(columns)
        self.rows: list[dict[str, float]] = []
        self._start = time.perf_counter()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self._start}
        row.update({header: float(metrics[key]) for header, key in self.columns if key in metrics})
        widths = [max(9, len(h)) for h, _ in self.columns]
        if not self.rows:
            headers = [f"{'epoch':>9}", *(f"{h:>{w}}" for (h, _), w in zip(self.columns, widths)), f"{'seconds':>9}"]
            print(" ".join(headers), flush=True)
        self.rows.append(row)
        cells = [f"{row['epoch']:>9d}"]
        cells += [f"{row[h]:>{w}.3f}" if h in row else f"{'-':>{w}}" for (h, _), w in zip(self.columns, widths)]
        cells.append(f"{row['seconds']:>9.1f}")
        print(" ".join(cells), flush=True)


def tensorboard_command(logdir: str) -> str:
    """A shell command that starts TensorBoard on ``logdir``, runnable from the current directory.

    The ``tensorboard`` script of this Python's environment (``.venv/bin/tensorboard`` when run
    from the project root, where ``make`` installs it), else one on ``PATH``, else
    ``python -m tensorboard.main``.

    Example:
        >>> tensorboard_command("runs/demo").endswith("--logdir runs/demo")
        True
    """
    beside = Path(sys.executable).parent / ("tensorboard.exe" if os.name == "nt" else "tensorboard")
    if beside.is_file() and os.access(beside, os.X_OK):
        relative = os.path.relpath(beside)
        shown = str(beside) if relative.startswith("..") else relative
        program = shlex.quote(shown)
    elif shutil.which("tensorboard"):
        program = "tensorboard"
    else:
        program = f"{shlex.quote(sys.executable)} -m tensorboard.main"
    return f"{program} --logdir {shlex.quote(str(logdir))}"


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (default 5)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop training after this many minutes")
    parser.add_argument("--logdir", default=DEFAULT_LOGDIR,
                        help=f"TensorBoard log directory (default {DEFAULT_LOGDIR})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the model (default 0)")
    parser.add_argument("--train-size", type=int, default=1024, help="generated training images (default 1024)")
    parser.add_argument("--val-size", type=int, default=256, help="generated validation images (default 256)")
    args = parser.parse_args(argv)
    for name in ("epochs", "train_size", "val_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.max_minutes is not None and args.max_minutes <= 0:
        parser.error("--max-minutes must be > 0")
    return args


def _quiet_warnings() -> None:
    """Keep the table readable: no dataloader-worker hints (Lightning's info lines are hidden separately)."""
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Train with :class:`IGOSCallback`, print a per-epoch table; returns 0.

    Example (takes a couple of minutes)::

        python -m lightning_igos.demo --epochs 5 --logdir runs/demo
    """
    args = parse_args(argv, prog)
    started = time.perf_counter()
    with warnings.catch_warnings(), lightning_info_hidden():
        _quiet_warnings()
        pl.seed_everything(args.seed, verbose=False)
        train = make_object_images(args.train_size, image_size=64, noise=DEMO_NOISE, seed=args.seed)
        val = make_object_images(args.val_size, image_size=64, noise=DEMO_NOISE, seed=args.seed + 1)
        # The generated task knows where each object is: the probe carries its boxes (the pointing game).
        n = DEMO_IGOS["num_probe"]
        callback = IGOSCallback(probe=(val.images[:n], val.labels[:n], val.boxes[:n]), seed=args.seed,
                                **DEMO_IGOS)
        table = EpochTable(table_columns(callback))
        # No hp_metric: its tag group sorts before igos, and TensorBoard's Scalars tab opens only the first groups.
        logger = TensorBoardLogger(args.logdir, name="igos_demo", default_hp_metric=False)
        trainer = pl.Trainer(
            accelerator="auto",
            devices=1,
            max_epochs=args.epochs,
            max_time=None if args.max_minutes is None else timedelta(minutes=args.max_minutes),
            callbacks=[callback, table],
            logger=logger,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
        )
        print(f"Training on {len(train)} generated 64x64 images, explaining {DEMO_IGOS['num_probe']} "
              f"validation images with I-GOS after each epoch.", flush=True)
        trainer.fit(
            ObjectClassifier(num_classes=4),
            DataLoader(train.dataset(), batch_size=64, shuffle=True),
            DataLoader(val.dataset(), batch_size=128),
        )
    print(f"\nDone in {time.perf_counter() - started:.0f} s. Insertion AUC should rise and deletion AUC fall "
          "as the model learns.")
    print(f"See the explanation panels (then open http://localhost:6006):\n  {tensorboard_command(args.logdir)}")
    if os.environ.get("MAKELEVEL") and args.logdir == DEFAULT_LOGDIR:
        print("or, from the project root: make tensorboard")
    return 0


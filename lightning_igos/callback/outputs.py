"""What :class:`~lightning_igos.callback.IGOSCallback` logs: scalars, panels and PNG files.

* scalars: fresh torchmetrics objects given to ``pl_module.log``, so every logger,
  ``ModelCheckpoint``/``EarlyStopping`` and DDP sync see them;
* panels: one image per probe image (input, heatmap overlay, insertion/deletion
  curves) and a grid of all overlays, written to every TensorBoard logger, or as PNG
  files in a new folder per validation run when there is none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

__all__ = ["error_text", "new_folder", "png_root", "tensorboard_writers"]


def error_text(err: BaseException) -> str:
    """``Type: message`` without a trailing period, to be followed by one."""
    message = " ".join(str(err).split()).rstrip(". ")
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def tensorboard_writers(trainer: Any) -> list[Any]:
    """The experiments of the trainer's loggers that can take images (TensorBoard's SummaryWriter)."""
    writers = []
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if callable(getattr(experiment, "add_image", None)):
            writers.append(experiment)
    return writers


def png_root(trainer: Any, prefix: str) -> tuple[Path, str]:
    """The absolute folder of the PNG panels and, in words, where it comes from."""
    # Not trainer.log_dir: under DDP it is a collective call, and only rank 0 gets here.
    for logger in trainer.loggers:
        log_dir = getattr(logger, "log_dir", None)
        if log_dir:
            return (Path(log_dir) / prefix).resolve(), f"the log_dir of {type(logger).__name__}"
    if not trainer.loggers:
        where = "no logger: the Trainer's default_root_dir, by default the current directory"
    else:
        where = "the Trainer's default_root_dir: no logger has a log_dir"
    return (Path(trainer.default_root_dir) / prefix).resolve(), where


def new_folder(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name_2``, ``_3``, ... if taken: panels are never overwritten."""
    folder, copy = root / name, 1
    while folder.exists():
        copy += 1
        folder = root / f"{name}_{copy}"
    folder.mkdir(parents=True)
    return folder


def write_panels(writers: list[Any], prefix: str, step: int, indices: list[int], panels: list[Tensor],
                 grid: Tensor) -> None:
    """Add the panels (``<prefix>/probe_<i>``) and the grid (``<prefix>/overlays``) to each writer."""
    for writer in writers:
        for index, panel in zip(indices, panels):
            writer.add_image(f"{prefix}/probe_{index}", panel, global_step=step)
        writer.add_image(f"{prefix}/overlays", grid, global_step=step)

"""The names of the PNG files and folders that the callback and ``lightning-igos check --images`` write.

One probe image's panel is ``probe_<i>.png`` (``i``: its index in the probe), the grid of all
overlays ``overlays.png``; the callback puts one validation run's files in a folder named after
the epoch and the step of its scalars (under ``<log_dir>/<prefix>/``, or as an MLflow artifact path).

Example:
    >>> panel_file(3), OVERLAYS_FILE, run_folder(2, 120)
    ('probe_3.png', 'overlays.png', 'epoch_002_step_000120')
"""

from __future__ import annotations

__all__ = ["OVERLAYS_FILE", "panel_file", "run_folder"]

#: The file of the overlay grid of every probe image.
OVERLAYS_FILE = "overlays.png"


def panel_file(index: int) -> str:
    """The file of probe image ``index``'s panel.

    Example:
        >>> panel_file(0)
        'probe_0.png'
    """
    return f"probe_{index}.png"


def run_folder(epoch: int, step: int) -> str:
    """The folder of one validation run's files: its epoch and the step of its scalars, zero-padded to sort.

    Example:
        >>> run_folder(3, 45)
        'epoch_003_step_000045'
    """
    return f"epoch_{epoch:03d}_step_{step:06d}"

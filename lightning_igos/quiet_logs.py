"""Lightning's info lines hidden while a shell of this package runs (the check's table, the demo's table)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

#: Lightning's loggers under each package name (``pytorch_lightning`` and the ``lightning`` namespace).
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric")


@contextlib.contextmanager
def lightning_info_hidden(hide: bool = True) -> Iterator[None]:
    """Lightning's loggers at ``WARNING`` inside the block (when ``hide``), their levels restored after.

    Example:
        >>> with lightning_info_hidden():
        ...     logging.getLogger("pytorch_lightning").level == logging.WARNING
        True
    """
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    if hide:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

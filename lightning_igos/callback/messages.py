"""The callback's warnings and how it words an error in one."""

from __future__ import annotations

__all__ = ["EmptyExplanationWarning", "IGOSWarning", "error_text"]


class IGOSWarning(UserWarning):
    """Warnings of :class:`~lightning_igos.IGOSCallback` (skipped epochs, PNG fallback)."""


class EmptyExplanationWarning(IGOSWarning):
    """Some probe images of an explained epoch have an empty explanation (a mask that never moved,
    a non-finite gradient, a constant or non-finite saliency): one per epoch, with how many and why."""


def error_text(err: BaseException) -> str:
    """``Type: message`` without a trailing period, to be followed by one.

    Example:
        >>> error_text(ValueError("bad value."))
        'ValueError: bad value'
    """
    message = " ".join(str(err).split()).rstrip(". ")
    return f"{type(err).__name__}: {message}" if message else type(err).__name__

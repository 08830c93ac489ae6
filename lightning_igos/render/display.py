"""Images for display: which normalisation to undo, and undoing it to the [0, 1] range.

Example:
    >>> import torch
    >>> unnormalize(torch.zeros(3, 2, 2), mean=0.5, std=0.25).unique()
    tensor([0.5000])
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_igos.render._checks import ChannelStats, _channel_stats, _grey_to_rgb, _image_batch


def unnormalize(images: Tensor, mean: ChannelStats | None = None, std: ChannelStats | None = None,
                range_of: Tensor | None = None) -> Tensor:
    """Bring normalised images back to the [0, 1] display range.

    With ``mean`` and ``std`` (per-channel numbers, a tensor, or one number for
    all channels) this undoes ``transforms.Normalize``: ``x * std + mean``,
    clamped to [0, 1]. Without them each image is min-max rescaled on its own
    (a constant image becomes black); with ``range_of`` (shaped like ``images``) each image
    is rescaled by the range of its image there instead, so e.g. a substrate is shown in the
    colours of the image it came from. Images come back with 3 channels: one
    channel as grey, two channels as their first in grey, four or more (RGBA,
    multispectral) as their first three.

    Args:
        images: (B, C, H, W) or (C, H, W), any C >= 1, any device; ``mean``/``std`` have
            one value per channel (or one for all).
        mean, std: both or neither.
        range_of: the images whose ranges rescale ``images`` when ``mean``/``std`` are not given.

    Returns:
        (B, 3, H, W) or (3, H, W) float32 on the CPU.

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> z = (x - 0.5) / 0.25
        >>> torch.allclose(unnormalize(z, mean=[0.5] * 3, std=[0.25] * 3), x, atol=1e-6)
        True
        >>> unnormalize(torch.randn(1, 8, 8)).shape
        torch.Size([3, 8, 8])
        >>> unnormalize(torch.zeros(1, 2, 2), range_of=torch.tensor([[[-1.0, 1.0], [0.0, 0.0]]])).unique()
        tensor([0.5000])
    """
    x, unbatched = _image_batch(images, "images")
    if (mean is None) != (std is None):
        missing = "std" if std is None else "mean"
        raise ValueError(f"`{missing}` must be given together with `{'mean' if std is None else 'std'}`.")
    if mean is None:
        ref = x
        if range_of is not None:
            ref, _ = _image_batch(range_of, "range_of")
            if tuple(range_of.shape) != tuple(images.shape):
                raise ValueError(f"`range_of` must be shaped like `images` {tuple(images.shape)}, "
                                 f"got {tuple(range_of.shape)}.")
        lo = ref.amin(dim=(1, 2, 3), keepdim=True)
        span = ref.amax(dim=(1, 2, 3), keepdim=True) - lo
        out = (x - lo) / torch.where(span > 0, span, torch.ones_like(span))
    else:
        channels = x.shape[1]
        m = _channel_stats(mean, "mean", channels).view(1, channels, 1, 1)
        s = _channel_stats(std, "std", channels).view(1, channels, 1, 1)
        if (s <= 0).any():
            raise ValueError(f"`std` must be positive, got {s.flatten().tolist()}.")
        out = x * s + m
    out = _grey_to_rgb(out.clamp(0, 1)).contiguous()
    return out[0] if unbatched else out


def display_stats(mean: object, std: object, model: object, channels: int) -> tuple[object, object]:
    """The normalisation to undo for display: ``mean``/``std`` when both are given, else the
    model's ``mean``/``std`` attributes when it has both, else ``(None, None)`` (each image is
    then rescaled to its own range).

    The callback and ``lightning-igos check`` both use this rule. Statistics that do not
    hold one finite number (or one per channel) raise ``ValueError``/``TypeError``.

    Example:
        >>> display_stats(None, None, object(), 3)
        (None, None)
        >>> display_stats((0.5,) * 3, (0.2,) * 3, object(), 3)
        ((0.5, 0.5, 0.5), (0.2, 0.2, 0.2))
    """
    from lightning_igos.core.validation import check_channel_stats

    if mean is None or std is None:
        mean, std = getattr(model, "mean", None), getattr(model, "std", None)
        if mean is None or std is None:
            return None, None
    return check_channel_stats(mean, "mean", channels), check_channel_stats(std, "std", channels, positive=True)

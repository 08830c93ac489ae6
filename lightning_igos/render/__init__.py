"""Turn explanations into images: colormaps, overlays, curve plots and probe panels.

Everything here is torch and torchvision, plus Pillow (a torchvision
dependency) for text and lines. Inputs may live on any device and may carry
gradients; every output is a detached float32 CPU tensor with values in
[0, 1], ready for ``SummaryWriter.add_image`` or :func:`save_png`.

The modules, each imported here:

* :mod:`~lightning_igos.render.display`: :func:`display_stats` and :func:`unnormalize`, the
  images as they are shown;
* :mod:`~lightning_igos.render.heatmap`: :func:`colormap` and :func:`overlay`;
* :mod:`~lightning_igos.render.curves`: :func:`curve_image`, the insertion/deletion plot;
* :mod:`~lightning_igos.render.kept`: :func:`kept_pixels`, what a map claims (its top pixels kept
  over the substrate, a point of the insertion curve), :func:`kept_point` and :func:`insertion_substrate`;
* :mod:`~lightning_igos.render.panels`: :func:`probe_panel`, :func:`explanation_panels`,
  :func:`overlay_grid` and :func:`grid_labels`;
* :mod:`~lightning_igos.render.png`: :func:`to_pil_image`, :func:`png_bytes` and
  :func:`save_png`, the 8-bit encoding.

Example:
    >>> import torch
    >>> from lightning_igos.render import overlay, png_bytes
    >>> png_bytes(overlay(torch.rand(3, 8, 8), torch.rand(1, 2, 2)))[:4]
    b'\\x89PNG'
"""

from __future__ import annotations

from lightning_igos.render.curves import _DELETION_RGB as _DELETION_RGB
from lightning_igos.render.curves import _INSERTION_RGB as _INSERTION_RGB
from lightning_igos.render.curves import curve_image
from lightning_igos.render.display import display_stats, unnormalize
from lightning_igos.render.heatmap import _CONTROL_POINTS as _CONTROL_POINTS
from lightning_igos.render.heatmap import colormap, overlay
from lightning_igos.render.kept import KEPT_FRACTION, insertion_substrate, kept_pixels, kept_point
from lightning_igos.render.panels import MIN_TILE, explanation_panels, grid_labels, overlay_grid, probe_panel
from lightning_igos.render.png import png_bytes, save_png, to_pil_image

__all__ = [
    "KEPT_FRACTION", "MIN_TILE", "colormap", "curve_image", "display_stats", "explanation_panels", "grid_labels",
    "insertion_substrate", "kept_pixels", "kept_point", "overlay", "overlay_grid", "png_bytes", "probe_panel",
    "save_png", "to_pil_image", "unnormalize",
]

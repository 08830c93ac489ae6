"""An :class:`~lightning_igos.core.evaluation.Evaluation` as one self-contained HTML block, for notebooks.

``Evaluation._repr_html_`` calls :func:`evaluation_html`: Jupyter then shows an evaluation as a
table of its statistics per image, with their mean, and one panel per image (the image, its heatmap
and its insertion/deletion curves, as in TensorBoard), every image embedded as a ``data:`` URI.

Example:
    >>> import torch
    >>> from lightning_igos.core.evaluation import evaluate
    >>> from lightning_igos.core.config import IGOSConfig
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    >>> evaluation = evaluate(model, torch.rand(2, 3, 8, 8), "pred", IGOSConfig(iterations=2, metric_steps=4))
    >>> page = evaluation_html(evaluation)
    >>> page.count("<img"), "insertion_auc" in page
    (2, True)
"""

from __future__ import annotations

import base64
import html
from typing import Any

import torch
from torch import Tensor

__all__ = ["evaluation_html", "image_data_uri"]

#: JPEG quality of the photo-like images embedded in HTML.
JPEG_QUALITY = 90


def image_data_uri(image: Tensor, photo: bool = True) -> str:
    """A ``(3, H, W)`` (or grey ``(1, H, W)``) image in [0, 1] as a ``data:`` URI.

    With ``photo`` the smaller of a JPEG (quality :data:`JPEG_QUALITY`, encoded by
    ``torchvision.io.encode_jpeg``) and a PNG: a photograph, or a panel that is mostly one, is
    several times smaller as a JPEG; a flat drawing stays a (smaller, exact) PNG. Without
    ``photo``, always the lossless PNG.

    Example:
        >>> import torch
        >>> image_data_uri(torch.rand(3, 64, 64)).startswith("data:image/jpeg;base64,")
        True
        >>> image_data_uri(torch.zeros(3, 64, 64)).startswith("data:image/png;base64,")
        True
    """
    from lightning_igos.render import png_bytes

    png = png_bytes(image)
    best, kind = png, "png"
    if photo:
        from torchvision.io import encode_jpeg

        pixels = (image.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        jpeg = encode_jpeg(pixels, quality=JPEG_QUALITY).numpy().tobytes()
        if len(jpeg) < len(png):
            best, kind = jpeg, "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(best).decode("ascii")


def _cell(value: float) -> str:
    return "nan" if value != value else f"{value:.4f}"


def evaluation_html(evaluation: Any, images: Tensor | None = None, max_images: int = 16) -> str:
    """The statistics table and the panels of ``evaluation`` as one HTML block (no external files).

    ``images``: the explained images (default: those the evaluation kept, ``evaluation.images``),
    shown min-max rescaled; without any, each panel is the heatmap alone. At most ``max_images``
    panels are drawn (the table has every image).
    """
    from lightning_igos import render

    e = html.escape
    shown_images = images if images is not None else getattr(evaluation, "images", None)
    evaluation = evaluation.cpu()
    stats = {name: values.float() for name, values in evaluation.per_image().items()}
    targets, predictions = evaluation.targets.tolist(), evaluation.predictions.tolist()
    method = getattr(evaluation.config, "method", "igos")
    head = "".join(f"<th>{e(name)}</th>" for name in stats)
    rows = []
    for i, target in enumerate(targets):
        pred = "" if predictions[i] == target else f" (pred {predictions[i]})"
        cells = "".join(f'<td style="text-align:right">{_cell(float(v[i]))}</td>' for v in stats.values())
        rows.append(f"<tr><td>#{i}</td><td>{target}{e(pred)}</td>{cells}</tr>")
    means = "".join(f'<td style="text-align:right"><b>{_cell(float(v.nanmean()))}</b></td>' for v in stats.values())
    rows.append(f"<tr><td><b>mean</b></td><td></td>{means}</tr>")
    table = (f'<table class="lightning-igos-table"><tr><th>image</th><th>class</th>{head}</tr>{"".join(rows)}'
             "</table>")

    count = min(len(evaluation), max_images)
    saliency = evaluation.saliency.float()
    if shown_images is not None:
        images = shown_images.detach().float().cpu()
        shown = render.unnormalize(images)
        substrate = render.unnormalize(render.insertion_substrate(images, evaluation.config), range_of=images)
        panels = render.explanation_panels(shown, saliency, evaluation.curves, evaluation.targets,
                                           evaluation.predictions, list(range(len(evaluation))),
                                           substrate=substrate)[:count]
    else:  # the heatmaps alone, enlarged to at least 128 pixels
        scale = max(1, -(-128 // saliency.shape[-1]))
        maps = torch.nn.functional.interpolate(saliency[:count], scale_factor=scale, mode="nearest")
        panels = list(render.colormap(maps))
    figures = "".join(
        f'<figure style="display:inline-block;margin:4px"><img alt="#{i}" src="{image_data_uri(panel)}">'
        f"<figcaption>#{i}</figcaption></figure>" for i, panel in enumerate(panels))
    more = "" if count == len(evaluation) else f"<p>{len(evaluation) - count} more images in the table.</p>"
    return (f'<div class="lightning-igos"><p><b>{e(method)}</b>: {len(evaluation)} images</p>{table}'
            f"<div>{figures}</div>{more}</div>")

"""Size of the check's HTML report for 8 probe images at 224 px: panels as PNG against JPEG-when-smaller.

Photographs from scikit-image (a bench extra), 8 of them at 224x224, each with a smooth saliency map and
real-looking curves; the page is rendered once with every image as PNG and once as the report does now
(:func:`lightning_igos.render.notebook.image_data_uri`). Prints a table of the sizes.

    python bench/html_size.py
"""

from __future__ import annotations

import base64

import torch
import torch.nn.functional as F
from skimage import data

from lightning_igos import render
from lightning_igos.core.causal import CausalCurves
from lightning_igos.render.notebook import image_data_uri

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "retina", "immunohistochemistry", "cat", "colorwheel"]


def photos(size: int = 224) -> torch.Tensor:
    out = []
    for name in NAMES:
        image = torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1).float() / 255
        out.append(F.interpolate(image[None, :3], size=(size, size), mode="bilinear", antialias=True)[0])
    return torch.stack(out)


def main() -> None:
    torch.manual_seed(0)
    images = photos()
    saliency = F.interpolate(torch.rand(8, 1, 7, 7), size=(28, 28), mode="bilinear")
    steps = torch.linspace(0, 1, 50)
    curves = CausalCurves(insertion=steps.sqrt().expand(8, -1), deletion=(1 - steps).pow(2).expand(8, -1),
                          fractions=steps, insertion_auc=torch.full((8,), 0.66), deletion_auc=torch.full((8,), 0.33),
                          clean_score=torch.ones(8), substrate_score=torch.zeros(8))
    panels = render.explanation_panels(images, saliency, curves, torch.zeros(8, dtype=torch.long), None, list(range(8)))
    grid = render.overlay_grid(images, saliency)
    shown = [*panels, grid]
    png = sum(len("data:image/png;base64,") + len(base64.b64encode(render.png_bytes(p))) for p in shown)
    now = sum(len(image_data_uri(p)) for p in shown)
    kinds = sorted({image_data_uri(p).split(";")[0] for p in shown})
    print("| 8 panels + overlay grid at 224 px | embedded bytes |")
    print("|---|---|")
    print(f"| all PNG (before) | {png / 1e6:.2f} MB |")
    print(f"| JPEG q90 when smaller, else PNG (now: {', '.join(kinds)}) | {now / 1e6:.2f} MB |")
    print(f"| ratio | {png / now:.1f}x smaller |")


if __name__ == "__main__":
    main()

"""Mask resolution against readability and AUC on a real model: which ``mask_size`` for region-level maps.

EfficientNet-Lite0 on the scikit-image photos of ``bench/real_model.py`` (its loaders,
top-1 class as target). ``igos`` runs at its defaults except ``mask_size`` (224 = None, the
full resolution; 112, 56, 28), next to the anchors (integrated gradients, the gradient, a
random map). Every map is scored by :func:`lightning_igos.evaluate` at the default metric
settings twice:

* **pixel** ranking: the map as it is (what the callback and the check report);
* **16x16 block** ranking: the map averaged over 16x16 blocks, blocks ranked by their mean
  (every pixel of a block takes the block's value; the curves' steps stay pixel-exact).

Columns: both AUCs under both rankings, the needed fraction (the smallest share of top
pixels whose insertion gives back half the clean probability, pixel ranking; lower is
better), a speckle measure (**clumped**: the share of the top 10% pixels whose four
neighbours are all in the top 10%; 0 for isolated pixels, near 1 for blobs) and the seconds
per explained image. It writes, under ``--out`` (default ``bench/results/mask_size``):

* ``overlays.png``: one row per setting, the photos side by side;
* ``kept_10.png`` and ``kept_05.png``: the same rows, each photo with only the map's top 10%
  (5%) pixels kept over the substrate (the panels' "what the map claims" view).

    python bench/mask_size.py                      # about 10 minutes on 1 CPU thread
    python bench/mask_size.py --photos chelsea,coffee --sizes 224,28
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model import MEAN, PHOTOS, STD, load_efficientnet_lite0, load_photos  # noqa: E402

from lightning_igos.core.causal import needed_fraction  # noqa: E402
from lightning_igos.core.config import IGOSConfig  # noqa: E402
from lightning_igos.core.evaluation import evaluate  # noqa: E402
from lightning_igos.core.explainers import register_explainer  # noqa: E402
from lightning_igos.render import overlay_grid, save_png, unnormalize  # noqa: E402
from lightning_igos.render.kept import insertion_substrate, kept_pixels  # noqa: E402

ANCHORS = ("integrated_gradients", "gradient", "random")
BLOCK = 16

_given: dict[str, Tensor] = {}


def _given_saliency(request) -> Tensor:
    """An explainer that returns the saliency stored in ``_given`` (to score a re-ranked map with evaluate)."""
    return _given["saliency"].to(request.images.device)


register_explainer("given_saliency", _given_saliency, passes=lambda config: 0, replace=True)


def block_map(saliency: Tensor, block: int = BLOCK) -> Tensor:
    """Each ``block`` x ``block`` block of ``saliency`` (B, 1, H, W) set to its mean (H, W multiples of ``block``)."""
    pooled = F.avg_pool2d(saliency.float(), block)
    return F.interpolate(pooled, size=saliency.shape[-2:], mode="nearest")


def clumped(saliency: Tensor, fraction: float = 0.1) -> Tensor:
    """Per image, the share of the top ``fraction`` pixels whose 4 neighbours are all in the top ``fraction``."""
    b, _, h, w = saliency.shape
    flat = saliency.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    top = torch.zeros_like(flat, dtype=torch.bool)
    count = round(fraction * h * w)
    top.scatter_(1, order[:, :count], True)
    top = top.view(b, 1, h, w)
    padded = F.pad(top.float(), (1, 1, 1, 1))
    neighbours = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2] + padded[..., 1:-1, 2:])
    inner = top & (neighbours == 4)
    return inner.flatten(1).sum(1).float() / top.flatten(1).sum(1).clamp_min(1).float()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", default=",".join(PHOTOS))
    parser.add_argument("--sizes", default="224,112,56,28", help="mask sizes; 224 is None (full resolution)")
    parser.add_argument("--anchors", default=",".join(ANCHORS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "mask_size")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    model = load_efficientnet_lite0()
    photos = tuple(args.photos.split(","))
    images = load_photos(photos)
    with torch.no_grad():
        probs = model(images).softmax(1)
    targets = probs.argmax(1)
    base = IGOSConfig()
    print(f"photos: {', '.join(photos)}; clean p {', '.join(f'{float(p.max()):.2f}' for p in probs)}")
    deletion, insertion = base.curve_substrates()
    print(f"defaults: deletion substrate {deletion!r}, insertion substrate {insertion!r}, solver baseline "
          f"{base.baseline!r}, metric_steps {base.metric_steps}")

    runs: list[tuple[str, IGOSConfig]] = []
    for size in args.sizes.split(","):
        mask_size = None if int(size) == images.shape[-1] else int(size)
        runs.append((f"igos mask_size={size}" + (" (None)" if mask_size is None else ""),
                     replace(base, mask_size=mask_size)))
    runs += [(name, replace(base, method=name)) for name in filter(None, args.anchors.split(","))]

    display = unnormalize(images, MEAN, STD)
    shown_substrate = unnormalize(insertion_substrate(images, base), MEAN, STD)
    rows, maps = [], []
    for label, config in runs:
        start = time.perf_counter()
        pixel = evaluate(model, images, targets, config)
        seconds = (time.perf_counter() - start) / len(photos)
        saliency = pixel.saliency.detach().float()
        _given["saliency"] = block_map(saliency)
        blocks = evaluate(model, images, targets, replace(config, method="given_saliency"))
        curves = pixel.curves
        needed = needed_fraction(curves.insertion, curves.fractions, curves.clean_score)
        row = {
            "label": label,
            "ins": float(curves.insertion_auc.mean()), "del": float(curves.deletion_auc.mean()),
            "ins_b": float(blocks.curves.insertion_auc.mean()), "del_b": float(blocks.curves.deletion_auc.mean()),
            "needed": float(needed.mean()), "needed_each": needed.tolist(),
            "clumped": float(clumped(saliency).mean()), "seconds": seconds,
        }
        rows.append(row)
        maps.append((label, saliency))
        print(f"{label}: ins {row['ins']:.4f} del {row['del']:.4f} | blocks ins {row['ins_b']:.4f} "
              f"del {row['del_b']:.4f} | needed {row['needed']:.3f} ({', '.join(f'{v:.2f}' for v in needed_each(row))})"
              f" | clumped {row['clumped']:.2f} | {seconds:.1f} s/image", flush=True)

    print("\n| map | insertion AUC (pixels) | deletion AUC (pixels) | insertion AUC (16x16 blocks) "
          "| deletion AUC (16x16 blocks) | needed fraction | clumped | s / image |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['ins']:.4f} | {r['del']:.4f} | {r['ins_b']:.4f} | {r['del_b']:.4f} "
              f"| {r['needed']:.3f} | {r['clumped']:.2f} | {r['seconds']:.1f} |")

    args.out.mkdir(parents=True, exist_ok=True)
    n = len(photos)
    shown = display.repeat(len(maps), 1, 1, 1)
    labels = [f"{label.split(' (')[0].replace('igos ', '')}: {photo}" for label, _ in maps for photo in photos]
    saliency_all = torch.cat([s for _, s in maps])
    save_small(overlay_grid(shown, saliency_all, nrow=n, labels=labels), args.out / "overlays.png")
    for fraction, name in ((0.1, "kept_10.png"), (0.05, "kept_05.png")):
        kept = kept_pixels(shown, saliency_all, shown_substrate.repeat(len(maps), 1, 1, 1), fraction=fraction)
        save_small(overlay_grid(kept, torch.zeros(len(kept), 1, 1, 1), nrow=n, alpha=0.0, labels=labels),
                   args.out / name)
    print(f"\nwrote {args.out}/overlays.png, kept_10.png and kept_05.png")


def save_small(image: Tensor, path: Path) -> None:
    """``image`` as a 256-colour PNG (a quarter of the 24-bit file; these grids go into the repository)."""
    save_png(image, path)
    Image.open(path).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


def needed_each(row: dict) -> list[float]:
    return row["needed_each"]


if __name__ == "__main__":
    main()

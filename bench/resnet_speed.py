"""Seconds to explain and score 16 images with torchvision's ResNet-50 at 224x224 (speed only).

The model has random weights (``resnet50(weights=None)``, seed 0, the last layer
scaled by 0.01 as in ``memory.py`` so the softmax does not saturate). Each row runs
``igos(model, images, targets)`` at the solver's defaults, then
``causal_curves(model, images, ex.saliency, targets)`` at its defaults, on the same
16 generated images (``make_object_images``, seed 1), each explained for the model's
top-1 class. Every mode is run once untimed (warm-up: kernels, cuDNN plans, the
allocator), then ``--repeats`` times timed with the device synchronised around each
timer; the table shows the median.

Modes:

* ``fp32``: float32 throughout (cuDNN's TF32 setting left as PyTorch has it);
* ``bf16``: ``igos(..., autocast_dtype=torch.bfloat16)``, and ``causal_curves`` inside
  ``torch.autocast(dtype=torch.bfloat16)``;
* ``bf16-cl``: as ``bf16`` with the model converted to ``channels_last`` (the solver
  then gives it channels-last inputs).

Columns: seconds for the images (solver, curves, both), model images pushed per
explained image (solver + curves), images per second, peak GPU memory
(``torch.cuda.max_memory_allocated``, over the run, weights included), and whether the
whole took under ``--target-s`` (1 s by default, the goal on an H200).

    python bench/resnet_speed.py --device cuda
    python bench/resnet_speed.py --device cpu --quick      # dry run of the code path, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torchvision.models import resnet50

from lightning_igos import causal_curves, igos
from lightning_igos.core.runtime import default_max_batch_size
from lightning_igos.demo.synthetic import make_object_images

MODES = ("fp32", "bf16", "bf16-cl")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_model(device: torch.device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    with torch.no_grad():
        model.fc.weight.mul_(0.01)
        model.fc.bias.zero_()
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def run_mode(mode: str, images: torch.Tensor, solver: dict, curves: dict, repeats: int) -> dict:
    device = images.device
    model = build_model(device, channels_last=mode.endswith("-cl"))
    dtype = torch.bfloat16 if mode.startswith("bf16") else None
    with torch.no_grad():
        targets = model(images).argmax(1)

    def metric_context():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

    def once() -> tuple[float, float, object, object]:
        sync(device)
        start = time.perf_counter()
        ex = igos(model, images, targets, autocast_dtype=dtype, **solver)
        sync(device)
        middle = time.perf_counter()
        with metric_context():
            cc = causal_curves(model, images, ex.saliency, targets, **curves)
        sync(device)
        return middle - start, time.perf_counter() - middle, ex, cc

    once()  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [once() for _ in range(repeats)]
    solver_s = statistics.median(r[0] for r in runs)
    curves_s = statistics.median(r[1] for r in runs)
    _, _, ex, cc = runs[-1]
    n = images.shape[0]
    curve_points = cc.insertion.shape[1]
    # causal_curves pushes the clean image and the substrate once each, and every inner point of both curves.
    curve_passes = 2 + 2 * (curve_points - 2)
    finite = bool(torch.isfinite(cc.insertion_auc).all() and torch.isfinite(cc.deletion_auc).all()
                  and torch.isfinite(ex.saliency).all())
    return {
        "mode": mode,
        "solver_s": solver_s,
        "curves_s": curves_s,
        "total_s": solver_s + curves_s,
        "solver_passes": ex.passes_per_image,
        "curve_passes": curve_passes,
        "images_per_s": n / (solver_s + curves_s),
        "peak_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan"),
        "insertion": float(cc.insertion_auc.mean()),
        "deletion": float(cc.deletion_auc.mean()),
        "empty": int(ex.empty.sum()) if ex.empty is not None else 0,
        "converged": int(ex.converged.sum()),
        "finite": finite,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {MODES}")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per mode after the warm-up (median)")
    parser.add_argument("--iterations", type=int, default=None, help="solver iterations (default: the solver's)")
    parser.add_argument("--ig-steps", type=int, default=None, help="integration steps (default: the solver's)")
    parser.add_argument("--metric-steps", type=int, default=None, help="curve steps (default: causal_curves')")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--target-s", type=float, default=1.0, help="goal for the whole run on the images")
    parser.add_argument("--quick", action="store_true",
                        help="dry run: 2 images at 32x32, 2 iterations, 4 integration steps, 10 curve steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.size = min(args.images, 2), min(args.size, 32)
        args.iterations = args.iterations or 2
        args.ig_steps = args.ig_steps or 4
        args.metric_steps = args.metric_steps or 10
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {MODES}")

    solver = {k: v for k, v in {"iterations": args.iterations, "ig_steps": args.ig_steps}.items() if v is not None}
    curves = {"steps": args.metric_steps} if args.metric_steps is not None else {}
    images = make_object_images(args.images, image_size=args.size, seed=1).images.to(device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"ResNet-50 (random weights) at {args.size}x{args.size}, {args.images} images, on {name}; torch "
          f"{torch.__version__}; solver options {solver or 'defaults'}, curve options {curves or 'defaults'}, "
          f"max_batch_size default {default_max_batch_size(device)}; cudnn.allow_tf32 "
          f"{torch.backends.cudnn.allow_tf32}, cudnn.benchmark {torch.backends.cudnn.benchmark}; "
          f"median of {args.repeats} timed run(s) after one warm-up\n")
    header = ("| mode | solver s | curves s | total s | passes / image (solver + curves) | images / s "
              f"| peak GPU MB | under {args.target_s:g} s | insertion | deletion | converged | empty |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    failed = False
    for mode in modes:
        row = run_mode(mode, images, solver, curves, args.repeats)
        failed |= not row["finite"]
        print(f"| {row['mode']} | {row['solver_s']:.3f} | {row['curves_s']:.3f} | {row['total_s']:.3f} "
              f"| {row['solver_passes'] + row['curve_passes']:.1f} ({row['solver_passes']:.1f} + "
              f"{row['curve_passes']}) | {row['images_per_s']:.1f} | {row['peak_mb']:.0f} "
              f"| {'yes' if row['total_s'] < args.target_s else 'no'} | {row['insertion']:.3f} "
              f"| {row['deletion']:.3f} | {row['converged']}/{args.images} | {row['empty']} |"
              + ("" if row["finite"] else " NON-FINITE"), flush=True)
        del row
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print("\nAUCs of random weights mean nothing; they are shown to prove the run finished with finite numbers. "
          "'empty' counts images whose mask never moved (then the solver's line search did little work).")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

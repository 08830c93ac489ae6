"""Cost per image of one forward+backward (to the input) at several batch sizes.

The solver's default ``max_batch_size`` per device is chosen from this table:
bigger batches are not always faster (on a CPU they fall out of cache).

    python bench/batch_size.py [--device cuda] [--sizes 1,8,20,32,64,128]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_models import MODELS, load_model
from torch import nn


def ms_per_image(model: nn.Module, batch: int, shape: tuple[int, ...], device: torch.device, repeats: int) -> float:
    x = torch.randn(batch, *shape, device=device, requires_grad=True)
    torch.autograd.grad(model(x).logsumexp(1).sum(), x)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (repeats * batch) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1,8,20,32,64,128")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=256, help="images pushed per measurement")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"device {device}, {args.threads} threads: ms per image, forward + backward to the input")
    print("| model | image | " + " | ".join(f"batch {s}" for s in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name in MODELS:
        model, size = load_model(name)
        model = model.to(device)
        cells = [ms_per_image(model, s, (3, size, size), device, max(1, args.images // s)) for s in sizes]
        print(f"| {name} | {size} | " + " | ".join(f"{c:.2f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()

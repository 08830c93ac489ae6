"""Cost per image of one forward+backward (to the input) at several batch sizes.

The solver's default ``max_batch_size`` per device is chosen from this table:
bigger batches are not always faster (on a CPU they fall out of cache).
``resnet50`` is torchvision's ResNet-50 at 224x224 with random weights (the model the
CUDA default is sized for); the others are the briefly trained models of
``bench_models.py``.

    python bench/batch_size.py [--device cuda] [--sizes 1,8,20,32,64,128]
    python bench/batch_size.py --device cuda --models resnet50 --autocast bf16 --sizes 8,32,64,128,256
    python bench/batch_size.py --quick      # dry run of the code path: tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
from bench_models import MODELS, load_model
from torch import nn
from torchvision.models import resnet50

AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def load(name: str, resnet50_size: int) -> tuple[nn.Module, int]:
    if name != "resnet50":
        return load_model(name)
    torch.manual_seed(0)
    model = resnet50(weights=None).eval()
    with torch.no_grad():  # small logits: no saturated softmax, no denormals on the CPU (as in memory.py)
        model.fc.weight.mul_(0.01)
        model.fc.bias.zero_()
    return model, resnet50_size


def ms_per_image(model: nn.Module, batch: int, shape: tuple[int, ...], device: torch.device, repeats: int,
                 dtype: torch.dtype | None) -> float:
    x = torch.randn(batch, *shape, device=device, requires_grad=True)

    def step() -> None:
        context = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with context:
            out = model(x)
        torch.autograd.grad(out.float().logsumexp(1).sum(), x)

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / (repeats * batch) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="1,8,20,32,64,128")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {[*MODELS, 'resnet50']}")
    parser.add_argument("--autocast", default="none", choices=sorted(AUTOCAST), help="forward under autocast")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=256, help="images pushed per measurement")
    parser.add_argument("--resnet50-size", type=int, default=224)
    parser.add_argument("--quick", action="store_true", help="dry run: batches 2 and 4, 4 images, resnet50 at 32")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.images, args.resnet50_size = "2,4", 4, 32
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    names = [m for m in args.models.split(",") if m]
    print(f"device {device}, {args.threads} threads, autocast {args.autocast}: ms per image, forward + backward "
          f"to the input")
    print("| model | image | " + " | ".join(f"batch {s}" for s in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    for name in names:
        model, size = load(name, args.resnet50_size)
        model = model.to(device)
        cells = []
        for s in sizes:
            try:
                ms = ms_per_image(model, s, (3, size, size), device, max(1, args.images // s), AUTOCAST[args.autocast])
                cells.append(f"{ms:.2f}")
            except torch.cuda.OutOfMemoryError:
                cells.append("OOM")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        print(f"| {name} | {size} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

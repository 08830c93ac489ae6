"""What choosing the probe costs at the first validation epoch of ``IGOSCallback``.

A captured probe is chosen among the first ``probe_pool`` validation samples (by default
``max(8 * num_probe, 256)``): the callback reads their labels and keeps a CPU copy of the
images it has chosen so far. The validation epoch reads those batches anyway; what the
callback adds is the time of its ``on_validation_batch_end`` work, measured here on an
``ImageFolder``-like loader sorted by class (images made on the fly, as a loader decodes
them), against the time the loader itself takes for the whole epoch.

Rows: ``first, pool = num_probe`` reads only the first ``num_probe`` samples (the rule
before the pool existed); ``first`` (labels read up to the pool for the one-class warning)
and ``balanced`` (the default rule) read the pool; ``--pools`` adds pool sizes.

    python bench/probe_selection.py [--device cuda] [--sizes 32,224] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, Dataset

from lightning_igos.callback.probe_state import ProbeStore, default_probe_pool


class SortedImages(Dataset):
    """``classes * per_class`` images of ``3 x size x size``, sorted by class (like an ``ImageFolder``)."""

    def __init__(self, classes: int, per_class: int, size: int) -> None:
        self.classes, self.per_class, self.size = classes, per_class, size

    def __len__(self) -> int:
        return self.classes * self.per_class

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        generator = torch.Generator().manual_seed(index)
        return torch.rand(3, self.size, self.size, generator=generator), index // self.per_class


def measure(loader: DataLoader, device: torch.device, num_probe: int, selection: str, pool: int) -> dict:
    store = ProbeStore(None, None, num_probe=num_probe, target="label", batch_to_probe=None, on_error="raise",
                       selection=selection, pool=pool)
    loading = capture = 0.0
    read = 0
    start = time.perf_counter()
    for images, labels in loader:
        batch = (images.to(device), labels.to(device))
        if device.type == "cuda":
            torch.cuda.synchronize()
        loaded = time.perf_counter()
        loading += loaded - start
        store.capture(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        capture += start - loaded
        read += len(images)
    if store.capture_error is not None:
        raise store.capture_error
    chosen = store._chosen()
    return {"loading": loading, "capture": capture, "read": min(read, pool),
            "classes": len(set(chosen[1].tolist())), "kept": len(chosen[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="32,224", help="image sizes (comma separated)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-probe", type=int, default=8)
    parser.add_argument("--pools", default="256,default", help="probe_pool values ('default': the callback's)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="a dry run of the code path: tiny sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [16] if args.quick else [int(s) for s in args.sizes.split(",")]
    per_class = 20 if args.quick else args.per_class
    repeats = 1 if args.quick else args.repeats
    pool = default_probe_pool(args.num_probe)
    print(f"{args.classes} classes x {per_class} images sorted by class, batch {args.batch_size}, "
          f"num_probe={args.num_probe}, default probe_pool={pool}, device {device}, "
          f"{torch.get_num_threads()} threads")
    print()
    print("| image | rule | samples read | classes in probe | loader s (epoch) | callback s | callback / loader |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        loader = DataLoader(SortedImages(args.classes, per_class, size), batch_size=args.batch_size, shuffle=False)
        pools = sorted({pool if p == "default" else int(p) for p in args.pools.split(",")})
        rules = [("first, pool = num_probe", "first", args.num_probe), (f"first, pool {pool}", "first", pool)]
        rules += [(f"balanced, pool {p}" + (" (default)" if p == pool else ""), "balanced", p) for p in pools]
        for name, selection, rule_pool in rules:
            runs = [measure(loader, device, args.num_probe, selection, rule_pool) for _ in range(repeats)]
            best = min(runs, key=lambda r: r["capture"])
            loading = min(r["loading"] for r in runs)
            print(f"| {size}x{size} | {name} | {best['read']} | {best['classes']} | {loading:.3f} | "
                  f"{best['capture']:.4f} | {best['capture'] / loading:.1%} |")


if __name__ == "__main__":
    main()

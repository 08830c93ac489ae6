"""Speed and memory of the I-GOS solver and the causal metrics, against raw model passes.

For each model and batch size it records every forward the solver makes (batch size,
with or without backward), then replays the same passes on the raw probe images in
the same process: the ratio of the two times is the overhead of everything around
the model passes, the median over adjacent solver/replay pairs. Peak memory is
torch.cuda.max_memory_allocated on a GPU, and on the CPU the growth of the process's
resident memory during the call, sampled every 2 ms
(each configuration runs in a fresh subprocess so the measurements do not mix).

    python bench/solver.py                  # CPU, small CNN and ResNet-18
    python bench/solver.py --device cuda    # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch
from bench_models import load_model
from torch import Tensor, nn

from lightning_igos import causal_curves, igos
from lightning_igos.demo.synthetic import make_object_images


class PassRecorder(nn.Module):
    """Wraps a model and records (batch size, gradient enabled) of each forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append((x.shape[0], torch.is_grad_enabled() and x.requires_grad))
        return self.model(x)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def replay(model: nn.Module, calls: list[tuple[int, bool]], images: Tensor, device: torch.device) -> float:
    """Time the same passes on the raw probe images: forward (+ backward to the input where recorded)."""
    sync(device)
    start = time.perf_counter()
    for n, backward in calls:
        x = images.repeat((n + len(images) - 1) // len(images), 1, 1, 1)[:n]
        if backward:
            x.requires_grad_(True)
            out = model(x)
            torch.autograd.grad(out.logsumexp(1).sum(), x)
        else:
            with torch.no_grad():
                model(x)
    sync(device)
    return time.perf_counter() - start


class PeakRSS:
    """Samples the process's resident memory in a thread; ``peak_mb`` is the growth over the start."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page_mb

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mb(self) -> float:
        return self.peak - self.start


def measure(name: str, batch: int, device: torch.device, what: str, iterations: int,
            max_batch_size: int | None, repeats: int) -> dict:
    model, size = load_model(name)
    model = model.to(device)
    data = make_object_images(batch, image_size=size, seed=1)
    images, targets = data.images.to(device), data.labels.to(device)
    recorder = PassRecorder(model)
    # Warm up kernels and allocator so neither side pays first-call costs.
    igos(recorder, images[:1], targets[:1], iterations=1, ig_steps=2)
    replay(model, [(batch, True), (batch, False)], images, device)
    recorder.calls.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cap = max_batch_size  # None: the library's default cap for the device
    saliency = torch.rand(batch, 1, size, size, device=device)

    stats: dict[str, float] = {}

    def run() -> float:
        recorder.calls.clear()
        sync(device)
        start = time.perf_counter()
        if what == "igos":
            stats.update(igos(recorder, images, targets, iterations=iterations, max_batch_size=cap).mask_stats())
        else:
            causal_curves(recorder, images, saliency, targets, steps=50, max_batch_size=cap)
        sync(device)
        return time.perf_counter() - start

    # The first run measures memory (its sampler thread competes for the cores) and is
    # not timed. Then `repeats` adjacent pairs of solver and replay, in alternating
    # order so a drift of the machine's speed cancels: the overhead is the median of
    # the pairs' ratios, and their range shows how far to trust it.
    with PeakRSS() as rss:
        run()
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss.peak_mb
    ratios, times = [], []
    for i in range(repeats):
        if i % 2 == 0:
            elapsed = run()
            raw = replay(model, recorder.calls, images, device)
        else:
            raw = replay(model, recorder.calls, images, device)
            elapsed = run()
        ratios.append(elapsed / raw)
        times.append(elapsed)
    pushed = sum(n for n, _ in recorder.calls)
    return {
        "what": what, "model": name, "batch": batch, "s_per_image": statistics.median(times) / batch,
        "passes_per_image": pushed / batch, "overhead": statistics.median(ratios),
        "range": f"{min(ratios):.2f}-{max(ratios):.2f}", "peak_mb": memory,
        "mask": f"{stats['mask_mean']:.3f} / {stats['mask_min']:.3f}" if stats else "-",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--models", default="small-cnn,resnet18")
    parser.add_argument("--iterations", type=int, default=3, help="solver iterations (cost is linear in it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5,
                        help="adjacent solver/replay pairs; the median of their ratios counts")
    parser.add_argument("--max-batch-size", type=int, default=None, help="images per forward (default: per device)")
    parser.add_argument("--what", default="igos,causal", help="igos, causal or both")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # Subnormal floats make CPU kernels several times slower depending on the data, and the
    # solver's blurred, masked inputs produce different amounts of them than the raw
    # replay inputs: flushing them to zero makes both sides cost what their shapes cost.
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    if args.worker:
        what, name, batch = args.worker.split(":")
        print(json.dumps(measure(name, int(batch), device, what, args.iterations, args.max_batch_size, args.repeats)))
        return
    print(f"device {device}, {args.threads} threads, torch {torch.__version__}, solver iterations "
          f"{args.iterations}, max_batch_size {args.max_batch_size or 'default'}, median of {args.repeats} pairs, "
          f"subnormals flushed")
    header = (f"| {'what':6} | {'model':9} | batch | s / image | passes / image | overhead | pair range | peak MB "
              f"| mask mean / min |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name in args.models.split(","):
        load_model(name)  # train and cache once, before the workers start
    for what in args.what.split(","):
        for name in args.models.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                cmd = [sys.executable, __file__, "--device", args.device, "--threads", str(args.threads),
                       "--iterations", str(args.iterations), "--repeats", str(args.repeats),
                       "--worker", f"{what}:{name}:{batch}"]
                if args.max_batch_size:
                    cmd += ["--max-batch-size", str(args.max_batch_size)]
                row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                print(f"| {row['what']:6} | {row['model']:9} | {row['batch']:5} | {row['s_per_image']:9.3f} | "
                      f"{row['passes_per_image']:14.1f} | {row['overhead']:8.3f} | {row['range']:>10} "
                      f"| {row['peak_mb']:7.0f} "
                      f"| {row['mask']:>15} |",
                      flush=True)


if __name__ == "__main__":
    main()

"""Peak activation memory of the I-GOS solver: linear in ``max_batch_size``, flat in the probe size.

Memory is the growth of live tensor memory over what existed before the call
(parameters, inputs), at its peak, in MB (2**20 bytes). Two measures are taken in
the same run:

* **tensors MB**: a ``TorchDispatchMode`` sees the output of every aten op (forward,
  and backward too: on the CPU the autograd engine runs the backward on the calling
  thread, under the same mode). Each output's untyped storage is counted once (views
  and in-place results share it; the storage of an op's input is never counted, so
  in-place work on tensors from before the call is not either) and a
  ``weakref.finalize`` on the storage subtracts it when it is freed (PyTorch keeps
  a storage's Python object alive as long as the storage). What it cannot see are
  buffers a kernel allocates and frees inside one op (convolution workspaces).
* **allocator MB**: on the CPU, the allocation and free events of PyTorch's CPU
  allocator recorded by ``torch.profiler`` (``profile_memory=True``) summed in time
  order; this includes the kernels' own buffers. On a GPU,
  ``torch.cuda.max_memory_allocated`` minus the allocation at the start.

Per-image figures use the allocator measure. On the CPU the two agree to the byte
on a plain conv net; on ResNets the allocator shows about 9 MB more, a kernel buffer
that stops growing past batch 8. A tracker check on CUDA (the backward runs on the
engine's device thread, which inherits the mode) has not been run.

The first table checks the two against each other on one forward + backward (to
the input) at batch 1 and 8: activations scale with the batch. The second runs
``igos`` (1 iteration, 20 integration steps) with several ``max_batch_size`` caps and
probe sizes; its largest forward is not always the cap: with ``cap >= ig_steps`` a
forward holds whole images' paths, ``cap // ig_steps * ig_steps`` points. The third
measures ResNet-50 at 224x224 (random weights, fp32) on the pass the solver makes per
chunk, fits peak = fixed + per-image x batch, runs ``igos`` on 16 images when the
estimated time is under ``--igos-budget-s`` (otherwise it extrapolates, and says so,
and checks the solver's own overhead on one image) and checks the library's default
caps against 8 GiB of activations. The profiler logs two lines to stderr per
measurement.

    python bench/memory.py                      # CPU, 2 threads
    python bench/memory.py --device cuda        # on a GPU machine
    python bench/memory.py --skip-resnet50      # only the small models
    python bench/memory.py --models ''          # only ResNet-50
    python bench/memory.py --quick              # dry run of the code path: small sizes, no resnet18
"""

from __future__ import annotations

import argparse
import math
import time
import weakref
from collections.abc import Callable

import torch
from bench_models import load_model
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torchvision.models import resnet50

from lightning_igos import igos
from lightning_igos.core.runtime import default_max_batch_size
from lightning_igos.demo.synthetic import make_object_images

MB = 2**20
BUDGET_MB = 8 * 1024  # 8 GiB of activations


class LiveTensorMemory(TorchDispatchMode):
    """Current and peak bytes of the tensor storages created by ops while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.current = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}  # storage address -> bytes counted

    def _free(self, key: int) -> None:
        self.current -= self._sizes.pop(key, 0)

    def _track(self, storage: torch.UntypedStorage) -> None:
        key, size = storage._cdata, storage.nbytes()
        counted = self._sizes.get(key)
        if counted is None:
            self._sizes[key] = size
            weakref.finalize(storage, self._free, key)
            self.current += size
        elif counted != size:  # resized in place (out= variants)
            self._sizes[key] = size
            self.current += size - counted
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            # An op's output on one of its inputs' storage (views, in-place ops) is new
            # memory only if that storage was itself created under the mode.
            if storage.nbytes() and (storage._cdata not in inputs or storage._cdata in self._sizes):
                self._track(storage)
        return out


def _cpu_allocator_peak(prof: torch.profiler.profile) -> int:
    """Peak of the running sum of the CPU allocator's events recorded by the profiler."""
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU]
    current = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        current += e.nbytes()
        peak = max(peak, current)
    return peak


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float, float]:
    """(tensors MB, allocator MB, seconds with the instruments on) of ``fn()``: peak growth over the start."""
    t0 = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with LiveTensorMemory() as live:
            fn()
        torch.cuda.synchronize(device)
        allocator = torch.cuda.max_memory_allocated(device) - start
    else:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            with LiveTensorMemory() as live:
                fn()
        allocator = _cpu_allocator_peak(prof)
    return live.peak / MB, allocator / MB, time.perf_counter() - t0


def timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def input_gradient_pass(model: nn.Module, images: Tensor) -> Callable[[], None]:
    """What the solver does per chunk: forward, softmax score, gradient to the input."""

    def run() -> None:
        x = images.detach().requires_grad_(True)
        torch.autograd.grad(model(x).softmax(1)[:, 0].sum(), x)

    return run


class LargestForward:
    """Forward pre-hook recording the largest batch pushed with gradient through the model."""

    def __init__(self, model: nn.Module) -> None:
        self.largest = 0
        self.handle = model.register_forward_pre_hook(self)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and args[0].requires_grad:
            self.largest = max(self.largest, args[0].shape[0])


def table_header(columns: list[str], text_first: bool = True) -> list[str]:
    """Print a markdown header; a text first column is left-aligned and at least 9 wide (model names)."""
    if text_first:
        columns = [columns[0].ljust(9)] + columns[1:]
    print("| " + " | ".join(columns) + " |")
    print("|" + "|".join("-" * (len(c) + 2) for c in columns) + "|")
    return columns


def table_row(cells: list[object], columns: list[str]) -> None:
    aligned = [f"{c:<{len(h)}}" if isinstance(c, str) and i == 0 else f"{c:>{len(h)}}"
               for i, (c, h) in enumerate(zip(cells, columns))]
    print("| " + " | ".join(aligned) + " |", flush=True)


def tracker_check(device: torch.device, models: list[str]) -> None:
    print("\n### Tracker check: one forward + backward to the input\n")
    columns = ["model", "image", "batch", "tensors MB", "allocator MB", "tensors / batch 1"]
    columns = table_header(columns)
    for name in models:
        model, size = load_model(name)
        model = model.to(device)
        data = make_object_images(8, image_size=size, seed=1).images.to(device)
        input_gradient_pass(model, data[:1])()  # warm-up
        base = None
        for batch in (1, 8):
            tensors, allocator, _ = measure(input_gradient_pass(model, data[:batch]), device)
            base = base or tensors
            table_row([name, size, batch, f"{tensors:.2f}", f"{allocator:.2f}", f"{tensors / base:.2f}"], columns)


def solver_table(device: torch.device, models: list[str]) -> None:
    print("\n### igos (1 iteration, ig_steps 20): peak by probe size B and max_batch_size\n")
    columns = ["model", "image", "probe B", "max_batch_size", "largest forward", "tensors MB", "allocator MB",
               "MB per batch image", "MB per forward image"]
    columns = table_header(columns)
    runs = [(1, 32), (8, 8), (8, 16), (8, 32), (8, 64), (32, 32)]
    for name in models:
        model, size = load_model(name)
        model = model.to(device)
        data = make_object_images(max(b for b, _ in runs), image_size=size, seed=1)
        images, targets = data.images.to(device), data.labels.to(device)
        igos(model, images[:1], targets[:1], iterations=1, ig_steps=2)  # warm-up
        for batch, cap in runs:
            hook = LargestForward(model)
            tensors, allocator, _ = measure(
                lambda: igos(model, images[:batch], targets[:batch], iterations=1, ig_steps=20,  # noqa: B023
                             max_batch_size=cap), device)  # noqa: B023
            hook.handle.remove()
            table_row([name, size, batch, cap, hook.largest, f"{tensors:.1f}", f"{allocator:.1f}",
                       f"{allocator / cap:.2f}", f"{allocator / hook.largest:.2f}"], columns)


def largest_forward(cap: int, steps: int) -> int:
    """Images in the solver's largest forward + backward: whole images' paths, or ``cap`` steps of one."""
    return cap if cap < steps else cap // steps * steps


def resnet50_table(device: torch.device, igos_budget_s: float, size: int = 224) -> None:
    print(f"\n### ResNet-50 at {size}x{size}, fp32, random weights: one forward + backward to the input\n")
    torch.manual_seed(0)
    model = resnet50(num_classes=1000).eval()
    # Random weights with eval-mode batch norm give logits of +-100: the softmax then sits in
    # float denormals, which slow the backward on x86 several fold. Smaller logits change no shape.
    with torch.no_grad():
        model.fc.weight.mul_(0.01)
        model.fc.bias.zero_()
    model = model.to(device)
    images = torch.randn(16, 3, size, size, device=device)
    input_gradient_pass(model, images[:1])()  # warm-up
    columns = ["batch", "tensors MB", "allocator MB", "MB per image", "seconds (not profiled)"]
    columns = table_header(columns, text_first=False)
    points = []
    for batch in (1, 2, 4):
        run = input_gradient_pass(model, images[:batch])
        tensors, allocator, _ = measure(run, device)
        seconds = timed(run, device)
        points.append((batch, allocator, seconds))
        table_row([batch, f"{tensors:.1f}", f"{allocator:.1f}", f"{allocator / batch:.1f}", f"{seconds:.2f}"],
                  columns)
    (b0, m0, _), (b1, m1, s1) = points[0], points[-1]
    slope = (m1 - m0) / (b1 - b0)
    fixed = m0 - slope * b0
    fits = math.floor((BUDGET_MB - fixed) / slope)
    print(f"\nFit (allocator MB, batch 1 and 4): {fixed:.1f} MB + {slope:.1f} MB per image; "
          f"at most {fits} images per forward + backward fit in {BUDGET_MB} MB (8 GiB).")

    steps, probe = 20, 16
    cap = default_max_batch_size(device)
    seconds_per_image = s1 / b1

    def run_igos(probe: int, steps: int, cap: int, label: str) -> None:
        targets = torch.randint(0, 1000, (probe,), device=device)
        hook = LargestForward(model)
        tensors, allocator, seconds = measure(
            lambda: igos(model, images[:probe], targets, iterations=1, ig_steps=steps, max_batch_size=cap), device)
        hook.handle.remove()
        print(f"\n{label}: igos on {probe} image(s), 1 iteration, ig_steps {steps}, max_batch_size {cap} "
              f"(largest forward {hook.largest}): {tensors:.0f} tensors MB, {allocator:.0f} allocator MB, "
              f"{seconds:.0f} s; the single-pass fit predicts {fixed + slope * hook.largest:.0f} MB.")

    # Images pushed: integration points plus the validation, objective and a few line-search forwards.
    estimate = probe * (steps + 4) * seconds_per_image
    if estimate <= igos_budget_s:
        run_igos(probe, steps, cap, "Measured")
    else:
        n = largest_forward(cap, steps)
        print(f"\nigos on {probe} images NOT run (estimated {estimate:.0f} s > {igos_budget_s:.0f} s on this "
              f"machine). EXTRAPOLATED from the single-pass fit: max_batch_size {cap} pushes at most {n} images "
              f"per forward + backward: {fixed + slope * n:.0f} MB.")
        if (4 + 4) * seconds_per_image <= igos_budget_s:
            run_igos(1, 4, 4, f"Reduced check of the solver's own overhead at {size}x{size}")

    print(f"\nLibrary defaults (largest forward with ig_steps {steps}), extrapolated from the fit above:\n")
    columns = ["device", "default max_batch_size", "largest forward", "predicted peak MB", "fits in 8 GiB"]
    columns = table_header(columns)
    for name in ("cpu", "cuda"):
        default = default_max_batch_size(torch.device(name))
        n = largest_forward(default, steps)
        peak = fixed + slope * n
        table_row([name, default, n, f"{peak:.0f}", "yes" if peak <= BUDGET_MB else "NO"], columns)
    print(f"\nLargest max_batch_size under 8 GiB: {fits} (largest forward with ig_steps {steps}: "
          f"{largest_forward(fits, steps)}).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--models", default="small-cnn,resnet18", help="models of the first two tables ('' skips)")
    parser.add_argument("--igos-budget-s", type=float, default=180.0,
                        help="run igos on ResNet-50 only if estimated faster than this; else extrapolate")
    parser.add_argument("--resnet50-size", type=int, default=224, help="image side of the ResNet-50 table")
    parser.add_argument("--quick", action="store_true",
                        help="dry run: small-cnn only, ResNet-50 at 32x32, the reduced igos check")
    args = parser.parse_args()
    if args.quick:
        args.models, args.resnet50_size, args.igos_budget_s = "small-cnn", 32, min(args.igos_budget_s, 5.0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    allocator = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "CPU allocator events (profiler)"
    print(f"device {device}, {args.threads} threads, torch {torch.__version__}; tensors: live storages created "
          f"by ops; allocator: {allocator}; MB = 2**20 bytes, growth over the start")
    models = [m for m in args.models.split(",") if m]
    if models:
        tracker_check(device, models)
        solver_table(device, models)
    if not args.skip_resnet50:
        resnet50_table(device, args.igos_budget_s, args.resnet50_size)


if __name__ == "__main__":
    main()

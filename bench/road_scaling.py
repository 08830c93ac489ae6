"""ROAD's imputation at 64, 224 and 512 pixels a side: seconds and error against an exact solve, before and after.

One photo (scikit-image's ``astronaut``, 512x512, resized, ImageNet-normalised) and a
smooth saliency (a Gaussian on the face, as an explanation of a face class would look).
ROAD removes the top (MoRF) or bottom (LeRF) ``round(f * H * W)`` pixels of it; here at
``f`` in 0.1, 0.5 and 0.9, six masks, imputed in one call as ``road_curves`` batches them
(18 systems: three channels each). MoRF at 0.9 leaves one large hole, the case where the
old solver's iterations grew with the image.

* before: conjugate gradients preconditioned with the diagonal, batched until the hardest
  system converged, stopping on the residual (the package's solver until the multigrid
  preconditioner; kept below, verbatim, to run side by side);
* after: :func:`lightning_igos.core.road.linear_imputation` (multigrid-preconditioned,
  each system stopping on its own estimated error, compensated residuals).

Both at their defaults (tolerance 1e-5, at most 2000 iterations). Seconds are the
process's CPU seconds with one torch thread (``time.process_time``; wall seconds too,
which depend on the machine's load, printed with it). The error is the largest
difference over all imputed pixels from ``scipy.sparse.linalg.spsolve`` in float64.

With ``--costs`` it also times ``road_curves`` against ``causal_curves(steps=28)`` on
EfficientNet-Lite0 and the five photos of ``real_model.py`` at 224x224 (the edge map as
saliency, CPU seconds, median of ``--repeats``, ``--threads`` torch threads), with each
solver: ROAD's cost relative to the insertion/deletion curves, before and after.

    cd bench && ../.venv/bin/python road_scaling.py                  # 64, 224, 512: a few minutes
    cd bench && ../.venv/bin/python road_scaling.py --sizes 64,224 --skip-before 512
    cd bench && ../.venv/bin/python road_scaling.py --sizes 64 --costs
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch
import torch.nn.functional as F
from skimage import data
from torch import Tensor

import lightning_igos.core.road as road
from lightning_igos import causal_curves
from lightning_igos.core.causal import pixel_ranks
from lightning_igos.core.road import _KERNEL, linear_imputation, road_curves

FRACTIONS = (0.1, 0.5, 0.9)


def imputation_before(images: Tensor, removed: Tensor, *, max_iterations: int = 2000,
                      tolerance: float = 1e-5) -> tuple[Tensor, int]:
    """The solver before the multigrid preconditioner, as it was in the package."""
    n, c, h, w = images.shape
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    systems = n * c
    layout = torch.channels_last

    def as_systems(t: Tensor) -> Tensor:
        return t.to(dtype).reshape(1, systems, h, w).contiguous(memory_format=layout)

    x = as_systems(images)
    m = as_systems(removed.to(device=x.device).expand(n, c, h, w))
    kernel = torch.tensor(_KERNEL, dtype=dtype, device=x.device).view(1, 1, 3, 3).expand(systems, 1, 3, 3)
    kernel = kernel.contiguous()

    def neighbours(y: Tensor) -> Tensor:
        return F.conv2d(y, kernel, padding=1, groups=systems)

    d = neighbours(torch.ones_like(x))
    known = x * (1 - m)
    b = neighbours(known) * m

    def apply(p: Tensor) -> Tensor:
        return (d * p - neighbours(p)) * m

    def dot(a: Tensor, c_: Tensor) -> Tensor:
        return (a * c_).sum(dim=(0, 2, 3), keepdim=True)

    u = b / d
    r = b - apply(u)
    z = r / d
    p = z
    rz = dot(r, z)
    floor = max((tolerance * 1e-3) ** 2, float(torch.finfo(dtype).tiny))
    iterations = 0
    while iterations < max_iterations:
        if iterations % 8 == 0 and float((r / d).abs().max()) <= tolerance:
            break
        ap = apply(p)
        pap = dot(p, ap)
        moving = (rz > floor) & (pap > floor)
        alpha = torch.where(moving, rz / torch.where(moving, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        u = u + alpha * p
        r = r - alpha * ap
        z = r / d
        rz_new = dot(r, z)
        beta = torch.where(moving, rz_new / torch.where(moving, rz, torch.ones_like(rz)), torch.zeros_like(rz))
        p = z + beta * p
        rz = rz_new
        iterations += 1
    filled = known + u * m
    return filled.reshape(n, c, h, w).contiguous(), iterations


def exact_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """The exact float64 solution for one image ``(C, H, W)`` and mask ``(H, W)``: a sparse direct solve."""
    h, w = removed.shape
    index = np.full((h, w), -1)
    index[removed] = np.arange(removed.sum())
    ii, jj = np.nonzero(removed)
    own = index[ii, jj]
    rows, cols, values = [own], [own], []
    total = np.zeros(len(ii))
    rhs = np.zeros((len(ii), image.shape[0]))
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            weight = _KERNEL[di + 1][dj + 1]
            if not weight:
                continue
            y, x = ii + di, jj + dj
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            total[inside] += weight
            coupled = inside.copy()
            coupled[inside] = removed[y[inside], x[inside]]
            rows.append(own[coupled])
            cols.append(index[y[coupled], x[coupled]])
            values.append(np.full(int(coupled.sum()), -weight))
            outside = inside & ~coupled
            rhs[own[outside]] += weight * image[:, y[outside], x[outside]].T
    values.insert(0, total)
    matrix = scipy.sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                                     shape=(len(ii), len(ii)))
    out = image.copy()
    out[:, ii, jj] = scipy.sparse.linalg.spsolve(matrix, rhs).reshape(len(ii), -1).T
    return out


def photo(size: int) -> Tensor:
    """The astronaut at ``size`` x ``size``, ImageNet-normalised, ``(1, 3, size, size)``."""
    x = torch.from_numpy(data.astronaut()).permute(2, 0, 1).float().div(255)[None]
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def masks(size: int) -> Tensor:
    """ROAD's six masks ``(6, 1, size, size)``: MoRF then LeRF at each fraction, for a Gaussian on the face."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre, sigma = (0.25 * size, 0.45 * size), 0.15 * size
    saliency = torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * sigma**2))[None, None]
    out = []
    for order in (saliency, -saliency):
        ranks = pixel_ranks(order, (size, size)).view(1, 1, size, size)
        out += [ranks < min(round(f * size * size), size * size - 1) for f in FRACTIONS]
    return torch.cat(out)


def measure(solver, images: Tensor, removed: Tensor) -> tuple[Tensor, int, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    filled, iterations = solver(images, removed)
    return filled, iterations, time.process_time() - cpu, time.perf_counter() - wall


def curve_costs(repeats: int, threads: int) -> None:
    """ROAD's wall seconds per photo against the insertion/deletion curves', with each solver."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from real_model import PHOTOS, load_efficientnet_lite0, load_photos
    from torchvision.transforms.v2.functional import gaussian_blur

    torch.set_num_threads(threads)
    model, images = load_efficientnet_lite0(), load_photos(PHOTOS)
    with torch.no_grad():
        targets = model(images).argmax(1)
    saliency = (images - gaussian_blur(images, kernel_size=[5, 5], sigma=[1.0, 1.0])).abs().sum(1, keepdim=True)

    def timed(fn) -> float:  # CPU seconds of the process (all its threads): steadier than wall under load
        runs = []
        for _ in range(repeats):
            start = time.process_time()
            fn()
            runs.append(time.process_time() - start)
        return statistics.median(runs) / images.shape[0]

    timed(lambda: causal_curves(model, images[:2], saliency[:2], targets[:2], steps=4))  # warm-up
    curves = timed(lambda: causal_curves(model, images, saliency, targets, steps=28))
    rows = []
    for name, solver in (("after", linear_imputation), ("before", imputation_before)):
        road.linear_imputation = solver
        try:
            rows.append((name, timed(lambda: road_curves(model, images, saliency, targets))))
        finally:
            road.linear_imputation = linear_imputation
    print(f"\nEfficientNet-Lite0, {images.shape[0]} photos 224x224, edge-map saliency, CPU s, {threads} torch threads,"
          f" median of {repeats}; load average now {' '.join(f'{v:.2f}' for v in os.getloadavg())}:\n")
    print("| metric | CPU s / photo | ratio to insertion/deletion |")
    print("|---|---|---|")
    print(f"| insertion/deletion (causal_curves, steps=28) | {curves:.2f} | 1.00 |")
    for name, seconds in rows:
        print(f"| ROAD MoRF + LeRF (road_curves), {name} | {seconds:.2f} | {seconds / curves:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224,512", help="comma-separated image sides")
    parser.add_argument("--skip-before", default="", help="sides at which the old solver is not run")
    parser.add_argument("--costs", action="store_true", help="also ROAD against the curves on EfficientNet-Lite0")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each metric with --costs (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads with --costs")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    skip = {int(s) for s in args.skip_before.split(",") if s}
    torch.set_num_threads(1)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} CPUs,"
          f" 1 torch thread)", flush=True)
    rows = []
    for size in sizes:
        image, removed = photo(size), masks(size)
        images = image.expand(removed.shape[0], -1, -1, -1)
        start = time.perf_counter()
        exact = torch.from_numpy(np.stack([exact_imputation(image[0].double().numpy(), m[0].numpy())
                                           for m in removed]))
        exact_seconds = time.perf_counter() - start
        solvers = [("after", linear_imputation)] + ([] if size in skip else [("before", imputation_before)])
        for name, solver in solvers:
            filled, iterations, cpu, wall = measure(solver, images, removed)
            gone = removed.expand_as(filled)
            error = (filled.double() - exact)[gone].abs()
            per_mask = (filled.double() - exact).abs().flatten(1).amax(1)
            rows.append((size, name, cpu, wall, iterations, float(error.max()), float(per_mask[2]), exact_seconds))
            print(f"{size}x{size} {name}: {cpu:.2f} CPU s ({wall:.2f} wall s), {iterations} iterations,"
                  f" max error {float(error.max()):.1e} (MoRF 0.9: {float(per_mask[2]):.1e})", flush=True)
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| side | solver | CPU s (6 masks, 18 systems) | wall s | iterations | max error vs spsolve |"
          " error, MoRF 0.9 | spsolve s |")
    print("|---|---|---|---|---|---|---|---|")
    for size, name, cpu, wall, iterations, error, morf, exact_seconds in rows:
        print(f"| {size} | {name} | {cpu:.2f} | {wall:.2f} | {iterations} | {error:.1e} | {morf:.1e} |"
              f" {exact_seconds:.1f} |")
    after = {size: cpu for size, name, cpu, *_ in rows if name == "after"}
    before = {size: cpu for size, name, cpu, *_ in rows if name == "before"}
    pixels = {size: size * size for size in after}
    smallest = min(after)
    print("\n| side | pixels / smallest | after: CPU s / smallest | before: CPU s / smallest | before / after |")
    print("|---|---|---|---|---|")
    for size in after:
        ratio = f"{before[size] / before[smallest]:.1f}" if size in before and smallest in before else "-"
        speedup = f"{before[size] / after[size]:.1f}" if size in before else "-"
        print(f"| {size} | {pixels[size] / pixels[smallest]:.1f} | {after[size] / after[smallest]:.1f} | {ratio} |"
              f" {speedup} |")
    if args.costs:
        curve_costs(args.repeats, args.threads)


if __name__ == "__main__":
    main()

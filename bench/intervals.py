"""How wide the probe's own noise is, and how far a regression moves the AUCs: the numbers behind the
baseline gate's default margins and the README's probe-size advice.

The task is the generated one of the demo (objects on noise, 4 classes, 64x64, the demo's
SmallCNN trained for 3 epochs on 1024 images): the real-model bench has five photos, too few
to say how the interval narrows with the probe's size. Nothing is downloaded.

    python bench/intervals.py                 # 64 probe images, the check's default options
    python bench/intervals.py --probe 64 --image-size 32 --train 512   # the README's table (a loaded machine)

It explains one probe of ``--probe`` images with

* ``A``: a model trained with seed 0, explainer seed 0,
* ``A seed 1``: the same checkpoint, explainer seed 1 (the solver's noise and nothing else),
* ``B``: the same recipe trained with seed 1 (another run that should pass against ``A``),
* ``A head reset``: ``A`` with its last layer re-initialised (a regression that must fail),

then prints (1) the width of the 95% bootstrap interval of the mean insertion and deletion AUC
for probes of 4, 8, 16, 32 and 64 images (averaged over the disjoint sub-probes of that size),
and (2) for each pair, the paired mean change and its 95% interval at 8 images and at the
whole probe (a positive "worse by" is a drop in the statistic's own direction).
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch

from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.demo.synthetic import make_object_images, train_small_cnn
from lightning_igos.intervals import bootstrap_interval, paired_interval

STATISTICS = (("insertion_auc", True), ("deletion_auc", False))


def head_reset(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """A copy of ``model`` with its last module that has parameters re-initialised."""
    copied = copy.deepcopy(model)
    last = [m for m in copied.modules() if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(False))]
    torch.manual_seed(seed)
    last[-1].reset_parameters()
    return copied.eval()


def _substrates(config: IGOSConfig) -> object:
    curve_substrates = getattr(config, "curve_substrates", None)
    return curve_substrates() if curve_substrates is not None else config.substrate


def per_image(model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, config: IGOSConfig) -> dict:
    values = evaluate(model, images, targets, config).per_image()
    return {name: values[name].double().tolist() for name, _ in STATISTICS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", type=int, default=64, help="probe images (default 64)")
    parser.add_argument("--iterations", type=int, default=None, help="solver iterations (default: the check's)")
    parser.add_argument("--image-size", type=int, default=64, help="image side (default 64, the demo's)")
    parser.add_argument("--train", type=int, default=1024, help="training images (default 1024)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = IGOSConfig() if args.iterations is None else IGOSConfig(iterations=args.iterations)
    started = time.perf_counter()
    train = make_object_images(args.train, image_size=args.image_size, seed=0)
    probe = make_object_images(args.probe, image_size=args.image_size, seed=100)
    model_a = train_small_cnn(train, epochs=3, seed=0)
    model_b = train_small_cnn(train, epochs=3, seed=1)
    runs = {"A": per_image(model_a, probe.images, probe.labels, config)}
    n = args.probe
    side = args.image_size
    print(f"generated task, {n} probe images {side}x{side}, SmallCNN, method {config.method}, "
          f"{config.iterations} iterations, substrates (deletion, insertion) {_substrates(config)}; "
          f"{platform.processor() or platform.machine()}",
          flush=True)
    print()
    print("(1) width of the 95% bootstrap interval of the mean, model A (mean over disjoint sub-probes)")
    print(f"{'images':>6}  {'sub-probes':>10}  {'insertion AUC':>13}  {'deletion AUC':>12}")
    for size in (4, 8, 16, 32, 64):
        if size > n:
            continue
        widths = {}
        for name, _ in STATISTICS:
            values = np.array(runs["A"][name])
            chunks = [values[i:i + size] for i in range(0, n - size + 1, size)]
            widths[name] = np.mean([np.subtract(*bootstrap_interval(c.tolist())[::-1]) for c in chunks])
        print(f"{size:>6}  {n // size:>10}  {widths['insertion_auc']:>13.4f}  {widths['deletion_auc']:>12.4f}",
              flush=True)
    runs["A seed 1"] = per_image(model_a, probe.images, probe.labels, config.replace(seed=1))
    runs["B"] = per_image(model_b, probe.images, probe.labels, config)
    runs["A head reset"] = per_image(head_reset(model_a), probe.images, probe.labels, config)
    print()
    print("(2) paired change against A (worse by: the drop in the statistic's direction; CI: 95% of the change)")
    print(f"{'run':<14}{'images':>7}  {'statistic':<14}{'A':>8}{'run':>8}{'worse by':>10}  {'95% CI of change':>20}")
    for run in ("A seed 1", "B", "A head reset"):
        for size in (8, n):
            for name, higher in STATISTICS:
                old, new = runs["A"][name][:size], runs[run][name][:size]
                change = float(np.mean(new) - np.mean(old))
                low, high = paired_interval(old, new)
                worse = -change if higher else change
                print(f"{run:<14}{size:>7}  {name:<14}{np.mean(old):>8.4f}{np.mean(new):>8.4f}{worse:>+10.4f}  "
                      f"[{low:+.4f}, {high:+.4f}]", flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

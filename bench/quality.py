"""Explanation quality against cost: causal deletion and insertion AUCs versus passes per image.

For each model and solver configuration (iterations, integration steps) it runs
``igos`` on a fixed probe (generator seeded with 0), then ``causal_curves`` on the
saliency with its defaults (50 steps, blur substrate), and prints the model passes
per explained image, the solver's seconds, the mean deletion AUC (lower is better),
insertion AUC (higher is better), both divided by each image's clean score, the
mask mean and the fraction of images whose saliency peak lies inside the object's
box. Vanilla-gradient and random saliencies are reference rows, so the table shows
where I-GOS sits between them. The solver's defaults are chosen from this curve.

The models: ``small-cnn-test`` is exactly the behavioural test's model and probe
(``tests/test_solver.py``: trained on ``make_object_images(1024, seed=0)`` for 3
epochs, probe ``make_object_images(N, seed=100)``, 64x64); ``resnet18`` (and
``small-cnn``) are the briefly trained, cached models of ``bench/bench_models.py``.

    python bench/quality.py                                   # default grid, both models
    python bench/quality.py --models small-cnn-test --probe 16 --configs "it=5,steps=20;it=15,steps=20"
    python bench/quality.py --solver-kwargs '{"noise_std": 0.1}'   # applied to every config

A config is ``it=N,steps=M`` plus optional ``name=value`` solver options (JSON values).
``--solver-kwargs`` takes a JSON object; a string ``"torch.bfloat16"`` becomes the dtype.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from bench_models import MODELS, load_model
from torch import Tensor, nn

from lightning_igos import causal_curves, gradient_saliency, igos
from lightning_igos.demo.synthetic import ObjectImages, make_object_images, peak_inside_box, train_small_cnn

DEFAULT_CONFIGS = ";".join(
    [f"it={it},steps=20" for it in (1, 2, 3, 5, 8, 10, 15, 20)] + [f"it=10,steps={s}" for s in (5, 10)]
)
ALIASES = {"it": "iterations", "steps": "ig_steps"}


def as_dtype(value: object) -> object:
    """``"torch.bfloat16"`` -> ``torch.bfloat16``; anything else unchanged."""
    if isinstance(value, str) and value.startswith("torch."):
        dtype = getattr(torch, value.removeprefix("torch."), None)
        if isinstance(dtype, torch.dtype):
            return dtype
    return value


def parse_value(text: str) -> object:
    """JSON if it parses (numbers, true, null, quoted strings), else the bare string; then :func:`as_dtype`."""
    try:
        return as_dtype(json.loads(text))
    except json.JSONDecodeError:
        return as_dtype(text)


def parse_configs(text: str) -> list[tuple[str, dict]]:
    """``"it=5,steps=20;it=10,steps=10"`` -> [(label, igos keyword arguments), ...]."""
    configs = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        kwargs = {}
        for item in part.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"bad config item {item!r} in {part!r}: expected name=value")
            kwargs[ALIASES.get(key.strip(), key.strip())] = parse_value(value.strip())
        kwargs.setdefault("iterations", 15)
        kwargs.setdefault("ig_steps", 20)
        configs.append((part.replace(" ", ""), kwargs))
    return configs


def load(name: str, probe: int, probe_resnet: int) -> tuple[nn.Module, ObjectImages]:
    """The model ``name`` (eval mode) and its probe, generated with seed 100 as in the tests."""
    if name == "small-cnn-test":
        model = train_small_cnn(make_object_images(1024, seed=0), epochs=3, seed=0)
        return model.eval(), make_object_images(probe, seed=100)
    if name not in MODELS:
        raise SystemExit(f"unknown model {name!r}: small-cnn-test or one of {sorted(MODELS)}")
    model, size = load_model(name)
    n = probe_resnet if name == "resnet18" else probe
    return model, make_object_images(n, image_size=size, num_classes=4, seed=100)


HEADER = ("| model | saliency | passes / image | seconds | deletion | insertion | deletion / clean "
          "| insertion / clean | mask mean | peak in box |")


def row(model: str, label: str, model_fn: nn.Module, data: ObjectImages, saliency: Tensor,
        passes: str, seconds: str, mask_mean: str) -> str:
    cc = causal_curves(model_fn, data.images, saliency.cpu(), data.labels)
    inside = peak_inside_box(saliency.cpu(), data.boxes).float().mean()
    return (f"| {model} | {label} | {passes} | {seconds} | {cc.deletion_auc.mean():.4f} "
            f"| {cc.insertion_auc.mean():.4f} | {cc.deletion_auc_normalized.mean():.4f} "
            f"| {cc.insertion_auc_normalized.mean():.4f} | {mask_mean} | {inside:.2f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="small-cnn-test,resnet18")
    parser.add_argument("--probe", type=int, default=32, help="probe images for the small CNNs")
    parser.add_argument("--probe-resnet", type=int, default=8, help="probe images for resnet18 (~25x slower)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="'it=N,steps=M[,name=value...];...'")
    parser.add_argument("--solver-kwargs", default="{}", help="JSON object of extra igos options, for every config")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    extra = {k: as_dtype(v) for k, v in json.loads(args.solver_kwargs).items()}
    configs = parse_configs(args.configs)

    print(f"device {device}, {args.threads} threads, torch {torch.__version__}; solver kwargs "
          f"{args.solver_kwargs if extra else '(none)'}; igos generator seeded 0; causal_curves defaults "
          f"(50 steps, blur substrate); AUC means over the probe")
    print()
    print(HEADER)
    print("|" + "|".join("-" * len(c) for c in HEADER.split("|")[1:-1]) + "|", flush=True)
    for name in args.models.split(","):
        model, data = load(name.strip(), args.probe, args.probe_resnet)
        model = model.to(device)
        data = ObjectImages(data.images.to(device), data.labels.to(device), data.boxes)
        tag = f"{name} ({len(data)})"
        # Reference rows: the vanilla gradient and a fixed random map.
        grad = gradient_saliency(model, data.images, data.labels)
        print(row(tag, "gradient", model, data, grad, "-", "-", "-"), flush=True)
        random = torch.rand(len(data), 1, *data.images.shape[-2:], generator=torch.Generator().manual_seed(0))
        print(row(tag, "random", model, data, random, "-", "-", "-"), flush=True)
        igos(model, data.images[:1], data.labels[:1], iterations=1, ig_steps=2, **extra)  # warm-up
        for label, kwargs in configs:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            ex = igos(model, data.images, data.labels, generator=torch.Generator(device=device).manual_seed(0),
                      **{**kwargs, **extra})
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            print(row(tag, f"igos {label}", model, data, ex.saliency, f"{ex.passes_per_image:.1f}",
                      f"{seconds:.1f}", f"{ex.mask_stats()['mask_mean']:.3f}"), flush=True)


if __name__ == "__main__":
    main()

"""What :class:`~lightning_igos.IGOSCallback` adds to a training run: seconds per explained epoch.

At each explained epoch the callback runs one
``lightning_igos.core.evaluation.evaluate(model, probe_images, targets, IGOSConfig(...))``
(the explanations and their insertion/deletion scoring); drawing panels and logging
are small next to it. This script times exactly that call at the library's current
defaults (``IGOSConfig()``), for 8, 16 and 32 probe images, on three models:

* ``demo-cnn``: the demo's model (``SmallCNN``, 4 classes, width 16, as in
  ``ObjectClassifier``) trained for one epoch on the demo's data (1024 generated 64x64
  images, noise 0.3), explaining generated validation images for their labels, as the
  demo's callback does;
* ``resnet18``: torchvision's ResNet-18 (random weights, seed 0, ``num_classes=10``) at
  64x64 on the same generated images, explained for the labels;
* ``efficientnet-lite0``: EfficientNet-Lite0 with its ImageNet weights at 224x224
  (``bench/real_model.py``; needs the ``bench`` extra, skipped with a note without it) on
  the five scikit-image photos of ``real_model.py``, cycled to fill the probe (every
  second cycle mirrored), explained for the model's top-1 class.

Each (model, probe size) runs once untimed (warm-up; ``--warmup short``: one short call
per model instead, for slow machines), then ``--repeats`` times timed (device
synchronised around each); the table shows the median and the range.
**passes / image** counts every image the model sees during the call per probe image
(what the callback logs as ``igos/passes_per_image``); **solver** is the solver's part
of it (the rest is the clean forward and the two causal curves).

    python bench/callback_cost.py                    # the full table on the CPU (2 threads)
    python bench/callback_cost.py --quick            # dry run: 8 images, one timed run
    python bench/callback_cost.py --device cuda --threads 0
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_igos.core.config import IGOSConfig  # noqa: E402
from lightning_igos.core.evaluation import evaluate  # noqa: E402
from lightning_igos.demo.synthetic import make_object_images, train_small_cnn  # noqa: E402

MODELS = ("demo-cnn", "resnet18", "efficientnet-lite0")
#: The demo's data: 64x64 images with noise 0.3 (``lightning_igos.demo``), 1024 for training.
DEMO_IMAGE_SIZE, DEMO_TRAIN_SIZE = 64, 1024


def _demo_noise() -> float:
    from lightning_igos.demo import DEMO_NOISE

    return DEMO_NOISE


def generated_probe(n: int) -> tuple[Tensor, Tensor]:
    """``n`` generated validation images (the demo's validation seed) and their labels."""
    data = make_object_images(n, image_size=DEMO_IMAGE_SIZE, noise=_demo_noise(), seed=1)
    return data.images, data.labels


def demo_cnn() -> nn.Module:
    train = make_object_images(DEMO_TRAIN_SIZE, image_size=DEMO_IMAGE_SIZE, noise=_demo_noise(), seed=0)
    return train_small_cnn(train, epochs=1, batch_size=64, num_classes=4)


def resnet18() -> nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build(weights=None, num_classes=10).eval()


def photo_probe(n: int) -> tuple[Tensor, str]:
    from real_model import load_photos

    photos = load_photos()
    cycles = [photos if i % 2 == 0 else photos.flip(-1) for i in range(-(-n // len(photos)))]
    return torch.cat(cycles)[:n], "pred"


def efficientnet_lite0() -> nn.Module:
    from real_model import load_efficientnet_lite0

    return load_efficientnet_lite0()


def setups() -> dict[str, tuple[str, Callable[[], nn.Module], Callable[[int], tuple[Tensor, Tensor | str]]]]:
    """name -> (image size, model factory, probe factory)."""
    return {
        "demo-cnn": (f"{DEMO_IMAGE_SIZE}", demo_cnn, generated_probe),
        "resnet18": (f"{DEMO_IMAGE_SIZE}", resnet18, generated_probe),
        "efficientnet-lite0": ("224", efficientnet_lite0, photo_probe),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PassCounter:
    """Counts the images through ``model`` (every forward), as the callback does for ``igos/passes_per_image``."""

    def __init__(self, model: nn.Module) -> None:
        self.passes = 0
        self.handle = model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], Tensor) and inputs[0].dim() > 0:
            self.passes += int(inputs[0].shape[0])


def warm_up(model: nn.Module, images: Tensor, targets: Tensor | str, config: IGOSConfig, full: bool) -> None:
    """One untimed call: the whole measured call (``full``), or a short one (2 images, 1 iteration, 4 steps)."""
    if not full:
        images, targets = images[:2], targets if isinstance(targets, str) else targets[:2]
        config = config.replace(iterations=1, metric_steps=4)
    evaluate(model, images, targets, config)
    sync(images.device)


def measure(model: nn.Module, images: Tensor, targets: Tensor | str, config: IGOSConfig, repeats: int) -> dict:
    device = images.device
    counter = PassCounter(model)
    seconds, passes, solver = [], 0, 0.0
    for _ in range(repeats):
        counter.passes = 0
        sync(device)
        start = time.perf_counter()
        result = evaluate(model, images, targets, config)
        sync(device)
        seconds.append(time.perf_counter() - start)
        passes, solver = counter.passes, result.explanation.passes_per_image
    counter.handle.remove()
    n = images.shape[0]
    return {
        "seconds": statistics.median(seconds), "low": min(seconds), "high": max(seconds),
        "passes": passes / n, "solver": solver,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads; 0 leaves torch's (default: 2)")
    parser.add_argument("--sizes", default="8,16,32", help="probe sizes, comma-separated (default: 8,16,32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up (default: 3)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--warmup", choices=("full", "short"), default="full",
                        help="full: the measured call once untimed before each row; short: one short call "
                             "(2 images, 1 iteration) per model, for slow machines (default: full)")
    parser.add_argument("--quick", action="store_true", help="dry run: 8 images, a short warm-up, one timed run")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = [8] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 1 if args.quick else max(1, args.repeats)
    warmup = "short" if args.quick else args.warmup
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    device = torch.device(args.device)
    config = IGOSConfig()

    print(f"torch {torch.__version__}, python {platform.python_version()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", {torch.get_num_threads()} CPU threads; median of {repeats} timed runs after a {warmup} warm-up")
    print(f"IGOSConfig() defaults: method={config.method}, iterations={config.iterations}, "
          f"ig_steps={config.ig_steps}, objective={config.objective}, quadrature={config.quadrature}, "
          f"patience={config.patience}, mask_size={config.mask_size}, metric_steps={config.metric_steps}\n")
    print("| model | image | probe images | s / explained epoch | range | s / image | passes / image | solver |")
    print("|---|---|---|---|---|---|---|---|")
    notes = []
    for name in names:
        size, build, probe = setups()[name]
        try:
            model = build().to(device).eval()
        except (ImportError, SystemExit) as error:  # the bench extra is missing
            notes.append(f"{name}: skipped ({error})")
            continue
        for i, n in enumerate(sizes):
            images, targets = probe(n)
            images = images.to(device)
            if isinstance(targets, Tensor):
                targets = targets.to(device)
            if warmup == "full" or i == 0:
                warm_up(model, images, targets, config, full=warmup == "full")
            row = measure(model, images, targets, config, repeats)
            print(f"| {name} | {size}x{size} | {n} | {row['seconds']:.2f} | {row['low']:.2f}-{row['high']:.2f} "
                  f"| {row['seconds'] / n:.3f} | {row['passes']:.1f} | {row['solver']:.1f} |", flush=True)
    for note in notes:
        print(f"\n{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

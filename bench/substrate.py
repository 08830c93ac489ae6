"""Does the substrate remove the evidence? Insertion/deletion AUCs of known-good and control maps per substrate.

A deletion curve ends at the fully substituted image and an insertion curve starts there, so when
the substrate keeps what the model looks at (a bright blob's position survives a narrow blur), a
correct map cannot score better than a random one. This bench measures, on small and large images:

* ``square32``: a bright 6x6 square on noise at 32x32, the class is the square's quadrant, a small
  CNN trained for seconds; the oracle map is the square itself;
* ``digits32`` / ``digits64``: scikit-learn's 8x8 digits upsampled (bilinear) to 32 and 64, a small
  CNN (and, with ``--resnet``, a torchvision ResNet-18 from random initialisation, a few epochs);
* ``photos``: EfficientNet-Lite0 on the scikit-image photos of ``real_model.py`` (224x224).

For each map (I-GOS under each solver baseline, the oracle where known, a random map, the edge-map
control) and each substrate (the blur at the current width, wider blurs, ``zeros``, ``mean``) it prints
the deletion and insertion AUCs, and per substrate the *residual*: the score of the fully substituted
image over the clean score (1.0: the substrate kept all the evidence). Run::

    .venv/bin/python bench/substrate.py                       # every task (about 10 min on 2 busy CPU cores)
    .venv/bin/python bench/substrate.py --tasks square32 --images 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lightning_igos import causal_curves  # noqa: E402
from lightning_igos.core.baselines import blur_parameters  # noqa: E402
from lightning_igos.core.config import IGOSConfig  # noqa: E402
from lightning_igos.core.evaluation import explain  # noqa: E402

TASKS = ("square32", "digits32", "digits64", "photos")


# --------------------------------------------------------------------------- substrates

def wide_blur(fraction: float):
    """A Gaussian blur whose kernel spans ``fraction`` of the image (sigma the same), as a substrate callable."""

    def substrate(images: Tensor) -> Tensor:
        from torchvision.transforms.v2.functional import gaussian_blur

        kernel, sigma = [], []
        for size in (images.shape[-1], images.shape[-2]):
            k = max(3, int(round(fraction * size)))
            k = k if k % 2 == 1 else k + 1
            k = min(k, size if size % 2 == 1 else size - 1)
            kernel.append(k)
            sigma.append(fraction * size)
        return gaussian_blur(images, kernel_size=kernel, sigma=sigma)

    return substrate


def substrates(size: int) -> dict[str, object]:
    kernel = blur_parameters(size, size)[0][0]
    return {f"blur (k {kernel}/{size})": "blur", "blur k 0.5": wide_blur(0.5), "blur k 1.0": wide_blur(1.0),
            "zeros": "zeros", "mean": "mean"}


# --------------------------------------------------------------------------- tasks

class SmallCNN(nn.Module):
    """Two conv blocks and a linear head on a 4x4 grid (keeps position, as the square task needs)."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(32 * 16, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def square_images(n: int, generator: torch.Generator, size: int = 32, side: int = 6) -> tuple[Tensor, Tensor, Tensor]:
    """Noise with a bright ``side``-pixel square inside one quadrant; (images, quadrant, oracle map)."""
    images = 0.5 * torch.randn(n, 3, size, size, generator=generator)
    oracle = torch.zeros(n, 1, size, size)
    labels = torch.randint(0, 4, (n,), generator=generator)
    half = size // 2
    for i, label in enumerate(labels.tolist()):
        top = int(torch.randint(0, half - side + 1, (1,), generator=generator)) + half * (label // 2)
        left = int(torch.randint(0, half - side + 1, (1,), generator=generator)) + half * (label % 2)
        images[i, :, top:top + side, left:left + side] = 2.5
        oracle[i, :, top:top + side, left:left + side] = 1.0
    return images, labels, oracle


def digit_images(size: int) -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x = (x - 0.3) / 0.4
    return x, torch.tensor(digits.target)


def train(model: nn.Module, images: Tensor, labels: Tensor, epochs: int, lr: float = 3e-3, batch: int = 64) -> float:
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            rows = order[start:start + batch]
            loss = F.cross_entropy(model(images[rows]), labels[rows])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return float(loss.detach())


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((model.eval()(images).argmax(1) == labels).float().mean())


def resnet18(classes: int) -> nn.Module:
    from torchvision.models import resnet18 as build

    torch.manual_seed(0)
    return build(num_classes=classes)


def load_task(name: str, num_images: int, resnet: bool) -> list[tuple[str, nn.Module, Tensor, Tensor, Tensor | None]]:
    """``[(label, model, probe images, probe targets, oracle map or None)]`` for a task."""
    if name == "square32":
        generator = torch.Generator().manual_seed(0)
        x, y, _ = square_images(2048, generator)
        torch.manual_seed(0)
        model = SmallCNN(3, 4)
        train(model, x, y, epochs=3)
        px, py, oracle = square_images(num_images, generator)
        print(f"square32: small CNN, probe accuracy {accuracy(model, px, py):.3f}")
        return [("square32, small CNN", model.eval(), px, py, oracle)]
    if name.startswith("digits"):
        size = int(name[len("digits"):])
        x, y = digit_images(size)
        split = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
        train_rows, probe_rows = split[:-num_images * 4], split[-num_images * 4:]
        # one probe image per class first, so the probe covers the classes
        chosen: list[int] = []
        for c in range(10):
            chosen += [int(r) for r in probe_rows if int(y[r]) == c][:1]
        chosen = chosen[:num_images]
        px, py = x[chosen], y[chosen]
        out = []
        torch.manual_seed(0)
        model = SmallCNN(3, 10)
        train(model, x[train_rows], y[train_rows], epochs=8)
        print(f"{name}: small CNN, probe accuracy {accuracy(model, px, py):.3f}")
        out.append((f"{name}, small CNN", model.eval(), px, py, None))
        if resnet:
            model = resnet18(10)
            start = time.perf_counter()
            train(model, x[train_rows], y[train_rows], epochs=3, lr=1e-3)
            print(f"{name}: ResNet-18 (random init, 3 epochs, {time.perf_counter() - start:.0f} s), "
                  f"probe accuracy {accuracy(model, px, py):.3f}")
            out.append((f"{name}, ResNet-18", model.eval(), px, py, None))
        return out
    if name == "photos":
        from real_model import PHOTOS, load_efficientnet_lite0, load_photos

        model = load_efficientnet_lite0()
        images = load_photos(PHOTOS[:num_images])
        with torch.no_grad():
            targets = model(images).argmax(1)
        return [("photos 224, EfficientNet-Lite0", model, images, targets, None)]
    raise ValueError(f"unknown task {name!r}; known: {TASKS}")


# --------------------------------------------------------------------------- measuring

def measure(label: str, model: nn.Module, images: Tensor, targets: Tensor, oracle: Tensor | None,
            baselines: list[str], steps: int, iterations: int) -> None:
    size = images.shape[-1]
    subs = substrates(size)
    maps: dict[str, Tensor] = {}
    start = time.perf_counter()
    for baseline in baselines:
        config = IGOSConfig(iterations=iterations, baseline=baseline if baseline != "wide" else wide_blur(1.0))
        maps[f"igos, baseline {baseline}"] = explain(model, images, targets, config).saliency
    if oracle is not None:
        maps["oracle (the square)"] = oracle
    maps["random"] = explain(model, images, targets, IGOSConfig(method="random")).saliency
    maps["edge map"] = explain(model, images, targets, IGOSConfig(method="edge_map")).saliency
    results = {}
    for sub_name, substrate in subs.items():
        for map_name, saliency in maps.items():
            cc = causal_curves(model, images, saliency, targets, steps=steps, substrate=substrate)
            results[map_name, sub_name] = cc
    seconds = time.perf_counter() - start
    clean = next(iter(results.values())).clean_score
    print(f"\n### {label}: {images.shape[0]} images {size}x{size}, mean clean prob {float(clean.mean()):.3f}, "
          f"{steps} metric steps, igos {iterations} iterations ({seconds:.0f} s)\n")
    print("Deletion AUC / insertion AUC (mean over the images; deletion: lower is better, insertion: higher).\n")
    print("| map | " + " | ".join(subs) + " |")
    print("|---|" + "---|" * len(subs))
    for map_name in maps:
        cells = [f"{float(results[map_name, s].deletion_auc.mean()):.3f} / "
                 f"{float(results[map_name, s].insertion_auc.mean()):.3f}" for s in subs]
        print(f"| {map_name} | " + " | ".join(cells) + " |")
    residual = []
    for s in subs:
        cc = results[next(iter(maps)), s]
        ratio = cc.substrate_score / cc.clean_score.clamp_min(1e-8)
        residual.append(f"{float(ratio.mean()):.2f} ({int((ratio > 0.5).sum())}/{len(ratio)} > 0.5)")
    print("| residual: substituted / clean score | " + " | ".join(residual) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated subset of {TASKS}")
    parser.add_argument("--images", type=int, default=8, help="probe images per small task (photos: at most 5)")
    parser.add_argument("--baselines", default="blur,wide,zeros,mean",
                        help="the solver's baselines to explain with ('wide': blur with a kernel the image's size)")
    parser.add_argument("--steps", type=int, default=20, help="metric steps of the small tasks")
    parser.add_argument("--photo-steps", type=int, default=28, help="metric steps of the photos")
    parser.add_argument("--iterations", type=int, default=4, help="igos iterations")
    parser.add_argument("--resnet", action="store_true", help="also a ResNet-18 on the digits")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    baselines = args.baselines.split(",")
    for task in args.tasks.split(","):
        n = min(args.images, 5) if task == "photos" else args.images
        for label, model, images, targets, oracle in load_task(task, n, args.resnet):
            steps = args.photo_steps if task == "photos" else args.steps
            measure(label, model, images, targets, oracle, baselines, steps, args.iterations)


if __name__ == "__main__":
    main()

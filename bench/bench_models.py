"""The models the benchmarks run, briefly trained on the generated task.

Random weights would be enough for speed, but with them the I-GOS objective is
already minimal at the all-ones mask (no evidence is worth its L1 cost), the
line search never runs and the benchmark would miss part of the solver's work.
Each model is trained for seconds once and cached under ``bench/.cache``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from lightning_igos.demo.synthetic import SmallCNN, make_object_images, train_small_cnn

CACHE = Path(__file__).resolve().parent / ".cache"
CLASSES = 4

# name: (image size, constructor)
MODELS = {
    "small-cnn": (64, lambda: SmallCNN(num_classes=CLASSES)),
    "resnet18": (96, lambda: resnet18(num_classes=CLASSES)),
}


def _train_resnet(size: int) -> nn.Module:
    torch.manual_seed(0)
    data = make_object_images(768, image_size=size, num_classes=CLASSES, seed=0)
    model = MODELS["resnet18"][1]()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(2):
        for start in range(0, len(data), 32):
            loss = F.cross_entropy(model(data.images[start:start + 32]), data.labels[start:start + 32],
                                   label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def load_model(name: str) -> tuple[nn.Module, int]:
    """The trained model ``name`` (eval mode) and its image size."""
    size, make = MODELS[name]
    path = CACHE / f"{name}.pt"
    model = make()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), size
    if name == "small-cnn":
        model = train_small_cnn(make_object_images(1024, image_size=size, num_classes=CLASSES, seed=0))
    else:
        model = _train_resnet(size)
    CACHE.mkdir(exist_ok=True)
    torch.save(model.state_dict(), path)
    return model.eval(), size

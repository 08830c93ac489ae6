"""The models the benchmarks run: name -> (constructor, image size, classes)."""

from __future__ import annotations

from torchvision.models import resnet18

from lightning_igos.synthetic import SmallCNN

MODELS = {
    "small-cnn": (lambda: SmallCNN(num_classes=4), 64, 4),
    "resnet18": (lambda: resnet18(num_classes=10), 96, 10),
}

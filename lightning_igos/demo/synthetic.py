"""The generated object-on-noise task used by the tests, the demo and the benchmarks.

Each image is grey noise with one small striped patch at a random position;
the patch's pattern is the class (horizontal, vertical, checkerboard,
diagonal, ...). The patterns have the background's mean brightness, so the
only evidence for the class is the fine structure inside the patch: a blurred
image carries none, which makes the blur baseline a true removal. The patch's
box is returned with each image, so a faithful saliency map must peak there.
Nothing is downloaded: the data are generated from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

PATTERNS = ("horizontal", "vertical", "checkerboard", "diagonal", "antidiagonal", "dots")
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _pattern(kind: str, size: int) -> Tensor:
    """A (size, size) pattern of +1/-1 with stripes two pixels wide."""
    y = torch.arange(size).view(-1, 1).expand(size, size)
    x = torch.arange(size).view(1, -1).expand(size, size)
    on = {
        "horizontal": (y // 2) % 2 == 0,
        "vertical": (x // 2) % 2 == 0,
        "checkerboard": ((y // 2) + (x // 2)) % 2 == 0,
        "diagonal": ((x + y) // 2) % 2 == 0,
        "antidiagonal": ((x - y + 2 * size) // 2) % 2 == 0,
        "dots": ((y % 4) < 2) & ((x % 4) < 2),
    }[kind]
    pattern = on.float() * 2 - 1
    return pattern - pattern.mean()


@dataclass
class ObjectImages:
    """A generated dataset.

    Attributes:
        images: ``(N, 3, H, W)`` normalised with :data:`MEAN` and :data:`STD`.
        labels: ``(N,)`` class of each image (the pattern of its patch, see :data:`PATTERNS`).
        boxes: ``(N, 4)`` the patch of each image as ``(x0, y0, x1, y1)``, end exclusive.
        mean, std: the normalisation, for display.

    Example:
        >>> data = make_object_images(2, image_size=32)
        >>> data.object_masks().shape, len(data.dataset())
        (torch.Size([2, 1, 32, 32]), 2)
    """

    images: Tensor
    labels: Tensor
    boxes: Tensor
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    def dataset(self) -> TensorDataset:
        """``(image, label)`` pairs for a ``DataLoader``."""
        return TensorDataset(self.images, self.labels)

    def __len__(self) -> int:
        return self.images.shape[0]

    def object_masks(self) -> Tensor:
        """``(N, 1, H, W)`` boolean masks of the patches."""
        n, _, h, w = self.images.shape
        ys = torch.arange(h).view(1, h, 1)
        xs = torch.arange(w).view(1, 1, w)
        b = self.boxes.view(n, 4, 1, 1)
        inside = (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
        return inside.unsqueeze(1)


def make_object_images(
    n: int,
    *,
    image_size: int = 64,
    num_classes: int = 4,
    object_size: int | None = None,
    noise: float = 0.15,
    seed: int = 0,
) -> ObjectImages:
    """Generate ``n`` object-on-noise images (deterministic for a seed).

    Example:
        >>> data = make_object_images(8, image_size=32, seed=1)
        >>> data.images.shape, data.labels.shape, data.boxes.shape
        (torch.Size([8, 3, 32, 32]), torch.Size([8]), torch.Size([8, 4]))
    """
    if not 2 <= num_classes <= len(PATTERNS):
        raise ValueError(f"`num_classes` must be between 2 and {len(PATTERNS)}, got {num_classes!r}.")
    if n < 1 or image_size < 8:
        raise ValueError(f"`n` must be >= 1 and `image_size` >= 8, got n={n!r}, image_size={image_size!r}.")
    size = object_size or max(4, image_size // 5)
    g = torch.Generator().manual_seed(seed)
    grey = 0.5 + noise * torch.randn(n, 1, image_size, image_size, generator=g)
    raw = grey + 0.3 * noise * torch.randn(n, 3, image_size, image_size, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    x0 = torch.randint(0, image_size - size + 1, (n,), generator=g)
    y0 = torch.randint(0, image_size - size + 1, (n,), generator=g)
    patterns = torch.stack([_pattern(kind, size) for kind in PATTERNS[:num_classes]])
    # A random tint per patch, the same distribution for every class: colour is no cue.
    tint = 0.5 + 0.1 * torch.randn(n, 3, 1, 1, generator=g)
    contrast = 0.3 + 0.1 * torch.rand(n, 1, 1, 1, generator=g)
    patches = tint + contrast * patterns[labels].unsqueeze(1)
    for i in range(n):
        raw[i, :, y0[i] : y0[i] + size, x0[i] : x0[i] + size] = patches[i]
    raw = raw.clamp(0, 1)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    boxes = torch.stack([x0, y0, x0 + size, y0 + size], dim=1)
    return ObjectImages(images=(raw - mean) / std, labels=labels, boxes=boxes)


class SmallCNN(nn.Module):
    """A small convolutional classifier (with BatchNorm) for the generated task.

    Example:
        >>> SmallCNN(num_classes=4)(torch.randn(2, 3, 64, 64)).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_classes: int = 4, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # Max pooling over space: the class is set by one small object anywhere.
        features = self.features(x).amax(dim=(-2, -1))
        return self.classifier(features)


def train_small_cnn(
    data: ObjectImages,
    *,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    num_classes: int | None = None,
) -> SmallCNN:
    """Train a :class:`SmallCNN` on ``data`` with Adam (seconds on a CPU); returns it in eval mode.

    Example:
        >>> model = train_small_cnn(make_object_images(64, image_size=32), epochs=1)
        >>> model.training
        False
    """
    classes = num_classes or int(data.labels.max()) + 1
    torch.manual_seed(seed)
    model = SmallCNN(num_classes=classes)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=g)
        for start in range(0, len(data), batch_size):
            idx = order[start : start + batch_size]
            # Label smoothing keeps the softmax off its flat, saturated tails.
            loss = F.cross_entropy(model(data.images[idx]), data.labels[idx], label_smoothing=0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()


def peak_inside_box(saliency: Tensor, boxes: Tensor) -> Tensor:
    """Whether each saliency map's argmax lies in its object's box ``(x0, y0, x1, y1)``.

    Example:
        >>> saliency = torch.zeros(1, 1, 8, 8)
        >>> saliency[0, 0, 2, 5] = 1
        >>> peak_inside_box(saliency, torch.tensor([[4, 1, 7, 4]])).tolist()
        [True]
    """
    width = saliency.shape[-1]
    peak = saliency.flatten(1).argmax(1)
    py, px = peak // width, peak % width
    return (px >= boxes[:, 0]) & (px < boxes[:, 2]) & (py >= boxes[:, 1]) & (py < boxes[:, 3])

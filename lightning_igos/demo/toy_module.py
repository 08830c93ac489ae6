"""A LightningModule for the generated object-on-noise task (demo, tests, CLI examples).

Example:
    >>> module = ObjectClassifier(num_classes=4)
    >>> module(torch.randn(2, 3, 64, 64)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_igos.demo.synthetic import MEAN, STD, SmallCNN


class ObjectClassifier(pl.LightningModule):
    """:class:`~lightning_igos.demo.synthetic.SmallCNN` trained with Adam and label smoothing.

    ``mean`` and ``std`` are the input normalisation; :class:`IGOSCallback` reads them
    to show the probe images in their real colours.
    """

    def __init__(self, num_classes: int = 4, width: int = 16, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = SmallCNN(num_classes=num_classes, width=width)
        self.mean, self.std = MEAN, STD

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        acc = (logits.argmax(1) == labels).float().mean()
        self.log(f"{stage}_loss", loss, prog_bar=stage == "val")
        self.log(f"{stage}_acc", acc, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

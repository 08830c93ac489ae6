"""Helpers shared by the tests (imported as ``from helpers import ...``; pytest puts tests/ on the path).

Fixtures live in ``conftest.py``; :func:`lightning_igos.demo.synthetic.peak_inside_box` is shared
with the benches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.probe import save_probe


def tiny_check_workspace(root: Path, num_probe: int) -> Path:
    """``root/run.ckpt``: a tiny 4-class model after one training step; ``root/probe.pt``: 16x16 images."""
    torch.manual_seed(0)
    data = make_object_images(8, image_size=16, seed=0)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, accelerator="cpu")
    trainer.fit(ObjectClassifier(num_classes=4, width=4), DataLoader(data.dataset(), batch_size=8))
    trainer.save_checkpoint(root / "run.ckpt")
    probe = make_object_images(num_probe, image_size=16, seed=1)
    save_probe(root / "probe.pt", probe.images, torch.arange(num_probe))
    return root


class ForwardRecorder(nn.Module):
    """Wraps a model (or any callable on the inputs) and records every forward.

    ``calls`` holds ``(batch size, input requires grad, input is channels_last)`` per forward.
    """

    def __init__(self, model: nn.Module | Callable[[torch.Tensor], object]) -> None:
        super().__init__()
        self.model = model
        self.calls: list[tuple[int, bool, bool]] = []

    @property
    def sizes(self) -> list[int]:
        return [size for size, _, _ in self.calls]

    def forward(self, x: torch.Tensor) -> object:
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        self.calls.append((x.shape[0], x.requires_grad, channels_last))
        return self.model(x)


def offline_wandb_logger(tmp_path, monkeypatch):
    """A real ``WandbLogger`` in offline mode, with every W&B folder under ``tmp_path`` (no network, no account)."""
    from pytorch_lightning.loggers import WandbLogger

    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                        "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                        "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    return WandbLogger(project="igos-test", save_dir=str(tmp_path), offline=True)

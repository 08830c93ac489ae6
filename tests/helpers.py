"""Helpers shared by the tests (imported as ``from helpers import ...``; pytest puts tests/ on the path).

Fixtures live in ``conftest.py``; :func:`lightning_igos.demo.synthetic.peak_inside_box` is shared
with the benches.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from lightning_igos.cli import main
from lightning_igos.demo.synthetic import SmallCNN, make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.probe import save_probe

try:
    import lightning.pytorch as L
except ImportError:  # pragma: no cover - lightning is in the dev extra; its tests are skipped without it
    L = None

# ----------------------------------------------------------------------------- solver settings for tests

MODEL = "lightning_igos.demo.toy_module:ObjectClassifier"
# Tiny solver settings: the tests check the wiring, not the quality of the explanations.
FAST_OPTIONS = dict(iterations=2, ig_steps=3, metric_steps=8)
FASTEST_OPTIONS = dict(iterations=1, ig_steps=2, metric_steps=4)


def option_args(options: dict[str, object]) -> list[str]:
    """Keyword options as the command line spells them: ``{"ig_steps": 3}`` is ``["--ig-steps", "3"]``."""
    return [arg for name, value in options.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


FAST_ARGS = (*option_args(FAST_OPTIONS), "--device", "cpu")
FASTEST_ARGS = (*option_args(FASTEST_OPTIONS), "--device", "cpu")


# ----------------------------------------------------------------------------- running the command line


def check_args(*extra: str, model: str = MODEL, checkpoint: str = "run.ckpt", probe: str = "probe.pt",
               fast: Sequence[str] = FAST_ARGS) -> list[str]:
    """The arguments of ``lightning-igos check`` with the given model, checkpoint and probe, then ``extra``."""
    return ["check", "--model", model, "--checkpoint", checkpoint, "--probe", probe, *fast, *extra]


def run_main(workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
             *args: str) -> subprocess.CompletedProcess:
    """``main(argv)`` in this process, from the workspace (importable), with the same result shape as run_cli."""
    monkeypatch.chdir(workspace)
    monkeypatch.syspath_prepend(str(workspace))
    code = main(list(args))
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


def run_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command, ``python -m lightning_igos``, run from the workspace."""
    return subprocess.run([sys.executable, "-m", "lightning_igos", *args], cwd=workspace, capture_output=True,
                          text=True, timeout=300)


# ----------------------------------------------------------------------------- checkpoints and workspaces


def fit_object_classifier(root: Path, width: int = 16) -> tuple[pl.Trainer, ObjectClassifier]:
    """An ObjectClassifier trained for two epochs on 256 generated 32x32 images (a few seconds on 2 CPU cores)."""
    torch.manual_seed(0)
    data = make_object_images(256, image_size=32, seed=0)
    module = ObjectClassifier(width=width)
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, accelerator="cpu")
    trainer.fit(module, DataLoader(data.dataset(), batch_size=32, shuffle=True))
    return trainer, module


def fit_tiny_classifier(root: Path) -> Path:
    """``root/run.ckpt``: a tiny 4-class model after one training step on 16x16 images."""
    torch.manual_seed(0)
    data = make_object_images(8, image_size=16, seed=0)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, accelerator="cpu")
    trainer.fit(ObjectClassifier(num_classes=4, width=4), DataLoader(data.dataset(), batch_size=8))
    trainer.save_checkpoint(root / "run.ckpt")
    return root / "run.ckpt"


def copy_files(source: Path, root: Path, *names: str) -> Path:
    """Copies the named files of a shared folder into a test's own ``root`` (tests write next to them)."""
    for name in names:
        shutil.copyfile(source / name, root / name)
    return root


def tiny_check_workspace(root: Path, tiny_checkpoint: Path, num_probe: int) -> Path:
    """``root/run.ckpt``: a copy of the ``tiny_checkpoint`` fixture's; ``root/probe.pt``: 16x16 images."""
    shutil.copyfile(tiny_checkpoint, root / "run.ckpt")
    probe = make_object_images(num_probe, image_size=16, seed=1)
    save_probe(root / "probe.pt", probe.images, torch.arange(num_probe))
    return root


# ----------------------------------------------------------------------------- models and callbacks


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


class ConstantModel(nn.Module):
    """Returns the same logits whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class LoggingModule:
    """What ``Outputs.log_scalars`` needs of a LightningModule: a device and ``log``."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.logged: dict[str, object] = {}

    def log(self, name: str, metric: object, **_: object) -> None:
        self.logged[name] = metric


class LossRecorder(pl.Callback):
    """Records the training losses (on the CPU)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().cpu().clone())


class Untouched(pl.Callback):
    """Placed before and after IGOSCallback: compares everything the callback must not touch.

    The two share ``shared``; the one with ``role="after"`` asserts at each validation epoch's end and counts
    its checks in ``shared["checked"]``. On a CUDA module the CUDA RNG is compared too.
    """

    def __init__(self, shared: dict, role: str) -> None:
        self.shared, self.role = shared, role

    @staticmethod
    def state(pl_module) -> dict:
        state = {
            "modes": [m.training for m in pl_module.modules()],
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "grads": [None if p.grad is None else p.grad.clone() for p in pl_module.parameters()],
            "requires_grad": [p.requires_grad for p in pl_module.parameters()],
            "buffers": [b.clone() for b in pl_module.buffers()],
            "rng": torch.get_rng_state(),
            "grad_enabled": torch.is_grad_enabled(),
        }
        if pl_module.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if self.role == "before":
            self.shared["before"] = self.state(pl_module)
            return
        before, after = self.shared.pop("before"), self.state(pl_module)
        for key in before:
            b, a = before[key], after[key]
            if isinstance(b, list):
                assert len(a) == len(b) and all(
                    (x is None and y is None) or (isinstance(x, torch.Tensor) and torch.equal(x, y)) or x == y
                    for x, y in zip(b, a)
                ), key
            else:
                assert torch.equal(b, a) if isinstance(b, torch.Tensor) else b == a, key
        self.shared["checked"] = self.shared.get("checked", 0) + 1


if L is not None:
    # Module level, so that ddp_spawn's processes unpickle it by name.

    class LightningClassifier(L.LightningModule):
        """A SmallCNN classifier of the ``lightning`` package (not ``pytorch_lightning``), seeded."""

        def __init__(self, width: int = 4) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.model = SmallCNN(num_classes=4, width=width)

        def forward(self, x):
            return self.model(x)

        def training_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)


def offline_wandb_logger(tmp_path, monkeypatch):
    """A real ``WandbLogger`` in offline mode, with every W&B folder under ``tmp_path`` (no network, no account)."""
    from pytorch_lightning.loggers import WandbLogger

    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_DIR": str(tmp_path),
                        "WANDB_CONFIG_DIR": str(tmp_path / "config"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                        "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(name, value)
    return WandbLogger(project="igos-test", save_dir=str(tmp_path), offline=True)

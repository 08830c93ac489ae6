"""The solver, the metrics and the callback on architectures users train.

A tiny torchvision ``VisionTransformer``, a model compiled with ``torch.compile`` and a
multi-label head scored with a sigmoid ``score_fn``. Everything is small (16x16 images,
iterations=1, ig_steps=2): these tests check that each architecture goes through the
whole path and gives sound numbers, not the quality of the explanations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import VisionTransformer

from lightning_igos import IGOSCallback, causal_curves, igos

SIZE, CLASSES = 16, 3
SOLVER = dict(iterations=1, ig_steps=2)
CALLBACK = dict(num_probe=2, iterations=1, ig_steps=2, metric_steps=4, log_images=False)


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(image_size=SIZE, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16,
                             num_classes=CLASSES)


def tiny_cnn(classes: int = CLASSES) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                         nn.Linear(16, classes))


def sigmoid_score(logits: Tensor, targets: Tensor) -> Tensor:
    """Multi-label head: each class is its own yes/no, scored by its sigmoid."""
    return torch.sigmoid(logits.gather(1, targets[:, None]).squeeze(1))


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile`` with the ``aot_eager`` backend: Dynamo's graph capture and AOTAutograd, as
    with the default backend, without the C++ code generation that costs ~40 s on 2 CPU cores."""
    return torch.compile(model, backend="aot_eager", dynamic=False)


@pytest.fixture(scope="module")
def compile_works() -> None:
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this torch build")
    try:
        model = compiled(tiny_cnn())
        x = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
        model(x).sum().backward()
    except Exception as err:  # e.g. Dynamo unsupported on this Python or platform
        pytest.skip(f"torch.compile does not run here: {type(err).__name__}: {err}")


def _images(n: int = 2) -> Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def _explain_and_score(model: nn.Module, score_fn: Callable | None = None) -> tuple:
    images, targets = _images(), torch.tensor([0, 2])
    ex = igos(model, images, targets, score_fn=score_fn, generator=torch.Generator().manual_seed(0), **SOLVER)
    cc = causal_curves(model, images, ex.saliency, targets, steps=4, score_fn=score_fn)
    return ex, cc


def _sound(ex: object, cc: object, model: nn.Module) -> None:
    assert ex.saliency.shape == (2, 1, SIZE, SIZE) and torch.isfinite(ex.saliency).all()
    assert ex.mask.min() >= 0 and ex.mask.max() <= 1
    for auc in (cc.insertion_auc, cc.deletion_auc):
        assert auc.shape == (2,) and ((auc >= 0) & (auc <= 1)).all()
    assert all(p.grad is None for p in model.parameters())  # gradients only with respect to the mask


def test_solver_and_metrics_on_a_vision_transformer() -> None:
    model = tiny_vit().eval()
    ex, cc = _explain_and_score(model)
    _sound(ex, cc, model)
    with torch.no_grad():
        clean = model(_images()).softmax(1)[[0, 1], [0, 2]]
    assert torch.allclose(cc.clean_score, clean, atol=1e-5)


def test_solver_and_metrics_on_a_compiled_model(compile_works: None) -> None:
    model = tiny_cnn().eval()
    ex, cc = _explain_and_score(compiled(model))
    _sound(ex, cc, model)
    eager_ex, eager_cc = _explain_and_score(model)  # the same noise: the compiled model gives the same answer
    assert torch.allclose(ex.mask, eager_ex.mask, atol=1e-4)
    assert torch.allclose(cc.insertion_auc, eager_cc.insertion_auc, atol=1e-4)
    assert torch.allclose(cc.deletion_auc, eager_cc.deletion_auc, atol=1e-4)


def test_solver_and_metrics_on_a_multi_label_head() -> None:
    model = tiny_cnn(classes=5).eval()
    ex, cc = _explain_and_score(model, score_fn=sigmoid_score)
    _sound(ex, cc, model)
    with torch.no_grad():
        logits = model(_images())
    assert torch.allclose(cc.clean_score, torch.sigmoid(logits[[0, 1], [0, 2]]), atol=1e-5)
    # Not a softmax: the scores of a multi-label head need not sum to one over the classes.
    assert not torch.allclose(torch.sigmoid(logits).sum(1), torch.ones(2))


# ----------------------------------------------------------------------------- the callback


class Wrapped(pl.LightningModule):
    """A LightningModule around any network; ``multi_label`` trains with BCE on multi-hot labels."""

    def __init__(self, net: nn.Module, multi_label: bool = False) -> None:
        super().__init__()
        self.net, self.multi_label = net, multi_label

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, labels = batch
        logits = self(images)
        if self.multi_label:
            return F.binary_cross_entropy_with_logits(logits, labels.float())
        return F.cross_entropy(logits, labels)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._loss(batch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path: Path, module: pl.LightningModule, callback: IGOSCallback, labels: Tensor) -> dict[str, float]:
    loader = DataLoader(TensorDataset(_images(4), labels), batch_size=4)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, callbacks=[callback], logger=False, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    trainer.fit(module, loader, loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("igos/")}
    assert {"igos/insertion_auc", "igos/deletion_auc", "igos/mask_mean"} <= set(metrics)
    assert all(math.isfinite(v) for v in metrics.values())
    assert 0 <= metrics["igos/insertion_auc"] <= 1 and 0 <= metrics["igos/deletion_auc"] <= 1
    return metrics


def test_callback_on_a_vision_transformer(tmp_path: Path) -> None:
    _fit(tmp_path, Wrapped(tiny_vit()), IGOSCallback(**CALLBACK), torch.tensor([0, 1, 2, 0]))


def test_callback_on_a_compiled_model(tmp_path: Path, compile_works: None) -> None:
    _fit(tmp_path, Wrapped(compiled(tiny_cnn())), IGOSCallback(**CALLBACK), torch.tensor([0, 1, 2, 0]))


def test_callback_on_a_multi_label_head(tmp_path: Path) -> None:
    """Multi-hot labels: ``batch_to_probe`` picks the class to explain, ``score_fn`` scores it with a sigmoid."""
    labels = torch.tensor([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 0, 0, 0]])
    callback = IGOSCallback(
        score_fn=sigmoid_score,
        batch_to_probe=lambda batch: (batch[0], batch[1].float().argmax(1)),  # the first positive class
        **CALLBACK,
    )
    module = Wrapped(tiny_cnn(classes=5), multi_label=True)
    metrics = _fit(tmp_path, module, callback, labels)
    images, targets = callback.probe
    assert targets.tolist() == [0, 1]  # the picked classes are [0, 2, 1, 0]: round-robin, ascending class index
    with torch.no_grad():  # validation ran after the only epoch: the module's final weights
        expected = sigmoid_score(module.eval()(images), targets).mean()
    assert metrics["igos/target_prob"] == pytest.approx(float(expected), abs=1e-5)

"""Shared fixtures: a generated dataset, a small CNN trained on it and the checkpoints of the command's tests,
each made once per test run (their functions are in ``helpers.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import fit_object_classifier, fit_tiny_classifier
from hypothesis import settings

from lightning_igos.demo.synthetic import ObjectImages, SmallCNN, make_object_images, train_small_cnn
from lightning_igos.probe import save_probe

# CI replays the same examples on every run (a failure there is reproducible); locally
# hypothesis keeps exploring new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def train_data() -> ObjectImages:
    return make_object_images(1024, seed=0)


@pytest.fixture(scope="session")
def probe_data() -> ObjectImages:
    return make_object_images(16, seed=100)


@pytest.fixture(scope="session")
def trained_cnn(train_data: ObjectImages) -> SmallCNN:
    """About 5 seconds on 2 CPU cores; 100% accuracy on the probe."""
    return train_small_cnn(train_data, epochs=3, seed=0)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the command's tests: ``run.ckpt`` (an ObjectClassifier trained for two epochs, a few seconds),
    its SmallCNN's ``cnn_state.pt``, the module's ``module_state.pt`` and a 4-image ``probe.pt``.

    Shared by several modules: copy what a test needs (``helpers.copy_files``), never write here.
    """
    root = tmp_path_factory.mktemp("trained_run")
    trainer, module = fit_object_classifier(root)
    trainer.save_checkpoint(root / "run.ckpt")
    torch.save(module.model.state_dict(), root / "cnn_state.pt")
    torch.save(module.state_dict(), root / "module_state.pt")
    probe = make_object_images(4, image_size=32, seed=100)
    save_probe(root / "probe.pt", probe.images, probe.labels, probe.mean, probe.std)
    return root


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Lightning checkpoint of a tiny 4-class model after one training step (``helpers.tiny_check_workspace``)."""
    return fit_tiny_classifier(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture()
def tiny_model() -> torch.nn.Module:
    """An untrained model for shape and error tests (fast)."""
    torch.manual_seed(0)
    return SmallCNN(num_classes=4, width=4).eval()


@pytest.fixture(autouse=True)
def _no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of the check never append to a real GitHub Actions job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

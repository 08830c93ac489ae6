"""Shared fixtures: a generated dataset and a small CNN trained on it once per session."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

from lightning_igos.demo.synthetic import ObjectImages, SmallCNN, make_object_images, train_small_cnn

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


@pytest.fixture()
def tiny_model() -> torch.nn.Module:
    """An untrained model for shape and error tests (fast)."""
    torch.manual_seed(0)
    return SmallCNN(num_classes=4, width=4).eval()


@pytest.fixture(autouse=True)
def _no_github_step_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of the check never append to a real GitHub Actions job summary."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)

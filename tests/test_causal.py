"""Causal insertion/deletion metric: definition, invariants and input errors."""

from __future__ import annotations

import pytest
import torch
from helpers import ConstantModel, ForwardRecorder
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_igos.core.causal import auc, causal_curves, pixel_counts, pixel_ranks


class RegionModel(nn.Module):
    """Class 1's logit is the mean brightness of a fixed square; class 0's is 0."""

    def __init__(self, box: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.box = box

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0, y0, x1, y1 = self.box
        evidence = 4 * x[:, :, y0:y1, x0:x1].mean(dim=(1, 2, 3))
        return torch.stack([torch.zeros_like(evidence), evidence], dim=1)


def region_saliency(box, size=16) -> torch.Tensor:
    s = torch.zeros(1, 1, size, size)
    x0, y0, x1, y1 = box
    s[..., y0:y1, x0:x1] = 1.0
    return s


@settings(max_examples=25, deadline=None)
@given(
    logits=st.lists(st.floats(-5, 5), min_size=2, max_size=5),
    steps=st.integers(1, 40),
    seed=st.integers(0, 2**16),
)
def test_constant_score_model_has_auc_equal_to_its_score(logits, steps, seed):
    g = torch.Generator().manual_seed(seed)
    logits_t = torch.tensor(logits)
    model = ConstantModel(logits_t)
    images = torch.randn(3, 3, 8, 8, generator=g)
    saliency = torch.rand(3, 1, 8, 8, generator=g)
    target = len(logits) - 1
    cc = causal_curves(model, images, saliency, target, steps=steps)
    p = torch.softmax(logits_t, 0)[target]
    torch.testing.assert_close(cc.insertion_auc, p.expand(3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cc.deletion_auc, p.expand(3), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cc.deletion_auc_normalized, torch.ones(3), atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 30), size=st.integers(2, 12))
def test_aucs_of_probabilities_lie_in_unit_interval(seed, steps, size):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 3))
    images = torch.randn(2, 3, size, size, generator=g)
    cc = causal_curves(model, images, torch.randn(2, 1, size, size, generator=g), [0, 2], steps=steps)
    for value in (cc.insertion_auc, cc.deletion_auc):
        assert ((value >= 0) & (value <= 1)).all()
    assert cc.insertion.shape == cc.deletion.shape == (2, steps + 1)


def test_curve_endpoints_are_clean_and_substrate_scores():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 3))
    images = torch.randn(4, 3, 16, 16)
    substrate = torch.randn(4, 3, 16, 16)
    targets = torch.tensor([0, 1, 2, 1])
    cc = causal_curves(model, images, torch.rand(4, 1, 16, 16), targets, substrate=substrate)
    with torch.no_grad():
        clean = model(images).softmax(1)[torch.arange(4), targets]
        sub = model(substrate).softmax(1)[torch.arange(4), targets]
    torch.testing.assert_close(cc.deletion[:, 0], clean)
    torch.testing.assert_close(cc.insertion[:, -1], clean)
    torch.testing.assert_close(cc.insertion[:, 0], sub)
    torch.testing.assert_close(cc.deletion[:, -1], sub)
    torch.testing.assert_close(cc.clean_score, clean)
    torch.testing.assert_close(cc.substrate_score, sub)


def test_true_ranking_beats_its_reverse():
    box = (4, 4, 8, 8)
    model = RegionModel(box)
    images = torch.ones(2, 3, 16, 16) + 0.1 * torch.randn(2, 3, 16, 16)
    good = region_saliency(box).expand(2, 1, 16, 16) + 0.01 * torch.rand(2, 1, 16, 16)
    cc_good = causal_curves(model, images, good, 1, substrate="zeros", steps=32)
    cc_bad = causal_curves(model, images, -good, 1, substrate="zeros", steps=32)
    assert (cc_good.deletion_auc < cc_bad.deletion_auc - 0.2).all()
    assert (cc_good.insertion_auc > cc_bad.insertion_auc + 0.2).all()


def test_batching_does_not_change_the_curves():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    images, saliency = torch.randn(3, 3, 8, 8), torch.rand(3, 1, 8, 8)
    a = causal_curves(model, images, saliency, [0, 1, 2], steps=10, max_batch_size=2)
    b = causal_curves(model, images, saliency, [0, 1, 2], steps=10, max_batch_size=1000)
    torch.testing.assert_close(a.insertion, b.insertion)
    torch.testing.assert_close(a.deletion, b.deletion)


def test_low_resolution_saliency_is_upsampled_bilinearly():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
    images, low = torch.randn(2, 3, 16, 16), torch.rand(2, 1, 4, 4)
    up = torch.nn.functional.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False)
    a = causal_curves(model, images, low, 0, steps=8)
    b = causal_curves(model, images, up, 0, steps=8)
    torch.testing.assert_close(a.deletion_auc, b.deletion_auc)


def test_score_fn_replaces_the_softmax_probability():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1))
    nn.init.zeros_(model[1].weight)
    nn.init.constant_(model[1].bias, 0.5)

    def score_fn(logits, targets):
        return torch.sigmoid(logits[:, 0])

    cc = causal_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 0, score_fn=score_fn, steps=5)
    torch.testing.assert_close(cc.insertion_auc, torch.sigmoid(torch.tensor(0.5)).expand(2))


@settings(max_examples=30, deadline=None)
@given(pixels=st.integers(1, 5000), steps=st.integers(1, 200))
def test_pixel_counts_are_monotone_from_zero_to_all(pixels, steps):
    counts = pixel_counts(pixels, steps)
    assert counts[0] == 0 and counts[-1] == pixels
    assert (counts[1:] >= counts[:-1]).all()


@settings(max_examples=30, deadline=None)
@given(values=st.lists(st.integers(0, 3), min_size=4, max_size=4))
def test_pixel_ranks_break_ties_by_index(values):
    s = torch.tensor(values, dtype=torch.float32).view(1, 1, 2, 2)
    ranks = pixel_ranks(s, (2, 2))[0].tolist()
    expected = sorted(range(4), key=lambda i: (-values[i], i))
    assert [expected.index(i) for i in range(4)] == ranks


def test_auc_uses_the_pixel_fractions():
    fractions = torch.tensor([0.0, 0.5, 1.0])
    assert float(auc(torch.tensor([1.0, 1.0, 0.0]), fractions)) == pytest.approx(0.75)


# ---- bad input ----

@pytest.fixture()
def linear_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=torch.randn(3, 8, 8)), ValueError, "images"),
        (dict(images=torch.randint(0, 5, (2, 3, 8, 8))), TypeError, "images"),
        (dict(saliency=torch.rand(3, 1, 8, 8)), ValueError, "saliency"),
        (dict(saliency=torch.rand(2, 2, 8, 8)), ValueError, "saliency"),
        (dict(saliency=torch.rand(2, 1, 16, 16)), ValueError, "saliency"),
        (dict(targets=[0, 1, 2]), ValueError, "targets"),
        (dict(targets=[0, 3]), ValueError, "targets"),
        (dict(targets=[-1, 0]), ValueError, "targets"),
        (dict(targets=[0.5, 1.0]), TypeError, "targets"),
        (dict(steps=0), ValueError, "steps"),
        (dict(substrate="noise"), ValueError, "substrate"),
        (dict(substrate=torch.zeros(3, 4, 4)), ValueError, "substrate"),
        (dict(max_batch_size=0), ValueError, "max_batch_size"),
    ],
)
def test_bad_input_raises_naming_the_argument(linear_model, kwargs, error, match):
    args = dict(images=torch.randn(2, 3, 8, 8), saliency=torch.rand(2, 1, 8, 8), targets=[0, 1])
    args.update({k: v for k, v in kwargs.items() if k in args})
    options = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(error, match=match):
        causal_curves(linear_model, args["images"], args["saliency"], args["targets"], **options)


@pytest.mark.parametrize(
    ("output", "match"),
    [
        (lambda x: torch.zeros(x.shape[0]), r"\(B, num_classes\)"),
        (lambda x: torch.zeros(x.shape[0], 1), "num_classes >= 2"),
        (lambda x: torch.full((x.shape[0], 3), float("nan")), "NaN"),
        (lambda x: (torch.zeros(x.shape[0], 3),), "tensor of logits"),
    ],
)
def test_unusable_model_output_fails_after_one_forward(output, match):
    model = ForwardRecorder(output)
    with pytest.raises((ValueError, TypeError), match=match):
        causal_curves(model, torch.randn(4, 3, 8, 8), torch.rand(4, 1, 8, 8), 0, steps=50)
    assert len(model.calls) == 1

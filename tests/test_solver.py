"""The batched I-GOS solver: behaviour on a trained model, side effects, batching, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import ForwardRecorder
from torch import nn

from lightning_igos import causal_curves, gradient_saliency, igos, integrated_gradients
from lightning_igos.demo.synthetic import SmallCNN, peak_inside_box


@pytest.fixture(scope="module")
def explained(trained_cnn, probe_data):
    return igos(trained_cnn, probe_data.images, probe_data.labels)


def test_heatmap_peaks_inside_the_object(explained, probe_data):
    inside = peak_inside_box(explained.saliency, probe_data.boxes)
    print(f"peak inside the object for {int(inside.sum())}/{inside.numel()} probe images")
    assert inside.float().mean() >= 0.75


def test_mask_leaves_all_ones_and_removes_the_evidence(explained):
    stats = explained.mask_stats()
    print("mask statistics:", stats, "passes per image:", explained.passes_per_image)
    assert stats["mask_min"] < 0.2
    assert stats["mask_frac_below_half"] > 0.01
    assert stats["mask_mean"] > 0.8  # small removed area: the L1 term works
    # Removing the masked region takes most of the target's probability away.
    assert explained.masked_score.mean() < 0.5 * explained.clean_score.mean()
    assert (explained.masked_score < 0.7 * explained.clean_score).all()


def test_deletion_beats_random_and_gradient_saliency(trained_cnn, probe_data, explained):
    images, labels = probe_data.images, probe_data.labels
    random = torch.rand(images.shape[0], 1, *images.shape[-2:], generator=torch.Generator().manual_seed(0))
    aucs = {
        "igos": causal_curves(trained_cnn, images, explained.saliency, labels),
        "gradient": causal_curves(trained_cnn, images, gradient_saliency(trained_cnn, images, labels), labels),
        "random": causal_curves(trained_cnn, images, random, labels),
    }
    for name, cc in aucs.items():
        print(f"{name:9s} deletion {cc.deletion_auc.mean():.4f} insertion {cc.insertion_auc.mean():.4f}")
    assert aucs["igos"].deletion_auc.mean() < aucs["random"].deletion_auc.mean() - 0.1
    assert aucs["igos"].deletion_auc.mean() < aucs["gradient"].deletion_auc.mean()
    assert aucs["igos"].insertion_auc.mean() > aucs["random"].insertion_auc.mean() + 0.1


class Tempered(nn.Module):
    """A trained classifier made less or more sure: logits divided by ``temperature``, plus
    ``extra`` classes with logit 0 (so the target's probability can fall below 1 / 4)."""

    def __init__(self, model: nn.Module, temperature: float, extra: int = 0) -> None:
        super().__init__()
        self.model, self.temperature, self.extra = model, temperature, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x) / self.temperature
        return torch.cat([logits, logits.new_zeros(logits.shape[0], self.extra)], 1)


@pytest.mark.parametrize(("temperature", "extra", "confidence"), [(6.0, 6, (0.1, 0.25)), (0.7, 0, (0.95, 1.0))])
def test_default_masks_move_at_any_confidence(trained_cnn, probe_data, temperature, extra, confidence):
    """The failure mode on real classifiers: a barely confident model kept every mask at all ones."""
    model = Tempered(trained_cnn, temperature, extra)
    images, labels = probe_data.images[:8], probe_data.labels[:8]
    ex = igos(model, images, labels)
    low, high = confidence
    assert ((ex.clean_score > low) & (ex.clean_score < high)).all(), ex.clean_score  # the premise
    per_image_min = ex.mask.flatten(1).amin(1)
    print(f"clean {ex.clean_score.mean():.3f} mask min per image {per_image_min.tolist()}"
          f" masked/clean {(ex.masked_score / ex.clean_score).tolist()}")
    assert (per_image_min < 0.9).all()
    assert (ex.masked_score < 0.9 * ex.clean_score).all()


def test_relative_objective_is_what_makes_a_low_confidence_model_explainable(trained_cnn, probe_data):
    model = Tempered(trained_cnn, 6.0, 6)
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    relative = igos(model, images, labels)
    raw = igos(model, images, labels, normalize_score=False, l1=1.0, tv=20.0)
    assert relative.mask.mean() < raw.mask.mean()
    assert (raw.masked_score > 0.95 * raw.clean_score).all()  # the reference weights on the raw score: no move


def test_igos_plus_plus_localises_the_object(trained_cnn, probe_data):
    ex = igos(trained_cnn, probe_data.images[:8], probe_data.labels[:8], method="igos++", iterations=8)
    assert ex.deletion_mask is not None and ex.insertion_mask is not None
    torch.testing.assert_close(ex.mask, ex.deletion_mask * ex.insertion_mask)
    assert peak_inside_box(ex.saliency, probe_data.boxes[:8]).float().mean() >= 0.75


def test_shapes_ranges_and_saliency_definition(tiny_model):
    full = igos(tiny_model, torch.randn(3, 3, 40, 24), [0, 1, 2], iterations=1, ig_steps=2)
    assert full.mask.shape == (3, 1, 40, 24)  # default: one mask cell per pixel
    torch.testing.assert_close(full.saliency, 1 - full.mask)
    ex = igos(tiny_model, torch.randn(3, 3, 40, 24), [0, 1, 2], iterations=2, ig_steps=3, mask_size=(5, 3))
    assert ex.mask.shape == (3, 1, 5, 3)
    assert ex.saliency.shape == (3, 1, 40, 24)
    assert ((ex.mask >= 0) & (ex.mask <= 1)).all()
    up = F.interpolate(ex.mask, size=(40, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(ex.saliency, 1 - up)
    assert not ex.mask.requires_grad and ex.saliency.grad_fn is None


def test_same_generator_state_gives_same_masks(trained_cnn, probe_data):
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    runs = [
        igos(trained_cnn, images, labels, iterations=3, generator=torch.Generator().manual_seed(7)) for _ in range(2)
    ]
    assert torch.equal(runs[0].mask, runs[1].mask)
    other = igos(trained_cnn, images, labels, iterations=3, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(runs[0].mask, other.mask)


def test_max_batch_size_caps_every_forward(tiny_model):
    model = ForwardRecorder(tiny_model)
    ex = igos(model, torch.randn(5, 3, 16, 16), 1, iterations=2, ig_steps=4, max_batch_size=3)
    assert max(model.sizes) == 3
    assert sum(model.sizes) == ex.passes_per_image * 5 + 5  # + the clean forward of the five images


def test_all_path_points_are_batched_together(tiny_model):
    model = ForwardRecorder(tiny_model)
    igos(model, torch.randn(4, 3, 16, 16), 1, iterations=1, ig_steps=5, max_batch_size=1000)
    assert 20 in model.sizes  # 4 images x 5 integration steps in one forward


def test_leaves_the_model_and_global_rng_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
    model.train()
    model[1].eval()  # a mixed mode must come back exactly
    model[-1].weight.requires_grad_(False)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {k: (None if p.grad is None else p.grad.clone()) for k, p in model.named_parameters()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()

    for explain in (
        lambda: igos(model, torch.ones(2, 3, 8, 8), [0, 1], iterations=2, ig_steps=3),
        lambda: igos(model, torch.ones(2, 3, 8, 8), [0, 1], iterations=1, ig_steps=2, method="igos++"),
        lambda: gradient_saliency(model, torch.ones(2, 3, 8, 8), 0),
        lambda: integrated_gradients(model, torch.ones(2, 3, 8, 8), 0, steps=3),
    ):
        explain()
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in params.items())
        for name, p in model.named_parameters():
            assert (p.grad is None) == (grads[name] is None) and (p.grad is None or torch.equal(p.grad, grads[name]))
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == flags
        assert torch.equal(torch.get_rng_state(), rng)


def test_runs_under_inference_mode_and_no_grad(tiny_model):
    with torch.inference_mode():
        images = torch.randn(2, 3, 16, 16)
        ex = igos(tiny_model, images, [0, 1], iterations=1, ig_steps=2)
    with torch.no_grad():
        ex2 = igos(tiny_model, torch.randn(2, 3, 16, 16), [0, 1], iterations=1, ig_steps=2)
    assert ex.mask.shape == ex2.mask.shape == (2, 1, 16, 16)


def test_the_baseline_is_what_removed_pixels_become(trained_cnn, probe_data):
    """Each kind of baseline is used: equal baselines give equal masks, different ones differ."""
    images, labels = probe_data.images[:2], probe_data.labels[:2]
    channel_means = images.mean(dim=(-2, -1), keepdim=True).expand_as(images)

    def run(baseline):
        return igos(trained_cnn, images, labels, iterations=2, ig_steps=4, mask_size=8, baseline=baseline)

    zeros, mean, blur = run("zeros"), run("mean"), run("blur")
    torch.testing.assert_close(run(torch.zeros(3, 64, 64)).mask, zeros.mask, rtol=0, atol=0)
    torch.testing.assert_close(run(lambda x: x * 0).mask, zeros.mask, rtol=0, atol=0)
    torch.testing.assert_close(run(channel_means.clone()).mask, mean.mask, rtol=0, atol=0)
    assert not torch.equal(zeros.mask, mean.mask) and not torch.equal(zeros.mask, blur.mask)
    for ex in (zeros, mean, blur):
        assert float(ex.mask.min()) < 0.9  # the masks moved: the comparison means something


def test_comparison_saliencies_have_image_shape(trained_cnn, probe_data):
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    assert gradient_saliency(trained_cnn, images, labels).shape == (4, 1, 64, 64)
    ig = integrated_gradients(trained_cnn, images, labels, steps=8)
    assert ig.shape == (4, 1, 64, 64)
    assert peak_inside_box(ig, probe_data.boxes[:4]).all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(images=torch.randn(3, 16, 16)), ValueError, "images"),
        (dict(images=torch.full((1, 3, 16, 16), float("nan"))), ValueError, "images"),
        (dict(targets=[0, 1, 2]), ValueError, "targets"),
        (dict(targets=[0, 9]), ValueError, "targets"),
        (dict(targets="cat"), TypeError, "targets"),
        (dict(method="gradcam"), ValueError, "method"),
        (dict(mask_size=0), ValueError, "mask_size"),
        (dict(mask_size=(4, 40)), ValueError, "mask_size"),
        (dict(mask_size=(2.9, 3.7)), TypeError, "mask_size"),
        (dict(autocast_dtype=torch.int8), ValueError, "autocast_dtype"),
        (dict(normalize_score="yes"), TypeError, "normalize_score"),
        (dict(iterations=-1), ValueError, "iterations"),
        (dict(ig_steps=0), ValueError, "ig_steps"),
        (dict(l1=-1.0), ValueError, "l1"),
        (dict(tv_power=0.5), ValueError, "tv_power"),
        (dict(noise_std=float("nan")), ValueError, "noise_std"),
        (dict(baseline="noise"), ValueError, "baseline"),
        (dict(baseline=torch.zeros(2, 3, 8, 8)), ValueError, "baseline"),
        (dict(max_batch_size=0), ValueError, "max_batch_size"),
        (dict(tolerance=0.0), ValueError, "tolerance"),
        (dict(patience=0), ValueError, "patience"),
        (dict(generator=0), TypeError, "generator"),
        (dict(model=lambda x: x), TypeError, "model"),
        (dict(model=SmallCNN(num_classes=4, width=2).to("meta")), ValueError, "one device"),
    ],
)
def test_bad_input_raises_naming_the_argument(kwargs, error, match):
    args = dict(model=SmallCNN(num_classes=4, width=2), images=torch.randn(2, 3, 16, 16), targets=[0, 1])
    args.update({k: v for k, v in kwargs.items() if k in args})
    options = {k: v for k, v in kwargs.items() if k not in args}
    with pytest.raises(error, match=match):
        igos(args["model"], args["images"], args["targets"], **options)


def test_unusable_model_fails_before_the_expensive_work():
    calls = []

    class SingleLogit(nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return x.mean(dim=(1, 2, 3))[:, None]

    with pytest.raises(ValueError, match="num_classes"):
        igos(SingleLogit(), torch.randn(8, 3, 16, 16), 0)
    assert calls == [8]  # the one clean forward, which every later stage reuses


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks per row with ties sharing their mean rank (masks have many cells at exactly 1)."""
    v = values.flatten(1)
    below = (v[:, None, :] < v[:, :, None]).sum(2).float()
    equal = (v[:, None, :] == v[:, :, None]).sum(2).float()
    return below + (equal + 1) / 2


def test_bf16_autocast_masks_agree_with_float32(trained_cnn, probe_data):
    """autocast_dtype runs the forwards in bf16 (CPU autocast here, the GPU path in real use)."""
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    full = igos(trained_cnn, images, labels, iterations=5)
    half = igos(trained_cnn, images, labels, iterations=5, autocast_dtype=torch.bfloat16)
    a, b = _average_ranks(full.mask), _average_ranks(half.mask)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    spearman = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    print("Spearman correlation of bf16 and float32 masks:", spearman.tolist())
    assert spearman.mean() > 0.9 and (spearman > 0.8).all()
    assert half.mask.dtype == torch.float32


@pytest.mark.parametrize("explain", [gradient_saliency, integrated_gradients, igos])
def test_a_nan_logit_on_any_image_is_refused_before_the_work(explain) -> None:
    """Every public explainer checks the clean logits of all its images, not the first alone."""

    class NaNOnSecond(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(3 * 4 * 4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.linear(x.flatten(1))
            bad = (x.flatten(1)[:, 0] > 100).unsqueeze(1)  # only the second image is marked
            return torch.where(bad, torch.full_like(logits, float("nan")), logits)

    images = torch.rand(3, 3, 4, 4)
    images[1, 0, 0, 0] = 1000.0
    with pytest.raises(ValueError, match=r"NaN or infinite outputs on image\(s\) \[1\]"):
        explain(NaNOnSecond(), images, 0)

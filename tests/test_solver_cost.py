"""What the solver's passes buy: converged images stop, warm-started searches, noise, layouts."""

from __future__ import annotations

import torch
from helpers import ForwardRecorder
from torch import nn

from lightning_igos import causal_curves, igos
from lightning_igos.core.solver import _PathNoise


def constant_model() -> nn.Module:
    """Logits that ignore the image: no mask can lower the score, so the all-ones mask is optimal."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    nn.init.zeros_(model[1].weight)
    return model


def test_a_converged_image_costs_no_more_passes():
    images = torch.randn(3, 3, 16, 16)
    ex = igos(constant_model(), images, [0, 1, 2], iterations=6, ig_steps=4, patience=2)
    assert ex.converged.all()
    assert ex.passes_per_image == 2 * 4  # two integrations, then nothing (the clean forward is not the solver's)
    assert torch.equal(ex.mask, torch.ones_like(ex.mask))

    every = igos(constant_model(), images, [0, 1, 2], iterations=6, ig_steps=4, patience=None)
    assert not every.converged.any()
    assert every.passes_per_image == 6 * 4


def test_only_unconverged_images_keep_descending(trained_cnn, probe_data):
    model = ForwardRecorder(trained_cnn)
    images, labels = probe_data.images[:8], probe_data.labels[:8]
    ex = igos(model, images, labels, iterations=15, ig_steps=10, patience=1)
    gradient_images = sum(n for n, grad, _ in model.calls if grad)
    # Each iteration integrates only the images still descending.
    assert gradient_images < 15 * 10 * len(images)
    assert ex.converged.any()
    full = igos(trained_cnn, images, labels, iterations=15, ig_steps=10, patience=None)
    assert full.passes_per_image > ex.passes_per_image
    # Stopping early costs no explanation quality: deletion AUCs agree to within 0.02.
    fast = causal_curves(trained_cnn, images, ex.saliency, labels).deletion_auc.mean()
    slow = causal_curves(trained_cnn, images, full.saliency, labels).deletion_auc.mean()
    print(f"passes {ex.passes_per_image:.0f} vs {full.passes_per_image:.0f}, deletion {fast:.4f} vs {slow:.4f}")
    assert abs(fast - slow) < 0.02


def test_line_search_starts_from_the_last_accepted_step(trained_cnn, probe_data):
    """Warm starts save about a quarter of the line-search trials on this task."""
    model = ForwardRecorder(trained_cnn)
    images, labels = probe_data.images[:8], probe_data.labels[:8]
    steps = 10
    igos(model, images, labels, iterations=8, ig_steps=steps)
    integrated = sum(n for n, grad, _ in model.calls if grad) / steps  # image-iterations
    trials = sum(n for n, grad, _ in model.calls if not grad) - 1 - len(images)  # validation, initial
    print(f"line-search trials per image and iteration: {trials / integrated:.2f}")
    assert trials / integrated < 3.6  # 4.2 when every search starts from `initial_step`


def test_integration_noise_has_the_requested_std_and_differs_per_point_and_direction():
    images = torch.randn(2, 3, 16, 16)
    noise = _PathNoise(images, 0.2, seed=0)
    zeros = torch.zeros(2 * 8, 3, 16, 16)
    rows, steps = torch.arange(2), torch.arange(8)
    noise.start_direction(rows)
    first = noise.add_to(zeros, rows, 0, steps).view(2, 8, -1)
    noise.start_direction(rows)
    second = noise.add_to(zeros, rows, 0, steps).view(2, 8, -1)
    insertion = noise.add_to(zeros, rows, 1, steps).view(2, 8, -1)
    for sample in (first, second, insertion):
        assert abs(sample.std().item() - 0.2) < 0.01 and abs(sample.mean().item()) < 0.01
    # Two points of one path, two directions of one image, the two terms, two images: uncorrelated.
    pairs = [(first[0, 0], first[0, 1]), (first[0, 0], second[0, 0]), (first[0, 0], insertion[0, 0]),
             (first[0, 0], first[1, 0])]
    for a, b in pairs:
        assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1]) < 0.15
    # A chunk holding only some of the steps reads the same noise for them.
    part = noise.add_to(torch.zeros(3, 3, 16, 16), rows[1:], 1, steps[2:5]).view(3, -1)
    torch.testing.assert_close(part, insertion[1, 2:5], rtol=0, atol=0)


def test_channels_last_models_get_channels_last_inputs(trained_cnn, probe_data):
    images, labels = probe_data.images[:2], probe_data.labels[:2]
    plain = ForwardRecorder(trained_cnn)
    ex = igos(plain, images, labels, iterations=2, ig_steps=4)
    assert not any(cl for *_, cl in plain.calls[1:])
    converted = ForwardRecorder(
        type(trained_cnn)(num_classes=4).to(memory_format=torch.channels_last)
    )
    converted.model.load_state_dict(trained_cnn.state_dict())
    ex_cl = igos(converted, images, labels, iterations=2, ig_steps=4)
    assert all(cl for *_, cl in converted.calls[1:])  # every forward after the validation one
    torch.testing.assert_close(ex_cl.mask, ex.mask, atol=1e-4, rtol=0)
    causal_curves(converted, images, ex.saliency, labels, steps=4)
    assert converted.calls[-1][2]  # the metrics too

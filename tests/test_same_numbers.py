"""An image's explanation and scores depend on the image, not on how the probe is batched."""

from __future__ import annotations

import pytest
import torch

from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.statistics import statistics

#: What a default evaluation reports.
STATISTICS = tuple(s.name for s in statistics(IGOSConfig()) if s.in_report)

FAST = dict(iterations=3, ig_steps=4, metric_steps=10)


def per_image(model, images, labels, **options):
    result = evaluate(model, images, labels, IGOSConfig(**{**FAST, **options}))
    stats = result.per_image()
    return torch.stack([stats[name] for name in STATISTICS], 1), result.explanation.mask, result.saliency


@pytest.mark.parametrize("method", ["igos", "igos++"])
def test_batch_size_order_and_slices_do_not_change_an_image(trained_cnn, probe_data, method):
    images, labels = probe_data.images[:6], probe_data.labels[:6]
    stats, masks, saliency = per_image(trained_cnn, images, labels, method=method, max_batch_size=64)
    assert (masks < 0.5).any(), "the masks must move for the comparison to mean something"
    variants = {
        "max_batch_size=9": (torch.arange(6), dict(max_batch_size=9)),
        "max_batch_size=4": (torch.arange(6), dict(max_batch_size=4)),
        "reversed": (torch.arange(5, -1, -1), {}),
        "first slice": (torch.arange(0, 2), {}),
        "second slice": (torch.arange(2, 6), {}),
    }
    for name, (order, options) in variants.items():
        other_stats, other_masks, other_saliency = per_image(
            trained_cnn, images[order], labels[order], method=method, **{"max_batch_size": 64, **options}
        )
        torch.testing.assert_close(other_masks, masks[order], rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(other_saliency, saliency[order], rtol=0, atol=1e-5, msg=name)
        torch.testing.assert_close(other_stats, stats[order], rtol=0, atol=1e-5, msg=name)


def test_single_image_passes_keep_the_aucs(trained_cnn, probe_data):
    """With one image per pass the CPU's single-image kernels round differently; the AUCs still agree."""
    images, labels = probe_data.images[:4], probe_data.labels[:4]
    stats, _, _ = per_image(trained_cnn, images, labels, max_batch_size=64)
    single, _, _ = per_image(trained_cnn, images, labels, max_batch_size=1)
    torch.testing.assert_close(single, stats, rtol=0, atol=1e-4)


def test_an_image_keeps_its_numbers_next_to_any_other_images(trained_cnn, probe_data):
    images, labels = probe_data.images, probe_data.labels
    alone, mask_alone, _ = per_image(trained_cnn, images[3:4], labels[3:4])
    crowd, mask_crowd, _ = per_image(trained_cnn, images[[9, 3, 12]], labels[[9, 3, 12]])
    torch.testing.assert_close(mask_crowd[1:2], mask_alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(crowd[1:2], alone, rtol=0, atol=1e-5)


def test_the_seed_still_matters(trained_cnn, probe_data):
    images, labels = probe_data.images[:2], probe_data.labels[:2]
    _, first, _ = per_image(trained_cnn, images, labels, seed=0)
    _, again, _ = per_image(trained_cnn, images, labels, seed=0)
    _, other, _ = per_image(trained_cnn, images, labels, seed=1)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3


def test_integrated_gradients_has_one_default_number_of_steps(trained_cnn, probe_data):
    """The public function and the registered explainer that the callback and the check run give the same map."""
    from lightning_igos.core.evaluation import explain
    from lightning_igos.core.gradients import integrated_gradients

    images, labels = probe_data.images[:2], probe_data.labels[:2]
    public = integrated_gradients(trained_cnn, images, labels)
    registered = explain(trained_cnn, images, labels, IGOSConfig(method="integrated_gradients")).saliency
    torch.testing.assert_close(public, registered, rtol=0, atol=0)
    other = integrated_gradients(trained_cnn, images, labels, steps=IGOSConfig().ig_steps + 1)
    assert (other - public).abs().max() > 0


def test_at_the_same_batch_shapes_an_image_is_bitwise_the_same_in_any_order(trained_cnn, probe_data):
    """What the README promises bitwise: the same batch shapes give the same numbers, whatever the order.

    The CPU kernels may depend on the batch shape, not on a row's position or the other rows' values.
    """
    images, labels = probe_data.images[:6], probe_data.labels[:6]
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    stats, masks, saliency = per_image(trained_cnn, images, labels, max_batch_size=9)
    other_stats, other_masks, other_saliency = per_image(trained_cnn, images[order], labels[order], max_batch_size=9)
    assert torch.equal(other_masks, masks[order])
    assert torch.equal(other_saliency, saliency[order])
    assert torch.equal(other_stats, stats[order])

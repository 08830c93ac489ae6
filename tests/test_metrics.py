"""torchmetrics classes: averaging, normalisation, flags and distributed-style merging."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_igos import DeletionAUC, InsertionAUC, causal_curves


@pytest.fixture()
def curves():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    return causal_curves(model, torch.randn(5, 3, 8, 8), torch.rand(5, 1, 8, 8), [0, 1, 2, 0, 1], steps=10)


def test_flags_are_set_deliberately():
    assert InsertionAUC.higher_is_better is True
    assert DeletionAUC.higher_is_better is False
    assert InsertionAUC.full_state_update is False and DeletionAUC.full_state_update is False


@pytest.mark.parametrize(("metric_cls", "name"), [(InsertionAUC, "insertion"), (DeletionAUC, "deletion")])
@pytest.mark.parametrize("normalize", [False, True])
def test_mean_over_batches_equals_mean_over_images(curves, metric_cls, name, normalize):
    metric = metric_cls(normalize=normalize)
    metric.update(curves)
    metric.update(curves)
    values = getattr(curves, f"{name}_auc" + ("_normalized" if normalize else ""))
    torch.testing.assert_close(metric.compute(), values.mean())


def test_states_merge_like_processes(curves):
    """Two 'ranks' with unequal shares reduce to the mean over all images."""
    a, b = InsertionAUC(), InsertionAUC()
    a.update(curves.insertion_auc[:2])
    b.update(curves.insertion_auc[2:])
    a.merge_state(b)
    torch.testing.assert_close(a.compute(), curves.insertion_auc.mean())


def test_reset_and_empty_compute():
    metric = DeletionAUC()
    metric.update(torch.tensor([0.2, 0.4]))
    metric.reset()
    assert torch.isnan(metric.compute())


def test_bad_updates_are_rejected():
    with pytest.raises(ValueError, match="normalize=True"):
        InsertionAUC(normalize=True).update(torch.tensor([0.5]))
    with pytest.raises(TypeError, match="curves"):
        InsertionAUC().update([0.5])
    with pytest.raises(TypeError, match="normalize"):
        DeletionAUC(normalize="yes")

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


def test_one_mean_across_processes_for_the_aucs_and_the_callback():
    """The AUC metrics and the callback's scalars are torchmetrics MeanMetrics (one sync rule); the AUCs sum in
    float64, so a large and a small AUC do not cancel, and a NaN AUC is kept (the mean is NaN), never dropped."""
    from torchmetrics.aggregation import MeanMetric

    from lightning_igos.callback.outputs import Outputs, ShareResult
    from lightning_igos.metrics import HigherIsBetterMean, LowerIsBetterMean

    assert issubclass(InsertionAUC, MeanMetric) and issubclass(DeletionAUC, MeanMetric)
    metric = InsertionAUC()
    metric.update(torch.tensor([1e8, 1.0, -1e8]))
    assert metric.mean_value.dtype == torch.float64 and metric.compute().dtype == torch.float32
    assert metric.compute().item() == pytest.approx(1 / 3)  # float32 sums would give 0
    metric.reset()
    assert metric.mean_value.dtype == torch.float64  # reset keeps the float64 states
    metric.update(torch.tensor([0.5, float("nan")]))
    assert torch.isnan(metric.compute())

    logged = {}
    module = type("Module", (), {"device": torch.device("cpu"),
                                 "log": lambda self, name, value, **kw: logged.__setitem__(name, value)})()
    outputs = Outputs("igos", "warn", None, display=(None, None))
    share = ShareResult(torch.arange(2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long),
                        None, torch.zeros(2, 1, 2, 2), {"insertion_auc": torch.tensor([0.2, 0.4]),
                                                        "deletion_auc": torch.tensor([0.1, 0.3])},
                        torch.zeros(2, dtype=torch.bool), ["", ""])
    outputs.log_scalars(module, share)
    assert type(logged["igos/insertion_auc"]) is HigherIsBetterMean
    assert type(logged["igos/deletion_auc"]) is LowerIsBetterMean

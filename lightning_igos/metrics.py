"""torchmetrics ``Metric`` classes: means across images (and processes) of the package's per-image values.

Every one is a torchmetrics :class:`~torchmetrics.aggregation.MeanMetric`: its states (a
weighted sum and the total weight) are reduced by summation, so they sync across processes.

* :class:`InsertionAUC`, :class:`DeletionAUC`: the mean causal AUCs of
  :func:`lightning_igos.core.causal.causal_curves` results (or of a tensor of per-image AUCs),
  accumulated in float64;
* :class:`HigherIsBetterMean`, :class:`LowerIsBetterMean`: a float32 mean that says which way is
  better, what :class:`~lightning_igos.IGOSCallback` logs for each of its mean scalars.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from lightning_igos.core.causal import CausalCurves
from lightning_igos.core.validation import check_bool

__all__ = ["DeletionAUC", "HigherIsBetterMean", "InsertionAUC", "LowerIsBetterMean"]


class HigherIsBetterMean(MeanMetric):
    """A mean whose higher values are better (``higher_is_better`` is a class constant in torchmetrics).

    Example:
        >>> import torch
        >>> metric = HigherIsBetterMean()
        >>> metric.update(torch.tensor([0.5, 1.0]))
        >>> metric.compute(), metric.higher_is_better
        (tensor(0.7500), True)
    """

    higher_is_better = True


class LowerIsBetterMean(MeanMetric):
    """A mean whose lower values are better: :class:`HigherIsBetterMean`'s other way.

    Example:
        >>> LowerIsBetterMean().higher_is_better
        False
    """

    higher_is_better = False


class _MeanAUC(MeanMetric):
    is_differentiable = False
    plot_lower_bound = 0.0
    _curve: str = ""

    def __init__(self, normalize: bool = False, **kwargs) -> None:
        # A NaN AUC makes the mean NaN (it is not dropped); the sum is kept in float64.
        super().__init__(nan_strategy="disable", **kwargs)
        self.normalize = check_bool(normalize, "normalize")
        self.set_dtype(torch.float64)

    def update(self, curves: CausalCurves | Tensor) -> None:  # type: ignore[override]
        """Add a batch: a :class:`CausalCurves` or a tensor ``(B,)`` of per-image AUCs.

        A tensor is taken as already computed AUCs, so it cannot be combined with
        ``normalize=True`` (pass the :class:`CausalCurves` instead).
        """
        if isinstance(curves, CausalCurves):
            name = f"{self._curve}_auc" + ("_normalized" if self.normalize else "")
            values = getattr(curves, name)
        elif isinstance(curves, Tensor):
            if self.normalize:
                raise ValueError(
                    "`curves` must be a CausalCurves when normalize=True: the clean scores are needed."
                )
            values = curves
        else:
            raise TypeError(
                f"`curves` must be a CausalCurves or a tensor of AUCs, got {type(curves).__name__}."
            )
        super().update(values.detach().reshape(-1).to(device=self.device, dtype=torch.float64))

    def compute(self) -> Tensor:
        """Mean AUC over all images seen (NaN before any update)."""
        return super().compute().float()


class InsertionAUC(_MeanAUC):
    """Mean insertion AUC: the target's score as the most salient pixels are put back
    on the substrate. Higher is better.

    Args:
        normalize: average the curve divided by the clean image's score, which removes
            the model's growing confidence from epoch-to-epoch comparisons.

    Example:
        >>> import torch
        >>> metric = InsertionAUC()
        >>> metric.update(torch.tensor([0.6, 0.8]))
        >>> metric.compute()
        tensor(0.7000)
    """

    higher_is_better = True
    _curve = "insertion"


class DeletionAUC(_MeanAUC):
    """Mean deletion AUC: the target's score as the most salient pixels are replaced by
    the substrate. Lower is better.

    Args:
        normalize: average the curve divided by the clean image's score.

    Example:
        >>> import torch
        >>> metric = DeletionAUC()
        >>> metric.update(torch.tensor([0.1, 0.3]))
        >>> metric.compute()
        tensor(0.2000)
    """

    higher_is_better = False
    _curve = "deletion"

"""torchmetrics ``Metric`` classes that average per-image causal AUCs.

They hold state only (a sum and a count, both reduced by summation, so they
sync correctly across processes) and take the result of
:func:`lightning_igos.core.causal.causal_curves` or a tensor of per-image AUCs.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from lightning_igos.core.causal import CausalCurves


class _MeanAUC(Metric):
    is_differentiable = False
    # The mean is sum / count: a batch's update does not need the global state.
    full_state_update = False
    plot_lower_bound = 0.0
    _curve: str = ""

    def __init__(self, normalize: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(normalize, bool):
            raise TypeError(f"`normalize` must be True or False, got {normalize!r}.")
        self.normalize = normalize
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, curves: CausalCurves | Tensor) -> None:
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
        values = values.detach().reshape(-1).to(device=self.total.device, dtype=torch.float64)
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        """Mean AUC over all images seen (NaN before any update)."""
        return (self.total / self.count).float() if self.count > 0 else torch.tensor(float("nan"))


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

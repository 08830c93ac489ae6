"""Causal insertion and deletion metrics (Petsiuk, Das and Saenko, BMVC 2018).

Pixels are ranked from most to least salient (ties broken by pixel index, so
results are deterministic). With ``steps = n``, point ``k`` (``k = 0..n``)
changes the top ``round(k * H * W / n)`` pixels:

* deletion replaces them by the deletion substrate: the curve starts at the clean
  image and ends at the substrate (lower area is better);
* insertion starts from the insertion substrate and puts them back from the image
  (higher area is better).

By default deleted pixels become zeros (the dataset mean of normalised inputs) and
insertion starts from a heavy blur of the image
(:func:`~lightning_igos.core.baselines.curve_substrates`): a blur keeps a bright
blob, a position or a colour, so at small image sizes the fully "deleted" blurred
image often keeps the class, and a correct map then scores like a random one
(``bench/substrate.py``). The ``substrate_score`` statistic, the deleted image's
score over the clean one, says when a substrate kept the evidence.

The area is the trapezoid rule over the fraction of changed pixels in [0, 1],
so a constant curve at ``p`` has area ``p``. The clean images and the substrates
(the two ends of both curves) are scored once each, and the ``2 * B * (n - 1)``
inner points go through the model in batches of at most ``max_batch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_igos.core.baselines import BaselineLike, check_baseline, curve_substrates, substrate_images
from lightning_igos.core.runner import ModelRunner, checked_start
from lightning_igos.core.runtime import chunks
from lightning_igos.core.scoring import ScoreFn, target_scores
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_positive_int,
    check_saliency,
)

# Denominator floor of the normalised curves: a clean score of 0 would divide by 0.
_EPS = 1e-8


@dataclass
class CausalCurves:
    """Result of :func:`causal_curves`.

    Attributes:
        fractions: ``(steps + 1,)`` fraction of pixels changed at each point.
        insertion, deletion: ``(B, steps + 1)`` target score at each point.
        insertion_auc, deletion_auc: ``(B,)`` areas under those curves.
        clean_score: ``(B,)`` score of the unmodified image (``deletion[:, 0]``).
        substrate_score: ``(B,)`` score of the insertion substrate (``insertion[:, 0]``); the
            deletion substrate's is ``deletion[:, -1]`` (the same when both curves share one).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> cc = causal_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 1, steps=4)
        >>> cc.fractions.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> bool(torch.allclose(cc.deletion[:, 0], cc.clean_score))
        True
    """

    fractions: Tensor
    insertion: Tensor
    deletion: Tensor
    insertion_auc: Tensor
    deletion_auc: Tensor
    clean_score: Tensor
    substrate_score: Tensor

    @property
    def insertion_normalized(self) -> Tensor:
        """Insertion curve divided by the clean image's score (comparable across epochs)."""
        return self.insertion / self.clean_score.clamp_min(_EPS)[:, None]

    @property
    def deletion_normalized(self) -> Tensor:
        """Deletion curve divided by the clean image's score."""
        return self.deletion / self.clean_score.clamp_min(_EPS)[:, None]

    @property
    def insertion_auc_normalized(self) -> Tensor:
        return self.insertion_auc / self.clean_score.clamp_min(_EPS)

    @property
    def deletion_auc_normalized(self) -> Tensor:
        return self.deletion_auc / self.clean_score.clamp_min(_EPS)


def auc(curve: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoid area of ``curve`` (..., n + 1) over ``fractions`` (n + 1,).

    Example:
        >>> auc(torch.full((2, 11), 0.3), torch.linspace(0, 1, 11))
        tensor([0.3000, 0.3000])
    """
    return torch.trapezoid(curve, x=fractions.to(curve), dim=-1)


def pixel_counts(num_pixels: int, steps: int) -> Tensor:
    """Pixels changed at each point: ``round(k * num_pixels / steps)`` for ``k = 0..steps``.

    Example:
        >>> pixel_counts(10, 4).tolist()
        [0, 2, 5, 8, 10]
    """
    k = torch.arange(steps + 1, dtype=torch.float64)
    return torch.round(k * num_pixels / steps).long()


def pixel_ranks(saliency: Tensor, size: tuple[int, int]) -> Tensor:
    """Rank of each pixel, 0 for the most salient, ``(B, H * W)``; ties go to the lower index.

    ``saliency`` ``(B, 1, h, w)`` is upsampled bilinearly to ``size`` first.

    Example:
        >>> pixel_ranks(torch.tensor([[[[0.1, 0.9], [0.5, 0.9]]]]), (2, 2)).tolist()
        [[3, 0, 2, 1]]
    """
    s = saliency.float()
    if tuple(s.shape[-2:]) != tuple(size):
        s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
    flat = s.flatten(1)
    order = torch.argsort(-flat, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return ranks


#: A fully substituted image that keeps more than this share of the clean score kept the evidence.
SUBSTRATE_SCORE_LIMIT = 0.5


def substrate_warning(substrate_scores: Tensor, limit: float = SUBSTRATE_SCORE_LIMIT, *,
                      clean_scores: Tensor | None = None, num_classes: int | None = None) -> str | None:
    """The warning for a substrate that kept the evidence, or None.

    ``substrate_scores`` ``(B,)`` are the ``substrate_score`` statistic: the fully substituted
    image's score over the clean one. When it is above ``limit`` on more than half of the images,
    deleting every pixel leaves the model as sure as before: a deletion curve cannot fall, and a
    map on the right pixels scores like a random one. With softmax scores, ``clean_scores``
    ``(B,)`` and ``num_classes`` ``K``, the share is counted above chance: an image counts when
    more than ``limit`` of its clean score's excess over ``1 / K`` survived (a two-class model
    sits at 0.5 on an image without evidence, which is half of a sure clean score), and only
    images the model is sure of, at least halfway from chance to 1, are judged: on an image near
    chance (an untrained model) there is no evidence to keep.

    Example:
        >>> substrate_warning(torch.tensor([0.2, 0.1, 0.9])) is None
        True
        >>> substrate_warning(torch.tensor([0.97, 0.99, 0.3]))[:40]
        'the substrate kept the evidence: with ev'
        >>> substrate_warning(torch.tensor([0.51, 0.52]), clean_scores=torch.tensor([0.98, 0.96]), num_classes=2)
        >>> substrate_warning(torch.tensor([1.0, 1.0]), clean_scores=torch.tensor([0.3, 0.3]), num_classes=4)
    """
    scores = substrate_scores.detach().float().flatten().cpu()
    limits = torch.full_like(scores, limit)
    finite = scores.isfinite()
    if clean_scores is not None and num_classes is not None and num_classes >= 2:
        clean = clean_scores.detach().float().flatten().cpu().clamp_min(1e-8)
        limits = limit + (1 - limit) / num_classes / clean
        finite &= clean > 0.5 + 0.5 / num_classes
    scores, limits = scores[finite], limits[finite]
    kept = int((scores > limits).sum())
    if scores.numel() == 0 or 2 * kept <= scores.numel():
        return None
    above = f"{limit:g} of their clean score" if num_classes is None or clean_scores is None else (
        f"{limit:g} of their clean score's excess over chance")
    return (f"the substrate kept the evidence: with every pixel substituted, {kept} of {scores.numel()} images "
            f"keep more than {above} (substrate_score, mean {float(scores.mean()):.2f}), "
            "so a deletion curve cannot fall and a correct map scores like a random one. Use "
            "deletion_substrate='zeros' or 'mean' (--deletion-substrate in the check), or a substrate that removes "
            "what the model looks at (a wider blur, as a callable).")


def causal_curves(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: TargetsLike,
    *,
    steps: int = 50,
    substrate: BaselineLike | None = None,
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
    deletion_substrate: BaselineLike | None = None,
    insertion_substrate: BaselineLike | None = None,
) -> CausalCurves:
    """Insertion and deletion curves and their areas for each image's saliency.

    Args:
        model: classifier returning logits ``(B, num_classes)``.
        images: ``(B, C, H, W)`` inputs as the model takes them.
        saliency: ``(B, 1, h, w)`` or ``(B, h, w)``, higher is more salient; a lower
            resolution than the images is upsampled bilinearly.
        targets: class per image (int, sequence or tensor ``(B,)``).
        steps: number of points minus one on each curve.
        substrate: what deleted pixels become and insertion starts from: ``"blur"``,
            ``"zeros"``, ``"mean"``, a tensor or a callable; None: ``"zeros"`` for deletion
            and ``"blur"`` for insertion.
        score_fn: ``score_fn(logits, targets) -> (B,)``; default softmax probability.
        max_batch_size: images per forward pass; None picks a default per device.
        deletion_substrate, insertion_substrate: one curve's substrate, over ``substrate``.

    The model is run in eval mode under ``no_grad`` and its mode is restored.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
        >>> x = torch.randn(2, 3, 8, 8)
        >>> cc = causal_curves(model, x, torch.rand(2, 1, 8, 8), [0, 2], steps=8)
        >>> cc.insertion.shape, cc.deletion_auc.shape
        (torch.Size([2, 9]), torch.Size([2]))
    """
    model, images, targets_t, _ = check_call(model, images, targets, max_batch_size)
    saliency = check_saliency(saliency, images)
    steps = check_positive_int(steps, "steps")
    for value, name in ((substrate, "substrate"), (deletion_substrate, "deletion_substrate"),
                        (insertion_substrate, "insertion_substrate")):
        if value is not None:
            check_baseline(value, name)
    deleted, inserted = curve_substrates(substrate, deletion_substrate, insertion_substrate)
    runner, x, targets_t, logits = checked_start(model, images, targets_t, score_fn=score_fn,
                                                 max_batch_size=max_batch_size)
    with runner.running(grad=False):
        clean = target_scores(logits, targets_t, score_fn)
        sub, into = substrate_images(x, (deleted, inserted), deletion_substrate is not None,
                                     insertion_substrate is not None)
    return _score_curves(runner, x, saliency, targets_t, steps=steps, substrate=sub, clean_score=clean,
                        insertion_substrate=into)


def _score_curves(runner: ModelRunner, x: Tensor, saliency: Tensor, targets: Tensor, *, steps: int, substrate: Tensor,
           clean_score: Tensor, insertion_substrate: Tensor | None = None) -> CausalCurves:
    """The kernel behind :func:`causal_curves`; its inputs are trusted (checked by the caller).

    ``x`` float32 images, ``substrate`` their deletion substrate images and ``insertion_substrate``
    the insertion curve's (None or the same tensor: one substrate for both, scored once),
    ``targets`` a long tensor, ``clean_score`` ``(B,)`` the target's score on ``x`` (the curves' clean ends).
    """
    batch, _, height, width = x.shape
    device = x.device
    cap = runner.cap
    with runner.running(grad=False):
        # The curves' ends are the clean image (deletion at 0, insertion at 1) and the substrates
        # (insertion at 0, deletion at 1): each is scored once.
        into = substrate if insertion_substrate is None else insertion_substrate
        deleted_score = runner.scores_in_chunks(substrate, targets)
        substrate_score = deleted_score if into is substrate else runner.scores_in_chunks(into, targets)
        ranks = pixel_ranks(saliency.to(device), (height, width)).view(batch, 1, height, width)
        counts = pixel_counts(height * width, steps).to(device)
        points = steps + 1
        scores = torch.empty(2, batch, points, device=device)
        scores[0, :, 0], scores[0, :, steps] = substrate_score, clean_score  # insertion
        scores[1, :, 0], scores[1, :, steps] = clean_score, deleted_score  # deletion
        inner = steps - 1
        # Flattened (image, inner point) pairs, image-major; each piece serves both curves.
        flat_scores = scores[:, :, 1:steps].reshape(2, batch * inner) if inner else None
        for start, stop in chunks(batch * inner, max(1, cap // 2)):  # two images per pair
            flat = torch.arange(start, stop, device=device)
            rows, k = flat // inner, flat % inner + 1
            changed = ranks[rows] < counts[k].view(-1, 1, 1, 1)
            xs, subs, t = x[rows], substrate[rows], targets[rows]
            # Both halves are written into one batch: no concatenation copy.
            both_images = x.new_empty((2 * len(rows), *x.shape[1:]))
            torch.where(changed, xs, into[rows], out=both_images[: len(rows)])  # inserted
            torch.where(changed, subs, xs, out=both_images[len(rows):])  # deleted
            flat_scores[:, start:stop] = runner.scores(both_images, torch.cat([t, t])).view(2, -1)
        if inner:
            scores[:, :, 1:steps] = flat_scores.view(2, batch, inner)
        insertion, deletion = scores.unbind(0)
        fractions = counts.double() / (height * width)
        fractions = fractions.to(insertion.dtype)
        return CausalCurves(
            fractions=fractions,
            insertion=insertion,
            deletion=deletion,
            insertion_auc=auc(insertion, fractions),
            deletion_auc=auc(deletion, fractions),
            clean_score=deletion[:, 0].clone(),
            substrate_score=insertion[:, 0].clone(),
        )


def needed_fraction(insertion: Tensor, fractions: Tensor, clean_score: Tensor, level: float = 0.5) -> Tensor:
    """The smallest fraction of pixels at which each insertion curve gives back ``level`` of the clean score.

    The curve is read as piecewise linear between its points: the result is where it first
    reaches ``level * clean_score``, 0 when the substrate alone already scores that much.
    Smaller is better (fewer of the map's top pixels carry the class). A curve that never
    reaches the level (possible only when its last point is not the clean score, e.g. a
    negative clean score) gives 1.0: all the pixels were needed and were not enough.

    Args:
        insertion: ``(B, n + 1)`` scores, ``fractions``: ``(n + 1,)`` increasing, ``clean_score``: ``(B,)``.
        level: the share of the clean score to give back.

    Returns:
        ``(B,)`` in [0, 1], the dtype of ``insertion``.

    Example:
        >>> f = torch.linspace(0, 1, 5)  # 0, 0.25, 0.5, 0.75, 1
        >>> needed_fraction(torch.tensor([[0.0, 0.2, 0.6, 0.8, 0.8]]), f, torch.tensor([0.8]))
        tensor([0.3750])
    """
    curve = insertion if insertion.is_floating_point() else insertion.float()
    x = fractions.to(curve)
    target = (level * clean_score.to(curve)).unsqueeze(1)
    reached = curve >= target
    first = reached.float().argmax(dim=1)  # the first point at or above the level (0 when none)
    ever = reached.any(dim=1)
    before = (first - 1).clamp_min(0)
    y0, y1 = curve.gather(1, before[:, None])[:, 0], curve.gather(1, first[:, None])[:, 0]
    x0, x1 = x[before], x[first]
    rise = (y1 - y0).clamp_min(torch.finfo(curve.dtype).tiny)  # > 0 wherever it is used (y0 < target <= y1)
    crossing = x0 + (target[:, 0] - y0) / rise * (x1 - x0)
    out = torch.where(first == 0, x[0].expand_as(crossing), crossing.clamp(x0, x1))
    return torch.where(ever, out, torch.ones_like(out)).to(insertion.dtype)

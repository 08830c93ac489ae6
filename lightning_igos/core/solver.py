"""Batched I-GOS and iGOS++ saliency solvers.

I-GOS (Qi, Khorram and Li, AAAI 2020) finds a keep-mask ``m`` (1 keeps a pixel,
0 replaces it by a baseline, by default a heavy blur of the image) that minimises
the target's probability, with an L1 term that keeps the removed area small and a
total-variation term that keeps it smooth. It descends along the *integrated
gradient* of the score over the path from the baseline to the masked image,
which avoids the adversarial masks a plain gradient finds, and takes per-image
Armijo steps on the noise-free objective. The saliency is ``1 - upsample(m)``.

Three choices differ from the reference implementation, all measured on a real
ImageNet classifier (EfficientNet-Lite0 on photos): the score term is divided by
the image's clean score (``normalize_score``), because the reference weights were
set for models confident near 1 and leave every mask at all ones on models that
are 15-80% sure; the score term measures ``-log(1 - p)`` rather than ``p``
(``objective``), because the softmax's gradient ``p(1 - p)`` vanishes on images the
model is 97-99.9% sure of and leaves their masks unmoved; and the mask has the
image's resolution by default (the reference used 28x28 at 224), which improves
both causal AUCs.

The integration noise belongs to each image (:class:`_PathNoise`): it is drawn from
the seed and the image's own values, so what an image's mask is computed from does not
depend on the batch it is explained in, its position, the other images or ``max_batch_size``;
the mask is bitwise the same at the same batch shapes, and agrees to the backend's rounding
(kernels chosen by batch shape) otherwise.
An explanation whose gradient was ever NaN or infinite, or whose mask never moved,
is flagged as empty (:attr:`Explanation.empty`); the other two of the four reasons in
:data:`EMPTY_REASONS`, a saliency map that is non-finite or the same everywhere, are those of
explainers without a mask. iGOS++ (Khorram
et al., CHIL 2021) optimises a deletion and an insertion mask together, with an
edge-aware smoothness term; their product is the result.

Everything is batched: the ``ig_steps`` path points of all images are pushed
through the model together (in pieces of at most ``max_batch_size`` images),
and the line-search trials of all images that are still searching are one
batched forward. Each line search starts from the image's last accepted step,
and an image whose searches keep failing has converged and leaves the batch, so
the cost follows the images that still descend (the repository's ``bench/README.md``
has the curve of quality against passes the defaults were chosen from).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_igos.core.baselines import BaselineLike, make_baseline
from lightning_igos.core.config import DEFAULTS, SOLVER_FIELDS, IGOSConfig
from lightning_igos.core.runner import ModelRunner, checked_start
from lightning_igos.core.runtime import chunks, draw_seed
from lightning_igos.core.scoring import ScoreFn, log_complement, target_scores
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_mask_size,
)

# Armijo line search constants: sufficient decrease 1e-4, shrink by 0.2.
ARMIJO_C = 1e-4
STEP_DECAY = 0.2
# A line search whose first trial was accepted starts the next iteration this much larger.
STEP_GROWTH = 2.0
# The reference hyper-parameters are set for a 28x28 mask.
REFERENCE_CELLS = 28 * 28
# Floor of the clean score the relative objective divides by.
MIN_SCORE = 1e-3
# A mask none of whose cells moved this far from 1 is an empty explanation.
MIN_MASK_MOVE = 1e-3
#: The methods :func:`igos` solves (the explainers registry adds others).
SOLVER_METHODS = ("igos", "igos++")
#: Reasons of :attr:`Explanation.empty_reasons`.
NONFINITE_GRADIENT = "non-finite gradient"
UNMOVED_MASK = "mask never moved"
NONFINITE_SALIENCY = "non-finite saliency"
CONSTANT_SALIENCY = "constant saliency"
#: The four reasons, in that order: the first two for a mask, the last two for a saliency map.
EMPTY_REASONS = (NONFINITE_GRADIENT, UNMOVED_MASK, NONFINITE_SALIENCY, CONSTANT_SALIENCY)


@dataclass
class Explanation:
    """Result of :func:`igos` (and of every explainer run by :func:`~lightning_igos.core.evaluation.evaluate`).

    Attributes:
        mask: ``(B, 1, h, w)`` keep-mask in [0, 1]; 1 keeps the pixel, 0 replaces it by
            the baseline. For iGOS++ the product of the deletion and insertion masks. None for
            explainers that make a saliency without a mask (e.g. ``"gradient"``).
        saliency: ``(B, 1, H, W)`` heatmap, ``1 - upsample(mask)``: high where removing the
            pixel lowers the target's score.
        targets: ``(B,)`` the explained classes.
        clean_score: ``(B,)`` the target's score on the unmodified images.
        masked_score: ``(B,)`` the target's score with the mask applied (deletion form); None without a mask.
        objective: ``(B,)`` the final noise-free objective; None without a mask.
        passes_per_image: model images the explainer pushed through the model per explained
            image (the clean forward it was given excluded).
        converged: ``(B,)`` True for images whose descent stopped before ``iterations``
            ran out (see ``patience``); None without a mask.
        deletion_mask, insertion_mask: the two masks of iGOS++ (None for I-GOS).
        empty: ``(B,)`` True for an *empty explanation*: an image whose integrated gradient
            was NaN or infinite at some iteration, or whose mask never moved (no cell
            changed by ``MIN_MASK_MOVE`` = 0.001 or more); for a saliency without a mask, one
            that is NaN or infinite anywhere, or the same everywhere. Its saliency ranks nothing
            and its AUCs say nothing about the model; reports name it and the check fails on it.
        empty_reasons: per image ``""`` or the reason, one of :data:`EMPTY_REASONS`
            (``"non-finite gradient"``, ``"mask never moved"``, ``"non-finite saliency"``,
            ``"constant saliency"``).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2))
        >>> ex = igos(model, torch.randn(1, 3, 16, 16), 0, iterations=1, ig_steps=2)
        >>> sorted(ex.mask_stats())
        ['mask_frac_below_half', 'mask_mean', 'mask_min']
    """

    mask: Tensor | None
    saliency: Tensor
    targets: Tensor
    clean_score: Tensor
    masked_score: Tensor | None
    objective: Tensor | None
    passes_per_image: float
    converged: Tensor | None
    deletion_mask: Tensor | None = None
    insertion_mask: Tensor | None = None
    empty_reasons: list[str] = field(default_factory=list)

    @classmethod
    def from_saliency(cls, saliency: Tensor, targets: Tensor, clean_score: Tensor,
                      passes_per_image: float) -> Explanation:
        """The explanation of a saliency map without a mask; NaN/infinite or constant maps are empty.

        Example:
            >>> ex = Explanation.from_saliency(torch.ones(2, 1, 4, 4), torch.tensor([0, 1]), torch.ones(2), 1.0)
            >>> ex.empty_reasons, ex.mask is None
            (['constant saliency', 'constant saliency'], True)
        """
        flat = saliency.detach().flatten(1)
        finite = torch.isfinite(flat).all(1)
        constant = flat.amax(1) == flat.amin(1)
        safe = torch.where(finite.view(-1, 1, 1, 1), saliency.detach(), torch.zeros_like(saliency))
        return cls(
            mask=None, saliency=safe.float(), targets=targets, clean_score=clean_score, masked_score=None,
            objective=None, passes_per_image=passes_per_image, converged=None,
            empty_reasons=[NONFINITE_SALIENCY if not ok else CONSTANT_SALIENCY if same else ""
                           for ok, same in zip(finite.tolist(), constant.tolist())],
        )

    @property
    def empty(self) -> Tensor:
        """``(B,)`` True where :attr:`empty_reasons` names a reason, on the saliency's device."""
        return torch.tensor([bool(reason) for reason in self.empty_reasons], dtype=torch.bool,
                            device=self.saliency.device)

    def mask_stats(self) -> dict[str, float]:
        """Minimum, mean and fraction below 0.5 of the masks of all images: an unmoved mask is a bug."""
        if self.mask is None:
            raise ValueError("this explanation has no mask (its explainer makes a saliency map only).")
        per_image = mask_statistics(self.mask)
        return {
            "mask_min": float(per_image["mask_min"].min()),
            "mask_mean": float(per_image["mask_mean"].mean()),
            "mask_frac_below_half": float(per_image["mask_frac_below_half"].mean()),
        }


def mask_statistics(mask: Tensor) -> dict[str, Tensor]:
    """Per-image minimum, mean and fraction below 0.5 of ``(B, 1, h, w)`` masks: an unmoved mask is a bug.

    Example:
        >>> stats = mask_statistics(torch.tensor([[[[0.2, 1.0], [1.0, 1.0]]]]))
        >>> {k: round(float(v), 2) for k, v in stats.items()}
        {'mask_mean': 0.8, 'mask_min': 0.2, 'mask_frac_below_half': 0.25}
    """
    m = mask.detach().float().flatten(1)
    return {
        "mask_mean": m.mean(1),
        "mask_min": m.amin(1),
        "mask_frac_below_half": (m < 0.5).float().mean(1),
    }


def _resolve_mask_size(mask_size: None | int | tuple[int, int], height: int, width: int) -> tuple[int, int]:
    """Mask resolution: given, or the image's own (one mask cell per pixel).

    Example:
        >>> _resolve_mask_size(None, 224, 224), _resolve_mask_size(7, 64, 64)
        ((224, 224), (7, 7))
    """
    size = check_mask_size(mask_size, image_size=(height, width))
    return (height, width) if size is None else size


def _deletion(x: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """phi(x, b, M) = x * M + b * (1 - M): the image where the mask keeps it."""
    return b + (x - b) * keep


def _insertion(x: Tensor, b: Tensor, keep: Tensor) -> Tensor:
    """phi(b, x, M): the baseline where the mask keeps, the image where it removes."""
    return x + (b - x) * keep


def _upsample(masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of ``(B, 1, h, w)`` masks to ``size``; a full-resolution mask is used as is."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks
    return F.interpolate(masks, size=size, mode="bilinear", align_corners=False)


def _keep(masks: list[Tensor]) -> Tensor:
    """The keep-mask: the mask itself, or for iGOS++ the product of its two masks."""
    return masks[0] if len(masks) == 1 else masks[0] * masks[1]


def _total_variation(m: Tensor, power: float, weights: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Per-image mean |vertical diff|^p + mean |horizontal diff|^p, optionally edge-weighted."""
    dv = (m[..., 1:, :] - m[..., :-1, :]).abs().pow(power)
    dh = (m[..., :, 1:] - m[..., :, :-1]).abs().pow(power)
    if weights is not None:
        dv, dh = dv * weights[0], dh * weights[1]
    zero = m.new_zeros(m.shape[0])
    tv_v = dv.flatten(1).mean(1) if dv.numel() else zero
    tv_h = dh.flatten(1).mean(1) if dh.numel() else zero
    return tv_v + tv_h


def _bilateral_weights(images: Tensor, size: tuple[int, int], sigma: float) -> tuple[Tensor, Tensor]:
    """Edge weights at mask resolution: small across image edges, 1 in flat regions."""
    small = F.adaptive_avg_pool2d(images.float(), size)
    dv = (small[..., 1:, :] - small[..., :-1, :]).pow(2).sum(1, keepdim=True)
    dh = (small[..., :, 1:] - small[..., :, :-1]).pow(2).sum(1, keepdim=True)
    return torch.exp(-dv / (2 * sigma**2)), torch.exp(-dh / (2 * sigma**2))


# Integer mixing for the noise offsets: products of two values below 2**31 stay inside int64.
_HASH_PRIME = 2_147_483_647
_HASH_MULTIPLIERS = (1_103_515_245, 1_664_525_731, 2_024_337_881)


def _image_keys(images: Tensor, seed: int) -> list[int]:
    """One 63-bit key per image from ``seed`` and the image's values (its float32 bytes).

    Two images with the same values get the same key whatever batch, position or device
    they come in, so the noise drawn from the key belongs to the image, not to the call.

    Example:
        >>> x = torch.randn(2, 3, 4, 4)
        >>> _image_keys(x, 0)[1] == _image_keys(x[1:], 0)[0], _image_keys(x, 0) == _image_keys(x, 1)
        (True, False)
    """
    host = images.detach().float().cpu().contiguous()
    keys = []
    for image in host:
        digest = hashlib.blake2b(image.numpy().tobytes(), digest_size=8, key=seed.to_bytes(8, "little"))
        digest.update(repr(tuple(image.shape)).encode())
        keys.append(int.from_bytes(digest.digest(), "little") >> 1)
    return keys


def _keyed_normals(keys: list[int], shape: tuple[int, ...]) -> Tensor:
    """``(len(keys), *shape)`` standard normals on the CPU, row ``i`` drawn from a generator seeded with ``keys[i]``."""
    out = torch.empty(len(keys), *shape)
    for row, key in zip(out, keys):
        torch.randn(row.shape, generator=torch.Generator().manual_seed(key), out=row)
    return out


class _PathNoise:
    """Gaussian noise for the integration path that is a function of each image and the seed only.

    Each image owns a bank of ``2 * C*H*W`` i.i.d. normals, drawn on the CPU from a
    generator seeded with the image's key (:func:`_image_keys`), so the bank is the same
    on every device and in every batch. A path point reads a window of ``C*H*W``
    values at an offset that is an integer hash of the image's key, how many descent
    directions the image has had, the score term and the integration step: windows at
    different offsets pair every element with a different variate, so the points'
    noise is uncorrelated. The offsets are computed on the device (no host sync), and
    reading the windows is one gather per chunk: no fresh random numbers per pass.
    """

    def __init__(self, images: Tensor, std: float, seed: int) -> None:
        batch = images.shape[0]
        self.per_image = math.prod(images.shape[1:])
        keys = _image_keys(images, seed)
        self.banks = (std * _keyed_normals(keys, (2 * self.per_image,))).to(images.device)
        self.windows = self.banks.as_strided(
            (batch, self.per_image + 1, self.per_image), (2 * self.per_image, 1, 1)
        )
        self.keys = torch.tensor([key % _HASH_PRIME for key in keys], device=images.device)
        self.calls = torch.zeros(batch, dtype=torch.long, device=images.device)

    def start_direction(self, index: Tensor) -> None:
        """The images ``index`` start a new descent direction: their next points get new offsets."""
        self.calls[index] += 1

    def offsets(self, rows: Tensor, term: int, steps: Tensor) -> Tensor:
        """``(len(rows), len(steps))`` window offsets of images ``rows`` at integration ``steps``."""
        a, b, c = _HASH_MULTIPLIERS
        h = (self.keys[rows] * a + self.calls[rows] * b + term) % _HASH_PRIME
        h = (h.unsqueeze(1) * c + steps.unsqueeze(0) + 1) % _HASH_PRIME
        h = (h * a + 12_345) % _HASH_PRIME
        return h % (self.per_image + 1)

    def add_to(self, inputs: Tensor, rows: Tensor, term: int, steps: Tensor) -> Tensor:
        """``inputs`` (``len(rows) * len(steps)`` path points, image-major) plus their noise."""
        noise = self.windows[rows.unsqueeze(1), self.offsets(rows, term, steps)]
        return inputs + noise.view(inputs.shape).to(inputs.dtype)


class _Problem:
    """The batched objective: model runner, images, baselines and regulariser of one solve."""

    def __init__(
        self,
        runner: ModelRunner,
        images: Tensor,
        baselines: Tensor,
        targets: Tensor,
        *,
        bilateral: bool,
        mask_size: tuple[int, int],
        ig_steps: int,
        quadrature: str,
        objective: str,
        l1: float,
        tv: float,
        tv_power: float,
        noise_std: float,
        seed: int,
    ) -> None:
        self.runner = runner
        self.images = images
        self.baselines = baselines
        self.targets = targets
        self.size = images.shape[-2:]
        self.ig_steps = ig_steps
        self.alphas, self.weights = _path_points(ig_steps, quadrature, images.device)
        self.log_complement = objective == "log_complement"
        # `tv` is the weight at the reference 28x28 mask. The mean squared difference of
        # a smooth mask grows as (28 / n)^2 at an n x n mask, so the weight is scaled by
        # the cell count to keep the same smoothness prior at every resolution.
        self.l1, self.tv, self.tv_power = l1, tv * mask_size[0] * mask_size[1] / REFERENCE_CELLS, tv_power
        self.cap = runner.cap
        self.noise = _PathNoise(images, noise_std, seed) if noise_std > 0 else None
        # Images whose integrated gradient was ever NaN or infinite: their explanation is empty.
        self.nonfinite = torch.zeros(images.shape[0], dtype=torch.bool, device=images.device)
        # iGOS++ optimises a deletion and an insertion mask; the objective uses their product.
        self.terms: list[tuple[float, Callable[[Tensor, Tensor, Tensor], Tensor]]] = [(1.0, _deletion)]
        self.edge_weights = None
        if bilateral:
            self.terms.append((-1.0, _insertion))
            self.edge_weights = _bilateral_weights(images, mask_size, sigma=0.5)
        # Per-image weight of the score terms (1 / clean score when the objective is relative).
        self.score_weight = torch.ones(images.shape[0], device=images.device)

    def evidence(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """The target's score of each output, and what the objective's score term measures of it."""
        score = target_scores(logits, targets, self.runner.score_fn)
        if not self.log_complement:
            return score, score
        return score, log_complement(logits, targets, score, self.runner.score_fn)

    def scores(self, inputs: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`evidence` of one forward of ``inputs``."""
        return self.evidence(self.runner.logits(inputs), targets)

    def upsample(self, masks: Tensor) -> Tensor:
        return _upsample(masks, self.size)

    def regulariser(self, masks: list[Tensor], index: Tensor) -> Tensor:
        """L1 + TV (+ edge-weighted TV for iGOS++) of the masks of images ``index``."""
        edge_weights = None if self.edge_weights is None else tuple(w[index] for w in self.edge_weights)
        reg = 0.0
        for m in masks:
            # m <= 1, so mean(1 - m) is the L1 distance to the all-ones mask with a
            # gradient that is defined at the start (|.| has gradient 0 at 0).
            reg = reg + self.l1 * (1 - m).flatten(1).mean(1)
            reg = reg + self.tv * _total_variation(m, self.tv_power)
            if edge_weights is not None:
                reg = reg + self.tv * _total_variation(m, self.tv_power, edge_weights)
        return reg

    def objective(self, masks: list[Tensor], index: Tensor,
                  clean_logits: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Noise-free objective of the images ``index`` under ``masks``; also the deletion score and term.

        ``clean_logits``: the model's logits on the unmodified images ``index``, for all-ones
        masks (the start), whose deletion term is the clean image itself.
        """
        keep = _keep(masks)
        total = torch.zeros(index.shape[0], device=keep.device)
        deletion_score = torch.zeros_like(total)
        deletion_term = torch.zeros_like(total)
        for sign, compose in self.terms:
            if compose is _deletion and clean_logits is not None:
                s, evidence = self.evidence(clean_logits, self.targets[index])
                total += sign * evidence
                deletion_score[:], deletion_term[:] = s, evidence
                continue
            for start, stop in chunks(index.shape[0], self.cap):
                rows = index[start:stop]
                up = self.upsample(keep[start:stop])
                s, evidence = self.scores(compose(self.images[rows], self.baselines[rows], up), self.targets[rows])
                total[start:stop] += sign * evidence
                if compose is _deletion:
                    deletion_score[start:stop] = s
                    deletion_term[start:stop] = evidence
        return total * self.score_weight[index] + self.regulariser(masks, index), deletion_score, deletion_term

    def descent_direction(self, masks: list[Tensor], index: Tensor) -> list[Tensor]:
        """Integrated gradient of the score terms plus the regulariser's gradient, for images ``index``."""
        masks = [m.detach() for m in masks]
        keep = _keep(masks)
        keep_grad = torch.zeros_like(keep)
        steps = self.ig_steps
        if self.noise is not None:
            self.noise.start_direction(index)
        for term, (sign, compose) in enumerate(self.terms):
            for first, last, k0, k1 in _path_chunks(index.shape[0], steps, self.cap):
                rows = index[first:last]
                n_img, n_step = last - first, k1 - k0
                # One leaf per path point: each point's gradient comes back on its own and is
                # added below in step order, so an image's direction is the same sum in the
                # same order however its path is split over passes.
                points = keep[first:last].unsqueeze(1).expand(n_img, n_step, *keep.shape[1:]).clone()
                points.requires_grad_(True)
                up = self.upsample(points.flatten(0, 1)).view(n_img, n_step, 1, *self.size)
                alpha = self.alphas[k0:k1].to(up.dtype).view(1, -1, 1, 1, 1)
                x = self.images[rows].unsqueeze(1)
                b = self.baselines[rows].unsqueeze(1)
                inputs = compose(x, b, alpha * up).flatten(0, 1)
                if self.noise is not None:
                    inputs = self.noise.add_to(inputs, rows, term, torch.arange(k0, k1, device=up.device))
                _, s = self.scores(inputs, self.targets[rows].repeat_interleave(n_step))
                s = s * self.score_weight[rows].repeat_interleave(n_step)
                s = s * self.weights[k0:k1].repeat(n_img)
                (per_point,) = torch.autograd.grad(sign * s.sum(), points)
                for k in range(n_step):
                    keep_grad[first:last] += per_point[:, k]
        # The chain rule from the keep-mask to the masks (iGOS++ keeps their product).
        grads = [keep_grad] if len(masks) == 1 else [keep_grad * masks[1], keep_grad * masks[0]]
        leaves = [m.requires_grad_(True) for m in masks]
        reg = self.regulariser(leaves, index).sum()
        for g, part in zip(grads, torch.autograd.grad(reg, leaves)):
            g += part
        # A NaN or infinite direction must not move the mask (nor pass as a converged one):
        # the image is marked and its direction zeroed, so its mask stays where it was.
        bad = torch.stack([~torch.isfinite(g).flatten(1).all(1) for g in grads]).any(0)
        self.nonfinite[index] |= bad
        return [torch.where(bad.view(-1, 1, 1, 1), torch.zeros_like(g), g) for g in grads]


def _path_points(steps: int, quadrature: str, device: torch.device) -> tuple[Tensor, Tensor]:
    """Positions ``alpha`` in (0, 1] along the baseline-to-image path and their weights (summing to 1).

    ``"riemann"`` is the reference's right Riemann sum, ``alpha = k / steps``;
    ``"gauss-legendre"`` places the points at the Legendre nodes, exact for polynomials of
    degree ``2 * steps - 1``, so fewer points integrate a smooth path as well.

    Example:
        >>> alphas, weights = _path_points(2, "gauss-legendre", torch.device("cpu"))
        >>> [round(a, 4) for a in alphas.tolist()], weights.tolist()
        ([0.2113, 0.7887], [0.5, 0.5])
    """
    if quadrature == "riemann":
        alphas = torch.arange(1, steps + 1, dtype=torch.float64) / steps
        weights = torch.full((steps,), 1.0 / steps, dtype=torch.float64)
    else:
        nodes, w = np.polynomial.legendre.leggauss(steps)
        alphas, weights = torch.from_numpy((nodes + 1) / 2), torch.from_numpy(w / 2)
    return alphas.float().to(device), weights.float().to(device)


def _path_chunks(batch: int, steps: int, cap: int) -> list[tuple[int, int, int, int]]:
    """Pieces ``(first_image, last_image, first_step, last_step)`` of at most ``cap`` path points.

    Whole images when ``cap >= steps``, otherwise consecutive steps of one image.
    """
    if cap >= steps:
        per = cap // steps
        return [(i, min(i + per, batch), 0, steps) for i in range(0, batch, per)]
    return [(i, i + 1, k, min(k + cap, steps)) for i in range(batch) for k in range(0, steps, cap)]


@dataclass
class _Search:
    """Per-image state of the solve, kept between iterations."""

    masks: list[Tensor]
    objective: Tensor
    score: Tensor
    first_trial: Tensor  # the change of the largest cell the next line search tries first
    failures: Tensor  # consecutive line searches without an acceptable step

    def active(self, patience: int | None) -> Tensor:
        """Images still descending: fewer than ``patience`` failed searches in a row."""
        if patience is None:
            return torch.ones_like(self.failures, dtype=torch.bool)
        return self.failures < patience


def _line_search(problem: _Problem, state: _Search, index: Tensor, grads: list[Tensor], *,
                 initial_step: float, tolerance: float) -> None:
    """Per-image Armijo backtracking on images ``index``; all searching images share one forward.

    The direction is projected on the box [0, 1]: a component that pushes a cell
    already at a bound further out cannot move it, so it neither counts in the
    sufficient-decrease test nor sets the scale of the first trial step. Trial
    steps are measured by how far they move the mask's largest cell: the first
    is where the image's last accepted step was (twice that if it was accepted at
    once), the search shrinks by ``STEP_DECAY`` and gives up below ``tolerance``.
    A search that gives up adds one to the image's failure count (see
    :meth:`_Search.active`); an accepted step resets it.
    """
    masks = [m[index] for m in state.masks]
    grads = [g.masked_fill(((m >= 1) & (g < 0)) | ((m <= 0) & (g > 0)), 0.0) for m, g in zip(masks, grads)]
    gnorm2 = sum(g.flatten(1).pow(2).sum(1) for g in grads)
    gmax = torch.stack([g.flatten(1).abs().amax(1) for g in grads]).amax(0)
    change = state.first_trial[index].clone()
    step = change / gmax.clamp_min(1e-12)
    current = state.objective[index]
    searching = gmax > 0
    accepted = torch.zeros_like(searching)
    first_round = True
    while True:
        searching &= change >= tolerance
        todo = searching.nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        a = step[todo].view(-1, 1, 1, 1)
        trial = [(m[todo] - a * g[todo]).clamp(0, 1) for m, g in zip(masks, grads)]
        value, score, _ = problem.objective(trial, index[todo])
        ok = value <= current[todo] - ARMIJO_C * step[todo] * gnorm2[todo]
        done, rows = todo[ok], index[todo[ok]]
        for m, t in zip(state.masks, trial):
            m[rows] = t[ok]
        state.objective[rows] = value[ok]
        state.score[rows] = score[ok]
        state.first_trial[rows] = torch.clamp(
            change[done] * (STEP_GROWTH if first_round else 1.0), max=initial_step
        )
        accepted[done] = True
        searching[done] = False
        rejected = todo[~ok]
        step[rejected] *= STEP_DECAY
        change[rejected] *= STEP_DECAY
        first_round = False
    state.failures[index] = torch.where(accepted, 0, state.failures[index] + 1)


def igos(
    model: nn.Module,
    images: Tensor,
    targets: TargetsLike,
    *,
    method: str = DEFAULTS.method,
    mask_size: None | int | tuple[int, int] = DEFAULTS.mask_size,
    iterations: int = DEFAULTS.iterations,
    ig_steps: int = DEFAULTS.ig_steps,
    l1: float = DEFAULTS.l1,
    tv: float = DEFAULTS.tv,
    tv_power: float = DEFAULTS.tv_power,
    noise_std: float = DEFAULTS.noise_std,
    baseline: BaselineLike = DEFAULTS.baseline,
    max_batch_size: int | None = DEFAULTS.max_batch_size,
    generator: torch.Generator | None = None,
    initial_step: float = DEFAULTS.initial_step,
    tolerance: float = DEFAULTS.tolerance,
    patience: int | None = DEFAULTS.patience,
    score_fn: ScoreFn | None = DEFAULTS.score_fn,
    autocast_dtype: torch.dtype | None = DEFAULTS.autocast_dtype,
    normalize_score: bool = DEFAULTS.normalize_score,
    objective: str = DEFAULTS.objective,
    quadrature: str = DEFAULTS.quadrature,
) -> Explanation:
    """Explain ``model``'s decision for ``targets`` on ``images`` with I-GOS or iGOS++.

    Args:
        model: a classifier returning logits ``(B, num_classes)``; it stays on its device.
        images: ``(B, C, H, W)`` inputs exactly as the model takes them (normalised).
        targets: the class to explain per image: an int, a sequence or a tensor ``(B,)``.
        method: ``"igos"`` or ``"igos++"`` (bilateral: deletion and insertion masks).
        mask_size: mask resolution, an int or ``(h, w)``; None uses the image's (one cell per
            pixel; the ``tv`` term keeps it smooth). The reference I-GOS used 28x28 at 224.
        iterations: descent iterations, at most (see ``patience``). Each costs ``ig_steps``
            forward+backward passes per image plus a few forward-only line-search trials.
        ig_steps: integration steps along the path from the baseline to the masked image.
        l1: weight of the L1 term that keeps the removed area small (relative to the clean
            score, see ``normalize_score``).
        tv: weight of the total variation term that keeps the mask smooth, as set for a
            28x28 mask; it is scaled by ``h * w / 784`` for other mask sizes, so the same
            value means the same smoothness at every resolution.
        tv_power: exponent of the total variation differences.
        noise_std: std of the Gaussian noise added to each path point, in input units.
        baseline: ``"blur"``, ``"zeros"``, ``"mean"``, a tensor or a callable (see
            :mod:`lightning_igos.core.baselines`).
        max_batch_size: images per forward pass (bounds memory); None picks a default
            per device.
        generator: source of the integration noise's seed (one number is drawn from it);
            the global RNG is never used. None uses a CPU generator seeded with 0. Each
            image's noise is a function of that seed and of the image's own values, so an
            image gets the same mask whatever ``max_batch_size``, whatever other images
            share the call and in whatever order (on the CPU in float32, to 1e-5).
        initial_step: the first line-search trial moves the mask cell with the largest
            gradient by this much; later searches start from the image's last accepted
            step (doubled if it was accepted at once).
        tolerance: a line search gives up when its trial step would move the largest
            mask cell by less than this.
        patience: an image has converged, and costs no more passes, after this many
            iterations in a row whose line search gave up (the integration noise makes
            one failed search weak evidence). None runs every iteration on every image.
        score_fn: ``score_fn(logits, targets) -> (B,)`` for heads whose score is not the
            softmax probability of the target.
        autocast_dtype: run the model's forward passes under autocast with this dtype
            (e.g. ``torch.bfloat16`` on GPUs); None runs them in the model's own dtype.
        normalize_score: divide the score term of the objective by each image's clean
            score, so ``l1`` and ``tv`` weigh the regularisers against the *fraction* of
            the score a mask removes and mean the same for a model that is 15% or 99%
            sure. False uses the raw score, as the original I-GOS does (its weights, l1 1
            and tv 20, were set for models confident near 1).
        objective: what the score term measures. ``"probability"``: the target's score ``p``
            (I-GOS). ``"log_complement"``: ``-log(1 - p)``, which equals ``p`` for small ``p``
            and grows like the log-odds as ``p`` nears 1, so its gradient does not vanish on
            images the model is 97-99.9% sure of (the softmax's ``dp/dlogit = p(1 - p)`` does).
            It needs scores in [0, 1]: probabilities, as the default score is.
        quadrature: the points of the integrated gradient: ``"riemann"`` (``k / ig_steps``,
            the reference) or ``"gauss-legendre"`` (Legendre nodes and weights on [0, 1]).

    The model's parameters, their ``.grad``, the train/eval flag of every submodule
    and the global RNG state are left exactly as they were.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
        ...                       nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        >>> ex = igos(model, torch.randn(2, 3, 32, 32), targets=[0, 1], iterations=2, ig_steps=4)
        >>> ex.mask.shape, ex.saliency.shape
        (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 32, 32]))
        >>> bool((ex.saliency == 1 - ex.mask).all())  # a full-resolution mask: saliency = 1 - mask
        True
    """
    arguments = dict(locals())  # the keyword signature above is SOLVER_FIELDS and `generator` (a test keeps it so)
    model, images, targets_t, _ = check_call(model, images, targets, max_batch_size)
    # The options' defaults and checks live in IGOSConfig (one rule for every entry point).
    config = IGOSConfig(**{name: arguments[name] for name in SOLVER_FIELDS})
    if method not in SOLVER_METHODS:
        raise ValueError(f"`method` of igos() must be one of {SOLVER_METHODS}, got {method!r}; other explainers run "
                         "through lightning_igos.core.evaluation.evaluate(..., IGOSConfig(method=...)).")
    seed = draw_seed(generator)
    size = _resolve_mask_size(mask_size, *images.shape[-2:])
    runner, x, targets_t, clean_logits = checked_start(model, images, targets_t, autocast_dtype=autocast_dtype,
                                                       score_fn=score_fn, max_batch_size=max_batch_size)
    with runner.running(grad=False):
        b = make_baseline(x, baseline)
    return solve(runner, x, b, targets_t, config, seed=seed, mask_size=size, clean_logits=clean_logits)


def solve(runner: ModelRunner, x: Tensor, b: Tensor, targets: Tensor, config: IGOSConfig, *, seed: int,
          mask_size: tuple[int, int], clean_logits: Tensor) -> Explanation:
    """The I-GOS/iGOS++ kernel behind :func:`igos`: its inputs are trusted (checked by the caller).

    ``x`` and ``b`` are float32 images and baselines on the runner's device, ``targets`` a long
    tensor ``(B,)``, ``clean_logits`` the model's logits on ``x`` (the solve's start), and
    ``seed`` the integration noise's seed (:func:`draw_seed`). ``passes_per_image`` counts the
    model images this solve pushed, the clean forward excluded.
    """
    batch, _, height, width = x.shape
    device = x.device
    pushed = runner.images_pushed
    with runner.running(grad=True):
        problem = _Problem(
            runner, x, b, targets, bilateral=config.method == "igos++", mask_size=mask_size,
            ig_steps=config.ig_steps, quadrature=config.quadrature, objective=config.objective,
            l1=config.l1, tv=config.tv, tv_power=config.tv_power, noise_std=config.noise_std, seed=seed,
        )
        masks = [torch.ones(batch, 1, *mask_size, device=device) for _ in problem.terms]
        with torch.no_grad():
            current, score, clean_term = problem.objective(masks, torch.arange(batch, device=device),
                                                           clean_logits=clean_logits)
            clean_score = score.clone()
            if config.normalize_score:
                # The regulariser is 0 at the all-ones start, so the objective just scales.
                problem.score_weight = 1 / clean_term.abs().clamp_min(MIN_SCORE)
                current = current * problem.score_weight
        state = _Search(masks, current, score, first_trial=torch.full_like(current, float(config.initial_step)),
                        failures=torch.zeros(batch, dtype=torch.long, device=device))
        for _ in range(config.iterations):
            index = state.active(config.patience).nonzero().squeeze(1)
            if index.numel() == 0:
                break
            grads = problem.descent_direction([m[index] for m in state.masks], index)
            with torch.no_grad():
                _line_search(problem, state, index, grads, initial_step=config.initial_step,
                             tolerance=config.tolerance)

    masks = state.masks
    keep = _keep(masks)
    saliency = 1 - _upsample(keep, (height, width))
    unmoved = (1 - keep.detach().flatten(1).amin(1)) < MIN_MASK_MOVE
    return Explanation(
        mask=keep,
        saliency=saliency,
        targets=targets,
        clean_score=clean_score,
        masked_score=state.score,
        objective=state.objective,
        passes_per_image=(runner.images_pushed - pushed) / batch,
        converged=~state.active(config.patience),
        deletion_mask=masks[0] if len(masks) == 2 else None,
        insertion_mask=masks[1] if len(masks) == 2 else None,
        empty_reasons=[
            NONFINITE_GRADIENT if bad else UNMOVED_MASK if still else ""
            for bad, still in zip(problem.nonfinite.tolist(), unmoved.tolist())
        ],
    )

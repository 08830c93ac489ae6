"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, ICML 2022).

Deletion curves that replace pixels by a fixed substrate (blur, zeros) leak the
removed region's shape: the model may react to the mask rather than to the missing
evidence. ROAD removes pixels by *noisy linear imputation*, which fills them from
their surroundings so that the mask itself carries little information:

* every removed pixel takes the weighted mean of its 8 neighbours (direct neighbours
  weight 1/6, diagonal ones 1/12; at the image border the weights of the neighbours
  inside the image are renormalised to sum to one);
* all removed pixels of an image are solved for jointly, channel by channel: the known
  pixels are fixed and each removed pixel ``i`` satisfies ``x_i = sum_j w_ij x_j``. The
  system ``(D - W_uu) x_u = W_uk x_k`` (``D`` the neighbours' total weight) is symmetric
  and positive definite as long as one pixel is kept; it is solved by conjugate
  gradients preconditioned with a multigrid V-cycle, batched over images, fractions and
  channels, each system stopping on its own once its error is estimated below the
  tolerance (:func:`linear_imputation`). The iterations do not grow with the image, so
  the cost is about linear in the pixels;
* Gaussian noise of std ``noise_std`` (input units) is added to the imputed pixels. Each
  image gets one noise field, used at every fraction and for both orders: differences
  between points of the curves come from the removed pixels, not from the draw. The
  field is drawn from a generator seeded with one number from ``generator`` (never the
  global RNG) and the image's own values, as the solver's noise is, so an image's ROAD
  numbers do not depend on the other images of the call, their order, ``max_batch_size``
  or the process (rank) that scores it.

For each fraction ``f`` of ``fractions`` the top ``round(f * H * W)`` pixels are removed
(at most ``H * W - 1``), ranked by the saliency (ties go to the lower pixel index, as in
:mod:`~lightning_igos.core.causal`):

* MoRF, most relevant first: the score should fall fast, a lower area is better;
* LeRF, least relevant first: the score should stay, a higher area is better.

An area is the trapezoid rule over ``(0, *fractions)`` with the clean image's score at
fraction 0, divided by the last fraction: the mean height of the curve, so a constant
curve at ``p`` has area ``p`` and every area lies between the lowest and highest score.
``gap = lerf_area - morf_area`` combines both orders (higher is better); it is about
0 for a saliency that ranks pixels no better than chance.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    >>> images = torch.randn(2, 3, 8, 8)
    >>> rc = road_curves(model, images, torch.rand(2, 1, 8, 8), [0, 2], fractions=(0.25, 0.5, 0.75))
    >>> rc.morf.shape, rc.gap.shape
    (torch.Size([2, 3]), torch.Size([2]))
    >>> bool(torch.allclose(rc.gap, rc.lerf_area - rc.morf_area))
    True
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_igos.core.causal import pixel_ranks
from lightning_igos.core.runner import ModelRunner, checked_start
from lightning_igos.core.runtime import chunks, draw_seed
from lightning_igos.core.scoring import ScoreFn, target_scores
from lightning_igos.core.solver import _image_keys, _keyed_normals
from lightning_igos.core.validation import (
    TargetsLike,
    check_call,
    check_non_negative,
    check_positive_int,
    check_saliency,
)

FractionsLike = Union[Sequence[float], Tensor]

DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: The std of the imputation noise, in input units (:func:`road_curves`' default and what ``evaluate`` uses).
DEFAULT_NOISE_STD = 0.01

# Mixed into the seed of the per-image noise keys, so ROAD's noise is not the solver's noise of the same seed.
_NOISE_SALT = 0x524F4144_00000000

@dataclass
class RoadCurves:
    """Result of :func:`road_curves`.

    Attributes:
        fractions: ``(K,)`` fraction of pixels removed at each point.
        morf, lerf: ``(B, K)`` target score with the most (least) relevant pixels removed.
        clean_score: ``(B,)`` score of the unmodified image (both curves' point at fraction 0).
        morf_area: ``(B,)`` mean height of the MoRF curve, clean point included; lower is better.
        lerf_area: ``(B,)`` mean height of the LeRF curve, clean point included; higher is better.
        gap: ``(B,)`` ``lerf_area - morf_area``; higher is better.
        solver_iterations: conjugate gradient iterations the imputation took (the most of any batch;
            a system that has converged stops while the others go on).

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
        >>> rc = road_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 1, fractions=(0.5,))
        >>> rc.fractions.tolist(), rc.lerf.shape
        ([0.5], torch.Size([2, 1]))
    """

    fractions: Tensor
    morf: Tensor
    lerf: Tensor
    clean_score: Tensor
    morf_area: Tensor
    lerf_area: Tensor
    gap: Tensor
    solver_iterations: int = 0


def road_area(curve: Tensor, clean: Tensor, fractions: Tensor) -> Tensor:
    """Mean height of ``curve`` (B, K) over ``fractions`` (K,) with ``clean`` (B,) at fraction 0.

    Example:
        >>> road_area(torch.full((2, 3), 0.3), torch.full((2,), 0.3), torch.tensor([0.3, 0.6, 0.9]))
        tensor([0.3000, 0.3000])
    """
    x = torch.cat([fractions.new_zeros(1), fractions]).to(curve)
    y = torch.cat([clean.to(curve)[:, None], curve], dim=1)
    return torch.trapezoid(y, x=x, dim=-1) / x[-1]


def check_fractions(fractions: object, name: str = "fractions") -> Tensor:
    """A non-empty, strictly increasing sequence of numbers in (0, 1), as a float64 tensor (K,).

    Example:
        >>> check_fractions((0.1, 0.5)).tolist()
        [0.1, 0.5]
        >>> check_fractions([0.5, 0.2])
        Traceback (most recent call last):
        ...
        ValueError: `fractions` must be strictly increasing, got [0.5, 0.2].
    """
    if isinstance(fractions, Tensor):
        if fractions.dim() != 1 or fractions.is_complex() or fractions.dtype == torch.bool:
            raise TypeError(f"`{name}` must be a 1-D tensor of real numbers, got {fractions!r}.")
        values = fractions.detach().cpu().tolist()
    elif isinstance(fractions, Sequence) and not isinstance(fractions, (str, bytes)):
        values = list(fractions)
    else:
        raise TypeError(f"`{name}` must be a sequence of numbers in (0, 1), got {type(fractions).__name__}.")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"`{name}` must hold numbers in (0, 1), got {fractions!r}.")
    if not values:
        raise ValueError(f"`{name}` must hold at least one fraction, got {fractions!r}.")
    if not all(0 < v < 1 for v in values):
        raise ValueError(f"`{name}` must lie strictly between 0 and 1, got {values!r}.")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"`{name}` must be strictly increasing, got {values!r}.")
    return torch.tensor([float(v) for v in values], dtype=torch.float64)


# Neighbour weights of the imputation: direct neighbours 1/6, diagonal ones 1/12 (sum 1).
_KERNEL = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))
# The same weights times 12: small integers, so products with them are exact in floating point.
_KERNEL_12 = ((1, 2, 1), (2, 0, 2), (1, 2, 1))
# The 3x3 stencil's offsets (row, column) in the order of a stencil tensor's second dimension; 4 is the centre.
_OFFSETS = tuple((di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1))
_CENTRE = 4
# A level with at most this many pixels is solved exactly (pseudo-inverse) instead of coarsened further.
_DENSE_PIXELS = 100
# Power iterations estimating each level's largest eigenvalue (for the Jacobi smoother's step).
_POWER_STEPS = 10
# The solve stops once the multigrid estimate of every pixel's error is below this share of the tolerance.
_SAFETY = 0.1
# Residuals recomputed exactly (and the correction solved for again) at most this many times.
_REFINEMENTS = 4


def _shifted(padded: Tensor, di: int, dj: int, h: int, w: int) -> Tensor:
    """The ``(h, w)`` window of a once zero-padded tensor at offset ``(di, dj)``: the neighbours' values."""
    return padded[..., 1 + di:1 + di + h, 1 + dj:1 + dj + w]


def _apply(stencil: Tensor, v: Tensor) -> Tensor:
    """``A v`` for a 3x3 stencil per pixel: ``stencil`` (n, 9, h, w), ``v`` (n, c, h, w), every channel alike."""
    h, w = v.shape[-2:]
    padded = F.pad(v, (1, 1, 1, 1))
    out = stencil[:, _CENTRE:_CENTRE + 1] * v
    for k, (di, dj) in enumerate(_OFFSETS):
        if k != _CENTRE:
            out.addcmul_(stencil[:, k:k + 1], _shifted(padded, di, dj, h, w))
    return out


def _prolong(v: Tensor, h: int, w: int) -> Tensor:
    """Bilinear interpolation from the coarse grid ``(h // 2 + 1, w // 2 + 1)`` to ``(h, w)``.

    Coarse pixel ``i`` sits on fine pixel ``2 i``; a fine pixel between two coarse ones takes their mean.
    """
    n, c, hc, wc = v.shape
    rows = v.new_empty(n, c, 2 * hc - 1, wc)
    rows[:, :, 0::2] = v
    rows[:, :, 1::2] = 0.5 * (v[:, :, :-1] + v[:, :, 1:])
    out = v.new_empty(n, c, 2 * hc - 1, 2 * wc - 1)
    out[..., 0::2] = rows
    out[..., 1::2] = 0.5 * (rows[..., :-1] + rows[..., 1:])
    return out[..., :h, :w]


def _restrict(v: Tensor) -> Tensor:
    """The transpose of :func:`_prolong`: ``(h, w)`` to ``(h // 2 + 1, w // 2 + 1)``."""
    h, w = v.shape[-2:]
    hc, wc = h // 2 + 1, w // 2 + 1
    v = F.pad(v, (0, 2 * wc - 1 - w, 0, 2 * hc - 1 - h))
    rows = v[:, :, 0::2].clone()
    odd = v[:, :, 1::2]
    rows[:, :, :-1].add_(odd, alpha=0.5)
    rows[:, :, 1:].add_(odd, alpha=0.5)
    out = rows[..., 0::2].clone()
    odd = rows[..., 1::2]
    out[..., :-1].add_(odd, alpha=0.5)
    out[..., 1:].add_(odd, alpha=0.5)
    return out


@dataclass
class _Level:
    """One grid of the multigrid hierarchy: the operator and its unknowns, per image.

    ``stencil`` (n, 9, h, w) holds each pixel's row of the operator; a pixel that is not an
    unknown (a known pixel, or a coarse pixel with no unknown below it) has the row of the
    identity, and every vector is zero there. ``smoother`` is the Jacobi step (damping over
    the diagonal); ``inverse`` (n, h*w, h*w) the pseudo-inverse on the coarsest level.
    """

    stencil: Tensor
    unknown: Tensor
    smoother: Tensor | None = None
    inverse: Tensor | None = None


def _fine_level(unknown: Tensor) -> tuple[_Level, Tensor]:
    """The imputation's operator ``D - W_uu`` on the removed pixels ``unknown`` (n, 1, h, w), and ``12 D``."""
    h, w = unknown.shape[-2:]
    inside = F.pad(torch.ones_like(unknown[:1]), (1, 1, 1, 1))
    padded = F.pad(unknown, (1, 1, 1, 1))
    stencil = unknown.new_zeros(unknown.shape[0], 9, h, w)
    weight_12 = torch.zeros_like(unknown[:1])
    for k, (di, dj) in enumerate(_OFFSETS):
        if k != _CENTRE:
            stencil[:, k:k + 1] = -_KERNEL[di + 1][dj + 1] * unknown * _shifted(padded, di, dj, h, w)
            weight_12 = weight_12 + _KERNEL_12[di + 1][dj + 1] * _shifted(inside, di, dj, h, w)
    stencil[:, _CENTRE:_CENTRE + 1] = weight_12 / 12 * unknown + (1 - unknown)
    return _Level(stencil, unknown), weight_12


def _coarse_level(fine: _Level) -> _Level:
    """The Galerkin operator ``P^T A P`` (``P`` bilinear interpolation onto the unknowns), found by probing.

    The coarse operator is again a 3x3 stencil, so 9 probe vectors, one per colour of a 3x3
    colouring of the coarse grid, read all its entries: each colour has at most one pixel in a
    pixel's neighbourhood.
    """
    stencil, unknown = fine.stencil, fine.unknown
    n, _, h, w = stencil.shape
    hc, wc = h // 2 + 1, w // 2 + 1
    i = torch.arange(hc, device=stencil.device).view(hc, 1)
    j = torch.arange(wc, device=stencil.device).view(1, wc)
    colours = torch.arange(9, device=stencil.device).view(1, 9, 1, 1)
    probes = (((i % 3) * 3 + j % 3) == colours).to(stencil.dtype)
    probed = _restrict(_apply(stencil, unknown * _prolong(probes, h, w)))
    coarse = stencil.new_empty(n, 9, hc, wc)
    for k, (di, dj) in enumerate(_OFFSETS):
        colour = ((i + di) % 3) * 3 + (j + dj) % 3
        inside = (i + di >= 0) & (i + di < hc) & (j + dj >= 0) & (j + dj < wc)
        coarse[:, k] = probed.gather(1, colour.expand(n, 1, hc, wc)).squeeze(1) * inside
    coarse_unknown = (_restrict(unknown) > 0).to(stencil.dtype)
    coarse[:, _CENTRE:_CENTRE + 1] += 1 - coarse_unknown  # the identity where no unknown lies below
    return _Level(coarse, coarse_unknown)


def _pseudo_inverse(level: Tensor) -> Tensor:
    """The pseudo-inverse (n, h*w, h*w) of a small level's operator, from its stencil (n, 9, h, w).

    Interpolation onto few unknowns can make the coarse operator singular; its right-hand
    sides lie in its range, where the pseudo-inverse is the exact inverse. The matrices are
    small (at most ``_DENSE_PIXELS`` square): they are inverted on the CPU in float64, which
    every device's tensors can be copied to, and the result goes back to the level's device.
    """
    stencil = level.detach().to(device="cpu", dtype=torch.float64)
    n, _, h, w = stencil.shape
    size = h * w
    matrix = stencil.new_zeros(n, size, size)
    i, j = torch.meshgrid(torch.arange(h, device=stencil.device), torch.arange(w, device=stencil.device),
                          indexing="ij")
    for k, (di, dj) in enumerate(_OFFSETS):
        inside = (i + di >= 0) & (i + di < h) & (j + dj >= 0) & (j + dj < w)
        matrix[:, (i * w + j)[inside], ((i + di) * w + j + dj)[inside]] = stencil[:, k][:, inside]
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.transpose(1, 2)))
    kept = values > 1e-6 * values.amax(dim=1, keepdim=True)
    inverted = torch.where(kept, 1 / torch.where(kept, values, torch.ones_like(values)), torch.zeros_like(values))
    return ((vectors * inverted.unsqueeze(1)) @ vectors.transpose(1, 2)).to(device=level.device, dtype=level.dtype)


def _jacobi_step(level: _Level) -> Tensor:
    """Damping over the diagonal, per image: ``4 / (3 lambda)`` for the largest eigenvalue ``lambda`` of ``D^-1 A``.

    That damping reduces the upper half of the spectrum (the rough errors the coarse grid
    cannot see) most evenly; ``lambda`` comes from power iterations started on a
    checkerboard, the roughest vector, and is taken 5% larger for safety.
    """
    stencil, unknown = level.stencil, level.unknown
    h, w = stencil.shape[-2:]
    diagonal = stencil[:, _CENTRE:_CENTRE + 1]
    i = torch.arange(h, device=stencil.device).view(h, 1)
    j = torch.arange(w, device=stencil.device).view(1, w)
    v = (1 - 2 * ((i + j) % 2)).to(stencil.dtype) * unknown
    largest = torch.ones(stencil.shape[0], 1, 1, 1, dtype=stencil.dtype, device=stencil.device)
    for _ in range(_POWER_STEPS + 1):
        norm = v.norm(dim=(-2, -1), keepdim=True)
        largest = torch.where(norm > 0, norm, largest)
        v = _apply(stencil, v / largest) / diagonal
    return 4 / (3 * 1.05 * largest) / diagonal


def _hierarchy(unknown: Tensor) -> tuple[list[_Level], Tensor]:
    """The multigrid levels for the removed pixels ``unknown`` (n, 1, h, w), finest first, and ``12 D``."""
    fine, weight_12 = _fine_level(unknown)
    levels = [fine]
    while levels[-1].stencil.shape[-2] * levels[-1].stencil.shape[-1] > _DENSE_PIXELS:
        levels[-1].smoother = _jacobi_step(levels[-1])
        levels.append(_coarse_level(levels[-1]))
    levels[-1].inverse = _pseudo_inverse(levels[-1].stencil)
    return levels, weight_12


def _v_cycle(levels: list[_Level], r: Tensor, depth: int = 0) -> Tensor:
    """One symmetric V-cycle from zero for ``A e = r``: an approximation of ``A^-1 r``, linear in ``r``.

    One damped Jacobi sweep before and after the coarse-grid correction, so the cycle is a
    symmetric positive definite operator: a valid conjugate gradient preconditioner.
    """
    level = levels[depth]
    if level.inverse is not None:
        n, c, h, w = r.shape
        return (level.inverse @ r.reshape(n, c, h * w).transpose(1, 2)).transpose(1, 2).reshape(n, c, h, w)
    h, w = r.shape[-2:]
    e = r * level.smoother
    coarse = _v_cycle(levels, _restrict(r - _apply(level.stencil, e)), depth + 1)
    e = e + level.unknown * _prolong(coarse, h, w)
    return e + (r - _apply(level.stencil, e)) * level.smoother


def _two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """``a + b`` rounded and its rounding error, exactly (Knuth's TwoSum; any rounding-to-nearest dtype)."""
    s = a + b
    b_part = s - a
    return s, (a - (s - b_part)) + (b - b_part)


def _residual(filled: Tensor, u: Tensor, unknown: Tensor, weight_12: Tensor) -> Tensor:
    """``b - A u`` on the removed pixels, accurate to the working precision of the residual itself.

    ``12 (b - A u)_i = sum_j k_j filled_j - 12 d_i u_i`` (``k`` the weights times 12, ``filled`` the
    known pixels and ``u`` together). Every term is exact (small integers, and ``12 d_i`` split into
    powers of two), and the terms are summed with their rounding errors carried along: in float32 a
    plain residual is wrong by about 1e-7, which a large hole amplifies to 1e-4 in the solution.
    """
    h, w = u.shape[-2:]
    padded = F.pad(filled, (1, 1, 1, 1))
    terms = itertools.chain(  # made one at a time: each is an image-sized tensor
        (_KERNEL_12[di + 1][dj + 1] * _shifted(padded, di, dj, h, w) for di, dj in _OFFSETS if (di, dj) != (0, 0)),
        (-(bit * ((weight_12 // bit) % 2)) * u for bit in (8, 4, 2, 1)),
    )
    total, error = next(terms), torch.zeros_like(u)
    for term in terms:
        total, rounding = _two_sum(total, term)
        error += rounding
    return (total + error) / 12 * unknown


def _conjugate_gradients(levels: list[_Level], r: Tensor, stop: float, max_iterations: int) -> tuple[Tensor, int]:
    """Solve ``A e = r`` by conjugate gradients preconditioned with :func:`_v_cycle`, each system on its own.

    A system (image and channel) stops, unchanged from then on, once the V-cycle's estimate
    of its error, ``max |B r|``, is at most ``stop``, so its result does not depend on the
    other systems of the batch.
    """
    fine = levels[0].stencil
    dims = (-2, -1)
    tiny = torch.finfo(r.dtype).tiny
    e = torch.zeros_like(r)
    z = _v_cycle(levels, r)
    p, rz = z, (r * z).sum(dims, keepdim=True)
    active = z.abs().amax(dims, keepdim=True) > stop
    iterations = 0
    while iterations < max_iterations and bool(active.any()):
        ap = _apply(fine, p)
        pap = (p * ap).sum(dims, keepdim=True)
        # Past convergence the scalars can fall into the denormal range, where flushing them to zero
        # (torch.set_flush_denormal) would turn the step ratios into 0/0: such a system stops there.
        active = active & (pap > tiny) & (rz > tiny)
        alpha = torch.where(active, rz / torch.where(active, pap, torch.ones_like(pap)), torch.zeros_like(pap))
        e = torch.where(active, e + alpha * p, e)
        r = torch.where(active, r - alpha * ap, r)
        z = _v_cycle(levels, r)
        rz_new = (r * z).sum(dims, keepdim=True)
        beta = rz_new / torch.where(active, rz, torch.ones_like(rz))
        p = torch.where(active, z + beta * p, p)
        rz = torch.where(active, rz_new, rz)
        active = active & (z.abs().amax(dims, keepdim=True) > stop)
        iterations += 1
    return e, iterations


def linear_imputation(
    images: Tensor, removed: Tensor, *, max_iterations: int = 2000, tolerance: float = 1e-5
) -> tuple[Tensor, int]:
    """Fill ``removed`` pixels with the weighted mean of their neighbours, solved jointly.

    Args:
        images: ``(N, C, H, W)``; the values of the removed pixels are ignored.
        removed: ``(N, 1, H, W)`` or ``(N, C, H, W)`` boolean, True where a pixel is removed.
        max_iterations: conjugate gradient iterations at most (all refinements together).
        tolerance: stop once every imputed pixel is estimated to be within ``tolerance / 10``
            (input units) of the exact solution, in every image and channel.

    The system is solved by conjugate gradients preconditioned with a multigrid V-cycle:
    the iterations needed do not grow with the image, so the cost is about linear in the
    pixels. Each image and channel stops on its own. The residual is recomputed with
    compensated sums and the correction solved for again until the estimate holds, which
    keeps float32 within the tolerance even for holes of hundreds of pixels.

    Returns the filled images (known pixels unchanged, float32 or the images' float dtype
    if wider) and the number of iterations run. An image whose pixels are all removed has
    no unique solution; it is filled with zeros (not checked here).

    Example:
        >>> x = torch.zeros(1, 1, 3, 3)
        >>> x[0, 0, 0] = 3.0  # top row 3, others 0
        >>> hole = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
        >>> hole[0, 0, 1, 1] = True
        >>> filled, _ = linear_imputation(x, hole)
        >>> round(filled[0, 0, 1, 1].item(), 4)  # 2 * 1/12 * 3 + 1/6 * 3
        1.0
    """
    n, c, h, w = images.shape
    dtype = images.dtype if images.dtype == torch.float64 else torch.float32
    x = images.to(dtype)
    unknown = removed.to(device=x.device, dtype=dtype)
    if unknown.shape[1] != 1:  # one operator per channel: the channels become images
        x, unknown = x.reshape(n * c, 1, h, w), unknown.expand(n, c, h, w).reshape(n * c, 1, h, w)
    levels, weight_12 = _hierarchy(unknown)
    known = x * (1 - unknown)
    # Start from the weighted mean of the known neighbours: exact for isolated holes.
    u = _residual(known, torch.zeros_like(x), unknown, weight_12) / (weight_12 / 12)
    stop = tolerance * _SAFETY
    iterations = 0
    for _ in range(_REFINEMENTS):
        correction, run = _conjugate_gradients(levels, _residual(known + u, u, unknown, weight_12), stop,
                                               max_iterations - iterations)
        iterations += run
        if run == 0:
            break
        u = u + correction
    return (known + u).reshape(n, c, h, w).contiguous(), iterations


def road_curves(
    model: nn.Module,
    images: Tensor,
    saliency: Tensor,
    targets: TargetsLike,
    *,
    fractions: FractionsLike = DEFAULT_FRACTIONS,
    noise_std: float = DEFAULT_NOISE_STD,
    score_fn: ScoreFn | None = None,
    max_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    solver_iterations: int = 2000,
    solver_tolerance: float = 1e-5,
) -> RoadCurves:
    """ROAD MoRF and LeRF curves, their areas and gap for each image's saliency.

    Args:
        model: classifier returning logits ``(B, num_classes)``.
        images: ``(B, C, H, W)`` inputs as the model takes them.
        saliency: ``(B, 1, h, w)`` or ``(B, h, w)``, higher is more relevant; a lower
            resolution than the images is upsampled bilinearly.
        targets: class per image (int, sequence or tensor ``(B,)``).
        fractions: strictly increasing fractions of pixels to remove, in (0, 1).
        noise_std: std of the Gaussian noise added to the imputed pixels (input units).
        score_fn: ``score_fn(logits, targets) -> (B,)``; default softmax probability.
        max_batch_size: images per forward pass; None picks a default per device.
        generator: source of the noise's seed (one number is drawn from it); the global
            RNG is never used. None uses a CPU generator seeded with 0. Each image's noise
            is a function of that seed and of the image's own values.
        solver_iterations: conjugate gradient iterations of the imputation at most.
        solver_tolerance: the imputation stops once each imputed pixel is estimated to be
            within a tenth of this (input units) of the exact solution.

    The ``2 * B * K`` perturbed images are imputed and scored in batches of at most
    ``max_batch_size``, on the images' device, with the model in eval mode under
    ``no_grad`` (its mode is restored).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
        >>> rc = road_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), [0, 2], noise_std=0.0)
        >>> rc.fractions.shape, rc.morf.shape, rc.lerf_area.shape
        (torch.Size([9]), torch.Size([2, 9]), torch.Size([2]))
    """
    model, images, targets_t, _ = check_call(model, images, targets, max_batch_size)
    saliency = check_saliency(saliency, images)
    fractions_t = check_fractions(fractions)
    noise_std = check_non_negative(noise_std, "noise_std")
    solver_iterations = check_positive_int(solver_iterations, "solver_iterations")
    solver_tolerance = check_non_negative(solver_tolerance, "solver_tolerance")
    seed = draw_seed(generator)
    runner, x, targets_t, logits = checked_start(model, images, targets_t, score_fn=score_fn,
                                                 max_batch_size=max_batch_size)
    with runner.running(grad=False):
        clean = target_scores(logits, targets_t, score_fn)
    return _road_scores(runner, x, saliency, targets_t, clean_score=clean, fractions=fractions_t, noise_std=noise_std,
                       seed=seed, solver_iterations=solver_iterations, solver_tolerance=solver_tolerance)


def _road_scores(runner: ModelRunner, x: Tensor, saliency: Tensor, targets: Tensor, *, clean_score: Tensor,
                fractions: Tensor, noise_std: float, seed: int, solver_iterations: int = 2000,
                solver_tolerance: float = 1e-5) -> RoadCurves:
    """The kernel behind :func:`road_curves`; its inputs are trusted (checked by the caller).

    ``clean_score`` is the target's score on ``x``; ``seed`` and each image's values seed that image's
    imputation noise (:func:`~lightning_igos.core.solver._image_keys`).
    """
    batch, _, height, width = x.shape
    device = x.device
    num_pixels = height * width
    k = fractions.numel()
    with runner.running(grad=False):
        noise = None
        if noise_std > 0:
            # Each image's noise is drawn from its own key (the seed and the image's values), as the
            # solver's is: an image gets the same noise at any position, in any batch, on any rank.
            noise = (noise_std * _keyed_normals(_image_keys(x, seed ^ _NOISE_SALT), x.shape[1:])).to(device)

        s = saliency.to(device)
        ranks = torch.stack([pixel_ranks(s, (height, width)), pixel_ranks(-s, (height, width))])
        ranks = ranks.view(2, batch, 1, height, width)  # (order: MoRF, LeRF)
        counts = torch.round(fractions * num_pixels).long().clamp(0, num_pixels - 1).to(device)
        # Flattened (order, image, fraction) triples, order-major; a batch mixes both orders.
        total = 2 * batch * k
        flat_scores = torch.empty(total, device=device)
        most_iterations = 0
        for start, stop in chunks(total, runner.cap):
            flat = torch.arange(start, stop, device=device)
            order, rows, ks = flat // (batch * k), (flat // k) % batch, flat % k
            removed = ranks[order, rows] < counts[ks].view(-1, 1, 1, 1)
            filled, iterations = linear_imputation(
                x[rows], removed, max_iterations=solver_iterations, tolerance=solver_tolerance
            )
            most_iterations = max(most_iterations, iterations)
            if noise is not None:
                filled = filled + noise[rows] * removed
            flat_scores[start:stop] = runner.scores(filled, targets[rows])
        morf, lerf = flat_scores.view(2, batch, k).unbind(0)
        fractions_out = fractions.to(device=device, dtype=morf.dtype)
        morf_area = road_area(morf, clean_score, fractions_out)
        lerf_area = road_area(lerf, clean_score, fractions_out)
        return RoadCurves(
            fractions=fractions_out,
            morf=morf,
            lerf=lerf,
            clean_score=clean_score,
            morf_area=morf_area,
            lerf_area=lerf_area,
            gap=lerf_area - morf_area,
            solver_iterations=most_iterations,
        )

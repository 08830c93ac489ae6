"""ROAD (remove and debias): the imputation, the curves' invariants and input errors."""

from __future__ import annotations

import pytest
import torch
from helpers import ConstantModel, ForwardRecorder
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lightning_igos
from lightning_igos.core.road import (
    _KERNEL,
    RoadCurves,
    check_fractions,
    linear_imputation,
    road_area,
    road_curves,
)


def linear_model(seed: int = 0, size: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


def dense_imputation(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Exact float64 solution for one channel ``(H, W)`` built pixel by pixel from the definition."""
    h, w = image.shape
    ids = removed.nonzero().tolist()
    index = {tuple(p): n for n, p in enumerate(ids)}
    a = torch.zeros(len(ids), len(ids), dtype=torch.float64)
    b = torch.zeros(len(ids), dtype=torch.float64)
    for n, (i, j) in enumerate(ids):
        weights = {}
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                if (di or dj) and 0 <= i + di < h and 0 <= j + dj < w:
                    weights[(i + di, j + dj)] = _KERNEL[di + 1][dj + 1]
        total = sum(weights.values())
        a[n, n] = 1.0
        for (y, x), wt in weights.items():  # x_i = sum_j (w_ij / total) x_j
            if removed[y, x]:
                a[n, index[(y, x)]] -= wt / total
            else:
                b[n] += wt / total * float(image[y, x])
    out = image.double().clone()
    out[removed] = torch.linalg.solve(a, b)
    return out


@pytest.mark.parametrize("seed,fraction,channels", [(0, 0.3, 1), (1, 0.6, 1), (2, 0.9, 1), (3, 0.7, 3)])
def test_imputation_matches_exact_dense_solve(seed, fraction, channels):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 8, 8, generator=g)
    removed = torch.rand(2, channels, 8, 8, generator=g) < fraction  # one mask per channel, or shared
    removed[0, :, 0, 0] = removed[1, :, 7, 3] = True  # a corner and an edge
    filled, _ = linear_imputation(images, removed)
    exact = torch.stack([torch.stack([dense_imputation(images[n, c], removed[n, c % channels]) for c in range(3)])
                         for n in range(2)])
    assert (filled.double() - exact).abs().max() < 1e-5
    kept = ~removed.expand_as(images)
    assert torch.equal(filled[kept], images[kept])


def sparse_imputation(image: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Exact float64 solution for one image ``(C, H, W)`` and mask ``(H, W)`` by a sparse direct solve."""
    sparse = pytest.importorskip("scipy.sparse")
    linalg = pytest.importorskip("scipy.sparse.linalg")
    np = pytest.importorskip("numpy")
    h, w = removed.shape
    gone = removed.numpy()
    index = np.full((h, w), -1)
    index[gone] = np.arange(gone.sum())
    x = image.double().numpy()
    rows, cols, values = [], [], []
    total = np.zeros((h, w))
    rhs = np.zeros((gone.sum(), x.shape[0]))
    ii, jj = np.nonzero(gone)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            weight = _KERNEL[di + 1][dj + 1]
            if not weight:
                continue
            y, z = ii + di, jj + dj
            inside = (y >= 0) & (y < h) & (z >= 0) & (z < w)
            total[ii[inside], jj[inside]] += weight
            y, z, own = y[inside], z[inside], index[ii[inside], jj[inside]]
            coupled = gone[y, z]
            rows += list(own[coupled])
            cols += list(index[y[coupled], z[coupled]])
            values += [-weight] * int(coupled.sum())
            np.add.at(rhs, own[~coupled], weight * x[:, y[~coupled], z[~coupled]].T)
    rows += list(index[ii, jj])
    cols += list(index[ii, jj])
    values += list(total[ii, jj])
    a = sparse.csc_matrix((values, (rows, cols)), shape=(len(ii), len(ii)))
    out = x.copy()
    out[:, ii, jj] = linalg.spsolve(a, rhs).reshape(len(ii), -1).T
    return torch.from_numpy(out)


def removal_mask(saliency: torch.Tensor, fraction: float) -> torch.Tensor:
    """ROAD's mask: the top ``round(fraction * H * W)`` pixels of ``saliency`` (H, W)."""
    ranks = torch.argsort(torch.argsort(-saliency.flatten(), stable=True))
    return (ranks < round(fraction * saliency.numel())).view(saliency.shape)


def smooth_image(h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 3, h // 8 + 2, w // 8 + 2, generator=g)
    return nn.functional.interpolate(coarse, size=(h, w), mode="bilinear")[0] + 0.1 * torch.randn(3, h, w, generator=g)


@pytest.mark.parametrize("h,w,fraction,blob", [(64, 64, 0.9, True), (64, 64, 0.9, False), (37, 50, 0.5, True)])
def test_imputation_is_within_the_tolerance_of_an_exact_sparse_solve(h, w, fraction, blob):
    # Removing the top 90% of a blob-shaped saliency leaves one large hole: the hard case, where a residual
    # below 1e-5 still left errors of 4e-5 at 64x64 (2e-4 at 224x224).
    image = 2 * smooth_image(h, w, seed=h + w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    saliency = -((yy - 0.4 * h) ** 2 + (xx - 0.55 * w) ** 2).float() if blob else torch.rand(h, w)
    removed = removal_mask(saliency, fraction)
    exact = sparse_imputation(image, removed)
    filled, _ = linear_imputation(image[None], removed[None, None], tolerance=1e-5)
    assert (filled[0].double() - exact).abs().max() <= 1e-5
    assert torch.equal(filled[0][:, ~removed], image[:, ~removed])


def test_iterations_do_not_grow_with_the_image():
    # One large hole: plain (diagonally preconditioned) conjugate gradients needed 150 iterations at 64x64
    # and 450 at 224x224; the multigrid preconditioner keeps the count about constant.
    counts = {}
    for size in (32, 128):
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        removed = removal_mask(-((yy - 0.4 * size) ** 2 + (xx - 0.55 * size) ** 2).float(), 0.9)
        _, counts[size] = linear_imputation(smooth_image(size, size, seed=0)[None], removed[None, None])
    assert counts[128] <= 20 and counts[128] <= counts[32] + 6, counts


def test_each_system_converges_on_its_own():
    # An easy system's result is the same alone and beside a system that needs many more iterations.
    size = 48
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    hard = removal_mask(-((yy - 20) ** 2 + (xx - 26) ** 2).float(), 0.9)
    easy = removal_mask(torch.rand(size, size, generator=torch.Generator().manual_seed(0)), 0.05)
    images = torch.stack([smooth_image(size, size, seed=1), smooth_image(size, size, seed=2)])
    alone, easy_iterations = linear_imputation(images[:1], easy[None, None])
    both, iterations = linear_imputation(images, torch.stack([easy, hard])[:, None])
    assert iterations > easy_iterations
    assert torch.equal(both[:1], alone)


def test_imputation_of_a_hole_in_a_constant_region_is_that_constant():
    images = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    images[..., 3:10, 4:11] = torch.tensor([0.7, -1.2, 2.0]).view(1, 3, 1, 1)
    removed = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    removed[..., 4:9, 5:10] = True  # the known ring around the hole is constant
    filled, _ = linear_imputation(images, removed)
    torch.testing.assert_close(filled[..., 4:9, 5:10], images[..., 4:9, 5:10], atol=1e-5, rtol=0)
    # The same through road_curves with no noise: a constant image stays constant.
    flat = torch.full((1, 3, 8, 8), 0.25)
    seen = []
    model = ForwardRecorder(lambda x: (seen.append(x.clone()), x.flatten(1)[:, :2])[1])
    road_curves(model, flat, torch.rand(1, 1, 8, 8), 0, noise_std=0.0, score_fn=lambda z, t: z[:, 0])
    seen_all = torch.cat(seen)  # 19 images: a clean one, 9 fractions of each order (a forward of one runs as two)
    assert seen_all.shape[0] >= 19
    torch.testing.assert_close(seen_all, torch.full_like(seen_all, 0.25), atol=1e-5, rtol=0)


@settings(max_examples=20, deadline=None)
@given(
    logits=st.lists(st.floats(-5, 5), min_size=2, max_size=4),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_constant_model_has_areas_equal_to_its_score_and_zero_gap(logits, k, seed):
    g = torch.Generator().manual_seed(seed)
    logits_t = torch.tensor(logits)
    fractions = torch.sort(torch.rand(k, generator=g) * 0.98 + 0.01).values.unique()
    rc = road_curves(ConstantModel(logits_t), torch.randn(2, 3, 6, 6, generator=g), torch.rand(2, 1, 6, 6), 1,
                     fractions=fractions, generator=g)
    p = torch.softmax(logits_t, 0)[1]
    torch.testing.assert_close(rc.morf_area, p.expand(2))
    torch.testing.assert_close(rc.lerf_area, p.expand(2))
    assert rc.gap.abs().max() < 1e-6


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), noise=st.sampled_from([0.0, 0.01, 0.5]))
def test_areas_lie_between_the_lowest_and_highest_score(seed, noise):
    g = torch.Generator().manual_seed(seed)
    images = 3 * torch.randn(3, 3, 8, 8, generator=g)
    rc = road_curves(linear_model(seed % 7), images, torch.rand(3, 1, 8, 8, generator=g), [0, 1, 2],
                     noise_std=noise, generator=g, fractions=(0.2, 0.5, 0.8))
    points = torch.cat([rc.clean_score[:, None], rc.morf, rc.lerf], dim=1)
    low, high = points.min(1).values - 1e-6, points.max(1).values + 1e-6
    for area in (rc.morf_area, rc.lerf_area):
        assert ((area >= low) & (area <= high)).all()
        assert ((area >= 0) & (area <= 1)).all()
    torch.testing.assert_close(rc.gap, rc.lerf_area - rc.morf_area)


def test_shapes_fields_and_batching():
    model = ForwardRecorder(linear_model())
    model.train()
    images = torch.randn(5, 3, 8, 8)
    rc = road_curves(model, images, torch.rand(5, 4, 4), [0, 1, 2, 0, 1], fractions=[0.25, 0.5],
                     max_batch_size=3)
    assert isinstance(rc, RoadCurves)
    assert rc.fractions.tolist() == [0.25, 0.5]
    assert rc.morf.shape == rc.lerf.shape == (5, 2)
    assert rc.clean_score.shape == rc.morf_area.shape == rc.lerf_area.shape == rc.gap.shape == (5,)
    assert max(model.sizes) <= 3 and sum(model.sizes) == 5 + 2 * 5 * 2
    assert all(not grad for _, grad, _ in model.calls)
    assert model.training and model.model.training  # the mode is restored
    expected = road_area(rc.morf, rc.clean_score, rc.fractions)
    torch.testing.assert_close(rc.morf_area, expected)
    # Trapezoid over (0, 0.25, 0.5), divided by 0.5.
    manual = (0.25 * (rc.clean_score + rc.morf[:, 0]) / 2 + 0.25 * (rc.morf[:, 0] + rc.morf[:, 1]) / 2) / 0.5
    torch.testing.assert_close(rc.morf_area, manual)


def test_constant_saliency_removes_the_same_pixels_in_both_orders():
    rc = road_curves(linear_model(), torch.randn(2, 3, 8, 8), torch.ones(2, 1, 8, 8), 0)
    torch.testing.assert_close(rc.morf, rc.lerf)


def test_orders_remove_most_and_least_relevant_pixels_first():
    # The score is the mean of the left half; the saliency marks the left half as relevant.
    def score_fn(logits, targets):
        return logits[:, 0]

    class LeftMean(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, :, :, :4].mean((1, 2, 3)), x.mean((1, 2, 3))], 1)

    images = torch.zeros(1, 3, 8, 8)
    images[..., :4] = 1.0
    saliency = torch.zeros(1, 1, 8, 8)
    saliency[..., :4] = 1.0
    rc = road_curves(LeftMean(), images, saliency, 0, fractions=(0.25, 0.5), noise_std=0.0, score_fn=score_fn)
    assert rc.lerf[0].tolist() == pytest.approx([1.0, 1.0], abs=1e-5)  # only the right half goes
    assert (rc.morf[0] < 0.9).all() and rc.morf[0, 1] < rc.morf[0, 0]
    assert rc.gap.item() > 0.2


def test_deterministic_given_the_generator_and_independent_of_batching():
    model, images, saliency = linear_model(), 2 * torch.randn(3, 3, 8, 8), torch.rand(3, 1, 8, 8)
    state = torch.get_rng_state()

    def run(seed, cap=None):
        return road_curves(model, images, saliency, 1, noise_std=0.3, max_batch_size=cap,
                           generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0, cap=4), run(1)
    assert torch.get_rng_state().equal(state)  # the global RNG is untouched
    assert torch.equal(a.morf, run(0).morf) and torch.equal(a.lerf, run(0).lerf)
    torch.testing.assert_close(a.morf, b.morf)
    torch.testing.assert_close(a.lerf, b.lerf)
    assert not torch.equal(a.morf, c.morf)
    assert torch.equal(a.clean_score, c.clean_score)


def test_an_images_numbers_do_not_depend_on_its_position_or_the_other_images():
    # Each image's noise comes from the seed and its own values: a DDP rank scoring a slice of the probe,
    # one process scoring all of it and the check agree.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()
    g = torch.Generator().manual_seed(0)
    image, others = torch.randn(1, 3, 8, 8, generator=g), torch.randn(5, 3, 8, 8, generator=g)
    saliency, other_saliency = torch.rand(1, 1, 8, 8, generator=g), torch.rand(5, 1, 8, 8, generator=g)
    first = road_curves(model, torch.cat([image, others[:3]]), torch.cat([saliency, other_saliency[:3]]), 2,
                        generator=torch.Generator().manual_seed(7))
    fourth = road_curves(model, torch.cat([others[2:], image]), torch.cat([other_saliency[2:], saliency]), 2,
                         generator=torch.Generator().manual_seed(7))
    for name in ("morf", "lerf", "gap"):
        assert torch.equal(getattr(first, name)[0], getattr(fourth, name)[3]), name
    alone = road_curves(model, image, saliency, 2, generator=torch.Generator().manual_seed(7), max_batch_size=2)
    torch.testing.assert_close(alone.morf[0], first.morf[0], atol=1e-6, rtol=0)
    # The noise matters: another seed moves the numbers.
    other = road_curves(model, image, saliency, 2, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other.morf[0], first.morf[0])


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"fractions": (0.2, 0.1)}, ValueError, "`fractions` must be strictly increasing"),
        ({"fractions": (0.0, 0.5)}, ValueError, "`fractions` must lie strictly between 0 and 1"),
        ({"fractions": (0.5, 1.0)}, ValueError, "`fractions` must lie strictly between 0 and 1"),
        ({"fractions": ()}, ValueError, "at least one fraction"),
        ({"fractions": "0.5"}, TypeError, "`fractions`"),
        ({"fractions": (True,)}, TypeError, "`fractions`"),
        ({"noise_std": -0.1}, ValueError, "`noise_std`"),
        ({"noise_std": "a"}, TypeError, "`noise_std`"),
        ({"solver_iterations": 0}, ValueError, "`solver_iterations`"),
        ({"solver_tolerance": float("nan")}, ValueError, "`solver_tolerance`"),
        ({"max_batch_size": 0}, ValueError, "`max_batch_size`"),
        ({"generator": 3}, TypeError, "`generator`"),
    ],
)
def test_invalid_arguments_are_named(kwargs, error, match):
    model = ForwardRecorder(linear_model())
    with pytest.raises(error, match=match):
        road_curves(model, torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8), 0, **kwargs)
    assert model.calls == []  # checked before any forward


def test_invalid_inputs_are_named():
    model, images = linear_model(), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="`saliency`"):
        road_curves(model, images, torch.rand(3, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="`targets`"):
        road_curves(model, images, torch.rand(2, 1, 8, 8), [0, 1, 2])
    with pytest.raises(ValueError, match="`images`"):
        road_curves(model, images[0], torch.rand(2, 1, 8, 8), 0)
    with pytest.raises(ValueError, match="`targets` must be class indices below"):
        road_curves(model, images, torch.rand(2, 1, 8, 8), 5)
    assert check_fractions(torch.tensor([0.1, 0.9], dtype=torch.float64)).tolist() == [0.1, 0.9]


def test_trained_cnn_igos_saliency_beats_random_and_edge_maps(trained_cnn, probe_data):
    from torchvision.transforms.v2.functional import gaussian_blur

    images, labels = probe_data.images[:8], probe_data.labels[:8]
    fractions = (0.1, 0.3, 0.5, 0.7, 0.9)
    igos = lightning_igos.igos(trained_cnn, images, labels, iterations=2, ig_steps=4).saliency
    random = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    edges = (images - gaussian_blur(images, kernel_size=[5, 5], sigma=[1.0, 1.0])).abs().sum(1, keepdim=True)
    gaps = {name: road_curves(trained_cnn, images, s, labels, fractions=fractions).gap.mean().item()
            for name, s in {"igos": igos, "random": random, "edges": edges}.items()}
    assert abs(gaps["random"]) < 0.1
    assert gaps["igos"] > gaps["random"] + 0.3
    assert gaps["igos"] > gaps["edges"] + 0.03


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    model, images, saliency = linear_model(), torch.randn(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    cpu = road_curves(model, images, saliency, 1)
    gpu = road_curves(model.cuda(), images.cuda(), saliency.cuda(), 1)
    assert gpu.morf.device.type == "cuda"
    torch.testing.assert_close(gpu.morf.cpu(), cpu.morf, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu.gap.cpu(), cpu.gap, atol=1e-4, rtol=0)

"""Rendering: shapes, value ranges, invariants of the colormap and overlays, PNG output, argument errors."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import Normalize

from lightning_igos import render
from lightning_igos.render import (
    colormap,
    curve_image,
    overlay,
    overlay_grid,
    probe_panel,
    save_png,
    unnormalize,
)

FAST = settings(max_examples=25, deadline=None)
STEPS = torch.linspace(0, 1, 21)
INSERTION = torch.sigmoid((STEPS - 0.2) * 15)
DELETION = torch.exp(-STEPS * 8)


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """Rec. 709 luma of (..., 3, H, W) colours."""
    weights = torch.tensor([0.2126, 0.7152, 0.0722]).view(3, 1, 1)
    return (rgb * weights).sum(dim=-3)


def check_image(out: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert out.shape == shape
    assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad
    assert out.min() >= 0 and out.max() <= 1


def panel(image: torch.Tensor, title: str = "target 2 p=0.93", **kwargs) -> torch.Tensor:
    return probe_panel(
        image, torch.rand(1, 8, 8), INSERTION, DELETION, STEPS, 0.82, torch.tensor(0.12), title, **kwargs
    )


# ----------------------------------------------------------------------------- shapes and ranges


@pytest.mark.parametrize(
    ("fn", "shape"),
    [
        (lambda: unnormalize(torch.randn(2, 3, 9, 7)), (2, 3, 9, 7)),
        (lambda: unnormalize(torch.randn(1, 9, 7, requires_grad=True)), (3, 9, 7)),
        (lambda: unnormalize(torch.randn(2, 1, 9, 7), mean=[0.5], std=[0.2]), (2, 3, 9, 7)),
        (lambda: colormap(torch.randn(2, 1, 9, 7, requires_grad=True)), (2, 3, 9, 7)),
        (lambda: colormap(torch.rand(1, 9, 7)), (3, 9, 7)),
        (lambda: overlay(torch.rand(2, 3, 16, 12), torch.randn(2, 1, 4, 3) * 50), (2, 3, 16, 12)),
        (lambda: overlay(torch.rand(3, 16, 12), torch.randn(16, 12, requires_grad=True)), (3, 16, 12)),
        (lambda: overlay(torch.rand(2, 1, 16, 12), torch.randn(2, 16, 12)), (2, 3, 16, 12)),
        # 16-pixel images are drawn 10 times larger (160-pixel tiles), unless min_size says otherwise.
        (lambda: overlay_grid(torch.rand(5, 3, 16, 16), torch.rand(5, 1, 4, 4)), (3, 326, 488)),
        (lambda: overlay_grid(torch.rand(5, 3, 16, 16), torch.rand(5, 1, 4, 4), nrow=5), (3, 164, 812)),
        (lambda: overlay_grid(torch.rand(5, 3, 16, 16), torch.rand(5, 1, 4, 4), min_size=1), (3, 38, 56)),
        (lambda: overlay_grid(torch.rand(2, 3, 200, 180), torch.rand(2, 1, 4, 4)), (3, 204, 366)),
        (lambda: curve_image(INSERTION * 2, DELETION - 1, STEPS, 0.8, 0.1), (3, 160, 160)),
        (lambda: curve_image(INSERTION.tolist(), DELETION, STEPS, 0.8, 0.1, size=(40, 90)), (3, 40, 90)),
        (lambda: curve_image(INSERTION, DELETION, STEPS, 0.8, 0.1, size=64), (3, 64, 64)),
    ],
)
def test_shapes_dtype_and_range(fn, shape) -> None:
    check_image(fn(), shape)


def test_no_autograd_graph_on_outputs() -> None:
    image = torch.rand(3, 32, 32, requires_grad=True)
    saliency = torch.rand(1, 8, 8, requires_grad=True)
    auc = torch.tensor(0.5, requires_grad=True)
    out = probe_panel(image, saliency, INSERTION.clone().requires_grad_(), DELETION, STEPS, auc, auc, "t", min_size=32)
    assert not out.requires_grad and out.grad_fn is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_give_cpu_outputs() -> None:
    images, saliency = torch.rand(2, 3, 16, 16, device="cuda"), torch.rand(2, 1, 4, 4, device="cuda")
    check_image(overlay(images, saliency), (2, 3, 16, 16))
    check_image(unnormalize(images, torch.zeros(3, device="cuda"), torch.ones(3, device="cuda")), (2, 3, 16, 16))
    curves = [c.cuda() for c in (INSERTION, DELETION, STEPS)]
    out = probe_panel(images[0], saliency[0], *curves, torch.tensor(0.8, device="cuda"), 0.1, "t", min_size=32)
    assert out.device.type == "cpu"


def test_docstring_examples_run() -> None:
    result = doctest.testmod(render, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------------------- unnormalize


@FAST
@given(
    mean=st.lists(st.floats(-2, 2), min_size=3, max_size=3),
    std=st.lists(st.floats(0.05, 3), min_size=3, max_size=3),
    seed=st.integers(0, 2**16),
)
def test_unnormalize_inverts_normalize(mean: list[float], std: list[float], seed: int) -> None:
    x = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(seed))
    z = Normalize(mean, std)(x)
    assert torch.allclose(unnormalize(z, mean, std), x, atol=1e-5)
    assert torch.allclose(unnormalize(z, torch.tensor(mean), torch.tensor(std)), x, atol=1e-5)


def test_unnormalize_clamps_and_broadcasts_one_number() -> None:
    z = torch.tensor([-10.0, 0.0, 10.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    out = unnormalize(z, mean=0.5, std=0.25)
    assert out[0, :, 0, 0].tolist() == [0.0, 0.5, 1.0]


def test_unnormalize_min_max_per_image() -> None:
    x = torch.stack([torch.randn(3, 8, 8) * 5 + 3, torch.randn(3, 8, 8) * 0.01 - 7, torch.full((3, 8, 8), 4.0)])
    out = unnormalize(x)
    assert out[:2].amin(dim=(1, 2, 3)).tolist() == [0.0, 0.0]
    assert torch.allclose(out[:2].amax(dim=(1, 2, 3)), torch.ones(2))
    assert torch.equal(out[2], torch.zeros(3, 8, 8))  # a constant image has no range to stretch
    # per-image rescaling is affine, so it keeps the order of pixel values
    assert torch.equal(out[0].flatten().argsort(stable=True), x[0].flatten().argsort(stable=True))


def test_unnormalize_grey_becomes_three_equal_channels() -> None:
    out = unnormalize(torch.randn(2, 1, 5, 5))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])


# ----------------------------------------------------------------------------- colormap


def test_colormap_ends_are_the_table_ends_and_input_is_clamped() -> None:
    rgb = colormap(torch.tensor([-3.0, 0.0, 1.0, 7.0]).view(1, 1, 4))
    first = torch.tensor([int(render._CONTROL_POINTS[0][i : i + 2], 16) / 255 for i in (0, 2, 4)])
    last = torch.tensor([int(render._CONTROL_POINTS[-1][i : i + 2], 16) / 255 for i in (0, 2, 4)])
    for column, expected in ((0, first), (1, first), (2, last), (3, last)):
        assert torch.allclose(rgb[:, 0, column], expected, atol=1e-6)


def test_colormap_luminance_strictly_increases() -> None:
    lum = luminance(colormap(torch.linspace(0, 1, 2001).view(1, 1, -1)))[0]
    assert (lum.diff() > 0).all()


@FAST
@given(a=st.floats(0, 1), b=st.floats(0, 1))
def test_colormap_is_monotone_in_luminance(a: float, b: float) -> None:
    lum = luminance(colormap(torch.tensor([a, b]).view(1, 1, 2)))[0]
    if a < b:
        assert lum[0] <= lum[1]
    elif a == b:
        assert lum[0] == lum[1]


def test_colormap_is_continuous() -> None:
    rgb = colormap(torch.linspace(0, 1, 1001).view(1, 1, -1))
    assert rgb.diff(dim=-1).abs().max() < 0.01


# ----------------------------------------------------------------------------- overlay


def corner_peak(corner: int, size: int = 8) -> tuple[torch.Tensor, slice, slice]:
    """A low-resolution saliency peaked in one corner, and the image quadrant that holds it."""
    s = torch.zeros(1, 1, size, size)
    row, col = (0 if corner < 2 else -1), (0 if corner % 2 == 0 else -1)
    s[0, 0, row, col] = 1.0
    return s, (slice(0, 16) if row == 0 else slice(16, 32)), (slice(0, 16) if col == 0 else slice(16, 32))


@FAST
@given(
    colour=st.lists(st.floats(0, 1), min_size=3, max_size=3),
    corner=st.integers(0, 3),
    alpha=st.floats(0.05, 1),
)
def test_overlay_brightens_most_where_saliency_peaks(colour: list[float], corner: int, alpha: float) -> None:
    image = torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, 32, 32)
    saliency, rows, cols = corner_peak(corner)
    gain = luminance(overlay(image, saliency, alpha) - image)[0]
    assert gain[rows, cols].max() == gain.max()
    assert gain[rows, cols].max() > gain.flatten().sort().values[-(32 * 32) // 2]


@pytest.mark.parametrize("corner", range(4))
def test_overlay_on_black_changes_the_peaked_corner_most(corner: int) -> None:
    image = torch.zeros(1, 3, 32, 32)
    saliency, rows, cols = corner_peak(corner)
    change = (overlay(image, saliency) - image).abs().sum(dim=1)[0]
    assert change[rows, cols].max() == change.max()
    opposite = change[(slice(16, 32) if rows.start == 0 else slice(0, 16)), :]
    assert opposite.max() < 0.5 * change.max()


@FAST
@given(scale=st.floats(1e-3, 1e3), shift=st.floats(-1e3, 1e3), alpha=st.floats(0, 1))
def test_overlay_depends_only_on_the_saliency_ranking(scale: float, shift: float, alpha: float) -> None:
    # float32 keeps about 7 digits: a shift far above the saliency's range loses the ranking itself.
    assume(abs(shift) <= 100 * scale)
    g = torch.Generator().manual_seed(0)
    image, saliency = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 1, 8, 8, generator=g)
    out = overlay(image, saliency, alpha)
    assert torch.allclose(overlay(image, saliency * scale + shift, alpha), out, atol=1e-3)


def test_overlay_alpha_ends_and_constant_saliency() -> None:
    image, saliency = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    assert torch.equal(overlay(image, saliency, alpha=0.0), image)
    lo = saliency.amin(dim=(1, 2, 3), keepdim=True)
    normalised = (saliency - lo) / (saliency.amax(dim=(1, 2, 3), keepdim=True) - lo)
    assert torch.allclose(overlay(image, saliency, alpha=1.0, top=1.0), colormap(normalised), atol=1e-5)
    # By default the 99th percentile is the brightest colour: a sparse map stays visible.
    sparse = torch.zeros(1, 1, 20, 20)
    sparse[0, 0, :2, :4] = torch.tensor([1.0, 0.2, 0.2, 0.2])  # 8 of 400 pixels: above the 99th percentile
    sparse[0, 0, 2, 0] = 0.1
    shown = overlay(torch.zeros(1, 3, 20, 20), sparse, alpha=1.0)
    torch.testing.assert_close(shown[0, :, 0, 1], shown[0, :, 0, 0])  # 0.2 is as bright as the maximum
    assert luminance(shown)[0, 2, 0] > luminance(overlay(torch.zeros(1, 3, 20, 20), sparse, 1.0, top=1.0))[0, 2, 0]
    flat = overlay(image, torch.full((2, 1, 8, 8), 3.0), alpha=1.0)
    assert torch.allclose(flat, colormap(torch.zeros(2, 1, 8, 8)))


def test_overlay_grid_matches_individual_overlays() -> None:
    images, saliency = torch.rand(3, 3, 10, 10), torch.rand(3, 1, 5, 5)
    grid, single = overlay_grid(images, saliency, nrow=3, min_size=1), overlay(images, saliency)
    for i in range(3):
        left = 2 + i * 12
        assert torch.allclose(grid[:, 2:12, left : left + 10], single[i])
    assert (grid[:, :2] == 1).all()  # white padding


# ----------------------------------------------------------------------------- curves and panels


def test_curve_image_draws_both_curves_on_white() -> None:
    out = curve_image(INSERTION, DELETION, STEPS, 0.82, 0.12)
    assert (out.mean(dim=(1, 2)) > 0.8).all()  # mostly white background
    assert torch.equal(out[:, -1, -1], torch.ones(3))
    for rgb in (render._INSERTION_RGB, render._DELETION_RGB):
        target = torch.tensor(rgb).view(3, 1, 1) / 255
        assert ((out - target).abs().amax(dim=0) < 0.05).sum() > 50


def test_curve_image_clamps_values_above_one_and_shows_the_aucs() -> None:
    base = curve_image(INSERTION, DELETION, STEPS, 0.82, 0.12)
    high = curve_image(INSERTION * 3, DELETION, STEPS, 0.82, 0.12)
    assert torch.equal(high, curve_image((INSERTION * 3).clamp(max=1), DELETION, STEPS, 0.82, 0.12))
    assert not torch.equal(high, base)
    assert not torch.equal(curve_image(INSERTION, DELETION, STEPS, 0.55, 0.12), base)  # the legend text changed


def test_probe_panel_upscales_small_images_with_nearest_neighbour() -> None:
    image = torch.rand(3, 64, 48)
    out = panel(image)  # 64 pixels high: three times larger, the first whole factor to reach 160
    gap = max(2, 192 // 40)
    assert out.shape[0] == 3 and out.shape[2] == 2 * 144 + 192 + 2 * gap
    header = render.panels._panel_layout(192, 144, 3).tiles[0][0]
    assert header > 0  # the title strip sits above the 192-pixel tiles
    assert torch.allclose(out[:, header : header + 192, :144], image.repeat_interleave(3, 1).repeat_interleave(3, 2))
    title = out[:, :header]
    assert title.min() < 0.3 and (title.mean() > 0.8)  # dark text on white
    assert not torch.equal(panel(image, "another title")[:, :header], title)


@pytest.mark.parametrize(("height", "min_size", "tile"), [(40, 100, 120), (150, 128, 150), (32, 32, 32)])
def test_probe_panel_tile_height(height: int, min_size: int, tile: int) -> None:
    out = panel(torch.rand(3, height, 20), min_size=min_size)
    assert out.shape[1] > tile and out.shape[2] == 2 * 20 * math.ceil(tile / height) + tile + 2 * max(2, tile // 40)
    check_image(out, tuple(out.shape))


def test_probe_panel_fits_a_long_title() -> None:
    short = panel(torch.rand(3, 32, 32), title="#1 class 2", min_size=32)
    out = panel(torch.rand(3, 32, 32), title="target 999 p=0.123456 " * 10, min_size=32)
    assert out.shape == short.shape  # the title never widens the panel
    strip = out[:, : render.panels._panel_layout(32, 32, 3).tiles[0][0]]  # the title strip of 32-pixel tiles
    ink = (strip.amin(0) < 0.5).any(0).nonzero().flatten()
    assert ink.numel() > 0, "the title is drawn"
    # It stops short of the right edge: shrunk and cut with "...", not clipped by the border.
    assert int(ink.max()) < out.shape[-1] - 2


def kept_panel(height: int, width: int | None = None, **kwargs) -> torch.Tensor:
    width = height if width is None else width
    return panel(torch.rand(3, height, width), kept=torch.rand(3, height, width),
                 kept_label="top 10% kept: p=0.41, half back at 8%", **kwargs)


@pytest.mark.parametrize("height", [16, 32, 40, 80, 160])  # all drawn at 160 pixels
def test_a_panel_with_kept_pixels_fits_the_tensorboard_image_card(height: int) -> None:
    """TensorBoard's Images tab shows every image in a 350-pixel card (at any window width), scaled to
    its width: a 2x2 panel of 160-pixel tiles shows at about its own size, not shrunk to half."""
    out = kept_panel(height)
    assert 300 <= out.shape[-1] <= 350
    assert out.shape[-2] > out.shape[-1]  # two rows of tiles, each with a strip above
    check_image(out, tuple(out.shape))


def test_a_panel_that_would_be_wider_than_the_card_is_enlarged_one_factor_less() -> None:
    """64-pixel images: three times (192-pixel tiles, 388 pixels, shrunk by TensorBoard, which drops pixel
    columns of the text) would reach 160, twice (128-pixel tiles) fits the 350-pixel card."""
    out = kept_panel(64)
    assert out.shape[-1] == 2 * 128 + 3  # gaps of tile // 40 pixels
    assert kept_panel(100).shape[-1] == 2 * 200 + 5  # once (100-pixel tiles) would be too small: kept wider
    assert panel(torch.rand(3, 64, 64)).shape[-1] == 3 * 192 + 2 * 4  # a one-row panel is wider anyway


def test_the_panel_layout_puts_four_tiles_in_two_rows_without_overlap() -> None:
    box = render.panels._panel_layout(160, 160, 4)
    assert box.width == 2 * 160 + 4 and len(box.tiles) == 4
    rects = [(y, x, 160, 160) for y, x in box.tiles] + list(box.headers) + [box.colorbar]
    for i, (y, x, h, w) in enumerate(rects):
        assert 0 <= y and y + h <= box.height and 0 <= x and x + w <= box.width
        for (y2, x2, h2, w2) in rects[i + 1 :]:
            assert y + h <= y2 or y2 + h2 <= y or x + w <= x2 or x2 + w2 <= x, "parts overlap"
    (image_y, image_x), (overlay_y, overlay_x), (kept_y, kept_x), (curves_y, curves_x) = box.tiles
    assert image_y == overlay_y < kept_y == curves_y and image_x == kept_x < overlay_x == curves_x
    key_y, key_x, _, key_w = box.colorbar
    assert key_y == overlay_y + 160 and key_x == overlay_x and key_w == 160  # the key right under the overlay


def test_the_panel_shows_the_overlay_colour_key_low_to_high() -> None:
    out = kept_panel(32)
    y, x, height, width = render.panels._panel_layout(160, 160, 4).colorbar
    _, (x0, y0, x1, y1), _ = render.heatmap._colorbar_layout(height, width)
    assert x1 - x0 > width // 2  # a bar over most of the overlay's width, with "low" and "high" beside it
    bar = out[:, y + y0 : y + y1, x + x0 : x + x1]
    assert torch.equal(bar, bar[:, :1].expand_as(bar))  # each column one colour
    luma = luminance(bar[:, 0:1])[0]
    assert (luma[1:] >= luma[:-1]).all() and luma[-1] - luma[0] > 0.8  # dark (low) to bright (high)
    assert torch.allclose(bar[:, 0, 0], colormap(torch.zeros(1, 1, 1))[:, 0, 0], atol=1e-6)
    assert torch.allclose(bar[:, 0, -1], colormap(torch.ones(1, 1, 1))[:, 0, 0], atol=1e-6)
    labels = out[:, y : y + height, x : x + x0].amin(0) < 0.5, out[:, y : y + height, x + x1 : x + width].amin(0) < 0.5
    assert all(int(ink.sum()) > 5 for ink in labels)  # "low" and "high" are written


def test_curve_axes_have_titles_beside_the_plot() -> None:
    side = 160
    box = render.curves._curve_layout(side, side)
    out = curve_image(INSERTION, DELETION, STEPS, 0.82, 0.12, size=side)
    ink = out.amax(0) < 0.6
    x0, y0, x1, y1 = box.x_title  # under the x tick labels, as wide as the plot
    assert y0 > box.bottom and x0 >= box.left and x1 <= side and y1 <= side
    rows, cols = ink[y0:y1, x0:x1].nonzero().unbind(1)
    assert cols.numel() > 0 and int(cols.max() - cols.min()) > 3 * int(rows.max() - rows.min())  # a line of text
    x0, y0, x1, y1 = box.y_title  # left of the y tick labels, as high as the plot, turned a quarter
    assert x1 < box.left and y0 >= box.top and y1 <= box.bottom + 1
    rows, cols = ink[y0:y1, x0:x1].nonzero().unbind(1)
    assert rows.numel() > 0 and int(rows.max() - rows.min()) > 3 * int(cols.max() - cols.min())
    assert (render.curves.X_TITLE, render.curves.Y_TITLE) == ("fraction of pixels", "class probability")
    assert render.curves._curve_layout(64, 64).x_title is None  # no room on a small tile


def test_the_overlay_grid_captions_share_one_font_size() -> None:
    labels = ["#0: 285 (Egyptian cat)", "#1: 1 (goldfish)", "#2: 422 (barbell)", "#3: 968 (cup)"]
    grid = overlay_grid(torch.rand(4, 3, 64, 64), torch.rand(4, 1, 8, 8), nrow=4, labels=labels)
    height = render._drawing._header_height(192)
    hashes = []
    for i in range(4):  # every caption starts with "#": the same glyph at the same size and height
        strip = grid[:, 2 : 2 + height, 2 + i * 194 : 2 + i * 194 + 192]
        ink = strip.amin(0) < 0.9
        cols = ink.any(0).nonzero().flatten()
        first = cols[: int((cols.diff() > 1).nonzero().flatten()[0]) + 1]  # the columns of the first glyph
        rows = ink[:, first].any(1).nonzero().flatten()
        hashes.append((int(rows.min()), int(rows.max()), int(first.max() - first.min())))
    assert len(set(hashes)) == 1, hashes


# ----------------------------------------------------------------------------- save_png


@pytest.mark.parametrize("channels", [3, 1])
def test_save_png_round_trips(tmp_path, channels: int) -> None:
    image = torch.rand(channels, 7, 11)
    path = tmp_path / "a" / "b" / "panel.png"
    save_png(image, path)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB" and png.size == (11, 7)
        back = torch.tensor(list(png.getdata()), dtype=torch.float32).T.reshape(3, 7, 11) / 255
    assert (back - image.expand(3, -1, -1)).abs().max() <= 0.5 / 255 + 1e-6


def test_save_png_accepts_a_string_path(tmp_path) -> None:
    save_png(torch.ones(3, 2, 2) * 2, str(tmp_path / "x.png"))  # values are clamped
    with Image.open(tmp_path / "x.png") as png:
        assert png.getpixel((0, 0)) == (255, 255, 255)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: unnormalize(torch.rand(3, 3, 4, 4), mean=[0.5, 0.5], std=[0.2] * 3), "mean"),
        (lambda: unnormalize(torch.rand(3, 4, 4), mean=[0.5] * 3), "std"),
        (lambda: unnormalize(torch.rand(3, 4, 4), std=[0.5] * 3), "mean"),
        (lambda: unnormalize(torch.rand(3, 4, 4), mean=[0.5] * 3, std=[0.2, 0.0, 0.2]), "std"),
        (lambda: unnormalize(torch.rand(3, 4, 4), mean=["a", "b", "c"], std=[0.2] * 3), "mean"),
        (lambda: unnormalize(torch.rand(4, 4)), "images"),
        (lambda: unnormalize(torch.rand(1, 0, 4, 4)), "images"),
        (lambda: unnormalize(torch.full((3, 4, 4), math.nan)), "images"),
        (lambda: colormap(torch.rand(2, 3, 4, 4)), "values"),
        (lambda: overlay(torch.rand(2, 3, 8, 8), torch.rand(3, 1, 8, 8)), "saliency"),
        (lambda: overlay(torch.rand(3, 8, 8), torch.rand(2, 8, 8)), "saliency"),
        (lambda: overlay(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), alpha=1.5), "alpha"),
        (lambda: overlay_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), nrow=0), "nrow"),
        (lambda: overlay_grid(torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8), min_size=0), "min_size"),
        (lambda: curve_image(INSERTION, DELETION[:-1], STEPS, 0.8, 0.1), "deletion"),
        (lambda: curve_image(INSERTION, DELETION, STEPS * 2, 0.8, 0.1), "fractions"),
        (lambda: curve_image(INSERTION[:1], DELETION[:1], STEPS[:1], 0.8, 0.1), "insertion"),
        (lambda: curve_image(INSERTION, DELETION, STEPS, math.nan, 0.1), "insertion_auc"),
        (lambda: curve_image(INSERTION, DELETION, STEPS, 0.8, torch.rand(2)), "deletion_auc"),
        (lambda: curve_image(INSERTION, DELETION, STEPS, 0.8, 0.1, size=(8, 128)), "size"),
        (lambda: panel(torch.rand(3, 16, 16), min_size=8), "min_size"),
        (lambda: panel(torch.rand(1, 3, 16, 16)), "image"),
        (lambda: save_png(torch.rand(1, 3, 4, 4), "unused.png"), "image"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(call, argument: str) -> None:
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call()


def test_wrong_types_raise_type_error() -> None:
    with pytest.raises(TypeError, match="`images`"):
        overlay([[0.0]], torch.rand(1, 1, 1))
    with pytest.raises(TypeError, match="`title`"):
        probe_panel(torch.rand(3, 8, 8), torch.rand(1, 8, 8), INSERTION, DELETION, STEPS, 0.5, 0.5, 3)


@pytest.mark.parametrize(("channels", "shown"), [(2, [0, 0, 0]), (4, [0, 1, 2]), (6, [0, 1, 2])])
def test_other_channel_counts_are_displayed(tmp_path, channels: int, shown: list[int]) -> None:
    """Two channels show the first in grey; four or more (RGBA, multispectral) the first three."""
    images = torch.rand(2, channels, 8, 8)
    out = unnormalize(images, mean=[0.0] * channels, std=[1.0] * channels)
    assert out.shape == (2, 3, 8, 8)
    assert torch.equal(out, images[:, shown])
    f = torch.linspace(0, 1, 5)
    tile = probe_panel(images[0], torch.rand(1, 4, 4), f, 1 - f, f, 0.5, 0.5, "x")
    assert tile.shape[0] == 3
    assert overlay_grid(images, torch.rand(2, 1, 4, 4)).shape[0] == 3
    save_png(images[0], tmp_path / "x.png")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- legible where it is shown


def _ink_runs(ink: torch.Tensor, min_gap: int) -> list[tuple[int, int]]:
    """The runs of True in a 1-D mask, merging runs less than ``min_gap`` apart (the glyphs of one label)."""
    runs: list[list[int]] = []
    for i in ink.nonzero().flatten().tolist():
        if runs and i - runs[-1][1] <= min_gap:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return [(a, b) for a, b in runs]


def test_a_32_pixel_probe_panel_is_drawn_at_a_readable_size() -> None:
    """A 32x32 probe image gets 160-pixel tiles, and its header's letters are over 12 pixels high."""
    f = torch.linspace(0, 1, 21)
    out = probe_panel(torch.rand(3, 32, 32), torch.rand(1, 8, 8), f, 1 - f, f, 0.82, 0.12, "#0 class 1 p=0.95")
    header = render.panels._panel_layout(160, 160, 3).tiles[0][0]
    assert header >= 20 and out.shape[2] == 3 * 160 + 2 * 4
    rows = (out[:, :header].amin(0) < 0.5).any(1).nonzero().flatten()
    assert int(rows.max() - rows.min()) + 1 >= 13  # "#0 class 1 p=0.95": cap height plus descender
    grid = overlay_grid(torch.rand(9, 3, 32, 32), torch.rand(9, 1, 8, 8))
    assert grid.shape == (3, 2 + 3 * 162, 2 + 3 * 162)  # 160-pixel tiles, not 104 pixels for all nine


def test_curve_axes_have_ticks_labelled_0_half_and_1() -> None:
    out = curve_image(INSERTION, DELETION, STEPS, 0.82, 0.12)
    dark = out.amax(0) < 0.4  # the axes are dark grey
    axis_col, axis_row = int(dark.sum(0).argmax()), int(dark.sum(1).argmax())
    assert dark[:, axis_col].sum() > 60 and dark[axis_row].sum() > 60  # a y and an x axis (curves cover parts)
    ink = out.amax(0) < 0.6
    # Left of the y axis (right of its title): three labels (1 at the top, 0.5, 0 at the bottom), one above the other.
    y_labels = _ink_runs(ink[:, render.curves._curve_layout(160, 160).y_title[2] : axis_col - 3].any(1), min_gap=3)
    assert len(y_labels) == 3
    # "1" hangs from the y = 1 line and "0" stands on the x axis; "0.5" is centred half way between.
    (one_top, _), (half_top, half_bottom), (_, zero_bottom) = y_labels
    assert abs(zero_bottom - axis_row) <= 1
    assert (half_top + half_bottom) / 2 == pytest.approx((one_top + zero_bottom) / 2, abs=2)
    # Below the x axis: three labels side by side (0, 0.5, 1), none wider than "0.5".
    x_labels = _ink_runs(ink[axis_row + 6 : render.curves._curve_layout(160, 160).x_title[1], axis_col - 6 :].any(0),
                         min_gap=4)
    assert len(x_labels) == 3
    assert all(b - a < 30 for a, b in x_labels)

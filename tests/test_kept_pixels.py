"""What a map claims: the kept-pixels view is the insertion curve's point, and the needed-fraction statistic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_igos.core.causal import needed_fraction
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.explainers import register_explainer, unregister_explainer
from lightning_igos.core.statistics import get_statistic, statistics
from lightning_igos.render import (
    KEPT_FRACTION,
    explanation_panels,
    insertion_substrate,
    kept_pixels,
    kept_point,
    probe_panel,
    unnormalize,
)


class Recorder(nn.Module):
    """A small linear classifier that keeps every input it is given."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(channels * size * size, 3))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.extend(x.detach().clone())
        return self.net(x)


@pytest.fixture()
def given_saliency():
    """An explainer named ``given`` that returns ``holder["saliency"]``."""
    holder: dict[str, torch.Tensor] = {}
    register_explainer("given", lambda request: holder["saliency"].to(request.images.device), passes=lambda c: 0,
                       replace=True)
    yield holder
    unregister_explainer("given")


# ----------------------------------------------------------------------------- the kept pixels


@pytest.mark.parametrize("substrates", [
    {},  # the defaults (each curve its own)
    {"substrate": "zeros"},
    {"substrate": "blur", "insertion_substrate": "mean"},
    {"deletion_substrate": "blur", "insertion_substrate": "zeros"},
])
@pytest.mark.parametrize("saliency_size", [12, 4])  # full resolution, and a low-resolution map upsampled
def test_kept_pixels_is_the_insertion_curves_image_at_that_point(given_saliency, substrates, saliency_size) -> None:
    size, steps = 12, 20
    model = Recorder(3, size)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    # Few distinct values: most pixels tie, and the curve breaks ties by pixel index.
    given_saliency["saliency"] = torch.randint(0, 3, (2, 1, saliency_size, saliency_size),
                                               generator=torch.Generator().manual_seed(2)).float()
    config = IGOSConfig(method="given", metric_steps=steps, **substrates)
    evaluation = evaluate(model, images, [0, 2], config)
    kept = kept_pixels(images, given_saliency["saliency"], insertion_substrate(images, config), steps=steps)
    point = kept_point(steps)
    assert point == 2  # 10% of a 20-step curve
    for i in range(2):
        assert any(torch.equal(kept[i], seen) for seen in model.inputs), f"image {i}: not an image the curve scored"
        n_kept = int((kept[i] != insertion_substrate(images, config)[i]).any(0).sum())
        assert n_kept <= round(point * size * size / steps)
    with torch.no_grad():
        scores = model.net(kept).softmax(1)[torch.arange(2), torch.tensor([0, 2])]
    torch.testing.assert_close(scores, evaluation.curves.insertion[:, point], rtol=0, atol=1e-6)


def test_kept_pixels_keeps_the_top_ranked_pixels_ties_to_the_lower_index() -> None:
    image, substrate = torch.ones(1, 1, 2, 4), torch.zeros(1, 1, 2, 4)
    saliency = torch.tensor([[[[0.0, 1.0, 0.5, 1.0], [1.0, 0.0, 0.0, 0.0]]]])
    kept = kept_pixels(image, saliency, substrate, fraction=0.25)  # 2 of 8: the first two of the three 1.0s
    assert kept[0, 0].tolist() == [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]
    kept = kept_pixels(image, saliency, substrate, fraction=0.5)  # 4: every 1.0, then the 0.5
    assert kept[0, 0].tolist() == [[0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]]


@pytest.mark.parametrize(("mean", "std"), [((0.4, 0.5, 0.6), (0.2, 0.25, 0.3)), (None, None)])
def test_the_panel_shows_the_curve_points_image_as_the_image_is_shown(mean, std) -> None:
    # What the panel draws is the display of the very image the curve scored, with the image's own display
    # rule (also when each image is rescaled to its own range: the substrate takes the image's range).
    size, steps = 160, 50  # 160 pixels: drawn at scale 1
    g = torch.Generator().manual_seed(0)
    images, saliency = torch.randn(1, 3, size, size, generator=g), torch.rand(1, 1, 20, 20, generator=g)
    substrate = insertion_substrate(images)
    expected = unnormalize(kept_pixels(images, saliency, substrate, steps=steps), mean, std, range_of=images)
    shown = unnormalize(images, mean, std)
    shown_substrate = unnormalize(substrate, mean, std, range_of=images)
    f = torch.linspace(0, 1, steps + 1)
    curves = type("Curves", (), {"fractions": f, "insertion": f[None], "deletion": 1 - f[None],
                                 "insertion_auc": torch.tensor([0.5]), "deletion_auc": torch.tensor([0.5]),
                                 "clean_score": torch.tensor([1.0])})()
    panel = explanation_panels(shown, saliency, curves, torch.tensor([1]), None, [0], substrate=shown_substrate)[0]
    tile = panel[:, -size:, :size]  # the bottom row: kept | curves
    torch.testing.assert_close(tile, expected[0], rtol=0, atol=1e-6)
    assert not torch.allclose(tile, shown[0])  # the kept view is not the image itself


def test_a_panel_with_the_kept_view_has_one_more_tile_and_checks_it() -> None:
    f = torch.linspace(0, 1, 11)
    args = (torch.rand(3, 40, 40), torch.rand(1, 5, 5), f, 1 - f, f, 0.5, 0.5, "#0 class 1 p=0.90")
    plain = probe_panel(*args)
    with_kept = probe_panel(*args, kept=torch.rand(3, 40, 40), kept_label="top 10% kept: p=0.41")
    assert with_kept.shape[1] > plain.shape[1] + 160  # two rows of 160-pixel tiles: image | overlay, kept | curves
    assert with_kept.shape[2] == 2 * 160 + 4
    with pytest.raises(ValueError, match="`kept` must be one image shaped like `image`"):
        probe_panel(*args, kept=torch.rand(3, 20, 20))
    with pytest.raises(TypeError, match="`kept_label` must be a str"):
        probe_panel(*args, kept=torch.rand(3, 40, 40), kept_label=3)


@pytest.mark.parametrize(("steps", "fraction", "point"), [(50, 0.1, 5), (50, 0.05, 3), (28, 0.1, 3), (4, 0.1, 1),
                                                         (10, 1.0, 10)])
def test_kept_point_is_the_curve_point_nearest_the_fraction(steps, fraction, point) -> None:
    assert kept_point(steps, fraction) == point


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"fraction": 0.0}, "`fraction` must be a number in \\(0, 1\\]"),
    ({"fraction": 1.5}, "`fraction` must be a number in \\(0, 1\\]"),
    ({"steps": 0}, "`steps` must be an int >= 1"),
    ({"substrate": torch.zeros(1, 3, 8, 4)}, "`substrate` must be shaped like `images`"),
    ({"saliency": torch.rand(1, 1, 16, 16)}, "`saliency` resolution"),
])
def test_kept_pixels_names_a_bad_argument(kwargs, message) -> None:
    args = {"images": torch.rand(1, 3, 8, 8), "saliency": torch.rand(1, 1, 4, 4), "substrate": torch.zeros(1, 3, 8, 8)}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        kept_pixels(**args)


def test_the_default_fraction_is_a_point_of_the_default_curve() -> None:
    steps = IGOSConfig().metric_steps
    assert kept_point(steps) / steps == pytest.approx(KEPT_FRACTION)


# ----------------------------------------------------------------------------- the needed fraction

F5 = torch.linspace(0, 1, 5)  # 0, 0.25, 0.5, 0.75, 1


@pytest.mark.parametrize(("curve", "clean", "expected"), [
    ([0.0, 0.25, 0.5, 0.75, 1.0], 1.0, 0.5),  # linear: half the score at half the pixels
    ([0.0, 0.0, 0.8, 0.8, 0.8], 0.8, 0.375),  # a step between 0.25 and 0.5, read linearly
    ([0.0, 0.2, 0.6, 0.8, 0.8], 0.8, 0.375),  # 0.4 is reached half way from 0.2 to 0.6
    ([0.0, 0.5, 0.1, 0.1, 1.0], 1.0, 0.25),  # the first crossing, not a later one
    ([0.6, 0.7, 0.8, 0.9, 1.0], 1.0, 0.0),  # the substrate alone gives back half
    ([0.0, 0.1, 0.1, 0.2, 0.3], 1.0, 1.0),  # never reached: all the pixels, and not enough
])
def test_needed_fraction_on_analytic_curves(curve, clean, expected) -> None:
    got = needed_fraction(torch.tensor([curve]), F5, torch.tensor([clean]))
    torch.testing.assert_close(got, torch.tensor([expected]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=3, max_size=30), st.floats(0.05, 1))
def test_needed_fraction_is_where_the_piecewise_linear_curve_first_reaches_half(values, clean) -> None:
    curve = torch.tensor(values[:-1] + [clean], dtype=torch.float64)  # the curve ends at the clean image
    fractions = torch.linspace(0, 1, len(values), dtype=torch.float64)
    r = float(needed_fraction(curve[None], fractions, torch.tensor([clean], dtype=torch.float64)))
    level = 0.5 * clean
    assert 0 <= r <= 1
    assert float(np.interp(r, fractions.numpy(), curve.numpy())) >= level - 1e-9
    assert all(v < level for v, f in zip(curve.tolist(), fractions.tolist()) if f < r - 1e-12)


def test_needed_fraction_is_a_registered_statistic_lower_is_better() -> None:
    statistic = get_statistic("needed_fraction")
    assert statistic.higher_is_better is False and statistic.label
    assert "needed_fraction" in [s.name for s in statistics(IGOSConfig(method="gradient"))]
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 3))
    evaluation = evaluate(model, torch.randn(2, 3, 8, 8), [0, 1], IGOSConfig(method="gradient", metric_steps=8))
    curves = evaluation.curves
    torch.testing.assert_close(evaluation.per_image()["needed_fraction"],
                               needed_fraction(curves.insertion, curves.fractions, curves.clean_score))


def test_the_checks_panels_show_the_curve_point_under_the_configured_insertion_substrate(given_saliency) -> None:
    # The panels the check writes and embeds in its HTML report: the third tile is the insertion curve's
    # 10% point, over the insertion substrate the configuration names (not the deletion one).
    from lightning_igos.cli.images import check_panels
    from lightning_igos.probe import Probe

    size, steps = 160, 50
    model = Recorder(3, size)
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(3))
    given_saliency["saliency"] = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    config = IGOSConfig(method="given", metric_steps=steps, deletion_substrate="zeros", insertion_substrate="mean")
    evaluation = evaluate(model, images, [0, 1], config)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    panels, _ = check_panels(Probe(images, torch.tensor([0, 1]), mean, std), evaluation, mean, std)
    kept = kept_pixels(images, given_saliency["saliency"], images.mean(dim=(2, 3), keepdim=True).expand_as(images),
                       steps=steps)
    assert any(torch.equal(kept[0], seen) for seen in model.inputs)
    for panel, expected in zip(panels, unnormalize(kept, mean, std)):  # the bottom row: kept | curves
        torch.testing.assert_close(panel[:, -size:, :size], expected, rtol=0, atol=1e-6)


def test_the_html_report_says_what_the_panels_show() -> None:
    from lightning_igos.cli.html_report import render_html

    f = torch.linspace(0, 1, 11)
    panel = probe_panel(torch.rand(3, 32, 32), torch.rand(1, 8, 8), f, 1 - f, f, 0.5, 0.5, "#0",
                        kept=torch.rand(3, 32, 32), kept_label="top 10% kept: p=0.41, half back at 8%")
    page = render_html({"passed": True, "thresholds": [], "images": []}, panels=[("#0 class 1", panel)])
    assert 'id="panel-key"' in page and "what the map claims" in page and "needed fraction" in page
    assert 'id="panel-key"' not in render_html({"passed": True, "thresholds": [], "images": []}, panels=[])

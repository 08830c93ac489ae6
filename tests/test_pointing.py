"""The pointing game: hits and misses, the tolerance, and probe files that carry object boxes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightning_igos.probe as probe_module
from lightning_igos.core.pointing import pointing_hits, pointing_tolerance
from lightning_igos.demo.synthetic import make_object_images, peak_inside_box
from lightning_igos.probe import VERSION, VERSION_WITHOUT_BOXES, Probe, check_boxes, load_probe, save_probe


def peaked(height: int, width: int, points: list[tuple[int, int]]) -> torch.Tensor:
    """``(B, 1, H, W)`` zero maps with a single 1 at each ``(x, y)``."""
    saliency = torch.zeros(len(points), 1, height, width)
    for i, (x, y) in enumerate(points):
        saliency[i, 0, y, x] = 1.0
    return saliency


# --- pointing_hits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "hit"),
    [
        ((4, 4), True),  # the box's first pixel
        ((7, 5), True),  # its last column (x1 = 8 is end exclusive)
        ((8, 5), False),  # the first column after it: 1 pixel out
        ((5, 3), False),  # the row above it
        ((20, 20), False),
        ((0, 0), False),
    ],
)
def test_hits_and_misses_at_known_positions_with_zero_tolerance(point, hit):
    boxes = torch.tensor([[4, 4, 8, 8]])
    assert pointing_hits(peaked(32, 32, [point]), boxes, tolerance=0.0).tolist() == [hit]


def test_the_tolerance_is_torchrays_strict_distance_between_pixel_indices():
    # TorchRay counts a hit when the peak's pixel indices are strictly closer than the tolerance to an object
    # pixel. Box columns 4..7, rows 4..7; peaks 15 to the right, 14 to the right, and 9 right + 12 down (15).
    saliency = peaked(64, 64, [(22, 5), (21, 5), (16, 19), (18, 18)])
    boxes = torch.tensor([[4, 4, 8, 8]] * 4)
    assert pointing_hits(saliency, boxes, tolerance=15.0).tolist() == [False, True, False, False]
    assert pointing_hits(saliency, boxes, tolerance=math.nextafter(15.0, 16.0)).tolist() == [True, True, True, False]
    # (11, 11) from the box is 15.56 pixels away; measured from the pixel centre it was 14.85.
    assert pointing_hits(saliency, boxes, tolerance=15.55).tolist() == [True, True, True, False]
    assert pointing_hits(saliency, boxes, tolerance=15.56).tolist() == [True, True, True, True]
    # A fractional box covers the pixels x0 <= x < x1: [0, 10.5) holds columns 0..10.
    assert pointing_hits(peaked(32, 32, [(13, 14)]), torch.tensor([[0.0, 0.0, 10.5, 10.5]]), 5.0).tolist() == [False]
    assert pointing_hits(peaked(32, 32, [(13, 14)]), torch.tensor([[0.0, 0.0, 10.5, 10.5]]), 5.01).tolist() == [True]


def test_the_pixel_next_to_the_box_is_one_pixel_away():
    saliency = peaked(16, 16, [(8, 5), (3, 5), (8, 8)])  # right of, left of, diagonal to [4, 8) x [4, 8)
    boxes = torch.tensor([[4, 4, 8, 8]] * 3)
    assert pointing_hits(saliency, boxes, tolerance=1.0).tolist() == [False, False, False]
    assert pointing_hits(saliency, boxes, tolerance=1.01).tolist() == [True, True, False]
    assert pointing_hits(saliency, boxes, tolerance=math.sqrt(2.0) + 1e-9).tolist() == [True, True, True]


def test_the_default_tolerance_is_torchrays_15_pixels_at_224_scaled_with_the_image():
    assert pointing_tolerance(224, 224) == 15.0
    assert pointing_tolerance(448, 448) == 30.0
    assert pointing_tolerance(112, 300) == pointing_tolerance(300, 112) == 7.5
    assert pointing_tolerance(64, 64) == pytest.approx(15 * 64 / 224)
    # A peak 21 pixels right of the box misses at 224x224 and hits at 448x448 (tolerance 30).
    for size, hit in ((224, False), (448, True)):
        saliency = peaked(size, size, [(60, 45)])
        boxes = torch.tensor([[30, 30, 40, 50]])
        assert pointing_hits(saliency, boxes).tolist() == [hit]
        assert pointing_hits(saliency, boxes, tolerance=pointing_tolerance(size, size)).tolist() == [hit]


@pytest.mark.parametrize("bad", [0, -3])
def test_the_tolerance_needs_a_positive_image_size(bad):
    with pytest.raises(ValueError, match="height"):
        pointing_tolerance(bad, 10)
    with pytest.raises(TypeError, match="width"):
        pointing_tolerance(10, 2.5)


@pytest.mark.parametrize(
    "saliency",
    [
        torch.zeros(1, 1, 16, 16),
        torch.full((1, 1, 16, 16), 0.7),
        torch.full((1, 1, 16, 16), float("nan")),
        peaked(16, 16, [(5, 5)]).where(torch.arange(256).view(1, 1, 16, 16) != 200, float("nan")),
        peaked(16, 16, [(5, 5)]) * float("inf"),
    ],
    ids=["zeros", "constant", "all-nan", "one-nan", "inf"],
)
def test_constant_and_non_finite_maps_point_at_nothing(saliency):
    boxes = torch.tensor([[0, 0, 16, 16]])  # the whole image: any point would hit
    assert pointing_hits(saliency, boxes, tolerance=math.inf).tolist() == [False]


def test_ties_go_to_the_first_maximum_in_raster_order():
    saliency = torch.zeros(1, 8, 8)
    saliency[0, 6, 1] = saliency[0, 2, 5] = 1.0  # (x=5, y=2) comes first row by row
    assert pointing_hits(saliency, torch.tensor([[5, 2, 6, 3]]), tolerance=0).tolist() == [True]
    assert pointing_hits(saliency, torch.tensor([[1, 6, 2, 7]]), tolerance=0).tolist() == [False]


def test_three_and_four_dimensional_maps_agree_and_integer_maps_work():
    torch.manual_seed(0)
    saliency = torch.rand(5, 1, 12, 10)
    boxes = torch.tensor([[0, 0, 5, 6], [5, 0, 10, 6], [0, 6, 5, 12], [5, 6, 10, 12], [2, 2, 8, 10]])
    result = pointing_hits(saliency, boxes)
    assert result.dtype == torch.bool and result.shape == (5,)
    assert torch.equal(pointing_hits(saliency[:, 0], boxes), result)
    assert torch.equal(pointing_hits((saliency * 1000).long(), boxes), pointing_hits((saliency * 1000).floor(), boxes))


def test_a_batch_gives_the_per_image_results():
    g = torch.Generator().manual_seed(3)
    saliency = torch.rand(64, 1, 20, 24, generator=g)
    saliency[5] = 0.25  # constant
    saliency[9, 0, 3, 3] = float("nan")
    x0 = torch.randint(0, 20, (64,), generator=g)
    y0 = torch.randint(0, 16, (64,), generator=g)
    boxes = torch.stack([x0, y0, x0 + 4, y0 + 4], dim=1)
    batched = pointing_hits(saliency, boxes, tolerance=3.0)
    single = torch.cat([pointing_hits(saliency[i : i + 1], boxes[i : i + 1], tolerance=3.0) for i in range(64)])
    assert torch.equal(batched, single)
    assert 0 < int(batched.sum()) < 64 and not batched[5] and not batched[9]


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(2, 40), st.integers(2, 40)),
    data=st.data(),
)
def test_a_peak_inside_the_box_always_hits(size, data):
    height, width = size
    x0 = data.draw(st.integers(0, width - 1))
    y0 = data.draw(st.integers(0, height - 1))
    x1 = data.draw(st.integers(x0 + 1, width))
    y1 = data.draw(st.integers(y0 + 1, height))
    x = data.draw(st.integers(x0, x1 - 1))
    y = data.draw(st.integers(y0, y1 - 1))
    background = data.draw(st.floats(-1e6, 1e6))
    saliency = torch.full((1, height, width), background, dtype=torch.float64)
    saliency[0, y, x] = background + 1.0
    box = torch.tensor([[x0, y0, x1, y1]])
    assert pointing_hits(saliency, box, tolerance=0.0).tolist() == [True]
    assert pointing_hits(saliency, box).tolist() == [True]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_zero_tolerance_is_the_peak_inside_the_box(seed):
    data = make_object_images(6, image_size=32, seed=seed % 1000)
    saliency = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(pointing_hits(saliency, data.boxes, tolerance=0.0), peak_inside_box(saliency, data.boxes))


@pytest.mark.parametrize(
    ("saliency", "boxes", "error", "match"),
    [
        ([[0.0]], torch.zeros(1, 4), TypeError, "`saliency` must be a torch.Tensor"),
        (torch.rand(2, 3, 8, 8), torch.zeros(2, 4), ValueError, r"`saliency` must be shaped \(B, 1, H, W\)"),
        (torch.rand(8, 8), torch.zeros(1, 4), ValueError, "`saliency` must be shaped"),
        (torch.rand(2, 8, 8) > 0.5, torch.zeros(2, 4), TypeError, "`saliency` must hold real numbers"),
        (torch.rand(2, 8, 8), torch.zeros(3, 4), ValueError, r"`boxes` must be shaped \(B, 4\) with B = 2"),
        (torch.rand(2, 8, 8), torch.zeros(2, 5), ValueError, r"got shape \(2, 5\)"),
        (torch.rand(1, 8, 8), torch.zeros(4), ValueError, r"got shape \(4,\)"),
        (torch.rand(1, 8, 8), "box", TypeError, "`boxes` must be a tensor"),
        (torch.rand(1, 8, 8), torch.tensor([[4.0, 0, 2, 4]]), ValueError, "x0 < x1"),
        # A box without a pixel has nothing to point at: the probe files' rule.
        (torch.rand(1, 8, 8), torch.tensor([[2.0, 0, 2, 4]]), ValueError, "x0 < x1 and y0 < y1"),
        (torch.rand(1, 8, 8), torch.tensor([[0.0, float("nan"), 2, 4]]), ValueError, "`boxes` must hold finite"),
    ],
)
def test_bad_inputs_name_the_argument(saliency, boxes, error, match):
    with pytest.raises(error, match=match):
        pointing_hits(saliency, boxes)


@pytest.mark.parametrize(("tolerance", "error"), [(-1.0, ValueError), (float("nan"), ValueError), ("5", TypeError)])
def test_a_bad_tolerance_is_refused(tolerance, error):
    with pytest.raises(error, match="tolerance"):
        pointing_hits(torch.rand(1, 8, 8), torch.tensor([[0, 0, 4, 4]]), tolerance=tolerance)


def test_an_empty_batch_gives_an_empty_result():
    assert pointing_hits(torch.zeros(0, 1, 8, 8), torch.zeros(0, 4)).shape == (0,)


# --- the generated task --------------------------------------------------------------------------------------


def _centre_and_far_corner_maps(boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x0, y0, x1, y1 = boxes.unbind(1)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    far_x = torch.where(cx < size / 2, size - 1, 0)
    far_y = torch.where(cy < size / 2, size - 1, 0)
    centre = peaked(size, size, list(zip(cx.tolist(), cy.tolist())))
    corner = peaked(size, size, list(zip(far_x.tolist(), far_y.tolist())))
    return centre, corner


@pytest.mark.parametrize("image_size", [32, 64, 224])
def test_on_the_generated_task_the_box_centre_hits_and_the_far_corner_misses(image_size):
    data = make_object_images(24, image_size=image_size, seed=7)
    centre, corner = _centre_and_far_corner_maps(data.boxes, image_size)
    assert pointing_hits(centre, data.boxes).all()
    assert not pointing_hits(corner, data.boxes).any()
    # The object masks peak (first maximal pixel) at each box's top-left pixel.
    assert pointing_hits(data.object_masks().float(), data.boxes, tolerance=0.0).all()


def test_the_generated_task_boxes_work_from_a_probe_file(tmp_path):
    data = make_object_images(8, image_size=32, seed=11)
    probe = load_probe(save_probe(tmp_path / "probe.pt", data.images, data.labels, data.mean, data.std, data.boxes))
    centre, corner = _centre_and_far_corner_maps(data.boxes, 32)
    assert pointing_hits(centre, probe.boxes).all() and not pointing_hits(corner, probe.boxes).any()


# --- probe files with boxes ----------------------------------------------------------------------------------


def test_boxes_round_trip_through_a_probe_file_as_float32(tmp_path):
    data = make_object_images(5, image_size=32, seed=2)
    path = save_probe(tmp_path / "probe.pt", data.images, data.labels, data.mean, data.std, boxes=data.boxes)
    probe = load_probe(path)
    assert probe.boxes.dtype == torch.float32 and probe.boxes.shape == (5, 4)
    assert torch.equal(probe.boxes, data.boxes.float())
    assert torch.equal(probe.images, data.images) and torch.equal(probe.targets, data.labels)
    content = torch.load(path, weights_only=True)
    assert content["version"] == VERSION == 2
    assert set(content) == {"format", "version", "images", "targets", "mean", "std", "boxes"}


def test_float_and_nested_list_boxes_are_accepted(tmp_path):
    boxes = [[0.5, 1.25, 4.0, 8.0], [0, 0, 8, 8]]
    probe = load_probe(save_probe(tmp_path / "probe.pt", torch.rand(2, 3, 8, 8), [0, 1], boxes=boxes))
    assert probe.boxes.tolist() == boxes


def test_a_probe_without_boxes_is_written_as_before_and_loads_with_none(tmp_path):
    path = save_probe(tmp_path / "probe.pt", torch.rand(2, 3, 8, 8), [0, 1], mean=0.5, std=0.25)
    content = torch.load(path, weights_only=True)
    assert content["version"] == VERSION_WITHOUT_BOXES == 1
    assert set(content) == {"format", "version", "images", "targets", "mean", "std"}
    assert load_probe(path).boxes is None


def test_a_file_in_the_first_format_still_loads(tmp_path):
    # Exactly what save_probe wrote before probes could carry boxes.
    images = torch.randn(3, 3, 8, 8)
    content = {
        "format": "lightning-igos-probe",
        "version": 1,
        "images": images,
        "targets": torch.tensor([2, 0, 1], dtype=torch.int64),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
    }
    torch.save(content, tmp_path / "old.pt")
    probe = load_probe(tmp_path / "old.pt")
    assert probe.boxes is None
    assert torch.equal(probe.images, images) and probe.targets.tolist() == [2, 0, 1]
    assert probe.mean == (0.5, 0.5, 0.5) and probe.std == (0.25, 0.25, 0.25)
    torch.save({**content, "mean": None, "std": None}, tmp_path / "old_plain.pt")
    assert load_probe(tmp_path / "old_plain.pt").boxes is None


def test_a_reader_of_version_1_refuses_boxes_rather_than_dropping_them(tmp_path, monkeypatch):
    path = save_probe(tmp_path / "probe.pt", torch.rand(1, 3, 8, 8), [0], boxes=[[0, 0, 4, 4]])
    monkeypatch.setattr(probe_module, "VERSION", 1)
    with pytest.raises(ValueError, match="of version 2; this lightning_igos reads versions 1 to 1"):
        load_probe(path)


def test_the_probe_copies_its_boxes():
    boxes = torch.tensor([[0, 0, 4, 4], [1, 1, 3, 3]])
    probe = Probe(torch.zeros(2, 1, 4, 4), [0, 1], boxes=boxes)
    boxes += 1
    assert probe.boxes.tolist() == [[0, 0, 4, 4], [1, 1, 3, 3]]
    assert Probe(torch.zeros(2, 1, 4, 4), [0, 1]).boxes is None


BAD_BOXES = [
    ([[0, 0, 4, 4]], ValueError, r"must be shaped \(B, 4\) with B = 2"),
    (torch.tensor([[0, 0, 4, 4, 0], [0, 0, 4, 4, 0]]), ValueError, r"got shape \(2, 5\)"),
    (torch.tensor([0, 0, 4, 4]), ValueError, r"got shape \(4,\)"),
    ([[0, 0, 4, 4], [3, 0, 3, 4]], ValueError, r"x0 < x1 and y0 < y1 .*got \(3.0, 0.0, 3.0, 4.0\) for image 1"),
    ([[5, 0, 4, 4], [0, 0, 4, 4]], ValueError, "x0 < x1 and y0 < y1"),
    ([[0, 4, 4, 2], [0, 0, 4, 4]], ValueError, "x0 < x1 and y0 < y1"),
    ([[0, 0, 9, 4], [0, 0, 4, 4]], ValueError, r"inside the 8x8 images .*for image 0"),
    ([[0, 0, 4, 4], [0, 0, 4, 8.5]], ValueError, "inside the 8x8 images"),
    ([[-1, 0, 4, 4], [0, 0, 4, 4]], ValueError, "inside the 8x8 images"),
    ([[0, float("nan"), 4, 4], [0, 0, 4, 4]], ValueError, "finite coordinates"),
    ([[0, 0, 4, 4], [0, 0, float("inf"), 4]], ValueError, "finite coordinates"),
    (torch.ones(2, 4, dtype=torch.bool), TypeError, "real pixel coordinates"),
    ([["a", 0, 4, 4], [0, 0, 4, 4]], TypeError, "must hold numbers"),
    ([[0, 0, 4], [0, 0, 4, 4]], TypeError, "must hold numbers"),
    ("0 0 4 4", TypeError, "must be a tensor or a sequence"),
    (42, TypeError, "must be a tensor or a sequence"),
]


@pytest.mark.parametrize(("boxes", "error", "match"), BAD_BOXES)
def test_bad_boxes_are_refused_before_anything_is_written(tmp_path, boxes, error, match):
    with pytest.raises(error, match=match) as info:
        save_probe(tmp_path / "probe.pt", torch.rand(2, 3, 8, 8), [0, 1], boxes=boxes)
    assert str(info.value).startswith("`boxes`")
    assert not (tmp_path / "probe.pt").exists()


@pytest.mark.parametrize(("boxes", "error", "match"), BAD_BOXES[:12])
def test_a_file_with_bad_boxes_is_not_a_valid_probe(tmp_path, boxes, error, match):
    path = tmp_path / "probe.pt"
    torch.save({"format": "lightning-igos-probe", "version": 2, "images": torch.rand(2, 3, 8, 8),
                "targets": torch.tensor([0, 1]), "mean": None, "std": None, "boxes": torch.as_tensor(boxes)}, path)
    with pytest.raises(ValueError, match=match) as info:
        load_probe(path)
    assert str(path) in str(info.value) and "`boxes`" in str(info.value)


def test_an_expanded_box_view_is_refused_by_its_shape_before_it_is_copied():
    huge = torch.zeros(1, 1).expand(10**12, 4)
    with pytest.raises(ValueError, match=r"got shape \(1000000000000, 4\)"):
        check_boxes(huge, 2, 8, 8)


def test_a_probe_with_boxes_at_the_element_cap_still_loads(tmp_path):
    # float64 1x2x2 images: boxes add 4 bytes per image element to what the archive unpacks to.
    count = 100_000
    images = torch.rand(count, 1, 2, 2, dtype=torch.float64)
    boxes = torch.tensor([[0, 0, 2, 2]]).expand(count, 4)
    path = save_probe(tmp_path / "probe.pt", images, torch.zeros(count, dtype=torch.long), boxes=boxes)
    probe = load_probe(path, max_elements=images.numel())
    assert probe.boxes.shape == (count, 4)

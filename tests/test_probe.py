"""Probe files: round trip, validation on save, clear errors for files that are not probes."""

from __future__ import annotations

import pickle
import zipfile

import pytest
import torch

from lightning_igos.probe import FORMAT, VERSION, VERSION_WITHOUT_BOXES, Probe, load_probe, save_probe


def _content(**overrides: object) -> dict:
    content = {
        "format": FORMAT,
        "version": VERSION,
        "images": torch.randn(2, 3, 8, 8),
        "targets": torch.tensor([0, 1]),
        "mean": None,
        "std": None,
    }
    content.update(overrides)
    return content


def test_round_trip_keeps_images_targets_and_normalisation(tmp_path):
    images = torch.randn(3, 3, 16, 12)
    path = save_probe(tmp_path / "nested" / "probe.pt", images, [2, 0, 1], mean=[0.5, 0.4, 0.3], std=(0.2, 0.2, 0.2))
    probe = load_probe(path)
    assert torch.equal(probe.images, images)
    assert probe.targets.dtype == torch.int64 and probe.targets.tolist() == [2, 0, 1]
    assert probe.mean == (0.5, 0.4, 0.3) and probe.std == (0.2, 0.2, 0.2)
    assert len(probe) == 3


def test_one_number_or_tensor_serves_every_channel(tmp_path):
    path = save_probe(tmp_path / "probe.pt", torch.rand(1, 3, 4, 4), [0], mean=0.5, std=torch.tensor([0.25]))
    probe = load_probe(path)
    assert probe.mean == (0.5, 0.5, 0.5) and probe.std == (0.25, 0.25, 0.25)


def test_file_is_a_plain_dict_with_format_and_version(tmp_path):
    path = save_probe(tmp_path / "probe.pt", torch.rand(1, 1, 4, 4), torch.tensor([3]))
    content = torch.load(path, weights_only=True)
    assert content["format"] == FORMAT and content["version"] == VERSION_WITHOUT_BOXES
    assert set(content) == {"format", "version", "images", "targets", "mean", "std"}
    assert content["mean"] is None and content["std"] is None


def test_saving_a_view_writes_only_the_view(tmp_path):
    big = torch.randn(64, 3, 32, 32)
    path = save_probe(tmp_path / "probe.pt", big[:2], [0, 1])
    small = save_probe(tmp_path / "copy.pt", big[:2].clone(), [0, 1])
    assert path.stat().st_size < 2 * small.stat().st_size


def test_probe_copies_to_cpu_and_does_not_alias_the_input():
    images = torch.zeros(2, 3, 4, 4)
    probe = Probe(images, torch.tensor([1, 0], dtype=torch.int32))
    images += 1
    assert probe.images.sum() == 0
    assert probe.targets.dtype == torch.int64


@pytest.mark.parametrize(
    ("images", "targets", "kwargs", "error", "match"),
    [
        (torch.randn(3, 8, 8), [0], {}, ValueError, r"\(B, C, H, W\)"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), [0, 1], {}, TypeError, "floating point"),
        (torch.full((1, 3, 8, 8), float("nan")), [0], {}, ValueError, "NaN"),
        ("not a tensor", [0], {}, TypeError, "torch.Tensor"),
        (torch.randn(2, 3, 8, 8), [0], {}, ValueError, "one class index per image"),
        (torch.randn(2, 3, 8, 8), 1, {}, TypeError, "one class index per image"),
        (torch.randn(2, 3, 8, 8), torch.tensor([0.0, 1.0]), {}, TypeError, "integer"),
        (torch.randn(2, 3, 8, 8), [0, -1], {}, ValueError, "non-negative"),
        (torch.randn(2, 3, 8, 8), [0, 1], {"mean": (0.5, 0.5)}, ValueError, r"one number per channel \(3"),
        (torch.randn(2, 3, 8, 8), [0, 1], {"mean": (0.5, float("nan"), 0.5)}, ValueError, "finite"),
        (torch.randn(2, 3, 8, 8), [0, 1], {"std": (0.2, 0.0, 0.2)}, ValueError, "positive"),
        (torch.randn(2, 3, 8, 8), [0, 1], {"mean": "rgb"}, TypeError, "sequence"),
    ],
)
def test_save_rejects_bad_inputs(tmp_path, images, targets, kwargs, error, match):
    with pytest.raises(error, match=match):
        save_probe(tmp_path / "probe.pt", images, targets, **kwargs)
    assert not (tmp_path / "probe.pt").exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_probe(tmp_path / "missing.pt")


class _Payload:
    """Unpickling this with weights_only=False would run code; the probe loader refuses it."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: p.write_text("hello"), "not a file written by torch.save"),
        (lambda p: torch.save(torch.zeros(3), p), "a tensor of shape"),
        (lambda p: torch.save({"state_dict": {}}, p), "expected a dict with format"),
        (lambda p: torch.save(_content(format="something-else"), p), "format 'something-else'"),
        (lambda p: torch.save(_content(version=VERSION + 1), p), f"of version {VERSION + 1}; "),
        (lambda p: torch.save({"format": FORMAT, "version": VERSION}, p), "missing images, targets"),
        (lambda p: torch.save(_content(targets=torch.tensor([0, 1, 2])), p), "one class index per image"),
        (lambda p: torch.save(_content(images=torch.zeros(2, 3, 8, 8, dtype=torch.int64)), p), "floating point"),
        (lambda p: torch.save(_content(mean=[0.1, 0.2]), p), r"one number per channel \(3"),
        (lambda p: torch.save({"format": FORMAT, "payload": _Payload()}, p), "weights_only=True"),
    ],
    ids=["text", "tensor", "checkpoint", "other-format", "newer-version", "missing-keys", "targets-length",
         "integer-images", "mean-length", "pickled-object"],
)
def test_loading_something_else_names_the_path_and_the_problem(tmp_path, capsys, write, match):
    path = tmp_path / "thing.pt"
    write(path)
    with pytest.raises(ValueError, match=match) as info:
        load_probe(path)
    assert str(path) in str(info.value)
    assert "pickled code ran" not in capsys.readouterr().out


def test_a_corrupt_zip_is_not_a_probe(tmp_path):
    path = tmp_path / "probe.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("data.pkl", pickle.dumps({"format": FORMAT}))
    with pytest.raises(ValueError, match="could not be read as a torch file"):
        load_probe(path)

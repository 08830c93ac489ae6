"""Which images a captured probe holds: classes covered by default, indices and classes on request, bounded reading."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import FASTEST_OPTIONS
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, Dataset, TensorDataset

import lightning_igos.probe as probe_module
from lightning_igos.callback import IGOSCallback, IGOSWarning
from lightning_igos.callback.probe_state import MAX_NUM_PROBE, ProbeSelector, select_probe
from lightning_igos.demo.toy_module import ObjectClassifier
from lightning_igos.probe import Probe, load_probe, save_probe

REPO = Path(__file__).resolve().parents[1]
# Tiny solver settings: these tests check which images are explained, not how well.
FAST = dict(**FASTEST_OPTIONS, mask_size=4, log_images=False)
CLASSES, PER_CLASS = 4, 16


def _sorted_dataset(classes: int = CLASSES, per_class: int = PER_CLASS, size: int = 16) -> TensorDataset:
    """An ImageFolder-like dataset: samples sorted by class, each image tagged with its index (pixel [0, 0, 0])."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(classes * per_class, 3, size, size, generator=generator)
    images[:, 0, 0, 0] = torch.arange(classes * per_class, dtype=torch.float32)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return TensorDataset(images, labels)


def _indices(images: torch.Tensor) -> list[int]:
    return images[:, 0, 0, 0].long().tolist()


def _validate(callback: IGOSCallback, dataset: Dataset, tmp_path: Path, batch_size: int = 16, epochs: int = 1,
              **loader: object) -> list[str]:
    """Run trainer.validate ``epochs`` times; the IGOSWarnings given (empty explanations left out)."""
    torch.manual_seed(0)
    module = ObjectClassifier(num_classes=CLASSES, width=4)
    trainer = pl.Trainer(accelerator="cpu", devices=1, callbacks=[callback], logger=False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(epochs):
            trainer.validate(module, DataLoader(dataset, batch_size=batch_size, shuffle=False, **loader), verbose=False)
    return [str(w.message) for w in caught if issubclass(w.category, IGOSWarning) and "empty" not in str(w.message)]


# ----------------------------------------------------------------------------- the default covers the classes


def test_a_class_sorted_loader_gives_a_probe_with_every_class(tmp_path: Path) -> None:
    callback = IGOSCallback(num_probe=8, **FAST)
    messages = _validate(callback, _sorted_dataset(), tmp_path)
    images, targets = callback.probe
    # Round-robin: the first image of each class, then the second of each, in class order.
    assert targets.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    assert _indices(images) == [0, 16, 32, 48, 1, 17, 33, 49]
    assert not [m for m in messages if "class" in m]


def test_the_first_selection_keeps_the_old_behaviour_and_warns_once(tmp_path: Path) -> None:
    callback = IGOSCallback(num_probe=8, probe_selection="first", **FAST)
    messages = _validate(callback, _sorted_dataset(), tmp_path, epochs=2)
    images, targets = callback.probe
    assert _indices(images) == list(range(8)) and targets.tolist() == [0] * 8
    one_class = [m for m in messages if "every one of the 8 probe images is of class 0" in m]
    assert len(one_class) == 1, messages
    assert "4 classes" in one_class[0] and "probe_selection='balanced'" in one_class[0]


def test_a_given_one_class_probe_warns_once(tmp_path: Path) -> None:
    dataset = _sorted_dataset()
    images, labels = dataset.tensors
    callback = IGOSCallback(probe=(images[:4], labels[:4]), **FAST)
    messages = _validate(callback, dataset, tmp_path, epochs=2)
    assert len([m for m in messages if "is of class 0" in m]) == 1, messages
    # A probe of one class asked for on purpose does not warn.
    chosen = IGOSCallback(num_probe=4, probe_classes=[2], **FAST)
    messages = _validate(chosen, dataset, tmp_path)
    assert chosen.probe[1].tolist() == [2] * 4 and not [m for m in messages if "of class" in m]


def test_the_reading_is_bounded_by_the_probe_pool(tmp_path: Path) -> None:
    calls = []

    def batch_to_probe(batch):
        calls.append(len(batch[0]))
        return batch[0], batch[1]

    callback = IGOSCallback(num_probe=4, probe_pool=32, batch_to_probe=batch_to_probe, **FAST)
    _validate(callback, _sorted_dataset(), tmp_path, batch_size=16)
    # 64 samples in 4 batches: only the first 32 (classes 0 and 1) are read.
    assert calls == [16, 16]
    assert callback.probe[1].tolist() == [0, 1, 0, 1]
    assert _indices(callback.probe[0]) == [0, 16, 1, 17]


def test_without_labels_pred_takes_the_first_samples(tmp_path: Path) -> None:
    callback = IGOSCallback(num_probe=5, target="pred", batch_to_probe=lambda batch: (batch[0], None), **FAST)
    _validate(callback, _sorted_dataset(), tmp_path, batch_size=4)
    assert _indices(callback.probe[0]) == [0, 1, 2, 3, 4] and callback.probe[1] is None


def test_shuffled_labels_give_an_even_probe(tmp_path: Path) -> None:
    dataset = _sorted_dataset()
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(3))
    shuffled = TensorDataset(*(t[order] for t in dataset.tensors))
    callback = IGOSCallback(num_probe=8, **FAST)
    _validate(callback, shuffled, tmp_path, batch_size=5)
    assert sorted(callback.probe[1].tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
    # Within a class, the samples seen first.
    positions = {int(i): p for p, i in enumerate(order)}
    for label in range(CLASSES):
        seen = sorted(positions[i] for i in range(label * PER_CLASS, (label + 1) * PER_CLASS))
        chosen = sorted(positions[i] for i, t in zip(_indices(callback.probe[0]), callback.probe[1]) if t == label)
        assert chosen == seen[:2]


# ----------------------------------------------------------------------------- indices and classes on request


def test_probe_indices_read_those_samples_of_the_validation_dataset(tmp_path: Path) -> None:
    callback = IGOSCallback(probe_indices=[5, 40, 17], **FAST)
    _validate(callback, _sorted_dataset(), tmp_path)
    images, targets = callback.probe
    assert _indices(images) == [5, 40, 17] and targets.tolist() == [0, 2, 1]


def test_probe_indices_under_fit_read_the_validation_dataset(tmp_path: Path) -> None:
    dataset = _sorted_dataset()
    callback = IGOSCallback(probe_indices=[63, 0], **FAST)
    torch.manual_seed(0)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, callbacks=[callback],
                         logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    train = DataLoader(TensorDataset(dataset.tensors[0][:4], dataset.tensors[1][:4]), batch_size=4)
    trainer.fit(ObjectClassifier(num_classes=CLASSES, width=4), train, DataLoader(dataset, batch_size=16))
    assert _indices(callback.probe[0]) == [63, 0] and callback.probe[1].tolist() == [3, 0]
    assert "igos/insertion_auc" in trainer.callback_metrics


def test_probe_indices_outside_the_dataset_are_a_clear_error(tmp_path: Path) -> None:
    callback = IGOSCallback(probe_indices=[3, 64], on_error="raise", **FAST)
    with pytest.raises(ValueError, match=r"`probe_indices` holds 64, outside .* dataset of 64 samples"):
        _validate(callback, _sorted_dataset(), tmp_path)


def test_probe_classes_round_robin_among_them_in_the_order_given(tmp_path: Path) -> None:
    callback = IGOSCallback(num_probe=5, probe_classes=[3, 1], **FAST)
    _validate(callback, _sorted_dataset(), tmp_path)
    images, targets = callback.probe
    assert targets.tolist() == [3, 1, 3, 1, 3]
    assert _indices(images) == [48, 16, 49, 17, 50]


def test_probe_classes_absent_from_the_pool_are_a_clear_error(tmp_path: Path) -> None:
    callback = IGOSCallback(num_probe=4, probe_classes=[7], on_error="raise", **FAST)
    with pytest.raises(ValueError, match=r"none of `probe_classes` \[7\].*classes seen: 0, 1, 2, 3"):
        _validate(callback, _sorted_dataset(), tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"probe_selection": "random"}, ValueError, "`probe_selection` must be one of 'balanced', 'first'"),
        ({"probe_selection": None}, ValueError, "`probe_selection`"),
        ({"num_probe": MAX_NUM_PROBE + 1}, ValueError, f"`num_probe` must be at most {MAX_NUM_PROBE}"),
        ({"num_probe": 8, "probe_pool": 4}, ValueError, "`probe_pool` must be at least num_probe=8"),
        ({"probe_pool": 2.5}, TypeError, "`probe_pool` must be an int or None"),
        ({"probe_indices": []}, ValueError, "`probe_indices` must name at least one"),
        ({"probe_indices": [1, -2]}, ValueError, "`probe_indices` must hold non-negative"),
        ({"probe_indices": [1, 1]}, ValueError, "must not repeat an entry, got 1"),
        ({"probe_indices": [0.5]}, TypeError, "`probe_indices` must hold ints"),
        ({"probe_indices": 3}, TypeError, "`probe_indices` must be a sequence"),
        ({"probe_indices": torch.tensor([0.0])}, TypeError, "`probe_indices` must be a sequence"),
        ({"probe_indices": list(range(MAX_NUM_PROBE + 1))}, ValueError, f"at most {MAX_NUM_PROBE} samples"),
        ({"probe_classes": "cat"}, TypeError, "`probe_classes` must be a sequence"),
        ({"probe_classes": [True]}, TypeError, "`probe_classes` must hold ints"),
        ({"probe_indices": [0], "probe_classes": [1]}, ValueError, "either `probe_indices`"),
        ({"probe": (torch.zeros(2, 3, 8, 8), [0, 1]), "probe_indices": [0]}, ValueError,
         "either `probe`.*`probe_indices`.*not both"),
        ({"probe": "missing.pt", "probe_classes": [0]}, ValueError, "either `probe`.*`probe_classes`"),
    ],
)
def test_probe_options_are_checked_when_the_callback_is_built(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        IGOSCallback(**kwargs)


def test_index_options_take_tensors_and_ranges() -> None:
    callback = IGOSCallback(probe_indices=torch.tensor([4, 2]), probe_classes=None)
    assert callback.probe_indices == (4, 2)
    assert IGOSCallback(probe_classes=range(3)).probe_classes == (0, 1, 2)


# ----------------------------------------------------------------------------- the selection rule


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 5), max_size=60),
    count=st.integers(1, 12),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    selection=st.sampled_from(["balanced", "first"]),
)
def test_offering_in_batches_chooses_as_offering_all_at_once(labels, count, cuts, selection) -> None:
    """The store keeps only the images chosen so far: a sample left out is never chosen later."""
    expected = select_probe(labels, count, selection)
    selector = ProbeSelector(count, selection)
    bounds = sorted({0, len(labels), *(c for c in cuts if c <= len(labels))})
    chosen_before: set[int] = set()
    for start, end in zip(bounds, bounds[1:]):
        chosen = selector.offer(labels[start:end])
        # Nothing offered earlier and left out comes back.
        assert set(chosen) - chosen_before <= set(range(start, end))
        chosen_before = set(chosen)
    assert selector.offer([]) == expected


@settings(max_examples=60, deadline=None)
@given(labels=st.lists(st.integers(0, 5), max_size=80), count=st.integers(1, 16))
def test_balanced_covers_the_classes_evenly(labels, count) -> None:
    chosen = select_probe(labels, count)
    assert len(chosen) == min(count, len(labels)) and len(set(chosen)) == len(chosen)
    per_class = {label: [labels[p] for p in chosen].count(label) for label in set(labels)}
    classes = len(per_class)
    # Every class is in the probe when there are no more classes than images; a class short of samples gives
    # its place to the others, otherwise no class has two more than another.
    if classes <= count:
        assert all(n >= 1 for n in per_class.values())
    top = max(per_class.values(), default=0)
    assert all(n >= top - 1 or n == labels.count(label) for label, n in per_class.items())


# ----------------------------------------------------------------------------- probe safety


def test_a_captured_probe_respects_the_element_cap(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(probe_module, "MAX_PROBE_ELEMENTS", 4 * 3 * 16 * 16)
    callback = IGOSCallback(num_probe=5, on_error="raise", **FAST)
    with pytest.raises(ValueError, match=r"captured probe would hold 3,840 image elements.*MAX_PROBE_ELEMENTS"):
        _validate(callback, _sorted_dataset(), tmp_path)
    assert callback.probe is None
    fits = IGOSCallback(num_probe=4, on_error="raise", **FAST)
    _validate(fits, _sorted_dataset(), tmp_path)
    assert len(fits.probe[0]) == 4


def test_a_checkpoint_probe_that_replaces_a_given_one_warns() -> None:
    dataset = _sorted_dataset()
    images, labels = dataset.tensors
    saved = IGOSCallback(probe=(images[:4], labels[:4])).state_dict()
    given = IGOSCallback(probe=(images[4:8], labels[4:8]))
    with pytest.warns(IGOSWarning, match=r"given a probe \(Probe\(4 images.*explains the checkpoint's probe"):
        given.load_state_dict(saved)
    assert torch.equal(given.probe[0], images[:4])
    same = IGOSCallback(probe=(images[:4], labels[:4]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_state_dict(saved)  # the same probe: nothing to say


def test_a_checkpoint_probe_chosen_otherwise_warns(tmp_path: Path) -> None:
    first = IGOSCallback(num_probe=4, probe_selection="first", **FAST)
    _validate(first, _sorted_dataset(), tmp_path)
    state = first.state_dict()
    with pytest.warns(IGOSWarning, match=r"probe_selection: 'first' -> 'balanced'.*checkpoint's probe"):
        IGOSCallback(num_probe=4, **FAST).load_state_dict(state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        IGOSCallback(num_probe=4, probe_selection="first", **FAST).load_state_dict(state)


def test_save_probe_replaces_the_file_atomically(tmp_path: Path, monkeypatch) -> None:
    path = save_probe(tmp_path / "probe.pt", torch.rand(2, 3, 8, 8), [0, 1])
    before = path.read_bytes()
    real_save = torch.save

    def interrupted(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as stream:
            stream.truncate(100)  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_probe(path, torch.rand(4, 3, 8, 8), [1, 0, 1, 0])
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["probe.pt"]
    assert load_probe(path).targets.tolist() == [0, 1]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_kill_mid_write_leaves_the_old_probe_whole(tmp_path: Path) -> None:
    path = save_probe(tmp_path / "probe.pt", torch.rand(2, 3, 8, 8), [0, 1])
    before = path.read_bytes()
    script = (
        "import os, signal, sys, torch\n"
        "from lightning_igos.probe import save_probe\n"
        "real = torch.save\n"
        "def killed(obj, f, *a, **k):\n"
        "    with open(f, 'wb') as s:\n"
        "        s.write(b'PK half a probe')\n"
        "        s.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "torch.save = killed\n"
        "save_probe(sys.argv[1], torch.rand(4, 3, 8, 8), [1, 0, 1, 0])\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    assert load_probe(path).targets.tolist() == [0, 1]


def test_probe_repr_is_short() -> None:
    probe = Probe(torch.rand(64, 3, 224, 224), torch.arange(64) % 4, boxes=[[0, 0, 10, 10]] * 64)
    text = repr(probe)
    assert text == "Probe(64 images of 3x224x224, float32, classes [0, 1, 2, 3] (16 per class), boxes)"
    many = Probe(torch.rand(30, 1, 4, 4, dtype=torch.float64), torch.arange(30))
    assert repr(many) == ("Probe(30 images of 1x4x4, float64, classes [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...] "
                          "(1 per class), no boxes)")

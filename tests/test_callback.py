"""IGOSCallback inside real (tiny) Trainer runs on the CPU."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import FAST_OPTIONS, LossRecorder, Untouched
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lightning_igos.callback import EmptyExplanationWarning, IGOSCallback, IGOSWarning
from lightning_igos.callback.probe_state import select_probe
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

# Small solver settings: these tests check the plumbing, not the explanations.
FAST = dict(num_probe=4, **FAST_OPTIONS, mask_size=4)
SCALARS = (
    "igos/insertion_auc",
    "igos/deletion_auc",
    "igos/insertion_auc_normalized",
    "igos/deletion_auc_normalized",
    "igos/needed_fraction",
    "igos/mask_mean",
    "igos/mask_min",
    "igos/mask_frac_below_half",
    "igos/target_prob",
)


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(96, image_size=32, seed=0)
    val = make_object_images(24, image_size=32, seed=1)
    return (
        DataLoader(train.dataset(), batch_size=32, shuffle=True),
        DataLoader(val.dataset(), batch_size=8),
    )


def _module(seed: int = 0) -> ObjectClassifier:
    torch.manual_seed(seed)
    return ObjectClassifier(num_classes=4, width=4)


def _trainer(tmp_path: Path, callbacks: list, logger=None, max_epochs: int = 2, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(tmp_path, name="tb") if logger is None else logger,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **kwargs,
    )


def _failure_warnings(caught: list) -> list[str]:
    """The IGOSWarnings other than empty explanations (which the tiny untrained models here often give)."""
    return [str(w.message) for w in caught
            if issubclass(w.category, IGOSWarning) and not issubclass(w.category, EmptyExplanationWarning)]


def _events(log_dir: str) -> EventAccumulator:
    events = EventAccumulator(log_dir, size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_probe": 0}, "num_probe"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"target": "logits"}, "target"),
        ({"method": "gradcam"}, "method"),
        ({"iterations": -1}, "iterations"),
        ({"ig_steps": 0}, "ig_steps"),
        ({"l1": -1.0}, "l1"),
        ({"tv_power": 0.5}, "tv_power"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"baseline": "gray"}, "baseline"),
        ({"substrate": "gray"}, "substrate"),
        ({"autocast_dtype": "bf16"}, "autocast_dtype"),
        ({"mask_size": (4, 0)}, "mask_size"),
        ({"metric_steps": 0}, "metric_steps"),
        ({"log_images": "yes"}, "log_images"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"on_error": "ignore"}, "on_error"),
        ({"seed": -1}, "seed"),
        ({"mean": (0.5, 0.5, 0.5)}, "std"),
        ({"mean": (0.5,), "std": (0.0,)}, "std"),
        ({"probe": torch.zeros(2, 3, 8, 8)}, "probe"),
        ({"probe": (torch.zeros(2, 3, 8, 8), torch.tensor([0]))}, "probe targets"),
        ({"probe": (torch.zeros(2, 3, 8, 8), None)}, "target='pred'"),
        ({"score_fn": 3}, "score_fn"),
    ],
)
def test_init_errors_name_the_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises((TypeError, ValueError), match=f"`?{argument}"):
        IGOSCallback(**kwargs)


# ----------------------------------------------------------------------------- logging


def test_tensorboard_scalars_and_images_per_epoch(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(**FAST)
    trainer = _trainer(tmp_path, [callback], num_sanity_val_steps=2)
    trainer.fit(_module(), *loaders)

    events = _events(trainer.logger.log_dir)
    tags = events.Tags()
    for name in SCALARS:  # one value per validation epoch, none for the sanity check
        assert len(events.Scalars(name)) == 2, name
    for tag in [f"igos/probe_{i}" for i in range(4)] + ["igos/overlays"]:
        assert tag in tags["images"]
        # The step of the epoch's scalars (Lightning's: one less than trainer.global_step at the end of an epoch).
        assert [e.step for e in events.Images(tag)] == [e.step for e in events.Scalars("igos/insertion_auc")] == [2, 5]
    panel = events.Images("igos/probe_0")[0]
    # Two tiles a row (image | overlay, then the top pixels kept | curves) within TensorBoard's 350-pixel card.
    assert 2 * 120 <= panel.width <= 350
    assert panel.height > panel.width  # two rows of tiles, the colour key and the captions
    assert all(0 <= e.value <= 1 for e in events.Scalars("igos/insertion_auc"))
    # The probe covers the classes of the validation samples: round-robin, each class's first samples first.
    val_images, val_labels = loaders[1].dataset.tensors[:2]
    chosen = select_probe(val_labels.tolist(), 4)
    assert torch.equal(callback.probe[0], val_images[chosen])
    assert callback.probe[1].tolist() == val_labels[chosen].tolist() and len(set(callback.probe[1].tolist())) > 1


def test_every_n_epochs(tmp_path: Path, loaders) -> None:
    trainer = _trainer(tmp_path, [IGOSCallback(every_n_epochs=2, log_images=False, **FAST)], max_epochs=3)
    trainer.fit(_module(), *loaders)
    assert [e.step for e in _events(trainer.logger.log_dir).Scalars("igos/insertion_auc")] == [5]


def test_csv_logger_gets_scalars_and_pngs_with_one_warning(tmp_path: Path, loaders) -> None:
    logger = CSVLogger(tmp_path, name="csv")
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST)], logger=logger)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_module(), *loaders)
    png_warnings = [w for w in caught if issubclass(w.category, IGOSWarning) and "PNG" in str(w.message)]
    assert len(png_warnings) == 1

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for name in SCALARS:
        assert len([r for r in rows if r.get(name)]) == 2, name
    assert str((Path(logger.log_dir) / "igos").resolve()) in str(png_warnings[0].message)
    # The PNG folders carry the step the CSV (and every other logger) records for the same validation.
    csv_steps = [(int(r["epoch"]), int(r["step"])) for r in rows if r.get("igos/insertion_auc")]
    assert csv_steps == [(0, 2), (1, 5)]
    for epoch, step in csv_steps:
        folder = Path(logger.log_dir) / "igos" / f"epoch_{epoch:03d}_step_{step:06d}"
        assert sorted(p.name for p in folder.glob("*.png")) == [
            "overlays.png", "probe_0.png", "probe_1.png", "probe_2.png", "probe_3.png"
        ]


def test_model_checkpoint_and_early_stopping_monitor_igos_metrics(tmp_path: Path, loaders) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="igos/insertion_auc", mode="max", save_top_k=1)
    stopping = EarlyStopping(monitor="igos/deletion_auc", mode="min", patience=5)
    trainer = _trainer(tmp_path, [IGOSCallback(log_images=False, **FAST), checkpoint, stopping])
    trainer.fit(_module(), *loaders)
    logged = [e.value for e in _events(trainer.logger.log_dir).Scalars("igos/insertion_auc")]
    assert checkpoint.best_model_path and Path(checkpoint.best_model_path).exists()
    assert float(checkpoint.best_model_score) == pytest.approx(max(logged), abs=1e-6)
    assert torch.isfinite(stopping.best_score)


# ----------------------------------------------------------------------------- probe and resume


def test_probe_is_restored_on_resume(tmp_path: Path, loaders) -> None:
    train, val = loaders
    first = IGOSCallback(log_images=False, **FAST)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _trainer(tmp_path, [first, checkpoint], max_epochs=1).fit(_module(), train, val)
    probe_images, probe_targets = first.probe

    # Resume with other validation data: the probe must still be the checkpointed one.
    other = make_object_images(16, image_size=32, seed=7)
    resumed = IGOSCallback(log_images=False, **FAST)
    trainer = _trainer(tmp_path, [resumed], max_epochs=2)
    trainer.fit(_module(1), train, DataLoader(other.dataset(), batch_size=8), ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(resumed.probe[0], probe_images) and torch.equal(resumed.probe[1], probe_targets)
    assert "igos/insertion_auc" in trainer.callback_metrics

    from lightning_igos.probe import load_probe

    saved = load_probe(resumed.save_probe(tmp_path / "probe.pt"))
    assert torch.equal(saved.images, probe_images) and saved.mean == (0.5, 0.5, 0.5)


def test_given_probe_and_target_pred(tmp_path: Path, loaders) -> None:
    data = make_object_images(3, image_size=32, seed=5)
    callback = IGOSCallback(probe=(data.images, None), target="pred", log_images=False, **FAST)
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(_module(), *loaders)
    assert torch.equal(callback.probe[0], data.images)
    assert callback.store.last_targets.shape == (3,)
    assert 0 < float(trainer.callback_metrics["igos/target_prob"]) <= 1


# ----------------------------------------------------------------------------- isolation


def _train(tmp_path: Path, loaders, callbacks: list) -> tuple[ObjectClassifier, list[torch.Tensor]]:
    pl.seed_everything(0)
    recorder = LossRecorder()
    module = _module()
    _trainer(tmp_path, [*callbacks, recorder], logger=False, enable_checkpointing=False).fit(module, *loaders)
    return module, recorder.losses


def test_training_is_bitwise_identical_with_and_without_the_callback(tmp_path: Path, loaders) -> None:
    # A model with BatchNorm; noise on, so the callback draws random numbers (from its own generator).
    shared: dict = {}
    callbacks = [Untouched(shared, "before"), IGOSCallback(**FAST), Untouched(shared, "after")]
    with_callback, losses_with = _train(tmp_path / "a", loaders, callbacks)
    without, losses_without = _train(tmp_path / "b", loaders, [])
    assert shared["checked"] == 2
    for (name, a), (_, b) in zip(with_callback.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), name
    assert len(losses_with) == len(losses_without) == 6
    assert all(torch.equal(a, b) for a, b in zip(losses_with, losses_without))


# ----------------------------------------------------------------------------- modes and precision


def test_trainer_validate_runs_under_inference_mode(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(**FAST)
    trainer = _trainer(tmp_path, [callback])
    (results,) = trainer.validate(_module(), loaders[1])
    for name in SCALARS:
        assert name in results
    assert not callback.probe[0].is_inference()
    events = _events(trainer.logger.log_dir)
    assert len(events.Images("igos/probe_0")) == 1


def test_bf16_mixed_precision(tmp_path: Path, loaders) -> None:
    trainer = _trainer(tmp_path, [IGOSCallback(log_images=False, **FAST)], max_epochs=1, precision="bf16-mixed")
    trainer.fit(_module(), *loaders)
    values = [float(trainer.callback_metrics[name]) for name in SCALARS]
    assert all(torch.isfinite(torch.tensor(values)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed"])
def test_cuda_training(tmp_path: Path, loaders, precision: str) -> None:
    callback = IGOSCallback(**FAST)
    trainer = pl.Trainer(
        accelerator="gpu", devices=1, max_epochs=2, precision=precision, callbacks=[callback],
        logger=TensorBoardLogger(tmp_path, name="tb"), default_root_dir=tmp_path, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False,
    )
    trainer.fit(_module(), *loaders)
    values = [float(trainer.callback_metrics[name]) for name in SCALARS]
    assert all(torch.isfinite(torch.tensor(values)))
    assert len(_events(trainer.logger.log_dir).Images("igos/probe_0")) == 2
    (results,) = trainer.validate(trainer.lightning_module, loaders[1])
    assert "igos/deletion_auc" in results


def test_lightning_pytorch_trainer_accepts_the_callback(tmp_path: Path, loaders) -> None:
    lightning = pytest.importorskip("lightning.pytorch")
    from helpers import LightningClassifier as Classifier

    from lightning_igos.callback import LightningIGOSCallback

    assert isinstance(LightningIGOSCallback(), lightning.Callback)
    assert not isinstance(IGOSCallback(), lightning.Callback)
    trainer = lightning.Trainer(
        accelerator="cpu", max_epochs=1, callbacks=[LightningIGOSCallback(**FAST)], default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
    )
    trainer.fit(Classifier(), *loaders)
    assert "igos/insertion_auc" in trainer.callback_metrics

    # IGOSCallback runs in lightning's Trainer too (hooks are called by name), with its monitors, and a
    # checkpoint it wrote resumes under LightningIGOSCallback (one state key for both classes).
    checkpoint = lightning.callbacks.ModelCheckpoint(monitor="igos/insertion_auc", mode="max", dirpath=tmp_path)
    stopper = lightning.callbacks.EarlyStopping(monitor="igos/insertion_auc", mode="max", patience=1)
    plain = IGOSCallback(every_n_epochs=2, **FAST)
    options = dict(accelerator="cpu", default_root_dir=tmp_path, enable_progress_bar=False, logger=False,
                   enable_model_summary=False)
    trainer = lightning.Trainer(max_epochs=2, callbacks=[plain, checkpoint, stopper], **options)
    trainer.fit(Classifier(), *loaders)
    assert "epoch=1" in Path(checkpoint.best_model_path).name  # the explained epoch, not the stand-in of epoch 0
    assert stopper.wait_count == 0 and not trainer.should_stop  # the unexplained epoch counted for no patience
    (results,) = trainer.validate(trainer.lightning_module, loaders[1], verbose=False)
    assert "igos/insertion_auc" in results
    resumed = LightningIGOSCallback(every_n_epochs=2, **FAST)
    trainer = lightning.Trainer(max_epochs=3, callbacks=[resumed], enable_checkpointing=False, **options)
    trainer.fit(Classifier(), *loaders, ckpt_path=checkpoint.best_model_path)
    assert torch.equal(resumed.probe[0], plain.probe[0])


# ----------------------------------------------------------------------------- failures


class _DictOutput(ObjectClassifier):
    """Trains fine, but its forward returns a dict the solver cannot use."""

    def forward(self, x):
        return {"logits": self.model(x)}

    def _step(self, batch, stage):
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.log(f"{stage}_loss", loss)
        return loss


def _out_of_memory(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")


@pytest.mark.parametrize("failure", ["bad_output", "out_of_memory"])
def test_on_error_warn_keeps_training(tmp_path: Path, loaders, monkeypatch, failure: str) -> None:
    if failure == "out_of_memory":
        monkeypatch.setattr("lightning_igos.core.solver.solve", _out_of_memory)
        module = _module()
    else:
        torch.manual_seed(0)
        module = _DictOutput(num_classes=4, width=4)
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST)], logger=False, enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, *loaders)
    skipped = [str(w.message) for w in caught if issubclass(w.category, IGOSWarning)]
    assert len(skipped) == 2 and "epoch 0" in skipped[0] and "epoch 1" in skipped[1]
    assert all("skipped the explanations" in m and ".." not in m for m in skipped)  # no double period
    assert ("OutOfMemoryError" if failure == "out_of_memory" else "logits") in skipped[0]
    assert trainer.current_epoch == 2 and trainer.state.finished
    assert "igos/insertion_auc" not in trainer.callback_metrics


def test_on_error_raise_stops_the_run(tmp_path: Path, loaders) -> None:
    torch.manual_seed(0)
    trainer = _trainer(tmp_path, [IGOSCallback(on_error="raise", **FAST)], logger=False, enable_checkpointing=False)
    with pytest.raises(TypeError, match="logits"):
        trainer.fit(_DictOutput(num_classes=4, width=4), *loaders)
    assert trainer.current_epoch == 0


# ----------------------------------------------------------------------------- demo


def test_demo_prints_a_table(tmp_path: Path, capsys) -> None:
    from lightning_igos.demo import main

    assert main(["--epochs", "1", "--train-size", "64", "--val-size", "16", "--logdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "insertion AUC" in out and "deletion AUC" in out and "pointing" in out
    assert f"tensorboard --logdir {tmp_path}" in out


def test_image_failure_still_logs_scalars(tmp_path: Path, loaders) -> None:
    module = _module()
    module.mean, module.std = (0.5, 0.5), (0.25, 0.25)  # two channels for RGB images: rendering fails
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST)], max_epochs=1, enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, *loaders)
    messages = _failure_warnings(caught)
    assert len(messages) == 1 and "`mean`" in messages[0]
    # An image failure is not reported as skipped explanations: the scalars were logged.
    assert "logged the igos/ scalars of epoch 0 but could not draw" in messages[0]
    assert "skipped" not in messages[0] and ".." not in messages[0]
    assert "igos/insertion_auc" in trainer.callback_metrics


def test_probe_from_a_probe_file(tmp_path: Path) -> None:
    from lightning_igos.probe import save_probe

    images = torch.randn(3, 3, 16, 16)
    path = save_probe(tmp_path / "probe.pt", images, [0, 1, 2], mean=(0.5,) * 3, std=(0.25,) * 3)
    callback = IGOSCallback(probe=path)
    assert torch.equal(callback.probe[0], images) and callback.probe[1].tolist() == [0, 1, 2]
    assert callback.mean == (0.5,) * 3 and callback.std == (0.25,) * 3


def test_unreadable_checkpoint_state_warns_instead_of_stopping_the_resume() -> None:
    callback = IGOSCallback()
    with pytest.warns(IGOSWarning, match="could not restore its probe"):
        callback.load_state_dict({"version": 1, "probe_images": torch.zeros(3, 8)})
    assert callback.probe is None
    strict = IGOSCallback(on_error="raise")
    with pytest.raises(ValueError, match="checkpointed probe images"):
        strict.load_state_dict({"version": 1, "probe_images": torch.zeros(3, 8)})
    good = IGOSCallback()
    good.load_state_dict({"version": 1, "probe_images": torch.zeros(2, 3, 8, 8), "probe_targets": torch.tensor([0, 1])})
    assert good.probe[1].tolist() == [0, 1]


# ----------------------------------------------------------------------------- monitoring igos/ scalars


def _monitors(tmp_path: Path, patience: int = 10) -> tuple[ModelCheckpoint, EarlyStopping]:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="igos/insertion_auc", mode="max", save_top_k=1)
    stopping = EarlyStopping(monitor="igos/deletion_auc", mode="min", patience=patience)
    return checkpoint, stopping


def test_monitoring_with_every_n_epochs_never_crashes_and_ranks_only_explained_epochs(tmp_path: Path, loaders):
    checkpoint, stopping = _monitors(tmp_path)
    logger = CSVLogger(tmp_path, name="csv")
    callback = IGOSCallback(every_n_epochs=2, log_images=False, **FAST)
    trainer = _trainer(tmp_path, [callback, checkpoint, stopping], logger=logger, max_epochs=4)
    trainer.fit(_module(), *loaders)
    assert trainer.current_epoch == 4 and trainer.state.finished
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("igos/insertion_auc")]
    # The loggers get measured values only: epochs 1 and 3.
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    measured = [float(r["igos/insertion_auc"]) for r in rows]
    assert float(checkpoint.best_model_score) == pytest.approx(max(measured), abs=1e-6)
    assert f"epoch={1 + 2 * measured.index(max(measured))}" in Path(checkpoint.best_model_path).name
    assert torch.isfinite(stopping.best_score)
    assert float(trainer.callback_metrics["igos/insertion_auc"]) == pytest.approx(measured[-1], abs=1e-6)


def _fails_after(calls: int):
    from lightning_igos.core.solver import solve as real_igos

    count = {"n": 0}

    def flaky(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise ValueError("`model` returned NaN or infinite outputs on the input images.")
        return real_igos(*args, **kwargs)

    return flaky


@pytest.mark.parametrize("good_epochs", [0, 1])
def test_monitoring_survives_failed_explanations(tmp_path: Path, loaders, monkeypatch, good_epochs: int) -> None:
    monkeypatch.setattr("lightning_igos.core.solver.solve", _fails_after(good_epochs))
    checkpoint, stopping = _monitors(tmp_path)
    trainer = _trainer(tmp_path, [IGOSCallback(log_images=False, **FAST), checkpoint, stopping], logger=False,
                       max_epochs=3)
    with pytest.warns(IGOSWarning, match="NaN or infinite"):
        trainer.fit(_module(), *loaders)
    assert trainer.current_epoch == 3 and trainer.state.finished
    if good_epochs:
        # The failed epochs read as the worst value of each monitor's mode: epoch 0 stays best.
        assert "epoch=0" in Path(checkpoint.best_model_path).name
        assert float(trainer.callback_metrics["igos/insertion_auc"]) == -torch.finfo(torch.float32).max
        assert 0 <= float(checkpoint.best_model_score) <= 1
    else:  # never explained: the worst finite value of each monitor's mode
        assert float(checkpoint.best_model_score) == -torch.finfo(torch.float32).max
        assert float(stopping.best_score) == torch.finfo(torch.float32).max
        assert "igos/mask_mean" not in trainer.callback_metrics  # not monitored: no stand-in


def test_resumed_run_keeps_the_explained_best_checkpoint(tmp_path: Path, loaders) -> None:
    train, val = loaders
    first = IGOSCallback(every_n_epochs=2, log_images=False, **FAST)
    checkpoint, _ = _monitors(tmp_path)
    saver = ModelCheckpoint(dirpath=tmp_path / "last", save_last=True)
    trainer = _trainer(tmp_path, [first, checkpoint, saver], max_epochs=2, logger=False)
    trainer.fit(_module(), train, val)
    measured = float(trainer.callback_metrics["igos/insertion_auc"])
    assert "epoch=1" in Path(checkpoint.best_model_path).name
    # Epoch 2 is not explained: its stand-in never displaces epoch 1, before or after the resume.
    resumed = IGOSCallback(every_n_epochs=2, log_images=False, **FAST)
    checkpoint, stopping = _monitors(tmp_path)
    trainer = _trainer(tmp_path, [resumed, checkpoint, stopping], max_epochs=3, logger=False)
    trainer.fit(_module(), train, val, ckpt_path=tmp_path / "last" / "last.ckpt")
    assert float(trainer.callback_metrics["igos/insertion_auc"]) == -torch.finfo(torch.float32).max
    assert "epoch=1" in Path(checkpoint.best_model_path).name
    assert float(checkpoint.best_model_score) == pytest.approx(measured, abs=1e-6)


# ----------------------------------------------------------------------------- PNG panels are never overwritten


def _png_folders(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("igos/*/overlays.png"))


def test_pngs_of_several_validations_per_epoch_are_all_kept(tmp_path: Path, loaders) -> None:
    logger = CSVLogger(tmp_path, name="csv")
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST)], logger=logger, max_epochs=1, val_check_interval=1,
                       enable_checkpointing=False)
    with pytest.warns(IGOSWarning, match="PNG"):
        trainer.fit(_module(), *loaders)
    # A validation after each of the 3 training batches: three folders in epoch 0, named by the step the
    # CSV records for each validation's scalars.
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("igos/insertion_auc")]
    assert steps == [0, 1, 2]
    assert _png_folders(Path(logger.log_dir)) == [f"epoch_000_step_{step:06d}" for step in steps]


def test_repeated_validate_without_logger_keeps_every_panel_and_says_where(tmp_path: Path, loaders,
                                                                           monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    trainer = pl.Trainer(accelerator="cpu", callbacks=[IGOSCallback(**FAST)], logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    module = _module()
    messages = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.validate(module, loaders[1])
        messages += _failure_warnings(caught)
    assert _png_folders(tmp_path) == ["epoch_000_step_000000", "epoch_000_step_000000_2"]
    assert len(messages) == 2  # one per run
    assert str(tmp_path.resolve() / "igos") in messages[0] and "no logger" in messages[0]


# ----------------------------------------------------------------------------- construction: types and values


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_probe": 2.5}, TypeError, "`num_probe` must be an integer"),
        ({"every_n_epochs": "2"}, TypeError, "`every_n_epochs` must be an integer"),
        ({"every_n_epochs": 0}, ValueError, "`every_n_epochs` must be an integer >= 1"),
        ({"metric_steps": 8.0}, TypeError, "`metric_steps`"),
        ({"seed": "0"}, TypeError, "`seed`"),
        ({"iterations": 2.0}, TypeError, "`iterations`"),
        ({"l1": "1"}, TypeError, "`l1` must be a number"),
        ({"tv": float("nan")}, ValueError, "`tv`"),
        ({"target": 1}, TypeError, "`target` must be a str"),
        ({"method": None}, TypeError, "`method` must be a str"),
        ({"on_error": True}, TypeError, "`on_error` must be a str"),
        ({"autocast_dtype": torch.int8}, ValueError, "`autocast_dtype` must be a floating point dtype"),
        ({"autocast_dtype": "bf16"}, TypeError, "`autocast_dtype`"),
        ({"mask_size": (2.9, 3.7)}, TypeError, "`mask_size` must be None, an int or a pair"),
        ({"mask_size": 4.0}, TypeError, "`mask_size`"),
        ({"mask_size": (4, 4, 4)}, ValueError, "`mask_size`"),
        ({"mask_size": (4, 0)}, ValueError, "`mask_size` must be >= 1"),
        ({"mean": (0.5, float("nan"), 0.5), "std": (0.2,) * 3}, ValueError, "`mean` must hold finite numbers"),
        ({"mean": (0.5,) * 3, "std": (0.2, float("inf"), 0.2)}, ValueError, "`std` must hold finite numbers"),
        ({"mean": "rgb", "std": (0.2,) * 3}, TypeError, "`mean`"),
        ({"mean": (0.5, 0.5), "std": (0.2, 0.2), "probe": (torch.zeros(2, 3, 8, 8), [0, 1])}, ValueError,
         r"`mean` must hold one number per channel \(3"),
    ],
)
def test_construction_rejects_wrong_types_with_type_error_and_bad_values_with_value_error(kwargs, error, match):
    with pytest.raises(error, match=match):
        IGOSCallback(**kwargs)


def test_display_statistics_are_stored_per_channel() -> None:
    callback = IGOSCallback(probe=(torch.zeros(2, 3, 8, 8), [0, 1]), mean=0.5, std=[0.25])
    assert callback.mean == (0.5, 0.5, 0.5) and callback.std == (0.25, 0.25, 0.25)
    assert IGOSCallback(mean=torch.tensor([0.5, 0.25]), std=(1, 2)).mean == (0.5, 0.25)


# ----------------------------------------------------------------------------- images of other channel counts


@pytest.mark.parametrize("channels", [2, 4])
def test_images_with_two_or_four_channels_are_drawn(tmp_path: Path, channels: int) -> None:
    data = make_object_images(8, image_size=32, seed=3)
    images = torch.cat([data.images, data.images], dim=1)[:, :channels]
    module = _module()
    module.model.features[0] = torch.nn.Conv2d(channels, 4, 3, padding=1)
    module.mean = module.std = None  # the module's 3-channel normalisation does not apply
    loader = DataLoader(torch.utils.data.TensorDataset(images, data.labels), batch_size=8)
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(module, loader)
    assert _failure_warnings(caught) == []
    events = _events(trainer.logger.log_dir)
    assert len(events.Images("igos/probe_0")) == 1 and len(events.Images("igos/overlays")) == 1


# ----------------------------------------------------------------------------- several callbacks


def test_igos_and_igos_plus_plus_side_by_side(loaders, tmp_path: Path) -> None:
    """Two callbacks in one Trainer: their own names, their own checkpoint state, the same probe."""
    train, val = loaders
    plain = IGOSCallback(**FAST, log_images=False)
    bilateral = IGOSCallback(**FAST, log_images=False, method="igos++", prefix="igospp")
    assert plain.state_key != bilateral.state_key
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="igospp/deletion_auc", mode="min")
    trainer = _trainer(tmp_path, [plain, bilateral, checkpoint], logger=CSVLogger(tmp_path), max_epochs=1)
    trainer.fit(_module(), train, val)
    metrics = trainer.callback_metrics
    for name in SCALARS:
        assert name in metrics
        assert name.replace("igos/", "igospp/") in metrics
    # The two methods explain the same images differently.
    assert float(metrics["igos/mask_mean"]) != float(metrics["igospp/mask_mean"])
    torch.testing.assert_close(plain.probe[0], bilateral.probe[0])
    states = torch.load(checkpoint.best_model_path, weights_only=False)["callbacks"]
    assert plain.state_key in states and bilateral.state_key in states


def test_one_prefix_per_trainer(loaders, tmp_path: Path) -> None:
    train, val = loaders
    trainer = _trainer(tmp_path, [IGOSCallback(**FAST), IGOSCallback(**FAST, method="igos++")], max_epochs=1)
    with pytest.raises(ValueError, match="same prefix 'igos'"):
        trainer.fit(_module(), train, val)

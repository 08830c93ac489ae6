"""The callback's opt-in trust statistics: stability across epochs and the model-randomisation sanity check."""

from __future__ import annotations

import csv
import threading
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import FASTEST_OPTIONS as FAST
from helpers import LoggingModule
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from lightning_igos import IGOSCallback
from lightning_igos.callback.loggers import custom_scalars_layout
from lightning_igos.callback.messages import IGOSWarning
from lightning_igos.callback.outputs import LowerIsBetterMean, Outputs, ShareResult, callback_scalars
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

STABILITY, SANITY = "igos/stability", "igos/sanity_correlation"


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(8, image_size=16, seed=0)
    val = make_object_images(2, image_size=16, seed=1)
    return DataLoader(train.dataset(), batch_size=8), DataLoader(val.dataset(), batch_size=2)


def _fit(tmp_path: Path, loaders, callbacks: list, max_epochs: int = 3, logger=True) -> ObjectClassifier:
    pl.seed_everything(0)
    module = ObjectClassifier(num_classes=4, width=4)
    trainer = pl.Trainer(callbacks=callbacks, accelerator="cpu", devices=1, max_epochs=max_epochs,
                         logger=CSVLogger(tmp_path, name="csv") if logger else False, default_root_dir=tmp_path,
                         enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
                         num_sanity_val_steps=0)
    trainer.fit(module, *loaders)
    module.trainer_logger_dir = trainer.logger.log_dir if logger else None
    return module


def _values(module: ObjectClassifier, name: str) -> dict[int, float]:
    with open(Path(module.trainer_logger_dir) / "metrics.csv") as f:
        return {int(row["epoch"]): float(row[name]) for row in csv.DictReader(f) if row.get(name)}


def test_the_options_are_checked_and_off_by_default() -> None:
    callback = IGOSCallback()
    assert callback.stability is False and callback.sanity_every_n is None
    assert STABILITY not in callback.scalar_names and SANITY not in callback.scalar_names
    on = IGOSCallback(stability=True, sanity_every_n=2)
    assert on.scalar_names[-2:] == (STABILITY, SANITY)
    assert not hasattr(IGOSConfig(), "stability")
    with pytest.raises(TypeError, match="`stability`"):
        IGOSCallback(stability=1)
    with pytest.raises(TypeError, match="`sanity_every_n`"):
        IGOSCallback(sanity_every_n=True)
    with pytest.raises(ValueError, match="`sanity_every_n`"):
        IGOSCallback(sanity_every_n=0)


def test_stability_is_logged_from_the_second_explained_epoch(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(num_probe=2, log_images=False, stability=True, **FAST)
    module = _fit(tmp_path, loaders, [callback])
    values = _values(module, STABILITY)
    assert sorted(values) == [1, 2]
    assert all(-1.0 <= v <= 1.0 for v in values.values())
    assert callback.previous_saliency is not None and callback.previous_saliency.device.type == "cpu"
    assert callback.previous_saliency.shape[:2] == (2, 1)


def test_the_sanity_correlation_is_logged_every_explained_epoch(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(num_probe=2, log_images=False, sanity_every_n=1, **FAST)
    values = _values(_fit(tmp_path, loaders, [callback], max_epochs=2), SANITY)
    assert sorted(values) == [0, 1]
    assert all(-1.0 <= v <= 1.0 for v in values.values())


def test_the_sanity_check_runs_on_every_nth_explained_epoch(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(num_probe=2, log_images=False, sanity_every_n=2, **FAST)
    assert sorted(_values(_fit(tmp_path, loaders, [callback], max_epochs=3), SANITY)) == [1]


def test_neither_key_is_logged_when_both_are_off(tmp_path: Path, loaders) -> None:
    module = _fit(tmp_path, loaders, [IGOSCallback(num_probe=2, log_images=False, **FAST)], max_epochs=2)
    assert _values(module, "igos/insertion_auc")
    assert not _values(module, STABILITY) and not _values(module, SANITY)


def test_a_monitored_stability_gets_a_stand_in_on_the_first_epoch(tmp_path: Path, loaders) -> None:
    # The first explained epoch has no previous map: the monitor reads the worst value instead of crashing.
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=STABILITY, mode="max", save_top_k=1)
    callback = IGOSCallback(num_probe=2, log_images=False, stability=True, **FAST)
    _fit(tmp_path, loaders, [callback, checkpoint], max_epochs=2)
    assert checkpoint.best_model_path.endswith("epoch=1-step=2.ckpt")
    assert -1.0 <= float(checkpoint.best_model_score) <= 1.0


def test_training_is_bitwise_identical_with_and_without_the_sanity_check(tmp_path: Path, loaders) -> None:
    with_check = _fit(tmp_path / "a", loaders, [IGOSCallback(num_probe=2, log_images=False, sanity_every_n=1,
                                                              stability=True, **FAST)], max_epochs=2, logger=False)
    without = _fit(tmp_path / "b", loaders, [IGOSCallback(num_probe=2, log_images=False, **FAST)], max_epochs=2,
                   logger=False)
    for (name, a), (_, b) in zip(with_check.state_dict().items(), without.state_dict().items()):
        assert torch.equal(a, b), name


def test_the_metrics_have_their_direction_and_the_layout_its_charts() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 3))
    share = ShareResult.of(torch.arange(2), evaluate(model, torch.randn(2, 3, 8, 8), [0, 1], IGOSConfig(**FAST)))
    share.stability, share.sanity = torch.tensor([0.5, 1.0]), torch.tensor([0.0, 0.2])
    module = LoggingModule()
    scalars = callback_scalars(stability=True, sanity=True)
    Outputs("val", "raise", None, display=(None, None), scalars=scalars).log_scalars(module, share)
    assert module.logged["val/stability"].higher_is_better is True
    assert isinstance(module.logged["val/sanity_correlation"], LowerIsBetterMean)
    torch.testing.assert_close(module.logged["val/stability"].compute(), torch.tensor(0.75))
    share.stability = share.sanity = None  # an epoch without a previous map, or without the check
    module = LoggingModule()
    Outputs("val", "raise", None, display=(None, None), scalars=scalars).log_scalars(module, share)
    assert "val/stability" not in module.logged and "val/sanity_correlation" not in module.logged
    layout = custom_scalars_layout({"igos": [(s.short, s.group) for s in callback_scalars(sanity=True)],
                                    "pp": [(s.short, s.group) for s in scalars]})
    assert "stability" not in layout["igos"]
    assert layout["pp"]["stability"] == ["Margin", ["pp/stability"] * 3]
    assert layout["igos"]["sanity_correlation"] == ["Margin", ["igos/sanity_correlation"] * 3]


def _validate(root: Path, callback: IGOSCallback, module: ObjectClassifier, loader: DataLoader,
              ckpt_path: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(callbacks=[callback], accelerator="cpu", devices=1, logger=False, default_root_dir=root,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.validate(module, loader, ckpt_path=ckpt_path, verbose=False)
    return trainer


def test_stability_is_one_for_an_unchanged_model_and_continues_across_a_resume(tmp_path: Path, loaders) -> None:
    pl.seed_everything(0)
    module = ObjectClassifier(num_classes=4, width=4)
    callback = IGOSCallback(num_probe=2, log_images=False, stability=True, **FAST)
    first = _validate(tmp_path, callback, module, loaders[1])
    assert STABILITY not in first.callback_metrics  # nothing to compare with yet
    second = _validate(tmp_path, callback, module, loaders[1])
    assert float(second.callback_metrics[STABILITY]) == pytest.approx(1.0, abs=1e-6)
    second.save_checkpoint(tmp_path / "after.ckpt")
    # A new callback (a resumed run) continues the series from the checkpoint's maps.
    resumed = IGOSCallback(num_probe=2, log_images=False, stability=True, **FAST)
    third = _validate(tmp_path, resumed, ObjectClassifier(num_classes=4, width=4), loaders[1],
                      ckpt_path=tmp_path / "after.ckpt")
    assert float(third.callback_metrics[STABILITY]) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(resumed.previous_saliency, callback.previous_saliency)
    # Resumed with other options, the maps are not comparable: the series starts afresh.
    other = IGOSCallback(num_probe=2, log_images=False, stability=True, **{**FAST, "iterations": 2})
    with pytest.warns(UserWarning, match="other options"):
        fourth = _validate(tmp_path, other, ObjectClassifier(num_classes=4, width=4), loaders[1],
                           ckpt_path=tmp_path / "after.ckpt")
    assert STABILITY not in fourth.callback_metrics


def test_large_probes_keep_pooled_maps() -> None:
    images = torch.zeros(40, 3, 256, 256)
    callback = IGOSCallback(probe=(images, torch.zeros(40, dtype=torch.long)), stability=True)
    maps = callback._stability_maps(torch.rand(40, 1, 256, 256))
    assert maps.shape[:2] == (40, 1) and maps.numel() <= 2**21 and maps.shape[-1] < 256
    assert callback._stability_maps(torch.rand(0, 1, 256, 256)).shape == (0, 1, *maps.shape[-2:])


class _GuardedClassifier(ObjectClassifier):
    """A LightningModule holding a lock and a large tensor that is not a buffer: neither is part of the network."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()
        self.big = torch.zeros(2_000_000)


def test_the_sanity_check_copies_only_the_network(tmp_path: Path, loaders, monkeypatch) -> None:
    copied: list[int] = []
    original = torch.Tensor.__deepcopy__

    def recording(self, memo):
        copied.append(self.data_ptr())
        return original(self, memo)

    monkeypatch.setattr(torch.Tensor, "__deepcopy__", recording)
    pl.seed_everything(0)
    module = _GuardedClassifier(num_classes=4, width=4)
    callback = IGOSCallback(num_probe=2, log_images=False, sanity_every_n=1, **FAST)
    trainer = pl.Trainer(callbacks=[callback], accelerator="cpu", devices=1, max_epochs=1,
                         logger=CSVLogger(tmp_path, name="csv"), enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IGOSWarning)
        trainer.fit(module, *loaders)
    # Deep-copying the lock once dropped every igos/ scalar of the epoch, with a warning.
    assert not [w for w in caught if "lock" in str(w.message) or "sanity" in str(w.message)]
    module.trainer_logger_dir = trainer.logger.log_dir
    assert sorted(_values(module, SANITY)) == [0] and _values(module, "igos/insertion_auc")
    assert copied and module.big.data_ptr() not in copied
    assert callback.sanity_reinitialized == ("model.features.8", "model.classifier")


class _ZeroInitLinear(torch.nn.Linear):
    def reset_parameters(self) -> None:
        torch.nn.init.zeros_(self.weight)
        torch.nn.init.zeros_(self.bias)


def test_an_epoch_whose_randomised_explanations_are_all_empty_logs_no_sanity_value(tmp_path: Path, loaders) -> None:
    class ZeroHead(ObjectClassifier):
        def __init__(self) -> None:
            super().__init__(num_classes=4, width=4)
            head = self.model.classifier
            self.model.classifier = _ZeroInitLinear(head.in_features, head.out_features)
            self.model.classifier.load_state_dict(head.state_dict())

    callback = IGOSCallback(num_probe=2, log_images=False, sanity_every_n=1, **FAST)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor=SANITY, mode="min", save_top_k=1)
    pl.seed_everything(0)
    module = ZeroHead()
    trainer = pl.Trainer(callbacks=[callback, checkpoint], accelerator="cpu", devices=1, max_epochs=1,
                         logger=CSVLogger(tmp_path, name="csv"), enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    with pytest.warns(IGOSWarning, match="2 of 2 probe images have no sanity check correlation"):
        trainer.fit(module, *loaders)
    module.trainer_logger_dir = trainer.logger.log_dir
    assert not _values(module, SANITY)  # never a confident 1.0 (or any value) for explanations that are empty
    assert _values(module, "igos/insertion_auc")
    # The monitor reads the stand-in of an epoch without the value, not a correlation.
    assert float(trainer.callback_metrics[SANITY]) == torch.finfo(torch.float32).max

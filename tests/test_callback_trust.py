"""What IGOSCallback logs can be trusted: empty explanations, unexplained epochs, failed ranks, resumes, options."""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from helpers import FAST_OPTIONS
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_igos.callback import EmptyExplanationWarning, IGOSCallback, IGOSWarning
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

REPO = Path(__file__).resolve().parents[1]
# Small solver settings: these tests check what is logged, not how good the explanations are.
FAST = dict(num_probe=4, **FAST_OPTIONS, mask_size=4, log_images=False)
WORST_MAX = -torch.finfo(torch.float32).max


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(64, image_size=32, seed=0)
    val = make_object_images(8, image_size=32, seed=1)
    return DataLoader(train.dataset(), batch_size=32, shuffle=True), DataLoader(val.dataset(), batch_size=8)


def _module(seed: int = 0) -> ObjectClassifier:
    torch.manual_seed(seed)
    return ObjectClassifier(num_classes=4, width=4)


def _trainer(tmp_path: Path, callbacks: list, max_epochs: int = 1, logger=False, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=max_epochs, callbacks=callbacks, logger=logger,
        default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        **kwargs,
    )


def _igos_warnings(caught: list, empty: bool = False) -> list[str]:
    """IGOSWarnings: those about empty explanations (``empty``), or all others."""
    return [str(w.message) for w in caught if issubclass(w.category, IGOSWarning)
            and issubclass(w.category, EmptyExplanationWarning) == empty]


# ----------------------------------------------------------------------------- empty explanations


def test_unmoved_masks_warn_once_and_log_an_empty_fraction_of_one(tmp_path: Path, loaders) -> None:
    callback = IGOSCallback(**{**FAST, "iterations": 0})  # no descent: every mask stays at all ones
    trainer = _trainer(tmp_path, [callback], enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (results,) = trainer.validate(_module(), loaders[1])
    messages = _igos_warnings(caught, empty=True)
    assert len(messages) == 1 and _igos_warnings(caught) == []
    assert "4 of 4 probe explanations" in messages[0] and "mask never moved: 4" in messages[0]
    assert results["igos/empty_fraction"] == 1.0


def test_a_trained_model_with_default_settings_has_no_empty_explanations(tmp_path: Path, trained_cnn,
                                                                         probe_data) -> None:
    module = ObjectClassifier(num_classes=trained_cnn.classifier.out_features)
    module.model = copy.deepcopy(trained_cnn)
    loader = DataLoader(TensorDataset(probe_data.images[:4], probe_data.labels[:4]), batch_size=4)
    trainer = _trainer(tmp_path, [IGOSCallback(num_probe=4, log_images=False)], enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (results,) = trainer.validate(module, loader)
    assert _igos_warnings(caught, empty=True) == []
    assert results["igos/empty_fraction"] == 0.0


# ----------------------------------------------------------------------------- monitoring unexplained epochs


def test_top_k_checkpoints_are_explained_epochs(tmp_path: Path, loaders) -> None:
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="igos/insertion_auc", mode="max", save_top_k=2)
    logger = CSVLogger(tmp_path, name="csv")
    trainer = _trainer(tmp_path, [IGOSCallback(every_n_epochs=2, **FAST), checkpoint], max_epochs=6, logger=logger)
    trainer.fit(_module(), *loaders)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        measured = {int(r["epoch"]): float(r["igos/insertion_auc"]) for r in csv.DictReader(f)
                    if r.get("igos/insertion_auc")}
    assert sorted(measured) == [1, 3, 5]  # the loggers get explained epochs only
    kept = sorted(int(re.search(r"epoch=(\d+)", Path(p).name).group(1)) for p in checkpoint.best_k_models)
    best_two = sorted(sorted(measured, key=measured.get, reverse=True)[:2])
    assert kept == best_two
    assert float(checkpoint.best_model_score) == pytest.approx(max(measured.values()), abs=1e-6)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == sorted(
        Path(p).name for p in checkpoint.best_k_models
    )


@pytest.mark.parametrize(
    "stopping_options",
    [{}, {"check_on_train_epoch_end": False}, {"divergence_threshold": -1.0}],
    ids=["default", "checked-at-validation-end", "divergence-threshold"],
)
def test_early_stopping_does_not_count_unexplained_epochs(tmp_path: Path, loaders, stopping_options: dict) -> None:
    # Explained: epochs 1 and 3. With patience=1, an unexplained epoch 2 counted as "no improvement" would stop it.
    stopping = EarlyStopping(monitor="igos/insertion_auc", mode="max", patience=1, **stopping_options)
    trainer = _trainer(tmp_path, [IGOSCallback(every_n_epochs=2, **FAST), stopping], max_epochs=4,
                       enable_checkpointing=False)
    trainer.fit(_module(), *loaders)
    assert trainer.current_epoch == 4 and stopping.stopped_epoch in (0, 3)
    assert stopping.wait_count in (0, 1) and torch.isfinite(stopping.best_score)
    assert 0 <= float(stopping.best_score) <= 1  # a measured value, never a stand-in


# ----------------------------------------------------------------------------- one failed rank under DDP

DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    import lightning_igos.core.solver as solver
    from lightning_igos.callback import IGOSCallback, IGOSWarning
    from lightning_igos.demo.synthetic import make_object_images
    from lightning_igos.demo.toy_module import ObjectClassifier

    real_igos, calls = solver.solve, []

    def igos_failing_on_rank_one_at_epoch_one(*args, **kwargs):
        calls.append(1)
        if torch.distributed.get_rank() == 1 and len(calls) == 2:
            raise RuntimeError("CUDA out of memory on this rank")
        return real_igos(*args, **kwargs)

    solver.solve = igos_failing_on_rank_one_at_epoch_one

    def main(out_dir):
        torch.set_num_threads(1)
        pl.seed_everything(0)
        train = make_object_images(32, image_size=32, seed=0)
        val = make_object_images(8, image_size=32, seed=1)
        callback = IGOSCallback(num_probe=4, metric_steps=4, iterations=1, ig_steps=2, mask_size=4)
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[callback],
            logger=TensorBoardLogger(out_dir, name="tb"), default_root_dir=out_dir, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit(ObjectClassifier(num_classes=4, width=4), DataLoader(train.dataset(), batch_size=16),
                        DataLoader(val.dataset(), batch_size=4))
        result = {
            "warnings": [str(w.message) for w in caught if issubclass(w.category, IGOSWarning)],
            "igos_keys": sorted(k for k in trainer.callback_metrics if k.startswith("igos/")),
            "log_dir": trainer.logger.log_dir,
        }
        with open(f"{out_dir}/rank_{trainer.global_rank}.json", "w") as f:
            json.dump(result, f)

    if __name__ == "__main__":
        main(sys.argv[1])
    """
)


def test_ddp_epoch_with_one_failed_rank_is_logged_on_no_rank_with_one_warning(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    script = tmp_path / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank_{rank}.json").read_text()) for rank in (0, 1)]
    every = ranks[0]["warnings"] + ranks[1]["warnings"]
    empty = [m for m in every if "are empty" in m]
    messages = [m for m in every if m not in empty]
    assert len(messages) == 1, messages
    assert "skipped the explanations of epoch 1" in messages[0] and "rank 1" in messages[0]
    assert "CUDA out of memory on this rank" in messages[0] and "rank 0:" not in messages[0]
    assert ranks[0]["igos_keys"] == ranks[1]["igos_keys"] == []  # the failed epoch left no igos/ value behind
    events = EventAccumulator(ranks[0]["log_dir"], size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for name in ("igos/insertion_auc", "igos/mask_mean", "igos/empty_fraction"):
        assert len(events.Scalars(name)) == 1, name  # epoch 0 only
    # The empty fraction is synced: over the whole probe, as the one warning of epoch 0 counts it.
    assert len(empty) <= 1 and all("of epoch 0" in m for m in empty)
    count = int(re.search(r"(\d+) of 4 probe", empty[0]).group(1)) if empty else 0
    assert events.Scalars("igos/empty_fraction")[0].value == pytest.approx(count / 4)
    for tag in ("igos/probe_0", "igos/probe_3", "igos/overlays"):
        assert len(events.Images(tag)) == 1, tag


# ----------------------------------------------------------------------------- resuming with other options


def test_resume_with_another_method_keeps_the_probe_and_warns_once(tmp_path: Path, loaders) -> None:
    train, val = loaders
    first = IGOSCallback(method="igos", **FAST)
    _trainer(tmp_path, [first, ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)]).fit(_module(), train, val)
    images, targets = first.probe
    other_val = DataLoader(make_object_images(8, image_size=32, seed=7).dataset(), batch_size=8)

    same = IGOSCallback(method="igos", **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _trainer(tmp_path, [same], max_epochs=2).fit(_module(), train, other_val,
                                                     ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert [m for m in _igos_warnings(caught) if "other options" in m] == []
    assert torch.equal(same.probe[0], images)

    resumed = IGOSCallback(method="igos++", **FAST)
    assert resumed.state_key != first.state_key
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _trainer(tmp_path, [resumed], max_epochs=2)
        trainer.fit(_module(), train, other_val, ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert torch.equal(resumed.probe[0], images) and torch.equal(resumed.probe[1], targets)
    messages = [m for m in _igos_warnings(caught) if "other options" in m]
    assert len(messages) == 1 and "method: 'igos' -> 'igos++'" in messages[0]
    assert "igos/insertion_auc" in trainer.callback_metrics


def test_a_renamed_callback_finds_the_state_saved_with_its_prefix() -> None:
    probe = (torch.randn(2, 3, 8, 8), torch.tensor([0, 1]))
    plain = IGOSCallback(probe=probe)
    bilateral = IGOSCallback(probe=(probe[0] + 1, probe[1]), method="igos++", prefix="igos_pp")
    checkpoint = {"callbacks": {plain.state_key: plain.state_dict(), bilateral.state_key: bilateral.state_dict()}}
    renamed = IGOSCallback(method="igos", prefix="igos_pp")  # the bilateral one, now with plain I-GOS
    with pytest.warns(IGOSWarning, match="method: 'igos\\+\\+' -> 'igos'"):
        renamed.on_load_checkpoint(types.SimpleNamespace(callbacks=[renamed]), None, checkpoint)
    assert torch.equal(renamed.probe[0], probe[0] + 1)
    unknown = IGOSCallback(prefix="val-igos", target="pred")
    with pytest.warns(IGOSWarning, match="cannot tell which"):
        unknown.on_load_checkpoint(types.SimpleNamespace(callbacks=[unknown]), None, checkpoint)
    assert unknown.probe is None


# ----------------------------------------------------------------------------- target="pred" with soft labels


class _OneHotClassifier(ObjectClassifier):
    def _step(self, batch, stage):
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log(f"{stage}_loss", loss)
        return loss


def test_target_pred_explains_batches_with_one_hot_labels(tmp_path: Path, loaders) -> None:
    data = make_object_images(8, image_size=32, seed=1)
    one_hot = DataLoader(TensorDataset(data.images, F.one_hot(data.labels, 4).float()), batch_size=8)
    torch.manual_seed(0)
    callback = IGOSCallback(target="pred", **FAST)
    trainer = _trainer(tmp_path, [callback], max_epochs=2, enable_checkpointing=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_OneHotClassifier(num_classes=4, width=4), loaders[0], one_hot)
    assert _igos_warnings(caught) == []  # no word about the labels
    assert torch.equal(callback.probe[0], data.images[:4])
    assert 0 <= float(trainer.callback_metrics["igos/insertion_auc"]) <= 1
    from lightning_igos.probe import load_probe

    assert load_probe(callback.save_probe(tmp_path / "probe.pt")).targets.shape == (4,)  # the explained classes


# ----------------------------------------------------------------------------- options checked at construction


def test_prefix_must_be_one_safe_name() -> None:
    for bad in ("..", ".", "../igos", "igos\\..", "a/b", "", " igos", "igos pp", ".hidden", "igos:1", "igos++"):
        with pytest.raises(ValueError, match="`prefix` must be a non-empty name"):
            IGOSCallback(prefix=bad)
    with pytest.raises(TypeError, match="`prefix` must be a str"):
        IGOSCallback(prefix=3)
    for good in ("igos", "igos_pp", "val-igos", "igospp", "igos.v2"):
        assert f"{good}/insertion_auc" in IGOSCallback(prefix=good).scalar_names


def test_mask_size_larger_than_a_given_probe_fails_at_construction() -> None:
    probe = (torch.zeros(2, 3, 8, 8), [0, 1])
    for mask_size in (16, (8, 9)):
        with pytest.raises(ValueError, match=r"`mask_size` .* larger than the probe's images \(8, 8\)"):
            IGOSCallback(probe=probe, mask_size=mask_size)
    assert IGOSCallback(probe=probe, mask_size=8).config.mask_size == (8, 8)
    assert IGOSCallback(mask_size=64).config.mask_size == (64, 64)  # a captured probe is checked at its first run


@pytest.mark.parametrize(("kwargs", "name"), [({"tv_power": float("inf")}, "tv_power"), ({"seed": 2**70}, "seed")])
def test_solver_options_out_of_range_fail_at_construction(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        IGOSCallback(**kwargs)

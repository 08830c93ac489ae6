"""What :mod:`lightning_igos.callback.lightning_internals` relies on, checked on the installed Lightning.

Each test pins one reach into Lightning's private state (or a progress bar's internals) and fails,
naming it, when a Lightning release changes it; each runs under both the ``pytorch_lightning``
and the ``lightning.pytorch`` namespaces. The oldest Lightning the project allows (pyproject's
lower bound, 2.6.6) is also the newest release on the package index this suite was last run against,
so running this module once checks both ends of the allowed range; when a newer Lightning is
released, run it again against that one.
"""

from __future__ import annotations

import importlib
import warnings
from types import ModuleType

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_igos.callback import lightning_internals as internals
from lightning_igos.callback.monitors import WORST

NAMESPACES = ["pytorch_lightning", "lightning.pytorch"]


def _lightning(namespace: str) -> ModuleType:
    return importlib.import_module(namespace) if namespace == "pytorch_lightning" else pytest.importorskip(namespace)


def _module(pl: ModuleType, log_y_until: int = -1):
    """A linear model on random data that logs ``val_loss`` (and ``y`` up to epoch ``log_y_until``)."""

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.layer(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))
            if self.current_epoch <= log_y_until:
                self.log("y", torch.tensor(1.0))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    return Tiny()


def _loader(n: int = 8) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 4, generator=generator), torch.randint(0, 2, (n,),
                                                                                           generator=generator)),
                      batch_size=2)


def _fit(pl: ModuleType, tmp_path, callbacks: list, max_epochs: int = 1, module=None, **kwargs):
    trainer = pl.Trainer(accelerator="cpu", max_epochs=max_epochs, callbacks=callbacks, default_root_dir=tmp_path,
                         enable_model_summary=False, num_sanity_val_steps=0, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module or _module(pl), _loader(), _loader(4))
    return trainer


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_batches_that_stepped_is_the_step_of_the_epoch_end_scalars(namespace: str, tmp_path) -> None:
    pl = _lightning(namespace)
    seen: list[int | None] = []
    logged: list[tuple[str, int]] = []

    class Steps(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            seen.append(internals.batches_that_stepped(trainer))

    class Record(pl.loggers.logger.Logger):
        name, version = "record", 0

        def log_metrics(self, metrics, step=None) -> None:
            logged.extend((key, step) for key in metrics)

        def log_hyperparams(self, *args, **kwargs) -> None:
            pass

    trainer = _fit(pl, tmp_path, [Steps()], max_epochs=2, logger=Record(), log_every_n_steps=1)
    assert isinstance(trainer.fit_loop.epoch_loop._batches_that_stepped, int), \
        "Lightning no longer counts trainer.fit_loop.epoch_loop._batches_that_stepped"
    assert None not in seen
    assert [step for key, step in logged if key == "val_loss"] == seen  # the panels' step is the scalars'


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_early_stopping_sets_check_on_train_epoch_end_in_setup(namespace: str) -> None:
    pl = _lightning(namespace)
    for every_n, expected in ((1, True), (2, False)):
        stopper = pl.callbacks.EarlyStopping(monitor="val_loss")
        assert stopper._check_on_train_epoch_end is None, "EarlyStopping._check_on_train_epoch_end changed"
        trainer = pl.Trainer(accelerator="cpu", check_val_every_n_epoch=every_n, logger=False)
        stopper.setup(trainer, _module(pl), "fit")
        assert internals.checks_on_train_epoch_end(stopper) is expected
    assert internals.checks_on_train_epoch_end(pl.callbacks.EarlyStopping("x", check_on_train_epoch_end=False)) \
        is False
    assert pl.callbacks.EarlyStopping in internals.early_stopping_classes()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_held_patience_count_is_unchanged_by_the_check_of_a_stand_in(namespace: str) -> None:
    pl = _lightning(namespace)
    stopper = pl.callbacks.EarlyStopping(monitor="igos/insertion_auc", mode="max", patience=2)
    stopper._evaluate_stopping_criteria(torch.tensor(0.5))  # a first measured value: the best so far
    assert stopper.wait_count == 0
    internals.hold_patience(stopper)
    should_stop, _ = stopper._evaluate_stopping_criteria(torch.tensor(WORST["max"]))
    assert stopper.wait_count == 0 and not should_stop, "a check without improvement no longer adds one to wait_count"
    internals.hold_patience(stopper)
    internals.release_patience(stopper)
    stopper._evaluate_stopping_criteria(torch.tensor(WORST["max"]))
    assert stopper.wait_count == 1  # released: the check counts as usual


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_monitors_read_what_is_written_to_and_dropped_from_callback_metrics(namespace: str, tmp_path) -> None:
    pl = _lightning(namespace)

    class StandIn(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            internals.set_callback_metric(trainer, "stand_in", torch.tensor(float(trainer.current_epoch)))
            if trainer.current_epoch == 1:
                internals.drop_callback_metric(trainer, "y")  # logged at epoch 0 only

    checkpoint = pl.callbacks.ModelCheckpoint(monitor="stand_in", mode="max", dirpath=tmp_path / "ckpt")
    trainer = _fit(pl, tmp_path, [StandIn(), checkpoint], max_epochs=2, module=_module(pl, log_y_until=0),
                   logger=False)
    assert float(checkpoint.best_model_score) == 1.0  # ModelCheckpoint read the written value
    assert float(trainer.callback_metrics["stand_in"]) == 1.0
    assert "y" not in trainer.callback_metrics  # a dropped key is not restored from an older epoch
    assert trainer.callback_metrics is trainer.callback_metrics


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("bar", ["tqdm", "rich"])
def test_the_validation_bar_can_be_taken_over_and_put_back(namespace: str, bar: str, tmp_path) -> None:
    pl = _lightning(namespace)
    if bar == "rich":
        pytest.importorskip("rich")
        progress_callback = pl.callbacks.RichProgressBar()
    else:
        progress_callback = pl.callbacks.TQDMProgressBar()
    checked: list[str] = []

    class TakeOver(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            callback = trainer.progress_bar_callback
            if bar == "rich":
                assert isinstance(callback.progress.console.is_terminal, bool)
                task = callback.progress.tasks[callback.val_progress_bar_id]
                before = (task.total, task.completed, task.description)
            else:
                assert hasattr(callback.val_progress_bar, "fp")
                before = (callback.val_progress_bar.total, callback.val_progress_bar.n,
                          callback.val_progress_bar.desc)
            assert isinstance(internals.terminal_output(callback), bool)
            done = [0]
            for live in (False, True):
                done[0] = 0
                taken = internals.take_over_progress_bar(callback, 10, live, lambda: "explaining", lambda: done[0])
                assert taken is not None, f"no validation bar found on {type(callback).__name__}"
                draw, restore = taken
                done[0] = 7
                draw()
                if bar == "rich":
                    task = callback.progress.tasks[callback.val_progress_bar_id]
                    assert (task.total, task.completed, task.description) == (10, 7, "explaining")
                else:
                    shown = callback.val_progress_bar
                    assert (shown.total, shown.n, shown.desc) == (10, 7, "explaining")
                restore()
                if bar == "rich":
                    task = callback.progress.tasks[callback.val_progress_bar_id]
                    assert (task.total, task.completed, task.description) == before
                else:
                    shown = callback.val_progress_bar
                    assert (shown.total, shown.n, shown.desc) == before
            checked.append(bar)

    _fit(pl, tmp_path, [progress_callback, TakeOver()], logger=False)
    assert checked == [bar]


def test_summary_writer_has_the_file_writer_the_layout_is_written_with(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    try:
        file_writer = internals.summary_file_writer(writer)
        assert file_writer is not None and callable(file_writer.add_summary), \
            "SummaryWriter._get_file_writer() no longer gives a writer with add_summary"
    finally:
        writer.close()
    assert internals.summary_file_writer(object()) is None

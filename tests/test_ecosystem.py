"""IGOSCallback in the stack it is used with: both Lightning packages (Trainer, ddp_spawn, LightningCLI
with YAML), TensorBoard's Custom Scalars with several callbacks, the progress bar in a terminal and in a
log, MLflow 3, checkpoint file names, and the README's recipes, run as written."""

from __future__ import annotations

import math
import re
import shlex
import shutil
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import yaml
from helpers import FASTEST_OPTIONS, L
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader

from lightning_igos.callback import IGOSCallback
from lightning_igos.callback.hooks import _IGOSCallbackLogic
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FAST = dict(num_probe=2, **FASTEST_OPTIONS)


def readme_block(marker: str, language: str = "python") -> str:
    """The README's fenced ``language`` block that contains ``marker`` (exactly one)."""
    blocks = re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"{len(found)} README {language} blocks contain {marker!r}"
    return found[0]


def _loaders(val_size: int = 8, batch_size: int = 8) -> tuple[DataLoader, DataLoader]:
    train = make_object_images(16, image_size=16, seed=0)
    val = make_object_images(val_size, image_size=16, seed=1)
    return DataLoader(train.dataset(), batch_size=8), DataLoader(val.dataset(), batch_size=batch_size)


def _module() -> ObjectClassifier:
    torch.manual_seed(0)
    return ObjectClassifier(num_classes=4, width=4)


class _TwoEpochs(pl.Trainer):
    """The README's ``Trainer(...)``, run for two epochs and quietly (what the recipes set is kept)."""

    def __init__(self, **kwargs) -> None:
        kwargs["max_epochs"] = min(2, kwargs.get("max_epochs", 2))
        kwargs.update(accelerator="cpu", devices=1, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, log_every_n_steps=1)
        super().__init__(**kwargs)


def run_recipe(marker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Run the README's recipe that contains ``marker`` in ``tmp_path``; its names afterwards."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(pl, "Trainer", _TwoEpochs)  # what `from pytorch_lightning import Trainer` gets
    train_loader, val_loader = _loaders(val_size=2)  # a probe of 2 images (the callbacks keep what there is)
    namespace = {"model": _module(), "train_loader": train_loader, "val_loader": val_loader}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny untrained model's empty explanations, Lightning's hints
        exec(compile(readme_block(marker), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    return namespace


# ----------------------------------------------------------------------------- the lightning namespace


def _lightning():
    return pytest.importorskip("lightning.pytorch", reason="lightning is in the dev extra")


def _cli_available() -> None:
    pytest.importorskip("jsonargparse", reason="jsonargparse (LightningCLI) is in the dev extra")


def _lightning_classes():
    """A LightningModule and a LightningDataModule of the ``lightning`` package."""
    _lightning()
    return LightningClassifier, LightningData


if L is not None:
    # Module level, so that ddp_spawn's processes unpickle them by name.
    from helpers import LightningClassifier

    class LightningData(L.LightningDataModule):
        def __init__(self, val_size: int = 2) -> None:
            super().__init__()
            self.val_size = val_size  # a probe of 2 (the configs ask for 8: the probe keeps what there is)

        def train_dataloader(self):
            return _loaders()[0]

        def val_dataloader(self):
            return _loaders(val_size=self.val_size)[1]


class PlainData(pl.LightningDataModule):
    def train_dataloader(self):
        return _loaders()[0]

    def val_dataloader(self):
        return _loaders(val_size=2)[1]


def test_lightning_callback_is_a_module_level_class_that_pickles(tmp_path: Path) -> None:
    import pickle

    _lightning()
    from lightning_igos.callback import LightningIGOSCallback
    from lightning_igos.callback.lightning_namespace import LightningIGOSCallback as defined

    assert LightningIGOSCallback is defined and LightningIGOSCallback.__qualname__ == "LightningIGOSCallback"
    callback = LightningIGOSCallback(prefix="val-igos", **FAST)
    copy = pickle.loads(pickle.dumps(callback))
    assert type(copy) is LightningIGOSCallback and copy.prefix == "val-igos" and copy.config == callback.config
    # Checkpoints are interchangeable between the two packages' classes.
    assert copy.state_key == IGOSCallback(prefix="val-igos", **FAST).state_key
    # And the copy runs in a pytorch_lightning Trainer too: Trainers call their callbacks' hooks by name.
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, callbacks=[copy], logger=False,
                         default_root_dir=tmp_path, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_module(), *_loaders(val_size=2))
    assert math.isfinite(float(trainer.callback_metrics["val-igos/insertion_auc"]))


def test_ddp_spawn_with_the_lightning_callback(tmp_path: Path) -> None:
    """``strategy="ddp_spawn"`` pickles the Trainer, callbacks included, into two CPU processes."""
    L = _lightning()
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_igos.callback import LightningIGOSCallback

    Classifier, Data = _lightning_classes()
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_epochs=1, limit_train_batches=1,
        callbacks=[LightningIGOSCallback(**FAST)], logger=TensorBoardLogger(tmp_path, name="tb"),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Classifier(), datamodule=Data(val_size=4))  # rank 0 sees 2 of the 4 images: the probe
    # Rank 0's metrics come back to this process; each rank explained one of the two probe images.
    value = float(trainer.callback_metrics["igos/insertion_auc"])
    assert math.isfinite(value) and 0 <= value <= 1
    (log_dir,) = {p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*")}  # rank 0's version folder
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    for tag in ("igos/probe_0", "igos/probe_1", "igos/overlays"):
        assert len(events.Images(tag)) == 1, tag  # written once, by rank 0


def _cli_args(config: Path, tmp_path: Path) -> list[str]:
    return ["fit", "--config", str(config), "--trainer.max_epochs=2", "--trainer.limit_train_batches=1",
            "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={tmp_path}"]


def _readme_cli_config(tmp_path: Path, class_path: str | None = None) -> tuple[Path, dict]:
    text = readme_block("class_path: lightning_igos.callback.LightningIGOSCallback", language="yaml")
    if class_path is not None:
        # The README: "With pytorch_lightning.cli.LightningCLI the same file names class_path: <class_path>".
        assert f"`class_path: {class_path}`" in " ".join(README.read_text(encoding="utf-8").split())
        text = text.replace("lightning_igos.callback.LightningIGOSCallback", class_path)
    path = tmp_path / "config.input.yaml"
    path.write_text(text)
    (entry,) = yaml.safe_load(text)["trainer"]["callbacks"]
    return path, entry["init_args"]


def _check_cli_callback(trainer, expected_class: type, options: dict) -> None:
    (callback,) = [cb for cb in trainer.callbacks if isinstance(cb, _IGOSCallbackLogic)]
    assert type(callback) is expected_class
    assert callback.num_probe == options["num_probe"] and callback.every_n_epochs == options["every_n_epochs"]
    assert callback.prefix == options["prefix"] and callback.config.method == options["method"]
    assert callback.config.metric_steps == options["metric_steps"]
    prefix = options["prefix"]
    assert math.isfinite(float(trainer.callback_metrics[f"{prefix}/insertion_auc"]))  # epoch 1 was explained


def test_lightning_cli_builds_the_lightning_callback_from_the_readme_yaml(tmp_path: Path) -> None:
    _lightning()
    _cli_available()
    from lightning.pytorch.cli import LightningCLI

    from lightning_igos.callback import LightningIGOSCallback

    Classifier, Data = _lightning_classes()
    config, options = _readme_cli_config(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LightningCLI(Classifier, Data, args=_cli_args(config, tmp_path))
    _check_cli_callback(cli.trainer, LightningIGOSCallback, options)
    # The config the CLI saved names the class by a path that builds it again.
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    (entry,) = [c for c in saved["trainer"]["callbacks"] if "IGOS" in c["class_path"]]
    assert entry["class_path"].startswith("lightning_igos.callback.") and "LightningIGOSCallback" in entry["class_path"]
    # Without the `fit` subcommand's own options (ckpt_path, ...): the Trainer, the model and the data.
    saved = {key: value for key, value in saved.items() if key in ("trainer", "model", "data", "seed_everything")}
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(saved))
    again = LightningCLI(Classifier, Data, run=False, args=["--config", str(tmp_path / "again.yaml")])
    (callback,) = [cb for cb in again.trainer.callbacks if type(cb) is LightningIGOSCallback]
    assert callback.prefix == options["prefix"] and callback.config.method == options["method"]


def test_pytorch_lightning_cli_builds_igos_callback_from_the_readme_yaml(tmp_path: Path) -> None:
    _cli_available()
    from pytorch_lightning.cli import LightningCLI

    config, options = _readme_cli_config(tmp_path, class_path="lightning_igos.callback.IGOSCallback")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = LightningCLI(ObjectClassifier, PlainData, args=_cli_args(config, tmp_path))
    _check_cli_callback(cli.trainer, IGOSCallback, options)


def test_lightning_cli_refuses_the_pytorch_lightning_class(tmp_path: Path) -> None:
    """What the README's table says: lightning.pytorch's CLI needs LightningIGOSCallback."""
    _lightning()
    _cli_available()
    from lightning.pytorch.cli import LightningCLI

    Classifier, Data = _lightning_classes()
    config, _ = _readme_cli_config(tmp_path, class_path="lightning_igos.callback.IGOSCallback")
    with pytest.raises(SystemExit), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LightningCLI(Classifier, Data, run=False, args=["--config", str(config)])


# ----------------------------------------------------------------------------- TensorBoard Custom Scalars


def test_two_callbacks_share_one_custom_scalars_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's I-GOS against iGOS++ recipe: TensorBoard keeps one layout per run, holding both."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    names = run_recipe('IGOSCallback(method="igos++", prefix="igospp")', tmp_path, monkeypatch)
    log_dir = names["trainer"].logger.log_dir
    events = EventAccumulator(log_dir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    configs = events.Tensors("custom_scalars__config__")
    assert len(configs) == 1  # two callbacks, two explained epochs: one layout
    layout = layout_pb2.Layout.FromString(configs[0].tensor_proto.string_val[0])
    categories = {c.title: {chart.title: [s.value for s in chart.margin.series] for chart in c.chart}
                  for c in layout.category}
    assert list(categories) == ["igos vs igospp", "igos", "igospp"]  # the comparison first
    assert categories["igos vs igospp"]["insertion_auc"] == ["igos/insertion_auc", "igospp/insertion_auc"]
    logged = set(events.Tags()["scalars"])
    for category in layout.category[1:]:  # one logged statistic per chart
        tags = [f"{category.title}/{chart.title}" for chart in category.chart]
        assert [[(s.value, s.lower, s.upper) for s in chart.margin.series] for chart in category.chart] == [
            [(tag, tag, tag)] for tag in tags]
        assert set(tags) <= logged
    for prefix in ("igos", "igospp"):  # every tag of the layout is a logged scalar
        assert len(events.Scalars(f"{prefix}/insertion_auc_normalized")) == 2


# ----------------------------------------------------------------------------- MLflow 3


def test_readme_mlflow_recipe_logs_scalars_and_panels(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow", reason="mlflow-skinny is in the dev extra")
    pytest.importorskip("sqlalchemy", reason="sqlalchemy is in the dev extra (MLflow's SQLite store)")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # no opt-in: the setup must work as it is
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    names = run_recipe('tracking_uri="sqlite:///mlflow.db"', tmp_path, monkeypatch)
    logger, trainer = names["logger"], names["trainer"]
    client, run_id = logger.experiment, logger.run_id
    assert (tmp_path / "mlflow.db").is_file()
    history = client.get_metric_history(run_id, "igos/insertion_auc")
    steps = sorted(m.step for m in history)
    assert len(steps) == 2 and all(0 <= m.value <= 1 for m in history)
    assert "igos/deletion_auc_normalized" in client.get_run(run_id).data.metrics
    # One artifact folder per validation, named by the step MLflow recorded the scalars at.
    folders = sorted(f.path for f in client.list_artifacts(run_id, "igos"))
    assert folders == [f"igos/epoch_{epoch:03d}_step_{step:06d}" for epoch, step in enumerate(steps)]
    files = sorted(f.path.rsplit("/", 1)[1] for f in client.list_artifacts(run_id, folders[-1]))
    assert files == ["overlays.png", "probe_0.png", "probe_1.png"]
    pngs = list((tmp_path / "mlartifacts").rglob("probe_0.png"))  # in the recipe's artifact folder
    assert len(pngs) == 2
    assert trainer.current_epoch == 2


# ----------------------------------------------------------------------------- checkpoint names


def test_readme_checkpoint_recipe_names_files_without_subfolders(tmp_path: Path, monkeypatch) -> None:
    names = run_recipe('filename="epoch{epoch}-ins{igos/insertion_auc:.3g}"', tmp_path, monkeypatch)
    checkpoint = names["checkpoint"]
    folder = Path(checkpoint.dirpath)
    assert [p for p in folder.rglob("*") if p.is_dir()] == []  # no "igos/" subfolder
    files = sorted(p.name for p in folder.iterdir())
    # Epoch 0 is not explained (every_n_epochs=2): its stand-in prints short; epoch 1 holds its AUC.
    assert len(files) == 2 and files[0] == "epoch0-ins-3.4e+38.ckpt"
    best = float(checkpoint.best_model_score)
    assert files[1] == f"epoch1-ins{best:.3g}.ckpt" and 0 <= best <= 1
    assert Path(checkpoint.best_model_path).name == files[1]


# ----------------------------------------------------------------------------- the demo's last words


def test_demo_ends_with_a_tensorboard_command_that_runs_here(tmp_path: Path, monkeypatch, capsys) -> None:
    from lightning_igos.demo import main

    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))  # tensorboard is not on PATH (not activated)
    monkeypatch.delenv("MAKELEVEL", raising=False)
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(pl.Trainer, "fit", lambda *args, **kwargs: None)  # the training is tested elsewhere
    logdir = tmp_path / "runs"
    assert main(["--epochs", "1", "--train-size", "8", "--val-size", "8", "--logdir", str(logdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    command = shlex.split(lines[lines.index(next(x for x in lines if x.startswith("See the explanation"))) + 1])
    program = command[0]
    resolved = Path(program) if "/" in program else shutil.which(program)
    assert resolved is not None and Path(resolved).is_file(), command
    assert command[-2:] == ["--logdir", str(logdir)]


def test_make_tensorboard_runs_the_projects_tensorboard() -> None:
    if shutil.which("make") is None:
        pytest.skip("no make")
    import subprocess

    result = subprocess.run(["make", "-n", "-o", ".venv/.installed", "tensorboard"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert ".venv/bin/tensorboard --logdir runs/demo" in result.stdout

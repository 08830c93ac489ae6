"""ROAD as an opt-in statistic: evaluate, the callback's scalars and layout, and the check's reports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import FASTEST_ARGS, LoggingModule, check_args, tiny_check_workspace
from helpers import FASTEST_OPTIONS as FAST
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader

from lightning_igos import IGOSCallback
from lightning_igos.callback.loggers import custom_scalars_layout
from lightning_igos.callback.outputs import Outputs, ShareResult, callback_scalars
from lightning_igos.cli import main
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.road import road_curves
from lightning_igos.core.statistics import get_statistic, statistics
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


ROAD_STATISTICS = ("road_morf", "road_lerf", "road_gap")
ROAD_HIGHER_IS_BETTER = {"road_morf": False, "road_lerf": True, "road_gap": True}
STATISTICS = tuple(s.name for s in statistics(IGOSConfig()))  # what a default evaluation reports


def test_the_road_statistics_are_declared_once() -> None:
    assert {name: get_statistic(name).higher_is_better for name in ROAD_STATISTICS} == ROAD_HIGHER_IS_BETTER
    with_road = [s.name for s in statistics(IGOSConfig(road=True))]
    assert [name for name in with_road if name not in STATISTICS] == list(ROAD_STATISTICS)
    shorts = [s.short for s in callback_scalars(IGOSConfig(road=True))]
    assert set(ROAD_STATISTICS) <= set(shorts) and not set(ROAD_STATISTICS) & {s.short for s in callback_scalars()}
    assert IGOSConfig().road is False
    with pytest.raises(TypeError, match="`road`"):
        IGOSConfig(road=1)


def test_evaluate_with_road_matches_road_curves() -> None:
    model, images, targets = _tiny(), torch.randn(3, 3, 8, 8), torch.tensor([0, 2, 1])
    config = IGOSConfig(road=True, seed=5, **FAST)
    result = evaluate(model, images, targets, config)
    direct = road_curves(model, images, result.explanation.saliency, targets,
                         generator=torch.Generator().manual_seed(5))
    stats = result.per_image()
    assert set(stats) == {*STATISTICS, *ROAD_STATISTICS}
    torch.testing.assert_close(stats["road_morf"], direct.morf_area)
    torch.testing.assert_close(stats["road_lerf"], direct.lerf_area)
    torch.testing.assert_close(stats["road_gap"], direct.gap)
    copy = result.cpu()
    assert copy.road is not None and copy.road is not result.road
    torch.testing.assert_close(copy.per_image()["road_gap"], direct.gap)
    # Off by default: no ROAD work, no ROAD statistics, and the other numbers are the same.
    plain = evaluate(model, images, targets, config.replace(road=False))
    assert plain.road is None and plain.cpu().road is None and list(plain.per_image()) == list(STATISTICS)
    for name in STATISTICS:
        torch.testing.assert_close(plain.per_image()[name], stats[name])


def test_evaluate_gives_an_image_the_same_road_numbers_wherever_it_is_in_the_probe() -> None:
    # A DDP rank evaluates a slice of the probe: an image's ROAD numbers must not depend on its neighbours.
    model, g = _tiny(), torch.Generator().manual_seed(0)
    images, targets = torch.randn(4, 3, 8, 8, generator=g), torch.tensor([0, 2, 1, 2])
    config = IGOSConfig(method="edge_map", road=True, seed=3, **FAST)  # a map that depends on the image only
    whole = evaluate(model, images, targets, config).per_image()
    part = evaluate(model, images[3:], targets[3:], config).per_image()
    moved = evaluate(model, images.flip(0), targets.flip(0), config).per_image()
    for name in ROAD_STATISTICS:
        torch.testing.assert_close(part[name][0], whole[name][3], atol=1e-6, rtol=0)
        assert torch.equal(moved[name][0], whole[name][3]), name


@pytest.mark.parametrize("road", [True, False])
def test_outputs_log_the_road_means_with_their_direction(road: bool) -> None:
    result = evaluate(_tiny(), torch.randn(2, 3, 8, 8), [0, 1], IGOSConfig(road=road, **FAST))
    share = ShareResult.of(torch.arange(2), result)
    module = LoggingModule()
    Outputs("val", "raise", None, display=(None, None),
            scalars=callback_scalars(IGOSConfig(road=road))).log_scalars(module, share)
    road_names = {f"val/{name}" for name in ROAD_STATISTICS}
    assert (road_names <= set(module.logged)) is road and (not road_names & set(module.logged)) is (not road)
    if road:
        for name in ROAD_STATISTICS:
            metric = module.logged[f"val/{name}"]
            assert metric.higher_is_better is ROAD_HIGHER_IS_BETTER[name]
            torch.testing.assert_close(metric.compute(), result.per_image()[name].mean())


def test_the_layout_has_a_road_chart_only_for_road_prefixes() -> None:
    charts = {prefix: [(s.short, s.group) for s in callback_scalars(IGOSConfig(road=prefix == "igospp"))]
              for prefix in ("igos", "igospp")}
    layout = custom_scalars_layout(charts)
    assert not {"road_morf", "road_lerf", "road_gap"} & set(layout["igos"])
    assert [layout["igospp"][name] for name in ("road_morf", "road_lerf", "road_gap")] == [
        ["Margin", [f"igospp/{name}"] * 3] for name in ("road_morf", "road_lerf", "road_gap")]
    assert "road_morf" not in layout["igos vs igospp"]  # only statistics both log are compared
    assert "road_morf" not in custom_scalars_layout()["igos"]


@pytest.fixture(scope="module")
def loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(8, image_size=16, seed=0)
    val = make_object_images(2, image_size=16, seed=1)
    return DataLoader(train.dataset(), batch_size=8), DataLoader(val.dataset(), batch_size=2)


@pytest.mark.parametrize("road", [True, False])
def test_the_callback_logs_the_road_scalars_only_when_asked(tmp_path: Path, loaders, road: bool) -> None:
    torch.manual_seed(0)
    logger, board = CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tb")
    callback = IGOSCallback(num_probe=2, log_images=False, road=road, **FAST)
    assert callback.config.road is road
    trainer = pl.Trainer(callbacks=[callback], accelerator="cpu", devices=1, max_epochs=1, logger=[logger, board],
                         default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(ObjectClassifier(num_classes=4, width=4), *loaders)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    logged = {key for row in rows for key, value in row.items() if value}
    road_names = {f"igos/{name}" for name in ROAD_STATISTICS}
    assert "igos/insertion_auc" in logged
    if road:
        assert road_names <= logged
        assert road_names <= set(callback.scalar_names)
        row = next(r for r in rows if r.get("igos/road_gap"))
        gap = float(row["igos/road_lerf"]) - float(row["igos/road_morf"])
        assert float(row["igos/road_gap"]) == pytest.approx(gap, abs=1e-5)
    else:
        assert not road_names & logged and not road_names & set(callback.scalar_names)
    board.experiment.flush()
    events = EventAccumulator(board.log_dir, size_guidance={"tensors": 0})
    events.Reload()
    (layout,) = events.Tensors("custom_scalars__config__")
    assert (b"igos/road_gap" in layout.tensor_proto.SerializeToString()) is road


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_check_workspace(tmp_path_factory.mktemp("road_check"), tiny_checkpoint, num_probe=2)


def _check(workspace: Path, tmp_path: Path, *extra: str) -> tuple[dict, str]:
    report, page = tmp_path / "report.json", tmp_path / "report.html"
    status = main(check_args("--allow-empty", "--report", str(report), "--html", str(page), *extra,
                             checkpoint=str(workspace / "run.ckpt"), probe=str(workspace / "probe.pt"),
                             fast=FASTEST_ARGS))
    assert status in (0, 1)
    return json.loads(report.read_text()), page.read_text(encoding="utf-8")


def test_the_check_reports_road_with_the_flag(workspace: Path, tmp_path: Path, capsys) -> None:
    report, page = _check(workspace, tmp_path, "--road")
    out = capsys.readouterr().out
    assert report["settings"]["road"] is True
    for row in report["images"]:
        assert set(ROAD_STATISTICS) <= set(row)
        assert row["road_gap"] == pytest.approx(row["road_lerf"] - row["road_morf"], abs=1e-6)
    for name in ROAD_STATISTICS:
        values = [row[name] for row in report["images"]]
        assert report["mean"][name] == pytest.approx(sum(values) / len(values))
    assert "ROAD MoRF" in out and "ROAD gap" in out
    assert "ROAD MoRF" in page and "ROAD LeRF" in page


def test_the_check_has_no_road_without_the_flag(workspace: Path, tmp_path: Path, capsys) -> None:
    report, page = _check(workspace, tmp_path)
    assert report["settings"]["road"] is False
    assert not set(ROAD_STATISTICS) & set(report["mean"])
    assert all(not set(ROAD_STATISTICS) & set(row) for row in report["images"])
    assert "ROAD" not in capsys.readouterr().out and "ROAD MoRF" not in page

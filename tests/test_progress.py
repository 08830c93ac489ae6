"""What the progress bar shows while the callback explains its probe: a bar of the explaining's own work.

Under Lightning's tqdm bar, its Rich bar and outside a terminal, the validation bar never reads as
finished while the probe is explained: it counts passes done of the planned total, with its own clock,
and every line names the callback's prefix and method.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from helpers import FASTEST_OPTIONS
from pytorch_lightning.callbacks import TQDMProgressBar
from torch.utils.data import DataLoader

from lightning_igos.callback import IGOSCallback
from lightning_igos.callback.status import ExplainStatus
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import planned_passes
from lightning_igos.demo.synthetic import make_object_images
from lightning_igos.demo.toy_module import ObjectClassifier

FAST = dict(num_probe=2, **FASTEST_OPTIONS)
TOTAL = sum(planned_passes(IGOSConfig(iterations=1, ig_steps=2, metric_steps=4), 2))


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


class _Watched(ObjectClassifier):
    """Records what the validation bar shows at every gradient pass (the explaining, not the validation)."""

    def __init__(self) -> None:
        super().__init__(num_classes=4, width=4)
        self.seen: list[dict[str, Any]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and self.trainer.validating and torch.is_grad_enabled():
            bar = self.trainer.progress_bar_callback
            progress = getattr(bar, "progress", None)
            if progress is not None:  # Rich
                task = progress.tasks[bar.val_progress_bar_id]
                self.seen.append(dict(desc=task.description, n=task.completed, total=task.total,
                                      finished=task.finished, start=task.start_time))
            else:
                tqdm_bar = bar.val_progress_bar
                self.seen.append(dict(desc=tqdm_bar.desc, n=tqdm_bar.n, total=tqdm_bar.total, finished=False,
                                      start=tqdm_bar.start_t))
        return super().forward(x)


def _loaders() -> tuple[DataLoader, DataLoader]:
    train = make_object_images(16, image_size=16, seed=0)
    val = make_object_images(4, image_size=16, seed=1)
    return DataLoader(train.dataset(), batch_size=8), DataLoader(val.dataset(), batch_size=2)


def _fit(tmp_path: Path, bar: Any, callbacks: list[IGOSCallback] | None = None, epochs: int = 1) -> _Watched:
    torch.manual_seed(0)
    module = _Watched()
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, callbacks=[*(callbacks or [IGOSCallback(**FAST)]), bar],
        logger=False, default_root_dir=tmp_path, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, *_loaders())
    return module


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)


def _assert_a_bar_of_the_explaining(seen: list[dict[str, Any]]) -> None:
    assert seen
    assert all(s["desc"] == "igos: explaining 2 probe images with I-GOS" for s in seen), seen[0]["desc"]
    assert all(s["total"] == TOTAL for s in seen)  # the passes, not the 2 validation batches
    assert all(s["n"] < s["total"] and not s["finished"] for s in seen)  # never a finished bar while explaining
    assert [s["n"] for s in seen] == sorted(s["n"] for s in seen)


def test_tqdm_on_a_terminal_shows_passes_done_of_the_total(tmp_path: Path, monkeypatch) -> None:
    stream = _Stream(tty=True)
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(ExplainStatus, "INTERVAL_S", 0.0)
    module = _fit(tmp_path, TQDMProgressBar())
    _assert_a_bar_of_the_explaining(module.seen)
    out = _plain(stream.getvalue())
    drawn = re.findall(rf"igos: explaining 2 probe images with I-GOS:\s+(\d+)%\|[^|]*\|\s*(\d+)/{TOTAL} "
                       r"\[[\d:]+<[\d:?]+, [\d.?]+ ?passes/s\]", out)
    assert drawn, out[-1500:]
    assert any(int(done) == TOTAL for _, done in drawn)  # it ends at the total
    # The first run's cost line is a line of its own, naming the prefix and the method.
    lines = [line.strip("\r ") for line in out.split("\n")]
    cost = [line for line in lines if "probe images with I-GOS took" in line]
    assert len(cost) == 1 and cost[0].startswith("IGOSCallback igos: explaining 2 probe images with I-GOS took ")


def test_rich_shows_passes_done_of_the_total_on_a_fresh_clock(tmp_path: Path) -> None:
    pytest.importorskip("rich", reason="RichProgressBar needs rich")
    from pytorch_lightning.callbacks import RichProgressBar

    stream = _Stream(tty=True)
    bar = RichProgressBar(console_kwargs={"file": stream, "force_terminal": True, "width": 200})
    module = _fit(tmp_path, bar)
    _assert_a_bar_of_the_explaining(module.seen)
    # The task's clock was restarted for the explaining (its time and speed columns measure the passes).
    starts = {s["start"] for s in module.seen}
    assert len(starts) == 1 and None not in starts
    out = _plain(stream.getvalue())
    assert re.search(rf"igos: explaining 2 probe images with I-GOS.*\d+/{TOTAL}", out), out[-1500:]


def test_into_a_log_a_line_when_explaining_starts_and_one_when_it_ends(tmp_path: Path, monkeypatch) -> None:
    stream = _Stream(tty=False)
    monkeypatch.setattr(sys, "stdout", stream)
    monkeypatch.setattr(ExplainStatus, "INTERVAL_S", 0.0)  # redraw at every pass: the most a log could get
    module = _fit(tmp_path, TQDMProgressBar(), epochs=3)
    assert all(s["n"] < s["total"] == TOTAL for s in module.seen)  # no finished bar, even undrawn
    segments = [_plain(s).strip() for s in re.split(r"[\r\n]", stream.getvalue())]
    ours = [s for s in segments if s.startswith(("igos", "IGOSCallback"))]
    starts = [s for s in ours if s == f"igos: explaining 2 probe images with I-GOS, {TOTAL} passes planned ..."]
    assert len(starts) == 3, ours  # one per explained epoch, and no bar redraws in between
    ends = [s for s in ours if s not in starts]
    assert len(ends) == 3, ours  # epoch 0: the cost line; epochs 1 and 2: one line each
    assert ends[0].startswith("IGOSCallback igos: explaining 2 probe images with I-GOS took ")
    for epoch, line in zip((1, 2), ends[1:]):
        assert re.fullmatch(rf"igos epoch {epoch}: I-GOS explained 2 probe images in [\d.]+ s, "
                            rf"{TOTAL}/{TOTAL} passes \(\d+ model passes in all\)", line), line


def test_two_callbacks_lines_name_their_prefix_and_method(tmp_path: Path, monkeypatch) -> None:
    stream = _Stream(tty=False)
    monkeypatch.setattr(sys, "stdout", stream)
    callbacks = [IGOSCallback(**FAST), IGOSCallback(method="igos++", prefix="igos_pp", **FAST)]
    _fit(tmp_path, TQDMProgressBar(), callbacks)
    lines = [_plain(s).strip() for s in re.split(r"[\r\n]", stream.getvalue())]
    cost = [line for line in lines if line.startswith("IGOSCallback ")]
    assert len(cost) == 2, lines
    assert cost[0].startswith("IGOSCallback igos: explaining 2 probe images with I-GOS took ")
    assert cost[1].startswith("IGOSCallback igos_pp: explaining 2 probe images with iGOS++ took ")

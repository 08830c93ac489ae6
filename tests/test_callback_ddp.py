"""IGOSCallback under DDP: two CPU processes (gloo), launched from a script file.

Lightning's ``strategy="ddp"`` starts the other ranks by re-running the main
script, which pytest is not, so the Trainer runs in a subprocess script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import DataLoader

    from lightning_igos.core.config import IGOSConfig
    from lightning_igos.core.evaluation import evaluate
    from lightning_igos.callback import IGOSCallback
    from lightning_igos.callback.probe_state import select_probe
    from lightning_igos.demo.synthetic import make_object_images
    from lightning_igos.demo.toy_module import ObjectClassifier

    # noise_std=0: each image's explanation then depends only on its own slice of the probe.
    OPTIONS = dict(iterations=2, ig_steps=3, mask_size=4, noise_std=0.0)

    def main(out_dir):
        torch.set_num_threads(1)
        pl.seed_everything(0)
        train = make_object_images(64, image_size=32, seed=0)
        val = make_object_images(16, image_size=32, seed=1)
        callback = IGOSCallback(num_probe=4, metric_steps=8, stability=True, road=True, **OPTIONS)
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, callbacks=[callback],
            logger=TensorBoardLogger(out_dir, name="tb"), default_root_dir=out_dir,
            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
            num_sanity_val_steps=1,
        )
        module = ObjectClassifier(num_classes=4, width=4)
        trainer.fit(module, DataLoader(train.dataset(), batch_size=16, shuffle=True),
                    DataLoader(val.dataset(), batch_size=4))
        torch.save(callback.probe, f"{out_dir}/probe_rank{trainer.global_rank}.pt")
        if not trainer.is_global_zero:
            return
        # Recompute each rank's slice in this process with the final weights.
        images, targets = callback.probe
        shares = []
        for rows in torch.arange(len(images)).tensor_split(2):
            cc = evaluate(module, images[rows], targets[rows], IGOSConfig(metric_steps=8, **OPTIONS)).curves
            shares.append({"insertion": cc.insertion_auc.tolist(), "deletion": cc.deletion_auc.tolist()})
        result = {
            "world_size": trainer.world_size,
            "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("igos/")},
            "shares": shares,
            # Chosen from rank 0's samples (the DistributedSampler gives it every other one), round-robin over classes.
            "probe_is_rank_zero_balanced_choice": bool(torch.equal(
                images, val.images[0::2][select_probe(val.labels[0::2].tolist(), 4)])),
            "probe_classes": targets.tolist(),
            "rank_zero_classes": sorted(set(val.labels[0::2].tolist())),
            "log_dir": trainer.logger.log_dir,
            "out_dir": out_dir,
            # Stability keeps the whole probe's maps on every rank (gathered), as the checkpoint does.
            "previous_shape": list(callback.previous_saliency.shape),
            "state_shape": list(callback.state_dict()["previous_saliency"].shape),
        }
        with open(f"{out_dir}/result.json", "w") as f:
            json.dump(result, f)

    if __name__ == "__main__":
        main(sys.argv[1])
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out_dir = tmp_path_factory.mktemp("ddp")
    script = out_dir / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for key in ("MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, str(script), str(out_dir)], cwd=out_dir, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out_dir / "result.json").read_text())


def test_ddp_logs_road_and_stability_and_keeps_the_whole_probes_maps(ddp_run: dict) -> None:
    logged = ddp_run["logged"]
    assert 0 <= logged["igos/road_lerf"] <= 1 and 0 <= logged["igos/road_morf"] <= 1
    assert -1 <= logged["igos/stability"] <= 1  # epoch 1 against epoch 0, each rank's images against their own
    assert ddp_run["previous_shape"] == ddp_run["state_shape"] == [4, 1, 32, 32]


def test_ddp_metrics_are_the_mean_over_all_ranks(ddp_run: dict) -> None:
    assert ddp_run["world_size"] == 2
    assert ddp_run["probe_is_rank_zero_balanced_choice"]
    assert set(ddp_run["probe_classes"]) == set(ddp_run["rank_zero_classes"][:4])


def test_ddp_every_rank_explains_rank_zeros_probe(ddp_run: dict) -> None:
    out_dir = Path(ddp_run["out_dir"])
    zero, one = (torch.load(out_dir / f"probe_rank{rank}.pt", weights_only=True) for rank in (0, 1))
    assert torch.equal(zero[0], one[0]) and torch.equal(zero[1], one[1])
    shares = ddp_run["shares"]
    insertion = [v for share in shares for v in share["insertion"]]
    deletion = [v for share in shares for v in share["deletion"]]
    assert ddp_run["logged"]["igos/insertion_auc"] == pytest.approx(sum(insertion) / 4, abs=1e-5)
    assert ddp_run["logged"]["igos/deletion_auc"] == pytest.approx(sum(deletion) / 4, abs=1e-5)


def test_ddp_rank_zero_writes_every_panel_once_per_epoch(ddp_run: dict) -> None:
    events = EventAccumulator(ddp_run["log_dir"], size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag in ["igos/probe_0", "igos/probe_1", "igos/probe_2", "igos/probe_3", "igos/overlays"]:
        assert len(events.Images(tag)) == 2, tag
    assert len(events.Scalars("igos/insertion_auc")) == 2
    assert len(events.Scalars("igos/mask_mean")) == 2


# ----------------------------------------------------------------------------- fewer probe images than ranks


class _StubModule(torch.nn.Module):
    """What the callback uses of a LightningModule on a rank whose share is empty: log and device."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        super().__init__()
        self.logged: dict = {}

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = value


@pytest.mark.parametrize("log_images", [True, False])
def test_an_empty_share_is_normal_and_silent(log_images: bool) -> None:
    """num_probe=1 on 2 ranks: rank 1 explains nothing, logs empty metric states, warns nothing."""
    from lightning_igos.callback import SCALAR_NAMES, IGOSCallback

    callback = IGOSCallback(probe=(torch.randn(1, 3, 16, 16), [0]), log_images=log_images, on_error="raise",
                            iterations=1, ig_steps=2, metric_steps=4)
    trainer = types.SimpleNamespace(
        world_size=2, global_rank=1, is_global_zero=False, current_epoch=0, global_step=0, callbacks=[],
        callback_metrics={}, loggers=[], sanity_checking=False,
    )
    module = _StubModule()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        callback._run(trainer, module)
    assert set(module.logged) == set(SCALAR_NAMES) | {"igos/seconds", "igos/passes_per_image"}
    assert float(module.logged["igos/insertion_auc"].weight) == 0  # empty states: the synced mean is rank 0's

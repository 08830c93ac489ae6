"""Every number the package reports for one fixed setup, written to JSON, to compare two versions bitwise.

A refactoring must not move a number. This script records, on a small CNN trained for a few
steps on the generated task (seeded, 1 CPU thread):

* ``evaluate``'s per-image statistics for several configurations (methods, ROAD, boxes);
* the JSON report of ``lightning-igos check`` (run id and times left out);
* the scalars ``IGOSCallback`` logs over a 2-epoch ``fit`` (CSV logger).

Floats are stored as ``float.hex`` so equality is exact::

    .venv/bin/python bench/snapshot_numbers.py --out before.json
    # ... change the code ...
    .venv/bin/python bench/snapshot_numbers.py --out after.json --compare before.json

It prints a table of the compared entries and exits 1 when any differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

VOLATILE = {"run_id", "elapsed_s", "seconds", "time", "created", "version", "elapsed", "timestamp", "duration_s"}


def _hex(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else value.hex()
    if isinstance(value, dict):
        return {k: _hex(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, (list, tuple)):
        return [_hex(v) for v in value]
    return value


def _setup(root: Path):
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    from lightning_igos.demo.synthetic import make_object_images
    from lightning_igos.demo.toy_module import ObjectClassifier

    torch.manual_seed(0)
    data = make_object_images(32, image_size=24, seed=0)
    module = ObjectClassifier(num_classes=4, width=8)
    trainer = pl.Trainer(max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, accelerator="cpu")
    trainer.fit(module, DataLoader(data.dataset(), batch_size=8))
    trainer.save_checkpoint(root / "run.ckpt")
    probe = make_object_images(6, image_size=24, seed=1)
    return module.eval(), data, probe


def evaluations(module, probe) -> dict[str, Any]:
    from lightning_igos.core.config import IGOSConfig
    from lightning_igos.core.evaluation import evaluate

    configs = {
        "default": IGOSConfig(iterations=2, ig_steps=4, metric_steps=10),
        "igos++": IGOSConfig(method="igos++", iterations=2, ig_steps=4, metric_steps=10),
        "road": IGOSConfig(iterations=1, ig_steps=3, metric_steps=8, road=True),
        "gradient": IGOSConfig(method="gradient", metric_steps=10),
        "integrated_gradients": IGOSConfig(method="integrated_gradients", metric_steps=10),
        "mask8_zeros": IGOSConfig(mask_size=8, iterations=2, ig_steps=4, metric_steps=10, substrate="zeros"),
    }
    out = {}
    for name, config in configs.items():
        boxes = probe.boxes if name == "default" and getattr(probe, "boxes", None) is not None else None
        result = evaluate(module, probe.images, probe.labels, config, boxes=boxes)
        out[name] = {k: v.tolist() for k, v in result.per_image().items()}
        out[name]["saliency_sum"] = result.saliency.double().sum().item()
    return out


def check_report(root: Path, probe) -> dict[str, Any]:
    from lightning_igos.cli import main
    from lightning_igos.probe import save_probe

    save_probe(root / "probe.pt", probe.images, probe.labels)
    report = root / "report.json"
    args = ["check", "--model", "lightning_igos.demo.toy_module:ObjectClassifier", "--checkpoint",
            str(root / "run.ckpt"), "--probe", str(root / "probe.pt"), "--report", str(report),
            "--iterations", "2", "--ig-steps", "4", "--metric-steps", "10", "--min-insertion", "0"]
    code = main(args)
    content = json.loads(report.read_text())
    content.pop("settings", None)  # paths and versions; the numbers are what must not move
    content.pop("overlays", None)
    return {"exit": code, "report": content}


def callback_scalars(root: Path, data) -> dict[str, Any]:
    import pytorch_lightning as pl
    from pytorch_lightning.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from lightning_igos import IGOSCallback
    from lightning_igos.demo.toy_module import ObjectClassifier

    torch.manual_seed(0)
    module = ObjectClassifier(num_classes=4, width=8)
    logger = CSVLogger(root, name="csv")
    callback = IGOSCallback(num_probe=4, iterations=2, ig_steps=4, metric_steps=10, log_images=False)
    trainer = pl.Trainer(max_epochs=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=root, accelerator="cpu",
                         limit_train_batches=2, num_sanity_val_steps=0, callbacks=[callback])
    trainer.fit(module, DataLoader(data.dataset(), batch_size=8), DataLoader(data.dataset(), batch_size=8))
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scalars = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("igos/") and value not in ("", None) and not key.endswith("seconds"):
                scalars.setdefault(key, []).append(float(value))
    return scalars


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--compare", type=Path, help="an earlier snapshot: exit 1 when any entry differs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        module, data, probe = _setup(root)
        snapshot = {"evaluate": evaluations(module, probe), "check": check_report(root, probe),
                    "callback": callback_scalars(root, data)}
    snapshot = _hex(snapshot)
    args.out.write_text(json.dumps(snapshot, indent=1, sort_keys=True))
    if args.compare is None:
        print(f"wrote {args.out}")
        return 0
    before = json.loads(args.compare.read_text())
    print("| part | entries | differing |\n|---|---|---|")
    failed = False
    for part in sorted(set(before) | set(snapshot)):
        old, new = before.get(part, {}), snapshot.get(part, {})
        keys = sorted(set(old) | set(new))
        bad = [k for k in keys if old.get(k) != new.get(k)]
        failed |= bool(bad)
        print(f"| {part} | {len(keys)} | {', '.join(bad) or '-'} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

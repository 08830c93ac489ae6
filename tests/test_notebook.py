"""An Evaluation shows itself in a notebook: its statistics table and a panel per image, all in one HTML block."""

from __future__ import annotations

import base64
import io
import re

import torch
from PIL import Image

from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate


def test_an_evaluation_renders_its_table_and_panels_as_self_contained_html() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images = torch.rand(3, 3, 32, 32)
    evaluation = evaluate(model, images, "pred", IGOSConfig(iterations=2, metric_steps=4))
    page = evaluation._repr_html_()
    table = re.search(r"<table.*?</table>", page, flags=re.S).group(0)
    for name in ("insertion_auc", "deletion_auc"):
        assert f"<th>{name}</th>" in table
    rows = re.findall(r"<tr><td>(#\d|<b>mean</b>)</td>", table)
    assert rows == ["#0", "#1", "#2", "<b>mean</b>"]
    mean = evaluation.per_image()["insertion_auc"].mean().item()
    assert f"{mean:.4f}" in table
    sources = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(sources) == 3 and all(s.startswith(("data:image/jpeg;base64,", "data:image/png;base64,"))
                                     for s in sources)  # nothing to fetch: the block stands alone
    panel = Image.open(io.BytesIO(base64.b64decode(sources[0].split(",", 1)[1])))
    assert panel.width > 32 * 2  # the panel (image, heatmap, curves), not the image alone

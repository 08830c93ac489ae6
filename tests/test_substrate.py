"""The default substrates remove the evidence at small image sizes too, and a substrate that keeps it is reported.

The task: a bright 6x6 square on noise at 32x32, the class is its quadrant. A blur keeps a bright
blob where it was, so under a substrate that blurs the fully "deleted" image still shows the class,
and a map that lies exactly on the square scores a deletion AUC as high as a random map's.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_igos import causal_curves
from lightning_igos.core.causal import substrate_warning
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.statistics import get_statistic


def square_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images (n, 3, 32, 32), quadrant (n,), a map that is 1 on the square and 0 elsewhere (n, 1, 32, 32))."""
    generator = torch.Generator().manual_seed(seed)
    images = 0.5 * torch.randn(n, 3, 32, 32, generator=generator)
    oracle = torch.zeros(n, 1, 32, 32)
    labels = torch.randint(0, 4, (n,), generator=generator)
    for i, label in enumerate(labels.tolist()):
        top = int(torch.randint(0, 11, (1,), generator=generator)) + 16 * (label // 2)
        left = int(torch.randint(0, 11, (1,), generator=generator)) + 16 * (label % 2)
        images[i, :, top:top + 6, left:left + 6] = 2.5
        oracle[i, :, top:top + 6, left:left + 6] = 1.0
    return images, labels, oracle


SQUARE_NET = """
from torch import nn


class SquareNet(nn.Sequential):
    def __init__(self):
        super().__init__(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            nn.Flatten(), nn.Linear(16 * 16, 4))
"""


@pytest.fixture(scope="module")
def square_task() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A small CNN that finds the square's quadrant (about 2 s on 2 CPU cores) and 8 probe images."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
        nn.Flatten(), nn.Linear(16 * 16, 4))
    images, labels, _ = square_images(1024, seed=0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for rows in torch.randperm(1024, generator=torch.Generator().manual_seed(1)).split(64):
            optimiser.zero_grad()
            F.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimiser.step()
    model.eval()
    probe, targets, oracle = square_images(8, seed=1)
    with torch.no_grad():
        assert (model(probe).argmax(1) == targets).all()
    return model, probe, targets, oracle


def test_a_map_on_the_square_deletes_far_better_than_a_random_map_at_the_defaults(square_task) -> None:
    model, probe, targets, oracle = square_task
    random_map = torch.rand(oracle.shape, generator=torch.Generator().manual_seed(0))
    on_square = causal_curves(model, probe, oracle, targets, steps=20)
    at_random = causal_curves(model, probe, random_map, targets, steps=20)
    assert float(at_random.deletion_auc.mean()) > 0.8
    assert float(on_square.deletion_auc.mean()) < 0.5 * float(at_random.deletion_auc.mean())


def test_the_default_explanation_scores_as_correct_on_the_square_task(square_task) -> None:
    model, probe, targets, _ = square_task
    explained = evaluate(model, probe, targets, IGOSConfig(metric_steps=20))
    control = evaluate(model, probe, targets, IGOSConfig(method="random", metric_steps=20))
    assert float(explained.curves.deletion_auc.mean()) < 0.5 * float(control.curves.deletion_auc.mean())
    assert float(explained.per_image()["substrate_score"].max()) < 0.5


def test_the_substrate_score_is_the_substituted_image_over_the_clean_one(square_task) -> None:
    model, probe, targets, _ = square_task
    result = evaluate(model, probe, targets, IGOSConfig(method="random", metric_steps=4, substrate="blur"))
    with torch.no_grad():
        scores = model(probe).softmax(1)[torch.arange(8), targets]
        substituted = model(_blurred(probe)).softmax(1)
    expected = substituted[torch.arange(8), targets] / scores
    torch.testing.assert_close(result.per_image()["substrate_score"], expected, rtol=1e-5, atol=1e-6)
    # A blur keeps the square: the fully substituted image keeps the class.
    assert float(expected.min()) > 0.9
    statistic = get_statistic("substrate_score")
    assert statistic.higher_is_better is False and statistic.label


def _blurred(images: torch.Tensor) -> torch.Tensor:
    from lightning_igos.core.baselines import make_baseline

    return make_baseline(images, "blur")


def test_a_substrate_that_keeps_the_evidence_on_most_images_gives_a_warning_naming_the_remedy() -> None:
    assert substrate_warning(torch.tensor([0.9, 0.95, 0.2, 0.99])) is not None
    text = substrate_warning(torch.tensor([0.9, 0.95, 0.2, 0.99]))
    assert "deletion_substrate='zeros'" in text
    assert substrate_warning(torch.tensor([0.9, 0.1, 0.2, 0.99])) is None  # half is not most
    assert substrate_warning(torch.tensor([])) is None
    # A two-class model is at 0.5 on an image without evidence: half of a sure clean score is not kept evidence.
    no_evidence, clean = torch.tensor([0.51, 0.52, 0.55]), torch.tensor([0.98, 0.96, 0.9])
    assert substrate_warning(no_evidence / clean, clean_scores=clean, num_classes=2) is None
    assert substrate_warning(torch.tensor([0.95, 0.9, 0.99]), clean_scores=clean, num_classes=2) is not None
    # An image near chance (an untrained model) has no evidence to keep: it is not judged.
    near_chance = torch.tensor([0.3, 0.28, 0.31])
    assert substrate_warning(torch.tensor([1.0, 1.0, 0.98]), clean_scores=near_chance, num_classes=4) is None


def test_the_callback_warns_once_when_the_substrate_keeps_the_evidence(square_task, tmp_path) -> None:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_igos import IGOSCallback
    from lightning_igos.callback import IGOSWarning

    model, probe, targets, _ = square_task

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def validation_step(self, batch, batch_idx):
            return None

    loader = DataLoader(TensorDataset(probe, targets), batch_size=8)

    def run(**options) -> list[str]:
        callback = IGOSCallback(probe=(probe, targets), iterations=1, ig_steps=2, metric_steps=4,
                                log_images=False, **options)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
                             callbacks=[callback])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.validate(Module(), loader, verbose=False)
            trainer.validate(Module(), loader, verbose=False)
        return [str(w.message) for w in caught if issubclass(w.category, IGOSWarning) and "substrate" in str(w.message)]

    kept = run(substrate="blur")
    assert len(kept) == 1, kept
    assert "zeros" in kept[0]
    assert run() == []


def test_the_check_prints_and_reports_the_warning_when_the_substrate_keeps_the_evidence(
        square_task, tmp_path, monkeypatch, capsys) -> None:
    import json

    from lightning_igos.cli import main
    from lightning_igos.probe import save_probe

    model, probe, targets, _ = square_task
    (tmp_path / "square_net.py").write_text(SQUARE_NET)
    torch.save(model.state_dict(), tmp_path / "net.pt")
    save_probe(tmp_path / "probe.pt", probe, targets)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))

    def check(*extra: str) -> tuple[str, dict]:
        code = main(["check", "--model", "square_net:SquareNet", "--checkpoint", "net.pt", "--probe", "probe.pt",
                     "--iterations", "1", "--ig-steps", "2", "--metric-steps", "4", "--device", "cpu",
                     "--report", "report.json", "--html", "report.html", *extra])
        assert code == 0
        return capsys.readouterr().out, json.loads((tmp_path / "report.json").read_text())

    out, report = check("--substrate", "blur")
    assert len(report["warnings"]) == 1 and "deletion_substrate='zeros'" in report["warnings"][0]
    assert "warning: the substrate kept the evidence" in out
    assert "the substrate kept the evidence" in (tmp_path / "report.html").read_text()
    assert report["mean"]["substrate_score"] > 0.9
    out, report = check()
    assert report["warnings"] == [] and "substrate kept" not in out
    assert report["settings"]["deletion_substrate"] == "zeros" and report["settings"]["insertion_substrate"] == "blur"

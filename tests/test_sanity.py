"""The model-randomisation sanity check: the randomised copy, the rank correlation, the control and `check --sanity`."""

from __future__ import annotations

import copy
import json
import math
import threading
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_igos.cli import main
from lightning_igos.cli.check import CheckSettings
from lightning_igos.cli.html_report import render_html, render_markdown
from lightning_igos.cli.report_model import verdict_text
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.gradients import gradient_saliency
from lightning_igos.core.sanity import (
    average_ranks,
    edge_explainer,
    edge_map,
    randomize,
    randomized_copy,
    resettable_modules,
    sanity_check,
    spearman,
)
from lightning_igos.demo.synthetic import SmallCNN
from lightning_igos.probe import save_probe

FAST = IGOSConfig(iterations=2, ig_steps=4)


@pytest.fixture()
def batch(probe_data):
    return probe_data.images[:4], probe_data.labels[:4]


def test_the_users_model_and_the_global_rng_are_untouched(trained_cnn) -> None:
    before = {name: value.clone() for name, value in trained_cnn.state_dict().items()}
    rng = torch.random.get_rng_state()
    randomized = randomized_copy(trained_cnn, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), rng)
    after = trained_cnn.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert randomized is not trained_cnn
    changed = [not torch.equal(a, b) for a, b in zip(trained_cnn.parameters(), randomized.parameters())]
    assert changed[-1] and not changed[0]  # the head is re-initialised, the first layer kept


def test_the_last_quarter_and_at_least_two_modules_are_reset() -> None:
    torch.manual_seed(0)
    layers = [nn.Linear(4, 4) for _ in range(12)]
    model = nn.Sequential(*layers, nn.ReLU())
    randomized = randomized_copy(model)
    changed = [not torch.equal(a.weight, b.weight) for a, b in zip(layers, resettable_modules(randomized))]
    assert changed == [False] * 9 + [True] * 3
    small = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    changed = [not torch.equal(a.weight, b.weight) for a, b in zip(small, randomized_copy(small))]
    assert changed == [False, True, True]


def test_the_copy_is_reproducible_from_the_generator(tiny_model) -> None:
    a = randomized_copy(tiny_model, torch.Generator().manual_seed(5))
    b = randomized_copy(tiny_model, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_model_with_nothing_to_reset_is_an_error() -> None:
    with pytest.raises(ValueError, match="reset_parameters"):
        randomized_copy(nn.Sequential(nn.Flatten(), nn.ReLU()))


def test_spearman_of_a_map_with_itself_and_its_negation() -> None:
    s = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(spearman(s, s), torch.ones(3))
    assert torch.allclose(spearman(s, -s), -torch.ones(3))
    other = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert spearman(s, other).abs().max() < 0.5
    with pytest.raises(ValueError, match="shaped"):
        spearman(s, s[:, :, :4])


def _tied_maps(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unrelated maps with ties: 90% zeros (ReLU'd gradients), and binary maps."""
    g = torch.Generator().manual_seed(seed)
    sparse = torch.rand(2, 6, 1, 16, 16, generator=g)
    sparse = torch.where(sparse > 0.9, sparse, torch.zeros(()))
    binary = (torch.rand(2, 6, 1, 16, 16, generator=g) > 0.5).float()
    return sparse[0], sparse[1], binary[0], binary[1]


def test_spearman_on_tied_maps_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for a, b in zip(*[iter(_tied_maps(0))] * 2):
        ours = spearman(a, b)
        reference = torch.tensor([stats.spearmanr(x.flatten().numpy(), y.flatten().numpy())[0] for x, y in zip(a, b)],
                                 dtype=torch.float32)
        torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6)
        # Breaking the ties by pixel index made unrelated sparse maps correlate at about 0.64.
        assert ours.abs().max() < 0.3


def test_spearman_on_tied_maps_agrees_with_torchmetrics() -> None:
    from torchmetrics.functional import spearman_corrcoef

    for a, b in zip(*[iter(_tied_maps(1))] * 2):
        reference = torch.stack([spearman_corrcoef(x.flatten(), y.flatten()) for x, y in zip(a, b)])
        torch.testing.assert_close(spearman(a, b), reference, rtol=0, atol=1e-5)


def test_average_ranks_share_the_mean_rank_of_a_tie() -> None:
    values = torch.tensor([[2.0, 0.0, 2.0, 1.0, 0.0, 2.0], [5.0, 5.0, 5.0, 5.0, 5.0, 5.0]])
    assert average_ranks(values).tolist() == [[4.0, 0.5, 4.0, 2.0, 0.5, 4.0], [2.5] * 6]


def _pair(b: int) -> st.SearchStrategy:
    values = st.lists(st.integers(0, 3), min_size=b * 9, max_size=b * 9)
    return st.tuples(values, values).map(
        lambda pair: tuple(torch.tensor(v, dtype=torch.float32).view(b, 1, 3, 3) for v in pair))


_maps = st.integers(1, 3).flatmap(_pair)


@settings(max_examples=80, deadline=None)
@given(maps=_maps)
def test_spearman_properties_on_tied_maps(maps) -> None:
    a, b = maps
    rho = spearman(a, b)
    constant = (a.flatten(1).amax(1) == a.flatten(1).amin(1)) | (b.flatten(1).amax(1) == b.flatten(1).amin(1))
    # Undefined (NaN) exactly when a map ranks nothing; otherwise in [-1, 1].
    assert torch.equal(rho.isnan(), constant)
    assert ((rho[~constant] >= -1) & (rho[~constant] <= 1)).all()
    # Symmetric, and unchanged by strictly increasing transforms of either map.
    torch.testing.assert_close(spearman(b, a), rho, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(spearman(a.pow(3) + 2 * a - 7, torch.exp(b)), rho, rtol=0, atol=1e-6, equal_nan=True)
    torch.testing.assert_close(spearman(a, -b), -rho, rtol=0, atol=1e-6, equal_nan=True)


def test_a_correlation_with_an_empty_map_is_undefined() -> None:
    s = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    empty = torch.zeros_like(s)
    assert spearman(s, empty).isnan().all() and spearman(empty, empty).isnan().all()
    assert spearman(s, torch.full_like(s, math.nan)).isnan().all()
    result = sanity_check(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), torch.rand(3, 3, 8, 8), 0,
                          explainer=lambda m, x, t: torch.zeros(x.shape[0], 1, *x.shape[-2:]))
    assert result.empty.all() and math.isnan(result.mean_correlation)


class ZeroInitLinear(nn.Linear):
    """A head that ``reset_parameters`` zero-initialises: the randomised model explains nothing."""

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


def _zero_head(trained: SmallCNN) -> SmallCNN:
    model = copy.deepcopy(trained)
    head = ZeroInitLinear(model.classifier.in_features, model.classifier.out_features)
    head.load_state_dict(model.classifier.state_dict())
    model.classifier = head
    return model


def test_a_randomised_model_that_explains_nothing_has_no_correlation(trained_cnn, batch) -> None:
    images, labels = batch
    result = sanity_check(_zero_head(trained_cnn), images, labels, FAST)
    assert (result.randomized_saliency.flatten(1).amax(1) == result.randomized_saliency.flatten(1).amin(1)).all()
    assert result.correlation.isnan().all() and result.empty.all()
    assert math.isnan(result.mean_correlation)  # never a confident 1.0 or a pass


class WithEMA(nn.Module):
    """A network with an EMA copy and an auxiliary head registered after it; the forward runs the network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.ema = copy.deepcopy(net)
        self.aux_head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_the_layers_come_from_what_the_forward_runs(trained_cnn, batch) -> None:
    images, labels = batch
    model = WithEMA(trained_cnn)
    randomized, names = randomize(model, torch.Generator().manual_seed(0), example_inputs=images)
    assert names == ("net.features.8", "net.classifier")
    assert not torch.equal(randomized.net.classifier.weight, model.net.classifier.weight)
    assert randomized.ema is model.ema and randomized.aux_head is model.aux_head  # not called: shared, unchanged
    result = sanity_check(model, images, labels, explainer=gradient_saliency)
    assert result.reinitialized == names
    # Re-initialising the EMA copy left the explanation unchanged: a correlation of exactly 1.
    assert result.correlation.max() < 0.9


def test_only_the_network_is_copied() -> None:
    class Holder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2))
            self.lock = threading.Lock()
            self.big = torch.zeros(1_000_000)  # not a buffer: data the module holds
            self.register_buffer("scale", torch.ones(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) * self.scale

    model = Holder()
    randomized = randomized_copy(model, example_inputs=torch.randn(2, 3, 2, 2))
    assert randomized.lock is model.lock and randomized.big is model.big
    assert randomized.scale is not model.scale and randomized.body[1].weight is not model.body[1].weight
    assert torch.equal(randomized.body[1].weight, model.body[1].weight)  # kept: only the top two are reset
    assert not torch.equal(randomized.body[3].weight, model.body[3].weight)
    assert not model._forward_pre_hooks and not model.body[1]._forward_pre_hooks  # the recording hooks are gone


def test_the_edge_map_ignores_the_model(batch) -> None:
    images, _ = batch
    edges = edge_map(images)
    assert edges.shape == (4, 1, *images.shape[-2:]) and (edges >= 0).all()
    assert torch.equal(edge_explainer(None, images, 0, steps=3), edges)


def test_igos_depends_on_the_weights_and_the_edge_map_does_not(trained_cnn, batch) -> None:
    images, labels = batch
    rng = torch.random.get_rng_state()
    igos_result = sanity_check(trained_cnn, images, labels, FAST)
    edge_result = sanity_check(trained_cnn, images, labels, explainer=edge_explainer)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert torch.equal(edge_result.correlation, torch.ones(4))
    # Measured: igos about 0.11 (0.04 to 0.15 per image) on this probe, the edge map exactly 1.
    assert igos_result.mean_correlation < 0.4
    assert igos_result.correlation.max() < 0.6
    assert igos_result.saliency.shape == igos_result.randomized_saliency.shape == (4, 1, *images.shape[-2:])


@pytest.fixture()
def workspace(tmp_path: Path, trained_cnn, probe_data) -> Path:
    torch.save(trained_cnn.state_dict(), tmp_path / "cnn_state.pt")
    save_probe(tmp_path / "probe.pt", probe_data.images[:4], probe_data.labels[:4], probe_data.mean, probe_data.std)
    return tmp_path


def _check(workspace: Path, monkeypatch, *extra: str) -> tuple[int, dict]:
    monkeypatch.chdir(workspace)
    code = main(["check", "--model", "lightning_igos.demo.synthetic:SmallCNN", "--checkpoint", "cnn_state.pt",
                 "--probe", "probe.pt", "--device", "cpu", "--iterations", "2", "--ig-steps", "4",
                 "--metric-steps", "8", "--sanity", "--report", "report.json", *extra])
    return code, json.loads((workspace / "report.json").read_text())


def test_check_sanity_passes_for_igos_and_reports_it(workspace, monkeypatch, capsys) -> None:
    code, report = _check(workspace, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    sanity = report["sanity"]
    assert set(sanity) == {"mean_correlation", "correlation", "max_correlation", "num_empty", "empty",
                           "reinitialized", "passed"}
    assert len(sanity["correlation"]) == 4 and sanity["max_correlation"] == 0.5 and sanity["passed"] is True
    assert sanity["num_empty"] == 0 and sanity["empty"] == []
    assert sanity["reinitialized"] == ["features.8", "classifier"]  # what the forward runs last
    assert "(re-initialised 2 modules: features.8, classifier)" in out
    assert sanity["mean_correlation"] < 0.4
    assert report["passed"] is True
    assert "sanity (model randomisation): mean Spearman" in out and "<= 0.5 pass" in out
    assert "mean Spearman" in render_markdown(report)
    assert '<p id="sanity">sanity (model randomisation): mean Spearman' in render_html(report, [])

    # A limit below the measured mean fails the check.
    code, failed = _check(workspace, monkeypatch, "--max-sanity-correlation", f"{sanity['mean_correlation'] - 0.01}")
    out = capsys.readouterr().out
    assert code == 1
    assert failed["passed"] is False and failed["sanity"]["passed"] is False
    assert failed["sanity"]["correlation"] == sanity["correlation"]
    assert "sanity check failed" in verdict_text(failed) and "FAIL" in out


ZERO_HEAD = """
from torch import nn

from lightning_igos.demo.synthetic import SmallCNN


class ZeroInitLinear(nn.Linear):
    def reset_parameters(self):
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class ZeroHeadCNN(SmallCNN):
    def __init__(self):
        super().__init__()
        self.classifier = ZeroInitLinear(self.classifier.in_features, self.classifier.out_features)
"""


def test_check_sanity_fails_when_every_randomised_explanation_is_empty(workspace, monkeypatch, capsys) -> None:
    # The randomised copy's head is zero-initialised: it explains nothing, and that is no pass.
    (workspace / "zero_head.py").write_text(ZERO_HEAD)
    monkeypatch.syspath_prepend(str(workspace))
    monkeypatch.chdir(workspace)
    code = main(["check", "--model", "zero_head:ZeroHeadCNN", "--checkpoint", "cnn_state.pt", "--probe", "probe.pt",
                 "--device", "cpu", "--iterations", "2", "--ig-steps", "4", "--metric-steps", "8", "--sanity",
                 "--report", "zero.json"])
    out = capsys.readouterr().out
    report = json.loads((workspace / "zero.json").read_text())
    assert code == 1, out
    sanity = report["sanity"]
    assert sanity["passed"] is False and report["passed"] is False
    assert sanity["mean_correlation"] is None and sanity["correlation"] == [None] * 4
    assert sanity["num_empty"] == 4 and sanity["empty"] == [0, 1, 2, 3]
    assert "4 of 4 images have no correlation" in out
    assert "no correlation" in verdict_text(report)


def test_check_sanity_fails_the_registered_edge_map_control(workspace, monkeypatch, capsys) -> None:
    code, report = _check(workspace, monkeypatch, "--method", "edge_map")
    out = capsys.readouterr().out
    assert code == 1, out
    assert report["settings"]["method"] == "edge_map"
    assert report["sanity"]["correlation"] == [1.0] * 4 and report["sanity"]["passed"] is False
    assert "sanity check failed" in verdict_text(report)


def test_without_sanity_the_report_has_no_sanity_block(workspace, monkeypatch, capsys) -> None:
    monkeypatch.chdir(workspace)
    code = main(["check", "--model", "lightning_igos.demo.synthetic:SmallCNN", "--checkpoint", "cnn_state.pt",
                 "--probe", "probe.pt", "--device", "cpu", "--iterations", "1", "--ig-steps", "2",
                 "--metric-steps", "4", "--report", "plain.json"])
    assert code == 0, capsys.readouterr()
    assert "sanity" not in json.loads((workspace / "plain.json").read_text())


def test_check_settings_validate_the_sanity_options() -> None:
    assert CheckSettings("m:M", "c", "p").sanity is False
    assert CheckSettings("m:M", "c", "p").max_sanity_correlation == 0.5
    with pytest.raises(TypeError, match="sanity"):
        CheckSettings("m:M", "c", "p", sanity="yes")
    with pytest.raises(TypeError, match="max_sanity_correlation"):
        CheckSettings("m:M", "c", "p", max_sanity_correlation=float("nan"))


def test_the_sanity_report_names_the_images_without_a_correlation() -> None:
    from lightning_igos.cli.report import sanity_report

    block = sanity_report(torch.tensor([0.2, math.nan, 0.4]), 0.5)
    assert block["mean_correlation"] == pytest.approx(0.3) and block["empty"] == [1] and block["num_empty"] == 1
    assert block["passed"] is False  # an empty explanation fails, as in the rest of the check
    assert sanity_report(torch.tensor([0.2, math.nan, 0.4]), 0.5, allow_empty=True)["passed"] is True
    assert sanity_report(torch.tensor([math.nan, math.nan]), 0.5, allow_empty=True)["passed"] is False

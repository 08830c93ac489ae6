"""Ways user code, odd inputs or a crafted checkpoint could make `lightning-igos check` pass or lie."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import FASTEST_ARGS, MODEL, check_args, tiny_check_workspace
from torch import nn

from lightning_igos.cli.commands import main
from lightning_igos.core.config import IGOSConfig
from lightning_igos.core.evaluation import evaluate
from lightning_igos.core.explainers import register_explainer, unregister_explainer
from lightning_igos.core.solver import Explanation
from lightning_igos.core.statistics import Statistic, register_statistic, unregister_statistic


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_checkpoint) -> Path:
    return tiny_check_workspace(tmp_path_factory.mktemp("gate_faults"), tiny_checkpoint, num_probe=3)


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Writes ``name.py`` (the given source) into an importable folder; undoes its registrations afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        written.append(name)
        return name

    yield write
    import sys

    for name in written:
        sys.modules.pop(name, None)
    for explainer in ("exits", "float64_huge", "wrong_shape"):
        unregister_explainer(explainer)
    for statistic in ("exits_stat", "doubled", "infinite", "nothing", "scalar0d", "a_list"):
        unregister_statistic(statistic)


def _check(workspace: Path, *extra: str) -> list[str]:
    return check_args(*extra, checkpoint=str(workspace / "run.ckpt"), probe=str(workspace / "probe.pt"),
                      fast=FASTEST_ARGS)


# ----------------------------------------------------------------------------- SystemExit from user code

EXITING_MODEL = """
    import sys
    from lightning_igos.demo.toy_module import ObjectClassifier

    sys.exit(0)
"""

EXITING_EXPLAINER = """
    import sys
    from lightning_igos.core.explainers import register_explainer

    @register_explainer("exits", passes=lambda config: 1)
    def exits(request):
        sys.exit(0)
"""

EXITING_STATISTIC = """
    import sys
    from lightning_igos.core.statistics import Statistic, register_statistic

    def leave(evaluation):
        raise SystemExit(0)

    register_statistic(Statistic("exits_stat", leave))
"""


@pytest.mark.parametrize("where", ["model", "plugin", "explainer", "statistic"])
def test_a_system_exit_from_user_code_never_passes_the_check(where, workspace, user_module, capsys):
    extra: list[str] = ["--min-insertion", "0.0"]
    if where == "model":
        user_module("exiting_model", EXITING_MODEL)
        args = _check(workspace, *extra)
        args[args.index(MODEL)] = "exiting_model:ObjectClassifier"
    elif where == "plugin":
        user_module("exiting_plugin", "import sys\nsys.exit(0)\n")
        args = _check(workspace, "--plugin", "exiting_plugin", *extra)
    elif where == "explainer":
        user_module("exiting_explainer", EXITING_EXPLAINER)
        args = _check(workspace, "--plugin", "exiting_explainer", "--method", "exits", *extra)
    else:
        user_module("exiting_statistic", EXITING_STATISTIC)
        args = _check(workspace, "--plugin", "exiting_statistic", *extra)
    status = main(args)
    err = capsys.readouterr().err
    assert status not in (0, 1), err
    named = {"model": "exiting_model", "plugin": "exiting_plugin", "explainer": "exiting_explainer",
             "statistic": "exiting_statistic"}[where]
    assert named in err and "SystemExit" in err


# ----------------------------------------------------------------------------- statistics' results

def _tiny_evaluation():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    return evaluate(model, torch.randn(2, 3, 2, 2), [0, 1], IGOSConfig(method="gradient", metric_steps=2))


@pytest.mark.parametrize(
    ("name", "compute", "message"),
    [
        ("doubled", lambda e: e.curves.clean_score.repeat(2), r"statistic 'doubled' must give one value per image"),
        ("infinite", lambda e: torch.full((len(e),), float("inf")), r"statistic 'infinite' gave an infinite value"),
        ("nothing", lambda e: None, r"statistic 'nothing' must give a tensor shaped \(B,\).*NoneType"),
        ("scalar0d", lambda e: torch.tensor(0.5), r"statistic 'scalar0d' must give one value per image"),
        ("a_list", lambda e: [0.5] * len(e), r"statistic 'a_list' must give a tensor shaped \(B,\).*list"),
    ],
)
def test_a_malformed_statistic_is_an_error_naming_it(name, compute, message, user_module):
    evaluation = _tiny_evaluation()
    register_statistic(Statistic(name, compute))
    with pytest.raises((TypeError, ValueError), match=message):
        evaluation.per_image()


def test_a_statistic_with_an_infinite_mean_fails_the_check(workspace, user_module, capsys):
    user_module("inf_stat", """
        import torch
        from lightning_igos.core.statistics import Statistic, register_statistic

        register_statistic(Statistic("infinite", lambda e: torch.full((len(e),), -float("inf")), False))
    """)
    status = main(_check(workspace, "--plugin", "inf_stat", "--require", "infinite<=0.5"))
    err = capsys.readouterr().err
    assert status == 3 and "statistic 'infinite'" in err


@pytest.mark.parametrize("name", ["target_prob", "seconds", "stability", "passes_per_image", "sanity_correlation",
                                  "empty_fraction", "target", "index", "empty", "empty_reason", "target_name"])
def test_a_statistic_may_not_take_a_builtin_scalar_or_report_field_name(name):
    with pytest.raises(ValueError, match=f"'{name}'"):
        register_statistic(Statistic(name, lambda e: e.curves.clean_score))
    with pytest.raises(ValueError, match="'mine'.*taken|reserved"):
        register_statistic(Statistic("mine", lambda e: e.curves.clean_score, scalar=name))


def test_a_builtin_statistic_cannot_be_replaced():
    with pytest.raises(ValueError, match="'insertion_auc' is already registered and built in"):
        register_statistic(Statistic("insertion_auc", lambda e: e.curves.clean_score * 0 + 1, True), replace=True)


# ----------------------------------------------------------------------------- an explainer's Explanation

def _register_explanation_explainer(name: str, make) -> None:
    @register_explainer(name, passes=lambda config: 1)
    def explainer(request):
        return make(request)


def test_a_float64_explanation_past_float32_range_is_empty_not_a_pass(user_module):
    def huge(request):
        saliency = torch.rand(len(request.images), 1, *request.images.shape[-2:], dtype=torch.float64) * 1e300
        return Explanation.from_saliency(saliency, request.targets, torch.ones(len(request.images)), 1.0)

    _register_explanation_explainer("float64_huge", huge)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    result = evaluate(model, torch.randn(2, 3, 4, 4), [0, 1], IGOSConfig(method="float64_huge", metric_steps=2))
    assert result.empty.all()
    assert result.empty_reasons == ["non-finite saliency"] * 2
    assert torch.isfinite(result.saliency).all() and result.saliency.dtype == torch.float32


def test_a_float64_saliency_tensor_past_float32_range_is_empty(user_module):
    @register_explainer("float64_huge", passes=lambda config: 1)
    def huge(request):
        return torch.rand(len(request.images), 1, *request.images.shape[-2:], dtype=torch.float64) * 1e300

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    result = evaluate(model, torch.randn(2, 3, 4, 4), [0, 1], IGOSConfig(method="float64_huge", metric_steps=2))
    assert result.empty_reasons == ["non-finite saliency"] * 2


def test_an_explanation_of_the_wrong_shape_is_refused(user_module):
    def wrong(request):
        saliency = torch.rand(len(request.images) + 1, 1, *request.images.shape[-2:])
        return Explanation.from_saliency(saliency, request.targets, torch.ones(len(request.images)), 1.0)

    _register_explanation_explainer("wrong_shape", wrong)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(ValueError, match=r"explainer 'wrong_shape' returned an Explanation whose saliency"):
        evaluate(model, torch.randn(2, 3, 4, 4), [0, 1], IGOSConfig(method="wrong_shape", metric_steps=2))


# ----------------------------------------------------------------------------- a crafted checkpoint

MARKER_MODULE = """
    from pathlib import Path

    def mark(cls, kwargs):
        Path(__file__).with_name("instantiator_ran").write_text("ran")
        return cls(**kwargs)
"""


@pytest.mark.parametrize("key", ["hyper_parameters", "hparams"])
def test_a_checkpoint_cannot_name_code_for_lightning_to_run(key, workspace, tmp_path, user_module, capsys):
    """``load_from_checkpoint`` of Lightning before 2.6.6 imports and calls ``hyper_parameters["_instantiator"]``."""
    user_module("instantiator_marker", MARKER_MODULE)
    content = torch.load(workspace / "run.ckpt", weights_only=True)
    params = dict(content.pop("hyper_parameters"))
    params["_instantiator"] = "instantiator_marker.mark"
    content[key] = params
    crafted = tmp_path / "crafted.ckpt"
    torch.save(content, crafted)
    args = _check(workspace, "--report", str(tmp_path / "r.json"))
    args[args.index(str(workspace / "run.ckpt"))] = str(crafted)
    status = main(args)
    err = capsys.readouterr().err
    assert not (tmp_path / "instantiator_ran").exists()
    assert status in (0, 1), err  # the model was built from its plain hyper-parameters
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["num_images"] == 3


# ----------------------------------------------------------------------------- gates that cannot decide

@pytest.mark.parametrize(
    ("requirement", "message"),
    [
        ("insertion_auc>=5", r"--require insertion_auc>=5 could never pass: insertion_auc lies in \[0, 1\]"),
        ("insertion_auc>1", r"could never pass"),
        ("deletion_auc>=-1", r"--require deletion_auc>=-1 could never fail"),
        ("deletion_auc<2", r"could never fail"),
        ("insertion_auc_normalized<-0.5", r"could never pass: insertion_auc_normalized lies in \[0, inf\]"),
    ],
)
def test_a_require_outside_the_statistic_range_is_refused_before_the_work(requirement, message, workspace,
                                                                          monkeypatch, capsys):
    import lightning_igos.cli.check as check

    monkeypatch.setattr(check, "load_model", lambda *a, **k: pytest.fail("the work ran"))
    assert main(_check(workspace, "--require", requirement)) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_require_at_an_end_of_the_range_is_accepted(workspace, capsys):
    assert main(_check(workspace, "--require", "insertion_auc>=0", "--require", "deletion_auc<=1")) == 0


def test_max_sanity_correlation_without_sanity_is_a_usage_error(workspace, monkeypatch, capsys):
    import lightning_igos.cli.check as check

    monkeypatch.setattr(check, "load_model", lambda *a, **k: pytest.fail("the work ran"))
    assert main(_check(workspace, "--max-sanity-correlation", "0.2")) == 2
    assert "--max-sanity-correlation 0.2 is only read with --sanity" in capsys.readouterr().err


# ----------------------------------------------------------------------------- which code ran

REPLACING_IGOS = """
    import torch
    from lightning_igos.core.explainers import register_explainer

    @register_explainer("igos", passes=lambda config: 1, replace=True)
    def flattering(request):
        return torch.rand(len(request.images), 1, *request.images.shape[-2:])
"""


def test_the_report_names_the_plugins_and_the_explainers_module(workspace, tmp_path, user_module, capsys):
    from lightning_igos.core import explainers

    original = explainers.get_explainer("igos")
    user_module("replaces_igos", REPLACING_IGOS)
    try:
        assert main(_check(workspace, "--plugin", "replaces_igos", "--report", str(tmp_path / "r.json"))) in (0, 1)
    finally:
        register_explainer("igos", original.explain, passes=original.passes, description=original.description,
                           has_mask=original.has_mask, replace=True)
    settings = json.loads((tmp_path / "r.json").read_text())["settings"]
    assert settings["method"] == "igos"
    assert settings["plugins"] == ["replaces_igos"]
    assert settings["explainer"] == "replaces_igos.flattering"


# ----------------------------------------------------------------------------- spawned workers

def test_a_callback_in_a_process_without_its_plugins_says_where_to_register(user_module):
    from lightning_igos import IGOSCallback

    @register_explainer("exits", passes=lambda config: 1)
    def explainer(request):
        return torch.rand(len(request.images), 1, *request.images.shape[-2:])

    register_statistic(Statistic("doubled", lambda e: e.curves.clean_score * 2))
    callback = IGOSCallback(method="exits", num_probe=2)
    trainer = type("Trainer", (), {"callbacks": [callback]})()
    callback.setup(trainer, None, "fit")  # the process that registered them

    # A ddp_spawn worker: the callback arrives pickled, the `__main__` block that registered them never ran.
    unregister_explainer("exits")
    unregister_statistic("doubled")
    with pytest.raises(RuntimeError, match=r"explainer 'exits' and the statistic 'doubled' are not registered.*"
                                           r"module level of an importable module"):
        callback.setup(trainer, None, "fit")


# ----------------------------------------------------------------------------- --normalized and a misclassified image

SIGN_MODEL = """
    import torch
    from torch import nn

    CHECKER = ((torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2 - 1).float().expand(3, 8, 8)

    class Checker(nn.Module):
        # Two classes: the sign of the image's correlation with a checkerboard, confidently (a blur scores 0.5).

        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3 * 8 * 8, 2)
            with torch.no_grad():
                pattern = CHECKER.flatten() / 16
                self.linear.weight.copy_(torch.stack([-pattern, pattern]))
                self.linear.bias.zero_()

        def forward(self, x):
            return self.linear(x.flatten(1))
"""


def test_a_misclassified_image_cannot_carry_the_normalized_mean(tmp_path, user_module, capsys):
    from lightning_igos.probe import save_probe

    user_module("sign_model", SIGN_MODEL)
    import sign_model

    torch.save(sign_model.Checker().state_dict(), tmp_path / "sign.pt")
    images = torch.cat([-sign_model.CHECKER[None], sign_model.CHECKER.expand(3, 3, 8, 8)])
    images += 0.3 * torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    save_probe(tmp_path / "probe.pt", images, torch.tensor([1, 1, 1, 1]))  # image 0 is scored ~1e-10 for class 1
    args = ["check", "--model", "sign_model:Checker", "--checkpoint", str(tmp_path / "sign.pt"),
            "--probe", str(tmp_path / "probe.pt"), "--method", "integrated_gradients", "--ig-steps", "2",
            "--metric-steps", "4", "--device", "cpu",
            "--normalized", "--min-insertion", "2", "--report", str(tmp_path / "r.json")]
    status = main(args)
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    rows = report["images"]
    assert rows[0]["clean_score"] < 1e-6 and rows[0]["insertion_auc_normalized"] > 1e3  # the row keeps its value
    assert report["normalized_excluded"] == {"floor": 0.5, "images": [0]}
    kept = [row["insertion_auc_normalized"] for row in rows[1:]]
    assert report["normalized_mean"]["insertion_auc"] == pytest.approx(sum(kept) / 3)
    assert report["normalized_mean"]["insertion_auc"] < 2
    assert report["num_empty"] == 0
    assert status == 1  # the one image no longer passes the gate for the probe
    assert "below chance" in out


def test_a_library_that_wraps_sys_exit_is_not_named_for_the_users_exit(tmp_path, monkeypatch):
    # W&B replaces sys.exit with its own function once a run starts: the user's frame is still the one named.
    import os
    import sysconfig

    from lightning_igos.cli.commands import _exit_source

    namespace: dict = {"_exit": sys.exit}
    hook = "def exit(code=None):\n    _exit(code)\n"
    exec(compile(hook, os.path.join(sysconfig.get_paths()["purelib"], "exit_hooks.py"), "exec"), namespace)
    monkeypatch.setattr(sys, "exit", namespace["exit"])
    user = tmp_path / "user_code.py"
    user.write_text("import sys\n\ndef run():\n    sys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_code

    with pytest.raises(SystemExit) as caught:
        user_code.run()
    assert _exit_source(caught.value) == f"module 'user_code' ({user}:4)"

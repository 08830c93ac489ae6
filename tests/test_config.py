"""IGOSConfig owns the defaults and the checks; igos, IGOSCallback and the check command derive from it."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from lightning_igos import IGOSCallback, igos
from lightning_igos.cli import build_parser
from lightning_igos.cli.commands import CONFIG_OPTIONS, settings_from_args
from lightning_igos.core.config import DEFAULTS, SOLVER_FIELDS, IGOSConfig

FIELDS = {f.name: f.default for f in dataclasses.fields(IGOSConfig)}


def _defaults(function) -> dict:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not p.empty}


def test_the_final_default_values() -> None:
    """The defaults themselves (tuned on real classifiers): changing one is a deliberate decision."""
    assert FIELDS == {
        "method": "igos", "mask_size": None, "iterations": 4, "ig_steps": 10, "l1": 0.1, "tv": 2.0,
        "tv_power": 2.0, "noise_std": 0.2, "baseline": "blur", "initial_step": 1.0, "tolerance": 1e-5,
        "patience": 3, "normalize_score": True, "autocast_dtype": None, "score_fn": None,
        "max_batch_size": None, "substrate": None, "deletion_substrate": None,
        "insertion_substrate": None, "metric_steps": 50, "seed": 0,
        "objective": "log_complement", "quadrature": "riemann", "road": False,
    }


def test_igos_takes_every_solver_field_with_its_default() -> None:
    solver = _defaults(igos)
    solver.pop("generator")
    assert set(solver) == set(SOLVER_FIELDS)
    assert solver == {name: FIELDS[name] for name in SOLVER_FIELDS}


def test_the_callback_takes_every_field_with_its_default() -> None:
    callback = _defaults(IGOSCallback)
    assert {name: callback[name] for name in FIELDS} == FIELDS
    assert IGOSCallback().config == DEFAULTS


def test_the_check_command_defaults_are_the_config() -> None:
    args = build_parser().parse_args(["check", "--model", "m:M", "--checkpoint", "c", "--probe", "p"])
    assert set(CONFIG_OPTIONS) <= set(FIELDS)
    # Fields that cannot be given as text: a dtype, a callable.
    assert set(FIELDS) - set(CONFIG_OPTIONS) == {"autocast_dtype", "score_fn"}
    assert settings_from_args(args).config == DEFAULTS


@pytest.mark.parametrize(
    ("changes", "error", "argument"),
    [
        ({"iterations": 2.5}, TypeError, "iterations"),
        ({"ig_steps": 0}, ValueError, "ig_steps"),
        ({"mask_size": (2.9, 3.7)}, TypeError, "mask_size"),
        ({"initial_step": 0}, ValueError, "initial_step"),
        ({"initial_step": "1"}, TypeError, "initial_step"),
        ({"tolerance": 0.0}, ValueError, "tolerance"),
        ({"substrate": "noise"}, ValueError, "substrate"),
        ({"method": "gradcam"}, ValueError, "method"),
    ],
)
def test_one_rule_everywhere(changes: dict, error: type, argument: str) -> None:
    """The config, igos and the callback reject a value with the same error and message."""
    with pytest.raises(error, match=f"`{argument}`") as from_config:
        IGOSConfig(**changes)
    with pytest.raises(error) as from_callback:
        IGOSCallback(**changes)
    assert str(from_config.value) == str(from_callback.value)
    if set(changes) <= set(SOLVER_FIELDS):
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        with pytest.raises(error) as from_igos:
            igos(model, torch.zeros(1, 3, 4, 4), 0, **changes)
        assert str(from_config.value) == str(from_igos.value)


def test_mask_size_is_kept_as_a_pair_and_replace_validates() -> None:
    assert IGOSConfig(mask_size=7).mask_size == (7, 7)
    with pytest.raises(ValueError, match="metric_steps"):
        DEFAULTS.replace(metric_steps=0)


def test_the_check_options_are_generated_from_the_config_fields() -> None:
    from lightning_igos.cli.commands import CONFIG_OPTIONS, build_parser
    from lightning_igos.cli.options import config_options

    declared = [f for f in dataclasses.fields(IGOSConfig) if f.metadata]
    assert CONFIG_OPTIONS == tuple(f.name for f in declared)
    assert {f.name for f in dataclasses.fields(IGOSConfig)} - set(CONFIG_OPTIONS) == {"autocast_dtype", "score_fn"}
    check = build_parser()._subparsers._group_actions[0].choices["check"]
    actions = {a.dest: a for a in check._actions}
    for option, field in zip(config_options(), declared):
        assert option.default == field.default and option.help == field.metadata["help"], field.name
        assert actions[field.name].option_strings[0] == "--" + field.name.replace("_", "-")
        assert field.metadata["help"].split("{")[0] in actions[field.name].help

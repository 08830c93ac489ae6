"""The ``lightning-igos`` command: an explanation-quality gate for trained checkpoints.

This module parses the arguments and prints; :func:`lightning_igos.cli.check.run_check`
does the work with typed :class:`~lightning_igos.cli.check.CheckSettings`.
``lightning-igos check`` loads a model from a checkpoint, explains a saved probe
batch with I-GOS, scores each explanation with the causal insertion and deletion
AUCs, prints a table, optionally writes a JSON report and PNG panels, and exits

* 0 when every threshold holds (or none was given) and no explanation is empty (or ``--allow-empty``),
* 1 when a threshold fails or an explanation is empty,
* 2 for a usage or input error (one line on stderr, no traceback unless ``--verbose``),
* 3 for an unexpected failure (a bug or the environment, e.g. out of memory).

``lightning-igos demo [ARGS]`` runs the demo; ``lightning-igos --version`` prints the version.

Example:
    >>> main(["check", "--model", "no_such_package.models:Net", "--checkpoint", "missing.ckpt",
    ...       "--probe", "missing.pt"])  # one line on stderr: the checkpoint does not exist
    2
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.util
import math
import operator
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning_igos
from lightning_igos.cli.errors import InputError

if TYPE_CHECKING:
    from lightning_igos.cli.settings import CheckSettings

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

# --------------------------------------------------------------------------- facts read from the source
#
# ``--version`` and ``--help`` answer without importing torch. The option defaults and choices
# live in modules that import torch (``IGOSConfig``, ``BASELINE_KINDS``, ``MAX_PROBE_ELEMENTS``),
# so the parser reads them from those modules' source text, where each is a literal, and never
# keeps a copy. A parsed ``check`` command gets its defaults from the imported modules
# themselves (``_fill_defaults``), so what runs never depends on this reading; a value that is
# not a literal in the source is taken from the imported module instead.

_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow}


def _literal(node: ast.expr) -> Any:
    """The value of a literal expression; also numbers combined with ``+ - * **`` (``64 * 3 * 512 * 512``)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _literal(node.left), _literal(node.right)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (left, right)):
            raise ValueError("not a number")
        return _ARITHMETIC[type(node.op)](left, right)
    return ast.literal_eval(node)


@functools.cache
def _source_tree(module: str) -> ast.Module:
    spec = importlib.util.find_spec(module)  # imports the parent packages only (they import no torch)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise LookupError(f"no source for {module}")
    return ast.parse(Path(spec.origin).read_text(encoding="utf-8"), filename=spec.origin)


def _assigned(body: list[ast.stmt], name: str) -> ast.expr:
    """The expression last assigned to ``name`` at the top level of ``body`` (a dataclass ``field(default=...)``
    counts as its default)."""
    found = None
    for statement in body:
        if isinstance(statement, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in statement.targets):
                found = statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            if isinstance(statement.target, ast.Name) and statement.target.id == name:
                found = statement.value
    if isinstance(found, ast.Call):
        default = [k.value for k in found.keywords if k.arg == "default"]
        if default:
            found = default[0]
    if found is None:
        raise LookupError(name)
    return found


def _imported_value(module: str, name: str, owner: str | None) -> Any:
    imported = importlib.import_module(module)
    if owner is None:
        return getattr(imported, name)
    cls = getattr(imported, owner)
    if dataclasses.is_dataclass(cls):
        return {f.name: f.default for f in dataclasses.fields(cls)}[name]
    return getattr(cls, name)


@functools.cache
def source_value(module: str, name: str, owner: str | None = None) -> Any:
    """The value of ``module.name`` (or of the class attribute ``module.owner.name``) read from its source.

    Falls back on importing ``module`` when the value is not a literal there.

    Example:
        >>> source_value("lightning_igos.core.config", "method", "IGOSConfig")
        'igos'
        >>> source_value("lightning_igos.core.explainers", "BUILTIN_EXPLAINERS")[:2]
        ('igos', 'igos++')
        >>> source_value("lightning_igos.probe", "MAX_PROBE_ELEMENTS")
        50331648
    """
    try:
        body = _source_tree(module).body
        if owner is not None:
            classes = [s for s in body if isinstance(s, ast.ClassDef) and s.name == owner]
            if not classes:
                raise LookupError(owner)
            body = classes[-1].body
        return _literal(_assigned(body, name))
    except (LookupError, ValueError, TypeError, SyntaxError, OSError):
        return _imported_value(module, name, owner)


def _config_default(name: str) -> Any:
    """The default of the ``IGOSConfig`` field ``name``, read without importing torch."""
    return source_value("lightning_igos.core.config", name, "IGOSConfig")


def _config_choices(name: str) -> tuple[str, ...]:
    return tuple(source_value("lightning_igos.core.config", name))


#: The program name in usage lines and messages (the report's, where the check's header uses it).
PROG: str = source_value("lightning_igos.cli.report", "PROG")

# --------------------------------------------------------------------------- arguments


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return value


def _mask_size(value: str) -> int | tuple[int, int]:
    parts = re.split(r"[x,]", value.strip().lower())
    if not all(p.isdigit() and int(p) > 0 for p in parts) or len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"must be a positive integer N or HxW, got {value!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return number


def _non_negative(value: str) -> float:
    number = _number(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value!r}")
    return number


def _positive_number(value: str) -> float:
    number = _number(value)
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value!r}")
    return number


def _positive_int(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value!r}")
    return int(value)


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value!r}")
    return int(value)


#: Seeds are 64-bit signed integers (torch generators, the JSON report): 0 <= seed < 2**63.
SEED_LIMIT = 2**63


def _seed(value: str) -> int:
    """A seed: a decimal integer from 0 to 2**63 - 1."""
    if not re.fullmatch(r"[0-9]+", value.strip()) or int(value) >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to 2**63 - 1 ({SEED_LIMIT - 1}), got {value!r}")
    return int(value)


def _requirement(value: str) -> Any:
    """``NAME>=X``: parsed without importing torch; the name is checked against the run's statistics later."""
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*", value)
    if match is None:
        raise argparse.ArgumentTypeError(f"must be NAME>=X, NAME<=X, NAME>X or NAME<X (e.g. road_lerf>=0.4), "
                                         f"got {value!r}")
    _number(match.group(3))
    return value


class _Parser(argparse.ArgumentParser):
    """The top-level parser: a parsed ``check`` gets every option it was not given from the imported defaults."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "command", None) == "check":
            _fill_defaults(parsed)
        return parsed, extras


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-igos`` (subcommands ``check`` and ``demo``).

    Building it and asking it for ``--version`` or ``--help`` imports no torch.
    """
    parser = _Parser(
        prog=PROG,
        description="I-GOS explanations and causal insertion/deletion AUCs for image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {lightning_igos.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=argparse.ArgumentParser)
    _add_check_parser(commands)
    commands.add_parser("demo", help="run the demo (arguments are passed to it; see `lightning-igos demo --help`)")
    return parser


def _add_check_parser(commands: argparse._SubParsersAction) -> None:
    # Options whose default lives in a torch-importing module are given default=SUPPRESS here and
    # filled in by _fill_defaults after parsing; their help shows the default read from the source.
    unset = argparse.SUPPRESS
    check = commands.add_parser(
        "check",
        help="explain a probe batch with a trained checkpoint and gate on insertion/deletion AUC",
        description=(
            "Explain the probe images with I-GOS, score the explanations with the causal insertion "
            "and deletion AUCs and compare the means with thresholds. Exit status: 0 pass, "
            "1 a threshold failed or an explanation is empty, 2 usage or input error, 3 unexpected failure."
        ),
    )
    inputs = check.add_argument_group("inputs")
    inputs.add_argument("--model", required=True, metavar="MODULE:CLASS",
                        help="the model class, e.g. my_package.models:Classifier (a LightningModule is loaded "
                             "with load_from_checkpoint; a plain nn.Module is built without arguments and "
                             "given the checkpoint's state dict)")
    inputs.add_argument("--checkpoint", required=True, type=Path, metavar="FILE",
                        help="Lightning checkpoint (.ckpt) or a file holding a state dict")
    inputs.add_argument("--probe", required=True, type=Path, metavar="FILE",
                        help="probe file written by lightning_igos.probe.save_probe")
    inputs.add_argument("--class-names", type=Path, metavar="FILE",
                        help="class names to show next to the indices: one per line (line 1 is class 0), or a JSON "
                             "list or {index: name} object (default: the model's class_names/classes attribute)")
    inputs.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first, e.g. one that registers an explainer (register_explainer) or a "
                             "statistic (register_statistic); repeatable")
    inputs.add_argument("--device", type=_device_name, default="auto",
                        help="auto (cuda when available), cpu, cuda, cuda:N or mps (default: auto)")
    max_elements = source_value("lightning_igos.probe", "MAX_PROBE_ELEMENTS")
    inputs.add_argument("--max-probe-elements", type=_positive_int, default=unset, metavar="N",
                        help="the most image elements (B*C*H*W) the probe may hold; a larger probe is an input error "
                             f"(default: {max_elements}, 64 images of 3x512x512)")

    gate = check.add_argument_group("thresholds")
    gate.add_argument("--min-insertion", type=_number, metavar="X",
                      help="fail unless the mean insertion AUC is >= X (higher is better)")
    gate.add_argument("--max-deletion", type=_number, metavar="Y",
                      help="fail unless the mean deletion AUC is <= Y (lower is better)")
    gate.add_argument("--require", type=_requirement, action="append", default=[], metavar="NAME>=X",
                      help="fail unless the mean of the reported statistic NAME satisfies the comparison "
                           "(>=, <=, >, <), e.g. road_lerf>=0.4 or pointing>=0.8; repeatable; an unknown NAME "
                           "lists the known ones")
    gate.add_argument("--normalized", action="store_true",
                      help="compare the thresholds with the AUCs divided by each image's clean probability")
    gate.add_argument("--allow-empty", action="store_true",
                      help="pass although some explanations are empty (a non-finite gradient, or a mask that never "
                           "moved); by default one empty explanation fails the check")
    gate.add_argument("--sanity", action="store_true",
                      help="also run the model-randomisation sanity check: explain the probe again with the head "
                           "and last blocks re-initialised and fail when the mean Spearman correlation of the two "
                           "explanations is above --max-sanity-correlation (doubles the explaining cost)")
    max_sanity = source_value("lightning_igos.cli.settings", "max_sanity_correlation", "CheckSettings")
    gate.add_argument("--max-sanity-correlation", type=_number, default=unset, metavar="X",
                      help=f"with --sanity, the highest mean Spearman correlation that passes (default: {max_sanity})")

    outputs = check.add_argument_group("outputs")
    outputs.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report here")
    outputs.add_argument("--images", type=Path, metavar="DIR",
                         help="write probe_<i>.png panels and overlays.png here")
    outputs.add_argument("--html", type=Path, metavar="FILE",
                         help="write one self-contained HTML report here (verdict, thresholds, table, every panel, "
                              "settings; images embedded)")
    outputs.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")

    # Every default comes from IGOSConfig; "dest" is the IGOSConfig field each option sets.
    d = _config_default
    baselines = tuple(source_value("lightning_igos.core.baselines", "BASELINE_KINDS"))
    solver = check.add_argument_group("solver and metric options (defaults as in igos and IGOSCallback)")
    builtin = ", ".join(source_value("lightning_igos.core.explainers", "BUILTIN_EXPLAINERS"))
    solver.add_argument("--method", default=unset, metavar="NAME",
                        help=f"the explainer: {builtin}, or one a --plugin module registers "
                             f"(default: {d('method')})")
    solver.add_argument("--iterations", type=_count, default=unset,
                        help=f"descent iterations, at most (default: {d('iterations')})")
    solver.add_argument("--ig-steps", type=_positive_int, default=unset,
                        help=f"integrated-gradient steps (default: {d('ig_steps')})")
    solver.add_argument("--mask-size", type=_mask_size, default=unset, metavar="N|HxW",
                        help="mask resolution (default: " + (
                            "the image's, one cell per pixel" if d("mask_size") is None else str(d("mask_size"))) + ")")
    solver.add_argument("--l1", type=_non_negative, default=unset, help=f"L1 weight (default: {d('l1')})")
    solver.add_argument("--tv", type=_non_negative, default=unset,
                        help=f"total variation weight at a 28x28 mask (default: {d('tv')})")
    solver.add_argument("--tv-power", type=_non_negative, default=unset,
                        help=f"total variation exponent (default: {d('tv_power')})")
    solver.add_argument("--normalize-score", action=argparse.BooleanOptionalAction, default=unset,
                        help="divide the objective's score by the clean score, so --l1/--tv mean the same at any "
                             f"confidence (default: {'on' if d('normalize_score') else 'off'})")
    solver.add_argument("--objective", choices=_config_choices("OBJECTIVES"), default=unset,
                        help="what the mask removes: the target's probability, or -log(1 - p), whose gradient "
                             f"does not vanish on confident images (default: {d('objective')})")
    solver.add_argument("--quadrature", choices=_config_choices("QUADRATURES"), default=unset,
                        help=f"points and weights of the integrated gradient (default: {d('quadrature')})")
    solver.add_argument("--noise-std", type=_non_negative, default=unset,
                        help=f"integration noise std in input units (default: {d('noise_std')})")
    solver.add_argument("--baseline", choices=baselines, default=unset,
                        help=f"solver baseline (default: {d('baseline')})")
    solver.add_argument("--initial-step", type=_positive_number, default=unset,
                        help=f"the first line-search trial moves the largest mask cell this much "
                             f"(default: {d('initial_step')})")
    solver.add_argument("--tolerance", type=_positive_number, default=unset,
                        help=f"line searches give up below this change of a mask cell (default: {d('tolerance'):g})")
    solver.add_argument("--patience", type=_count, default=unset,
                        help="an image stops after this many failed line searches in a row "
                             f"(default: {d('patience') or 0}; 0: never)")
    solver.add_argument("--substrate", choices=baselines, default=unset,
                        help=f"what the metrics insert into / delete to (default: {d('substrate')})")
    solver.add_argument("--metric-steps", type=_positive_int, default=unset,
                        help=f"points on each insertion/deletion curve minus one (default: {d('metric_steps')})")
    solver.add_argument("--max-batch-size", type=_positive_int, default=unset,
                        help="images per forward pass (default: 32 on CPU, 64 on CUDA)")
    solver.add_argument("--seed", type=_seed, default=unset,
                        help=f"seed of the integration noise, 0 to 2**63 - 1 (default: {d('seed')})")
    solver.add_argument("--road", action=argparse.BooleanOptionalAction, default=unset,
                        help="also report the ROAD MoRF/LeRF areas and their gap (noisy linear imputation, "
                             "about 2.2x the insertion/deletion curves' cost on the CPU; "
                             f"default: {'on' if d('road') else 'off'})")


def _fill_defaults(args: argparse.Namespace) -> None:
    """Set each ``check`` option that was not given to its default, from the imported modules (imports torch)."""
    from lightning_igos import probe
    from lightning_igos.core.config import DEFAULTS

    defaults = {name: getattr(DEFAULTS, name) for name in CONFIG_OPTIONS}
    defaults["patience"] = DEFAULTS.patience or 0  # 0 on the command line: never stop early
    defaults["max_probe_elements"] = probe.MAX_PROBE_ELEMENTS
    defaults["max_sanity_correlation"] = _imported_value("lightning_igos.cli.settings", "max_sanity_correlation",
                                                         "CheckSettings")
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)


#: The IGOSConfig fields set on the command line (the parser's dest names).
CONFIG_OPTIONS = (
    "method", "iterations", "ig_steps", "mask_size", "l1", "tv", "tv_power", "normalize_score", "noise_std",
    "baseline", "initial_step", "tolerance", "patience", "substrate", "metric_steps", "max_batch_size", "seed",
    "objective", "quadrature", "road",
)


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The typed settings of ``check`` from parsed arguments; a bad option value is an :class:`InputError`."""
    from lightning_igos.cli.check import import_plugins
    from lightning_igos.cli.settings import CheckSettings, parse_requirement
    from lightning_igos.core.config import IGOSConfig

    _fill_defaults(args)  # a namespace made elsewhere than by build_parser().parse_args
    plugins = tuple(getattr(args, "plugin", None) or ())
    import_plugins(plugins)  # before the config: a plugin's explainer is a valid --method
    options = {name: getattr(args, name) for name in CONFIG_OPTIONS}
    options["patience"] = options["patience"] or None  # 0 on the command line: never stop early
    try:
        config = IGOSConfig(**options)
    except (TypeError, ValueError) as err:
        raise InputError(str(err).replace("`", "")) from err
    return CheckSettings(
        model=args.model, checkpoint=args.checkpoint, probe=args.probe, device=args.device,
        min_insertion=args.min_insertion, max_deletion=args.max_deletion, normalized=args.normalized,
        report=args.report, images=args.images, verbose=args.verbose, config=config,
        html=args.html, class_names=args.class_names, allow_empty=args.allow_empty,
        max_probe_elements=args.max_probe_elements, sanity=args.sanity,
        max_sanity_correlation=args.max_sanity_correlation,
        require=tuple(parse_requirement(text) for text in getattr(args, "require", None) or ()), plugins=plugins,
    )


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-igos`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> main(["--version"])
        lightning-igos 0.1.0
        0
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["demo"]:
        return _run_demo(args_list[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exit_:
        return _exit_code(exit_)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: a command is required (check or demo)", file=sys.stderr)
        return EXIT_USAGE
    return _guarded(lambda: _check(args), verbose=args.verbose)


def _check(args: argparse.Namespace) -> int:
    """``check``: typed settings from the arguments, the run, the printed table; 0 pass, 1 fail."""
    from lightning_igos.cli.check import run_check
    from lightning_igos.cli.report import format_table

    result = run_check(settings_from_args(args))
    print(format_table(result.report))
    return EXIT_PASS if result.passed else EXIT_FAIL


def _exit_code(exit_: SystemExit) -> int:
    code = exit_.code
    if code is None:
        return 0
    return code if isinstance(code, int) else EXIT_USAGE


def _run_demo(argv: list[str]) -> int:
    """``lightning_igos.demo.main(argv)``; its own errors keep their tracebacks (it is a demo)."""
    try:
        from lightning_igos.demo import main as demo_main
    except ImportError as err:
        print(f"{PROG}: error: the demo is not available: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = demo_main(argv, prog=f"{PROG} demo")
    except SystemExit as exit_:
        return _exit_code(exit_)
    return int(result or 0)


def _guarded(run: Any, *, verbose: bool) -> int:
    """Run ``run()``; input errors become exit 2 and anything else exit 3, each with one line."""
    try:
        return run()
    except InputError as err:
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(str(err))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # the last resort: one line instead of a traceback in CI logs
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run with --verbose for the traceback)"
        print(f"{PROG}: error: unexpected {type(err).__name__}: {_one_line(str(err))}{hint}", file=sys.stderr)
        return EXIT_INTERNAL


def _one_line(message: str, limit: int = 500) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."

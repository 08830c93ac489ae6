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
import math
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning_igos
from lightning_igos.cli.check import CheckSettings, run_check
from lightning_igos.cli.errors import InputError
from lightning_igos.cli.report import PROG, format_table
from lightning_igos.core.baselines import BASELINE_KINDS
from lightning_igos.core.config import DEFAULTS, METHODS, OBJECTIVES, QUADRATURES, IGOSConfig
from lightning_igos.probe import MAX_PROBE_ELEMENTS

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``lightning-igos`` (subcommands ``check`` and ``demo``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="I-GOS explanations and causal insertion/deletion AUCs for image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {lightning_igos.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_check_parser(commands)
    commands.add_parser("demo", help="run the demo (arguments are passed to it; see `lightning-igos demo --help`)")
    return parser


def _add_check_parser(commands: argparse._SubParsersAction) -> None:
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
    inputs.add_argument("--device", type=_device_name, default="auto",
                        help="auto (cuda when available), cpu, cuda or cuda:N (default: auto)")
    inputs.add_argument("--max-probe-elements", type=_positive_int, default=MAX_PROBE_ELEMENTS, metavar="N",
                        help="the most image elements (B*C*H*W) the probe may hold; a larger probe is an input error "
                             "(default: %(default)s, 64 images of 3x512x512)")

    gate = check.add_argument_group("thresholds")
    gate.add_argument("--min-insertion", type=_number, metavar="X",
                      help="fail unless the mean insertion AUC is >= X (higher is better)")
    gate.add_argument("--max-deletion", type=_number, metavar="Y",
                      help="fail unless the mean deletion AUC is <= Y (lower is better)")
    gate.add_argument("--normalized", action="store_true",
                      help="compare the thresholds with the AUCs divided by each image's clean probability")
    gate.add_argument("--allow-empty", action="store_true",
                      help="pass although some explanations are empty (a non-finite gradient, or a mask that never "
                           "moved); by default one empty explanation fails the check")

    outputs = check.add_argument_group("outputs")
    outputs.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report here")
    outputs.add_argument("--images", type=Path, metavar="DIR",
                         help="write probe_<i>.png panels and overlays.png here")
    outputs.add_argument("--html", type=Path, metavar="FILE",
                         help="write one self-contained HTML report here (verdict, thresholds, table, every panel, "
                              "settings; images embedded)")
    outputs.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")

    # Every default comes from IGOSConfig; "dest" is the IGOSConfig field each option sets.
    d = DEFAULTS
    solver = check.add_argument_group("solver and metric options (defaults as in igos and IGOSCallback)")
    solver.add_argument("--method", choices=METHODS, default=d.method, help="default: %(default)s")
    solver.add_argument("--iterations", type=_count, default=d.iterations,
                        help="descent iterations, at most (default: %(default)s)")
    solver.add_argument("--ig-steps", type=_positive_int, default=d.ig_steps,
                        help="integrated-gradient steps (default: %(default)s)")
    solver.add_argument("--mask-size", type=_mask_size, default=d.mask_size, metavar="N|HxW",
                        help="mask resolution (default: the image's, one cell per pixel)")
    solver.add_argument("--l1", type=_non_negative, default=d.l1, help="L1 weight (default: %(default)s)")
    solver.add_argument("--tv", type=_non_negative, default=d.tv,
                        help="total variation weight at a 28x28 mask (default: %(default)s)")
    solver.add_argument("--tv-power", type=_non_negative, default=d.tv_power,
                        help="total variation exponent (default: %(default)s)")
    solver.add_argument("--normalize-score", action=argparse.BooleanOptionalAction, default=d.normalize_score,
                        help="divide the objective's score by the clean score, so --l1/--tv mean the same at any "
                             "confidence (default: on)")
    solver.add_argument("--objective", choices=OBJECTIVES, default=d.objective,
                        help="what the mask removes: the target's probability, or -log(1 - p), whose gradient "
                             "does not vanish on confident images (default: %(default)s)")
    solver.add_argument("--quadrature", choices=QUADRATURES, default=d.quadrature,
                        help="points and weights of the integrated gradient (default: %(default)s)")
    solver.add_argument("--noise-std", type=_non_negative, default=d.noise_std,
                        help="integration noise std in input units (default: %(default)s)")
    solver.add_argument("--baseline", choices=BASELINE_KINDS, default=d.baseline,
                        help="solver baseline (default: %(default)s)")
    solver.add_argument("--initial-step", type=_positive_number, default=d.initial_step,
                        help="the first line-search trial moves the largest mask cell this much (default: %(default)s)")
    solver.add_argument("--tolerance", type=_positive_number, default=d.tolerance,
                        help="line searches give up below this change of a mask cell (default: %(default)g)")
    solver.add_argument("--patience", type=_count, default=d.patience or 0,
                        help="an image stops after this many failed line searches in a row "
                             "(default: %(default)s; 0: never)")
    solver.add_argument("--substrate", choices=BASELINE_KINDS, default=d.substrate,
                        help="what the metrics insert into / delete to (default: %(default)s)")
    solver.add_argument("--metric-steps", type=_positive_int, default=d.metric_steps,
                        help="points on each insertion/deletion curve minus one (default: %(default)s)")
    solver.add_argument("--max-batch-size", type=_positive_int, default=d.max_batch_size,
                        help="images per forward pass (default: 32 on CPU, 64 on CUDA)")
    solver.add_argument("--seed", type=_seed, default=d.seed,
                        help="seed of the integration noise, 0 to 2**63 - 1 (default: %(default)s)")


#: The IGOSConfig fields set on the command line (the parser's dest names).
CONFIG_OPTIONS = (
    "method", "iterations", "ig_steps", "mask_size", "l1", "tv", "tv_power", "normalize_score", "noise_std",
    "baseline", "initial_step", "tolerance", "patience", "substrate", "metric_steps", "max_batch_size", "seed",
    "objective", "quadrature",
)


def settings_from_args(args: argparse.Namespace) -> CheckSettings:
    """The typed settings of ``check`` from parsed arguments; a bad option value is an :class:`InputError`."""
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
        max_probe_elements=args.max_probe_elements,
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

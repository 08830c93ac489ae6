"""The ``lightning-igos`` command: an explanation-quality gate for trained checkpoints.

``lightning-igos check`` loads a model from a checkpoint, explains a saved probe
batch with I-GOS, scores each explanation with the causal insertion and deletion
AUCs, prints a table, optionally writes a JSON report and PNG panels, and exits

* 0 when every threshold holds (or none was given),
* 1 when a threshold fails,
* 2 for a usage or input error (one line on stderr, no traceback unless ``--verbose``),
* 3 for an unexpected failure (a bug or the environment, e.g. out of memory).

``lightning-igos demo [ARGS]`` runs the demo; ``lightning-igos --version`` prints the version.

Example:
    >>> main(["check", "--model", "no_such_package.models:Net", "--checkpoint", "missing.ckpt",
    ...       "--probe", "missing.pt"])  # doctest: +SKIP
    2
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import re
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import lightning_igos
from lightning_igos.cli.errors import InputError
from lightning_igos.cli.model_loading import check_input_file, import_model_class, load_model
from lightning_igos.cli.report import (
    PROG,
    ProgressLine,
    build_report,
    check_images_folder,
    check_report_path,
    display_normalisation,
    format_table,
    write_images,
    write_report,
)
from lightning_igos.core.causal import CausalCurves, causal_curves
from lightning_igos.core.runtime import default_max_batch_size, evaluation_mode, model_input_dtype
from lightning_igos.core.solver import METHODS, SOLVER_DEFAULTS, Explanation, check_solver_options, igos
from lightning_igos.core.validation import check_mask_size
from lightning_igos.probe import Probe, load_probe

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

BASELINE_CHOICES = ("blur", "zeros", "mean")


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
            "1 a threshold failed, 2 usage or input error, 3 unexpected failure."
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
    inputs.add_argument("--device", type=_device_name, default="auto",
                        help="auto (cuda when available), cpu, cuda or cuda:N (default: auto)")

    gate = check.add_argument_group("thresholds")
    gate.add_argument("--min-insertion", type=_number, metavar="X",
                      help="fail unless the mean insertion AUC is >= X (higher is better)")
    gate.add_argument("--max-deletion", type=_number, metavar="Y",
                      help="fail unless the mean deletion AUC is <= Y (lower is better)")
    gate.add_argument("--normalized", action="store_true",
                      help="compare the thresholds with the AUCs divided by each image's clean probability")

    outputs = check.add_argument_group("outputs")
    outputs.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report here")
    outputs.add_argument("--images", type=Path, metavar="DIR",
                         help="write probe_<i>.png panels and overlays.png here")
    outputs.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")

    solver = check.add_argument_group("solver and metric options (defaults as in igos and IGOSCallback)")
    solver.add_argument("--method", choices=METHODS, default="igos", help="default: igos")
    d = SOLVER_DEFAULTS
    solver.add_argument("--iterations", type=_count, default=d["iterations"],
                        help="descent iterations, at most (default: %(default)s)")
    solver.add_argument("--ig-steps", type=_positive_int, default=d["ig_steps"],
                        help="integrated-gradient steps (default: %(default)s)")
    solver.add_argument("--mask-size", type=_mask_size, default=d["mask_size"], metavar="N|HxW",
                        help="mask resolution (default: the image's, one cell per pixel)")
    solver.add_argument("--l1", type=_non_negative, default=d["l1"], help="L1 weight (default: %(default)s)")
    solver.add_argument("--tv", type=_non_negative, default=d["tv"],
                        help="total variation weight at a 28x28 mask (default: %(default)s)")
    solver.add_argument("--tv-power", type=_non_negative, default=d["tv_power"],
                        help="total variation exponent (default: %(default)s)")
    solver.add_argument("--normalize-score", action=argparse.BooleanOptionalAction, default=d["normalize_score"],
                        help="divide the objective's score by the clean score, so --l1/--tv mean the same at any "
                             "confidence (default: on)")
    solver.add_argument("--noise-std", type=_non_negative, default=d["noise_std"],
                        help="integration noise std in input units (default: %(default)s)")
    solver.add_argument("--baseline", choices=BASELINE_CHOICES, default="blur", help="solver baseline (default: blur)")
    solver.add_argument("--tolerance", type=_positive_number, default=1e-5,
                        help="line searches give up below this change of a mask cell (default: 1e-5)")
    solver.add_argument("--patience", type=_count, default=3,
                        help="an image stops after this many failed line searches in a row (default: 3; 0: never)")
    solver.add_argument("--substrate", choices=BASELINE_CHOICES, default="blur",
                        help="what the metrics insert into / delete to (default: blur)")
    solver.add_argument("--metric-steps", type=_positive_int, default=50,
                        help="points on each insertion/deletion curve minus one (default: 50)")
    solver.add_argument("--max-batch-size", type=_positive_int, default=None,
                        help="images per forward pass (default: 32 on CPU, 64 on CUDA)")
    solver.add_argument("--seed", type=_count, default=0, help="seed of the integration noise (default: 0)")


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lightning-igos`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
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
    return _guarded(lambda: run_check(args), verbose=args.verbose)


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


# --------------------------------------------------------------------------- check


def run_check(args: argparse.Namespace) -> int:
    """The ``check`` command on parsed arguments; returns 0 (pass) or 1 (a threshold failed)."""
    started = time.perf_counter()
    check_thresholds(args)
    device = resolve_device(args.device)
    check_input_file(args.checkpoint, "checkpoint")
    probe = read_probe(args.probe)
    options = solver_options(args, probe)
    # The outputs are checked before the expensive work, so a bad path never loses the verdict.
    if args.report is not None:
        check_report_path(args.report)
    if args.images is not None:
        check_images_folder(args.images)
    model_class = import_model_class(args.model)
    with _library_logs(args.verbose):
        model = load_model(model_class, args.checkpoint, device, args.model)
    check_probe_fits(model, probe, device, args, options["max_batch_size"])

    progress = ProgressLine(sys.stderr, enabled=sys.stderr.isatty())
    explanation, curves = explain(model, probe, device, options, args, progress)
    report = build_report(args, probe, device, options, explanation, curves, time.perf_counter() - started)

    print(format_table(report, args))
    if args.report is not None:
        write_report(report, args.report)
    if args.images is not None:
        mean, std = display_normalisation(probe, model)
        write_images(args.images, probe, explanation, curves, mean, std)
    return EXIT_PASS if report["passed"] else EXIT_FAIL


def check_thresholds(args: argparse.Namespace) -> None:
    """Thresholds that can be met: raw AUCs lie in [0, 1]; normalised ones are >= 0 (and may exceed 1).

    Example:
        >>> check_thresholds(argparse.Namespace(min_insertion=1.5, max_deletion=None, normalized=True))
        >>> check_thresholds(argparse.Namespace(min_insertion=1.5, max_deletion=None, normalized=False))
        Traceback (most recent call last):
        ...
        lightning_igos.cli.errors.InputError: --min-insertion 1.5 could never pass: raw AUCs lie in [0, 1].
    """
    for option, value in (("--min-insertion", args.min_insertion), ("--max-deletion", args.max_deletion)):
        if value is None:
            continue
        lower = option == "--min-insertion"  # the AUC must be at least the value
        if args.normalized and value < 0:
            verdict = "fail" if lower else "pass"
            raise InputError(f"{option} {value:g} could never {verdict}: normalized AUCs are >= 0.")
        if not args.normalized and not 0 <= value <= 1:
            verdict = "pass" if (value > 1) == lower else "fail"
            raise InputError(f"{option} {value:g} could never {verdict}: raw AUCs lie in [0, 1].")


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; an unavailable device is an input error.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto).")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) found.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: MPS is not available on this machine.")
    return device


def read_probe(path: Path) -> Probe:
    try:
        return load_probe(path)
    except (OSError, ValueError) as err:
        raise InputError(str(err)) from err


def solver_options(args: argparse.Namespace, probe: Probe) -> dict[str, Any]:
    """The keyword arguments of :func:`igos` chosen on the command line, validated."""
    options = {
        "method": args.method,
        "mask_size": args.mask_size,
        "iterations": args.iterations,
        "ig_steps": args.ig_steps,
        "l1": args.l1,
        "tv": args.tv,
        "tv_power": args.tv_power,
        "normalize_score": args.normalize_score,
        "noise_std": args.noise_std,
        "baseline": args.baseline,
        "tolerance": args.tolerance,
        "patience": args.patience or None,
        "max_batch_size": args.max_batch_size,
    }
    height, width = probe.images.shape[-2:]
    try:
        check_solver_options(**{k: v for k, v in options.items() if k != "mask_size"})
        check_mask_size(args.mask_size, image_size=(height, width))
    except (TypeError, ValueError) as err:
        raise InputError(str(err).replace("`", "")) from err
    return options


@contextlib.contextmanager
def _library_logs(verbose: bool) -> Iterator[None]:
    """Hide Lightning's info lines (e.g. about ``weights_only``) unless ``--verbose``."""
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    if not verbose:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def check_probe_fits(
    model: nn.Module, probe: Probe, device: torch.device, args: argparse.Namespace, max_batch_size: int | None = None
) -> None:
    """One forward over the probe: the model must take it and return finite logits covering the targets.

    This is all the input validation the model gets: a failure inside the solver or the
    metrics afterwards is unexpected (exit 3), not an input error.
    """
    size = max_batch_size or default_max_batch_size(device)
    for start in range(0, len(probe), size):
        images = probe.images[start : start + size].to(device)
        try:
            with torch.no_grad(), evaluation_mode(model):
                logits = model(images.to(model_input_dtype(model, images.dtype)))
        except Exception as err:
            raise InputError(
                f"probe '{args.probe}' (images {tuple(probe.images.shape[1:])}) does not fit --model {args.model}: "
                f"the forward pass failed with {type(err).__name__}: {err}"
            ) from err
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != len(images) \
                or logits.shape[1] < 2:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise InputError(
                f"--model {args.model} must return logits shaped (B, num_classes) with num_classes >= 2, "
                f"got {shape} for {len(images)} images."
            )
        finite = torch.isfinite(logits).all(dim=1)
        if not finite.all():
            bad = [start + int(i) for i in torch.nonzero(~finite).flatten()[:5]]
            raise InputError(f"--model {args.model} returns NaN or infinite logits on probe image(s) {bad}.")
        num_classes = logits.shape[1]
        largest = int(probe.targets.max())
        if largest >= num_classes:
            raise InputError(
                f"probe '{args.probe}' has target {largest} but --model {args.model} has {num_classes} classes."
            )


def explain(
    model: nn.Module,
    probe: Probe,
    device: torch.device,
    options: dict[str, Any],
    args: argparse.Namespace,
    progress: ProgressLine,
) -> tuple[Explanation, CausalCurves]:
    """Explain the probe with :func:`igos` (noise seeded with ``--seed``) and score it.

    The inputs were validated before (:func:`solver_options`, :func:`check_probe_fits`): any
    exception from here on, a ``ValueError`` included, is unexpected (exit 3).
    """
    images, targets = probe.images.to(device), probe.targets.to(device)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)
    terms = 2 if options["method"] == "igos++" else 1
    try:
        # The solver's gradient passes are the forwards run with gradients on: count those.
        progress.start("explaining", len(probe) * options["ig_steps"] * options["iterations"] * terms)
        with _count_forwards(model, progress, only_with_grad=True):
            explanation = igos(model, images, targets, generator=generator, **options)
        progress.start("scoring", 2 * len(probe) * (args.metric_steps + 1))
        with _count_forwards(model, progress, only_with_grad=False):
            curves = causal_curves(
                model, images, explanation.saliency, targets, steps=args.metric_steps,
                substrate=args.substrate, max_batch_size=options["max_batch_size"],
            )
    finally:
        progress.finish()
    return explanation, curves


@contextlib.contextmanager
def _count_forwards(model: nn.Module, progress: ProgressLine, only_with_grad: bool) -> Iterator[None]:
    def count(module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and isinstance(inputs[0], Tensor) and (torch.is_grad_enabled() or not only_with_grad):
            progress.advance(inputs[0].shape[0])

    handle = model.register_forward_hook(count) if progress.enabled else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


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
import importlib
import json
import logging
import math
import os
import platform
import re
import sys
import time
import traceback
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

import lightning_igos
from lightning_igos._runtime import evaluation_mode, model_input_dtype
from lightning_igos.causal import CausalCurves, causal_curves
from lightning_igos.probe import Probe, load_probe
from lightning_igos.solver import METHODS, Explanation, check_solver_options, igos, resolve_mask_size

PROG = "lightning-igos"
REPORT_FORMAT = "lightning-igos-check"
REPORT_VERSION = 1

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

BASELINE_CHOICES = ("blur", "zeros", "mean")


class InputError(Exception):
    """A usage or input problem: reported on one line, exit status 2."""


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
    solver.add_argument("--iterations", type=_count, default=15, help="descent iterations (default: 15)")
    solver.add_argument("--ig-steps", type=_positive_int, default=20,
                        help="integrated-gradient steps (default: 20)")
    solver.add_argument("--mask-size", type=_mask_size, default=None, metavar="N|HxW",
                        help="mask resolution (default: about an eighth of the image)")
    solver.add_argument("--l1", type=_non_negative, default=1.0, help="L1 weight (default: 1)")
    solver.add_argument("--tv", type=_non_negative, default=20.0, help="total variation weight (default: 20)")
    solver.add_argument("--tv-power", type=_non_negative, default=2.0, help="total variation exponent (default: 2)")
    solver.add_argument("--noise-std", type=_non_negative, default=0.2,
                        help="integration noise std in input units (default: 0.2)")
    solver.add_argument("--baseline", choices=BASELINE_CHOICES, default="blur", help="solver baseline (default: blur)")
    solver.add_argument("--substrate", choices=BASELINE_CHOICES, default="blur",
                        help="what the metrics insert into / delete to (default: blur)")
    solver.add_argument("--metric-steps", type=_positive_int, default=50,
                        help="points on each insertion/deletion curve minus one (default: 50)")
    solver.add_argument("--max-batch-size", type=_positive_int, default=None,
                        help="images per forward pass (default: 32 on CPU, 256 on CUDA)")
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
        result = demo_main(argv)
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
    device = resolve_device(args.device)
    if not args.checkpoint.is_file():
        raise InputError(f"checkpoint file '{args.checkpoint}' does not exist.")
    probe = read_probe(args.probe)
    options = solver_options(args, probe)
    model_class = import_model_class(args.model)
    with _library_logs(args.verbose):
        model = load_model(model_class, args.checkpoint, device, args.model)
    check_probe_fits(model, probe, device, args)

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
    except (FileNotFoundError, ValueError) as err:
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
        "noise_std": args.noise_std,
        "baseline": args.baseline,
        "max_batch_size": args.max_batch_size,
    }
    height, width = probe.images.shape[-2:]
    try:
        check_solver_options(**{k: v for k, v in options.items() if k != "mask_size"})
        resolve_mask_size(args.mask_size, height, width)
    except (TypeError, ValueError) as err:
        raise InputError(str(err).replace("`", "")) from err
    return options


def import_model_class(spec: str) -> type[nn.Module]:
    """Import ``package.module:ClassName`` (the current directory is importable too).

    Example:
        >>> import_model_class("lightning_igos.synthetic:SmallCNN").__name__
        'SmallCNN'
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"--model must look like package.module:ClassName, got {spec!r}.")
    # A console script does not put the working directory on sys.path; `python -m` does.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or anything the module raises while it is imported
        raise InputError(f"cannot import module {module_name!r} for --model {spec}: {type(err).__name__}: {err}") \
            from err
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise InputError(f"cannot import --model {spec}: {module_name!r} has no attribute {attribute!r}.")
        target = getattr(target, part)
    if not (isinstance(target, type) and issubclass(target, nn.Module)):
        raise InputError(f"--model {spec} must name a torch.nn.Module subclass, got {target!r}.")
    return target


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


def load_model(model_class: type[nn.Module], checkpoint: Path, device: torch.device, spec: str = "") -> nn.Module:
    """Load ``checkpoint`` into ``model_class`` on ``device``, in eval mode.

    A class with ``load_from_checkpoint`` (a LightningModule) is loaded with it; a plain
    ``nn.Module`` is built without arguments and given the state dict in the file (a raw
    state dict or a Lightning checkpoint's ``"state_dict"``, with a common key prefix such as
    ``"model."`` or ``"module."`` stripped when that makes the keys match).
    """
    spec = spec or model_class.__name__
    if hasattr(model_class, "load_from_checkpoint"):
        try:
            model = model_class.load_from_checkpoint(checkpoint, map_location=device)
        except Exception as err:
            content = _read_state_file(checkpoint, spec, quiet=True)
            if not _is_state_dict(content):
                raise InputError(_lightning_load_failure(checkpoint, spec, content, err)) from err
            model = _state_dict_model(model_class, content, device, checkpoint, spec)
    else:
        content = _read_state_file(checkpoint, spec)
        model = _state_dict_model(model_class, content, device, checkpoint, spec)
    if not isinstance(model, nn.Module):  # a load_from_checkpoint that returns something else
        raise InputError(f"--model {spec}: loading '{checkpoint}' gave a {type(model).__name__}, not an nn.Module.")
    return model.to(device).eval()


def _lightning_load_failure(checkpoint: Path, spec: str, content: object, err: Exception) -> str:
    """Say why ``load_from_checkpoint`` failed in the terms a user can act on."""
    if not zipfile.is_zipfile(checkpoint) and content is None:
        return f"checkpoint '{checkpoint}' is not a file written by torch.save ({type(err).__name__}: {err})."
    if isinstance(content, Mapping) and "state_dict" not in content:
        keys = ", ".join(repr(k) for k in list(content)[:5])
        return f"checkpoint '{checkpoint}' is not a Lightning checkpoint: it has no 'state_dict' (keys: {keys})."
    return f"checkpoint '{checkpoint}' does not fit --model {spec}: {type(err).__name__}: {err}"


def _read_state_file(checkpoint: Path, spec: str, quiet: bool = False) -> object:
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:
        if quiet:
            return None
        raise InputError(
            f"checkpoint '{checkpoint}' cannot be read for --model {spec} (torch.load with weights_only=True): "
            f"{type(err).__name__}: {err}"
        ) from err


def _is_state_dict(content: object) -> bool:
    return (
        isinstance(content, Mapping)
        and len(content) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in content.items())
    )


def _state_dict_model(
    model_class: type[nn.Module], content: object, device: torch.device, checkpoint: Path, spec: str
) -> nn.Module:
    if isinstance(content, Mapping) and isinstance(content.get("state_dict"), Mapping):
        content = content["state_dict"]
    if not _is_state_dict(content):
        raise InputError(
            f"checkpoint '{checkpoint}' holds no state dict for --model {spec} "
            "(expected a dict of tensors or a Lightning checkpoint with 'state_dict')."
        )
    try:
        model = model_class()
    except Exception as err:
        raise InputError(f"--model {spec} cannot be built without arguments: {type(err).__name__}: {err}") from err
    state = match_state_dict_keys(content, model.state_dict().keys())
    try:
        model.load_state_dict(state)
    except Exception as err:
        raise InputError(f"checkpoint '{checkpoint}' does not fit --model {spec}: {err}") from err
    return model


def match_state_dict_keys(state: Mapping[str, Tensor], expected_keys: Any) -> Mapping[str, Tensor]:
    """Strip the shortest dotted key prefix that makes ``state``'s keys equal ``expected_keys``.

    Keys without the prefix are dropped, so a LightningModule's ``"model."`` submodule can be
    loaded into the bare network. Returns ``state`` unchanged when nothing matches.

    Example:
        >>> import torch
        >>> sorted(match_state_dict_keys({"model.w": torch.zeros(1), "loss.t": torch.zeros(1)}, ["w"]))
        ['w']
    """
    expected = set(expected_keys)
    if set(state) == expected:
        return state
    prefixes = {key[: i + 1] for key in state for i, char in enumerate(key) if char == "."}
    for prefix in sorted(prefixes, key=len):
        stripped = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
        if set(stripped) == expected:
            return stripped
    return state


def check_probe_fits(model: nn.Module, probe: Probe, device: torch.device, args: argparse.Namespace) -> None:
    """One forward on a probe image: the model must take it and return logits covering the targets."""
    image = probe.images[:1].to(device)
    try:
        with torch.no_grad(), evaluation_mode(model):
            logits = model(image.to(model_input_dtype(model, image.dtype)))
    except Exception as err:
        raise InputError(
            f"probe '{args.probe}' (images {tuple(probe.images.shape[1:])}) does not fit --model {args.model}: "
            f"the forward pass failed with {type(err).__name__}: {err}"
        ) from err
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != 1 or logits.shape[1] < 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise InputError(f"--model {args.model} must return logits shaped (B, num_classes), got {shape}.")
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
    """Explain the probe with :func:`igos` (noise seeded with ``--seed``) and score it."""
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
    except (TypeError, ValueError) as err:
        raise InputError(str(err).replace("`", "")) from err
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


class ProgressLine:
    """A one-line progress bar on a terminal; silent when ``enabled`` is False.

    Example:
        >>> import io
        >>> bar = ProgressLine(io.StringIO(), enabled=False)
        >>> bar.start("explaining", 10); bar.advance(5); bar.finish()
    """

    WIDTH = 24
    INTERVAL_S = 0.1

    def __init__(self, stream: IO[str], enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.label, self.total, self.done = "", 0, 0
        self.started = self.last_drawn = 0.0
        self.drawn = False

    def start(self, label: str, total: int) -> None:
        if self.drawn:
            self._draw(force=True)
            self.stream.write("\n")
        self.label, self.total, self.done = label, max(total, 1), 0
        self.started = time.perf_counter()
        self._draw(force=True)

    def advance(self, count: int) -> None:
        self.done = min(self.done + count, self.total)
        self._draw()

    def finish(self) -> None:
        if self.drawn:
            self.done = self.total
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last_drawn < self.INTERVAL_S):
            return
        filled = round(self.WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        self.stream.write(f"\r{self.label:<11}[{bar}] {100 * self.done / self.total:5.1f}%  {now - self.started:6.1f}s")
        self.stream.flush()
        self.last_drawn, self.drawn = now, True


# --------------------------------------------------------------------------- report


def _mean(values: Tensor) -> float:
    return float(values.double().mean())


def build_report(
    args: argparse.Namespace,
    probe: Probe,
    device: torch.device,
    options: dict[str, Any],
    explanation: Explanation,
    curves: CausalCurves,
    elapsed_s: float,
) -> dict[str, Any]:
    """The JSON report: per-image AUCs, means, thresholds with pass/fail, settings, versions."""
    masks = explanation.mask.flatten(1).float().cpu()
    per_image = {
        "clean_score": curves.clean_score.cpu(),
        "insertion_auc": curves.insertion_auc.cpu(),
        "deletion_auc": curves.deletion_auc.cpu(),
        "insertion_auc_normalized": curves.insertion_auc_normalized.cpu(),
        "deletion_auc_normalized": curves.deletion_auc_normalized.cpu(),
        "mask_mean": masks.mean(1),
        "mask_min": masks.min(1).values,
        "mask_frac_below_half": (masks < 0.5).float().mean(1),
    }
    images = [
        {"index": i, "target": int(probe.targets[i]), **{name: float(v[i]) for name, v in per_image.items()}}
        for i in range(len(probe))
    ]
    mean = {name: _mean(per_image[name]) for name in ("clean_score", "insertion_auc", "deletion_auc", "mask_mean")}
    normalized_mean = {name: _mean(per_image[f"{name}_normalized"]) for name in ("insertion_auc", "deletion_auc")}
    thresholds = evaluate_thresholds(args, mean, normalized_mean)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "passed": all(t["passed"] for t in thresholds),
        "thresholds": thresholds,
        "mean": mean,
        "normalized_mean": normalized_mean,
        "images": images,
        "settings": {
            "model": args.model,
            "checkpoint": str(args.checkpoint),
            "probe": str(args.probe),
            "num_images": len(probe),
            "image_shape": list(probe.images.shape[1:]),
            "device": str(device),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "mask_size_used": list(explanation.mask.shape[-2:]),
            "metric_steps": args.metric_steps,
            "substrate": args.substrate,
            "seed": args.seed,
            "normalized_thresholds": args.normalized,
        },
        "versions": {
            "lightning_igos": lightning_igos.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "elapsed_s": round(elapsed_s, 3),
    }


def evaluate_thresholds(
    args: argparse.Namespace, mean: dict[str, float], normalized_mean: dict[str, float]
) -> list[dict[str, Any]]:
    """One entry per threshold given: which mean it reads, the limit, the value and pass/fail."""
    source = normalized_mean if args.normalized else mean
    wanted = [
        ("min_insertion", "insertion_auc", ">=", args.min_insertion),
        ("max_deletion", "deletion_auc", "<=", args.max_deletion),
    ]
    results = []
    for name, metric, op, limit in wanted:
        if limit is None:
            continue
        value = source[metric]
        passed = value >= limit if op == ">=" else value <= limit
        results.append({"name": name, "metric": metric, "normalized": args.normalized, "op": op,
                        "limit": limit, "value": value, "passed": bool(passed)})
    return results


def format_table(report: dict[str, Any], args: argparse.Namespace) -> str:
    """The text printed by ``check``: settings, one row per image, means, thresholds, verdict."""
    s = report["settings"]
    mask_h, mask_w = s["mask_size_used"]
    lines = [
        f"{PROG} check: {s['num_images']} probe images from {s['probe']}, {s['model']} on {s['device']}",
        f"  {s['method']}, {s['iterations']} iterations, {s['ig_steps']} ig steps, mask {mask_h}x{mask_w}, "
        f"baseline {s['baseline']}, {s['metric_steps']} metric steps, substrate {s['substrate']}, seed {s['seed']}",
        "",
        f"{'image':>5}  {'target':>6}  {'clean prob':>10}  {'insertion AUC':>13}  {'deletion AUC':>12}  "
        f"{'mask mean':>9}",
    ]
    for row in report["images"]:
        lines.append(
            f"{row['index']:>5}  {row['target']:>6}  {row['clean_score']:>10.4f}  {row['insertion_auc']:>13.4f}  "
            f"{row['deletion_auc']:>12.4f}  {row['mask_mean']:>9.4f}"
        )
    m, n = report["mean"], report["normalized_mean"]
    lines.append(
        f"{'mean':>5}  {'':>6}  {m['clean_score']:>10.4f}  {m['insertion_auc']:>13.4f}  "
        f"{m['deletion_auc']:>12.4f}  {m['mask_mean']:>9.4f}"
    )
    lines.append(
        f"{'normalized mean':>25}  {n['insertion_auc']:>13.4f}  {n['deletion_auc']:>12.4f}  (AUC / clean prob)"
    )
    lines.append("")
    if not report["thresholds"]:
        lines.append("no thresholds given (--min-insertion, --max-deletion): PASS")
        return "\n".join(lines)
    for t in report["thresholds"]:
        label = f"mean {t['metric'].replace('_auc', ' AUC')}{' (normalized)' if t['normalized'] else ''}"
        lines.append(f"{label:<36} {t['value']:.4f} {t['op']} {t['limit']:<8g} {'pass' if t['passed'] else 'FAIL'}")
    failed = [t for t in report["thresholds"] if not t["passed"]]
    lines.append("PASS" if not failed else f"FAIL: {len(failed)} of {len(report['thresholds'])} thresholds failed")
    return "\n".join(lines)


def write_report(report: dict[str, Any], path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise InputError(f"cannot write the report to '{path}': {err}") from err


def display_normalisation(probe: Probe, model: nn.Module) -> tuple[Any, Any]:
    """The probe's mean/std, else the model's ``mean``/``std`` attributes (as on ObjectClassifier), else None."""
    channels = probe.images.shape[1]

    def per_channel(value: object) -> Any:
        if isinstance(value, Sequence) and len(value) == channels:
            return tuple(value)
        return None

    if probe.mean is not None and probe.std is not None:
        return probe.mean, probe.std
    mean, std = per_channel(getattr(model, "mean", None)), per_channel(getattr(model, "std", None))
    # Without both, render.unnormalize rescales each image to its own range.
    return (mean, std) if mean is not None and std is not None else (None, None)


def write_images(
    folder: Path, probe: Probe, explanation: Explanation, curves: CausalCurves, mean: Any, std: Any
) -> list[Path]:
    """``probe_<i>.png`` (image, heatmap and curves) per image and ``overlays.png`` for all."""
    from lightning_igos.render import overlay_grid, probe_panel, save_png, unnormalize

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the image folder '{folder}': {err}") from err
    shown = unnormalize(probe.images, mean, std)
    saliency = explanation.saliency.detach().cpu()
    fractions = curves.fractions.cpu()
    written = []
    for i in range(len(probe)):
        title = f"#{i} target {int(probe.targets[i])} p={float(curves.clean_score[i]):.2f}"
        panel = probe_panel(
            shown[i], saliency[i], curves.insertion[i].cpu(), curves.deletion[i].cpu(), fractions,
            float(curves.insertion_auc[i]), float(curves.deletion_auc[i]), title,
        )
        written.append(folder / f"probe_{i}.png")
        save_png(panel, written[-1])
    written.append(folder / "overlays.png")
    save_png(overlay_grid(shown, saliency), written[-1])
    return written

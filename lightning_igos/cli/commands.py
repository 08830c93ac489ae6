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

``lightning-igos compare OLD.json NEW.json [--max-drop NAME=X]`` compares two reports of the same
probe image by image (no model is loaded; the same comparison as ``check --baseline-report OLD.json``):
0 when no statistic got worse than its margin, 1 when one did, 2 when the reports cannot be compared.
``lightning-igos demo [ARGS]`` runs the demo; ``lightning-igos --version`` prints the version.

Example:
    >>> main(["check", "--model", "no_such_package.models:Net", "--checkpoint", "missing.ckpt",
    ...       "--probe", "missing.pt"])  # one line on stderr: the checkpoint does not exist
    2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sys
import sysconfig
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning_igos
from lightning_igos.cli.early import early_input_error
from lightning_igos.cli.errors import PROG, InputError
from lightning_igos.cli.options import add_config_options, config_options, number, positive_int
from lightning_igos.cli.source import imported_value, source_value

if TYPE_CHECKING:
    from lightning_igos.cli.settings import CheckSettings

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

# --------------------------------------------------------------------------- arguments


def _max_drop(value: str) -> tuple[str, float | None]:
    """``NAME=X`` or ``NAME=none`` (:func:`lightning_igos.cli.compare.parse_max_drop`, no torch import)."""
    from lightning_igos.cli.compare import parse_max_drop

    try:
        return parse_max_drop(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _device_name(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
    return value


def _requirement(value: str) -> Any:
    """``NAME>=X``: parsed without importing torch; the name is checked against the run's statistics later."""
    match = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<)\s*(\S+)\s*", value)
    if match is None:
        raise argparse.ArgumentTypeError(f"must be NAME>=X, NAME<=X, NAME>X or NAME<X (e.g. road_lerf>=0.4), "
                                         f"got {value!r}")
    number(match.group(3))
    return value


class _Parser(argparse.ArgumentParser):
    """The top-level parser: a parsed ``check`` gets every option it was not given from the imported defaults."""

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if getattr(parsed, "command", None) == "check":
            # Mistakes seen without torch are reported before the imports that fill the defaults.
            parsed.early_error = early_input_error(parsed)
            if parsed.early_error is None:
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
    _add_compare_parser(commands)
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
    inputs.add_argument("--max-probe-elements", type=positive_int, default=unset, metavar="N",
                        help="the most image elements (B*C*H*W) the probe may hold; a larger probe is an input error "
                             f"(default: {max_elements}, 64 images of 3x512x512)")

    gate = check.add_argument_group("thresholds")
    gate.add_argument("--min-insertion", type=number, metavar="X",
                      help="fail unless the mean insertion AUC is >= X (higher is better)")
    gate.add_argument("--max-deletion", type=number, metavar="Y",
                      help="fail unless the mean deletion AUC is <= Y (lower is better)")
    gate.add_argument("--require", type=_requirement, action="append", default=[], metavar="NAME>=X",
                      help="fail unless the mean of the reported statistic NAME satisfies the comparison "
                           "(>=, <=, >, <), e.g. road_lerf>=0.4 or pointing>=0.8; repeatable; an unknown NAME "
                           "lists the known ones")
    gate.add_argument("--normalized", action="store_true",
                      help="compare the thresholds with the AUCs divided by each image's clean probability")
    gate.add_argument("--allow-empty", action="store_true",
                      help="pass although some explanations are empty (they rank no pixel; the table says why for "
                           "each); by default one empty explanation fails the check")
    gate.add_argument("--sanity", action="store_true",
                      help="also run the model-randomisation sanity check: explain the probe again with the head "
                           "and last blocks re-initialised and fail when the mean Spearman correlation of the two "
                           "explanations is above --max-sanity-correlation (doubles the explaining cost)")
    max_sanity = source_value("lightning_igos.cli.settings", "max_sanity_correlation", "CheckSettings")
    gate.add_argument("--max-sanity-correlation", type=number, default=unset, metavar="X",
                      help=f"with --sanity, the highest mean Spearman correlation that passes (default: {max_sanity})")

    _add_baseline_options(check.add_argument_group("against a baseline report"), check_options=True)

    outputs = check.add_argument_group("outputs")
    outputs.add_argument("--report", type=Path, metavar="FILE", help="write a JSON report here")
    outputs.add_argument("--markdown", type=Path, metavar="FILE",
                         help="write the Markdown summary here (it is also appended to $GITHUB_STEP_SUMMARY when set)")
    outputs.add_argument("--images", type=Path, metavar="DIR",
                         help="write probe_<i>.png panels and overlays.png here")
    outputs.add_argument("--html", type=Path, metavar="FILE",
                         help="write one self-contained HTML report here (verdict, thresholds, table, every panel, "
                              "settings; images embedded)")
    outputs.add_argument("--verbose", action="store_true", help="show tracebacks and library logs")

    # Generated from IGOSConfig's field declarations: "dest" is the field each option sets.
    add_config_options(check.add_argument_group("solver and metric options (defaults as in igos and IGOSCallback)"))


def _add_baseline_options(group: Any, check_options: bool) -> None:
    """``--baseline-report`` (check only) and ``--max-drop``, shared by ``check`` and ``compare``."""
    defaults = source_value("lightning_igos.cli.compare", "DEFAULT_MAX_DROP")
    if check_options:
        group.add_argument("--baseline-report", type=Path, metavar="OLD.json",
                           help="compare each statistic, image by image, with this earlier report of the same probe "
                                "and method (another probe or method is an input error, another option a warning)")
    group.add_argument("--max-drop", type=_max_drop, action="append", default=[], metavar="NAME=X",
                       help="fail when the mean of statistic NAME got worse than the baseline's by more than X, "
                            "in the direction the statistic declares; NAME=none: show it, gate nothing; repeatable "
                            "(default: " + ", ".join(f"{k}={v:g}" for k, v in defaults.items()) + ")")


def _add_compare_parser(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare",
        help="compare two check reports of the same probe image by image (no model is loaded)",
        description=(
            "Compare NEW with OLD, two JSON reports of lightning-igos check (--report) of the same probe and "
            "method, image by image, with the 95% interval of each paired change; the same comparison as "
            "check --baseline-report OLD. Exit status: 0 no statistic got worse than its margin, 1 one did, "
            "2 usage or input error (e.g. another probe or method)."
        ),
    )
    compare.add_argument("old", type=Path, metavar="OLD.json", help="the baseline report")
    compare.add_argument("new", type=Path, metavar="NEW.json", help="the report to judge")
    _add_baseline_options(compare, check_options=False)
    compare.add_argument("--markdown", type=Path, metavar="FILE", help="write the comparison as Markdown here")
    compare.add_argument("--html", type=Path, metavar="FILE",
                         help="write the comparison as one HTML page here, each probe image's baseline and new "
                              "overlay side by side (when the reports carry overlays)")
    compare.add_argument("--verbose", action="store_true", help="show tracebacks")


def _fill_defaults(args: argparse.Namespace) -> None:
    """Set each ``check`` option that was not given to its default, from the imported modules (imports torch)."""
    from lightning_igos import probe
    from lightning_igos.core.config import DEFAULTS

    defaults = {name: getattr(DEFAULTS, name) for name in CONFIG_OPTIONS}
    defaults["patience"] = DEFAULTS.patience or 0  # 0 on the command line: never stop early
    defaults["max_probe_elements"] = probe.MAX_PROBE_ELEMENTS
    defaults["max_sanity_correlation"] = imported_value("lightning_igos.cli.settings", "max_sanity_correlation",
                                                         "CheckSettings")
    for name, value in defaults.items():
        if not hasattr(args, name):
            setattr(args, name, value)


#: The IGOSConfig fields set on the command line (the parser's dest names), in field order.
CONFIG_OPTIONS = tuple(option.name for option in config_options())


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
    except (TypeError, ValueError) as err:  # the config is the only judge of its options' values
        raise InputError(_config_error(str(err))) from err
    return CheckSettings(
        model=args.model, checkpoint=args.checkpoint, probe=args.probe, device=args.device,
        min_insertion=args.min_insertion, max_deletion=args.max_deletion, normalized=args.normalized,
        report=args.report, images=args.images, verbose=args.verbose, config=config,
        html=args.html, class_names=args.class_names, allow_empty=args.allow_empty,
        max_probe_elements=args.max_probe_elements, sanity=args.sanity,
        max_sanity_correlation=args.max_sanity_correlation,
        require=tuple(parse_requirement(text) for text in getattr(args, "require", None) or ()), plugins=plugins,
        baseline_report=getattr(args, "baseline_report", None), max_drop=tuple(getattr(args, "max_drop", None) or ()),
        markdown=getattr(args, "markdown", None),
    )


def _config_error(message: str) -> str:
    """IGOSConfig's message, prefixed with the option it names: ``--ig-steps: ig_steps must be an integer >= 1``.

    Example:
        >>> _config_error("`tv_power` must be >= 1 (the reference uses 2), got 0.5.")
        '--tv-power: tv_power must be >= 1 (the reference uses 2), got 0.5.'
    """
    named = re.match(r"`(\w+)`", message)
    flag = next((o.flag for o in config_options() if named and o.name == named.group(1)), None)
    return (f"{flag}: " if flag else "") + message.replace("`", "")


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
        print(f"{PROG}: error: a command is required (check, compare or demo)", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "compare":
        return _guarded(lambda: _compare(args), verbose=args.verbose)
    if getattr(args, "early_error", None) is not None:
        print(f"{PROG}: error: {_one_line(str(args.early_error))}", file=sys.stderr)
        return EXIT_USAGE
    with _terminate_as_exception():
        return _guarded(lambda: _check(args), verbose=args.verbose)


class _Terminated(BaseException):
    """SIGTERM during a check, raised so its prepared outputs are removed (the old ones stay)."""


@contextlib.contextmanager
def _terminate_as_exception() -> Any:
    """While the check runs, SIGTERM raises :class:`_Terminated` (main thread only) instead of killing the
    process at once: a terminated check cleans up like an interrupted one and exits 143."""
    def terminate(signum: int, frame: Any) -> None:
        raise _Terminated

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _compare(args: argparse.Namespace) -> int:
    """``compare``: the comparison of two reports, printed; 0 pass, 1 a statistic got worse than its margin."""
    from lightning_igos.cli.compare import run_compare

    comparison, text = run_compare(args.old, args.new, args.max_drop, markdown=args.markdown, html_path=args.html)
    print(text)
    return EXIT_PASS if comparison["passed"] else EXIT_FAIL


def _check(args: argparse.Namespace) -> int:
    """``check``: typed settings from the arguments, the run, the printed table; 0 pass, 1 fail."""
    from lightning_igos.cli.check import run_check
    from lightning_igos.cli.table import format_table

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
    except _Terminated:
        print(f"{PROG}: terminated (SIGTERM); the earlier outputs are left as they were", file=sys.stderr)
        return 143
    except SystemExit as err:  # only the verdict ends the check with 0: user code cannot exit for it
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_exit_source(err)} raised SystemExit({err.code!r}) during the check; "
              "the check did not finish", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as err:  # the last resort: one line instead of a traceback in CI logs
        if verbose:
            traceback.print_exc()
        hint = "" if verbose else " (run with --verbose for the traceback)"
        print(f"{PROG}: error: unexpected {type(err).__name__}: {_one_line(str(err))}{hint}", file=sys.stderr)
        return EXIT_INTERNAL
    except BaseException as err:  # e.g. GeneratorExit or a BaseException subclass raised by user code
        if verbose:
            traceback.print_exc()
        print(f"{PROG}: error: {_exit_source(err)} raised {type(err).__name__} during the check; "
              "the check did not finish", file=sys.stderr)
        return EXIT_INTERNAL


def _exit_source(err: BaseException) -> str:
    """Where ``err`` was raised: ``module 'name' (file:line)``.

    The innermost frame of its traceback that is the user's code: outside this package, the standard
    library and installed packages (a library that wraps ``sys.exit``, as W&B does, would otherwise
    be named); the innermost frame when there is none.
    """
    installed = {os.path.realpath(p) for key in ("stdlib", "platstdlib", "purelib", "platlib")
                 if (p := sysconfig.get_paths().get(key))}
    own = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append((tb.tb_frame.f_globals.get("__name__", "?"), tb.tb_frame.f_code.co_filename, tb.tb_lineno))
        tb = tb.tb_next
    if not frames:
        return "the code"

    def users(filename: str) -> bool:
        path = os.path.realpath(filename)
        return not path.startswith(own + os.sep) and not any(path.startswith(p + os.sep) for p in installed)

    module, filename, line = next((f for f in reversed(frames) if users(f[1])), frames[-1])
    return f"module {module!r} ({filename}:{line})"


def _one_line(message: str, limit: int = 500) -> str:
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."

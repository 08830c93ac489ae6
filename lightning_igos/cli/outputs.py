"""Where ``lightning-igos check`` writes: output paths checked before the work, files replaced atomically.

* :func:`check_outputs` runs before anything is read or computed. Every output (``--report``,
  ``--html`` and the files ``--images`` writes: ``probe_<i>.png`` and ``overlays.png``) is
  resolved, symbolic links followed, and compared with every input (``--checkpoint``,
  ``--probe``, ``--class-names``) and with the other outputs: a collision is an
  :class:`~lightning_igos.cli.errors.InputError` naming both options, so an output can never
  overwrite an input. Then each output must be writable: its folder (or the nearest folder
  above it that exists) must be a folder that takes a new file. Nothing is created or
  changed by the check: not the file, not a missing folder, not the target of a dangling link.
* :func:`write_bytes` and :func:`write_with` write a temporary file in the destination's
  folder, flush and fsync it, then :func:`os.replace` it onto the destination: a reader never
  sees half a file, and a failed write leaves the previous file as it was.

* :func:`one_run` makes the outputs of one check one run's: inside it, :func:`write_with` only
  prepares each file (written and flushed under a hidden temporary name); when the run ends
  without an error the prepared files replace their destinations in one short step, with the
  output folders locked (a concurrent check waits for it, so two checks never mix their files)
  and SIGINT/SIGTERM held back until it is done. Each output carries the run's id
  (:func:`current_run_id`): the JSON report, the HTML and Markdown reports, and
  ``manifest.json`` in the ``--images`` folder, which lists that run's panels; panels an earlier
  run left there (``probe_<i>.png`` past this probe's size) are removed. A failed or interrupted
  run leaves every previous output as it was.

Symbolic links: an output that is a link is written *through* it, as ``open(path, "w")``
would: the file it points at is replaced (the link stays; a dangling link's target is
created, with its missing folders, when the results are written). This is why the collision
check compares resolved paths, and existing files by device and inode too (hard links).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

from lightning_igos.cli.errors import PROG, InputError

__all__ = ["MANIFEST", "SUMMARY_VARIABLE", "append_summary_text", "check_outputs", "current_run_id", "note_panels",
           "one_run", "resolved", "step_summary", "write_bytes", "write_with"]

#: The manifest ``--images`` writes into its folder: the run id and the panels of that run.
MANIFEST = "manifest.json"
#: The environment variable naming GitHub Actions' job summary file.
SUMMARY_VARIABLE = "GITHUB_STEP_SUMMARY"


@functools.cache
def _panel_pattern() -> re.Pattern[str]:
    """The names of the panels ``--images`` writes (:func:`~lightning_igos.render.files.panel_file` of any index);
    imported only with ``--images`` (the render package imports torch, ``compare`` does not)."""
    from lightning_igos.render.files import panel_file

    return re.compile(re.escape(panel_file(0)).replace("0", r"\d+"))


def _written_by_images(name: str) -> bool:
    """``name`` is a file ``--images`` writes into its folder: a panel, the overlay grid or the manifest."""
    from lightning_igos.render.files import OVERLAYS_FILE

    return name in (OVERLAYS_FILE, MANIFEST) or _panel_pattern().fullmatch(name) is not None

#: A file name to suggest when an output file option names a folder.
_EXAMPLE_NAMES = {"--report": "report.json", "--html": "report.html"}


def resolved(path: str | os.PathLike) -> Path:
    """``path`` absolute with every symbolic link followed (a dangling link gives its target).

    Example:
        >>> resolved("a/../b.json") == Path.cwd().resolve() / "b.json"
        True
    """
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    """The same file: the same resolved path, or (both existing) the same device and inode."""
    if resolved(a) == resolved(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _image_files(folder: Path) -> list[Path]:
    """The existing entries of ``folder`` that ``--images`` would replace (links included)."""
    try:
        return [entry for entry in folder.iterdir() if _written_by_images(entry.name)]
    except OSError:
        return []


def _in_images_folder(path: Path, folder: Path) -> bool:
    """``--images folder`` would write onto ``path``: it resolves to a panel file name in the folder."""
    target = resolved(path)
    return _written_by_images(target.name) and _same_file(target.parent, folder)


def check_outputs(
    inputs: Mapping[str, Path | None],
    files: Mapping[str, Path | None],
    images: Path | None = None,
) -> None:
    """Refuse, before any work and without creating anything, outputs that collide or cannot be written.

    Args:
        inputs: option -> file read (``{"--checkpoint": path, ...}``); None entries are skipped.
        files: option -> file written (``{"--report": path, "--html": path}``); None skipped.
        images: the ``--images`` folder, or None.

    Raises:
        InputError: an output is an input or another output (the message names both
            options), an output file is a folder, the images folder is a file, or a folder
            that would hold an output cannot take a new file.

    Example:
        >>> check_outputs({"--probe": Path("probe.pt")}, {"--report": Path("probe.pt")})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lightning_igos.cli.errors.InputError: --report 'probe.pt' is the file given as --probe 'probe.pt': ...
    """
    given_inputs = {option: Path(path) for option, path in inputs.items() if path is not None}
    outputs = {option: Path(path) for option, path in files.items() if path is not None}
    _check_collisions(given_inputs, outputs, None if images is None else Path(images))
    for option, path in outputs.items():
        _check_writable_file(option, path)
    if images is not None:
        _check_writable_folder(Path(images))


def _check_collisions(inputs: dict[str, Path], outputs: dict[str, Path], images: Path | None) -> None:
    def clash(option: str, path: Path, other: str, other_path: Path, role: str) -> InputError:
        what = "an input" if role == "input" else "another output"
        return InputError(f"{option} '{path}' is the file given as {other} '{other_path}': an output would "
                          f"overwrite {what}; give another path.")

    named = list(outputs.items())
    for i, (option, path) in enumerate(named):
        for other, other_path in inputs.items():
            if _same_file(path, other_path):
                raise clash(option, path, other, other_path, "input")
        for other, other_path in named[:i]:
            if _same_file(path, other_path):
                raise clash(option, path, other, other_path, "output")
    if images is None:
        return
    folder = resolved(images)
    for role, group in (("input", inputs), ("output", outputs)):
        for other, other_path in group.items():
            if _same_file(images, other_path):
                raise InputError(f"--images '{images}' is the path given as {other} '{other_path}'; "
                                 "give the panels a folder of their own.")
            if _in_images_folder(other_path, folder):
                kind = "an input" if role == "input" else "another output"
                raise InputError(f"--images '{images}' would write {resolved(other_path).name} over {other} "
                                 f"'{other_path}' ({kind}); give the panels another folder.")
    # An existing probe_<i>.png or overlays.png that is a link is written through: not onto an input.
    for entry in _image_files(folder):
        for group in (inputs, outputs):
            for other, other_path in group.items():
                if _same_file(entry, other_path):
                    raise InputError(f"--images '{images}' would write '{entry.name}', which is {other} "
                                     f"'{other_path}' (a link to it); give the panels another folder.")


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (the folder that would take the first new entry)."""
    current = path
    while not os.path.lexists(current) and current.parent != current:
        current = current.parent
    return current


def _check_takes_files(option: str, path: Path, folder: Path) -> None:
    """``folder`` (the nearest existing folder above an output) must be a folder that takes a new file."""
    anchor = _nearest_existing(folder)
    if not anchor.is_dir():
        raise InputError(f"{option} '{path}' cannot be written: '{anchor}' is not a folder.")
    try:
        # An unnamed temporary file (removed at once; O_TMPFILE where the system has it): a real test.
        with tempfile.TemporaryFile(dir=anchor):
            pass
    except OSError as err:
        raise InputError(f"{option} '{path}' cannot be written: cannot create a file in '{anchor}': "
                         f"{err.strerror or err}.") from err


def _check_writable_file(option: str, path: Path) -> None:
    target = resolved(path)
    if target.is_dir():
        example = _EXAMPLE_NAMES.get(option, "out.file")
        raise InputError(f"{option} '{path}' is a directory; give a file name such as '{path / example}'.")
    if os.path.islink(target):  # realpath stops inside a loop of links
        raise InputError(f"{option} '{path}' cannot be written: it is a loop of symbolic links.")
    if target.exists() and not target.is_file():
        raise InputError(f"{option} '{path}' is not a regular file (a device, pipe or socket); give a file name.")
    _check_takes_files(option, path, target.parent)


def _check_writable_folder(folder: Path) -> None:
    target = resolved(folder)
    if target.exists() and not target.is_dir():
        raise InputError(f"--images '{folder}' is a file, not a folder.")
    _check_takes_files("--images", folder, target)


# ----------------------------------------------------------------------------- atomic writes


def _new_file_mode(target: Path) -> int:
    """The permissions the replaced file keeps, or those ``open()`` would give a new one (umask)."""
    try:
        return os.stat(target).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_with(path: str | os.PathLike, produce: Callable[[Path], object]) -> Path:
    """Replace ``path`` atomically with the file ``produce(temporary_path)`` writes; returns the file written.

    The temporary file is in the destination's folder (so :func:`os.replace` is atomic), flushed
    to disk before it replaces the destination; on any failure it is removed and the
    destination is left as it was. A symbolic link is written through (the file it points at
    is replaced); missing folders are created.

    Example:
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_with(folder / "x.txt", lambda tmp: tmp.write_text("hi")).read_text()
        'hi'
    """
    target = resolved(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = _new_file_mode(target)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp",
                                     delete=False) as handle:
        temporary = Path(handle.name)
    run = _RUN.get()
    try:
        produce(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        if run is not None:  # replaced when the run ends (one_run)
            earlier = run.pending.pop(target, None)
            if earlier is not None:
                earlier.unlink(missing_ok=True)
            run.pending[target] = temporary
            return target
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(target.parent)
    return target


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Replace ``path`` atomically with ``data`` (see :func:`write_with`); returns the file written.

    Example:
        >>> folder = Path(tempfile.mkdtemp())
        >>> write_bytes(folder / "r.json", b"{}").read_bytes()
        b'{}'
    """
    return write_with(path, lambda temporary: temporary.write_bytes(data))


def _sync_folder(folder: Path) -> None:
    """Flush the folder entry of the replaced file where the system allows it (not on Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def append_summary_text(text: str, path: str | os.PathLike | None = None) -> Path | None:
    """Append ``text`` to ``path``, by default ``$GITHUB_STEP_SUMMARY`` (None when it is unset); an OSError
    propagates.

    Example:
        >>> summary = Path(tempfile.mkdtemp()) / "summary.md"
        >>> append_summary_text("## a\\n", summary) == summary, summary.read_text()
        (True, '## a\\n')
    """
    if path is None:
        path = os.environ.get(SUMMARY_VARIABLE) or None
        if path is None:
            return None
    target = Path(path)
    with open(target, "a", encoding="utf-8") as stream:
        stream.write(text)
    return target


def step_summary(text: str) -> None:
    """On GitHub Actions (``$GITHUB_STEP_SUMMARY`` set) append ``text``; a failure is a warning, never the
    command's."""
    try:
        append_summary_text(text)
    except OSError as err:
        print(f"{PROG}: warning: could not append to ${SUMMARY_VARIABLE}: {err}", file=sys.stderr)


# ----------------------------------------------------------------------------- one run's outputs


@dataclass
class _Run:
    run_id: str
    pending: dict[Path, Path] = field(default_factory=dict)  # destination -> prepared temporary file
    panels: dict[Path, list[str]] = field(default_factory=dict)  # --images folder -> this run's image files


_RUN: ContextVar[_Run | None] = ContextVar("lightning_igos_check_run", default=None)


def current_run_id() -> str | None:
    """The id of the :func:`one_run` in progress (what every output of it records), else None.

    Example:
        >>> with one_run() as run_id:
        ...     current_run_id() == run_id
        True
    """
    run = _RUN.get()
    return None if run is None else run.run_id


def note_panels(folder: str | os.PathLike, names: list[str]) -> None:
    """Record that this run's ``--images`` folder holds ``names``: on commit the manifest lists them and
    older ``probe_<i>.png`` files not among them are removed. Outside :func:`one_run` it does nothing."""
    run = _RUN.get()
    if run is not None:
        run.panels[resolved(folder)] = list(names)


@contextlib.contextmanager
def one_run(run_id: str | None = None) -> Iterator[str]:
    """Make the files written inside (:func:`write_with`) one run's outputs; yields the run id.

    On a normal exit the prepared files replace their destinations with the output folders
    locked (``flock``; a concurrent run waits) and SIGINT and SIGTERM held back (delivered
    right after), the ``--images`` folders get their ``manifest.json`` and lose the panels of
    earlier runs. On an error, or an interrupt before that step, the prepared files are
    removed and every destination is left as it was.

    Example:
        >>> folder = Path(tempfile.mkdtemp())
        >>> with one_run("run-1"):
        ...     _ = write_bytes(folder / "r.json", b"{}")
        ...     (folder / "r.json").exists()
        False
        >>> (folder / "r.json").read_bytes()
        b'{}'
    """
    run = _Run(run_id or uuid.uuid4().hex)
    token = _RUN.set(run)
    try:
        yield run.run_id
        for folder, names in run.panels.items():
            manifest = {"run_id": run.run_id, "files": sorted(names)}
            write_bytes(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode("utf-8"))
    except BaseException:
        _RUN.reset(token)
        for temporary in run.pending.values():
            temporary.unlink(missing_ok=True)
        raise
    _RUN.reset(token)
    _commit(run)


def _commit(run: _Run) -> None:
    """Replace every destination by its prepared file, then remove stale panels: folders locked, signals held."""
    folders = sorted({target.parent for target in run.pending} | set(run.panels), key=str)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_signals_held())
        for folder in folders:
            stack.enter_context(_folder_lock(folder))
        try:
            for target, temporary in run.pending.items():
                os.replace(temporary, target)
        except BaseException:
            for temporary in run.pending.values():
                temporary.unlink(missing_ok=True)
            raise
        for folder, names in run.panels.items():
            keep = set(names)
            for entry in _image_files(folder):
                if _panel_pattern().fullmatch(entry.name) and entry.name not in keep:
                    entry.unlink(missing_ok=True)
        for folder in folders:
            _sync_folder(folder)


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` (where the system has it): concurrent runs commit one at a time."""
    try:
        import fcntl
    except ImportError:  # Windows: no folder locks; each file is still replaced atomically
        yield
        return
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (POSIX, this thread) while the outputs are replaced; delivered after."""
    held = {signal.SIGINT, getattr(signal, "SIGTERM", signal.SIGINT)}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

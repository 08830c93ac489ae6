"""A probe is checked before it is materialised: a small file never takes the machine's memory.

An expanded view (a few bytes of storage declaring gigabytes), a probe past the element cap,
a zip that inflates past it, float8 or sparse images and a path that is not a regular file
are input errors of the check (exit 2, one line) and errors of `load_probe` and the callback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

import lightning_igos.probe as probe_module
from lightning_igos import IGOSCallback
from lightning_igos.cli import main
from lightning_igos.cli.errors import InputError
from lightning_igos.probe import FORMAT, MAX_PROBE_ELEMENTS, check_probe_tensors, load_probe, save_probe

MODEL = "lightning_igos.demo.synthetic:SmallCNN"
GIB = 1 << 30


def _probe_content(images: torch.Tensor, count: int | None = None) -> dict:
    count = images.shape[0] if count is None else count
    return {"format": FORMAT, "version": 1, "images": images, "targets": torch.zeros(count, dtype=torch.long),
            "mean": None, "std": None}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """A checkpoint file (never loaded: the probe fails first) and probes good and bad."""
    torch.save({"w": torch.zeros(1)}, tmp_path / "ck.pt")
    torch.save(_probe_content(torch.zeros(1, 1, 1, 1).expand(24, 3, 2048, 2048)), tmp_path / "expanded.pt")
    save_probe(tmp_path / "small.pt", torch.rand(4, 3, 8, 8), [0, 1, 0, 1])
    return tmp_path


def _check(folder: Path, probe: str, *extra: str) -> list[str]:
    return ["check", "--model", MODEL, "--checkpoint", str(folder / "ck.pt"), "--probe", str(folder / probe), *extra]


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    return code, captured.err


def _reached_the_model(*args, **kwargs):
    raise InputError("the probe was accepted and the model is being loaded")


def test_a_2kb_expanded_probe_is_refused_fast_and_small(folder: Path) -> None:
    """1.2 GB once copied; the check exits 2 within seconds, and the process stays far below that."""
    assert (folder / "expanded.pt").stat().st_size < 4096
    measure = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(r.returncode); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
               "print(r.stderr, end='')")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", measure, sys.executable, "-m", "lightning_igos",
                             *_check(folder, "expanded.pt")], capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    code, peak_kib, *stderr = result.stdout.splitlines()
    assert int(code) == 2, result.stdout + result.stderr
    assert elapsed < 60
    assert int(peak_kib) * 1024 < 1.5 * GIB, f"peak resident memory {int(peak_kib) / 1024:.0f} MiB"
    message = "\n".join(stderr)
    assert message.startswith("lightning-igos: error:") and len(stderr) == 1
    assert "declare 301989888 elements (shape (24, 3, 2048, 2048)) but their storage holds 1" in message


def test_an_expanded_view_is_refused_whatever_the_cap(folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("lightning_igos.cli.check.load_model", _reached_the_model)
    code, err = _run(capsys, _check(folder, "expanded.pt", "--max-probe-elements", str(10**12)))
    assert code == 2
    assert "declare 301989888 elements (shape (24, 3, 2048, 2048)) but their storage holds 1" in err
    assert "expanded or overlapping view" in err


def test_the_cap_is_an_input_error_that_can_be_raised(folder: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("lightning_igos.cli.check.load_model", _reached_the_model)
    code, err = _run(capsys, _check(folder, "small.pt", "--max-probe-elements", "767"))
    assert code == 2
    assert "declare 768 elements" in err and "the cap is 767 image elements" in err
    assert "--max-probe-elements" in err
    code, err = _run(capsys, _check(folder, "small.pt", "--max-probe-elements", "768"))
    assert code == 2 and "the probe was accepted" in err


def test_the_default_cap_is_64_images_of_3x512x512() -> None:
    assert MAX_PROBE_ELEMENTS == 64 * 3 * 512 * 512
    check_probe_tensors(torch.empty(64, 3, 512, 512))  # never touched: no memory is used
    with pytest.raises(ValueError) as info:
        check_probe_tensors(torch.empty(65, 3, 512, 512))
    message = str(info.value)
    assert "declare 51,118,080 elements (shape (65, 3, 512, 512)), more than allowed" in message
    assert "the cap is 50,331,648 image elements" in message and "--max-probe-elements N" in message
    assert "max_elements=N" in message


def _inflating_probe(path: Path, inflated_bytes: int) -> None:
    """A valid small probe plus a deflated record of zeros: tiny on disk, ``inflated_bytes`` once read."""
    plain = path.with_suffix(".plain")
    save_probe(plain, torch.rand(1, 3, 4, 4), [0])
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in source.infolist():
            archive.writestr(info.filename, source.read(info))
        prefix = source.infolist()[0].filename.split("/")[0]
        with archive.open(f"{prefix}/data/99", "w") as stream:
            chunk = bytes(1 << 20)
            for _ in range(inflated_bytes // len(chunk)):
                stream.write(chunk)


def test_a_zip_that_inflates_past_the_cap_is_refused_before_reading(folder: Path, capsys, monkeypatch) -> None:
    path = folder / "inflating.pt"
    _inflating_probe(path, 8 << 20)
    assert path.stat().st_size < 64 << 10

    def must_not_load(*args, **kwargs):
        raise AssertionError("torch.load ran on an archive past the cap")

    monkeypatch.setattr(probe_module, "load_weights_only", must_not_load)
    code, err = _run(capsys, _check(folder, "inflating.pt", "--max-probe-elements", "1000"))
    assert code == 2
    assert "unpacks to" in err and "--max-probe-elements" in err
    monkeypatch.undo()
    # Within the (default) cap the same file is a probe: its extra record is never read.
    assert load_probe(path).images.shape == (1, 3, 4, 4)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (torch.zeros(2, 3, 8, 8, dtype=torch.float8_e4m3fn), "probe images must be float16, bfloat16, float32, "
                                                             "float64, got dtype float8_e4m3fn"),
        (torch.zeros(2, 3, 8, 8).to_sparse(), "probe images must be a dense (strided) tensor, got a torch.sparse_coo"),
    ],
    ids=["float8", "sparse"],
)
def test_unsupported_image_tensors_are_input_errors(folder: Path, capsys, images, message) -> None:
    torch.save(_probe_content(images), folder / "odd.pt")
    code, err = _run(capsys, _check(folder, "odd.pt"))
    assert code == 2, err
    assert message in err


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero on this system")
def test_a_device_is_not_a_regular_file(folder: Path, capsys) -> None:
    argv = ["check", "--model", MODEL, "--checkpoint", str(folder / "ck.pt"), "--probe", "/dev/zero"]
    code, err = _run(capsys, argv)
    assert code == 2
    assert "probe '/dev/zero' is not a regular file" in err and "does not exist" not in err
    with pytest.raises(ValueError, match="not a regular file"):
        load_probe("/dev/zero")


def test_the_callback_probe_gets_the_same_checks(folder: Path, monkeypatch) -> None:
    targets = torch.zeros(64, dtype=torch.long)
    with pytest.raises(ValueError, match="expanded or overlapping view"):
        IGOSCallback(probe=(torch.zeros(1, 3, 8, 8).expand(64, 3, 8, 8), targets))
    with pytest.raises(ValueError, match="storage holds 1"):
        IGOSCallback(probe=folder / "expanded.pt")
    monkeypatch.setattr(probe_module, "MAX_PROBE_ELEMENTS", 1000)
    with pytest.raises(ValueError, match="the cap is 1,000 image elements"):
        IGOSCallback(probe=(torch.rand(8, 3, 8, 8), targets[:8]))
    monkeypatch.setattr(probe_module, "MAX_PROBE_ELEMENTS", 8 * 3 * 8 * 8)
    callback = IGOSCallback(probe=(torch.rand(8, 3, 8, 8), targets[:8]))
    assert callback is not None
    # A slice of a larger tensor holds every element it declares: accepted.
    check_probe_tensors(torch.rand(16, 3, 8, 8)[:8], targets[:8])


def test_bad_caps_name_the_argument(folder: Path) -> None:
    from lightning_igos.cli.check import CheckSettings

    with pytest.raises(ValueError, match="max_elements"):
        load_probe(folder / "small.pt", max_elements=0)
    with pytest.raises(ValueError, match="max_probe_elements"):
        CheckSettings("m:M", "c", "p", max_probe_elements=0)
    assert CheckSettings("m:M", "c", "p").max_probe_elements == MAX_PROBE_ELEMENTS

"""Importing ``--model train:Net`` runs ``train.py``: the check says when that changed files it is about to read."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lightning_igos.cli.model_loading import import_model_class

NET = "import torch.nn as nn\n\nclass Net(nn.Module):\n    pass\n"


@pytest.mark.parametrize("guarded", [False, True])
def test_importing_the_model_module_that_writes_files_is_named(tmp_path: Path, monkeypatch, capsys,
                                                              guarded: bool) -> None:
    name = f"train_script_{int(guarded)}"
    training = "Path('probe.pt').write_bytes(b'retrained')\n"
    body = f"    {training}" if guarded else training
    main = "if __name__ == '__main__':\n" if guarded else ""
    (tmp_path / f"{name}.py").write_text(f"from pathlib import Path\n{NET}\n{main}{body}")
    (tmp_path / "probe.pt").write_bytes(b"the saved probe")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert import_model_class(f"{name}:Net").__name__ == "Net"
    err = capsys.readouterr().err
    if guarded:
        assert err == "" and (tmp_path / "probe.pt").read_bytes() == b"the saved probe"
    else:
        assert f"importing '{name}' for --model changed files under the working directory (probe.pt)" in err
        assert "__main__" in err

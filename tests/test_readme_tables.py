"""README tables that must follow the code: the table of every IGOSCallback argument."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from lightning_igos import IGOSCallback

README = Path(__file__).resolve().parents[1] / "README.md"


def _argument_table() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("**Every argument** of `IGOSCallback`")
    table = text[text.index("| argument | default |", start):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        name, default = re.fullmatch(r"`(.+)`", cells[0]).group(1), re.fullmatch(r"`(.+)`", cells[1]).group(1)
        assert cells[2], f"{name} has no description"
        rows.append((name, default))
    return rows


def test_the_readme_lists_every_callback_argument_with_its_default_in_order() -> None:
    signature = [(name, repr(p.default)) for name, p in inspect.signature(IGOSCallback.__init__).parameters.items()
                 if name != "self"]
    assert _argument_table() == signature
    assert ("log_images", "True") in signature

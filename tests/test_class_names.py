"""Class names: parsing files, normalising sequences and mappings, fitting them to a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lightning_igos.class_names import ClassNames, label, module_class_names, read_class_names


def test_sequence_and_mapping_normalise_to_index_name_pairs() -> None:
    seq = ClassNames.from_value(["cat", "dog", "tabby  cat"])
    assert seq.names == {0: "cat", 1: "dog", 2: "tabby cat"} and seq.complete
    mapping = ClassNames.from_value({3: "truck", 0: "cat"})
    assert mapping.names == {0: "cat", 3: "truck"} and not mapping.complete
    assert seq.label(2) == "2 (tabby cat)" and seq.label(2, style="short") == "2 tabby cat"
    assert mapping.label(1) == "1"
    assert label(5, None) == "5"
    assert mapping.to_json() == {"0": "cat", "3": "truck"}


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("cat", TypeError, "sequence of names"),
        (3, TypeError, "sequence of names"),
        ([], ValueError, "empty"),
        (["cat", 2], TypeError, "strings"),
        (["cat", " "], ValueError, "class 1 is empty"),
        ({1.5: "x"}, TypeError, "integers"),
        ({-1: "x"}, ValueError, ">= 0"),
        ({True: "x"}, TypeError, "integers"),
        ({1: "a", "1": "b"}, ValueError, "twice"),
    ],
)
def test_bad_names_are_clear_errors(value: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ClassNames.from_value(value)


def test_check_fits_length_range_and_indices() -> None:
    names = ClassNames.from_value(["a", "b", "c"])
    names.check_fits(num_classes=3, indices=[0, 2])
    with pytest.raises(ValueError, match="3 class names were given but the model has 4 classes"):
        names.check_fits(num_classes=4)
    with pytest.raises(ValueError, match="index 5 is beyond the 3 class names"):
        names.check_fits(indices=[1, 5])
    partial = ClassNames.from_value({0: "a", 9: "z"})
    partial.check_fits(num_classes=10, indices=[4])  # unnamed classes show their index
    with pytest.raises(ValueError, match="name class 9, but the model has 5 classes"):
        partial.check_fits(num_classes=5)


def test_read_text_and_json_files(tmp_path: Path) -> None:
    text = tmp_path / "names.txt"
    text.write_text("cat\n dog \n\n\n")
    assert read_class_names(text).names == {0: "cat", 1: "dog"}
    listed = tmp_path / "names.json"
    listed.write_text(json.dumps(["cat", "dog"]))
    assert read_class_names(listed).complete
    obj = tmp_path / "obj.json"
    obj.write_text(json.dumps({"0": "cat", "7": "truck"}))
    named = read_class_names(obj)
    assert named.names == {0: "cat", 7: "truck"} and not named.complete


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "is empty"),
        ("cat\n\ndog\n", "line 2 is blank"),
        ("[\"cat\", ", "does not parse"),
        ("[\"cat\", 3]", "strings"),
        ("{\"x\": \"cat\"}", "integers"),
    ],
)
def test_bad_files_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "names.txt"
    path.write_text(content)
    with pytest.raises((ValueError, TypeError), match=match) as info:
        read_class_names(path)
    assert "names.txt" in str(info.value)


def test_module_attributes_are_used_when_they_are_names() -> None:
    class WithNames:
        class_names = ("cat", "dog")

    class WithClasses:
        classes = {1: "dog"}

    class CountOnly:
        classes = 10

    assert module_class_names(WithNames()).names == {0: "cat", 1: "dog"}
    assert module_class_names(WithClasses()).names == {1: "dog"}
    assert module_class_names(CountOnly()) is None
    assert module_class_names(object()) is None

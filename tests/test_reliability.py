"""The shared validators of lightning_igos.core.validation: one rule, the same errors, for every entry point."""

from __future__ import annotations

import pytest
import torch

from lightning_igos.core.validation import (
    check_autocast_dtype,
    check_channel_stats,
    check_mask_size,
    check_non_negative,
    check_positive_int,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (5, (5, 5)), ((3, 7), (3, 7)), ([2, 4], (2, 4)), (torch.tensor(3).item(), (3, 3))],
)
def test_check_mask_size_accepts(value, expected):
    assert check_mask_size(value) == expected


@pytest.mark.parametrize(
    ("value", "error"),
    [((2.9, 3.7), TypeError), (2.5, TypeError), ("8", TypeError), (True, TypeError), ((4, None), TypeError),
     (0, ValueError), ((4, 0), ValueError), ((4,), ValueError), ((1, 2, 3), ValueError)],
)
def test_check_mask_size_rejects_without_truncating(value, error):
    with pytest.raises(error, match="`mask_size`"):
        check_mask_size(value)


def test_check_mask_size_against_the_image():
    assert check_mask_size((8, 4), image_size=(8, 8)) == (8, 4)
    with pytest.raises(ValueError, match="between 1 and the image size"):
        check_mask_size(9, image_size=(8, 8))


@pytest.mark.parametrize(
    ("check", "value", "error"),
    [
        (check_positive_int, 2.5, TypeError), (check_positive_int, "2", TypeError),
        (check_positive_int, False, TypeError), (check_positive_int, 0, ValueError),
        (check_non_negative, "1", TypeError), (check_non_negative, None, TypeError),
        (check_non_negative, -0.5, ValueError), (check_non_negative, float("nan"), ValueError),
        (check_autocast_dtype, "bfloat16", TypeError), (check_autocast_dtype, torch.int32, ValueError),
        (check_autocast_dtype, torch.bool, ValueError),
    ],
)
def test_type_errors_for_types_value_errors_for_values(check, value, error):
    with pytest.raises(error, match="`x`" if check is not check_autocast_dtype else "`autocast_dtype`"):
        check(value, "x") if check is not check_autocast_dtype else check(value)


def test_check_channel_stats():
    assert check_channel_stats(None, "mean") is None
    assert check_channel_stats(torch.tensor([0.1, 0.2]), "mean", channels=2) == pytest.approx((0.1, 0.2))
    assert check_channel_stats(2, "std", channels=4, positive=True) == (2.0,) * 4
    for bad, error in (([0.1, float("nan")], ValueError), ([], ValueError), (["a"], TypeError),
                       (torch.tensor([True]), TypeError), ([0.1, 0.2], ValueError)):
        with pytest.raises(error, match="`mean`"):
            check_channel_stats(bad, "mean", channels=3)
    with pytest.raises(ValueError, match="positive"):
        check_channel_stats([1.0, 0.0], "std", positive=True)

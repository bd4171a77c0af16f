"""A deposit the model saw with low confidence puts its incident in the "to review" queue."""

from __future__ import annotations

from typing import Any

import pytest

from serving.grouping import LOW_CONFIDENCE_MARGIN, _awaits_review
from serving.models import Report


def report(score: float, threshold: float, *, dumping: bool, anyway: bool = False) -> Any:
    return Report(dumping=dumping, agent_says_deposit=anyway, verdict={"score": score, "threshold": threshold})


@pytest.mark.parametrize(
    ("score", "threshold", "dumping", "anyway", "awaits"),
    [
        (0.90, 0.35, True, False, False),  # sure
        (0.35, 0.35, True, False, True),  # at the threshold
        (0.35 + LOW_CONFIDENCE_MARGIN - 1e-6, 0.35, True, False, True),
        (0.35 + LOW_CONFIDENCE_MARGIN, 0.35, True, False, False),  # the margin reached: sure enough
        (0.10, 0.35, False, False, False),  # no deposit, not sent anyway: nothing to review
        (0.10, 0.35, False, True, True),  # sent anyway where the model saw nothing
    ],
)
def test_which_reports_await_a_review(score: float, threshold: float, dumping: bool, anyway: bool,
                                      awaits: bool) -> None:
    assert _awaits_review(report(score, threshold, dumping=dumping, anyway=anyway)) is awaits

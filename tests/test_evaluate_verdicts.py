"""The verdicts (huitouke.evaluate.verdicts): one table, every case covered once, the boundaries of
each condition, the same labels in the CLI, the task log and the docs."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from huitouke.evaluate import stats, verdicts
from huitouke.evaluate.verdicts import VERDICT_TABLE, Facts

ROOT = Path(__file__).resolve().parents[1]
RULES = stats.ComparisonRules(alpha=0.05, min_per_arm=100, max_mde=0.05)


def judge(n1=1000, n0=1000, low=0.01, high=0.05, p=0.001, mde=0.03, rules=RULES) -> str:
    return str(stats.verdict(n1, n0, low, high, p, mde, rules)[()])


def test_every_combination_of_the_facts_has_exactly_one_verdict():
    sides = {"above": (True, False), "below": (False, True), "across": (False, False)}
    seen = set()
    for (above, below), significant, powered in itertools.product(
        sides.values(), (True, False), (True, False)
    ):
        f = Facts(*(np.array([v]) for v in (False, above, below, significant, powered)))
        holding = [v.code for v in VERDICT_TABLE if v.holds(f)[0]]
        assert len(holding) == 1, (above, below, significant, powered, holding)
        seen.add(holding[0])
    assert seen == {v.code for v in VERDICT_TABLE} - {"empty_arm"}
    assert all(len(v.code) <= 16 for v in VERDICT_TABLE)  # evaluations.verdict is a String(16)
    assert len({v.label for v in VERDICT_TABLE}) == len(VERDICT_TABLE)


def test_the_newcomers_case_says_what_the_numbers_say():
    """An interval clear of 0 with p = 0.036 from a test too small to size the lift."""
    assert judge(n1=900, n0=90, low=0.004, high=0.15, p=0.036, mde=0.09) == "likely_lift"
    assert stats.VERDICT_TEXT["likely_lift"] == "likely lift; the test was too small to size it"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # where the interval lies: a bound exactly at 0 includes 0
        ({"low": 1e-9}, "lift"),
        ({"low": 0.0}, "borderline"),  # p < 0.05 but the interval touches 0
        ({"low": -0.05, "high": -1e-9}, "drop"),
        ({"low": -0.05, "high": 0.0}, "borderline"),
        ({"low": np.nan, "high": np.nan, "p": 0.5}, "no_difference"),
        # p against alpha: p = alpha is not significant
        ({"p": 0.0499}, "lift"),
        ({"p": 0.05}, "borderline"),
        ({"p": np.nan}, "borderline"),
        ({"low": -0.01, "p": 0.05}, "no_difference"),
        ({"low": -0.01, "p": 0.049}, "borderline"),
        # power: min_per_arm customers in the smaller arm, an MDE of at most max_mde
        ({"n0": 100}, "lift"),
        ({"n0": 99}, "likely_lift"),
        ({"mde": 0.05}, "lift"),
        ({"mde": 0.0501}, "likely_lift"),
        ({"mde": np.nan}, "likely_lift"),
        ({"low": -0.05, "high": -0.01, "n1": 99}, "likely_drop"),
        ({"low": -0.01, "p": 0.4, "n0": 100}, "no_difference"),
        ({"low": -0.01, "p": 0.4, "n0": 99}, "too_few"),
        ({"low": -0.01, "p": 0.4, "mde": 0.0501}, "too_few"),
        # an empty arm, whatever the rest
        ({"n0": 0}, "empty_arm"),
        ({"n1": 0, "p": np.nan}, "empty_arm"),
    ],
)
def test_the_boundaries_of_each_condition(case, expected):
    assert judge(**case) == expected


def test_the_rules_move_the_boundaries():
    loose = stats.ComparisonRules(alpha=0.1, min_per_arm=10, max_mde=0.1)
    assert judge(n0=50, p=0.07, mde=0.08, rules=loose) == "lift"
    assert judge(n0=50, p=0.07, mde=0.08) == "borderline"


def test_an_unknown_stored_code_is_shown_as_itself():
    old = verdicts.by_code("something_else")
    assert (old.code, old.label) == ("something_else", "something else")
    assert verdicts.by_code("too_few").label == "too few customers to tell"


def test_the_docs_show_the_table_as_defined():
    doc = (ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert verdicts.markdown_table() in doc, "docs/evaluation.md: paste verdicts.markdown_table()"


def test_the_legend_lists_the_verdicts_shown_in_the_tables_order():
    text = verdicts.legend(["too_few", "lift", "too_few"])
    assert text.splitlines()[0].startswith("  lift: More responses")
    assert text.splitlines()[1].startswith("  too few customers to tell: No difference found")
    assert len(text.splitlines()) == 2

"""The evaluation's statistics: hand-computed cases, edge cases, and simulated experiments."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from huitouke.evaluate import stats
from huitouke.evaluate.compare import adjust_for_multiplicity, compare_arms, format_comparisons, to_json

Z = 1.959963984540054  # the 97.5% normal quantile


# ----------------------------------------------------------------------------- hand-computed


def test_two_proportions_by_hand_50_of_500_against_30_of_500():
    # p1 = 50/500 = 0.10, p0 = 30/500 = 0.06, lift d = 0.04 (4 points).
    # Wald: se = sqrt(.1*.9/500 + .06*.94/500) = sqrt(0.00018 + 0.0001128) = 0.0171114;
    #       d ± 1.959964 * 0.0171114 = 0.04 ± 0.0335377 -> [0.0064623, 0.0735377].
    # Pooled z: p = 80/1000 = 0.08, se = sqrt(.08*.92*(2/500)) = 0.0171581, z = 2.33126,
    #       two-sided p = 2 * (1 - Phi(2.33126)) = 0.019740.
    # Wilson 50/500: centre (50 + 1.920729)/503.841459 = 0.103050,
    #       half 1.959964/503.841459 * sqrt(45 + 0.960365) = 0.026372 -> [0.076678, 0.129422].
    # Wilson 30/500: centre 0.063354, half 0.00389004 * sqrt(28.2 + 0.960365) = 0.021006
    #       -> [0.042348, 0.084360].
    # Newcombe: low  = 0.04 - sqrt((0.1 - 0.076678)^2 + (0.084360 - 0.06)^2) = 0.006276,
    #           high = 0.04 + sqrt((0.129422 - 0.1)^2 + (0.06 - 0.042348)^2) = 0.074311.
    # Relative lift 0.1/0.06 - 1 = 0.666667; Katz se = sqrt(1/50 - 1/500 + 1/30 - 1/500) = 0.222111,
    #       exp(ln(5/3) ± 1.959964 * 0.222111) - 1 -> [0.07842, 1.57579].
    low, high = stats.wilson_interval(50, 500)
    assert (float(low), float(high)) == pytest.approx((0.076678, 0.129422), abs=2e-6)
    low, high = stats.wilson_interval(30, 500)
    assert (float(low), float(high)) == pytest.approx((0.042348, 0.084360), abs=2e-6)

    wald = stats.wald_interval(50, 500, 30, 500)
    assert [float(v) for v in wald] == pytest.approx([0.0064623, 0.0735377], abs=1e-6)

    r = stats.compare_proportions(50, 500, 30, 500)
    assert float(r.rate) == 0.1 and float(r.control_rate) == 0.06
    assert float(r.lift) == pytest.approx(0.04)
    assert (float(r.lift_low), float(r.lift_high)) == pytest.approx((0.006276, 0.074311), abs=2e-6)
    assert float(r.p_value) == pytest.approx(0.019740, abs=1e-6)
    assert not bool(r.small)
    assert float(r.relative_lift) == pytest.approx(2 / 3)
    assert (float(r.relative_lift_low), float(r.relative_lift_high)) == pytest.approx(
        (0.07842, 1.57579), abs=1e-5
    )
    # interval="auto" keeps Wald for large counts, as the rule reads.
    auto = stats.compare_proportions(50, 500, 30, 500, interval="auto")
    assert (float(auto.lift_low), float(auto.lift_high)) == pytest.approx((0.0064623, 0.0735377), abs=1e-6)


def test_small_counts_use_fisher_and_newcombe():
    # 3 of 40 against 9 of 40: cells 3 and 9 are below 10 -> small.
    r = stats.compare_proportions(3, 40, 9, 40, interval="auto")
    assert bool(r.small)
    expected = sps.fisher_exact([[3, 37], [9, 31]]).pvalue
    assert float(r.p_value) == pytest.approx(expected)
    low, high = stats.newcombe_interval(3, 40, 9, 40)
    assert (float(r.lift_low), float(r.lift_high)) == (float(low), float(high))
    assert -1 <= float(low) < float(r.lift) < float(high) <= 1


def test_welch_by_hand_and_against_scipy():
    # Treated revenue (cents) 0, 0, 100, 200: mean 75, variance (75²+75²+25²+125²)/3 = 9166.667.
    # Control 0, 50, 0: mean 16.667, variance (16.667²+33.333²+16.667²)/2 = 833.333.
    # se = sqrt(9166.667/4 + 833.333/3) = sqrt(2291.667 + 277.778) = 50.6897.
    # df = 2569.444² / (2291.667²/3 + 277.778²/2) = 6602045 / 1789159.6 = 3.6900.
    treated, control = np.array([0, 0, 100, 200.0]), np.array([0, 50, 0.0])
    w = stats.welch_difference(4, treated.mean(), treated.var(ddof=1), 3, control.mean(), control.var(ddof=1))
    assert float(w.difference) == pytest.approx(75 - 50 / 3)
    assert float(w.df) == pytest.approx(3.6900, abs=1e-4)
    t_crit = sps.t.ppf(0.975, 3.6900)
    assert float(w.low) == pytest.approx(75 - 50 / 3 - t_crit * 50.6897, abs=1e-3)
    reference = sps.ttest_ind(treated, control, equal_var=False)
    ci = reference.confidence_interval(0.95)
    assert float(w.p_value) == pytest.approx(reference.pvalue)
    assert (float(w.low), float(w.high)) == pytest.approx((ci.low, ci.high))


def test_minimum_detectable_effect_solves_its_equation_and_has_80_percent_power():
    mde = float(stats.minimum_detectable_effect(500, 500, 0.06))
    p1 = 0.06 + mde
    pbar = (p1 + 0.06) / 2
    rhs = Z * np.sqrt(pbar * (1 - pbar) * (2 / 500)) + sps.norm.ppf(0.8) * np.sqrt(
        0.06 * 0.94 / 500 + p1 * (1 - p1) / 500
    )
    assert mde == pytest.approx(rhs, abs=1e-9)
    assert 0.045 < mde < 0.055  # the textbook shortcut 2.80 * sqrt(2 * .06 * .94 / 500) gives 0.042
    rng = np.random.default_rng(11)
    x1, x0 = (
        rng.binomial(4500, 0.05 + stats.minimum_detectable_effect(4500, 500, 0.05), 20_000),
        rng.binomial(500, 0.05, 20_000),
    )
    power = np.mean(stats.pooled_z_p(x1, 4500, x0, 500) < 0.05)
    assert 0.77 < power < 0.83
    # Larger arms detect smaller lifts; a baseline of 0 still needs a positive lift.
    assert stats.minimum_detectable_effect(5000, 5000, 0.1) < stats.minimum_detectable_effect(500, 500, 0.1)
    assert float(stats.minimum_detectable_effect(1000, 100, 0.0)) > 0.01
    assert np.isnan(stats.minimum_detectable_effect(0, 100, 0.1))


# ---------------------------------------------------------------------------------- edge cases


def test_zero_responders_in_both_arms():
    r = stats.compare_proportions(0, 500, 0, 50)
    assert float(r.lift) == 0.0
    assert float(r.lift_low) < 0 < float(r.lift_high)  # an honest interval, not the point 0
    assert float(r.p_value) == 1.0
    assert np.isnan(r.relative_lift)
    v = stats.verdict(
        500, 50, r.lift_low, r.lift_high, r.p_value, stats.minimum_detectable_effect(500, 50, 0)
    )
    assert v[()] == "too_few"


def test_all_responders_in_both_arms():
    r = stats.compare_proportions(500, 500, 50, 50)
    assert float(r.lift) == 0.0 and float(r.lift_low) < 0 < float(r.lift_high)
    assert float(r.p_value) == 1.0
    assert float(r.relative_lift) == 0.0 and np.isnan(r.relative_lift_low)


def test_an_empty_arm_gives_nan_figures_and_the_empty_arm_verdict():
    r = stats.compare_proportions(10, 100, 0, 0)
    assert float(r.rate) == 0.1
    assert np.isnan(r.control_rate) and np.isnan(r.lift) and np.isnan(r.lift_low) and np.isnan(r.p_value)
    mde = stats.minimum_detectable_effect(100, 0, r.control_rate)
    assert stats.verdict(100, 0, r.lift_low, r.lift_high, r.p_value, mde)[()] == "empty_arm"
    w = stats.welch_difference(100, 10.0, 4.0, 0, np.nan, np.nan)
    assert np.isnan(w.difference) and np.isnan(w.low)


def test_revenue_without_any_variance():
    w = stats.welch_difference(50, 0.0, 0.0, 20, 0.0, 0.0)  # nobody bought anything
    assert (float(w.difference), float(w.low), float(w.high), float(w.p_value)) == (0.0, 0.0, 0.0, 1.0)


def test_invalid_counts_and_options_are_refused():
    with pytest.raises(ValueError, match="between 0 and the number"):
        stats.compare_proportions(11, 10, 0, 10)
    with pytest.raises(ValueError, match="interval must be one of"):
        stats.compare_proportions(1, 10, 0, 10, interval="exact")
    with pytest.raises(ValueError, match="confidence"):
        stats.wilson_interval(1, 10, confidence=95)


def test_verdict_rule():
    kw = {"rules": stats.ComparisonRules(min_per_arm=100, max_mde=0.05)}
    assert stats.verdict(1000, 1000, 0.01, 0.05, 0.001, 0.03, **kw)[()] == "lift"
    assert stats.verdict(1000, 1000, -0.05, -0.01, 0.001, 0.03, **kw)[()] == "drop"
    assert stats.verdict(1000, 1000, -0.01, 0.05, 0.2, 0.03, **kw)[()] == "no_difference"
    # The interval excludes 0 but the p-value disagrees: no claim, and no "no effect" either.
    assert stats.verdict(1000, 1000, 0.001, 0.05, 0.06, 0.03, **kw)[()] == "borderline"
    # Significant, but underpowered: a likely lift whose size the test cannot tell.
    assert stats.verdict(1000, 99, 0.01, 0.2, 0.001, 0.03, **kw)[()] == "likely_lift"
    assert stats.verdict(1000, 1000, 0.01, 0.2, 0.001, 0.06, **kw)[()] == "likely_lift"
    assert stats.verdict(1000, 99, -0.2, -0.01, 0.001, 0.03, **kw)[()] == "likely_drop"
    assert stats.verdict(1000, 99, -0.1, 0.2, 0.4, 0.03, **kw)[()] == "too_few"
    assert stats.verdict(0, 1000, np.nan, np.nan, np.nan, np.nan, **kw)[()] == "empty_arm"
    assert set(stats.VERDICT_TEXT) == set(stats.VERDICTS)


# -------------------------------------------------------------------------------- simulations


def _coverage(n1, n0, p1, p0, seed, experiments=2000, **options):
    rng = np.random.default_rng(seed)
    x1, x0 = rng.binomial(n1, p1, experiments), rng.binomial(n0, p0, experiments)
    r = stats.compare_proportions(x1, n1, x0, n0, **options)
    truth = p1 - p0
    covered = (r.lift_low <= truth) & (truth <= r.lift_high)
    return float(covered.mean()), r, (x1, x0)


@pytest.mark.parametrize(
    ("n1", "n0", "p", "seed"),
    [
        (2000, 2000, 0.10, 1),  # balanced, large: every comparison is z/Wald-sized
        (900, 100, 0.08, 2),  # a 10% holdout: about 8 holdout responders, mostly small
        (5000, 500, 0.02, 3),  # a rare response
        (200, 30, 0.20, 4),  # small arms
    ],
)
def test_aa_interval_covers_zero_in_93_to_97_percent(n1, n0, p, seed):
    coverage, r, (x1, x0) = _coverage(n1, n0, p, p, seed)
    assert 0.93 <= coverage <= 0.97, coverage
    # A/A: the verdict claims an effect only when the interval excludes 0, i.e. rarely.
    mde = stats.minimum_detectable_effect(n1, n0, r.control_rate)
    verdicts = stats.verdict(
        n1, n0, r.lift_low, r.lift_high, r.p_value, mde, stats.ComparisonRules(min_per_arm=1, max_mde=1)
    )
    claimed = np.isin(verdicts, ["lift", "drop", "likely_lift", "likely_drop"])
    covers_zero = (r.lift_low <= 0) & (r.lift_high >= 0)
    assert not (claimed & covers_zero).any()
    assert claimed.mean() <= 0.06
    assert np.mean(r.p_value < 0.05) <= 0.065


@pytest.mark.parametrize(
    ("n1", "n0", "p1", "p0", "seed"),
    [
        (1800, 200, 0.12, 0.08, 5),  # a 4-point lift with a 10% holdout
        (3000, 3000, 0.25, 0.20, 6),
        (400, 100, 0.10, 0.03, 7),  # a large relative lift on a small base
    ],
)
def test_known_effect_interval_covers_the_true_lift_in_93_to_97_percent(n1, n0, p1, p0, seed):
    coverage, r, _ = _coverage(n1, n0, p1, p0, seed)
    assert 0.93 <= coverage <= 0.97, coverage
    # The point estimate is unbiased.
    assert float(np.mean(r.lift)) == pytest.approx(p1 - p0, abs=0.003)


def test_known_effect_relative_lift_interval_coverage():
    coverage_of = []
    for seed, (n1, n0, p1, p0) in enumerate([(1800, 200, 0.15, 0.10), (3000, 3000, 0.25, 0.20)], start=20):
        _, r, _ = _coverage(n1, n0, p1, p0, seed)
        truth = p1 / p0 - 1
        coverage_of.append(np.mean((r.relative_lift_low <= truth) & (truth <= r.relative_lift_high)))
    assert all(0.93 <= c <= 0.97 for c in coverage_of), coverage_of


def test_welch_revenue_interval_coverage():
    # Revenue per customer: 0 for non-responders, log-normal around 100 CNY for responders.
    rng = np.random.default_rng(8)
    experiments, n1, n0, p1, p0 = 2000, 2000, 500, 0.12, 0.10
    mu, sigma = np.log(10_000), 0.8
    mean_order = np.exp(mu + sigma**2 / 2)

    def revenue(n, p):
        bought = rng.random((experiments, n)) < p
        return np.where(bought, rng.lognormal(mu, sigma, (experiments, n)), 0.0)

    r1, r0 = revenue(n1, p1), revenue(n0, p0)
    w = stats.welch_difference(n1, r1.mean(1), r1.var(1, ddof=1), n0, r0.mean(1), r0.var(1, ddof=1))
    truth = (p1 - p0) * mean_order
    coverage = np.mean((w.low <= truth) & (truth <= w.high))
    assert 0.93 <= coverage <= 0.97, coverage


def test_fisher_is_computed_once_per_distinct_table():
    p = stats.fisher_exact_p([1, 1, 2], [10, 10, 10], [3, 3, 3], [10, 10, 10])
    assert p[0] == p[1] == pytest.approx(sps.fisher_exact([[1, 9], [3, 7]]).pvalue)
    assert p[2] == pytest.approx(sps.fisher_exact([[2, 8], [3, 7]]).pvalue)


# ------------------------------------------------------------------------- arms from customers


def _customers(rows):
    """rows: (arm, customers, responders, revenue per responder in cents, cost per customer)."""
    frames = []
    for arm, n, x, amount, cost in rows:
        frames.append(
            pd.DataFrame(
                {
                    "arm": arm,
                    "responded": np.arange(n) < x,
                    "revenue_cents": np.where(np.arange(n) < x, amount, 0),
                    "cost": cost,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_compare_arms_money_figures_by_hand():
    # Treated: 500 customers, 50 responders at 100.00 CNY, 0.045 CNY per customer (4.5 fen).
    # Holdout: 500 customers, 30 responders at 100.00 CNY, no cost.
    # Revenue per customer 1000 vs 600 cents; incremental 400 cents per customer, 200,000 in total.
    # Cost 500 * 4.5 = 2,250 cents. Incremental ROI 200,000 / 2,250 = 88.89; naive ROI
    # (responders' revenue / cost) = 500,000 / 2,250 = 222.22; net 200,000 - 2,250 = 197,750.
    frame = _customers([("treatment", 500, 50, 10_000, 4.5), ("holdout", 500, 30, 10_000, 0.0)])
    row = compare_arms(frame, "holdout", cost="cost").iloc[0]
    assert (row["customers"], row["responders"], row["control_customers"], row["control_responders"]) == (
        500,
        50,
        500,
        30,
    )
    assert row["revenue_per_customer_cents"] == 1000 and row["control_revenue_per_customer_cents"] == 600
    assert row["incremental_revenue_cents"] == pytest.approx(200_000)
    assert row["cost_cents"] == pytest.approx(2250)
    assert row["incremental_roi"] == pytest.approx(200_000 / 2250)
    assert row["naive_roi"] == pytest.approx(500_000 / 2250)
    assert row["net_incremental_cents"] == pytest.approx(197_750)
    assert row["incremental_revenue_low_cents"] < 200_000 < row["incremental_revenue_high_cents"]
    assert row["lift"] == pytest.approx(0.04) and row["test"] == "z" and row["interval"] == "newcombe"
    # MDE at 500 per arm and 6% is about 4.9 points: powered by the 5-point rule.
    assert row["verdict"] == "lift"
    table = format_comparisons(compare_arms(frame, "holdout", cost="cost"))
    assert "+4.00 [+0.63, +7.43]" in table and "2,000.00" in table and "88.89" in table
    assert "222.22" in table and table.splitlines()[1].endswith("  lift")
    assert '"naive_roi": 222.22' in to_json(compare_arms(frame, "holdout", cost="cost"))


def test_compare_arms_with_many_arms_and_a_missing_arm():
    frame = _customers([("control", 300, 30, 5000, 0), ("A", 300, 60, 5000, 1), ("B", 300, 31, 5000, 1)])
    out = compare_arms(frame, "control", arms=["A", "B", "C"])
    assert list(out["arm"]) == ["A", "B", "C"]
    assert out.set_index("arm").loc["C", "verdict"] == "empty_arm"
    adjusted = adjust_for_multiplicity(out)
    assert list(adjusted["comparisons"]) == [2, 2, 2]  # C has no customers: not a comparison
    assert adjusted.loc[0, "p_value_adjusted"] == pytest.approx(min(1, 2 * out.loc[0, "p_value"]))
    # No control at all: every arm is an empty-arm comparison.
    assert set(compare_arms(frame[frame["arm"] != "control"], "control")["verdict"]) == {"empty_arm"}


def test_bonferroni_withdraws_a_claim_that_does_not_survive():
    frame = pd.DataFrame(
        {
            "arm": ["a", "b"],
            "customers": [1000, 1000],
            "control_customers": [1000, 1000],
            "lift_low": [0.001, -0.01],
            "lift_high": [0.05, 0.04],
            "p_value": [0.03, 0.2],
            "mde": [0.03, 0.03],
            "verdict": ["lift", "no_difference"],
            "verdict_text": ["lift", "no effect large enough to matter"],
        }
    )
    out = adjust_for_multiplicity(frame)
    assert list(out["p_value_adjusted"]) == [0.06, 0.4]
    # The interval still excludes 0, the adjusted p does not pass: borderline, not "no effect".
    assert list(out["verdict"]) == ["borderline", "no_difference"]
    assert out.loc[0, "verdict_text"] == "borderline; not enough to claim an effect"

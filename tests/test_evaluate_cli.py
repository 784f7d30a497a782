"""``huitouke evaluate FILE.csv``: an experiment run elsewhere, as tables and as JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from huitouke.cli import main as huitouke_main
from huitouke.evaluate import cli as evaluate_cli
from huitouke.evaluate import stats
from huitouke.evaluate.experiment import ExperimentFileError, parse_cny, parse_responded, read_experiment_csv


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def experiment_csv(tmp_path):
    """Three arms: holdout 60/600 responders, sms 90/600, email 66/600; revenue 100.00 CNY each."""
    rows = []
    for arm, n, x, cost in (("holdout", 600, 60, ""), ("sms", 600, 90, "0.045"), ("email", 600, 66, "0.002")):
        for i in range(n):
            bought = i < x
            rows.append(
                {
                    "group": arm,
                    "bought": ("yes" if i % 2 else "TRUE") if bought else ("no" if i % 2 else "0"),
                    "gmv": "100.00" if bought else "",
                    "sms_cost": cost,
                }
            )
    path = tmp_path / "experiment.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


ARGS = [
    "--arm-column",
    "group",
    "--control",
    "holdout",
    "--responded-column",
    "bought",
    "--revenue-column",
    "gmv",
]


def test_table_through_the_huitouke_command(experiment_csv, capsys):
    assert huitouke_main(["evaluate", str(experiment_csv), *ARGS, "--cost-column", "sms_cost"]) == 0
    out = capsys.readouterr().out
    assert "3 arm(s), control 'holdout'" in out
    assert "holdout (control)" in out
    # sms: 15% against 10%: +5.00 points, an interval clear of 0 and p adj. < 0.05; but 600 per arm
    # gives an MDE above 5 points: a likely lift whose size the test cannot tell.
    sms = next(line for line in out.splitlines() if line.startswith("sms ") and "+5.00 [" in line)
    assert "15.00%" in sms and "10.00%" in sms
    assert sms.endswith("likely lift; the test was too small to size it")
    assert "Verdicts (docs/evaluation.md):\n  likely lift; the test was too small to size it: Probably" in out
    assert "Revenue and cost (CNY)" in out and "p adj." in out
    # sms revenue: 90 * 100 CNY over 600 = 15.00 per customer against 10.00; cost 600 * 0.045 = 27.00.
    money = next(line for line in out.splitlines() if line.startswith("sms ") and "27.00" in line)
    assert "15.00" in money and "10.00" in money and "+3,000.00" in money


def test_json_has_the_same_figures(experiment_csv, capsys):
    assert evaluate_cli.main([str(experiment_csv), *ARGS, "--cost-column", "sms_cost", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["control"] == "holdout" and doc["confidence"] == 0.95
    assert [a["arm"] for a in doc["arms"]] == ["holdout", "email", "sms"]
    assert [a["customers"] for a in doc["arms"]] == [600, 600, 600]
    rows = {r["arm"]: r for r in doc["comparisons"]}
    assert set(rows) == {"email", "sms"}
    sms = rows["sms"]
    expected = stats.compare_proportions(90, 600, 60, 600)
    assert sms["lift"] == pytest.approx(0.05)
    assert sms["lift_low"] == pytest.approx(float(expected.lift_low))
    assert sms["p_value"] == pytest.approx(float(expected.p_value))
    assert sms["revenue_cents"] == 900_000 and sms["control_revenue_cents"] == 600_000
    assert sms["incremental_revenue_cents"] == pytest.approx(300_000)
    assert sms["cost_cents"] == pytest.approx(2_700)
    assert sms["naive_roi"] == pytest.approx(900_000 / 2_700)
    assert sms["comparisons"] == 2 and sms["p_value_adjusted"] == pytest.approx(2 * sms["p_value"])
    assert sms["verdict"] == "likely_lift"
    assert sms["verdict_text"] == "likely lift; the test was too small to size it"
    # Relaxing the power rule lets the verdict speak (the Bonferroni-adjusted p is still < 0.05).
    assert evaluate_cli.main([str(experiment_csv), *ARGS, "--max-mde", "10%", "--json"]) == 0
    relaxed = {r["arm"]: r for r in json.loads(capsys.readouterr().out)["comparisons"]}
    assert relaxed["sms"]["verdict"] == "lift" and relaxed["email"]["verdict"] == "no_difference"
    assert relaxed["sms"]["cost_cents"] == 0 and relaxed["sms"]["naive_roi"] is None  # no cost column


def test_revenue_column_defaults_to_revenue_when_present(tmp_path, capsys):
    path = _write(tmp_path / "a.csv", "arm,responded,revenue\nc,1,10\nc,0,\nt,yes,¥1,234.5\nt,no,0\n")
    # The unquoted "¥1,234.5" splits into two fields: the row is too long, not silently misread.
    assert evaluate_cli.main([str(path), "--control", "c"]) == 2
    assert "line 4" in capsys.readouterr().err
    path = _write(tmp_path / "b.csv", 'arm,responded,revenue\nc,1,10\nc,0,\nt,yes,"¥1,234.5"\nt,no,0\n')
    frame = read_experiment_csv(path)
    assert list(frame["revenue_cents"]) == [1000, 0, 123450, 0]
    assert list(frame["responded"]) == [True, False, True, False]
    assert frame["cost_cents"].isna().all()


def test_bad_rows_name_the_file_line_and_column(tmp_path, capsys):
    path = _write(tmp_path / "bad.csv", "arm,responded,revenue\nA,1,10\nB,maybe,5\ncontrol,0,-3\n,1,2\n")
    assert huitouke_main(["evaluate", str(path), "--control", "control"]) == 2
    err = capsys.readouterr().err
    assert f"3 bad row(s) in {path}" in err
    assert f"{path}, line 3, column 'responded': expected 1/0, true/false or yes/no (got 'maybe')" in err
    assert f"{path}, line 4, column 'revenue': an amount cannot be negative (got '-3')" in err
    assert f"{path}, line 5, column 'arm': the arm is empty" in err


def test_file_level_mistakes(tmp_path, capsys):
    missing_col = _write(tmp_path / "cols.csv", "arm,bought\nA,1\n")
    assert evaluate_cli.main([str(missing_col), "--control", "A"]) == 2
    assert "no column 'responded' in the header (columns: arm, bought)" in capsys.readouterr().err
    explicit = _write(tmp_path / "rev.csv", "arm,responded\nA,1\n")
    assert evaluate_cli.main([str(explicit), "--control", "A", "--revenue-column", "gmv"]) == 2
    assert "no column 'gmv'" in capsys.readouterr().err
    no_control = _write(tmp_path / "ctrl.csv", "arm,responded\nA,1\nB,0\n")
    assert evaluate_cli.main([str(no_control), "--control", "holdout"]) == 2
    assert "the control arm 'holdout' is not among the arms (A, B)" in capsys.readouterr().err
    empty = _write(tmp_path / "empty.csv", "")
    assert evaluate_cli.main([str(empty), "--control", "A"]) == 2
    assert "the file is empty" in capsys.readouterr().err
    header_only = _write(tmp_path / "header.csv", "arm,responded\n\n")
    assert evaluate_cli.main([str(header_only), "--control", "A"]) == 2
    assert "no customer rows" in capsys.readouterr().err
    assert evaluate_cli.main([str(tmp_path / "nope.csv"), "--control", "A"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_an_arm_with_every_customer_responding_and_one_with_none(tmp_path, capsys):
    lines = ["arm,responded"] + ["c,1"] * 5 + ["c,0"] * 5 + ["all,1"] * 10 + ["none,0"] * 10
    path = _write(tmp_path / "edge.csv", "\n".join(lines) + "\n")
    assert evaluate_cli.main([str(path), "--control", "c", "--json"]) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)["comparisons"]}
    assert rows["all"]["response_rate"] == 1.0 and rows["none"]["response_rate"] == 0.0
    assert rows["all"]["lift_low"] < 0.5 < rows["all"]["lift_high"] <= 1.0
    assert rows["none"]["test"] == "fisher" and rows["none"]["relative_lift_low"] is None
    # Each interval is clear of 0 (10/10 and 0/10 against 5/10), but Fisher's p adjusted for the two
    # comparisons is not below 0.05: borderline, neither a claim nor "too few to tell".
    assert all(r["lift_low"] > 0 or r["lift_high"] < 0 for r in rows.values())
    assert all(r["p_value_adjusted"] >= 0.05 for r in rows.values())
    assert {r["verdict"] for r in rows.values()} == {"borderline"}
    assert rows["all"]["revenue_cents"] is None  # no revenue column: no revenue figures
    assert evaluate_cli.main([str(path), "--control", "c"]) == 0
    assert "borderline; not enough to claim an effect" in capsys.readouterr().out


def test_value_parsers():
    assert [parse_responded(v) for v in ("1", "Yes", "TRUE", "t", "y", "是")] == [True] * 6
    assert [parse_responded(v) for v in ("0", "No", "false", "F", "n", " 否 ")] == [False] * 6
    with pytest.raises(ValueError):
        parse_responded("2")
    assert parse_cny(" ¥12.50 ") * 100 == 1250 and parse_cny("") == 0 and parse_cny("1,000") == 1000
    for bad in ("abc", "-1", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_cny(bad)


def test_parser_defaults_agree_with_the_statistics():
    assert evaluate_cli.MIN_PER_ARM == stats.MIN_PER_ARM
    assert evaluate_cli.MAX_MDE == stats.MAX_MDE
    assert evaluate_cli.INTERVALS == stats.INTERVALS
    assert issubclass(ExperimentFileError, ValueError)


def test_a_large_file_with_many_arms_is_quick(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 60_000
    arm = rng.choice(["control", "a", "b", "c"], n)
    bought = rng.random(n) < np.where(arm == "a", 0.13, 0.10)
    pd.DataFrame({"arm": arm, "responded": bought.astype(int), "revenue": np.where(bought, 88.8, 0)}).to_csv(
        tmp_path / "big.csv", index=False
    )
    assert evaluate_cli.main([str(tmp_path / "big.csv"), "--control", "control", "--json"]) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)["comparisons"]}
    assert rows["a"]["verdict"] == "lift" and rows["a"]["lift_low"] <= 0.03 <= rows["a"]["lift_high"]
    assert rows["b"]["comparisons"] == 3


# ------------------------------------------------------------------- bad numbers, files and options


def test_huge_or_non_finite_amounts_name_the_file_line_and_column(tmp_path, capsys):
    path = _write(
        tmp_path / "huge.csv",
        "arm,responded,revenue,cost\nA,1,10,0.045\nB,1,1e30,inf\nB,0,1e17,1e400\nB,1,13812345678,\n",
    )
    assert huitouke_main(["evaluate", str(path), "--control", "A", "--cost-column", "cost"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("error: ") for line in err.splitlines())
    plausible = "an amount above 1,000,000,000 CNY per customer is not plausible"
    assert f"{path}, line 3, column 'revenue': {plausible} (got '1e30')" in err
    assert f"{path}, line 3, column 'cost': expected a finite amount in CNY, e.g. 12.50 (got 'inf')" in err
    assert f"{path}, line 4, column 'revenue': {plausible} (got '1e17')" in err
    assert f"{path}, line 4, column 'cost': {plausible} (got '1e400')" in err
    assert f"{path}, line 5, column 'revenue': {plausible} (got '138****5678')" in err
    assert "13812345678" not in err


def test_an_unknown_encoding_a_folder_and_bad_options(tmp_path, capsys):
    path = _write(tmp_path / "ok.csv", "arm,responded\nA,1\nB,0\n")
    assert huitouke_main(["evaluate", str(tmp_path), "--control", "A"]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: a folder, not a file\n"
    with pytest.raises(ExperimentFileError, match=r"ok.csv: unknown encoding 'nosuch'"):
        read_experiment_csv(path, encoding="nosuch")
    for option, value, says in (
        ("--encoding", "nosuch", "unknown text encoding 'nosuch'"),
        ("--encoding", "hex", "unknown text encoding 'hex'"),
        ("--min-per-arm", "-5", "expected a whole number of at least 1, got '-5'"),
        ("--min-per-arm", "0", "expected a whole number of at least 1, got '0'"),
        ("--confidence", "1", "expected a fraction strictly between 0 and 1"),
        ("--confidence", "0", "expected a fraction strictly between 0 and 1"),
        ("--confidence", "nan", "expected a fraction strictly between 0 and 1"),
        ("--confidence", "abc", "expected a fraction strictly between 0 and 1"),
        ("--max-mde", "150%", "expected a fraction strictly between 0 and 1"),
    ):
        with pytest.raises(SystemExit) as exited:
            huitouke_main(["evaluate", str(path), "--control", "A", option, value])
        err = capsys.readouterr().err
        assert exited.value.code == 2 and f"argument {option}: {says}" in err, err


def test_the_intervals_are_headed_with_their_level(experiment_csv, capsys):
    argv = ["evaluate", str(experiment_csv), *ARGS, "--confidence", "0.9"]
    assert huitouke_main(argv) == 0
    out = capsys.readouterr().out
    assert "95%" not in out
    assert "response rate [90% CI]" in out and "lift pp [90% CI]" in out
    assert "incremental revenue [90% CI]" in out
    assert huitouke_main([*argv, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["confidence"] == 0.9
    assert huitouke_main(["evaluate", str(experiment_csv), *ARGS, "--confidence", "97.5%"]) == 0
    assert "lift pp [97.5% CI]" in capsys.readouterr().out


def test_the_command_run_as_a_process_exits_2_without_a_traceback(tmp_path):
    import subprocess
    import sys

    path = _write(tmp_path / "big.csv", "arm,responded,revenue\nA,1,1e30\n")
    result = subprocess.run(
        [sys.executable, "-m", "huitouke.evaluate.cli", str(path), "--control", "A"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: ") and "line 2, column 'revenue'" in result.stderr

"""Stage 6 of the daily run: what a message added, against the natural repurchase of a holdout.

Plain functions over numbers and DataFrames (no database, no Airflow)::

    from huitouke.evaluate import WaveOptions, evaluate_waves, compare_arms, evaluate_experiment

    ev = evaluate_waves(waves, orders, as_of, messages=outbox, options=WaveOptions(windows={...}, ...))
    store(ev.results)                 # keyed by campaign, wave, due_on, window_days, view
    log.info("\\n%s", ev.as_text())    # the task log's tables

- :mod:`huitouke.evaluate.stats`: two proportions (Newcombe/Wald intervals, z or Fisher
  p-values, relative lift), Welch revenue comparison, minimum detectable effect, the verdict;
  :mod:`huitouke.evaluate.verdicts`: the verdicts' one table (condition, label, explanation).
- :mod:`huitouke.evaluate.compare`: one row per customer -> one comparison row per arm, tables, JSON.
- :mod:`huitouke.evaluate.waves`: the daily per-wave, per-window evaluation (:class:`WaveOptions`);
  :mod:`huitouke.evaluate.result`: its frames' columns, :class:`WaveEvaluation` and the task
  log's tables.
- :mod:`huitouke.evaluate.daily`: the stage's ``run_day``; :mod:`huitouke.evaluate.persist`:
  its reads and writes of the store.
- :mod:`huitouke.evaluate.pool`: stored evaluations pooled over a campaign's waves (the UI's
  results and campaign pages, the demo's closing table).
- :mod:`huitouke.evaluate.experiment` and :mod:`huitouke.evaluate.cli`: ``huitouke evaluate FILE.csv``.

The names below are imported on first use (PEP 562), so that ``huitouke --help`` and the other
commands do not pay for pandas and scipy. See docs/evaluation.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "COMPARISON_COLUMNS": "compare",
    "SUMMARY_COLUMNS": "compare",
    "adjust_for_multiplicity": "compare",
    "as_records": "compare",
    "compare_arms": "compare",
    "compare_summaries": "compare",
    "format_comparisons": "compare",
    "summarize_arms": "compare",
    "to_json": "compare",
    "Experiment": "experiment",
    "ExperimentFileError": "experiment",
    "evaluate_experiment": "experiment",
    "read_experiment_csv": "experiment",
    "ComparisonRules": "stats",
    "VERDICTS": "stats",
    "VERDICT_TEXT": "stats",
    "VERDICT_TABLE": "verdicts",
    "compare_proportions": "stats",
    "welch_difference": "stats",
    "BREAKDOWN_COLUMNS": "result",
    "CATEGORY_COLUMNS": "result",
    "CUMULATIVE_COLUMNS": "result",
    "CURVE_COLUMNS": "result",
    "RESULT_COLUMNS": "result",
    "RESULT_KEY": "result",
    "VIEWS": "result",
    "WaveEvaluation": "result",
    "MessageCosts": "waves",
    "WaveOptions": "waves",
    "evaluate_waves": "waves",
    "planned_send_time": "waves",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

"""Stage 2 of the daily run: customer state, segments, segment history and the day's KPIs.

Plain functions over pandas DataFrames, from orders to figures, with the store and Airflow at
the edges::

    state = build_state(orders, lines, settings=settings)               # or, daily:
    state = update_state(state, orders_of_touched_customers, their_lines, settings=settings)
    # (the store's daily run folds only the pending orders in: plan_fold + fold, see .fold)
    segments = classify(state, business_date, settings)
    changes = diff_segments(open_history_rows, segments, business_date)  # rows to close / open
    kpis = compute_kpis(segments, business_date, settings, changes.transitions)
    print(format_kpis(kpis))

``analyze(orders, lines, settings)`` does state, segments and KPIs in one call.
The rules come from the ``segments:`` section of ``include/playbook.yaml``
(:func:`load_segment_settings`).

The daily run through the store: :func:`huitouke.segments.daily.run_day`; ``persist`` is the
stage's edge of the store (what is read and written; how, on each database, is
:mod:`huitouke.store.rows`), ``snapshot`` the local copy of the state for the next run,
``allocator`` Arrow's memory pool during a run.
"""

from huitouke.segments.classify import (
    LIFECYCLES,
    SEGMENT_COLUMNS,
    SEGMENTS_COLUMNS,
    QuintileBounds,
    classify,
    quintile_bounds,
    quintile_scores,
    scores_from_bounds,
)
from huitouke.segments.fold import (
    PENDING_COLUMNS,
    Folded,
    FoldedRows,
    FoldPlan,
    fold_orders,
    fold_rows,
    fold_state,
    plan_fold,
)
from huitouke.segments.history import (
    HISTORY_COLUMNS,
    LABEL_COLUMNS,
    NO_LIFECYCLE,
    SegmentChanges,
    apply_changes,
    canonical_labels,
    diff_segments,
    empty_history,
    open_rows_of,
    same_customers,
    segments_on,
)
from huitouke.segments.kpis import Analysis, analyze, compute_kpis, format_kpis
from huitouke.segments.settings import (
    SegmentSettings,
    load_segment_settings,
    parse_segment_settings,
    playbook_path,
)
from huitouke.segments.state import (
    SPEND_COLUMNS,
    STATE_COLUMNS,
    build_state,
    build_state_and_spend,
    empty_spend,
    empty_state,
    update_state,
)

__all__ = [
    "HISTORY_COLUMNS",
    "LABEL_COLUMNS",
    "LIFECYCLES",
    "NO_LIFECYCLE",
    "PENDING_COLUMNS",
    "SEGMENTS_COLUMNS",
    "SEGMENT_COLUMNS",
    "SPEND_COLUMNS",
    "STATE_COLUMNS",
    "Analysis",
    "FoldPlan",
    "Folded",
    "FoldedRows",
    "SegmentChanges",
    "SegmentSettings",
    "analyze",
    "apply_changes",
    "canonical_labels",
    "build_state",
    "build_state_and_spend",
    "classify",
    "compute_kpis",
    "diff_segments",
    "empty_history",
    "empty_spend",
    "empty_state",
    "fold_orders",
    "fold_rows",
    "fold_state",
    "format_kpis",
    "load_segment_settings",
    "open_rows_of",
    "parse_segment_settings",
    "plan_fold",
    "playbook_path",
    "QuintileBounds",
    "quintile_bounds",
    "quintile_scores",
    "scores_from_bounds",
    "same_customers",
    "segments_on",
    "update_state",
]

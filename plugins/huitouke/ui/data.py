"""What the pages show, read from the CRM store: aggregate tables only, as plain dicts.

The pages read ``campaign_days`` (the planner's per-campaign summary of a business day),
``evaluations`` (one row per campaign, wave, due day, window and view), ``evaluation_details``
(curves, breakdowns, categories) and ``evaluation_sequences``. None of these holds a name, a phone
number or an e-mail address; no query here touches ``customers``, ``outbox`` or the entry tables.

Pooled figures (a campaign over all its waves) are :mod:`huitouke.evaluate.pool`'s, the same
function the demo's report uses.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Engine, func, select

from huitouke.campaigns.plan import EXIT_REASONS, SUPPRESSION_REASONS
from huitouke.campaigns.tables import columns_of
from huitouke.evaluate.pool import finite, pool, pool_breakdowns
from huitouke.evaluate.verdicts import by_code
from huitouke.store.schema import campaign_days, evaluation_details, evaluation_sequences, evaluations

# The stored views (huitouke.evaluate.result.VIEWS, spelled out here so the pages need no pandas):
# everyone assigned, treated customers sent a message, those whose message was delivered.
ITT, SENT, RECEIVED = "itt", "sent", "received"
VIEWS = (ITT, SENT, RECEIVED)
MAX_ROWS = 1000  # per-wave rows shown on the results page at most (the pooled table covers all)


class StoreProblem(RuntimeError):
    """The store cannot be read as this code expects; ``command``, when given, fixes it."""

    def __init__(self, message: str, command: str = "") -> None:
        super().__init__(message)
        self.command = command


# ------------------------------------------------------------------------------------- the store

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def store_conn_id() -> str:
    from huitouke.config import load_settings

    return load_settings().store.conn_id


def store_engine() -> Engine:
    """The CRM store's engine, from the Connection named by ``store.conn_id`` (include/huitouke.yaml).

    The same lookup as :func:`huitouke.store.connection.engine_for`, with one engine (and pool) kept
    per URL instead of one per request; a Connection edited in the UI gives a new URL, a new engine.
    """
    from huitouke.store.connection import ConnectionConfigError, make_engine, url_for

    conn_id = store_conn_id()
    try:
        url = url_for(conn_id)
    except ConnectionConfigError as exc:
        raise StoreProblem(str(exc)) from None
    key = url.render_as_string(hide_password=False)
    with _engines_lock:
        if key not in _engines:
            _engines[key] = make_engine(url)
        return _engines[key]


def check_schema(engine: Engine, conn_id: str) -> None:
    """Raise :class:`StoreProblem` with the upgrade command unless the store is at the code's
    revision: :func:`huitouke.store.migrate.ensure_current`, worded for the page."""
    from huitouke.store.migrate import StoreNotCurrentError, ensure_current

    try:
        ensure_current(engine, conn_id)
    except StoreNotCurrentError as exc:
        raise StoreProblem(
            f"The CRM store ({conn_id}) is at schema revision {exc.current or 'none (empty database)'}; "
            f"this code reads revision {exc.head}.",
            exc.command,
        ) from None


# --------------------------------------------------------------------------------- small helpers


def _figures(text: str | None) -> dict[str, Any]:
    """The JSON stored with a row: one object, or a one-row list of objects."""
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if isinstance(data, list):
        data = data[0] if data and isinstance(data[0], dict) else {}
    return data if isinstance(data, dict) else {}


def _records(text: str | None) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _iso_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


# ------------------------------------------------------------------------------ campaign plans


# A campaign's stored day row as the plans page reads it (the day is asked for; no timestamps).
_DAY_COLUMNS = columns_of(campaign_days, without=("business_date", "planned_at", "rendered_at"))


def plan_days(engine: Engine) -> list[date]:
    """Business days with a stored campaign plan, latest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(campaign_days.c.business_date).distinct().order_by(campaign_days.c.business_date.desc())
        ).scalars()
        return [d for d in (_iso_date(v) for v in rows) if d is not None]


def day_plan(engine: Engine, day: date) -> list[dict[str, Any]]:
    """The stored plan summary of a business day, highest priority first, with the suppression and
    exit reasons of its figures."""
    from huitouke.pii import mask_text

    c = campaign_days.c
    query = (
        select(*(c[name] for name in _DAY_COLUMNS))
        .where(c.business_date == day)
        .order_by(c.priority.desc(), c.campaign)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
    out = []
    for row in rows:
        figures = _figures(row["figures"])
        record = {k: row[k] for k in row.keys() if k != "figures"}
        record["kind"] = figures.get("kind", "")
        record["entered_holdout"] = int(figures.get("entered_holdout") or 0)
        record["deferred"] = int(figures.get("deferred") or 0)
        record["suppressed_by"] = {
            r: int(figures.get(f"suppressed_{r}") or 0)
            for r in SUPPRESSION_REASONS
            if figures.get(f"suppressed_{r}")
        }
        record["exited_by"] = {
            r: int(figures.get(f"exited_{r}") or 0) for r in EXIT_REASONS if figures.get(f"exited_{r}")
        }
        # A render error names a template, a line and a variable; masked all the same.
        record["error"] = mask_text(row["error"]) if row["error"] else None
        out.append(record)
    return out


def plan_totals(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "entered",
        "entered_holdout",
        "deferred",
        "due",
        "treated",
        "held_out",
        "suppressed",
        "exited",
        "messages_planned",
        "messages_queued",
    )
    totals: dict[str, Any] = {k: sum(int(r[k] or 0) for r in rows) for k in keys}
    for name in ("suppressed_by", "exited_by"):
        merged: dict[str, int] = defaultdict(int)
        for r in rows:
            for reason, count in r[name].items():
                merged[reason] += count
        totals[name] = dict(merged)
    return totals


# ------------------------------------------------------------------------------------ evaluations

# The stored evaluation's columns the pages read (its comparison row's JSON holds the rest).
_EVALUATION_COLUMNS = columns_of(evaluations, without=("send_time", "figures", "computed_at"))


def _evaluation(row: Any) -> dict[str, Any]:
    """A stored evaluation: the full comparison row of its figures, the columns on top."""
    record = _figures(row["figures"])
    record.update({k: row[k] for k in _EVALUATION_COLUMNS})
    record["due_on"] = _iso_date(record["due_on"])
    record["evaluated_on"] = _iso_date(record["evaluated_on"])
    record["primary"] = bool(record["primary_window"])
    record["verdict_text"] = by_code(str(record["verdict"])).label  # the table's words, not the stored text
    return record


def planned_campaigns(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                select(campaign_days.c.campaign).distinct().order_by(campaign_days.c.campaign)
            ).scalars()
        )


def evaluated_campaigns(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(select(evaluations.c.campaign).distinct().order_by(evaluations.c.campaign)).scalars()
        )


def evaluation_windows(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [
            int(w)
            for w in conn.execute(
                select(evaluations.c.window_days).distinct().order_by(evaluations.c.window_days)
            ).scalars()
        ]


def evaluation_rows(
    engine: Engine,
    *,
    campaign: str | None = None,
    window: str | int | None = "primary",
    view: str | None = ITT,
    wave: int | None = None,
    due_on: date | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored evaluations, latest wave first. ``window``: ``"primary"``, a number of days or None
    (every window); ``view``: ``itt``, ``sent``, ``received`` (delivered) or None (every view)."""
    e = evaluations.c
    query = select(*(e[c] for c in _EVALUATION_COLUMNS), e.figures)
    if campaign:
        query = query.where(e.campaign == campaign)
    if window == "primary":
        query = query.where(e.primary_window.is_(True))
    elif window is not None:
        query = query.where(e.window_days == int(window))
    if view:
        query = query.where(e.view == view)
    if wave is not None:
        query = query.where(e.wave == wave)
    if due_on is not None:
        query = query.where(e.due_on == due_on)
    query = query.order_by(e.due_on.desc(), e.campaign, e.wave, e.window_days, e.view)
    if limit:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [_evaluation(r) for r in conn.execute(query).mappings()]


def count_evaluations(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(evaluations)).scalar_one())


# ------------------------------------------------------------------------------- campaign detail


def _details(engine: Engine, campaign: str, kind: str) -> list[dict[str, Any]]:
    d = evaluation_details.c
    query = (
        select(d.wave, d.due_on, d.window_days, d.figures)
        .where(d.campaign == campaign)
        .where(d.kind == kind)
        .order_by(d.due_on, d.wave, d.window_days)
    )
    with engine.connect() as conn:
        return [
            {
                "wave": int(r["wave"]),
                "due_on": _iso_date(r["due_on"]),
                "window_days": int(r["window_days"]),
                "records": _records(r["figures"]),
            }
            for r in conn.execute(query).mappings()
        ]


def _pooled_curve(curves: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The repurchase curve of the waves matured the longest, summed per day (so that every point
    has the same customers); returns the points and the waves used."""
    lengths = {id(c): max((int(p.get("day", 0)) for p in c["records"]), default=-1) for c in curves}
    longest = max(lengths.values(), default=-1)
    if longest < 0:
        return [], []
    used = [c for c in curves if lengths[id(c)] == longest]
    per_day: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for c in used:
        for p in c["records"]:
            day = per_day[int(p["day"])]
            for key in ("customers", "responders", "control_customers", "control_responders"):
                day[key] += finite(p.get(key)) or 0.0
    return [_curve_point(day, sums) for day, sums in sorted(per_day.items())], used


def _curve_point(day: int, p: dict[str, Any]) -> dict[str, Any]:
    n1, x1 = finite(p.get("customers")) or 0, finite(p.get("responders")) or 0
    n0, x0 = finite(p.get("control_customers")) or 0, finite(p.get("control_responders")) or 0
    rate = x1 / n1 if n1 else None
    control = x0 / n0 if n0 else None
    return {
        "day": day,
        "customers": int(n1),
        "responders": int(x1),
        "control_customers": int(n0),
        "control_responders": int(x0),
        "response_rate": rate,
        "control_rate": control,
        "lift": rate - control if rate is not None and control is not None else None,
    }


def _by_dimension(rows: Sequence[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        grouped[str(r.get("dimension"))].append(r)
    return [(k, sorted(v, key=lambda r: -(finite(r.get("customers")) or 0))) for k, v in grouped.items()]


def _categories(details: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Top categories per arm, summed over the given waves' top-5 lists; the share is of all the
    arm's responding orders (each wave's total is its orders / share)."""
    orders: dict[tuple[str, str], float] = defaultdict(float)
    customers: dict[tuple[str, str], float] = defaultdict(float)
    totals: dict[str, float] = defaultdict(float)
    for d in details:
        wave_totals: dict[str, float] = {}
        for r in d["records"]:
            arm, count, share = str(r.get("arm")), finite(r.get("orders")) or 0, finite(r.get("share"))
            orders[(arm, str(r.get("category")))] += count
            customers[(arm, str(r.get("category")))] += finite(r.get("customers")) or 0
            if share and arm not in wave_totals:
                wave_totals[arm] = count / share
        for arm, total in wave_totals.items():
            totals[arm] += total
    out: dict[str, list[dict[str, Any]]] = {}
    for arm in sorted({a for a, _ in orders}, key=lambda a: (a != "treatment", a)):
        rows = [
            {
                "category": category,
                "orders": int(count),
                "customers": int(customers[(a, category)]),
                "share": count / totals[arm] if totals[arm] else None,
            }
            for (a, category), count in orders.items()
            if a == arm
        ]
        out[arm] = sorted(rows, key=lambda r: (-r["orders"], r["category"]))[:5]
    return out


def playbook_primary_window(campaign: str) -> int | None:
    """The campaign's primary window in the playbook as it stands (None when it cannot be read or
    the campaign is no longer in it): what the page names before any wave has reached it."""
    try:
        from huitouke.campaigns import load_playbook

        found = load_playbook().campaigns.get(campaign)
    except Exception:  # a broken playbook is the DAG's to report; the page only loses a hint
        return None
    return found.evaluation.primary_days if found else None


def shown_window(campaign: str, itt_rows: Sequence[dict[str, Any]]) -> tuple[int | None, int | None]:
    """``(primary window, window shown)`` of a campaign's ITT rows: the primary window is the one
    its stored rows were marked primary at (the most common, should the playbook have changed),
    else the playbook's; the window shown is the primary one when some wave has reached it, else
    the longest window evaluated so far (None without rows)."""
    marked = Counter(int(r["window_days"]) for r in itt_rows if r["primary"])
    primary = marked.most_common(1)[0][0] if marked else playbook_primary_window(campaign)
    if marked:
        return primary, primary
    return primary, max((int(r["window_days"]) for r in itt_rows), default=None)


def not_pooled(engine: Engine, campaigns: Sequence[str]) -> list[dict[str, Any]]:
    """Why each of ``campaigns`` (evaluated, yet absent from the pooled primary-window table) is
    absent: its waves evaluated so far, the windows they reached, its primary window."""
    out = []
    for campaign in campaigns:
        rows = evaluation_rows(engine, campaign=campaign, window=None, view=ITT)
        primary, _ = shown_window(campaign, rows)
        out.append(
            {
                "campaign": campaign,
                "waves": len({(r["wave"], r["due_on"]) for r in rows}),
                "windows": sorted({int(r["window_days"]) for r in rows}),
                "primary_window": primary,
            }
        )
    return out


def campaign_detail(
    engine: Engine, campaign: str, *, wave: int | None = None, due_on: date | None = None
) -> dict[str, Any]:
    """Everything the campaign page shows. Without ``wave``/``due_on``: all waves, pooled; with
    both: that wave's stored rows (every window and view), curve, breakdowns and categories."""
    itt_rows = evaluation_rows(engine, campaign=campaign, window=None, view=ITT)
    windows = sorted({int(r["window_days"]) for r in itt_rows})
    by_window = pool([(w, [r for r in itt_rows if r["window_days"] == w]) for w in windows])
    primary_window, campaign_window = shown_window(campaign, itt_rows)
    # The rows marked primary; before any wave reached its primary window, those of the window shown.
    primary = [r for r in itt_rows if r["primary"]] or [
        r for r in itt_rows if r["window_days"] == campaign_window
    ]
    window_shown = campaign_window
    waves_over_time = sorted(primary, key=lambda r: (r["due_on"] or date.min, r["wave"]))
    selected = wave is not None and due_on is not None
    curves = _details(engine, campaign, "curve")
    breakdown_details = _details(engine, campaign, "breakdowns")
    category_details = _details(engine, campaign, "categories")
    primary_keys = {(r["wave"], r["due_on"], r["window_days"]) for r in primary}
    if selected:
        wave_rows = evaluation_rows(
            engine, campaign=campaign, window=None, view=None, wave=wave, due_on=due_on
        )
        wave_curves = [c for c in curves if c["wave"] == wave and c["due_on"] == due_on]
        curve = [_curve_point(int(p["day"]), p) for c in wave_curves for p in c["records"]]
        curve_waves = wave_curves
        # the wave's primary window, else the longest it has reached
        wave_primary = [r["window_days"] for r in wave_rows if r["primary"]]
        window_shown = (
            wave_primary[0] if wave_primary else max((r["window_days"] for r in wave_rows), default=None)
        )
        breakdowns = [
            r
            for d in breakdown_details
            if d["wave"] == wave and d["due_on"] == due_on and d["window_days"] == window_shown
            for r in d["records"]
        ]
        categories = _categories(
            [
                d
                for d in category_details
                if d["wave"] == wave and d["due_on"] == due_on and d["window_days"] == window_shown
            ]
        )
    else:
        wave_rows = []
        curve, curve_waves = _pooled_curve(curves)
        breakdowns = pool_breakdowns(
            [
                r
                for d in breakdown_details
                if (d["wave"], d["due_on"], d["window_days"]) in primary_keys
                for r in d["records"]
                if r.get("view", ITT) == ITT
            ]
        )
        categories = _categories(
            [d for d in category_details if (d["wave"], d["due_on"], d["window_days"]) in primary_keys]
        )
    return {
        "campaign": campaign,
        "selected": selected,
        "wave": wave,
        "due_on": due_on,
        "windows": windows,
        "primary_window": primary_window,
        "campaign_window": campaign_window,
        "window_shown": window_shown,
        "waves": len({(r["wave"], r["due_on"]) for r in itt_rows}),
        "by_window": by_window,
        "waves_over_time": waves_over_time,
        "wave_rows": wave_rows,
        "curve": curve,
        "curve_waves": [(c["wave"], c["due_on"]) for c in curve_waves],
        "breakdowns": _by_dimension(breakdowns),
        "categories": categories,
        "sequences": _sequences(engine, campaign),
        "has_any": bool(itt_rows),
    }


def _sequences(engine: Engine, campaign: str) -> list[dict[str, Any]]:
    """A multi-wave campaign's response over its sequence, as of the latest day it was computed."""
    s = evaluation_sequences.c
    with engine.connect() as conn:
        latest = conn.execute(select(func.max(s.evaluated_on)).where(s.campaign == campaign)).scalar()
        if latest is None:
            return []
        rows = conn.execute(
            select(s.through_wave, s.window_days, s.view, s.evaluated_on, s.figures)
            .where(s.campaign == campaign)
            .where(s.evaluated_on == latest)
            .where(s.view == ITT)
            .order_by(s.window_days, s.through_wave)
        ).mappings()
        out = []
        for r in rows:
            record = _figures(r["figures"])
            record.update({k: r[k] for k in ("through_wave", "window_days", "view")})
            record["evaluated_on"] = _iso_date(r["evaluated_on"])
            out.append(record)
        return out

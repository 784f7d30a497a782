"""The truth the evaluation estimates, per campaign wave and window.

The estimand (``huitouke.evaluate.waves``, view ``itt``): the cohort of a wave is every
``campaign_waves`` row of one (campaign, wave, due_on) in either arm, whatever its outcome —
treated, held out *or suppressed* — each customer once; its send time is the due day + 1 at
09:00 shop time (the DAG's rule, ``evaluate.daily.wave_options``); a customer responded in a
window of *w* days when they have an order with ``send < paid_at <= send + w days`` that is not
refunded or cancelled by the end of the day the window matures (``due_on + 1 + w``), when the
evaluation reads it. The **true ITT effect** is the mean, over the whole cohort, of
``Y(1) - Y(0)``: each customer's outcome had they been assigned the treatment arm, minus had
they been held out. The **effect on those sent** is the same mean over the treated customers
whose message reached them and the holdout customers ``held_out`` (who would have been sent).

The arm is the customer's in the campaign, the same for every entry and wave (a persistent
holdout), so the two potential outcomes differ by *every* message of the campaign to that
customer, not only this wave's: a treated customer re-entering the campaign within the window is
sent again, a held-out one is not. How the world knows both outcomes (common random numbers,
:mod:`huitouke.world.clocks`):

- a treatment-arm customer whose first purchase after the send was a response to a message of
  the campaign: without the campaign they would have bought at their recorded *alternative*
  (next natural purchase or another campaign's pending response, :mod:`huitouke.world.ledger`;
  or a later message of another campaign that reached them before it);
- a holdout-arm customer: the responses their held-out messages of the campaign would have
  brought are the same hash draws as real ones, from their state at each send time; if the
  first of them after this send comes before their actual first purchase, that is their outcome
  when treated;
- anyone else (the message suppressed in both arms — suppression is blind to the arm —, bounced,
  or overtaken by another purchase): both outcomes are what happened.

Left out, by design and documented in docs/world.md: a message of another campaign that the
customer would only have received in the other world (caps count treated contacts only).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from huitouke.demo_shop.arrays import day_number
from huitouke.world.clocks import message_keys, responses
from huitouke.world.world import PHONE_CHANNELS, SEND_AT_HOURS, World

SEND_LAG_DAYS = 1  # a wave planned on business day D goes out on D + 1 (the DAG's send time)
TRUTH_COLUMNS = (
    "campaign",
    "wave",
    "due_on",
    "window_days",
    "customers",
    "itt_effect",
    "treated_rate",
    "control_rate",
    "sent_customers",
    "sent_effect",
)
_ENTRY = ["campaign", "customer_id", "entered_on", "wave"]


def true_effects(
    world: World, waves: pd.DataFrame, windows: tuple[int, ...] = (2, 10, 30), as_of: date | None = None
) -> pd.DataFrame:
    """:data:`TRUTH_COLUMNS` per (campaign, wave, due_on, window) of ``waves`` (``campaign_waves``
    rows) whose window has matured in the world; ``as_of``: read statuses on that day instead of
    each window's maturity day."""
    rows = _cohort(world, waves)
    if rows.empty:
        return pd.DataFrame(columns=list(TRUTH_COLUMNS))
    first = _first_purchases(world, rows)
    would = _would_be(world, rows)
    delivered = _delivered(world, rows)
    _later_messages(world, rows, first)
    parts = []
    for w in windows:
        matured = rows["_send_day"] + w < world.today  # the window's maturity day has been simulated
        if not matured.any():
            continue
        part = rows[matured]
        end_day = (
            (part["_send_day"] + w + 1).to_numpy(dtype=float) if as_of is None else day_number(as_of) + 1.0
        )
        y_obs = _responded(world, part, w, end_day)
        y1, y0 = _potential(part, first.loc[part.index], would.loc[part.index], y_obs, w, end_day)
        parts.append(_aggregate(part, y1, y0, delivered.loc[part.index]["_sent"].to_numpy(), w))
    if not parts:
        return pd.DataFrame(columns=list(TRUTH_COLUMNS))
    return pd.concat(parts, ignore_index=True)[list(TRUTH_COLUMNS)].sort_values(
        ["campaign", "wave", "due_on", "window_days"], kind="stable", ignore_index=True
    )


def _cohort(world: World, waves: pd.DataFrame) -> pd.DataFrame:
    """The cohort rows as the evaluation takes them (one per entry's wave, both arms), with the
    customer's position, the send time and the message key; waves sent outside the world dropped."""
    rows = waves.copy()
    rows["customer_id"] = rows["customer_id"].astype(str)
    rows["entered_on"] = pd.to_datetime(rows["entered_on"]).dt.date
    rows["due_on"] = pd.to_datetime(rows["due_on"]).dt.date
    rows["wave"] = rows["wave"].astype("int64")
    rows = rows.drop_duplicates(_ENTRY, keep="last")
    rows = rows[rows["arm"].isin(["treatment", "holdout"])].reset_index(drop=True)
    if "channels" not in rows:
        rows["channels"] = ""
    rows["_pos"] = world.index.get_indexer(rows["customer_id"])
    rows["_send_day"] = np.array([day_number(d) for d in rows["due_on"]], dtype=np.int64) + SEND_LAG_DAYS
    rows["_send"] = rows["_send_day"] + SEND_AT_HOURS / 24
    rows["_key"] = message_keys(rows) if len(rows) else []
    known = (rows["_pos"] >= 0) & rows["_send_day"].isin(list(world.natural_at_send))
    return rows[known]


def _first_purchases(world: World, rows: pd.DataFrame) -> pd.DataFrame:
    """Per row: the first purchase after the send (``inf`` when none within 31 days), its cause
    and alternative."""
    bought = world.ledger.purchases()
    hits = rows[["_pos", "_send"]].reset_index().merge(bought, on="_pos", how="inner")
    hits = hits[(hits["time"] > hits["_send"]) & (hits["time"] <= hits["_send"] + 31)]
    first = hits.sort_values(["index", "time"], kind="stable").drop_duplicates("index").set_index("index")
    out = pd.DataFrame(index=rows.index)
    out["time"] = first["time"].reindex(rows.index).fillna(np.inf)
    out["cause"] = first["cause"].reindex(rows.index).fillna(-1).astype(np.int64)
    out["alt_time"] = first["alt_time"].reindex(rows.index).fillna(np.inf)
    out["alt_void_at"] = first["alt_void_at"].reindex(rows.index).fillna(np.inf)
    campaign_of = _clocks(world).set_index("clock")["campaign"]
    cause_campaign = campaign_of.reindex(out["cause"].to_numpy()).to_numpy()
    out["own_cause"] = (rows["arm"] == "treatment").to_numpy() & (
        cause_campaign == rows["campaign"].to_numpy()
    )
    return out


def _responded(world: World, part: pd.DataFrame, w: int, end_day: np.ndarray | float) -> np.ndarray:
    """What happened: a counted order in the window (the evaluation's responder)."""
    bought = world.ledger.purchases()
    base = part[["_pos", "_send"]].assign(_end=end_day).reset_index()
    hits = base.merge(bought[["_pos", "time", "void_at"]], on="_pos", how="inner")
    counted = (
        (hits["time"] > hits["_send"])
        & (hits["time"] <= hits["_send"] + w)
        & ~(hits["void_at"] < hits["_end"])
    )
    yes = set(hits.loc[counted, "index"])
    return np.array([i in yes for i in part.index], dtype=bool)


def _would_be(world: World, rows: pd.DataFrame) -> pd.DataFrame:
    """Per holdout-arm row: the first response after its send that the customer's messages of
    the campaign would have brought had they been in the treatment arm (the arm is the same for
    every entry and wave of a campaign), ``inf`` when none; ``inf`` on treatment-arm rows."""
    out = pd.DataFrame({"fire": np.inf, "void_at": np.inf}, index=rows.index)
    held = rows[(rows["arm"] == "holdout") & (rows["outcome"] == "held_out")]
    if held.empty:
        return out
    pos = held["_pos"].to_numpy()
    send = held["_send"].to_numpy()
    natural = np.array([world.natural_at_send[d][p] for d, p in zip(held["_send_day"], pos, strict=True)])
    channels = _reachable(world, held, send)
    chance, delay = world.chances(held["campaign"], held["wave"], pos, channels, natural - send)
    drawn = responses(world.seed, held["_key"].to_numpy(), send, chance, delay)
    fires = pd.DataFrame({"campaign": held["campaign"].to_numpy(), "_pos": pos, "fire": drawn.fire})
    fires = fires.assign(void_at=drawn.void_at)[np.isfinite(drawn.fire)]
    holdout = rows.loc[rows["arm"] == "holdout", ["campaign", "_pos", "_send"]].reset_index()
    hits = holdout.merge(fires, on=["campaign", "_pos"])
    hits = hits[hits["fire"] > hits["_send"]].sort_values("fire", kind="stable").drop_duplicates("index")
    out.loc[hits["index"].to_numpy(), "fire"] = hits["fire"].to_numpy()
    out.loc[hits["index"].to_numpy(), "void_at"] = hits["void_at"].to_numpy()
    return out


def _reachable(world: World, held: pd.DataFrame, send: np.ndarray) -> pd.Series:
    """The planned channels that would have reached each held-out customer."""
    pos = held["_pos"].to_numpy()
    phone_ok = ~world.people.invalid_phone[pos] & (world.opted_out_at[pos] > send)
    email_ok = world.people.has_email[pos]
    out = []
    for text, phone, email in zip(held["channels"].astype(str), phone_ok, email_ok, strict=True):
        names = [c for c in text.split(",") if c]
        out.append(",".join(c for c in names if (phone if c in PHONE_CHANNELS else email)))
    return pd.Series(out, index=held.index, dtype=object)


def _delivered(world: World, rows: pd.DataFrame) -> pd.DataFrame:
    """Per row: whether its message reached the customer (``_sent``) and that message's clock."""
    sent = world.ledger.messages().drop_duplicates("_key", keep="first")
    merged = (
        rows[["_key"]].reset_index().merge(sent[["_key", "clock"]], on="_key", how="left").set_index("index")
    )
    out = pd.DataFrame(index=rows.index)
    out["clock"] = merged["clock"].reindex(rows.index).fillna(-2).astype(np.int64)
    treated = (rows["arm"] == "treatment").to_numpy()
    out["_sent"] = (treated & (out["clock"].to_numpy() >= 0)) | (
        (rows["arm"] == "holdout") & (rows["outcome"] == "held_out")
    ).to_numpy()
    return out


def _responders(first: pd.DataFrame) -> np.ndarray:
    """The rows whose first purchase after the send was a response to a message of their own
    campaign (``first['own_cause']``, filled by :func:`_first_purchases`)."""
    return first["own_cause"].to_numpy(dtype=bool)


def _later_messages(world: World, rows: pd.DataFrame, first: pd.DataFrame) -> None:
    """A responder's alternative, completed: the messages of other campaigns that reached them
    after their purchase and before the alternative (they were sent in both worlds) and would
    have responded first; ``first`` is updated in place."""
    responder = _responders(first)
    if not responder.any():
        return
    mine = first[responder].assign(
        _pos=rows.loc[responder, "_pos"].to_numpy(), _camp=rows.loc[responder, "campaign"]
    )
    sent = _clocks(world)
    hits = mine.reset_index().merge(sent[["_pos", "sent_at", "fire", "void_at", "campaign"]], on="_pos")
    later = (
        (hits["sent_at"] > hits["time"])
        & (hits["sent_at"] < hits["alt_time"])
        & (hits["campaign"] != hits["_camp"])
    )
    hits = hits[later & (hits["fire"] < hits["alt_time"])].sort_values("fire", kind="stable")
    hits = hits.drop_duplicates("index")
    first.loc[hits["index"].to_numpy(), "alt_time"] = hits["fire"].to_numpy()
    first.loc[hits["index"].to_numpy(), "alt_void_at"] = hits["void_at"].to_numpy()


def _clocks(world: World) -> pd.DataFrame:
    """The delivered messages with their campaign (the first part of the message key)."""
    sent = world.ledger.messages()
    return sent.assign(campaign=sent["_key"].astype(str).str.split("|", n=1).str[0])


def _potential(
    part: pd.DataFrame,
    first: pd.DataFrame,
    would: pd.DataFrame,
    y_obs: np.ndarray,
    w: int,
    end_day: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray]:
    """(Y(1), Y(0)) per row (module docstring)."""
    send = part["_send"].to_numpy()

    def counted(t: np.ndarray, void_at: np.ndarray) -> np.ndarray:
        return (t > send) & (t <= send + w) & ~(void_at < end_day)

    y1, y0 = y_obs.copy(), y_obs.copy()
    responder = _responders(first)
    alt = counted(first["alt_time"].to_numpy(), first["alt_void_at"].to_numpy())
    y0[responder] = alt[responder]
    earlier = would["fire"].to_numpy() < first["time"].to_numpy()
    y1[earlier] = counted(would["fire"].to_numpy(), would["void_at"].to_numpy())[earlier]
    return y1, y0


def _aggregate(part: pd.DataFrame, y1: np.ndarray, y0: np.ndarray, sent: np.ndarray, w: int) -> pd.DataFrame:
    """Means per (campaign, wave, due_on) for window ``w``."""
    frame = part[["campaign", "wave", "due_on"]].assign(
        _y1=y1.astype(float), _y0=y0.astype(float), _d=(y1.astype(float) - y0), _sent=sent
    )
    frame["_ds"] = np.where(sent, frame["_d"], np.nan)
    out = frame.groupby(["campaign", "wave", "due_on"], sort=True).agg(
        customers=("_d", "size"),
        itt_effect=("_d", "mean"),
        treated_rate=("_y1", "mean"),
        control_rate=("_y0", "mean"),
        sent_customers=("_sent", "sum"),
        sent_effect=("_ds", "mean"),
    )
    return out.reset_index().assign(window_days=w)

"""``huitouke analyze ORDERS_FILE``: a shop's state, segments and KPI tables straight from an order
export, before anything is deployed.

The file goes through the same reading (column mappings, Taobao headers, encodings), validation
and segment code as the daily run; nothing is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from huitouke.errors import UserInputError
from huitouke.intake.validate import ValidatedBatch, validate
from huitouke.segments import Analysis, analyze, load_segment_settings

# The columns of ``--customers-out``, one row per customer (not records.CUSTOMER_COLUMNS: those are
# the contact columns of an order row).
CUSTOMER_TABLE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "first_order_date",
    "last_order_date",
    "paid_orders",
    "total_cny",
    "aov_cny",
    "r_score",
    "f_score",
    "m_score",
    "lifecycle",
    "member_tier",
    "value_tier",
    "category_group",
    "acquisition_source",
    "low_value_acquisition",
)


@dataclass(frozen=True)
class ExportAnalysis:
    """What an order export says about the shop, and what could not be read."""

    analysis: Analysis
    batch: ValidatedBatch
    orders_after: int = 0  # valid orders after the analysis date, which the analysis leaves out

    def text(self) -> str:
        batch = self.batch
        head = [
            f"Orders read: {batch.rows_read:,} rows, {len(batch.orders):,} orders, "
            f"{batch.orders['customer_id'].nunique():,} buyers; analysed as of {self.analysis.business_date}",
        ]
        if len(batch.quarantine):
            reasons = batch.quarantine["reason"].value_counts().sort_index()
            head.append(
                f"Rows not used ({len(batch.quarantine):,}): "
                + ", ".join(f"{r} {n:,}" for r, n in reasons.items())
            )
        if self.orders_after:
            head.append(f"Orders after {self.analysis.business_date} not analysed: {self.orders_after:,}")
        return "\n".join(head) + "\n\n" + self.analysis.text()

    def customers(self) -> pd.DataFrame:
        """One row per customer: first and last order, paid orders, total, AOV, scores and tiers."""
        state = self.analysis.state.set_index("customer_id")
        seg = self.analysis.segments.set_index("customer_id")
        out = pd.DataFrame(
            {
                "first_order_date": state["first_business_date"].dt.date,
                "last_order_date": state["last_business_date"].dt.date,
                "paid_orders": state["paid_orders"],
                "total_cny": state["total_cents"] / 100,
                "aov_cny": state["aov_cents"] / 100,
            }
        ).join(seg[[c for c in CUSTOMER_TABLE_COLUMNS if c in seg.columns and c != "paid_orders"]])
        return out.reset_index()[list(CUSTOMER_TABLE_COLUMNS)]


# How far back an export's orders are read: a shop's whole history, generously; a payment time
# before it (1900, 0001-01-01) is a typo, quarantined as implausible_time and counted.
HISTORY_YEARS = 10


def analysis_window(as_of: date | None, tz: ZoneInfo) -> tuple[date, date]:
    """The business days an export's orders may fall on (shop time, inclusive): ``HISTORY_YEARS``
    before the analysis date (default today), to two days after it or today, whichever is later."""
    today = datetime.now(tz).date()
    day = as_of or today
    return day - timedelta(days=round(365.25 * HISTORY_YEARS)), max(day, today) + timedelta(days=2)


def analyze_export(
    path: Path,
    mapping: str | dict[str, str] = "canonical",
    as_of: date | None = None,
    timezone: str = "Asia/Shanghai",
    encoding: str | None = None,
) -> ExportAnalysis:
    """Read, validate and analyse one CSV or Parquet order export.

    ``path`` is the file itself, never a pattern (``orders[1].csv``, ``o_{ds}.csv`` are names).
    Every row is read and validated; what validation rejects (bad values, implausible times) is
    counted in :meth:`ExportAnalysis.text`, as are orders after ``as_of``. ``as_of`` defaults to the
    day after the last order, as if the analysis ran the next morning.
    """
    from huitouke.intake.files import read_export

    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path}: is a folder; give the order export file itself")
    if not path.is_file():
        raise UserInputError(f"{path}: no such order export")
    try:
        tz = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserInputError(f"analyze: unknown time zone {timezone!r}") from None
    raw = read_export(path, mapping, encoding, where="analyze")
    batch = validate(
        raw, tz, as_of or datetime.now(tz).date(), window=analysis_window(as_of, tz), for_store=False
    )
    if batch.orders.empty:
        raise UserInputError(f"{path}: no order could be read ({len(batch.quarantine):,} rows quarantined)")
    orders = batch.orders.assign(
        paid_at=pd.to_datetime(batch.orders["paid_at"]),
        business_date=pd.to_datetime(batch.orders["business_date"]),
    )
    if as_of is None:
        as_of = orders["business_date"].max().date() + timedelta(days=1)
    lines = batch.lines.assign(
        amount_cents=pd.to_numeric(batch.lines["amount_cents"]).fillna(0).astype("int64")
    )
    analysis = analyze(orders, lines, load_segment_settings(), business_date=as_of)
    after = int((orders["business_date"] > pd.Timestamp(as_of)).sum())
    return ExportAnalysis(analysis=analysis, batch=batch, orders_after=after)

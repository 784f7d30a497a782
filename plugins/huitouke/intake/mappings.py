"""Column mappings: how a source's own headers or JSON keys become canonical column names.

A mapping is a dict ``{source header -> canonical column}``. Several headers may map to the
same canonical column because exports change their wording between versions; the first one
(in mapping order) that the file or record actually has wins. Headers a mapping does not
mention are dropped, which is how columns such as Taobao's 订单关闭原因 are ignored.

Values are never parsed here: validation does that in one place for every source. The only
cleaning done while reading is :func:`clean_order_id`, because the wrappers it removes are an
artefact of spreadsheet exports, not part of the value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from huitouke.errors import UserInputError
from huitouke.pii import get_logger
from huitouke.records import ALL_COLUMNS, REQUIRED_COLUMNS, SOURCE_REF_COLUMN

log = get_logger(__name__)

_CANONICAL = frozenset({*ALL_COLUMNS, "refund_amount"})
# Every canonical column, the partial refund's too until records.ALL_COLUMNS has it.
CANONICAL_COLUMNS: tuple[str, ...] = (
    *ALL_COLUMNS,
    *(() if "refund_amount" in ALL_COLUMNS else ("refund_amount",)),
)
OUTPUT_COLUMNS: tuple[str, ...] = (*CANONICAL_COLUMNS, SOURCE_REF_COLUMN)
# Text read by pyarrow: pandas' ``str`` dtype, Arrow storage, NaN for a missing cell.
TEXT_DTYPE = pd.StringDtype("pyarrow", na_value=np.nan)

# Taobao/Tmall seller-centre exports. Covers the classic 订单报表 (one row per order, as
# exported from 已卖出的宝贝), the newer 千牛 主订单/子订单 sheets, and the 宝贝报表 item sheet.
# Order matters: for each canonical column the first header present in a file is used.
TAOBAO: dict[str, str] = {
    # order id: 订单编号 (订单报表, 宝贝报表, 千牛主订单); 主订单编号 on 千牛 子订单 sheets.
    # 子订单编号 is deliberately not mapped: it identifies a line, not the order.
    "订单编号": "order_id",
    "主订单编号": "order_id",
    "订单号": "order_id",
    # buyer account (the shop's stable customer key; not a real name)
    "买家会员名": "customer_id",
    "买家昵称": "customer_id",
    "买家会员ID": "customer_id",
    "买家ID": "customer_id",
    # payment time
    "订单付款时间": "paid_at",
    "付款时间": "paid_at",
    "支付时间": "paid_at",
    # what the buyer actually paid (after discounts, incl. postage). 总金额 / 买家应付货款 are
    # list prices before discounts and are not mapped.
    "买家实际支付金额": "amount",
    "实付金额": "amount",
    "买家实付金额": "amount",
    "实付款": "amount",
    # partial refunds: what was refunded of the order (one item of a multi-item order, say);
    # the order's paid amount is reduced by it during validation
    "退款金额": "refund_amount",
    "已退款金额": "refund_amount",
    "退款总金额": "refund_amount",
    # status words are translated by records.STATUS_SYNONYMS during validation
    "订单状态": "status",
    "交易状态": "status",
    # last change (refund, close); absent from the classic export, present in some tools' exports
    "订单修改时间": "updated_at",
    "修改时间": "updated_at",
    "最后修改时间": "updated_at",
    "更新时间": "updated_at",
    # receiver (personal data; never logged)
    "收货人姓名": "customer_name",
    "收货人": "customer_name",
    "联系手机": "phone",
    "收货人手机号": "phone",
    "手机号": "phone",
    "联系电话": "phone",
    # lines. 宝贝种类 is the number of distinct items in the order, not a product category.
    "宝贝标题": "product_name",
    "商品标题": "product_name",
    "标题": "product_name",
    "宝贝总数量": "quantity",
    "购买数量": "quantity",
    "商家编码": "sku",
    "商品编码": "sku",
    "外部系统编号": "sku",
}

# The partial refund's column (records.ORDER_COLUMNS has it once validation reads it).
REFUND_AMOUNT = "refund_amount"

# English headers that mean the canonical refund column (exports of other tools, shop databases).
REFUND_SYNONYMS: dict[str, str] = {
    "refund_amount": REFUND_AMOUNT,
    "refunded_amount": REFUND_AMOUNT,
    "refund": REFUND_AMOUNT,
    "amount_refunded": REFUND_AMOUNT,
}

CANONICAL: dict[str, str] = {column: column for column in ALL_COLUMNS} | REFUND_SYNONYMS

MAPPINGS: dict[str, dict[str, str]] = {
    "canonical": CANONICAL,
    "taobao": TAOBAO | REFUND_SYNONYMS,
}


def resolve_mapping(spec: str | Mapping[str, str], where: str) -> dict[str, str]:
    """Turn a config value (a mapping name or an inline dict) into a mapping, or fail loudly.

    ``where`` names the config field (e.g. "include/huitouke.yaml: intake.files.mapping") so the
    error points the operator at the line to fix instead of at this module.
    """
    if isinstance(spec, str):
        try:
            return dict(MAPPINGS[spec])
        except KeyError:
            raise ValueError(
                f"{where}: unknown mapping {spec!r}; known mappings: {', '.join(sorted(MAPPINGS))}, "
                "or give an inline dict {source header: canonical column}"
            ) from None
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"{where}: a mapping must be a name ({', '.join(sorted(MAPPINGS))}) or a dict "
            f"{{source header: canonical column}}, not {type(spec).__name__}"
        )
    if not spec:
        raise ValueError(f"{where}: the inline mapping is empty")
    mapping: dict[str, str] = {}
    for source, canonical in spec.items():
        if not isinstance(source, str) or not source.strip():
            raise ValueError(f"{where}: mapping keys must be non-empty header names, got {source!r}")
        if canonical not in _CANONICAL:
            raise ValueError(
                f"{where}: field {source!r} maps to {canonical!r}, which is not a canonical column; "
                f"canonical columns are: {', '.join(ALL_COLUMNS)}"
            )
        mapping[source] = canonical
    return mapping


def normalize_header(header: object) -> str:
    """A header as exports mean it: Excel and Taobao add BOMs and stray spaces around names."""
    return str(header).replace("\ufeff", "").strip()


def clean_order_id(value: Any) -> Any:
    """Remove the wrappers exports put around long ids so Excel does not turn them into 1.23E+17.

    Taobao writes ``="1234567890"`` or prefixes a tab or an apostrophe. Anything else, including
    garbage, is returned untouched for validation to judge.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("="):
        inner = text[1:].strip()
        if len(inner) >= 2 and inner[0] == inner[-1] == '"':
            inner = inner[1:-1]
        text = inner.strip()
    if text.startswith("'"):
        text = text[1:].strip()
    return text if text else value


def _choose_sources(headers: Iterable[object], mapping: Mapping[str, str]) -> dict[str, int]:
    """For each canonical column, the position of the first mapped header present."""
    positions: dict[str, int] = {}
    for i, header in enumerate(headers):
        positions.setdefault(normalize_header(header), i)
    chosen: dict[str, int] = {}
    for source, canonical in mapping.items():
        if canonical in chosen:
            continue
        position = positions.get(normalize_header(source))
        if position is not None:
            chosen[canonical] = position
    return chosen


def _missing_required_message(
    where: str, missing: list[str], mapping: Mapping[str, str], present: Iterable[object]
) -> str:
    wanted = "; ".join(
        f"{column} <- one of [{', '.join(s for s, c in mapping.items() if c == column) or 'nothing mapped'}]"
        for column in missing
    )
    have = ", ".join(normalize_header(h) for h in present) or "(none)"
    return (
        f"{where}: no column for required field(s) {', '.join(missing)} ({wanted}). "
        f"Headers present: {have}. Fix the mapping or the export."
    )


def mapped_positions(headers: Iterable[object], mapping: Mapping[str, str], where: str) -> dict[str, int]:
    """For each canonical column the source has, the position of its header (first mapped wins).

    Raises UserInputError when a required canonical column has no source column: that is a
    configuration problem for the whole file, not a data problem for validation to quarantine.
    """
    headers = list(headers)
    chosen = _choose_sources(headers, mapping)
    missing = [column for column in REQUIRED_COLUMNS if column not in chosen]
    if missing:
        raise UserInputError(_missing_required_message(where, missing, mapping, headers))
    return chosen


def apply_mapping(df: pd.DataFrame, mapping: Mapping[str, str], where: str) -> pd.DataFrame:
    """Rename a source frame to canonical columns, keeping only mapped ones (as object dtype)."""
    chosen = mapped_positions(df.columns, mapping, where)
    out = pd.DataFrame(index=df.index)
    for column in CANONICAL_COLUMNS:
        if column in chosen:
            values = df.iloc[:, chosen[column]]
            out[column] = values if isinstance(values.dtype, pd.StringDtype) else values.astype(object)
    ids = out["order_id"]
    if isinstance(ids.dtype, pd.StringDtype):
        out["order_id"] = pd.Series(clean_order_ids(pa.array(ids)), index=out.index, dtype=TEXT_DTYPE)
    else:  # not Series.map: it re-infers dtypes and would turn [int, None] ids into floats
        out["order_id"] = pd.Series([clean_order_id(v) for v in ids], index=out.index, dtype=object)
    return out


def clean_order_ids(ids: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """:func:`clean_order_id` over a column of text, vectorised (Arrow compute, no Python loop)."""
    text = pc.utf8_trim_whitespace(ids)
    formula = pc.starts_with(text, "=")
    inner = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, 1))
    quoted = pc.and_(
        pc.greater_equal(pc.utf8_length(inner), 2),
        pc.and_(pc.starts_with(inner, '"'), pc.ends_with(inner, '"')),
    )
    inner = pc.if_else(quoted, pc.utf8_slice_codeunits(inner, 1, -1), inner)
    text = pc.if_else(formula, pc.utf8_trim_whitespace(inner), text)
    apostrophe = pc.starts_with(text, "'")
    text = pc.if_else(apostrophe, pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(text, 1)), text)
    return pc.if_else(pc.equal(text, ""), ids, text)


def mapped_text_frame(table: pa.Table, mapping: Mapping[str, str], where: str) -> pd.DataFrame:
    """The canonical columns of a table of text cells (pyarrow-backed ``str`` columns, missing
    cells as NaN), order ids cleaned; columns the mapping does not name are not converted."""
    chosen = mapped_positions(table.column_names, mapping, where)
    columns = [c for c in CANONICAL_COLUMNS if c in chosen]
    arrays = [table.column(chosen[c]) for c in columns]
    arrays[columns.index("order_id")] = clean_order_ids(table.column(chosen["order_id"]))
    # One contiguous large_string array per column, as pandas and validation work on it: made once
    # here, while the parser's blocks can go, rather than copied by each reader of the frame.
    arrays = [pa.chunked_array([pc.cast(a, pa.large_string()).combine_chunks()]) for a in arrays]
    return pa.Table.from_arrays(arrays, names=columns).to_pandas(types_mapper=_text_dtype)


def _text_dtype(arrow_type: pa.DataType) -> object:
    """pandas' ``str`` dtype (pyarrow storage, NaN for missing) for every text column."""
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TEXT_DTYPE
    return None


def get_path(record: Any, path: str) -> tuple[bool, Any]:
    """Look up a dotted path ("data.orders") in nested dicts; returns (found, value)."""
    current = record
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return False, None
        current = current[part]
    return True, current


def map_record(record: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Map one JSON record to canonical names; a key may be a dotted path into nested objects.

    Only fields the record has are returned, so a caller can tell "absent" from "null".
    """
    normalized = {normalize_header(k): v for k, v in record.items()} if record else {}
    out: dict[str, Any] = {}
    for source, canonical in mapping.items():
        if canonical in out:
            continue
        key = normalize_header(source)
        if key in normalized:
            out[canonical] = normalized[key]
        elif "." in key:
            found, value = get_path(record, key)
            if found:
                out[canonical] = value
    if "order_id" in out:
        out["order_id"] = clean_order_id(out["order_id"])
    return out


def check_required_seen(
    seen: set[str], mapping: Mapping[str, str], present: Iterable[str], where: str
) -> None:
    """Raise when no record at all carried a required column: the mapping, not the data, is wrong."""
    missing = [column for column in REQUIRED_COLUMNS if column not in seen]
    if missing:
        raise ValueError(_missing_required_message(where, missing, mapping, sorted(present)))


def canonical_frame(frames: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """Concatenate per-file/per-page frames into the output shape every source returns.

    All canonical columns plus ``_source_ref`` are always present, with None for anything
    missing. Columns of Python values are object dtype (None for missing); text columns read by
    pyarrow stay ``str`` (NaN for missing), so a million cells are not made Python strings here.
    """
    frames = [f for f in (frames or []) if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in OUTPUT_COLUMNS})
    df = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True, sort=False)
    df = df.loc[:, [column for column in OUTPUT_COLUMNS if column in df.columns]]
    as_objects = [
        c for c in df.columns if df[c].dtype != object and not isinstance(df[c].dtype, pd.StringDtype)
    ]
    if as_objects:
        df = df.astype(dict.fromkeys(as_objects, object))
    objects = [c for c in df.columns if df[c].dtype == object]
    if objects:
        df[objects] = df[objects].where(df[objects].notna(), None)
    missing = {column: None for column in OUTPUT_COLUMNS if column not in df.columns}
    if missing:  # None already, not looked at again
        df = df.assign(**missing).loc[:, list(OUTPUT_COLUMNS)]
    return df

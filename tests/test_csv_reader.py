"""The columnar CSV reader against Python's csv module: same cells, same lines, for any text."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huitouke.intake.csv_reader import read_csv_table

CELL = st.text(alphabet=st.sampled_from(list('ab1 ,"\n\r\x00\t买¥=')), max_size=6)


def expected(text: str, width: int) -> tuple[list[list[str | None]], list[int]]:
    """What the csv module reads: records padded or cut to the header, blank ones skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, lines, next_line, header = [], [], 1, None
    for record in reader:
        line, next_line = next_line, reader.line_num + 1
        if not record or (header is not None and all(not c.strip() for c in record)):
            continue
        if header is None:
            header = record
            continue
        record = (record + [""] * width)[:width]
        rows.append([c if c != "" else None for c in record])
        lines.append(line)
    return rows, lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELL, min_size=1, max_size=4), max_size=8), crlf=st.booleans())
def test_any_cells_read_as_the_csv_module_reads_them(tmp_path_factory, rows, crlf):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if crlf else "\n")
    writer.writerow(["h1", "h2", "h3"])
    writer.writerows(rows)
    path = Path(tmp_path_factory.mktemp("csv")) / "o.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    read = read_csv_table(path, "o.csv")
    rows_expected, lines_expected = expected(out.getvalue(), 3)
    got = [list(r.values()) for r in read.table.to_pylist()]
    assert got == rows_expected
    assert read.lines.tolist() == lines_expected


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=64)
    | st.lists(
        st.sampled_from([b",", b'"', b"\n", b"\r", b"a", b"\x00", b"\xff", b"\xe4\xb9\xb0", b"\t"]),
        max_size=30,
    ).map(b"".join)
)
def test_any_bytes_give_a_table_or_one_line_naming_the_file(tmp_path_factory, data):
    from huitouke.errors import UserInputError

    path = Path(tmp_path_factory.mktemp("bytes")) / "o.csv"
    path.write_bytes(data)
    try:
        read = read_csv_table(path, "o.csv")
    except UserInputError as exc:
        assert str(exc).startswith("o.csv") and "\n" not in str(exc)
    else:
        assert read is None or len(read.lines) == read.table.num_rows

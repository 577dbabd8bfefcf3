"""Tests for importer.source: CSV dialects, row and line numbers, Parquet, frames."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from importer.errors import SourceError
from importer.schema import CsvOptions
from importer.source import open_source


def read_all(source: object, columns: list[str], **kw: object) -> dict[str, list[object]]:
    """Every batch of a source, flattened: values per column, rows, lines, malformed."""
    opened = open_source(source, csv_options=kw.pop("options", None))  # type: ignore[arg-type]
    out: dict[str, list[object]] = {c: [] for c in columns}
    out.update(rows=[], lines=[], positions=[], malformed=[])
    for batch in opened.batches(columns, **kw):  # type: ignore[arg-type]
        if batch.data is not None:
            for c in columns:
                out[c] += batch.data.column(c).to_pylist()
        out["rows"] += batch.rows.tolist()
        out["positions"] += batch.positions.tolist()
        out["lines"] += batch.lines.tolist() if batch.lines is not None else []
        out["malformed"] += [(m.row, m.line, m.text) for m in batch.malformed]
    return out


def test_ids_stay_text(write_csv) -> None:  # type: ignore[no-untyped-def]
    """1234567 stays '1234567' and 007 keeps its zeros: CSV cells are read as text."""
    path = write_csv(["id,amount", "1234567,19.99", "007,1e3"])
    data = read_all(path, ["id", "amount"])
    assert data["id"] == ["1234567", "007"]
    assert data["amount"] == ["19.99", "1e3"]


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        pytest.param("a;b\n1;2\n", ";", id="semicolon"),
        pytest.param("a\tb\n1\t2\n", "\t", id="tab"),
        pytest.param("a|b\n1|2\n", "|", id="pipe"),
        pytest.param("a,b\n1,2\n", ",", id="comma"),
    ],
)
def test_delimiter_detection(tmp_path: Path, text: str, delimiter: str) -> None:
    """The delimiter is detected from the first lines."""
    path = tmp_path / "x.csv"
    path.write_text(text)
    assert read_all(path, ["a", "b"])["b"] == ["2"]


def test_bom_quotes_and_crlf(tmp_path: Path) -> None:
    """A UTF-8 BOM, quoted commas and newlines, and CRLF line ends."""
    path = tmp_path / "x.csv"
    path.write_bytes(b'\xef\xbb\xbfid,note\r\n1,"a, b"\r\n2,"two\r\nlines"\r\n3,x\r\n')
    data = read_all(path, ["id", "note"])
    assert data["id"] == ["1", "2", "3"]
    assert data["note"] == ["a, b", "two\r\nlines", "x"]
    assert data["lines"] == [2, 3, 5]


def test_gzip(tmp_path: Path) -> None:
    """.csv.gz is read transparently."""
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n3,4\n"))
    assert read_all(path, ["a"])["a"] == ["1", "3"]


def test_malformed_and_blank_lines_keep_numbers_true(write_csv) -> None:  # type: ignore[no-untyped-def]
    """Malformed records get a row and line; blank lines are skipped but counted in lines."""
    path = write_csv(["a,b", "1,2", "", "3", '"x', 'y",4', "5,6,7", "8,9"])
    data = read_all(path, ["a", "b"])
    assert data["a"] == ["1", "x\ny", "8"]
    assert data["rows"] == [1, 3, 5]
    assert data["lines"] == [2, 5, 8]
    assert data["malformed"] == [(2, 4, "3"), (4, 7, "5,6,7")]
    assert data["positions"] == [0, 2, 4]


def test_line_numbers_across_small_batches(write_csv) -> None:  # type: ignore[no-untyped-def]
    """Row and line numbers run on across batches and files."""
    lines = ["a"] + [f'"v{i}\nx"' if i % 3 == 0 else f"v{i}" for i in range(50)]
    path = write_csv(lines)
    data = read_all([path, path], ["a"], batch_size=7)
    expected, line = [], 2
    for i in range(50):
        expected.append(line)
        line += 2 if i % 3 == 0 else 1
    assert data["lines"] == expected * 2
    assert data["rows"] == list(range(1, 51)) * 2
    assert data["positions"] == list(range(100))


def test_missing_column_lists_the_columns(write_csv) -> None:  # type: ignore[no-untyped-def]
    """A missing column is named, with the file's columns."""
    path = write_csv(["user,amount", "1,2"])
    with pytest.raises(SourceError) as caught:
        open_source(path).require(["user", "ts"])
    assert str(caught.value) == (
        f"{path}: missing column 'ts' that the schema reads; the file has: user, amount. "
        "Fix the schema's column names or the file's header."
    )


def test_not_utf8_says_what_to_do(tmp_path: Path) -> None:
    """A Latin-1 file fails with a hint; with the encoding set it reads."""
    path = tmp_path / "latin.csv"
    path.write_bytes("name\ncafé\n".encode("latin-1"))
    with pytest.raises(
        SourceError, match=r"not valid utf-8; re-save it as UTF-8, or set \[csv\] encoding"
    ):
        read_all(path, ["name"])
    assert read_all(path, ["name"], options=CsvOptions(encoding="latin-1"))["name"] == ["café"]


def test_parquet_file_and_directory(tmp_path: Path) -> None:
    """A Parquet file, and a directory of them read in name order as one source."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"a": [1, 2]}), folder / "p1.parquet")
    pq.write_table(pa.table({"a": [3]}), folder / "p2.parquet")
    data = read_all(folder, ["a"])
    assert data["a"] == [1, 2, 3]
    assert data["rows"] == [1, 2, 1]
    assert data["positions"] == [0, 1, 2]
    assert open_source(folder).total_rows() == 3


def test_parquet_row_groups_the_ledger_finished_are_not_read(tmp_path: Path) -> None:
    """Settled row groups are skipped unread but still accounted for."""
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": list(range(10))}), path, row_group_size=4)
    batches = list(open_source(path).batches(["a"], settled=lambda lo, hi: hi <= 4))
    assert [b.skipped for b in batches] == [4, 0, 0]
    assert batches[1].positions.tolist() == [4, 5, 6, 7]
    assert sum(b.num_rows for b in batches) == 10


def test_fingerprint_is_content(tmp_path: Path, write_csv) -> None:  # type: ignore[no-untyped-def]
    """Same bytes, same fingerprint; one changed byte, a new one."""
    one = write_csv(["a", "1"], "one.csv")
    two = write_csv(["a", "1"], "two.csv")
    three = write_csv(["a", "2"], "three.csv")
    assert open_source(one).fingerprint() == open_source(two).fingerprint()
    assert open_source(one).fingerprint() != open_source(three).fingerprint()


def test_dataframe_with_nullable_and_categorical_columns() -> None:
    """Nullable ints, categoricals and strings come through as Arrow."""
    frame = pd.DataFrame(
        {
            "id": pd.array([1, None, 3], dtype="Int64"),
            "cat": pd.Categorical(["x", "y", "x"]),
        }
    )
    data = read_all(frame, ["id", "cat"])
    assert data["id"] == [1, None, 3]
    assert data["cat"] == ["x", "y", "x"]
    assert open_source(frame).fingerprint() == open_source(frame.copy()).fingerprint()


def test_unknown_input_type() -> None:
    """Something that is not a table says what is accepted."""
    with pytest.raises(SourceError, match="cannot read a int: pass a path"):
        open_source(5)


def test_an_unclosed_quote_does_not_swallow_the_rest_silently(write_csv) -> None:  # type: ignore[no-untyped-def]
    """A stray quote makes the parser read on into one cell: that record is malformed, and
    says how many records it holds; a legitimate multi-line cell is not."""
    lines = ["id,user,note"] + [f'{i},u{i},"ok' if i == 10 else f"{i},u{i},ok" for i in range(100)]
    lines[3] = '2,u2,"gift: no\nsource: web"'  # a real multi-line cell: fine
    batches = list(open_source(write_csv(lines)).batches(["id", "user", "note"]))
    assert sum(len(b.positions) for b in batches) == 10  # rows 1-10 read as rows
    (bad,) = [m for b in batches for m in b.malformed]
    assert (bad.row, bad.line) == (11, 13)
    assert "89 of which look like records: a quote is probably not closed on line 13" in bad.message

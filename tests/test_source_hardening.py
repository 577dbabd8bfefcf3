"""Hardening of importer.source against hostile inputs (issue "Hardening", items 7 and 10).

Every test writes a real file and reads it as a user would: nested columns a schema maps
are refused before reading, huge headers and cells are read or refused clearly, blank lines
stream at flat memory, and raw text shown for malformed records is short.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import importer
import importer.source.csv_input as csv_input
from importer.errors import SourceError
from importer.source import open_source

from .helpers import cli, schema_toml

# user, event, one experiment and a time: what the schema below reads.
SCHEMA: dict[str, Any] = {
    "project_id": {"value": "1234567"},
    "account_id": {"value": "8511325"},
    "user_id": {"column": "user"},
    "event_name": {"column": "event"},
    "experiments": [{"experiment_column": "exp", "variation_column": "var"}],
    "time": {"column": "ts"},
}


def read_rows(path: Path, columns: list[str], **kw: Any) -> dict[str, list[Any]]:
    """Every batch of a file, flattened: values per column, rows, lines, malformed, blanks."""
    out: dict[str, list[Any]] = {c: [] for c in columns}
    out.update(rows=[], lines=[], positions=[], malformed=[], blank=[0])
    for batch in open_source(path).batches(columns, **kw):
        if batch.data is not None:
            for c in columns:
                out[c] += batch.data.column(c).to_pylist()
        out["rows"] += batch.rows.tolist()
        out["positions"] += batch.positions.tolist()
        out["lines"] += batch.lines.tolist() if batch.lines is not None else []
        out["malformed"] += list(batch.malformed)
        out["blank"][0] += batch.blank_lines
    return out


# --- 7: a nested column the schema reads is refused when the schema is applied --------------


def events_table(**overrides: Any) -> pa.Table:
    """Three events in Arrow, with any column replaced."""
    columns: dict[str, Any] = {
        "user": ["u1", "u2", "u3"],
        "event": ["buy", "buy", "view"],
        "exp": ["87654321"] * 3,
        "var": ["1111111"] * 3,
        "ts": [1_462_472_175] * 3,
    }
    columns.update(overrides)
    return pa.table(columns)


def check_cli(
    tmp_path: Path, data: Path, schema: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """``check DATA --schema S.toml`` in a process, timed: it must answer within seconds."""
    started = time.monotonic()
    done = cli("check", str(data), "--schema", str(schema_toml(tmp_path / "s.toml", schema)))
    assert time.monotonic() - started < 30
    return done


def assert_refused(done: subprocess.CompletedProcess[str], *parts: str) -> None:
    """Exit 2 with one line on stderr naming every part, and no traceback."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for part in parts:
        assert part in lines[0], lines[0]


FLATTEN = (
    "which cannot be read as one text cell; "
    "flatten it, or pick the element with a column of its own, and map that column"
)


@pytest.mark.parametrize(
    ("column", "cells", "said"),
    [
        pytest.param(
            "event", [[1, 2], [3], []], f"list<element: int64>, {FLATTEN}", id="list-int64"
        ),
        pytest.param(
            "user",
            [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, None],
            f"struct<id: int64, name: string>, {FLATTEN}",
            id="struct",
        ),
        pytest.param(
            "var",
            pa.array([[("k", 1)], [], None], pa.map_(pa.string(), pa.int64())),
            "map<string, int64",
            id="map",
        ),
        pytest.param(
            "user",
            pa.array([b"\x00" * 16, b"\xff" * 16, None], pa.binary(16)),
            "fixed_size_binary[16], which cannot be read as one text cell; convert it to text",
            id="uuid-bytes",
        ),
    ],
)
def test_nested_parquet_column_the_schema_reads_is_refused(
    tmp_path: Path, column: str, cells: Any, said: str
) -> None:
    """A list, struct or map (or bytes) column the schema maps: exit 2 at once, naming file,
    column and type and saying what to do, instead of minutes of work and a traceback."""
    path = tmp_path / "events.parquet"
    pq.write_table(events_table(**{column: cells}), path)
    done = check_cli(tmp_path, path, SCHEMA)
    assert_refused(done, f"{path}: column '{column}' that the schema reads is ", said)


def test_nested_columns_the_schema_does_not_read_are_fine(tmp_path: Path) -> None:
    """Columns the schema does not read may have any type."""
    path = tmp_path / "events.parquet"
    table = events_table(tags=[[1, 2], [3], []], meta=[{"a": 1}, {"a": 2}, {"a": 3}])
    table = table.append_column("raw", pa.array([b"\xff" * 16] * 3, pa.binary(16)))
    pq.write_table(table, path)
    done = check_cli(tmp_path, path, SCHEMA)
    assert done.returncode == 0, done.stderr
    assert "rows read              3" in done.stdout


def test_dataframe_holding_lists_is_refused(tmp_path: Path) -> None:
    """A pandas DataFrame holding lists, saved by pandas and checked by the CLI, and given
    to the Python API directly: refused with the column and its type."""
    frame = events_table().to_pandas()
    frame["event"] = [["buy", "view"], ["buy"], []]
    path = tmp_path / "frame.parquet"
    frame.to_parquet(path)
    assert_refused(
        check_cli(tmp_path, path, SCHEMA), f"{path}: column 'event'", "list<element: string>"
    )
    with pytest.raises(SourceError) as caught:
        importer.check(frame, schema=SCHEMA)
    assert str(caught.value).startswith("<dataframe>: column 'event' that the schema reads is ")
    assert "list<item: string>" in str(caught.value)


def test_a_nested_column_in_one_file_of_a_parquet_directory_is_named(tmp_path: Path) -> None:
    """In a directory, the file holding the nested column is the one named."""
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(events_table(), folder / "p1.parquet")
    pq.write_table(events_table(ts=[[1], [2], [3]]), folder / "p2.parquet")
    with pytest.raises(SourceError, match=r"p2\.parquet: column 'ts' that the schema reads is"):
        open_source(folder).require(["user", "ts"])
    open_source(folder).require(["user"])  # the other columns pass


# --- 10a: a header line longer than 64 KB is read whole, one beyond 16 MB refused -----------


def wide_csv(path: Path, fillers: int, rows: list[str]) -> Path:
    """A CSV whose header holds ``fillers`` columns before the five the schema reads."""
    names = [f'"filler, column {i:05d}"' for i in range(fillers)]
    header = ",".join([*names, "user", "event", "exp", "var", "ts"])
    path.write_text("\n".join([header] + [("," * fillers) + r for r in rows]) + "\n")
    return path


def test_a_header_longer_than_64_kb_is_read_whole(tmp_path: Path) -> None:
    """A 200 KB header: every column is found, and rows are rows, not malformed records."""
    rows = ["u1,buy,87654321,1111111,1462472175", "u2,buy,87654321,1111111,1462472176"]
    path = wide_csv(tmp_path / "wide.csv", 8_000, rows)
    assert path.read_text().index("\n") > 2 * 64 * 1024
    names = open_source(path).inputs[0].columns()
    assert len(names) == 8_005
    assert names[0] == "filler, column 00000"  # quoted names keep their delimiter
    assert names[-5:] == ["user", "event", "exp", "var", "ts"]
    data = read_rows(path, ["filler, column 07999", "user", "ts"])
    assert data["user"] == ["u1", "u2"]
    assert data["ts"] == ["1462472175", "1462472176"]
    assert data["rows"] == [1, 2]
    assert data["lines"] == [2, 3]
    assert data["malformed"] == []


def test_a_wide_header_checks_from_the_cli(tmp_path: Path) -> None:
    """The same file through ``check``: the rows are valid, and the output stays short."""
    rows = [f"u{i},buy,87654321,1111111,{1_462_472_175 + i}" for i in range(50)]
    path = wide_csv(tmp_path / "wide.csv", 8_000, rows)
    done = check_cli(tmp_path, path, SCHEMA)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "valid                 50" in done.stdout
    assert len(done.stdout) < 5_000


def test_header_quotes_are_honoured_across_lines(tmp_path: Path) -> None:
    """A quoted header name holding a line break: the header runs on to the next line,
    and the line numbers of the rows count that line."""
    fillers = ",".join(f"f{i}" for i in range(10_000))
    path = tmp_path / "quoted.csv"
    path.write_text(
        f'{fillers},"two\nlines",id\n' + "," * 10_000 + "a,1\n" + "," * 10_000 + "b,2\n"
    )
    assert open_source(path).inputs[0].columns()[-2:] == ["two\nlines", "id"]
    data = read_rows(path, ["two\nlines", "id"])
    assert data["two\nlines"] == ["a", "b"]
    assert data["id"] == ["1", "2"]
    assert data["lines"] == [3, 4]
    assert data["malformed"] == []


def test_a_header_beyond_16_mb_is_refused_clearly(tmp_path: Path) -> None:
    """No line break in the first 16 MB: a SourceError names the file and says what to do."""
    path = tmp_path / "endless.csv"
    with path.open("w") as handle:
        for i in range(1_100_000):  # 17 MB of one line
            handle.write(f"c{i:014d},")
        handle.write("\n1\n")
    with pytest.raises(SourceError) as caught:
        open_source(path).require(["c00000000000000"])
    message = str(caught.value)
    assert message.startswith(f"{path}: the header line is longer than 16 MB")
    assert "every quote in its first line is closed" in message


# --- 10b: a cell larger than a block is read with larger blocks, never yielded twice --------


def test_a_50_mb_cell_is_read_and_no_row_comes_twice(tmp_path: Path) -> None:
    """pyarrow's "straddling object" error: the read restarts with larger blocks, and the
    rows already yielded are not yielded again."""
    path = tmp_path / "big.csv"
    cell = "x" * (50 << 20)
    with path.open("w") as handle:
        handle.write("id,note\n")
        handle.writelines(f"{i},before\n" for i in range(20_000))
        handle.write("bad,row,with,too,many,cells\n\n")
        handle.write(f'big,"{cell}"\n')
        handle.writelines(f"{i},after\n" for i in range(1_000))
    for batch_size in (100, 65_536):  # the first one yields many batches before the cell
        data = read_rows(path, ["id", "note"], batch_size=batch_size)
        assert len(data["id"]) == 21_001
        assert data["rows"] == [*range(1, 20_001), *range(20_002, 21_003)]
        assert data["positions"] == [r - 1 for r in data["rows"]]
        assert data["lines"][20_000] == 20_004
        assert data["lines"][-1] == 21_004
        assert data["id"][20_000] == "big"
        assert len(data["note"][20_000]) == 50 << 20
        assert [(m.row, m.line) for m in data["malformed"]] == [(20_001, 20_002)]
        assert data["blank"] == [1]


def test_a_cell_beyond_the_largest_block_is_refused_with_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When even the largest block cannot hold a record, a SourceError names the file, the
    line and the size (the limit lowered here from 1 GB to 1 MB)."""
    monkeypatch.setattr(csv_input, "_MAX_BLOCK", 1 << 20)
    path = tmp_path / "huge.csv"
    path.write_text("id,note\n" + '1,a\n2,"b\nc"\n' + f"3,{'x' * (3 << 20)}\n4,d\n")
    with pytest.raises(SourceError) as caught:
        read_rows(path, ["id", "note"], batch_size=10)
    assert str(caught.value).startswith(f"{path}: a cell near line 5 is larger than 1 MB")


# --- 10c: blank lines stream at flat memory ---------------------------------------------------

PEAK_RSS = """
import resource, sys
from importer.source import open_source
rows = blank = 0
for batch in open_source(sys.argv[1]).batches(["c0", "c7"]):
    rows += len(batch.positions)
    blank += batch.blank_lines
print(rows, blank, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss(path: Path) -> tuple[int, int, int]:
    """Rows, blank lines and peak RSS (KB) of a process reading a file's batches."""
    done = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    rows, blank, peak = map(int, done.stdout.split())
    return rows, blank, peak


def test_millions_of_blank_lines_stream_at_flat_memory(tmp_path: Path) -> None:
    """3 million blank lines between two rows of a .csv.gz: peak RSS stays near what a tiny
    file needs (it grew by 50 bytes per blank line per column before)."""
    header = ",".join(f"c{i}" for i in range(8)) + "\n"
    row = ",".join("1" * 8) + "\n"
    tiny = tmp_path / "tiny.csv.gz"
    tiny.write_bytes(gzip.compress((header + row + row).encode()))
    blank = tmp_path / "blank.csv.gz"
    with gzip.open(blank, "wb", compresslevel=1) as handle:
        handle.write((header + row).encode())
        for _ in range(30):
            handle.write(b"\n" * 100_000)
        handle.write(row.encode())
    _, _, base = peak_rss(tiny)
    rows, blanks, peak = peak_rss(blank)
    assert (rows, blanks) == (2, 3_000_000)
    assert peak - base < 100 * 1024, f"peak RSS grew by {(peak - base) // 1024} MB"


def test_rows_after_many_blank_lines_keep_their_lines(tmp_path: Path) -> None:
    """Blank lines cut into many small blocks still count in the line numbers."""
    path = tmp_path / "gaps.csv.gz"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n" + b"\n" * 1_000_000 + b"3,4\n" + b"\r\n" * 5))
    data = read_rows(path, ["a", "b"], batch_size=1_000)
    assert data["a"] == ["1", "3"]
    assert data["lines"] == [2, 1_000_003]
    assert data["rows"] == [1, 2]
    assert data["blank"] == [1_000_005]


# --- 10d: raw text of malformed records is cut short ------------------------------------------


def test_malformed_record_text_is_cut_short(tmp_path: Path) -> None:
    """A 600 KB malformed record is shown as 200 characters and "…", with its true line."""
    path = tmp_path / "bad.csv"
    long_record = ",".join(["x" * 99] * 6_000)
    path.write_text(f'a,b\n1,2\n"q\nq",{long_record}\n3,4\n')
    data = read_rows(path, ["a", "b"])
    (bad,) = data["malformed"]
    assert (bad.row, bad.line) == (2, 3)
    assert len(bad.text) == 201
    assert bad.text.endswith("…")
    assert bad.text.startswith('"q\nq",xxx')
    assert data["lines"] == [2, 5]


def test_malformed_records_in_a_later_block_keep_their_numbers(tmp_path: Path) -> None:
    """The parser reports a block's malformed records while the block before is returned:
    they keep their own row and line, and the rows after them theirs."""
    path = tmp_path / "many.csv"
    lines = ["id,note"] + [
        "bad,row,x" if i in (12_000, 25_000) else f"{i},n" for i in range(30_000)
    ]
    path.write_text("\n".join(lines) + "\n")
    data = read_rows(path, ["id"], batch_size=100)
    assert [(m.row, m.line) for m in data["malformed"]] == [(12_001, 12_002), (25_001, 25_002)]
    assert data["rows"] == [r for r in range(1, 30_001) if r not in (12_001, 25_001)]
    assert data["lines"] == [r + 1 for r in data["rows"]]
    assert data["id"][12_000] == "12001"

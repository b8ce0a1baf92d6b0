"""Ingest then validate over generated CSV bytes (quoted fields, CRLF, a byte order mark, invalid UTF-8, huge
fields, blank lines): never a crash, every row valid or quarantined, as many rows as a reference reader finds,
and every quarantined row names its file and reason."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path

import pytest
from continuous_training.config import Settings
from continuous_training.data.ingest import ingest
from continuous_training.data.validation import REASON, validate
from continuous_training.errors import PipelineError
from continuous_training.paths import stage_dir
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from test_bad_input import HEADER, RUN_ID, make_spec

pytestmark = pytest.mark.integration

# Spark's CSV reader skips a line that String.trim leaves empty: every character at most U+0020.
BLANK = "".join(chr(code) for code in range(33))
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=12)


def csv_line(fields: list[str]) -> bytes:
    """One record as Python's csv module quotes it (fields with a comma or a quote in quotes, quotes doubled)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(fields)
    return out.getvalue().encode()


ROW = st.tuples(TEXT, st.one_of(st.floats().map(repr), TEXT), TEXT, st.sampled_from(["0", "1", "", "2", "x"]))
LINE = st.one_of(
    ROW.map(lambda fields: csv_line(list(fields))),
    st.integers(1_000, 20_000).map(lambda size: csv_line(["h" * size, "1.0", "basic", "0"])),
    st.binary(max_size=60).map(lambda raw: bytes(b for b in raw if b not in b'\r\n"\x00')),
    st.sampled_from([b"", b"   ", b"\t", b",,,"]),
)
FILE = st.tuples(st.booleans(), st.lists(st.tuples(LINE, st.sampled_from([b"\n", b"\r\n"])), max_size=8),
                 st.booleans())


def file_bytes(bom: bool, lines: list[tuple[bytes, bytes]], last_newline: bool) -> bytes:
    data = (b"\xef\xbb\xbf" if bom else b"") + HEADER.encode() + b"".join(line + end for line, end in lines)
    return data if last_newline or not lines else data.removesuffix(lines[-1][1])


def reference_rows(data: bytes) -> int:
    """The rows of a CSV file as a reader of one record per line counts them: the bytes as UTF-8 (bad bytes
    replaced) less a leading byte order mark, split at \\n, \\r\\n or \\r, less the header line and blank lines;
    each row is one record to Python's csv module."""
    lines = io.StringIO(data.decode("utf-8", "replace").removeprefix("\ufeff"), newline="").readlines()
    rows = [line for line in lines[1:] if line.strip(BLANK)]
    assert all(len(list(csv.reader([line]))) == 1 for line in rows)
    return len(rows)


@hypothesis_settings(max_examples=10, deadline=None)
@given(files=st.lists(FILE, min_size=1, max_size=2))
def test_every_row_of_generated_csv_bytes_is_valid_or_quarantined_with_its_file_and_reason(spark, files):
    with tempfile.TemporaryDirectory() as root:
        settings = Settings(data_dir=Path(root) / "data")
        landing = Path(root) / "landing"
        landing.mkdir()
        expected = {}
        for index, content in enumerate(files):
            data = file_bytes(*content)
            (landing / f"part-{index}.csv").write_bytes(data)
            expected[f"file:{landing / f'part-{index}.csv'}"] = reference_rows(data)
        spec = make_spec(landing)
        ingest_dir, validate_dir = (stage_dir(spec.name, stage, RUN_ID, settings) for stage in ("ingest", "validate"))

        try:
            ingested = ingest(spark, spec, RUN_ID, ingest_dir, settings)
        except PipelineError as error:
            assert sum(expected.values()) == 0 and "holds no rows" in str(error)
            return
        try:
            validate(spark.read.parquet(str(ingest_dir / "data")), spec, RUN_ID, validate_dir, 1.0)
        except PipelineError as error:
            assert "no valid rows left" in str(error)

        assert ingested.files == expected and ingested.quarantined_files == {}
        validated = json.loads((validate_dir / "validation.json").read_text())
        assert validated["rows_in"] == validated["valid"] + validated["quarantined"] == sum(expected.values())
        quarantined = spark.read.parquet(str(validate_dir / "quarantine")).select(REASON, "_source_file").collect()
        assert len(quarantined) == validated["quarantined"]
        assert all(row[REASON] and row["_source_file"] in expected for row in quarantined)
        valid = spark.read.parquet(str(validate_dir / "valid")).collect()
        assert not any("\ufffd" in str(value) for row in valid for value in row)

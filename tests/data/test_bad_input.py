"""Bad landing files through the real ingest and validate.

Every input row ends up valid or quarantined with a reason; input that cannot be read at all stops the run
with a clear PipelineError.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from continuous_training.config import Settings
from continuous_training.data.features import FEATURES, featurize, split_bucket
from continuous_training.data.ingest import CORRUPT_RECORD, ingest
from continuous_training.data.validation import REASON, validate
from continuous_training.errors import PipelineError
from continuous_training.paths import IngestResult, ValidationResult, stage_dir
from continuous_training.spec import DatasetSpec, parse_spec
from pyspark.sql import functions as F

pytestmark = pytest.mark.integration

HEADER = "id,amount,plan,churned\n"
MALFORMED = "malformed record: does not parse against the schema"
FLOAT32_RANGE = "'amount' is beyond the float32 range (|x| > 3.4028235e+38)"
RUN_ID = "manual__2026-11-21T10:00:00+00:00"


def make_spec(landing: Path, rules: dict | None = None, pattern: str = "*.csv", **source) -> DatasetSpec:
    """The spec of the bad-input tests over `landing/pattern`; `source` adds fields (format, options, ...)."""
    return parse_spec({
        "name": "bad_input",
        "source": {"path": str(landing / pattern), "format": "csv", **source},
        "schema": {"id": "string", "amount": "double", "plan": "string", "churned": "int"},
        "label": "churned",
        "task": "binary_classification",
        "id_column": "id",
        "features": {"numeric": ["amount"], "categorical": ["plan"]},
        "rules": rules or {},
    })


def land(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    """Write landing files (text or raw bytes) into a fresh folder and return it."""
    landing = tmp_path / "landing"
    landing.mkdir(exist_ok=True)
    for name, content in files.items():
        path = landing / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return landing


@dataclass
class Outcome:
    ingested: IngestResult
    validated: ValidationResult
    valid_ids: list[str]
    quarantined: dict[str, list[dict]]


def run_stages(spark, spec: DatasetSpec, settings: Settings, expected_ids: list[str],
               max_fraction: float = 1.0, run_id: str = RUN_ID) -> Outcome:
    """Ingest then validate; check from the Parquet outputs that every input row is valid or quarantined."""
    ingest_dir = stage_dir(spec.name, "ingest", run_id, settings)
    validate_dir = stage_dir(spec.name, "validate", run_id, settings)
    ingested = ingest(spark, spec, run_id, ingest_dir, settings)
    ingested_rows = spark.read.parquet(str(ingest_dir / "data"))
    validated = validate(ingested_rows, spec, run_id, validate_dir, max_fraction,
                         quarantined_files=ingested.quarantined_files)
    return check_accounting(spark, ingested, validated, validate_dir, expected_ids)


def check_accounting(spark, ingested: IngestResult, validated: ValidationResult, validate_dir: Path,
                     expected_ids: list[str]) -> Outcome:
    """rows in = valid + quarantined, no row lost or doubled, each quarantined row with a reason."""
    valid = spark.read.parquet(str(validate_dir / "valid"))
    quarantine = spark.read.parquet(str(validate_dir / "quarantine"))
    valid_ids = [row["id"] for row in valid.select("id").collect()]
    quarantined_rows = [row.asDict() for row in quarantine.collect()]
    assert ingested.rows == validated.rows_in == len(expected_ids)
    assert validated.valid == len(valid_ids) and validated.quarantined == len(quarantined_rows)
    assert validated.rows_in == validated.valid + validated.quarantined
    assert sorted(valid_ids + [row["id"] for row in quarantined_rows]) == sorted(expected_ids)
    assert all(row[REASON] and row[REASON].strip() for row in quarantined_rows)
    reasons = Counter(reason for row in quarantined_rows for reason in row[REASON].split("; "))
    assert validated.reasons == dict(reasons)
    assert list(validated.reasons.values()) == sorted(reasons.values(), reverse=True)
    assert json.loads((validate_dir / "validation.json").read_text())["rows_in"] == len(expected_ids)
    quarantined: dict[str, list[dict]] = {}
    for row in quarantined_rows:
        quarantined.setdefault(row["id"], []).append(row)
    return Outcome(ingested, validated, valid_ids, quarantined)


def assert_nothing_written(spec: DatasetSpec, settings: Settings) -> None:
    """A run stopped at ingest leaves no manifest and no validation output behind."""
    assert not (stage_dir(spec.name, "ingest", RUN_ID, settings) / "manifest.json").exists()
    assert not stage_dir(spec.name, "validate", RUN_ID, settings).exists()


@pytest.mark.parametrize(
    ("bad_line", "parsed"),
    [
        ("b,2.5,pro\n", {"amount": 2.5, "plan": "pro", "churned": None}),
        ("b,2.5,pro,1,extra\n", {"amount": 2.5, "plan": "pro", "churned": 1}),
        ('b,2.5,"pro,1\n', {"amount": 2.5, "churned": None}),
    ],
    ids=["too-few-fields", "too-many-fields", "unterminated-quote"],
)
def test_malformed_row_is_quarantined_with_its_raw_text(spark, settings, tmp_path, bad_line, parsed):
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\n" + bad_line + "c,3.0,pro,1\n"})

    outcome = run_stages(spark, make_spec(landing), settings, ["a", "b", "c"])

    assert sorted(outcome.valid_ids) == ["a", "c"]
    [row] = outcome.quarantined["b"]
    assert MALFORMED in row[REASON]
    assert row[CORRUPT_RECORD] == bad_line.rstrip("\n")
    assert row["_source_file"].endswith("/landing/batch.csv")
    assert {key: row[key] for key in parsed} == parsed
    assert outcome.ingested.corrupt_rows == 1


def test_text_in_a_double_column_is_quarantined(spark, settings, tmp_path):
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\nb,abc,pro,1\n"})

    outcome = run_stages(spark, make_spec(landing), settings, ["a", "b"])

    assert outcome.valid_ids == ["a"]
    [row] = outcome.quarantined["b"]
    assert row[REASON] == MALFORMED
    assert row["amount"] is None and row[CORRUPT_RECORD] == "b,abc,pro,1"


def ingest_with_poison(spark, settings, tmp_path, poison: dict[str, str | bytes], **source) -> Outcome:
    """Ingest and validate one good file beside poison files: the run goes on with the good file's rows, and each
    poison file is listed with its reason in the manifest and in validation.json."""
    landing = land(tmp_path, {"good.csv": HEADER + "a,1.0,basic,0\nb,2.0,pro,1\n", **poison})
    spec = make_spec(landing, pattern="*", **source)
    outcome = run_stages(spark, spec, settings, ["a", "b"])
    assert sorted(outcome.valid_ids) == ["a", "b"]
    assert outcome.ingested.files == {f"file:{landing / 'good.csv'}": 2}
    assert set(outcome.ingested.quarantined_files) == {f"file:{landing / name}" for name in poison}
    assert outcome.validated.quarantined_files == outcome.ingested.quarantined_files
    written = json.loads((stage_dir(spec.name, "validate", RUN_ID, settings) / "validation.json").read_text())
    assert written["quarantined_files"] == outcome.ingested.quarantined_files
    return outcome


def test_a_file_whose_header_does_not_match_is_quarantined_and_the_run_goes_on(spark, settings, tmp_path):
    outcome = ingest_with_poison(spark, settings, tmp_path, {"bad_header.csv": "id,amount,churned\nc,1.0,0\n"})

    [reason] = outcome.ingested.quarantined_files.values()
    assert "header does not match the spec schema" in reason and "Header length: 3, schema size: 4" in reason


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        json.dumps([{"id": "a", "amount": 1.0, "plan": "basic", "churned": 0}], indent=2),
        '{"id": "a", "amount": 1.0, "plan": "basic", "churned": 0}\n',
    ],
    ids=["random-bytes", "json-document", "json-lines"],
)
def test_a_file_that_is_not_csv_is_quarantined_and_the_run_goes_on(spark, settings, tmp_path, content):
    outcome = ingest_with_poison(spark, settings, tmp_path, {"export.csv": content})

    [reason] = outcome.ingested.quarantined_files.values()
    assert "header does not match the spec schema" in reason


def test_a_corrupt_gzip_file_is_quarantined_and_the_run_goes_on(spark, settings, tmp_path):
    compressed = gzip.compress((HEADER + "c,1.0,basic,0\n" * 20_000).encode())

    outcome = ingest_with_poison(spark, settings, tmp_path, {"cut.csv.gz": compressed[:len(compressed) // 2]})

    [reason] = outcome.ingested.quarantined_files.values()
    assert "EOFException" in reason


def test_a_line_longer_than_the_column_cap_quarantines_its_file_and_the_run_goes_on(spark, settings, tmp_path):
    from continuous_training.data.ingest import MAX_CHARS_PER_COLUMN

    huge = HEADER + "c," + "9" * (MAX_CHARS_PER_COLUMN + 10) + ",basic,0\n"

    outcome = ingest_with_poison(spark, settings, tmp_path, {"huge.csv": huge})

    [reason] = outcome.ingested.quarantined_files.values()
    assert "exceeds the maximum number of characters" in reason and len(reason) < 2000


def test_a_parquet_file_of_another_column_type_is_quarantined_and_the_run_goes_on(spark, settings, tmp_path):
    landing = tmp_path / "landing"
    columns = "id string, amount double, plan string, churned int"
    spark.createDataFrame([("a", 1.0, "basic", 0), ("b", 2.0, "pro", 1)], columns).coalesce(1) \
        .write.parquet(str(landing / "good"))
    spark.createDataFrame([("c", "1.0", "basic", 0)], "id string, amount string, plan string, churned int") \
        .coalesce(1).write.parquet(str(landing / "typed"))
    spec = make_spec(landing, pattern="*/*.parquet", format="parquet")

    outcome = run_stages(spark, spec, settings, ["a", "b"])

    [(path, reason)] = outcome.validated.quarantined_files.items()
    assert "/landing/typed/part-" in path and "PARQUET_COLUMN_DATA_TYPE_MISMATCH" in reason


def test_the_corrupt_record_column_is_bounded(spark, settings, tmp_path):
    from continuous_training.data.ingest import MAX_CORRUPT_RECORD_CHARS

    long_line = "b,2.0,pro,1" + ",extra-field-of-forty-characters-each----" * 5000
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\n" + long_line + "\n"})

    outcome = run_stages(spark, make_spec(landing), settings, ["a", "b"])

    [row] = outcome.quarantined["b"]
    assert MALFORMED in row[REASON]
    assert row[CORRUPT_RECORD] == long_line[:MAX_CORRUPT_RECORD_CHARS] and len(long_line) > MAX_CORRUPT_RECORD_CHARS


def test_every_file_quarantined_stops_ingest_naming_each_file(spark, settings, tmp_path):
    landing = land(tmp_path, {"one.csv": "id,amount,churned\na,1.0,0\n", "two.csv": "x,y\n1,2\n"})
    spec = make_spec(landing)

    with pytest.raises(PipelineError, match=r"no readable input file for 'bad_input'") as error:
        ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert "one.csv" in str(error.value) and "two.csv" in str(error.value)
    assert_nothing_written(spec, settings)


def test_a_declared_encoding_is_decoded(spark, settings, tmp_path):
    landing = land(tmp_path, {"latin.csv": (HEADER + "José,1.0,básico,0\n").encode("latin-1")})
    spec = make_spec(landing, options={"encoding": "ISO-8859-1"})

    outcome = run_stages(spark, spec, settings, ["José"])

    assert outcome.valid_ids == ["José"]
    valid = spark.read.parquet(str(stage_dir(spec.name, "validate", RUN_ID, settings) / "valid"))
    assert valid.first()["plan"] == "básico"


def test_a_header_after_a_byte_order_mark_is_read(spark, settings, tmp_path):
    landing = land(tmp_path, {"bom.csv": b"\xef\xbb\xbf" + (HEADER + "a,1.0,basic,0\r\nb,2.0,pro,1\r\n").encode()})

    outcome = run_stages(spark, make_spec(landing), settings, ["a", "b"])

    assert sorted(outcome.valid_ids) == ["a", "b"] and outcome.ingested.quarantined_files == {}


@pytest.mark.parametrize(
    "line",
    [b"b\xff\xfe,2.0,pro,1\n", b"b,2.0,pr\xe9,1\n", "b,2.0,pro\ufffd,1\n".encode()],
    ids=["invalid-utf8-in-id", "latin1-byte-undeclared", "replacement-character-in-source"],
)
def test_undecodable_bytes_are_quarantined_never_replaced_silently(spark, settings, tmp_path, line):
    landing = land(tmp_path, {"batch.csv": HEADER.encode() + b"a,1.0,basic,0\n" + line})

    outcome = ingest_and_validate_by_file(spark, make_spec(landing), settings)

    assert outcome.valid_ids == ["a"]
    [[row]] = outcome.quarantined.values()
    assert "undecodable bytes" in row[REASON] and row["_source_file"] == f"file:{landing / 'batch.csv'}"


def ingest_and_validate_by_file(spark, spec: DatasetSpec, settings: Settings) -> Outcome:
    """`run_stages` when a quarantined row's id is not known in advance (it may hold a replacement character)."""
    ingest_dir = stage_dir(spec.name, "ingest", RUN_ID, settings)
    validate_dir = stage_dir(spec.name, "validate", RUN_ID, settings)
    ingested = ingest(spark, spec, RUN_ID, ingest_dir, settings)
    validated = validate(spark.read.parquet(str(ingest_dir / "data")), spec, RUN_ID, validate_dir, 1.0)
    ids = [row["id"] for row in spark.read.parquet(str(ingest_dir / "data")).select("id").collect()]
    return check_accounting(spark, ingested, validated, validate_dir, ids)


def test_a_double_feature_beyond_float32_is_quarantined_without_any_rule(spark, settings, tmp_path):
    rows = ["a,1.0,basic,0", "b,1e300,pro,1", "c,-3.5e38,basic,0", "d,3.4e38,pro,1"]
    landing = land(tmp_path, {"batch.csv": HEADER + "\n".join(rows) + "\n"})

    outcome = run_stages(spark, make_spec(landing), settings, list("abcd"))

    assert sorted(outcome.valid_ids) == ["a", "d"]
    reasons = {row_id: rows[0][REASON] for row_id, rows in outcome.quarantined.items()}
    assert reasons == {"b": FLOAT32_RANGE, "c": FLOAT32_RANGE}


def test_no_matching_file_stops_ingest(spark, settings, tmp_path):
    spec = make_spec(tmp_path / "nowhere")

    no_files = r"no input files match \S*/nowhere/\*\.csv \(dataset 'bad_input'\)"
    with pytest.raises(PipelineError, match=no_files):
        ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert_nothing_written(spec, settings)


@pytest.mark.parametrize("content", [HEADER, ""], ids=["header-only", "zero-bytes"])
def test_file_without_rows_stops_ingest(spark, settings, tmp_path, content):
    spec = make_spec(land(tmp_path, {"batch.csv": content}))

    with pytest.raises(PipelineError, match=r"the input of 'bad_input' \(.*\) holds no rows"):
        ingest(spark, spec, RUN_ID, stage_dir(spec.name, "ingest", RUN_ID, settings), settings)

    assert_nothing_written(spec, settings)


def test_unknown_category_with_allowed_rule_is_quarantined(spark, settings, tmp_path):
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\nb,2.0,enterprise,1\nc,3.0,pro,0\n"})
    spec = make_spec(landing, {"plan": {"allowed": ["basic", "pro"]}})

    outcome = run_stages(spark, spec, settings, ["a", "b", "c"])

    assert sorted(outcome.valid_ids) == ["a", "c"]
    [row] = outcome.quarantined["b"]
    assert row[REASON] == "'plan' not in allowed values" and row["plan"] == "enterprise"


def test_unknown_category_without_rule_is_kept_and_featurized_to_the_unknown_slot(spark, settings, tmp_path):
    spec = make_spec(tmp_path / "landing")
    candidates = spark.createDataFrame([(f"new{i}",) for i in range(100)], "id string")
    new_id = candidates.where(split_bucket(spec) >= 0.85).first()["id"]
    known = [f"k{i:02d},{i % 7}.5,{('basic', 'pro')[i % 2]},{i % 2}\n" for i in range(40)]
    land(tmp_path, {"batch.csv": HEADER + "".join(known) + f"{new_id},2.0,enterprise,1\n"})
    expected_ids = [f"k{i:02d}" for i in range(40)] + [new_id]

    outcome = run_stages(spark, spec, settings, expected_ids)
    assert outcome.quarantined == {} and new_id in outcome.valid_ids

    valid = spark.read.parquet(str(stage_dir(spec.name, "validate", RUN_ID, settings) / "valid"))
    result = featurize(valid, spec, RUN_ID, stage_dir(spec.name, "featurize", RUN_ID, settings),
                       outcome.ingested.input_fingerprint, settings)

    assert result.feature_dim == 1 + 2 + 1
    assert sum(result.rows.values()) == len(expected_ids)
    unknown_slot = F.element_at(FEATURES, result.feature_dim)
    featurized = stage_dir(spec.name, "featurize", RUN_ID, settings)
    per_split = {
        split: spark.read.parquet(str(featurized / split)).where(unknown_slot == 1.0).count()
        for split in ("train", "validation", "test")
    }
    assert per_split == {"train": 0, "validation": 0, "test": 1}


def test_nan_and_infinity_are_quarantined(spark, settings, tmp_path):
    rows = ["a,1.0,basic,0", "b,NaN,pro,1", "c,Infinity,basic,0", "d,-Inf,pro,1", "e,inf,basic,0"]
    landing = land(tmp_path, {"batch.csv": HEADER + "\n".join(rows) + "\n"})

    outcome = run_stages(spark, make_spec(landing), settings, list("abcde"))

    assert outcome.valid_ids == ["a"]
    reasons = {row_id: rows[0][REASON] for row_id, rows in outcome.quarantined.items()}
    non_finite = "'amount' is NaN or infinite"
    assert reasons == {"b": non_finite, "c": non_finite, "d": non_finite, "e": MALFORMED}


def test_duplicate_ids_across_files_are_all_quarantined(spark, settings, tmp_path):
    landing = land(tmp_path, {
        "day1.csv": HEADER + "a,1.0,basic,0\nb,2.0,pro,1\n",
        "day2.csv": HEADER + "b,2.5,pro,0\nc,3.0,basic,1\n",
    })

    outcome = run_stages(spark, make_spec(landing), settings, ["a", "b", "b", "c"])

    assert sorted(outcome.valid_ids) == ["a", "c"]
    assert [row[REASON] for row in outcome.quarantined["b"]] == ["duplicate 'id'"] * 2
    sources = sorted(Path(row["_source_file"]).name for row in outcome.quarantined["b"])
    assert sources == ["day1.csv", "day2.csv"]
    assert outcome.ingested.files == {
        f"file:{landing / 'day1.csv'}": 2, f"file:{landing / 'day2.csv'}": 2,
    }


def test_label_outside_allowed_values_or_missing_is_quarantined(spark, settings, tmp_path):
    rows = "a,1.0,basic,0\nb,2.0,pro,2\nc,3.0,basic,\nd,4.0,pro,1\n"
    landing = land(tmp_path, {"batch.csv": HEADER + rows})
    spec = make_spec(landing, {"churned": {"not_null": True, "allowed": [0, 1]}})

    outcome = run_stages(spark, spec, settings, list("abcd"))

    assert sorted(outcome.valid_ids) == ["a", "d"]
    assert outcome.quarantined["b"][0][REASON] == "'churned' not in allowed values"
    assert outcome.quarantined["c"][0][REASON] == "label 'churned' is null"


def test_quarantine_above_the_limit_fails_after_writing(spark, settings, tmp_path):
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\nb,x,pro,1\nc,3.0,basic,7\nd,4.0,pro,1\n"})
    spec = make_spec(landing, {"churned": {"allowed": [0, 1]}})

    with pytest.raises(PipelineError, match=r"2 of 4 rows \(50\.00%\) quarantined for 'bad_input', above the "
                                            r"limit of 25\.00%") as error:
        run_stages(spark, spec, settings, list("abcd"), max_fraction=0.25)

    assert MALFORMED in str(error.value) and "'churned' not in allowed values" in str(error.value)
    validate_dir = stage_dir(spec.name, "validate", RUN_ID, settings)
    ingested = IngestResult(**json.loads((stage_dir(spec.name, "ingest", RUN_ID, settings) / "manifest.json")
                                         .read_text()))
    validated = ValidationResult(**json.loads((validate_dir / "validation.json").read_text()))
    assert validated.quarantine_fraction == 0.5 and validated.max_quarantine_fraction == 0.25
    outcome = check_accounting(spark, ingested, validated, validate_dir, list("abcd"))
    assert sorted(outcome.quarantined) == ["b", "c"]


def test_rerun_for_the_same_run_id_overwrites_and_rereads_its_pinned_files(spark, settings, tmp_path):
    landing = land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\nb,abc,pro,1\nc,3.0,pro,1\n"})
    spec = make_spec(landing)

    first = run_stages(spark, spec, settings, ["a", "b", "c"])
    second = run_stages(spark, spec, settings, ["a", "b", "c"])

    assert (second.ingested, second.validated) == (first.ingested, first.validated)
    assert sorted(second.valid_ids) == sorted(first.valid_ids) == ["a", "c"]
    ingested = spark.read.parquet(str(stage_dir(spec.name, "ingest", RUN_ID, settings) / "data"))
    assert ingested.count() == 3

    land(tmp_path, {"batch.csv": HEADER + "a,1.0,basic,0\nc,3.0,pro,1\n"})
    with pytest.raises(PipelineError, match="changed since the first attempt of this run pinned it"):
        run_stages(spark, spec, settings, ["a", "c"])
    next_run = run_stages(spark, spec, settings, ["a", "c"], run_id="manual__2026-11-22T00:00:00+00:00")
    assert next_run.validated.quarantined == 0 and sorted(next_run.valid_ids) == ["a", "c"]

"""Ingest: landing files → compacted Parquet, read with the spec's explicit schema, corrupt records kept.

A run's input is pinned: its first attempt lists the files the source glob matches (path, size, modification
time) into `inputs.json`, and every later attempt of the same run reads exactly those files, failing if one of
them changed or vanished. Files that land after the first attempt belong to the next run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import INGESTED_DATA, INPUTS_FILE, MANIFEST_FILE, IngestResult, write_result
from continuous_training.spec import DatasetSpec

CORRUPT_RECORD = "_corrupt_record"
SOURCE_FILE = "_source_file"


@dataclass(frozen=True)
class InputFile:
    """One landing file as a run pinned it."""

    path: str
    size: int
    modified_ms: int


@dataclass(frozen=True)
class PinnedInputs:
    """The exact files a run reads, and their fingerprint (a digest of paths, sizes and modification times)."""

    files: list[InputFile]
    fingerprint: str

    @classmethod
    def of(cls, files: Sequence[InputFile]) -> PinnedInputs:
        ordered = sorted(files, key=lambda file: file.path)
        digest = hashlib.sha256(json.dumps([asdict(file) for file in ordered]).encode()).hexdigest()
        return cls(files=ordered, fingerprint=digest[:16])


def read_source(spark: SparkSession, spec: DatasetSpec, paths: str | Sequence[str] | None = None,
                settings: Settings | None = None, columns: Sequence[str] | None = None) -> DataFrame:
    """Read landing files (default: the spec's source glob) with the explicit schema of `columns` (default: every
    spec column, in spec order); unparsable rows keep their raw text."""
    schema = StructType.fromDDL(spec.ddl_schema)
    if columns is not None:
        schema = StructType([schema[column] for column in columns])
    schema = schema.add(StructField(CORRUPT_RECORD, StringType()))
    reader = spark.read.format(spec.source.format).schema(schema)
    if spec.source.format in {"csv", "json"}:
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD)
    if spec.source.format == "csv":
        reader = reader.option("header", True).option("enforceSchema", False)
    reader = reader.options(**{key: str(value) for key, value in spec.source.options.items()})
    paths = spec.source_path(settings) if paths is None else paths
    try:
        frame = reader.load(paths if isinstance(paths, str) else list(paths))
    except AnalysisException as error:
        if "PATH_NOT_FOUND" in str(error) or "Path does not exist" in str(error):
            raise PipelineError(f"ingest: no input files match {paths} (dataset {spec.name!r})") from None
        raise
    if CORRUPT_RECORD not in frame.columns:
        frame = frame.withColumn(CORRUPT_RECORD, F.lit(None).cast("string"))
    return frame.withColumn(SOURCE_FILE, F.col("_metadata.file_path"))


def batch_columns(spark: SparkSession, spec: DatasetSpec, paths: Sequence[str]) -> list[str]:
    """The spec columns a batch to score holds, in file order: the features and the id column are required, the
    label and the other spec columns may be absent; a column the spec does not know is an error."""
    if spec.source.format == "json":
        return list(spec.schema_)
    options = {key: str(value) for key, value in spec.source.options.items()}
    if spec.source.format == "csv":
        options["header"] = "true"
    present = spark.read.format(spec.source.format).options(**options).load(list(paths)).columns
    unknown = [column for column in present if column not in spec.schema_]
    required = [*spec.feature_columns, *([spec.id_column] if spec.id_column else [])]
    missing = [column for column in required if column not in present]
    if missing or unknown:
        raise PipelineError(
            f"ingest: the batch {paths[0]} does not fit the spec of {spec.name!r}: "
            + "; ".join(filter(None, [missing and f"required columns {missing} are missing",
                                      unknown and f"columns {unknown} are not in the spec's schema"]))
        )
    return present


def _canonical(uri: str) -> str:
    """`file:///x` and `file:/x` name the same file; keep the form `_metadata.file_path` uses."""
    return uri.replace("file:///", "file:/", 1)


def _stat(spark: SparkSession, paths: Sequence[str]) -> list[InputFile]:
    """Size and modification time of each file, through Hadoop's FileSystem (any scheme Spark reads)."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    files = []
    for file in paths:
        path = jvm.org.apache.hadoop.fs.Path(file)
        status = path.getFileSystem(hadoop_conf).getFileStatus(path)
        files.append(InputFile(path=file, size=int(status.getLen()), modified_ms=int(status.getModificationTime())))
    return files


def pin_inputs(spark: SparkSession, spec: DatasetSpec, out_dir: Path, source: str) -> PinnedInputs:
    """The run's input files: listed from the `source` glob on the first attempt, read back from `inputs.json`
    after. Raises PipelineError when nothing matches, or a pinned file changed or vanished."""
    pinned_path = out_dir / INPUTS_FILE
    if pinned_path.is_file():
        pinned = PinnedInputs.of([InputFile(**file) for file in json.loads(pinned_path.read_text())["files"]])
        _check_unchanged(spark, spec, pinned)
        return pinned
    listed = [_canonical(file) for file in read_source(spark, spec, source).inputFiles()]
    if not listed:
        raise PipelineError(f"ingest: no input files match {source} (dataset {spec.name!r})")
    pinned = PinnedInputs.of(_stat(spark, listed))
    write_result(pinned_path, {"source": source, **asdict(pinned)})
    return pinned


def _check_unchanged(spark: SparkSession, spec: DatasetSpec, pinned: PinnedInputs) -> None:
    for file in pinned.files:
        try:
            (current,) = _stat(spark, [file.path])
        except Exception as error:
            if "FileNotFoundException" not in str(error):
                raise
            raise PipelineError(f"ingest: {file.path}, pinned by the first attempt of this run of {spec.name!r}, "
                                "no longer exists; trigger a new run to ingest the current files") from None
        if current != file:
            raise PipelineError(
                f"ingest: {file.path} changed since the first attempt of this run pinned it (size {file.size} → "
                f"{current.size}, modified {file.modified_ms} → {current.modified_ms}); trigger a new run"
            )


def _output_file_count(pinned: PinnedInputs, target_mb: int, parallelism: int) -> int:
    """Number of Parquet files: about one per `target_mb` of source bytes, and no fewer than Spark's parallelism."""
    total_bytes = sum(file.size for file in pinned.files)
    return max(parallelism, math.ceil(total_bytes / (target_mb * 1024 * 1024)))


def _explain_read_error(error: Exception, spec: DatasetSpec) -> PipelineError:
    message = str(error)
    cause = re.search(r"IllegalArgumentException: (.*?)\n\s*at ", message, re.S)
    detail = " ".join(cause.group(1).split()) if cause else message.splitlines()[0]
    if "header" in message.lower() and "schema" in message.lower():
        return PipelineError(
            f"ingest: a {spec.source.format} header does not match the spec schema of {spec.name!r} "
            f"(missing, extra or reordered columns, or a file that is not {spec.source.format}): {detail[:2000]}"
        )
    return PipelineError(f"ingest: cannot read the source of {spec.name!r}: {detail[:2000]}")


def ingest(spark: SparkSession, spec: DatasetSpec, run_id: str, out_dir: Path, settings: Settings | None = None,
           source: str | None = None, scoring: bool = False) -> IngestResult:
    """Read the run's pinned input files and write `out_dir/data` (Parquet) and `out_dir/manifest.json`; a rerun
    of the same run reads the same files and overwrites its output. `source` replaces the spec's source glob. A
    `scoring` batch needs only the features and the id column (`batch_columns`); the columns it lacks are absent
    from the output.
    """
    settings = settings or get_settings()
    source = source or spec.source_path(settings)
    pinned = pin_inputs(spark, spec, out_dir, source)
    source_files = [file.path for file in pinned.files]
    columns = batch_columns(spark, spec, source_files) if scoring else None
    frame = read_source(spark, spec, source_files, settings, columns)
    files = _output_file_count(pinned, settings.parquet_target_file_mb, spark.sparkContext.defaultParallelism)
    data_dir = out_dir / INGESTED_DATA
    try:
        frame.coalesce(files).write.mode("overwrite").parquet(str(data_dir))
    except Exception as error:  # Spark wraps the parser's complaint in several exception types
        if isinstance(error, IllegalArgumentException | AnalysisException) or "header" in str(error).lower():
            raise _explain_read_error(error, spec) from None
        raise
    written = spark.read.parquet(str(data_dir))
    per_file = written.groupBy(SOURCE_FILE).agg(
        F.count(F.lit(1)).alias("rows"), F.count(CORRUPT_RECORD).alias("corrupt")
    ).collect()
    counts = {row[SOURCE_FILE]: row["rows"] for row in per_file}
    rows = sum(counts.values())
    if rows == 0:
        raise PipelineError(f"ingest: the input of {spec.name!r} ({source}) holds no rows")
    result = IngestResult(
        dataset=spec.name,
        run_id=run_id,
        source=source,
        rows=rows,
        corrupt_rows=sum(row["corrupt"] for row in per_file),
        files={file: counts.get(file, 0) for file in sorted({*source_files, *counts})},
        input_fingerprint=pinned.fingerprint,
        output=str(data_dir),
        output_files=len(list(data_dir.glob("*.parquet"))),
    )
    write_result(out_dir / MANIFEST_FILE, result)
    return result

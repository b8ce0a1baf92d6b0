"""Ingest: landing files → compacted Parquet, read with the spec's explicit schema, corrupt records kept."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.spec import DatasetSpec

CORRUPT_RECORD = "_corrupt_record"
SOURCE_FILE = "_source_file"


@dataclass(frozen=True)
class IngestResult:
    """What ingest read and wrote; saved as `manifest.json` beside the Parquet output."""

    dataset: str
    run_id: str
    source: str
    rows: int
    corrupt_rows: int
    files: dict[str, int]
    output: str
    output_files: int


def read_source(spark: SparkSession, spec: DatasetSpec, settings: Settings | None = None) -> DataFrame:
    """Read the landing files with the explicit schema (never inferred); unparsable rows keep their raw text."""
    schema = StructType.fromDDL(spec.ddl_schema).add(StructField(CORRUPT_RECORD, StringType()))
    reader = spark.read.format(spec.source.format).schema(schema)
    if spec.source.format in {"csv", "json"}:
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD)
    if spec.source.format == "csv":
        reader = reader.option("header", True).option("enforceSchema", False)
    reader = reader.options(**{key: str(value) for key, value in spec.source.options.items()})
    path = spec.source_path(settings)
    try:
        frame = reader.load(path)
    except AnalysisException as error:
        if "PATH_NOT_FOUND" in str(error) or "Path does not exist" in str(error):
            raise PipelineError(f"ingest: no input files match {path} (dataset {spec.name!r})") from None
        raise
    if CORRUPT_RECORD not in frame.columns:
        frame = frame.withColumn(CORRUPT_RECORD, F.lit(None).cast("string"))
    return frame.withColumn(SOURCE_FILE, F.col("_metadata.file_path"))


def _canonical(uri: str) -> str:
    """`file:///x` and `file:/x` name the same file; keep the form `_metadata.file_path` uses."""
    return uri.replace("file:///", "file:/", 1)


def _output_file_count(spark: SparkSession, frame: DataFrame, target_mb: int) -> int:
    """Number of Parquet files for the input's size: about one per `target_mb` of source bytes."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    total_bytes = 0
    for file in frame.inputFiles():
        path = jvm.org.apache.hadoop.fs.Path(file)
        total_bytes += path.getFileSystem(hadoop_conf).getFileStatus(path).getLen()
    return max(1, math.ceil(total_bytes / (target_mb * 1024 * 1024)))


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


def ingest(spark: SparkSession, spec: DatasetSpec, run_id: str, out_dir: Path,
           settings: Settings | None = None) -> IngestResult:
    """Read the landing files and write `out_dir/data` (Parquet) and `out_dir/manifest.json`; rerun overwrites."""
    settings = settings or get_settings()
    frame = read_source(spark, spec, settings)
    source_files = [_canonical(file) for file in frame.inputFiles()]
    if not source_files:
        raise PipelineError(f"ingest: no input files match {spec.source_path(settings)} (dataset {spec.name!r})")
    files = _output_file_count(spark, frame, settings.parquet_target_file_mb)
    data_dir = out_dir / "data"
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
        raise PipelineError(f"ingest: the input of {spec.name!r} ({spec.source_path(settings)}) holds no rows")
    result = IngestResult(
        dataset=spec.name,
        run_id=run_id,
        source=spec.source_path(settings),
        rows=rows,
        corrupt_rows=sum(row["corrupt"] for row in per_file),
        files={file: counts.get(file, 0) for file in sorted({*source_files, *counts})},
        output=str(data_dir),
        output_files=len(list(data_dir.glob("*.parquet"))),
    )
    (out_dir / "manifest.json").write_text(json.dumps(asdict(result), indent=2))
    return result

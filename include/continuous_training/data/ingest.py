"""Ingest: landing files → compacted Parquet, read with the spec's explicit schema, corrupt records kept.

A run's input is pinned: its first attempt lists the files the source glob matches (path, size, modification
time) into `inputs.json`, and every later attempt of the same run reads exactly those files, failing if one of
them changed or vanished. Files that land after the first attempt belong to the next run. Where the glob has a
wildcard in its folder part (batch folders, `landing/churn/*/*.csv`), only folders holding `_SUCCESS` are listed,
as the landing trigger announces them, unless the spec sets `source.require_success_marker: false`.

A file that cannot be read (a header that does not match the schema, a Parquet column of another type, a corrupt
archive, a field longer than the column cap) is quarantined whole, named with its reason in the manifest; the run
goes on with the other files. Files are named by their Hadoop path (`file:/x/a b.csv`), read back literally.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from continuous_training.config import Settings, get_settings
from continuous_training.errors import PipelineError
from continuous_training.paths import (
    INGESTED_DATA,
    INPUTS_FILE,
    MANIFEST_FILE,
    SUCCESS_MARKER,
    IngestResult,
    write_result,
)
from continuous_training.spec import DatasetSpec

CORRUPT_RECORD = "_corrupt_record"
SOURCE_FILE = "_source_file"
# A CSV field longer than this fails its file (quarantined whole); `source.options.maxCharsPerColumn` overrides it.
MAX_CHARS_PER_COLUMN = 1_048_576
# The raw text kept of a record that does not parse.
MAX_CORRUPT_RECORD_CHARS = 10_000
_GLOB_CHARACTERS = re.compile(r"[\\{}\[\]*?]")
_WILDCARD = re.compile(r"[*?\[{]")
_FAILED_READ = re.compile(r"\[FAILED_READ_FILE\.(\w+)\] Encountered error while reading file (\S+)\.\s")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    """One landing file as a run pinned it."""

    path: str
    size: int
    modified_ms: int


@dataclass(frozen=True)
class PinnedInputs:
    """The exact files a run reads, their fingerprint (a digest of paths, sizes and modification times), and the
    batch folders skipped for want of a `_SUCCESS` marker."""

    files: list[InputFile]
    fingerprint: str
    incomplete_batches: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, files: Sequence[InputFile], incomplete_batches: Sequence[str] = ()) -> PinnedInputs:
        ordered = sorted(files, key=lambda file: file.path)
        digest = hashlib.sha256(json.dumps([asdict(file) for file in ordered]).encode()).hexdigest()
        return cls(files=ordered, fingerprint=digest[:16], incomplete_batches=sorted(incomplete_batches))


def _literal(path: str) -> str:
    """A file's path as Spark's reader takes it literally: Hadoop's glob characters escaped."""
    return _GLOB_CHARACTERS.sub(lambda match: "\\" + match.group(), path)


def read_source(spark: SparkSession, spec: DatasetSpec, paths: str | Sequence[str] | None = None,
                settings: Settings | None = None, columns: Sequence[str] | None = None) -> DataFrame:
    """Read landing files, a glob (default: the spec's source glob) or the files themselves (read literally), with
    the explicit schema of `columns` (default: every spec column, in spec order); unparsable rows keep their raw
    text, cut to MAX_CORRUPT_RECORD_CHARS. `_source_file` names each row's file by its Hadoop path."""
    schema = StructType.fromDDL(spec.ddl_schema)
    if columns is not None:
        schema = StructType([schema[column] for column in columns])
    schema = schema.add(StructField(CORRUPT_RECORD, StringType()))
    reader = spark.read.format(spec.source.format).schema(schema)
    if spec.source.format in {"csv", "json"}:
        reader = reader.option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", CORRUPT_RECORD)
    if spec.source.format == "csv":
        reader = (reader.option("header", True).option("enforceSchema", False)
                  .option("maxCharsPerColumn", MAX_CHARS_PER_COLUMN))
    reader = reader.options(**{key: str(value) for key, value in spec.source.options.items()})
    paths = spec.source_path(settings) if paths is None else paths
    try:
        frame = reader.load(paths if isinstance(paths, str) else [_literal(path) for path in paths])
    except AnalysisException as error:
        if "PATH_NOT_FOUND" in str(error) or "Path does not exist" in str(error):
            raise PipelineError(f"ingest: no input files match {paths} (dataset {spec.name!r})") from None
        raise
    corrupt = F.substring(CORRUPT_RECORD, 1, MAX_CORRUPT_RECORD_CHARS) if CORRUPT_RECORD in frame.columns else (
        F.lit(None).cast("string"))
    # `_metadata.file_path` is a URI: unescaped as a Hadoop path ('+' is itself there, not an escaped space).
    source_file = F.url_decode(F.replace(F.col("_metadata.file_path"), F.lit("+"), F.lit("%2B")))
    return frame.withColumns({CORRUPT_RECORD: corrupt, SOURCE_FILE: source_file})


def batch_columns(spark: SparkSession, spec: DatasetSpec, paths: Sequence[str]) -> list[str]:
    """The spec columns a batch to score holds, in file order: the features and the id column are required, the
    label and the other spec columns may be absent; a column the spec does not know is an error."""
    if spec.source.format == "json":
        return list(spec.schema_)
    options = {key: str(value) for key, value in spec.source.options.items()}
    if spec.source.format == "csv":
        options["header"] = "true"
    present = spark.read.format(spec.source.format).options(**options).load([_literal(p) for p in paths]).columns
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


def _hadoop_path(spark: SparkSession, uri: str) -> str:
    """A file's Hadoop path (`file:/x/a b.csv`) from its URI (`file:///x/a%20b.csv`, as Spark lists and reports it)."""
    jvm = spark.sparkContext._jvm
    return str(jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri)).toString())


def _stat(spark: SparkSession, paths: Sequence[str]) -> list[InputFile]:
    """Size and modification time of each file (a Hadoop path), through Hadoop's FileSystem (any scheme Spark
    reads)."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    files = []
    for file in paths:
        path = jvm.org.apache.hadoop.fs.Path(file)
        status = path.getFileSystem(hadoop_conf).getFileStatus(path)
        files.append(InputFile(path=file, size=int(status.getLen()), modified_ms=int(status.getModificationTime())))
    return files


def batch_depth(source: str) -> int | None:
    """How many folders above a matched file its batch folder is: the first folder of the glob with a wildcard.
    None when the folder part of the glob has none (the files sit in no batch folders)."""
    folders = source.split("/")[:-1]
    first = next((index for index, part in enumerate(folders) if _WILDCARD.search(part)), None)
    return None if first is None else len(folders) - first


def _complete_batches(spark: SparkSession, files: list[str], depth: int) -> tuple[list[str], list[str]]:
    """The files whose batch folder (`depth` folders up) holds `_SUCCESS`, and the folders that do not."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    folders = {file: file.rsplit("/", depth)[0] for file in files}
    complete = set()
    for folder in set(folders.values()):
        marker = jvm.org.apache.hadoop.fs.Path(f"{folder}/{SUCCESS_MARKER}")
        if marker.getFileSystem(hadoop_conf).exists(marker):
            complete.add(folder)
    return [file for file in files if folders[file] in complete], sorted(set(folders.values()) - complete)


def _without_marker(count: int) -> str:
    return f"{count} batch folder{'' if count == 1 else 's'} without {SUCCESS_MARKER}"


def pin_inputs(spark: SparkSession, spec: DatasetSpec, out_dir: Path, source: str) -> PinnedInputs:
    """The run's input files: listed from the `source` glob on the first attempt (only complete batch folders, see
    the module), read back from `inputs.json` after. Raises PipelineError when nothing (complete) matches, or a
    pinned file changed or vanished."""
    pinned_path = out_dir / INPUTS_FILE
    if pinned_path.is_file():
        document = json.loads(pinned_path.read_text())
        pinned = PinnedInputs.of([InputFile(**file) for file in document["files"]],
                                 document.get("incomplete_batches", []))
        _check_unchanged(spark, spec, pinned)
        return pinned
    listed = [_hadoop_path(spark, file) for file in read_source(spark, spec, source).inputFiles()]
    depth = batch_depth(source) if spec.source.require_success_marker else None
    listed, incomplete = _complete_batches(spark, listed, depth) if depth else (listed, [])
    if incomplete:
        log.warning("ingest: %s skipped: %s", _without_marker(len(incomplete)), ", ".join(incomplete))
    if not listed and incomplete:
        raise PipelineError(
            f"ingest: no complete batch matches {source} (dataset {spec.name!r}): {_without_marker(len(incomplete))} "
            f"({', '.join(incomplete[:5])}{', ...' if len(incomplete) > 5 else ''}); a batch is read once its writer "
            "adds the marker, or set source.require_success_marker: false"
        )
    if not listed:
        raise PipelineError(f"ingest: no input files match {source} (dataset {spec.name!r})")
    pinned = PinnedInputs.of(_stat(spark, listed), incomplete)
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


def _unreadable_file(spark: SparkSession, error: Exception, spec: DatasetSpec) -> tuple[str, str] | None:
    """The file a failed read names (Spark's FAILED_READ_FILE error), as a Hadoop path, and why it cannot be read
    (the messages of the error's causes, each cut short); None for an error that names no file."""
    throwable = getattr(error, "java_exception", None) or getattr(error, "_origin", None)
    messages = []
    while throwable is not None:
        messages.append(f"{throwable.getClass().getSimpleName()}: {' '.join(str(throwable.getMessage()).split())}")
        throwable = throwable.getCause()
    failed = next(((index, match) for index, message in enumerate(messages)
                   if (match := _FAILED_READ.search(message))), None)
    if failed is None:
        return None
    index, match = failed
    path = _hadoop_path(spark, match.group(2))
    causes = [message[:300] for message in messages[index + 1:]] or [messages[index][match.end():][:300]]
    detail = " <- ".join(causes)
    if "header" in detail.lower() and "schema" in detail.lower():
        fmt = spec.source.format
        return path, (f"the {fmt} header does not match the spec schema (missing, extra or reordered columns, or a "
                      f"file that is not {fmt}): {detail}")
    return path, f"unreadable ({match.group(1)}): {detail}"


def _write_readable(spark: SparkSession, spec: DatasetSpec, pinned: PinnedInputs, data_dir: Path, files: int,
                    settings: Settings, scoring: bool) -> dict[str, str]:
    """Write the rows of the pinned files to `data_dir`, leaving out each file Spark cannot read; returns those
    files with their reasons. Raises PipelineError when no file is left."""
    quarantined: dict[str, str] = {}
    while True:
        readable = [file.path for file in pinned.files if file.path not in quarantined]
        if not readable:
            raise PipelineError(f"ingest: no readable input file for {spec.name!r}: "
                                + "; ".join(f"{path}: {reason}" for path, reason in quarantined.items()))
        columns = batch_columns(spark, spec, readable) if scoring else None
        try:
            read_source(spark, spec, readable, settings, columns).coalesce(files).write.mode("overwrite") \
                .parquet(str(data_dir))
            return quarantined
        except Exception as error:
            unreadable = _unreadable_file(spark, error, spec)
            if unreadable is None or unreadable[0] not in readable:
                raise
            quarantined[unreadable[0]] = unreadable[1]
            log.warning("ingest: %s quarantined, the run goes on without it: %s", *unreadable)


def ingest(spark: SparkSession, spec: DatasetSpec, run_id: str, out_dir: Path, settings: Settings | None = None,
           source: str | None = None, scoring: bool = False) -> IngestResult:
    """Read the run's pinned input files and write `out_dir/data` (Parquet) and `out_dir/manifest.json`; a rerun
    of the same run reads the same files and overwrites its output. `source` replaces the spec's source glob. A
    `scoring` batch needs only the features and the id column (`batch_columns`); the columns it lacks are absent
    from the output. Files that cannot be read are left out and listed with their reasons (`quarantined_files`).
    """
    settings = settings or get_settings()
    source = source or spec.source_path(settings)
    pinned = pin_inputs(spark, spec, out_dir, source)
    files = _output_file_count(pinned, settings.parquet_target_file_mb, spark.sparkContext.defaultParallelism)
    data_dir = out_dir / INGESTED_DATA
    quarantined = _write_readable(spark, spec, pinned, data_dir, files, settings, scoring)
    written = spark.read.parquet(str(data_dir))
    per_file = written.groupBy(SOURCE_FILE).agg(
        F.count(F.lit(1)).alias("rows"), F.count(CORRUPT_RECORD).alias("corrupt")
    ).collect()
    counts = {row[SOURCE_FILE]: row["rows"] for row in per_file}
    rows = sum(counts.values())
    if rows == 0:
        raise PipelineError(f"ingest: the input of {spec.name!r} ({source}) holds no rows"
                            + (f" ({len(quarantined)} files quarantined)" if quarantined else ""))
    read = [file.path for file in pinned.files if file.path not in quarantined]
    result = IngestResult(
        dataset=spec.name,
        run_id=run_id,
        source=source,
        rows=rows,
        corrupt_rows=sum(row["corrupt"] for row in per_file),
        files={file: counts.get(file, 0) for file in sorted({*read, *counts})},
        input_fingerprint=pinned.fingerprint,
        output=str(data_dir),
        output_files=len(list(data_dir.glob("*.parquet"))),
        quarantined_files=quarantined,
        incomplete_batches=pinned.incomplete_batches,
    )
    write_result(out_dir / MANIFEST_FILE, result)
    return result

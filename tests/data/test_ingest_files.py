"""Ingest's output files: about one per PARQUET_TARGET_FILE_MB of input, never fewer than Spark's parallelism."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from continuous_training.data.ingest import ingest
from continuous_training.demo import generate
from continuous_training.paths import stage_dir
from continuous_training.spec import load_spec

pytestmark = pytest.mark.integration


def test_one_large_input_file_is_parsed_and_written_by_every_core(spark, settings):
    demo = generate(rows=80_000, batches=1, seed=3, data_dir=settings.data_dir)
    assert demo.files[0].stat().st_size > 4 * 1024 * 1024, "large enough for Spark to split the read"
    spec = load_spec("churn", settings)
    out_dir = stage_dir(spec.name, "ingest", "manual__big", settings)

    result = ingest(spark, spec, "manual__big", out_dir, settings)

    files = sorted((out_dir / "data").glob("part-*.parquet"))
    assert len(files) == spark.sparkContext.defaultParallelism == 2
    assert result.rows == 80_000 == sum(pq.ParquetFile(file).metadata.num_rows for file in files)
    assert all(pq.ParquetFile(file).metadata.num_rows > 0 for file in files)

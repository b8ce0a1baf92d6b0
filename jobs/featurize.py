"""Fit the feature pipeline and write train/validation/test features: spark-submit jobs/featurize.py ..."""

from continuous_training.cli import job_parser, run_job
from continuous_training.data.features import featurize
from continuous_training.paths import (
    FEATURIZE,
    INGEST,
    MANIFEST_FILE,
    VALID_DATA,
    VALIDATE,
    IngestResult,
    read_result,
    stage_dir,
    stage_lock,
)
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    args = job_parser("featurize").parse_args()
    spec = load_spec(args.dataset)
    with stage_lock(spec.name, FEATURIZE, args.run_id):
        spark = build_spark_session(f"featurize-{spec.name}")
        valid = spark.read.parquet(str(stage_dir(spec.name, VALIDATE, args.run_id) / VALID_DATA))
        ingested = read_result(stage_dir(spec.name, INGEST, args.run_id) / MANIFEST_FILE, IngestResult)
        result = featurize(valid, spec, args.run_id, stage_dir(spec.name, FEATURIZE, args.run_id),
                           ingested.input_fingerprint)
    print(f"featurize: {result.rows} rows per split, feature_dim={result.feature_dim}, classes={result.classes}")


if __name__ == "__main__":
    run_job(main)

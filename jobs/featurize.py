"""Fit the feature pipeline and write train/validation/test features: spark-submit jobs/featurize.py ..."""

import json

from continuous_training.cli import job_parser, run_job
from continuous_training.data.features import featurize
from continuous_training.paths import stage_dir
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    args = job_parser("featurize").parse_args()
    spec = load_spec(args.dataset)
    spark = build_spark_session(f"featurize-{spec.name}")
    valid = spark.read.parquet(str(stage_dir(spec.name, "validate", args.run_id) / "valid"))
    manifest = json.loads((stage_dir(spec.name, "ingest", args.run_id) / "manifest.json").read_text())
    result = featurize(valid, spec, args.run_id, stage_dir(spec.name, "featurize", args.run_id),
                       manifest["input_fingerprint"])
    print(f"featurize: {result.rows} rows per split, feature_dim={result.feature_dim}, classes={result.classes}")


if __name__ == "__main__":
    run_job(main)

"""Ingest landing files into compacted Parquet: spark-submit jobs/ingest.py --dataset churn --run-id <id>."""

from continuous_training.cli import job_parser, run_job
from continuous_training.ingest import ingest
from continuous_training.paths import stage_dir
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    args = job_parser("ingest").parse_args()
    spec = load_spec(args.dataset)
    spark = build_spark_session(f"ingest-{spec.name}")
    result = ingest(spark, spec, args.run_id, stage_dir(spec.name, "ingest", args.run_id))
    print(f"ingest: {result.rows} rows ({result.corrupt_rows} malformed) from {len(result.files)} files "
          f"-> {result.output} ({result.output_files} Parquet files)")


if __name__ == "__main__":
    run_job(main)

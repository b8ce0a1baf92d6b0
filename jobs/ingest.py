"""Ingest landing files into compacted Parquet: spark-submit jobs/ingest.py --dataset churn --run-id <id>.

With --for-scoring it ingests a batch to score (--input, the glob of the batch) into the dataset's scoring area.
"""

from continuous_training.cli import job_parser, run_job
from continuous_training.data.ingest import ingest
from continuous_training.paths import INGEST, data_path, stage_dir, stage_for, stage_lock
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    parser = job_parser("ingest")
    parser.add_argument("--input", help="File or glob to read instead of the spec's source (relative: DATA_DIR).")
    parser.add_argument("--for-scoring", action="store_true",
                        help="A batch to score: only the features and the id column are required.")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    stage = stage_for(INGEST, args.for_scoring)
    with stage_lock(spec.name, stage, args.run_id):
        spark = build_spark_session(f"ingest-{spec.name}")
        source = data_path(args.input) if args.input else None
        result = ingest(spark, spec, args.run_id, stage_dir(spec.name, stage, args.run_id), source=source,
                        scoring=args.for_scoring)
    print(f"ingest: {result.rows} rows ({result.corrupt_rows} malformed) from {len(result.files)} files "
          f"-> {result.output} ({result.output_files} Parquet files); {len(result.quarantined_files)} files "
          f"quarantined, {len(result.incomplete_batches)} batch folders without _SUCCESS skipped")


if __name__ == "__main__":
    run_job(main)

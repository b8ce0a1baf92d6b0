"""Validate ingested rows against the spec: spark-submit jobs/validate.py --dataset churn --run-id <id>."""

from continuous_training.cli import job_parser, run_job
from continuous_training.config import get_settings
from continuous_training.data.validation import validate
from continuous_training.paths import (
    INGEST,
    INGESTED_DATA,
    MANIFEST_FILE,
    VALIDATE,
    IngestResult,
    read_result,
    stage_dir,
    stage_for,
    stage_lock,
)
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    parser = job_parser("validate")
    parser.add_argument("--max-quarantine-fraction", type=float, default=get_settings().quarantine_max_fraction,
                        help="Fail when more than this fraction of rows is quarantined.")
    parser.add_argument("--for-scoring", action="store_true",
                        help="A batch to score (in the scoring area): the label may be absent or null.")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    stage = stage_for(VALIDATE, args.for_scoring)
    with stage_lock(spec.name, stage, args.run_id):
        spark = build_spark_session(f"validate-{spec.name}")
        ingest_dir = stage_dir(spec.name, stage_for(INGEST, args.for_scoring), args.run_id)
        result = validate(spark.read.parquet(str(ingest_dir / INGESTED_DATA)), spec, args.run_id,
                          stage_dir(spec.name, stage, args.run_id), args.max_quarantine_fraction,
                          labelled=not args.for_scoring,
                          quarantined_files=read_result(ingest_dir / MANIFEST_FILE, IngestResult).quarantined_files)
    print(f"validate: {result.rows_in} rows in = {result.valid} valid + {result.quarantined} quarantined "
          f"({result.quarantine_fraction:.2%}); reasons: {result.reasons}; files quarantined: "
          f"{len(result.quarantined_files)}")


if __name__ == "__main__":
    run_job(main)

"""Land scored rows whose delayed labels arrived as new training batches, once per scored date:
spark-submit jobs/land_labels.py --dataset churn --run-id <id> --up-to 2026-11-06."""

import json
from datetime import date

from continuous_training.cli import job_parser, run_job
from continuous_training.monitoring.labels import LANDED_FILE, land_labelled_batches
from continuous_training.paths import MONITORING, stage_dir
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    parser = job_parser("land_labels")
    parser.add_argument("--up-to", required=True, type=date.fromisoformat, help="Last scored date (YYYY-MM-DD).")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    spark = build_spark_session(f"land-labels-{spec.name}")
    outcomes = land_labelled_batches(spark, spec, args.up_to)
    out_dir = stage_dir(spec.name, MONITORING, args.run_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LANDED_FILE).write_text(json.dumps(outcomes, indent=2))
    for outcome in outcomes:
        print(f"land_labels: {outcome['scored_for']}: {outcome['status']}"
              + (f", {outcome['rows_landed']} rows -> {outcome['path']} ({outcome['rows_without_label']} without "
                 "a label kept out)" if "rows_landed" in outcome else ""))


if __name__ == "__main__":
    run_job(main)

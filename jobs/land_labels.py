"""Land scored rows whose delayed labels arrived as new training batches, each labelled row once (labels that come
after a date's batch land as a follow-up): spark-submit jobs/land_labels.py --dataset churn --run-id <id>
--up-to 2026-11-06."""

from datetime import date

from continuous_training.cli import job_parser, run_job
from continuous_training.monitoring.labels import LANDED_FILE, land_labelled_batches
from continuous_training.paths import MONITORING, stage_dir, stage_lock, write_result
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec

LAND_LABELS = "land_labels"


def main() -> None:
    parser = job_parser("land_labels")
    parser.add_argument("--up-to", required=True, type=date.fromisoformat,
                        help="Last scored date, and the date a labels feed's declared delay counts to (YYYY-MM-DD).")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    with stage_lock(spec.name, LAND_LABELS, "every-date"):  # it lands every scored date of the dataset
        spark = build_spark_session(f"land-labels-{spec.name}")
        outcomes = land_labelled_batches(spark, spec, args.up_to)
        write_result(stage_dir(spec.name, MONITORING, args.run_id) / LANDED_FILE, outcomes)
    for outcome in outcomes:
        print(f"land_labels: {outcome['scored_for']}: {outcome['status']}"
              + (f" ({outcome['reason']})" if "reason" in outcome else "")
              + (f", {outcome['rows_landed']} rows -> {outcome['path']} ({outcome['rows_without_label']} without "
                 "a label kept out)" if outcome["status"] == "landed" else ""))


if __name__ == "__main__":
    run_job(main)

"""Check a dataset's recent scored window for drift: spark-submit jobs/check_drift.py --dataset churn
--run-id <id> --checked-for 2026-11-06 [--window 3]."""

from datetime import date

from continuous_training.cli import job_parser, run_job
from continuous_training.monitoring.drift import check_drift
from continuous_training.paths import MONITORING, stage_lock
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    parser = job_parser("check_drift")
    parser.add_argument("--checked-for", required=True, type=date.fromisoformat,
                        help="The check's date: the window ends on it (YYYY-MM-DD).")
    parser.add_argument("--window", type=int, default=None,
                        help="Dates checked, those the scoring schedule fires on (default: the spec's).")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    with stage_lock(spec.name, MONITORING, args.run_id):
        spark = build_spark_session(f"check-drift-{spec.name}")
        result = check_drift(spark, spec, args.checked_for, args.run_id, args.window)
    missing = result["window"]["missing"]
    print(f"check_drift: {result['outcome']} for {spec.name} on {', '.join(result['window']['dates']) or 'nothing'}"
          + (f"\n  missing (no scored batch): {', '.join(missing)}" if missing else "")
          + "".join(f"\n  {reason}" for reason in result["reasons"]) + f"\n  report: {result['report']}")


if __name__ == "__main__":
    run_job(main)

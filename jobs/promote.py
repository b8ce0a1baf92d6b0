"""Gate the run's registered candidate and move @champion if it passes: spark-submit jobs/promote.py --dataset churn ...

Exits 0 whether the candidate is promoted or rejected; 1 with a message when promote cannot decide."""

from continuous_training.cli import job_parser, optional, run_job
from continuous_training.registry import promote_candidate
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    parser = job_parser("promote")
    parser.add_argument("--promotion-threshold", type=optional(float), default=None,
                        help="Absolute bar on the dataset's promotion metric (default, or None: the spec's).")
    parser.add_argument("--min-improvement", type=float, default=0.0,
                        help="How much the candidate must beat the champion by (>= 0).")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    spark = build_spark_session(f"promote-{spec.name}")
    decision = promote_candidate(spark, spec, args.run_id, args.promotion_threshold, args.min_improvement)
    verdict = "promoted to @champion" if decision.promoted else "rejected"
    print(f"promote: {decision.model_name} version {decision.version} {verdict}: {decision.reason}")


if __name__ == "__main__":
    run_job(main)

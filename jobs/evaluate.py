"""Score the test split with the candidate and the champion: spark-submit jobs/evaluate.py --dataset churn ..."""

from continuous_training.cli import job_parser, run_job
from continuous_training.paths import EVALUATE, stage_lock
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec
from continuous_training.training.evaluate import evaluate_candidate


def main() -> None:
    args = job_parser("evaluate").parse_args()
    spec = load_spec(args.dataset)
    with stage_lock(spec.name, EVALUATE, args.run_id):
        spark = build_spark_session(f"evaluate-{spec.name}")
        evaluation = evaluate_candidate(spark, spec, args.run_id)
    print("evaluate: " + ", ".join(f"{key}={value:.4f}" for key, value in sorted(evaluation.metrics.items()))
          + f" on {evaluation.rows_evaluated} test rows ({sum(evaluation.unknown_labels.values())} left out: "
          "a label a model does not know)")


if __name__ == "__main__":
    run_job(main)

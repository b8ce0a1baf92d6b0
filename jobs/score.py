"""Score a validated batch with one model version: spark-submit jobs/score.py --dataset churn --run-id <id>
--scored-for 2026-11-05 --model-version 3 (the version the scoring run resolved from its alias at its start)."""

from datetime import date

from continuous_training.cli import job_parser, run_job
from continuous_training.paths import VALID_DATA, VALIDATE, stage_dir, stage_for, stage_lock
from continuous_training.serving.batch import ResolvedModel, already_scored, score_batch
from continuous_training.serving.scored import PREDICTIONS
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec
from continuous_training.tracking import mlflow_client


def main() -> None:
    parser = job_parser("score")
    parser.add_argument("--scored-for", required=True, type=date.fromisoformat, help="The batch's date (YYYY-MM-DD).")
    parser.add_argument("--model-version", required=True, help="Registered model version to score with.")
    parser.add_argument("--model-alias", default="", help="The alias it was resolved from (recorded only).")
    args = parser.parse_args()
    spec = load_spec(args.dataset)
    version = mlflow_client().get_model_version(spec.registered_model_name, args.model_version)
    model = ResolvedModel(name=spec.registered_model_name, version=str(version.version), run_id=version.run_id,
                          alias=args.model_alias)
    with stage_lock(spec.name, PREDICTIONS, args.scored_for.isoformat()):
        done = already_scored(spec, args.scored_for, model, args.run_id)
        if done is not None:
            print(f"score: {spec.name} for {args.scored_for} is already scored from the same input files with "
                  f"{model.name} version {model.version} by run {done['airflow_run_id']} -> {done['predictions']}; "
                  "not scoring it again")
            return
        spark = build_spark_session(f"score-{spec.name}")
        valid = spark.read.parquet(str(stage_dir(spec.name, stage_for(VALIDATE, True), args.run_id) / VALID_DATA))
        summary = score_batch(valid, spec, model, args.scored_for, args.run_id)
    print(f"score: {summary['scored']} rows scored with {model.name} version {model.version} "
          f"({summary['quarantined']} quarantined of {summary['rows_in']}) -> {summary['predictions']}")


if __name__ == "__main__":
    run_job(main)

"""Train a candidate in a Spark barrier stage (Horovod ranks, or TensorFlow workers with --framework tensorflow):
spark-submit jobs/train.py --dataset churn ..."""

from dataclasses import fields

from continuous_training.cli import job_parser, optional, run_job
from continuous_training.paths import TRAIN, stage_lock
from continuous_training.spark import build_spark_session, submitted_conf
from continuous_training.spec import FRAMEWORKS, USE_GPU_CHOICES, TrainParams, load_spec
from continuous_training.training.barrier import barrier_spark_conf
from continuous_training.training.epochs import DEFAULT_RANK_BATCH, MIN_STEPS_PER_EPOCH
from continuous_training.training.train import AirflowContext, train_candidate


def main() -> None:
    parser = job_parser("train")
    defaults = TrainParams()
    for field in fields(TrainParams):
        flag = f"--{field.name.replace('_', '-')}"
        if field.name == "use_gpu":
            parser.add_argument(flag, choices=USE_GPU_CHOICES, default=defaults.use_gpu)
        elif field.name == "framework":
            parser.add_argument(flag, choices=FRAMEWORKS, default=defaults.framework)
        elif field.name == "batch_size":
            parser.add_argument(flag, type=optional(int), default=defaults.batch_size,
                                help=f"Rows per rank and step; None: {DEFAULT_RANK_BATCH}, fewer when an epoch would "
                                     f"take less than {MIN_STEPS_PER_EPOCH} steps.")
        else:
            parser.add_argument(flag, type=type(getattr(defaults, field.name)), default=getattr(defaults, field.name))
    parser.add_argument("--airflow-dag-id", default=AirflowContext.dag_id)
    parser.add_argument("--airflow-task-id", default=AirflowContext.task_id)
    parser.add_argument("--triggered-by", default="", help="What triggered the run (a drift check), as a tag.")
    args = parser.parse_args()
    params = TrainParams(**{field.name: getattr(args, field.name) for field in fields(TrainParams)})
    spec = load_spec(args.dataset)
    with stage_lock(spec.name, TRAIN, args.run_id):
        spark = build_spark_session(f"train-{spec.name}",
                                    barrier_spark_conf(params.use_gpu == "true", submitted_conf()))
        mlflow_run_id = train_candidate(spark, spec, args.run_id, params,
                                        AirflowContext(args.airflow_dag_id, args.airflow_task_id, args.triggered_by))
    print(f"train: candidate logged to MLflow run {mlflow_run_id}")


if __name__ == "__main__":
    run_job(main)

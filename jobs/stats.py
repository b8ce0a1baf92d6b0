"""Profile validated rows into stats.json + report.html: spark-submit jobs/stats.py --dataset churn --run-id <id>."""

from continuous_training.cli import job_parser, run_job
from continuous_training.data.stats import write_stats
from continuous_training.paths import STATS, STATS_FILE, STATS_REPORT_FILE, VALID_DATA, VALIDATE, stage_dir, stage_lock
from continuous_training.spark import build_spark_session
from continuous_training.spec import load_spec


def main() -> None:
    args = job_parser("stats").parse_args()
    spec = load_spec(args.dataset)
    out_dir = stage_dir(spec.name, STATS, args.run_id)
    with stage_lock(spec.name, STATS, args.run_id):
        spark = build_spark_session(f"stats-{spec.name}")
        valid = spark.read.parquet(str(stage_dir(spec.name, VALIDATE, args.run_id) / VALID_DATA))
        stats = write_stats(valid, spec, out_dir)
    print(f"stats: {stats['rows']} rows profiled -> {out_dir / STATS_FILE}, {out_dir / STATS_REPORT_FILE}")


if __name__ == "__main__":
    run_job(main)

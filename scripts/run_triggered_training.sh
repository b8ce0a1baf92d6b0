#!/usr/bin/env bash
# Runs the training run a drift check triggered, with the real Airflow scheduler, and prints its outcome:
#   scripts/run_triggered_training.sh <dataset> <checked date>
# Starts the local services (scripts/services.py) unless they already run, and stops them again if it started them.
set -euo pipefail
dataset=$1
checked_for=$2
read -r dag_id run_id < <(python -m continuous_training.monitoring.retraining --dataset "$dataset" --checked-for "$checked_for") || true
if [[ -z ${run_id:-} ]]; then
    echo "the drift check of $dataset for $checked_for triggered no retraining" >&2
    exit 1
fi
started=false
if ! python scripts/services.py status --quiet; then
    python scripts/services.py up
    started=true
fi
status=0
python scripts/services.py wait-run "$dag_id" "$run_id" --timeout 3600 || status=$?
if $started; then
    python scripts/services.py down
fi
python -m continuous_training.summary --dataset "$dataset" --run-id "$run_id"
exit $status

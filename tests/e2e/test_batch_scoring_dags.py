"""batch_scoring end to end through `airflow dags test`, with the champion the training e2e tests trained."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from continuous_training.demo import generate_scoring
from continuous_training.serving.batch import partition_dir
from continuous_training.spec import load_spec
from e2e_workspace import Workspace, dag_run_finished

pytestmark = pytest.mark.e2e


def test_the_datasets_scoring_dag_scores_its_batch_with_the_champion(e2e: Workspace) -> None:
    e2e.train("churn")
    batch = generate_scoring(days=1, rows_per_day=400, start_date="2026-11-05", seed=4, data_dir=e2e.data_dir)

    before = e2e.cluster.applications()
    result = e2e.airflow("dags", "test", "batch_scoring__churn", "2026-11-05", env=e2e.on_cluster)

    assert dag_run_finished(result.stdout + result.stderr)["state"] == "success"
    assert e2e.applications_since(before) == ["ingest-churn", "score-churn", "validate-churn"], \
        "every Spark stage of the run is one application of the standalone master"
    spec = load_spec("churn", e2e.settings)
    partition = partition_dir(spec, pd.Timestamp("2026-11-05").date(), e2e.settings)
    summary = json.loads((partition / "_summary.json").read_text())
    champion = e2e.client().get_model_version_by_alias(spec.registered_model_name, "champion")
    assert summary["rows_in"] == 400 == summary["scored"] + summary["quarantined"]
    assert summary["model"]["version"] == str(champion.version)
    predictions = pd.read_parquet(partition)
    assert len(predictions) == summary["scored"] and predictions["customer_id"].is_unique
    assert set(predictions["customer_id"]) <= set(pd.read_csv(batch.batches[0])["customer_id"])
    assert set(predictions["model_version"]) == {str(champion.version)}
    assert set(predictions["prediction"]) <= {"0", "1"}


def test_scoring_without_a_model_under_the_alias_fails_at_once(e2e: Workspace, tmp_path) -> None:
    document = yaml.safe_load((e2e.settings.datasets_dir / "churn.yaml").read_text())
    spec_file = tmp_path / "unmodelled.yaml"
    spec_file.write_text(yaml.safe_dump({**document, "name": "unmodelled", "model_name": "never_trained"}))
    generate_scoring(days=1, rows_per_day=10, start_date="2026-11-07", data_dir=e2e.data_dir)
    conf = {"dataset": str(spec_file), "input": "incoming/churn/date={{ ds }}/*.csv"}

    result = e2e.airflow("dags", "test", "batch_scoring", "2026-11-07", "--conf", json.dumps(conf), check=False,
                         env={**e2e.env, "TASK_RETRIES": "2"})

    output = result.stdout + result.stderr
    assert dag_run_finished(output)["state"] == "failed"
    assert output.count("[DAG TEST] end task task_id=resolve_scoring_run") == 1
    assert "no version of model 'never_trained' holds @champion" in output

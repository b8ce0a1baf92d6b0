"""Which DAG `make train/score/drift` runs: the dataset's own when its spec declares the section, else the
generic one (always for a spec given by path, whose `dataset` param takes the path)."""

from __future__ import annotations

from continuous_training.config import PROJECT_ROOT
from continuous_training.summary import drift_dag_id, scoring_dag_id, training_dag_id

CHURN_PATH = str(PROJECT_ROOT / "include" / "datasets" / "churn.yaml")


def test_named_specs_use_their_own_dags_and_paths_the_generic_ones() -> None:
    assert training_dag_id("churn") == "training__churn"
    assert training_dag_id("churn_plan") == "training_pipeline"
    assert training_dag_id(CHURN_PATH) == "training_pipeline"
    assert scoring_dag_id("churn") == "batch_scoring__churn" and scoring_dag_id(CHURN_PATH) == "batch_scoring"
    assert drift_dag_id("churn") == "drift_check__churn" and drift_dag_id("churn_plan") == "drift_check"

"""Which DAG `make train/score/drift` runs: the dataset's own when its spec declares the section, else the
generic one (always for a spec given by path, whose `dataset` param takes the path)."""

from __future__ import annotations

from continuous_training.config import PROJECT_ROOT
from continuous_training.dag_ids import DRIFT, SCORING, TRAINING, dataset_dag_id

CHURN_PATH = str(PROJECT_ROOT / "include" / "datasets" / "churn.yaml")


def test_named_specs_use_their_own_dags_and_paths_the_generic_ones() -> None:
    assert dataset_dag_id(TRAINING, "churn") == "training__churn"
    assert dataset_dag_id(TRAINING, "churn_plan") == "training_pipeline"
    assert dataset_dag_id(TRAINING, CHURN_PATH) == "training_pipeline"
    assert dataset_dag_id(SCORING, "churn") == "batch_scoring__churn"
    assert dataset_dag_id(SCORING, CHURN_PATH) == "batch_scoring"
    assert dataset_dag_id(DRIFT, "churn") == "drift_check__churn"
    assert dataset_dag_id(DRIFT, "churn_plan") == "drift_check"

"""Drift checks with real Spark, a real MLflow registry and registered pyfuncs whose training runs carry real
references: the empty window, clean and drifted windows, the reference of the version that scored the window,
performance drift from delayed labels, and labelled batches landing once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from continuous_training.config import Settings
from continuous_training.data.features import feature_transform, fit_feature_pipeline
from continuous_training.data.stats import compute_stats
from continuous_training.demo import generate, generate_scoring
from continuous_training.errors import PipelineError
from continuous_training.metrics import TRUE_LABEL, prediction_metrics
from continuous_training.model.keras_mlp import build_keras_mlp, keras_weights
from continuous_training.model.pyfunc import log_pyfunc_model
from continuous_training.model.torch_mlp import build_mlp, numpy_weights
from continuous_training.monitoring.drift import DRIFT_FILE, check_drift
from continuous_training.monitoring.labels import land_labelled_batch, land_labelled_batches
from continuous_training.monitoring.reference import load_reference
from continuous_training.paths import (
    SUCCESS_MARKER,
    VALIDATE,
    VALIDATION_FILE,
    ValidationResult,
    stage_dir,
    stage_for,
    write_result,
)
from continuous_training.serving.batch import ResolvedModel, score_batch
from continuous_training.serving.predict import predict_spark
from continuous_training.serving.scored import PARTITION, predictions_dir
from continuous_training.spec import DatasetSpec, load_spec
from continuous_training.tracking import CHAMPION, PREDICTION_PROFILE_ARTIFACT, STATS_ARTIFACT, mlflow_client
from continuous_training.training.evaluate import prediction_reference
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score

pytestmark = pytest.mark.integration

CLEAN, DRIFTED, LATER, BACK = date(2026, 11, 5), date(2026, 11, 6), date(2026, 11, 7), date(2026, 11, 8)
LABELS = ("churned", "customer_value", "plan_tier")


@dataclass
class Monitored:
    settings: Settings
    spec: DatasetSpec
    versions: list[ResolvedModel]


def training_frame(spark, spec: DatasetSpec, root: Path, drift: float):
    generate(rows=4_000, batches=1, seed=3, drift=drift, data_dir=root)
    return spark.read.csv(str(root / "landing" / "churn"), header=True, schema=spec.ddl_schema)


def log_version(spark, spec: DatasetSpec, frame, seed: int, framework: str = "torch") -> ResolvedModel:
    """A registered pyfunc (random weights over the fitted feature pipeline, a torch or a Keras MLP) whose training
    run carries the references a real training run logs: stats.json, the prediction profile and its test AUC."""
    transform = feature_transform(fit_feature_pipeline(frame, spec), spec)
    if framework == "tensorflow":
        weights = keras_weights(build_keras_mlp(transform.feature_dim, spec.task, None, hidden=(8,), seed=seed))
    else:
        weights = numpy_weights(build_mlp(transform.feature_dim, spec.task, None, hidden=(8,), seed=seed))
    with mlflow.start_run() as run:
        info = log_pyfunc_model(weights=weights, framework=framework, transform=transform, task=spec.task,
                                feature_dim=transform.feature_dim, num_classes=None, hidden=(8,), classes=["0", "1"],
                                input_example=frame.limit(3).toPandas())
        mlflow.log_dict(compute_stats(frame, spec), STATS_ARTIFACT)
        mlflow.log_dict(prediction_reference(frame, info.model_uri, spec), PREDICTION_PROFILE_ARTIFACT)
        scored = predict_spark(frame, info.model_uri, spec.task).withColumn(TRUE_LABEL, F.col(spec.label))
        mlflow.log_metric("test_auc", prediction_metrics(scored, spec.task, ["0", "1"], "test_")["test_auc"])
    version = mlflow.register_model(info.model_uri, spec.registered_model_name)
    return ResolvedModel(spec.registered_model_name, str(version.version), run.info.run_id, CHAMPION)


@pytest.fixture(scope="module")
def monitored(spark, tmp_path_factory) -> Monitored:
    root = tmp_path_factory.mktemp("monitoring")
    settings = Settings(data_dir=root / "data", mlflow_tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
                        mlflow_artifact_root=root / "artifacts")
    spec = load_spec("churn", settings)
    client = mlflow_client(settings)
    mlflow.set_experiment(experiment_id=client.create_experiment("models", (root / "artifacts").as_uri()))
    clean = log_version(spark, spec, training_frame(spark, spec, root / "clean", 0.0), seed=1)
    drifted = log_version(spark, spec, training_frame(spark, spec, root / "drifted", 1.0), seed=1,
                          framework="tensorflow")
    client.set_registered_model_alias(spec.registered_model_name, CHAMPION, clean.version)
    monitored = Monitored(settings, spec, [clean, drifted])
    score_day(spark, monitored, CLEAN, clean)
    score_day(spark, monitored, DRIFTED, clean, drift=1.0)
    return monitored


def score_day(spark, monitored: Monitored, day: date, model: ResolvedModel, drift: float = 0.0, seed: int = 8):
    """A scored partition of `day` (its labels written apart, as the demo generator does)."""
    batch = generate_scoring(days=1, rows_per_day=2_000, start_date=day, seed=seed, drift=drift,
                             data_dir=monitored.settings.data_dir)
    valid = spark.read.csv(str(batch.batches[0]), header=True, schema=", ".join(
        f"`{c}` {t}" for c, t in monitored.spec.schema_.items() if c not in LABELS))
    validate_dir = stage_dir("churn", stage_for(VALIDATE, True), f"score-{day}", monitored.settings)
    write_result(validate_dir / VALIDATION_FILE, ValidationResult(
        dataset="churn", run_id=f"score-{day}", rows_in=2_000, valid=2_000, quarantined=0, quarantine_fraction=0.0,
        max_quarantine_fraction=0.0, reasons={}))
    score_batch(valid, monitored.spec, model, day, f"score-{day}", monitored.settings)
    return batch


def test_an_empty_window_is_a_recorded_nothing_to_check(spark, monitored):
    result = check_drift(spark, monitored.spec, date(2026, 10, 1), "check-empty", settings=monitored.settings)

    assert result["outcome"] == "nothing_to_check" and result["drift_detected"] is False
    assert "no batch of churn scored on or before 2026-10-01" in result["message"]
    tags = mlflow_client(monitored.settings).get_run(result["mlflow_run_id"]).data.tags
    assert tags["check.outcome"] == "nothing_to_check" and tags["drift.detected"] == "false"
    assert tags["retrain.triggered"] == "false"
    assert "Nothing to check" in Path(result["report"]).read_text()


def test_clean_window_has_no_drift_and_a_drifted_one_names_its_features(spark, monitored):
    clean_model = monitored.versions[0]

    clean = check_drift(spark, monitored.spec, CLEAN, "check-clean", settings=monitored.settings)
    drifted = check_drift(spark, monitored.spec, DRIFTED, "check-drifted", settings=monitored.settings)

    assert clean["outcome"] == "no_drift" and clean["drifted_features"] == [] and clean["reasons"] == []
    assert clean["window"]["dates"] == ["2026-11-05"] and clean["rows"] == 2_000
    assert drifted["outcome"] == "drift" and drifted["window"]["dates"] == ["2026-11-06"]
    assert {"monthly_charges", "support_calls", "contract"} <= set(drifted["drifted_features"])
    assert not {"tenure_months", "region", "payment_method"} & set(drifted["drifted_features"])
    assert drifted["reasons"][0].startswith(f"{len(drifted['drifted_features'])} of 9 features drifted")
    run = mlflow_client(monitored.settings).get_run(drifted["mlflow_run_id"])
    assert run.data.tags["drift.detected"] == "true" and run.data.tags["model.version"] == clean_model.version
    assert run.data.tags["airflow.run_id"] == "check-drifted"
    assert run.data.metrics["psi.monthly_charges"] > 0.2 and "ks.Avg Session _min_" in run.data.metrics
    artifacts = {entry.path for entry in mlflow_client(monitored.settings).list_artifacts(run.info.run_id)}
    assert {DRIFT_FILE, "drift_report.html"} <= artifacts
    report = Path(drifted["report"]).read_text()
    assert report.index("Drift detected") < report.index("<table>") and report.count("<img") >= 5


def test_a_window_is_compared_with_the_reference_of_the_version_that_scored_it(spark, monitored):
    """The champion changes framework (torch → Keras → torch); each scores its days and each window is checked
    against the reference of the version that scored it."""
    clean_model, drifted_model = monitored.versions
    client = mlflow_client(monitored.settings)
    client.set_registered_model_alias(monitored.spec.registered_model_name, CHAMPION, drifted_model.version)
    try:
        # The drifted day was scored by the version trained on clean data: against that version, it drifted,
        # although today's champion was trained on drifted data.
        again = check_drift(spark, monitored.spec, DRIFTED, "check-after-promotion", settings=monitored.settings)
        score_day(spark, monitored, LATER, drifted_model, drift=1.0, seed=9)
        latest = check_drift(spark, monitored.spec, LATER, "check-new-version", window_size=2,
                             settings=monitored.settings)
    finally:
        client.set_registered_model_alias(monitored.spec.registered_model_name, CHAMPION, clean_model.version)
    # Back to the torch champion: the Keras-scored day is left out of its window.
    score_day(spark, monitored, BACK, clean_model, seed=10)
    back = check_drift(spark, monitored.spec, BACK, "check-back", window_size=2, settings=monitored.settings)

    assert again["model"]["version"] == clean_model.version and again["outcome"] == "drift"
    assert latest["model"]["version"] == drifted_model.version
    assert latest["window"]["dates"] == ["2026-11-07"]
    assert latest["window"]["left_out"] == [{"scored_for": "2026-11-06", "model_version": clean_model.version}]
    assert latest["drifted_features"] == [], "drifted data against the reference of a model trained on drifted data"
    assert latest["prediction_drift"] is False, "the Keras version's predictions match its own prediction profile"
    assert back["model"]["version"] == clean_model.version and back["window"]["dates"] == ["2026-11-08"]
    assert back["window"]["left_out"] == [{"scored_for": "2026-11-07", "model_version": drifted_model.version}]
    assert back["outcome"] == "no_drift"


def test_performance_drift_is_found_when_the_delayed_labels_show_a_metric_drop(spark, monitored, tmp_path):
    labels_file = monitored.settings.data_dir / "labels" / "churn" / "date=2026-11-05" / "labels.csv"
    truth = pd.read_csv(labels_file)
    reference_auc = mlflow_client(monitored.settings).get_run(monitored.versions[0].run_id).data.metrics["test_auc"]
    assert reference_auc > 0.55, "the fixture's model has some skill on its own data"

    honest = check_drift(spark, monitored.spec, CLEAN, "check-labels", settings=monitored.settings)
    truth.assign(churned=1 - truth["churned"]).to_csv(labels_file, index=False)
    try:
        flipped = check_drift(spark, monitored.spec, CLEAN, "check-flipped-labels", settings=monitored.settings)
    finally:
        truth.to_csv(labels_file, index=False)

    assert honest["performance"]["status"] == "checked" and honest["performance"]["rows_labelled"] == 2_000
    assert honest["performance"]["drifted"] is False and honest["outcome"] == "no_drift"
    performance = flipped["performance"]
    # Spark bins the ROC curve (1,000 bins), so flipping the labels gives 1 - AUC only up to that binning.
    assert performance["window"] == pytest.approx(1 - honest["performance"]["window"], abs=1e-4)
    assert performance["drifted"] and performance["drop"] > 0.05
    assert performance["drop_lower"] > 0.05, "2,000 labelled rows pin the drop down well past the 5% tolerance"
    assert flipped["outcome"] == "drift" and flipped["reasons"] == [
        f"test_auc {performance['window']:.4f} on 2,000 labelled rows vs {reference_auc:.4f} at training: "
        f"{performance['drop']:.1%} worse, at least {performance['drop_lower']:.1%} at 95% confidence > 5%"]


def test_a_metric_drop_within_the_sampling_error_of_a_small_labelled_window_is_not_drift(spark, monitored):
    """A clean day whose few labelled rows happen to score more than `metric_drop` below the training metric (the
    30-day soak's false alarm: AUC 0.803 on 500 rows against 0.846) is not drift: the check judges the drop by its
    one-sided 95% lower bound, from the window's standard error, and reports both."""
    labels_file = monitored.settings.data_dir / "labels" / "churn" / "date=2026-11-05" / "labels.csv"
    truth = pd.read_csv(labels_file)
    reference_auc = mlflow_client(monitored.settings).get_run(monitored.versions[0].run_id).data.metrics["test_auc"]
    scored = (spark.read.parquet(str(predictions_dir(monitored.spec, monitored.settings)))
              .where(F.col(PARTITION) == CLEAN.isoformat()).select("customer_id", "probability_1").toPandas())
    few = truth.merge(scored, on="customer_id").head(150).copy()
    # Flip the best-scored churners until the 150 rows' AUC is 6% below training: a drop past the 5% tolerance on
    # a sample whose AUC standard error is several points.
    for row in few[few["churned"] == 1].sort_values("probability_1", ascending=False).index:
        if roc_auc_score(few["churned"], few["probability_1"]) <= reference_auc * 0.94:
            break
        few.loc[row, "churned"] = 0
    window_auc = roc_auc_score(few["churned"], few["probability_1"])
    assert reference_auc * 0.90 < window_auc <= reference_auc * 0.94

    few[truth.columns].to_csv(labels_file, index=False)
    try:
        result = check_drift(spark, monitored.spec, CLEAN, "check-few-labels", settings=monitored.settings)
    finally:
        truth.to_csv(labels_file, index=False)

    performance = result["performance"]
    assert performance["rows_labelled"] == 150 and performance["rows_without_label"] == 1_850
    assert performance["window"] == pytest.approx(window_auc, abs=2e-3)
    assert performance["drop"] > 0.05 and performance["standard_error"] > 0.03
    assert performance["drop_lower"] < 0.05 and performance["drifted"] is False
    assert result["outcome"] == "no_drift" and result["reasons"] == []
    run = mlflow_client(monitored.settings).get_run(result["mlflow_run_id"])
    assert run.data.metrics["performance.standard_error"] == pytest.approx(performance["standard_error"])
    assert run.data.metrics["performance.drop_lower"] == pytest.approx(performance["drop_lower"])


def test_labelled_batches_land_once_with_unlabelled_rows_kept_out_and_counted(spark, monitored):
    labels_file = monitored.settings.data_dir / "labels" / "churn" / "date=2026-11-05" / "labels.csv"
    truth = pd.read_csv(labels_file)
    truth.iloc[10:].to_csv(labels_file, index=False)
    try:
        outcomes = land_labelled_batches(spark, monitored.spec, CLEAN, monitored.settings)
        target = Path(outcomes[0]["path"])
        files = sorted(path.name for path in target.iterdir())
        again = land_labelled_batches(spark, monitored.spec, CLEAN, monitored.settings)
    finally:
        truth.to_csv(labels_file, index=False)

    assert [outcome["status"] for outcome in outcomes] == ["landed"]
    assert outcomes[0]["rows_scored"] == 2_000 == outcomes[0]["rows_landed"] + outcomes[0]["rows_without_label"]
    assert outcomes[0]["rows_without_label"] == 10
    assert target == monitored.settings.data_dir / "landing" / "churn" / "labelled_for=2026-11-05"
    assert again[0]["status"] == "already_landed" and again[0]["rows_landed"] == 1_990
    assert sorted(path.name for path in target.iterdir()) == files and SUCCESS_MARKER in files
    landed = spark.read.csv(str(target / "*.csv"), header=True, schema=monitored.spec.ddl_schema).toPandas()
    expected = pd.read_csv(monitored.settings.data_dir / "incoming" / "churn" / "date=2026-11-05" / "part-00000.csv")
    expected = expected.merge(truth.iloc[10:].drop(columns="date"), on="customer_id")
    assert len(landed) == 1_990 and set(landed["customer_id"]) == set(expected["customer_id"])
    merged = landed.merge(expected, on="customer_id", suffixes=("", "_expected"))
    for column in ("churned", "plan_tier", "contract", "tenure_months"):
        assert merged[column].astype(str).tolist() == merged[f"{column}_expected"].astype(str).tolist(), column
    assert merged["monthly_charges"].tolist() == pytest.approx(merged["monthly_charges_expected"].tolist())


def test_a_date_missing_from_the_window_is_named_in_drift_json_mlflow_and_the_report(spark, monitored):
    """Scoring of 2026-12-02 never happened (its batch came past the deadline): the check of 2026-12-03 over three
    dates names it instead of reaching back to an older scored date."""
    clean_model = monitored.versions[0]
    score_day(spark, monitored, date(2026, 12, 1), clean_model, seed=11)
    score_day(spark, monitored, date(2026, 12, 3), clean_model, seed=12)

    result = check_drift(spark, monitored.spec, date(2026, 12, 3), "check-gap", window_size=3,
                         settings=monitored.settings)

    assert result["window"]["dates"] == ["2026-12-01", "2026-12-03"]
    assert result["window"]["missing"] == ["2026-12-02"]
    run = mlflow_client(monitored.settings).get_run(result["mlflow_run_id"])
    assert run.data.tags["window.missing"] == "2026-12-02" and run.data.metrics["window_missing_dates"] == 1
    assert "Missing (no scored batch): 2026-12-02" in Path(result["report"]).read_text()


def labelled_ids(spark, spec: DatasetSpec, outcomes: list[dict]) -> list[str]:
    """The ids of every row the landed batches of `outcomes` hold (a row twice is listed twice)."""
    folders = sorted({batch for outcome in outcomes for batch in outcome.get("batches", [])})
    if not folders:
        return []
    frame = spark.read.csv(folders, header=True, schema=spec.ddl_schema)
    return [row["customer_id"] for row in frame.select("customer_id").collect()]


def test_partial_labels_wait_for_their_marker_and_later_labels_land_as_a_follow_up_each_row_once(spark, monitored):
    day = date(2026, 12, 10)
    batch = score_day(spark, monitored, day, monitored.versions[0], seed=13)
    feed = batch.labels[0].parent
    assert (feed / SUCCESS_MARKER).is_file() and (batch.batches[0].parent / SUCCESS_MARKER).is_file()
    truth = pd.read_csv(batch.labels[0])
    (feed / SUCCESS_MARKER).unlink()
    truth.iloc[:1_200].to_csv(batch.labels[0], index=False)
    spec, settings = monitored.spec, monitored.settings

    partial = land_labelled_batch(spark, spec, day, day, settings)
    landed_unmarked = Path(partial["path"]).exists()
    (feed / SUCCESS_MARKER).touch()
    first = land_labelled_batch(spark, spec, day, day, settings)
    truth.iloc[1_000:1_700].to_csv(feed / "labels-late.csv", index=False)  # 200 labels sent again, 500 new
    follow_up = land_labelled_batch(spark, spec, day, day, settings)
    again = land_labelled_batch(spark, spec, day, day, settings)
    truth.iloc[:100].to_csv(feed / "labels-resent.csv", index=False)  # only labels that already landed
    resent = land_labelled_batch(spark, spec, day, day, settings)

    assert partial["status"] == "labels_incomplete" and "batches" not in partial
    assert not landed_unmarked, "nothing lands from a feed without its marker"
    assert first["status"] == "landed" and first["rows_landed"] == 1_200 and first["rows_without_label"] == 800
    assert follow_up["status"] == "landed" and follow_up["rows_landed"] == 500
    assert follow_up["rows_without_label"] == 300 and len(follow_up["batches"]) == 2
    assert again["status"] == "already_landed" and again["rows_landed"] == 1_700
    assert resent["status"] == "already_landed" and resent["batches"] == again["batches"] == follow_up["batches"]
    ids = labelled_ids(spark, spec, [resent])
    assert len(ids) == len(set(ids)) == 1_700, "no row landed twice"
    assert set(ids) == set(truth["customer_id"].iloc[:1_700]), "no labelled row lost"


def test_labels_without_a_marker_count_complete_after_the_declared_delay(spark, monitored):
    day = date(2026, 12, 20)
    batch = score_day(spark, monitored, day, monitored.versions[0], seed=14)
    (batch.labels[0].parent / SUCCESS_MARKER).unlink()
    monitoring = monitored.spec.monitoring.model_copy(update={"labels_complete_after_days": 2})
    spec = monitored.spec.model_copy(update={"monitoring": monitoring})

    early = land_labelled_batch(spark, spec, day, date(2026, 12, 21), monitored.settings)
    due = land_labelled_batch(spark, spec, day, date(2026, 12, 22), monitored.settings)

    assert early["status"] == "labels_incomplete"
    assert due["status"] == "landed" and due["rows_landed"] == 2_000


def test_a_model_whose_training_run_has_no_drift_reference_is_refused_naming_the_artifact(monitored):
    client = mlflow_client(monitored.settings)
    run = client.create_run(client.get_experiment_by_name("models").experiment_id)
    client.log_dict(run.info.run_id, {"columns": {}}, PREDICTION_PROFILE_ARTIFACT)

    with pytest.raises(PipelineError, match=f"the training run {run.info.run_id} of models:/churn_model/9 has no "
                                            f"{STATS_ARTIFACT}; retrain"):
        load_reference(client, monitored.spec, run.info.run_id, "models:/churn_model/9")

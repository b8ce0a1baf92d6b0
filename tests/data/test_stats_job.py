"""write_stats on a Parquet dataset read back by Spark: stats.json and report.html land in the output folder."""

from __future__ import annotations

import json
from decimal import Decimal
from html import escape

import numpy as np
import pytest
from continuous_training.data.stats import write_stats
from continuous_training.spec import parse_spec

pytestmark = pytest.mark.integration

SPEC = {
    "name": "churn_stats",
    "source": {"path": "unused.csv", "format": "csv"},
    "schema": {"customer id": "string", "Avg Session (min)": "double", "tenure": "int",
               "monthly charges": "decimal(8,2)", "plan <tier>": "string", "churned": "int"},
    "label": "churned",
    "task": "binary_classification",
    "id_column": "customer id",
    "features": {"numeric": ["Avg Session (min)", "tenure", "monthly charges"], "categorical": ["plan <tier>"]},
}


def test_write_stats_writes_json_and_report(spark, tmp_path):
    spec = parse_spec(SPEC)
    rng = np.random.default_rng(3)
    rows = [
        (f"c{i}", float(rng.gamma(2, 4)), int(rng.integers(0, 72)), Decimal(f"{rng.uniform(20, 120):.2f}"),
         str(rng.choice(["basic", "plus", "pro"])), int(rng.integers(0, 2)))
        for i in range(500)
    ]
    spark.createDataFrame(rows, spec.ddl_schema).write.parquet(str(tmp_path / "valid"))
    out_dir = tmp_path / "stats"

    returned = write_stats(spark.read.parquet(str(tmp_path / "valid")), spec, out_dir)

    written = json.loads((out_dir / "stats.json").read_text())
    assert written == returned
    assert written["rows"] == 500
    assert list(written["columns"]) == [*spec.features.numeric, "plan <tier>", "churned"]
    assert written["columns"]["churned"]["type"] == "categorical"
    assert written["correlation"]["rows_used"] == 500
    page = (out_dir / "report.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 3 + 2 + 2
    for column in spec.features.numeric:
        assert f'alt="histogram of {escape(column)}"' in page
    assert 'alt="top values of plan &lt;tier&gt;"' in page
    assert 'alt="pearson correlation"' in page and 'alt="spearman correlation"' in page
    assert "plan <tier>" not in page

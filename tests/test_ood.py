"""`python -m utils ood --smoke` on synthetic HAM10000: the held-out class is in no set, the
report, metrics and plot are written, and the report carries no image ids."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from utils import cli
from utils.studies import ood

pytestmark = pytest.mark.slow


def test_ood_smoke_holds_df_out_of_every_set(synthetic_ham, tmp_path, capsys):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    code = cli.main(["ood", "--smoke", "--data-dir", str(synthetic_ham), "--n-boot", "50",
                     "--run-dir", str(run_dir), "--out", str(out)])
    assert code == 0 and "ood_report.md" in capsys.readouterr().out
    manifest = pd.read_csv(run_dir / "manifest.csv")
    table = pd.read_csv(synthetic_ham / "HAM10000_metadata.csv")
    held_out = table[table["dx"] == "df"]
    assert not set(held_out["lesion_id"]) & set(manifest["lesion_id"])  # df lesions in no set
    result = json.loads((out / ood.METRICS_NAME).read_text())
    assert result["holdout"] == "df" and result["n_unknown"] == len(held_out)
    assert "df" not in result["classes_trained"] and len(result["classes_trained"]) == 6
    assert result["n_known_test"] == (manifest["split"] == "test").sum()
    for score in ood_scores_names():
        stats = result["detection"][score]["auroc"]
        assert 0.0 <= stats["value"] <= 1.0 and stats["ci_low"] <= stats["value"]
    report = (out / ood.REPORT_NAME).read_text()
    assert "| mahalanobis |" in report and "python -m utils ood --data-dir" in report
    assert "synthetic" in report.splitlines()[0]  # a smoke run is labelled synthetic
    assert "SYN_" not in report and "SYN_" not in (out / ood.TABLE_NAME).read_text()
    assert (out / "plots" / ood.PLOT_NAME).stat().st_size > 5_000
    scores = pd.read_csv(run_dir / ood.SCORES_NAME)  # per-image scores stay in the run folder
    assert scores["held_out"].sum() == len(held_out)


def ood_scores_names() -> tuple[str, ...]:
    from utils.evaluation.ood_scores import SCORES

    return SCORES


def test_unknown_holdout_is_a_clear_error(synthetic_ham):
    from utils.data import readers
    from utils.errors import DataError
    from utils.training.config import smoke_config

    with pytest.raises(DataError, match="'SCC' is not in the data"):
        ood.split_without(readers.read_ham10000(synthetic_ham), "SCC", smoke_config())

"""Evaluation figures render to non-empty PNG files without leaving global pyplot figures."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from utils.data import datasets
from utils.evaluation import plots

HAM = datasets.HAM10000.classes
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = rng.integers(0, len(HAM), 120)
    logits = rng.normal(size=(120, len(HAM)))
    logits[np.arange(120), y] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame({"image_id": [f"i{i}" for i in range(120)],
                          "lesion_id": [f"l{i // 2}" for i in range(120)],
                          "label": [HAM[k] for k in y], "label_index": y, "split": "test"})
    for k, code in enumerate(HAM):
        frame[code] = probs[:, k]
    return frame


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000, path


def test_evaluation_plots_write_pngs(tmp_path, predictions):
    import matplotlib.pyplot as plt

    written = plots.evaluation_plots(predictions, tmp_path / "plots")
    assert set(written) == {"confusion_counts", "confusion_normalised", "classification_report",
                            "roc", "reliability"}
    for path in written.values():
        assert_png(path)
    assert not list((tmp_path / "plots").glob("*.part"))  # atomic writes leave no temp file
    assert plt.get_fignums() == []  # no global pyplot figure left open
    assert logging.getLogger("matplotlib.font_manager").level >= logging.ERROR


def test_per_class_table_matches_counts(predictions):
    y = predictions["label_index"].to_numpy()
    table = plots.per_class_table(predictions[list(HAM)].to_numpy(), y, HAM)
    assert list(table.index) == list(HAM)
    assert table["support"].sum() == len(predictions)
    assert ((table.drop(columns="support") >= 0) & (table.drop(columns="support") <= 1)).all().all()


def test_training_curves_and_reliability(tmp_path, predictions):
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "loss": [1.2, 0.9, 0.7],
            "val_loss": [1.3, 1.0, 0.9],
            "accuracy": [0.3, 0.5, 0.6],
            "val_accuracy": [0.3, 0.4, 0.5],
        }
    )
    history.to_csv(tmp_path / "history.csv", index=False)
    figure = plots.training_curves(tmp_path / "history.csv", tmp_path / "curves.png")
    assert len(figure.axes) == 2  # loss and accuracy, train + validation in each
    assert len(figure.axes[0].lines) == 2
    assert_png(tmp_path / "curves.png")
    probs = predictions[list(HAM)].to_numpy()
    y = predictions["label_index"].to_numpy()
    figure = plots.reliability_diagram(
        {"raw": (probs, y), "sharp": (probs**2 / (probs**2).sum(1, keepdims=True), y)},
        path=tmp_path / "rel.png",
    )
    assert "ECE" in figure.axes[0].get_legend().get_texts()[1].get_text()
    assert_png(tmp_path / "rel.png")
    with pytest.raises(ValueError, match="no metric columns"):
        plots.training_curves(pd.DataFrame({"epoch": [0, 1]}))


def test_comparison_chart(tmp_path):
    table = pd.DataFrame({"run": ["r1", "r2"], "dataset": ["ham10000"] * 2,
                          "backbone": ["VGG16", "MobileNetV2"], "image_size": [64, 96],
                          "balanced_accuracy": [0.6, 0.5], "balanced_accuracy_ci_low": [0.55, 0.42],
                          "balanced_accuracy_ci_high": [0.66, 0.57]})
    figure = plots.comparison_chart(table, tmp_path / "cmp.png")
    assert len(figure.axes[0].patches) == 2
    assert_png(tmp_path / "cmp.png")
    with pytest.raises(ValueError, match="no finished runs"):
        plots.comparison_chart(table.iloc[:0])


def test_figures_show_as_png_in_notebooks_without_pyplot(predictions):
    figure = plots.reliability_diagram({"model": (predictions[list(HAM)].to_numpy(),
                                                  predictions["label_index"].to_numpy())})
    assert figure._repr_png_().startswith(PNG_MAGIC)


def test_roc_curves_read_each_class_from_its_own_column_with_classes_absent():
    """Two of seven classes present (an external test set): one curve each, from columns 1 and
    4; a perfect score in those columns gives AUC 1 whatever the other columns hold."""
    from utils.evaluation import plots

    rng = np.random.default_rng(0)
    y = np.array([1, 1, 1, 4, 4, 4, 4])
    probs = rng.random((7, 7))
    probs[:, 1] = (y == 1) * 0.9 + 0.05
    probs[:, 4] = (y == 4) * 0.9 + 0.05
    figure = plots.roc_curves(probs, y, list("abcdefg"))
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels[:2] == ["b (AUC 1.000)", "e (AUC 1.000)"] and len(labels) == 3
    assert "over 2 classes present" in figure.axes[0].get_title()

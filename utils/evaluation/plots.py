"""Evaluation figures: training curves, confusion matrices, per-class report, ROC curves and the
reliability diagram.

Each function returns a `matplotlib.figure.Figure` built without pyplot (no global figure
state; PNGs are rendered by the Agg canvas) and, given `path`, also saves it atomically as PNG.
The confusion matrix and ROC curves are yellowbrick visualisers
(yellowbrick 1.5 needs scikit-learn < 1.8); a Keras model's stored probabilities go through them
via `StoredProbabilities`, a prefit scikit-learn-style classifier.
"""
from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin

from utils.evaluation import calibration
from utils.figures import save_figure
from utils.scoring import metrics, predictions

# yellowbrick's font choice makes matplotlib log thousands of "findfont" lines.
logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)


class StoredProbabilities(ClassifierMixin, BaseEstimator):
    """A prefit classifier whose "features" are row indices into stored probabilities."""

    def __init__(self, probabilities: np.ndarray, classes: Sequence[str]):
        self.probabilities = probabilities
        self.classes = classes

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> "StoredProbabilities":
        self.classes_ = np.asarray(self.classes)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.probabilities)[np.asarray(X, dtype=int).ravel()]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(X).argmax(axis=1)]


class DisplayFigure(Figure):
    """A Figure that notebooks show as PNG without pyplot (Jupyter calls `_repr_png_`)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        FigureCanvasAgg(self)
        self.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        return buffer.getvalue()


def new_figure(width: float = 6.4, height: float = 4.8, ncols: int = 1,
               nrows: int = 1) -> tuple[Figure, list]:
    """A figure (no pyplot) and its axes, row by row."""
    figure = DisplayFigure(figsize=(width, height))
    FigureCanvasAgg(figure)
    axes = [figure.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]
    return figure, axes


def finish_figure(figure: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        save_figure(figure, path)
    return figure


def training_curves(history: pd.DataFrame | str | os.PathLike,
                    path: str | os.PathLike | None = None) -> Figure:
    """One panel per metric of a Keras history.csv (training and `val_` curves together)."""
    frame = history if isinstance(history, pd.DataFrame) else pd.read_csv(history)
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    skip = ("epoch", "lr", "learning_rate")
    names = [c for c in numeric if not c.startswith("val_") and c not in skip]
    if not names:
        raise ValueError(f"history has no metric columns to plot (columns: {list(frame.columns)})")
    x = frame["epoch"].to_numpy() + 1 if "epoch" in frame else np.arange(1, len(frame) + 1)
    figure, axes = new_figure(4.0 * len(names), 3.5, ncols=len(names))
    for ax, name in zip(axes, names):
        ax.plot(x, frame[name], marker="o", label="train")
        if f"val_{name}" in frame:
            ax.plot(x, frame[f"val_{name}"], marker="o", label="validation")
        ax.set(title=name, xlabel="epoch")
        ax.legend()
    figure.tight_layout()
    return finish_figure(figure, path)


def _visualise(visualiser_class, probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str],
               title: str, path, **options) -> Figure:
    """Run a yellowbrick classifier visualiser on stored probabilities."""
    figure, (ax,) = new_figure(7.0, 5.5)
    model = StoredProbabilities(np.asarray(probs), list(classes)).fit(None)
    rows = np.arange(len(y_true)).reshape(-1, 1)
    labels = np.asarray(classes)[np.asarray(y_true, dtype=int)]
    with warnings.catch_warnings():  # yellowbrick 1.5 uses colormap setters matplotlib deprecates
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        visualiser = visualiser_class(model, ax=ax, classes=list(classes), is_fitted=True,
                                      **options)
        visualiser.fig = figure
        visualiser.fit(rows, labels)  # prefit model: sets the visualiser's class bookkeeping only
        visualiser.score(rows, labels)
        visualiser.finalize()
    ax.set_title(title)
    return finish_figure(figure, path)


def confusion_matrix(probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str],
                     normalise: bool = False, path: str | os.PathLike | None = None) -> Figure:
    """Confusion matrix of the argmax (counts, or percent of each true class with `normalise`)."""
    from yellowbrick.classifier import ConfusionMatrix

    title = "Confusion matrix (% of true class)" if normalise else "Confusion matrix (counts)"
    return _visualise(ConfusionMatrix, probs, y_true, classes, title, path, percent=normalise)


def per_class_table(probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Precision, sensitivity, specificity, F1, AUC and support per class (rows = classes)."""
    values = metrics.metric_replicates(y_true, probs, classes)
    columns = ("precision", "sensitivity", "specificity", "f1", "auc")
    table = pd.DataFrame({c: [values[f"{c}/{k}"][0] for k in classes] for c in columns},
                         index=list(classes))
    table["support"] = np.bincount(np.asarray(y_true, dtype=int), minlength=len(classes))
    return table


def classification_report(probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str],
                          path: str | os.PathLike | None = None) -> Figure:
    """Heat map of the per-class report (matplotlib: yellowbrick's version draws its colour bar
    through pyplot and leaves a stray global figure behind)."""
    table = per_class_table(probs, y_true, classes)
    scores = table.drop(columns="support")
    figure, (ax,) = new_figure(1.2 * scores.shape[1] + 2.5, 0.5 * len(classes) + 1.8)
    image = ax.imshow(scores.to_numpy(dtype=float), cmap="YlOrRd", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(scores.to_numpy(dtype=float)):
        ax.text(j, i, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                color="white" if value > 0.7 else "black")
    ax.grid(False)
    ax.set_xticks(range(scores.shape[1]), scores.columns)
    ax.set_yticks(range(len(classes)), [f"{c} (n={n})" for c, n in zip(classes, table["support"])])
    ax.set_title("Per-class report")
    figure.colorbar(image, ax=ax)
    figure.tight_layout()
    return finish_figure(figure, path)


def roc_curves(probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str],
               path: str | os.PathLike | None = None) -> Figure:
    """One-vs-rest ROC curve of each class present (with and without it in y_true), each read
    from its own probability column, and their mean AUC. (yellowbrick's ROCAUC indexes the
    columns by the classes present, so it drew wrong curves once a class was absent, and
    failed outright with two classes present.)"""
    from sklearn.metrics import auc, roc_curve

    figure, (ax,) = new_figure(7.0, 5.5)
    y = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    areas = []
    for index, name in enumerate(classes):
        positive = y == index
        if positive.all() or not positive.any():
            continue  # no curve without both positives and negatives
        fpr, tpr, _ = roc_curve(positive, probs[:, index])
        areas.append(auc(fpr, tpr))
        ax.plot(fpr, tpr, linewidth=1.5, label=f"{name} (AUC {areas[-1]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    mean = f"mean AUC {np.mean(areas):.3f} over {len(areas)} classes present" if areas else \
        "no class with both positives and negatives"
    ax.set_title(f"ROC curves (one-vs-rest; {mean})")
    if areas:
        ax.legend(loc="lower right", fontsize=8)
    return finish_figure(figure, path)


def reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]],
                        n_bins: int = calibration.N_BINS,
                        path: str | os.PathLike | None = None) -> Figure:
    """Accuracy against confidence per bin, one line per {name: (probs, y_true)}, with ECE."""
    figure, (ax,) = new_figure(5.5, 5.0)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for name, (probs, y_true) in curves.items():
        table = calibration.reliability_data(probs, y_true, n_bins)
        filled = table[table["count"] > 0]
        ece = calibration.expected_calibration_error(probs, y_true, n_bins)
        ax.plot(filled["confidence"], filled["accuracy"], marker="o",
                label=f"{name} (ECE {ece:.3f})")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max probability)", ylabel="accuracy",
           title=f"Reliability diagram ({n_bins} bins)")
    ax.legend(loc="upper left")
    return finish_figure(figure, path)


def evaluation_plots(frame: pd.DataFrame, out_dir: str | os.PathLike,
                     prefix: str = "") -> dict[str, Path]:
    """Confusion matrices, report, ROC curves and reliability diagram of a predictions frame."""
    out_dir = Path(out_dir)
    classes = predictions.validate_predictions(frame)
    y_true, probs, _ = predictions.arrays_from_predictions(frame)
    written = {
        "confusion_counts": out_dir / f"{prefix}confusion_matrix.png",
        "confusion_normalised": out_dir / f"{prefix}confusion_matrix_normalised.png",
        "classification_report": out_dir / f"{prefix}classification_report.png",
        "roc": out_dir / f"{prefix}roc_curves.png",
        "reliability": out_dir / f"{prefix}reliability.png",
    }
    confusion_matrix(probs, y_true, classes, False, written["confusion_counts"])
    confusion_matrix(probs, y_true, classes, True, written["confusion_normalised"])
    classification_report(probs, y_true, classes, written["classification_report"])
    roc_curves(probs, y_true, classes, written["roc"])
    reliability_diagram({"model": (probs, y_true)}, path=written["reliability"])
    return written


def comparison_chart(table: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Balanced accuracy with its 95 % CI per run (a `compare` table), best on top."""
    if table.empty:
        raise ValueError("the comparison table is empty: no finished runs to plot")
    rows = table.iloc[::-1]
    labels = [f"{r.backbone} @ {r.image_size} ({r.dataset})\n{r.run}" for r in rows.itertuples()]
    value = rows["balanced_accuracy"].to_numpy(dtype=float)
    errors = np.vstack([value - rows["balanced_accuracy_ci_low"].to_numpy(dtype=float),
                        rows["balanced_accuracy_ci_high"].to_numpy(dtype=float) - value])
    figure, (ax,) = new_figure(7.5, 0.7 * len(rows) + 1.5)
    ax.barh(range(len(rows)), value, xerr=errors, capsize=4, color="#4C72B0")
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set(xlim=(0, 1), xlabel="test balanced accuracy (95 % bootstrap CI)",
           title="Runs compared")
    figure.tight_layout()
    return finish_figure(figure, path)

"""The official ISIC 2018 Task 3 test: predictions of a HAM10000-trained model on the 1,512
held-out images, metrics as the official scorer computes them, and a submission CSV.

The submission format is `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC` (utils.data.datasets
.ISIC2018_TASK3_COLUMNS), one row per test image. It keeps every image, ISIC_0035068 included:
the official scorer (isic-challenge-scoring) rejects a file with missing rows and gives that
image weight 0 itself. Our own metrics drop the images in ISIC2018_TASK3_EXCLUDED, so they equal
the scorer's balanced accuracy and AUCs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from utils import fileio, paths
from utils.data import datasets
from utils.errors import DataError
from utils.scoring import metrics
from utils.scoring.predictions import validate_predictions

PREDICTIONS_NAME = "predictions_isic2018_test.csv"
SUBMISSION_NAME = "submission_isic2018_task3.csv"
METRICS_NAME = "metrics_isic2018_test.json"
OFFICIAL_NAME = "official_scores.json"  # isic-challenge-scoring's numbers for a submission


def submission_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """ISIC 2018 Task 3 submission rows (image + one probability per ISIC code) from a HAM10000
    predictions frame; column order is the official one."""
    classes = validate_predictions(predictions, "ISIC 2018 predictions")
    if tuple(classes) != tuple(datasets.HAM10000.classes):
        raise DataError(
            f"the ISIC 2018 Task 3 submission needs HAM10000 class columns "
            f"{', '.join(datasets.HAM10000.classes)}; got {', '.join(classes)}"
        )
    frame = pd.DataFrame({"image": predictions["image_id"].astype(str).to_numpy()})
    for column in datasets.ISIC2018_TASK3_COLUMNS:
        frame[column] = predictions[datasets.ISIC2018_TASK3_TO_HAM[column]].to_numpy(dtype=float)
    return frame


def official_scores(truth_csv: str | os.PathLike,
                    submission_csv: str | os.PathLike) -> dict[str, Any]:
    """The official `isic-challenge-scoring` 5.6.0 numbers of a submission CSV against the ISIC
    2018 Task 3 ground-truth CSV: balanced accuracy (its ranking metric), macro and per-category
    AUC, and the package version. Needs the package (requirements.txt pins it)."""
    import warnings
    from importlib.metadata import version

    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the scorer calls DataFrame.applymap
        score = ClassificationScore.from_file(Path(truth_csv), Path(submission_csv),
                                              ClassificationMetric.BALANCED_ACCURACY)
    return {
        "package": f"isic-challenge-scoring {version('isic-challenge-scoring')}",
        "balanced_accuracy": float(score.overall),
        "macro_auc": float(score.macro_average["auc"]),
        "auc": {code: float(score.per_category.loc[code, "auc"])
                for code in datasets.ISIC2018_TASK3_COLUMNS},
    }


def evaluate_official_test(
    model_path: str | os.PathLike,
    task3_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int | None = None,
    tta_views: Sequence[str] | None = None,
    batch_size: int = 32,
    n_boot: int = metrics.DEFAULT_N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """Predict the ISIC 2018 Task 3 test folder with a HAM10000 model; write our predictions CSV,
    the submission CSV and the metrics (scorer's exclusions applied). Returns the metrics dict
    with the written paths under "files"."""
    from utils.data import readers
    from utils.evaluation import predict
    from utils.training import models

    table = readers.read_isic2018_test(task3_dir)  # every image; exclusions applied below
    config = predict.run_config(model_path)
    model = models.load_model(model_path, compile=False)
    classes = predict.resolve_classes(int(model.output_shape[-1]), config, "ham10000")
    size = image_size or config.get("image_size") or predict.model_image_size(model)
    files = [Path(p) for p in table["path"]]
    probs = predict.predict_files(model, files, int(size), batch_size,
                                  config.get("resize_policy", "crop"), tta_views)
    frame = table[["image_id", "lesion_id", "label", "label_index"]].reset_index(drop=True)
    frame = frame.assign(split="test")
    frame = pd.concat([frame, pd.DataFrame(probs, columns=list(classes))], axis=1)
    out_dir = Path(out_dir)
    written = {
        "predictions": fileio.write_csv(out_dir / PREDICTIONS_NAME, frame),
        "submission": fileio.write_csv(out_dir / SUBMISSION_NAME, submission_frame(frame)),
    }
    result = metrics.evaluate_predictions(frame, n_boot=n_boot, seed=seed,
                                          exclude=datasets.ISIC2018_TASK3_EXCLUDED)
    result.update(model=str(model_path), task3_dir=str(task3_dir),
                  tta_views=list(tta_views or []))
    written["metrics"] = fileio.write_json(out_dir / METRICS_NAME, result)
    result["files"] = {k: paths.display(v) for k, v in written.items()}
    return result

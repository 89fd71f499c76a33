"""The ISIC 2018 Task 3 test layout (input folder + one-hot ground truth) built from synthetic
HAM10000 images, for the submission and external-test-set tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from utils.data import datasets, readers


def task3_folder(synthetic_ham: Path, parent: Path, per_class: int = 6) -> Path:
    """`per_class` images of every class, consecutive ids from ISIC_0035050 (sorted as in the
    real ground truth: the official scorer sorts the rows but not its weights, so an unsorted
    truth file would zero the weight of the wrong image), so one is named like the excluded
    ISIC_0035068."""
    table = readers.read_ham10000(synthetic_ham)
    rows = table.groupby("label", group_keys=False).head(per_class).reset_index(drop=True)
    root = parent / "ISIC2018_Task3_Test"
    (root / "ISIC2018_Task3_Test_Input").mkdir(parents=True)
    ids = [f"ISIC_{35050 + i:07d}" for i in range(len(rows))]
    ham_to_isic = {ham: isic for isic, ham in datasets.ISIC2018_TASK3_TO_HAM.items()}
    truth = pd.DataFrame({"image": ids})
    for column in datasets.ISIC2018_TASK3_COLUMNS:
        truth[column] = [float(ham_to_isic[label] == column) for label in rows["label"]]
    for image_id, path in zip(ids, rows["path"]):
        shutil.copy(path, root / "ISIC2018_Task3_Test_Input" / f"{image_id}.jpg")
    truth.to_csv(root / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return root

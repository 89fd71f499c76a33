"""utils.studies.headtohead: one common image size and the report's table."""
from __future__ import annotations

import json

from utils.studies import headtohead
from utils.training import budget
from utils.training.config import TrainConfig


def test_common_size_is_the_largest_minimum():
    assert headtohead.common_size(headtohead.PAPER_BACKBONES) == 75
    assert headtohead.common_size(["MobileNetV2", "VGG16"]) == 32


def test_report_has_one_row_per_backbone_with_cis(tmp_path):
    metric = {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
    results = {name: {"params_m": 2.3, "trace_s": 12.0, "train_images_per_s": 100.0,
                      "epochs": 1, "steps_per_epoch": 5 if name == "VGG16" else None,
                      "duration_s": 300.0, "best_val_balanced_accuracy": 0.45,
                      "others_share": 0.1, "test_images": 40,
                      "test": {m: metric for m in headtohead.HEADLINE}}
               for name in ("VGG16", "MobileNetV2")}
    base = budget.apply_budget("cpu-5min", TrainConfig(dataset="synthetic"))
    md = headtohead.write_report(results, base, 75, "python -m utils headtohead", tmp_path / "h")
    text = md.read_text()
    assert "| VGG16 |" in text and "| MobileNetV2 |" in text and "0.500 [0.400, 0.600]" in text
    assert "1 (5 steps)" in text and "ImageNet weights and a GPU" in text
    assert json.loads((tmp_path / "h.json").read_text())["image_size"] == 75
    assert (tmp_path / "h.csv").read_text().count("\n") == 3

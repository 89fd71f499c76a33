"""Stage 5, evaluation: from a run folder to metrics, figures and predictions on new images.

Owns `evaluate` (metrics with CIs, TTA, temperature scaling via `tta`, `calibration`), figures
(`plots`), Grad-CAM (`gradcam`), `predict`, the comparison table (`compare`) and the ISIC 2018
submission export (`submission`). May import every earlier stage (data, augmentation, scoring,
training) and the base modules.
"""

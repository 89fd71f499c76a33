"""Stage 5, evaluation: from a run folder to metrics, figures and predictions on new images.

Owns `evaluate` (metrics with CIs, TTA, temperature scaling via `tta`, `calibration`; abstention
`selective`, `subgroups`, `corruptions`), the model card (`model_card`, `checklist`), figures
(`plots`), Grad-CAM (`gradcam`), `predict`, the comparison table (`compare`), external test sets
(`external`) with the ISIC 2018 submission export (`submission`), and the scores of unknown
lesion types (`ood_scores`). May import every earlier stage (data, augmentation, scoring,
training) and the base modules.
"""

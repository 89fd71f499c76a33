"""Stage 3, scoring: what a model's outputs are scored with.

Owns the predictions CSV format (`predictions`: written by training, read by evaluation) and the
metric math with lesion-bootstrap confidence intervals (`metrics`; paired comparisons of several
models on the same test images: `paired`), and the fusion of predictions with a patient-metadata
model fitted on the training split (`metadata_fusion`). Training selects checkpoints
with exactly the metric evaluation reports, so this sits below both. May import the base modules
and `utils.data`.
"""

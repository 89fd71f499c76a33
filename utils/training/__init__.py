"""Stage 4, training: from a manifest to a run folder.

Owns the backbone registry (`backbones`), model building and loading (`models`), the training
configuration (`config`), tf.data pipelines (`pipeline`), what a run reads (`data`), devices and
strategies (`devices`), callbacks (`callbacks`), the fit loop and the `train` command (`train`)
and the run-folder format (`runs`). May import the base modules, `utils.data`,
`utils.augmentation` and `utils.scoring`.
"""

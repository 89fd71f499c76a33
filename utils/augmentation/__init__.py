"""Stage 2, augmentation: from a split manifest to a balanced training set.

Owns the image transforms (`transforms`: OpenCV / scikit-image, online and Keras-layer forms),
the augment modes a run can use (`modes`), offline balancing of the TRAINING split only
(`balance`), dermoscopy preprocessing (`preprocess`: colour constancy, hair removal,
field-of-view crop; `preprocess_dataset`: its offline copy of a dataset) and their figures
(`plots`). May import the base modules and `utils.data`.
"""

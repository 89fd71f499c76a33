"""Shared code of the skin-lesion classification repository, grouped by stage of the data flow:

    raw folder -> split manifest -> balanced set -> tf.data -> model -> predictions -> metrics
    utils.data    utils.augmentation   utils.training   utils.scoring   utils.evaluation
    -> reports: utils.studies

Imports only go down this order: data < augmentation < scoring < training < evaluation <
studies; the base modules here (`errors`, `paths`, `fileio`, `tables`, `figures`, `arguments`)
import none of the stages, `notebooks` builds the notebooks, and `cli` (`python -m utils
<command>`) dispatches to every stage by module name. tests/test_architecture.py checks all of
this from the source.
"""

__version__ = "0.1.0"

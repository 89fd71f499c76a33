"""Shared code of the skin-lesion classification repository.

Modules are small and named for what they do; notebooks and `python -m utils` call them.
Open `utils/datasets.py` for the dataset facts and `utils/cli.py` for the commands.
"""

__version__ = "0.1.0"

"""Saving matplotlib figures: the Agg canvas (no display needed) and atomic PNG writes."""
from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils import fileio


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Render a figure to PNG with the Agg canvas, atomically."""
    FigureCanvasAgg(figure)
    with fileio.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)

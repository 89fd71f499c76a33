"""Figures of the Data_Augmentated notebooks: class counts before/after, every transform on one
image, augmented images beside their sources, images side by side (preprocessing before/after).

Functions return a `matplotlib.figure.Figure` built without pyplot (no global state; it renders
itself as PNG in a notebook) and, given
`path`, also save it atomically as PNG (utils.figures.save_figure).
"""
from __future__ import annotations

import io
import json
import os
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.augmentation import balance
from utils.augmentation import transforms as augment


class InlineFigure(Figure):
    """A Figure that shows itself as PNG in Jupyter without pyplot or `%matplotlib inline`."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        return buffer.getvalue()


def _new_figure(width: float, height: float) -> Figure:
    figure = InlineFigure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure


def _finish(figure: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        from utils.figures import save_figure

        save_figure(figure, path)
    return figure


def class_counts_figure(frame: pd.DataFrame, path: str | os.PathLike | None = None) -> Figure:
    """Training images per class before (original) and after balancing (original + augmented)."""
    counts = balance.class_counts(frame)
    figure = _new_figure(7, 3.6)
    axes = figure.add_subplot(1, 1, 1)
    positions = np.arange(len(counts))
    axes.bar(positions - 0.2, counts["train_original"], 0.4, label="before (original)")
    axes.bar(positions + 0.2, counts["train_total"], 0.4, label="after (original + augmented)")
    axes.set_xticks(positions, counts.index)
    axes.set_ylabel("training images")
    axes.set_title("Training split per class, before and after offline balancing")
    axes.legend()
    figure.tight_layout()
    return _finish(figure, path)


def transform_grid(image: np.ndarray, config: augment.AugmentConfig = augment.DEFAULT_CONFIG,
                   seed: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """The original, Shades of Gray, each transform (always applied) and one full `augment`."""
    rng = np.random.default_rng(seed)
    panels: list[tuple[str, np.ndarray]] = [("original", image),
                                            ("shades_of_gray", augment.shades_of_gray(image))]
    panels += [(name, augment.apply_transform(name, image, rng, config))
               for name in augment.TRANSFORM_NAMES]
    composed, applied = augment.augment(image, rng, config)
    panels.append(("augment: " + "+".join(step["name"] for step in applied), composed))
    return _image_grid(panels, ncols=4, path=path)


def augmented_examples(frame: pd.DataFrame, n: int = 4, seed: int = 0,
                       path: str | os.PathLike | None = None) -> Figure:
    """`n` augmented images (random, seeded) each beside its source training image."""
    augmented = frame.loc[frame["augmented"].astype(bool)]
    picked = augmented.sample(n=min(n, len(augmented)), random_state=seed)
    source_path = frame.set_index("image_id")["path"]
    panels: list[tuple[str, np.ndarray]] = []
    for row in picked.itertuples():
        names = "+".join(step["name"] for step in json.loads(row.transforms))
        panels.append((f"{row.source_image_id} ({row.label})",
                       augment.read_rgb(source_path[row.source_image_id])))
        panels.append((names, augment.read_rgb(row.path)))
    return _image_grid(panels, ncols=4, path=path)


def image_panels(panels: Sequence[tuple[str, np.ndarray]], ncols: int = 4,
                 boxes: dict[int, tuple[int, int, int, int]] | None = None,
                 path: str | os.PathLike | None = None) -> Figure:
    """Images side by side with their titles (RGB, or a 2-D mask shown in grey); `boxes` maps a
    panel's index to a box (x0, y0, x1, y1) drawn over it, e.g. a detected field of view."""
    return _image_grid(panels, ncols, path, boxes)


def _image_grid(panels: Sequence[tuple[str, np.ndarray]], ncols: int,
                path: str | os.PathLike | None,
                boxes: dict[int, tuple[int, int, int, int]] | None = None) -> Figure:
    from matplotlib.patches import Rectangle

    nrows = -(-len(panels) // ncols)
    figure = _new_figure(3 * ncols, 2.5 * nrows)
    for index, (title, image) in enumerate(panels):
        axes = figure.add_subplot(nrows, ncols, index + 1)
        axes.imshow(image, cmap="gray" if np.ndim(image) == 2 else None)
        box = (boxes or {}).get(index)
        if box is not None:
            axes.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0],
                                     box[3] - box[1], fill=False, edgecolor="lime", linewidth=2))
        axes.set_title(title if len(title) < 40 else title[:37] + "...", fontsize=8)
        axes.axis("off")
    figure.tight_layout()
    return _finish(figure, path)

# %% [markdown]
# # Dermoscopy preprocessing: colour constancy, hair removal, field-of-view crop
#
# **Aim.** Dermoscopy images differ in illumination and camera white balance between clinics,
# carry hairs across the lesion, and often show the dermoscope's black circular vignette. This
# notebook shows the three preprocessing steps of `utils/augmentation/preprocess.py` (OpenCV),
# each a deterministic function of a uint8 RGB image with its settings in a frozen dataclass:
#
# - **colour**: Shades of Gray colour constancy (Finlayson & Trezzi 2004), Minkowski norm p = 6;
# - **hair**: DullRazor-style hair removal (Lee et al. 1997): black-hat filter, threshold, long
#   thin components only, `cv2.inpaint`;
# - **fov**: the dark field-of-view vignette found and cropped (images without one untouched).
#
# and then reads what they do to a classifier from the committed ablation report
# (`python -m utils ablate`, real HAM10000, paired differences with confidence intervals).
#
# **Data.** Synthetic images only (`utils/data/synthetic_drawing.py`: a drawn lesion, then a
# known colour cast, known hairs and a known vignette added), so every panel has a known answer
# and no pixel of the non-commercial datasets is shown. The ablation numbers at the end come
# from real HAM10000 (Tschandl et al. 2018, CC BY-NC-SA 4.0) through the report file.
#
# **Expected result.** The cast image is restored to the original's colours; the detected hair
# mask matches the drawn one and the inpainted image is much closer to the hair-free one (PSNR);
# the detected field of view matches the drawn circle. Whether any of this helps a classifier is
# a measured question: see the last section.

# %%
import json

import numpy as np
import pandas as pd
from IPython.display import Image, Markdown, display

from utils import paths
from utils.augmentation import plots, preprocess
from utils.data import synthetic_drawing as drawing
from utils.training.config import TrainConfig

# %% tags=["parameters"]
STYLE = "mel"  # class look of the synthetic lesion (akiec, bcc, bkl, df, mel, nv, vasc)
SEED = 0  # seeds the synthetic lesion, its hairs
PREPROCESS = "colour,hair,fov"  # the steps applied together in section 4 (with settings)
REPORT = None  # None: reports/preprocessing_ablation.json; else another ablate report (.json)
SMOKE = False  # True: 200x150 images only (fast CI check); False: also the 600x450 originals' size

# %% [markdown]
# ## 1. Colour constancy (Shades of Gray)
# The lesion is first colour-balanced (its illuminant estimate is grey), then put under a known
# cast. Shades of Gray estimates the illuminant as the per-channel p-norm mean and scales the
# channels to make it grey, keeping the mean level.

# %%
size = (200, 150) if SMOKE else (600, 450)
lesion, lesion_mask = drawing.lesion_image(STYLE, SEED, image_size=size)
original = preprocess.colour_constancy(lesion)
gains = (1.0, 0.8, 0.6)  # a warm cast: blue and green attenuated
cast = drawing.colour_cast(original, gains)
restored = preprocess.colour_constancy(cast)
expected = original.astype(float) * np.mean(gains)  # Shades of Gray keeps the mean level
print("illuminant estimate of the cast image:", np.round(preprocess.illuminant(cast), 3))
print(f"mean absolute error to the original (x mean gain): cast "
      f"{np.abs(cast - expected).mean():.1f}, corrected {np.abs(restored - expected).mean():.2f} "
      "grey levels")
plots.image_panels([("original (grey-balanced)", original), (f"cast {gains}", cast),
                    ("Shades of Gray (p=6)", restored)], ncols=3)

# %% [markdown]
# ## 2. Hair removal (DullRazor-style)
# Dark curves drawn over the lesion: the black-hat response above a threshold, kept where a
# component is long (compact dots and globules are lesion features), then inpainted (Telea).


# %%
def psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = np.mean((image.astype(float) - reference.astype(float)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


hairy, drawn = drawing.draw_hairs(lesion, SEED)
found = preprocess.hair_mask(hairy)
clean = preprocess.remove_hair(hairy)
print(f"hair mask IoU with the drawn hairs: {(found & drawn).sum() / (found | drawn).sum():.3f}; "
      f"PSNR to the hair-free image: {psnr(hairy, lesion):.1f} dB with hairs, "
      f"{psnr(clean, lesion):.1f} dB after removal")
print("settings:", preprocess.HairConfig())
plots.image_panels([("hairs drawn", hairy), ("detected hair mask", found),
                    ("drawn hair mask (truth)", drawn), ("inpainted", clean)], ncols=4)

# %% [markdown]
# ## 3. Field of view
# A black circular vignette around the lesion. `mode="box"` crops to the bounding box of the
# bright field of view; `mode="inscribed"` (the default) fits a circle to its border and keeps
# the largest box inside it, which also removes the dark corners a circle wider than the frame
# leaves (the common case in HAM10000), at the cost of the image's rim.

# %%
framed, truth = drawing.add_vignette(lesion, radius_fraction=0.36, centre_shift=(0.04, 0.0))
box = preprocess.field_of_view_box(framed, preprocess.FovConfig(mode="box"))
inscribed = preprocess.field_of_view_box(framed, preprocess.FovConfig(mode="inscribed"))
print("true field-of-view box:", truth, "| detected box:", box, "| inscribed:", inscribed)
wide, _ = drawing.add_vignette(lesion, radius_fraction=0.56)  # only the corners are dark
print("circle wider than the frame: box mode", preprocess.field_of_view_box(
    wide, preprocess.FovConfig(mode="box")), "| inscribed mode", preprocess.field_of_view_box(wide))
plots.image_panels([("vignette, detected box (mode=box)", framed),
                    ("inscribed box (default)", framed),
                    ("cropped (default)", preprocess.crop_field_of_view(framed)),
                    ("dark corners only, inscribed box", wide)],
                   ncols=4, boxes={0: box, 1: inscribed, 3: preprocess.field_of_view_box(wide)})

# %% [markdown]
# ## 4. All steps together, and how a run records them
# Steps always run in the order fov, hair, colour. A run's `config.json` holds the canonical
# text with every setting, and evaluation and `python -m utils predict` apply the same
# preprocessing to every image (`utils/training/pipeline.load_image`).

# %%
steps = preprocess.parse_preprocessing(PREPROCESS)
everything, _ = drawing.add_vignette(drawing.colour_cast(hairy, gains), radius_fraction=0.36)
plots.image_panels([("cast + hairs + vignette", everything),
                    (f"preprocessed: {steps.short_name()}", steps(everything))], ncols=2)

# %%
config = TrainConfig(weights=None, image_size=64, preprocess=PREPROCESS).resolve(gpu_visible=False)
print("config.json records preprocess =", config.preprocess)
print("train:   python -m utils train --data-dir <HAM10000> --preprocess", PREPROCESS)
print("copy:    python -m utils preprocess <HAM10000> --steps", PREPROCESS)
print("ablate:  python -m utils ablate --data-dir <HAM10000>")

# %% [markdown]
# ## 5. Does it help? The ablation report
# Read from the committed `reports/preprocessing_ablation.json` (`python -m utils ablate` on the
# real HAM10000 at a CPU budget; the report names its exact command, settings and machine).
# Only metrics are read here: no image of the real data. Each arm is the same model trained
# with the same seeds and budget on the same lesion-grouped split; the difference against "none"
# is paired (same test images, same seeds).

# %%
report = paths.reports_dir() / "preprocessing_ablation.json" if REPORT is None else REPORT
try:
    with open(report, encoding="utf-8") as handle:
        summary = json.load(handle)
except FileNotFoundError:
    summary = None
    print(f"{paths.display(report)} not found: run `python -m utils ablate` to make it")
if summary is not None:
    rows = []
    for arm, entry in summary["comparison"]["arms"].items():
        ba, diff = entry["balanced_accuracy"], entry["difference"]
        rows.append({"arm": summary["arms"][arm]["name"],
                     "balanced accuracy": f"{ba['value']:.3f} [{ba['ci_low']:.3f}, "
                                          f"{ba['ci_high']:.3f}]",
                     "paired difference vs none": "reference" if diff is None else
                     f"{diff['value']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]",
                     "seeds": ", ".join(f"{v:.3f}" for v in entry["per_seed"])})
    print("command:", summary["command"])
    display(pd.DataFrame(rows))
    markdown_report = paths.display(report).replace(".json", ".md")
    display(Markdown(f"Plain-words conclusion and settings: `{markdown_report}`."))

# %%
figure = str(report).replace(".json", ".png")
if summary is not None:
    display(Image(filename=figure))

# %% [markdown]
# ## Summary
#
# Each step does what its known-answer test checks (`tests/test_preprocess.py`): a known colour
# cast is undone, drawn hairs are found and inpainted, a drawn vignette is cropped. Whether they
# help a classifier is measured, not assumed: the ablation above trains the same model with and
# without each step and reports the paired differences with their intervals. Code:
# `utils/augmentation/preprocess.py` (steps), `utils/augmentation/preprocess_dataset.py`
# (offline copy), `utils/studies/ablate.py` (ablation).

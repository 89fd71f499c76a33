"""Dataset facts, written once.

Every class order, class count, URL, licence and citation in the repository comes from this
module: readers, splits, models, metrics, tests and the README table read them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterable, Mapping

from utils.errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one public dataset."""

    name: str  # registry key, e.g. "ham10000"
    title: str  # human-readable name
    classes: tuple[str, ...]  # label codes in index order (index = position)
    class_names: Mapping[str, str]  # code -> full diagnosis name
    counts: Mapping[str, int]  # official image count per class (whole dataset)
    n_images: int  # official number of images
    n_lesions: int | None  # distinct lesion_id values, where published
    licence: str
    citation: str
    homepage: str
    urls: Mapping[str, str] = field(default_factory=dict)  # file name -> download URL
    md5: Mapping[str, str] = field(default_factory=dict)  # file name -> published md5

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index_of(self, label: str) -> int:
        """Index of a label code; raises ValueError naming the valid codes."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(
                f"unknown {self.title} label {label!r}; valid labels: {', '.join(self.classes)}"
            ) from None


def _frozen(mapping: dict) -> Mapping:
    return MappingProxyType(dict(mapping))


HAM10000_DOI = "doi:10.7910/DVN/DBW86T"
DATAVERSE_SERVER = "https://dataverse.harvard.edu"

HAM10000 = DatasetInfo(
    name="ham10000",
    title="HAM10000",
    classes=("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
    class_names=_frozen(
        {
            "akiec": "actinic keratoses and intraepithelial carcinoma (Bowen's disease)",
            "bcc": "basal cell carcinoma",
            "bkl": "benign keratosis-like lesions",
            "df": "dermatofibroma",
            "mel": "melanoma",
            "nv": "melanocytic nevi",
            "vasc": "vascular lesions",
        }
    ),
    counts=_frozen(
        {"akiec": 327, "bcc": 514, "bkl": 1099, "df": 115, "mel": 1113, "nv": 6705, "vasc": 142}
    ),
    n_images=10015,
    n_lesions=7470,
    licence="CC BY-NC-SA 4.0 (non-commercial research use)",
    citation=(
        "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of "
        "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 "
        "(2018). doi:10.1038/sdata.2018.161; data: doi:10.7910/DVN/DBW86T"
    ),
    homepage=f"{DATAVERSE_SERVER}/dataset.xhtml?persistentId={HAM10000_DOI}",
    urls=_frozen(
        {
            "dataset_json": (
                f"{DATAVERSE_SERVER}/api/datasets/:persistentId/?persistentId={HAM10000_DOI}"
            ),
            "datafile": f"{DATAVERSE_SERVER}/api/access/datafile/{{file_id}}",
        }
    ),
)

# ISIC 2019 training ground truth: one-hot columns in this order (UNK has no training image).
ISIC2019 = DatasetInfo(
    name="isic2019",
    title="ISIC 2019",
    classes=("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"),
    class_names=_frozen(
        {
            "MEL": "melanoma",
            "NV": "melanocytic nevus",
            "BCC": "basal cell carcinoma",
            "AK": "actinic keratosis",
            "BKL": "benign keratosis",
            "DF": "dermatofibroma",
            "VASC": "vascular lesion",
            "SCC": "squamous cell carcinoma",
        }
    ),
    counts=_frozen(
        {"MEL": 4522, "NV": 12875, "BCC": 3323, "AK": 867, "BKL": 2624, "DF": 239, "VASC": 253,
         "SCC": 628}
    ),
    n_images=25331,
    n_lesions=None,
    licence="CC BY-NC 4.0 (non-commercial research use)",
    citation=(
        "Tschandl P et al., Sci. Data 5, 180161 (2018); Codella NCF et al., ISBI 2018, "
        "arXiv:1710.05006; Combalia M et al., BCN20000, arXiv:1908.02288 (2019)"
    ),
    homepage="https://challenge.isic-archive.com/data/#2019",
    urls=_frozen(
        {
            "ISIC_2019_Training_Input.zip": (
                "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_Input.zip"
            ),
            "ISIC_2019_Training_GroundTruth.csv": (
                "https://isic-challenge-data.s3.amazonaws.com/2019/"
                "ISIC_2019_Training_GroundTruth.csv"
            ),
            "ISIC_2019_Training_Metadata.csv": (
                "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_Metadata.csv"
            ),
        }
    ),
)
ISIC2019_EXTRA_CLASSES: tuple[str, ...] = ("UNK",)  # present as a column, never as a training label

# ISIC 2018 Task 3: the official held-out test set of HAM10000-trained models (1,512 images).
ISIC2018_TASK3_COLUMNS: tuple[str, ...] = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
ISIC2018_TASK3_TO_HAM: Mapping[str, str] = _frozen(
    {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
     "VASC": "vasc"}
)
ISIC2018_TASK3_EXCLUDED: tuple[str, ...] = ("ISIC_0035068",)  # excluded by the official scorer
ISIC2018_TASK3 = DatasetInfo(
    name="isic2018_task3_test",
    title="ISIC 2018 Task 3 test",
    classes=HAM10000.classes,
    class_names=HAM10000.class_names,
    counts=_frozen({}),
    n_images=1512,
    n_lesions=None,
    licence="CC BY-NC 4.0 (non-commercial research use)",
    citation=(
        "Codella NCF et al., Skin Lesion Analysis Toward Melanoma Detection 2018, "
        "arXiv:1902.03368; Tschandl P et al., Sci. Data 5, 180161 (2018)"
    ),
    homepage="https://challenge.isic-archive.com/data/#2018",
    urls=_frozen(
        {
            "ISIC2018_Task3_Test_Input.zip": (
                "https://isic-challenge-data.s3.amazonaws.com/2018/ISIC2018_Task3_Test_Input.zip"
            ),
            "ISIC2018_Task3_Test_GroundTruth.zip": (
                "https://isic-challenge-data.s3.amazonaws.com/2018/"
                "ISIC2018_Task3_Test_GroundTruth.zip"
            ),
        }
    ),
)

# DermaMNIST (MedMNIST v2): HAM10000 resized, labels in HAM10000 index order, official split.
DERMAMNIST = DatasetInfo(
    name="dermamnist",
    title="DermaMNIST",
    classes=HAM10000.classes,
    class_names=HAM10000.class_names,
    counts=HAM10000.counts,
    n_images=10015,
    n_lesions=None,
    licence="CC BY-NC 4.0 (MedMNIST; derived from HAM10000, CC BY-NC-SA 4.0)",
    citation=(
        "Yang J et al. MedMNIST v2, a large-scale lightweight benchmark for 2D and 3D biomedical "
        "image classification. Sci. Data 10, 41 (2023)"
    ),
    homepage="https://medmnist.com/",
    # MedMNIST+ on Zenodo (record 10519652): one .npz per image size (28, 64, 128, 224 px);
    # URLs and MD5s as medmnist/info.py (MedMNIST/MedMNIST, v3) records them in INFO["dermamnist"].
    urls=_frozen(
        {
            name: f"https://zenodo.org/records/10519652/files/{name}?download=1"
            for name in (
                "dermamnist.npz", "dermamnist_64.npz", "dermamnist_128.npz", "dermamnist_224.npz",
            )
        }
    ),
    md5=_frozen(
        {
            "dermamnist.npz": "0744692d530f8e62ec473284d019b0c7",
            "dermamnist_64.npz": "b70a2f5635c6199aeaa28c31d7202e1f",
            "dermamnist_128.npz": "2defd784463fa5243564e855ed717de1",
            "dermamnist_224.npz": "8974907d8e169bef5f5b96bc506ae45d",
        }
    ),
)

# How HAM10000 codes relate to ISIC 2019 codes: HAM `akiec` is split into AK and SCC in ISIC 2019
# (Bowen's disease, i.e. SCC in situ, is labelled SCC there).
HAM_TO_ISIC2019: Mapping[str, tuple[str, ...]] = _frozen(
    {"akiec": ("AK", "SCC"), "bcc": ("BCC",), "bkl": ("BKL",), "df": ("DF",), "mel": ("MEL",),
     "nv": ("NV",), "vasc": ("VASC",)}
)
ISIC2019_TO_HAM: Mapping[str, str] = _frozen(
    {isic: ham for ham, isics in HAM_TO_ISIC2019.items() for isic in isics}
)

DATASETS: Mapping[str, DatasetInfo] = _frozen(
    {d.name: d for d in (HAM10000, ISIC2019, ISIC2018_TASK3, DERMAMNIST)}
)

# Columns of the tidy table every reader returns (see utils.data.readers), in this order.
TABLE_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "label", "label_index", "lesion_id", "age", "sex", "site",
)


def class_order(labels: Iterable[str]) -> list[str]:
    """Labels in their dataset's index order when they all belong to one known dataset, else
    sorted (the one rule every table, split and balancing step orders classes by)."""
    labels = set(labels)
    for info in DATASETS.values():
        if labels <= set(info.classes):
            return [c for c in info.classes if c in labels]
    return sorted(labels)


def get_dataset(name: str) -> DatasetInfo:
    """Dataset facts by name; raises ValueError listing the known names."""
    key = name.lower().replace("-", "").replace("_", "")
    for info in DATASETS.values():
        if info.name.replace("_", "") == key:
            return info
    raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------------
# Raw layouts: file and folder names of the official distributions, written once.
# readers look for them, download extracts into them, synthetic writes them and Grad-CAM reads
# the lesion masks from them; data/README.md draws the folder trees.

# HAM10000 (Harvard Dataverse)
HAM_METADATA_CSV = "HAM10000_metadata.csv"
HAM_METADATA_NAMES: tuple[str, ...] = (  # the CSV, or Dataverse's tab-separated export
    HAM_METADATA_CSV, "HAM10000_metadata.tab", "HAM10000_metadata.tsv", "HAM10000_metadata",
)
HAM_IMAGE_PREFIX = "HAM10000_images"  # readers take images from every folder named so (any case)
HAM_IMAGE_PARTS: tuple[str, ...] = (f"{HAM_IMAGE_PREFIX}_part_1", f"{HAM_IMAGE_PREFIX}_part_2")

# Lesion masks: <dataset folder>/<one of MASK_FOLDERS>/<image_id><MASK_SUFFIX>
HAM_MASKS_200X150 = "HAM10000_segmentations_lesion_200x150"  # masks at the 200x150 image size
HAM_MASKS_TSCHANDL = "HAM10000_segmentations_lesion_tschandl"  # `download ham10000 --masks`
HAM_MASKS_SYNTHETIC = "HAM10000_segmentations_lesion"  # `python -m utils synthetic`
# every folder where lesion masks can be found, searched in this order
MASK_FOLDERS: tuple[str, ...] = (HAM_MASKS_200X150, HAM_MASKS_TSCHANDL, HAM_MASKS_SYNTHETIC)
MASK_SUFFIX = "_segmentation.png"

# ISIC 2019 training (ISIC challenge bucket)
ISIC2019_INPUT = "ISIC_2019_Training_Input"
ISIC2019_GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
ISIC2019_METADATA = "ISIC_2019_Training_Metadata.csv"

# ISIC 2018 Task 3: "{subset}" is a value of ISIC2018_TASK3_SUBSETS ("Test", "Validation")
ISIC2018_TASK3_SUBSETS: Mapping[str, str] = _frozen({"test": "Test", "validation": "Validation"})
# The ground truth lies in the dataset folder, or in a folder named after its stem (as the
# official ground-truth zip unpacks).
ISIC2018_TASK3_INPUT = "ISIC2018_Task3_{subset}_Input"  # image folder
ISIC2018_TASK3_GROUND_TRUTH = "ISIC2018_Task3_{subset}_GroundTruth.csv"
ISIC2018_TASK3_TEST_INPUT = ISIC2018_TASK3_INPUT.format(subset="Test")
ISIC2018_TASK3_TEST_GROUND_TRUTH = ISIC2018_TASK3_GROUND_TRUTH.format(subset="Test")

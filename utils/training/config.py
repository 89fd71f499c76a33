"""Training configuration: one frozen dataclass with a comment on every field, per-dataset presets
and a smoke preset. A run writes its *resolved* config (`TrainConfig.resolve()`) as config.json.

    config = preset("ham10000", backbone="resnet50", data_dir="data/raw/HAM10000").resolve()
    config = smoke_config("mobilenetv2").resolve()   # tiny, 1 epoch, synthetic data, no weights
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from utils import fileio
from utils.augmentation.modes import AUGMENT_MODES
from utils.augmentation.preprocess import NONE as NO_PREPROCESSING
from utils.augmentation.preprocess import parse_preprocessing
from utils.errors import ConfigError

IMBALANCE_MODES = ("class_weight", "sampling", "none")
RESIZE_POLICIES = ("crop", "pad", "squash")
LR_SCHEDULES = ("plateau", "cosine", "constant")
TRI_STATE = ("auto", "on", "off")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
OPTIMIZERS = ("adam", "adamw")
WEIGHT_AVERAGES = ("none", "ema", "swa")
# BatchNorm momentum from scratch: with Keras' 0.999, MobileNetV2 trained from scratch on HAM10000
# (96 px, class weights, 12 epochs) predicted one class in inference mode on every epoch
# (validation balanced accuracy 0.143); with 0.9 it reached 0.546 in 10 epochs.
FROM_SCRATCH_BN_MOMENTUM = 0.9
DATASET_CHOICES = ("ham10000", "isic2019", "synthetic", "synthetic_isic2019")
# What a run without a data folder trains on (the generated synthetic default of that layout).
SYNTHETIC_OF = {"ham10000": "synthetic", "synthetic": "synthetic", "isic2019": "synthetic_isic2019",
                "synthetic_isic2019": "synthetic_isic2019"}
# The accepted values of the fields that take one of a few words (checked in __post_init__,
# offered as `choices` by the train command line).
FIELD_CHOICES: dict[str, tuple] = {
    "dataset": DATASET_CHOICES, "augment": AUGMENT_MODES, "imbalance": IMBALANCE_MODES,
    "resize_policy": RESIZE_POLICIES, "lr_schedule": LR_SCHEDULES, "mixed_precision": TRI_STATE,
    "jit_compile": TRI_STATE, "strategy": STRATEGIES, "optimizer": OPTIMIZERS,
    "weight_average": WEIGHT_AVERAGES,
}
# (field, lowest accepted value, whether the lowest value itself is accepted); None values skip.
FIELD_MINIMUMS: tuple[tuple[str, float, bool], ...] = (
    ("epochs", 0, True), ("stage1_epochs", 0, True), ("stage2_epochs", 0, True),
    ("batch_size", 1, True), ("image_size", 1, True), ("subset", 1, True),
    ("synthetic_images", 1, True), ("steps_per_epoch", 1, True), ("patience", 0, True),
    ("seed", 0, True), ("learning_rate", 0, False), ("stage1_lr", 0, False),
    ("stage2_lr", 0, False), ("dropout", 0, True), ("bn_momentum", 0, True),
    ("weight_decay", 0, True), ("warmup_epochs", 0, True), ("label_smoothing", 0, True),
    ("mixup_alpha", 0, True), ("cutmix_alpha", 0, True), ("mix_prob", 0, True),
    ("ema_decay", 0, True), ("swa_start", 0, True), ("budget_s", 0, True), ("members", 1, True),
)
# An ensemble's member k trains with seed + MEMBER_SEED_STRIDE * k (utils.training.ensemble).
MEMBER_SEED_STRIDE = 1000
# Fields that are fractions: at most 1.
FIELD_FRACTIONS = ("label_smoothing", "mix_prob", "ema_decay", "swa_start")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (resolved values are written to config.json)."""

    # --- data ---
    dataset: str = "ham10000"  # ham10000 | isic2019 (without data_dir: labelled synthetic)
    data_dir: str | None = None  # dataset folder; None -> the generated synthetic default
    manifest: str | None = None  # an existing split manifest CSV; None -> lesion_split of the table
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # train, val, test (by lesion)
    subset: int | None = None  # use a seeded random subset of this many images (quick runs)
    synthetic_images: int = 1000  # images in the generated synthetic default dataset
    # --- model ---
    backbone: str = "mobilenetv2"  # a name from utils.training.backbones.list_backbones()
    image_size: int | None = None  # input side in pixels; None -> the registry's default size
    weights: str | None = "imagenet"  # None (from scratch) | "imagenet" | path to a weights file
    dropout: float = 0.3  # dropout before the softmax head
    bn_momentum: float | None = None  # BatchNorm momentum; None -> 0.9 from scratch, keep otherwise
    # --- optimisation ---
    epochs: int = 30  # epochs of single-stage training (weights=None)
    learning_rate: float = 1e-3  # Adam learning rate of single-stage training
    stage1_epochs: int = 5  # head-only epochs with the backbone frozen (pre-trained weights)
    stage1_lr: float = 1e-3  # learning rate of stage 1
    stage2_epochs: int = 20  # fine-tuning epochs from the registry's unfreeze boundary
    stage2_lr: float = 1e-4  # learning rate of stage 2 (lower: fine-tuning)
    batch_size: int = 32  # global batch size (split across replicas under a strategy)
    lr_schedule: str = "plateau"  # plateau (ReduceLROnPlateau) | cosine | constant
    patience: int = 6  # early-stopping patience in epochs on val_balanced_accuracy (0 = off)
    select_best: bool = True  # keep the best validation epoch (False: the last epoch's weights)
    steps_per_epoch: int | None = None  # steps per epoch (None: one pass; set: the stream repeats)
    # --- data handling ---
    augment: str = "online"  # none | online (tf.data) | offline (balanced manifest) | both
    balance_target: int | None = None  # offline balancing: images per class in train (None = max)
    imbalance: str = "class_weight"  # class_weight | sampling (balanced batches) | none
    resize_policy: str = "crop"  # crop (keep aspect, centre crop) | pad (keep aspect) | squash
    preprocess: str = "none"  # none | colour,hair,fov before resizing, also at evaluate/predict
    cache: bool = False  # cache resized images on disk under data/interim/cache/
    deterministic: bool = True  # deterministic tf.data order (slightly slower)
    seed: int = 0  # seeds Python, NumPy, TensorFlow, the split and tf.data shuffles
    # --- hardware ---
    mixed_precision: str = "auto"  # auto (on with a GPU) | on (GPU float16, CPU bfloat16) | off
    jit_compile: str = "auto"  # XLA; auto = on only on GPU (15x slower on this CPU) | on | off
    strategy: str = "auto"  # auto | default | mirrored (all visible devices) | multiworker
    run_eagerly: bool = False  # no tf.function tracing: faster only for tiny (smoke) runs
    # --- recipe techniques (utils.training.optim / mixing / averaging) ---
    optimizer: str = "adam"  # adam | adamw (Adam with decoupled weight decay)
    weight_decay: float = 0.0  # AdamW decoupled weight decay (ignored by adam)
    warmup_epochs: float = 0.0  # linear learning-rate warm-up (epochs) before the cosine decay
    label_smoothing: float = 0.0  # cross-entropy label smoothing (0 = off)
    mixup_alpha: float = 0.0  # mixup of training batches, lambda ~ Beta(a, a) (0 = off)
    cutmix_alpha: float = 0.0  # CutMix of training batches, Beta(a, a) (0 = off; both: 50/50)
    mix_prob: float = 1.0  # probability that a training batch is mixed (mixup/CutMix on)
    weight_average: str = "none"  # none | ema (every step) | swa (epoch ends, late training)
    ema_decay: float = 0.998  # EMA decay per step (averages about 1 / (1 - decay) steps)
    swa_start: float = 0.5  # SWA averages the epoch-end weights from this fraction of epochs on
    members: int = 1  # models trained in turn (seed + 1000 k), averaged into one model.keras
    # --- prediction ---
    predict_tta: bool = False  # the run's result is the mean over 8 dihedral views (plain too)
    metadata_fusion: bool = False  # result fused with a train-split model of age, sex, site
    # --- wall-clock budget (utils.training.budget) ---
    budget: str | None = None  # wall-clock budget + recipe: cpu-30min | cpu-5min
    budget_s: float | None = None  # whole-run wall clock (s): epochs sized by measuring; 0 = off
    # --- misc ---
    smoke: bool = False  # a tiny run that checks the code path, not a result
    verbose: int = 2  # Keras fit verbosity (2 = one line per epoch, CI friendly)

    def __post_init__(self) -> None:
        for name, choices in FIELD_CHOICES.items():
            resolved = (True, False) if name in ("mixed_precision", "jit_compile") else ()
            _check_choice(name, getattr(self, name), choices + resolved)
        for name, lowest, inclusive in FIELD_MINIMUMS:
            _check_minimum(name, getattr(self, name), lowest, inclusive)
        if self.dropout >= 1 or (self.bn_momentum is not None and self.bn_momentum >= 1):
            raise ConfigError(f"dropout={self.dropout!r} and bn_momentum={self.bn_momentum!r} "
                              "must be below 1")
        parse_preprocessing(self.preprocess)  # ValueError naming the bad step or setting
        for name in FIELD_FRACTIONS:
            if float(getattr(self, name)) > 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be at most 1")
        fractions = tuple(float(f) for f in self.split_fractions)
        if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
            raise ConfigError(
                f"split_fractions must be three non-negative numbers summing to 1, got "
                f"{self.split_fractions!r}"
            )
        object.__setattr__(self, "split_fractions", fractions)
        for name in ("epochs", "stage1_epochs", "stage2_epochs", "batch_size"):
            if int(getattr(self, name)) < 0 or (name == "batch_size" and self.batch_size < 1):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")

    @property
    def pretrained(self) -> bool:
        """True when training starts from pre-trained weights (two-stage fine-tuning)."""
        return self.weights is not None

    @property
    def total_epochs(self) -> int:
        return self.stage1_epochs + self.stage2_epochs if self.pretrained else self.epochs

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["split_fractions"] = list(self.split_fractions)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown TrainConfig fields {unknown}; valid fields: "
                              f"{sorted(known)}")
        values = dict(data)
        if "split_fractions" in values:
            values["split_fractions"] = tuple(values["split_fractions"])
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike) -> Path:
        return fileio.write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError, ValueError) as error:
            raise ConfigError(f"{path}: not a valid TrainConfig JSON ({error}); restore it or "
                              "start a new run folder") from None

    def resolve(self, gpu_visible: bool | None = None) -> "TrainConfig":
        """Fill defaults: image size from the registry (smoke: tiny), BN momentum, hardware flags;
        a run without a data folder is labelled synthetic (it trains on the generated default)."""
        from utils.training import backbones

        spec = backbones.get_backbone(self.backbone)
        size = self.image_size
        if size is None:
            size = spec.min_size if self.smoke else spec.default_size
        if size < spec.min_size:
            raise ConfigError(
                f"image_size {size} is below {spec.name}'s minimum of {spec.min_size} px; "
                f"use --image-size {spec.min_size} or more"
            )
        momentum = self.bn_momentum
        if momentum is None and not self.pretrained:
            momentum = FROM_SCRATCH_BN_MOMENTUM  # 0.999 (Keras) predicts one class from scratch
        if gpu_visible is None:
            gpu_visible = _gpu_visible()
        return replace(
            self,
            dataset=SYNTHETIC_OF[self.dataset] if self.data_dir is None else self.dataset,
            backbone=spec.name,
            image_size=int(size),
            bn_momentum=momentum,
            mixed_precision=_tri_state(self.mixed_precision, gpu_visible),
            jit_compile=_tri_state(self.jit_compile, gpu_visible),
            preprocess=resolve_preprocess(self.preprocess, self.data_dir),
        )


def backbone_name(name: str) -> str:
    """A backbone name the registry knows, kept as typed (ConfigError listing them otherwise):
    the command-line check of --backbone."""
    from utils.training import backbones

    backbones.get_backbone(name)
    return name


def field_comments(cls: type = None) -> dict[str, str]:
    """{field: its comment} read from a config dataclass's source (default TrainConfig): the
    commands' --help text."""
    import inspect

    comments = {}
    for line in inspect.getsource(cls or TrainConfig).splitlines():
        name, colon, rest = line.strip().partition(":")
        if colon and name.isidentifier() and "  # " in rest:
            comments[name] = rest.split("  # ", 1)[1].strip()
    return comments


def resolve_preprocess(text: str, data_dir: str | None) -> str:
    """The canonical preprocessing text (every setting named); on an offline preprocessed copy
    (utils.augmentation.preprocess_dataset) the copy's, so `predict` applies it to raw images."""
    from utils.augmentation.preprocess_dataset import copy_spec

    spec = parse_preprocessing(text).spec()
    made_with = copy_spec(data_dir)
    if made_with is None or spec in (NO_PREPROCESSING, made_with):
        return made_with or spec
    raise ValueError(
        f"{data_dir} is an offline copy preprocessed with {made_with}; --preprocess {text} would "
        "preprocess its images a second time: drop --preprocess, or train on the source folder "
        "with --preprocess"
    )


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def _check_minimum(name: str, value: Any, lowest: float, inclusive: bool) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name}={value!r} is not a number")
    if value < lowest or (value == lowest and not inclusive):
        bound = f">= {lowest}" if inclusive else f"> {lowest}"
        raise ConfigError(f"{name}={value!r} must be {bound}")


def _tri_state(value: str | bool, gpu_visible: bool) -> bool:
    """"auto" -> on only on GPU; "on"/"off" -> True/False; booleans (already resolved) kept."""
    if isinstance(value, bool):
        return value
    return {"auto": gpu_visible, "on": True, "off": False}[value]


def _gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


# Full-run settings per dataset (paper-style two-stage fine-tuning from ImageNet).
PRESETS: dict[str, TrainConfig] = {
    "ham10000": TrainConfig(dataset="ham10000", weights="imagenet", stage1_epochs=5,
                            stage2_epochs=25, batch_size=32, augment="online",
                            imbalance="class_weight"),
    "isic2019": TrainConfig(dataset="isic2019", weights="imagenet", stage1_epochs=5,
                            stage2_epochs=30, batch_size=32, augment="online",
                            imbalance="class_weight"),
    "synthetic": TrainConfig(dataset="synthetic", weights=None, epochs=8, learning_rate=1e-3,
                             batch_size=32, augment="none", imbalance="class_weight",
                             synthetic_images=600, patience=0),
}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A dataset preset with field overrides, e.g. preset("ham10000", backbone="vgg16")."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def smoke_config(backbone: str = "mobilenetv2", **overrides: Any) -> TrainConfig:
    """SMOKE preset: synthetic data, the backbone's minimum image size, 1 epoch from scratch,
    eager execution (tracing a deep backbone costs more than a tiny epoch) - checks the code
    path, not a result."""
    values: dict[str, Any] = dict(
        dataset="synthetic", data_dir=None, backbone=backbone, image_size=None, weights=None,
        epochs=1, stage1_epochs=1, stage2_epochs=1, batch_size=32, synthetic_images=200,
        augment="online", imbalance="class_weight", patience=0, smoke=True, run_eagerly=True,
    )
    values.update(overrides)
    return TrainConfig(**values)

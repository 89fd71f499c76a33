"""What a training run reads: the dataset table, the split manifest (optionally offline-balanced)
and the tf.data pipelines of each split.

Flow: dataset folder (utils.data.location) -> TABLE (utils.data.readers) -> lesion-grouped split
or a given manifest (utils.data.splits / manifest) -> augment mode (utils.augmentation.modes:
offline balancing of the training split, online transforms) -> tf.data (utils.training.pipeline).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from utils import paths
from utils.augmentation import modes
from utils.data import datasets, location
from utils.data.manifest import augmented_mask, check_manifest, load_manifest
from utils.training.config import TrainConfig


def dataset_info(config: TrainConfig) -> datasets.DatasetInfo:
    """Class facts of the configured dataset (the synthetic default has the HAM10000 classes)."""
    return datasets.ISIC2019 if config.dataset in ("isic2019", "synthetic_isic2019") \
        else datasets.HAM10000


def data_dir(config: TrainConfig) -> Path:
    """The dataset folder of a config; data_dir=None generates the synthetic default once."""
    layout = "isic2019" if config.dataset in ("isic2019", "synthetic_isic2019") else "ham10000"
    return location.dataset_folder(config.data_dir, layout, config.synthetic_images, config.seed)


def load_table(config: TrainConfig) -> pd.DataFrame:
    """The dataset TABLE (read_table of the data folder), a seeded subset when configured."""
    from utils.data import readers

    table = readers.read_table(data_dir(config))
    if config.subset is not None and config.subset < len(table):
        table = table.sample(n=config.subset, random_state=config.seed).sort_index()
    return table


def build_manifest(config: TrainConfig) -> pd.DataFrame:
    """The split manifest: a given manifest CSV, else lesion_split of the table; then the
    offline-balanced manifest when the augment mode is offline/both."""
    from utils.data import splits

    if config.manifest is not None:
        manifest = load_manifest(config.manifest)
    else:
        manifest = splits.lesion_split(load_table(config), fractions=config.split_fractions,
                                       seed=config.seed)
    if modes.uses_offline(config.augment) and not augmented_mask(manifest).any():
        manifest = offline_balance(manifest, config)
    manifest = modes.training_rows(config.augment, manifest)
    check_manifest(manifest, config.manifest or "split manifest", required_splits=("train", "val"))
    return manifest


def offline_balance(manifest: pd.DataFrame, config: TrainConfig) -> pd.DataFrame:
    """Augment the training split offline up to the balance target (utils.augmentation.balance);
    the output folder under data/processed/balanced/ is keyed by the training images (ids and
    paths), size and seed."""
    from utils.augmentation import balance

    train = manifest.loc[manifest["split"] == "train"]
    # keyed by ids and paths: a regenerated dataset (same ids, new folder) gets new copies
    train_files = sorted(train["image_id"].astype(str) + "\t" + train["path"].astype(str))
    key = hashlib.sha256("\n".join(train_files).encode()).hexdigest()[:12]
    out_dir = (paths.processed_dir() / "balanced" /
               f"{config.dataset}-{config.image_size}px-seed{config.seed}-{key}")
    return balance.balance_manifest(manifest, out_dir, target=config.balance_target,
                                    seed=config.seed, image_size=config.image_size)


def online_augment(config: TrainConfig) -> Any:
    """The per-image augmentation callable of the configured mode (None without online)."""
    if not modes.uses_online(config.augment):
        return None
    from utils.augmentation import transforms

    return transforms.online_augment_fn(transforms.AugmentConfig(), seed=config.seed)


def pipeline_preprocess(config: TrainConfig) -> str | None:
    """The preprocessing the input pipeline applies to the run's images: config.preprocess, or
    None where there is none or the data folder is an offline copy made with it (its images are
    preprocessed already; utils.augmentation.preprocess_dataset)."""
    from utils.augmentation.preprocess import parse_preprocessing
    from utils.augmentation.preprocess_dataset import copy_spec

    steps = parse_preprocessing(config.preprocess)
    if not steps or copy_spec(config.data_dir) == steps.spec():
        return None
    return steps.spec()


def make_datasets(manifest: pd.DataFrame, config: TrainConfig, num_classes: int) -> dict:
    """train/val/test tf.data pipelines and the training steps per epoch."""
    from utils.training import mixing, pipeline

    if not config.cache:  # every split at once: one error lists every bad file
        pipeline.require_images(manifest)
    common = dict(image_size=config.image_size, batch_size=config.batch_size,
                  num_classes=num_classes, seed=config.seed, resize_policy=config.resize_policy,
                  cache=config.cache, deterministic=config.deterministic,
                  check_images=config.cache,  # with a cache: per split, unless cached already
                  preprocess=pipeline_preprocess(config))
    train_rows = manifest[manifest["split"] == "train"]
    result = {
        "train": pipeline.make_dataset(train_rows, training=True, augment=online_augment(config),
                                       balanced=config.imbalance == "sampling", **common),
        "steps": pipeline.steps_for(len(train_rows), config.batch_size),
    }
    if config.steps_per_epoch:  # a fixed number of steps per epoch: an endless stream
        result["steps"] = config.steps_per_epoch
        result["train"] = result["train"].repeat()
    if mixing.mixes(config):  # soft labels: class weights travel as sample weights
        result["train"] = mixing.mix_batches(result["train"], config.mixup_alpha,
                                             config.cutmix_alpha, config.mix_prob, config.seed)
        if config.imbalance == "class_weight":
            result["train"] = mixing.add_class_weights(result["train"], pipeline.class_weights(
                train_rows["label_index"], num_classes))
            result["sample_weighted"] = True
    for split in ("val", "test"):
        rows = manifest[manifest["split"] == split]
        result[split] = pipeline.make_dataset(rows, training=False, **common) if len(rows) else None
    return result

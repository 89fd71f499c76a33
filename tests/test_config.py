"""utils.training.config: validation, presets, smoke preset, JSON round trip, resolve() from the
registry."""
from __future__ import annotations

import dataclasses

import pytest

from utils.training import backbones
from utils.training.config import PRESETS, TrainConfig, preset, smoke_config


def test_json_round_trip_every_preset(tmp_path):
    for name, config in PRESETS.items():
        assert TrainConfig.from_json(config.to_json()) == config, name
        path = config.save(tmp_path / f"{name}.json")
        assert TrainConfig.load(path) == config
    resolved = preset("ham10000", backbone="densenet121").resolve(gpu_visible=False)
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved


def test_every_field_has_a_comment():
    import inspect

    from utils.training import config as module

    lines = inspect.getsource(module.TrainConfig).splitlines()
    for item in dataclasses.fields(TrainConfig):
        line = next(text for text in lines if text.strip().startswith(f"{item.name}:"))
        assert "#" in line, f"field {item.name} has no comment"


def test_resolve_fills_registry_defaults_and_hardware_flags():
    config = TrainConfig(backbone="inceptionv3").resolve(gpu_visible=False)
    spec = backbones.get_backbone("InceptionV3")
    assert config.backbone == spec.name and config.image_size == spec.default_size
    assert config.mixed_precision is False and config.jit_compile is False  # never XLA on CPU
    on_gpu = TrainConfig().resolve(gpu_visible=True)
    assert on_gpu.mixed_precision is True and on_gpu.jit_compile is True
    assert TrainConfig(weights=None).resolve(False).bn_momentum == 0.9
    assert TrainConfig(weights="imagenet").resolve(False).bn_momentum is None
    assert TrainConfig(jit_compile="off").resolve(gpu_visible=True).jit_compile is False


def test_smoke_preset_is_tiny_and_respects_backbone_minimum():
    smoke = smoke_config("mobilenetv2").resolve(gpu_visible=False)
    assert (smoke.image_size, smoke.epochs, smoke.weights, smoke.dataset, smoke.data_dir) == (
        32, 1, None, "synthetic", None)  # MobileNetV2's minimum
    assert smoke.run_eagerly and not smoke.jit_compile
    assert smoke_config("InceptionV3").resolve(False).image_size == 75


def test_bad_values_raise_clear_errors():
    with pytest.raises(ValueError, match="augment='sideways' is not one of"):
        TrainConfig(augment="sideways")
    with pytest.raises(ValueError, match="split_fractions"):
        TrainConfig(split_fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({"learning_rat": 0.1})
    with pytest.raises(ValueError, match="below InceptionV3's minimum of 75"):
        TrainConfig(backbone="InceptionV3", image_size=64).resolve(False)
    with pytest.raises(ValueError, match="valid backbones"):
        TrainConfig(backbone="resnet9000").resolve(False)
    with pytest.raises(ValueError, match="unknown preset"):
        preset("mnist")


def test_total_epochs_by_training_mode():
    assert TrainConfig(weights=None, epochs=7).total_epochs == 7
    assert TrainConfig(weights="imagenet", stage1_epochs=2, stage2_epochs=3).total_epochs == 5


def test_preprocess_field_is_checked_and_resolved_to_every_setting():
    from utils.augmentation.preprocess import parse_preprocessing

    with pytest.raises(ValueError, match="unknown preprocessing step"):
        TrainConfig(preprocess="colour,sharpen")
    resolved = TrainConfig(weights=None, preprocess="hair,colour").resolve(gpu_visible=False)
    assert resolved.preprocess == parse_preprocessing("colour,hair").spec()
    assert resolved.preprocess.startswith("hair:kernel_size=")  # every setting, in run order
    assert TrainConfig.from_json(resolved.to_json()) == resolved
    assert TrainConfig().resolve(gpu_visible=False).preprocess == "none"

"""utils.training.averaging: EMA and SWA of all model weights (BatchNorm statistics included),
swapped in at epoch ends for validation and checkpoints, swapped out to keep training, saved
for resume."""
from __future__ import annotations

import numpy as np
import pytest

from utils.training import averaging
from utils.training.config import TrainConfig


def _model():
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(5)(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    model.compile("adam", "categorical_crossentropy")
    return model


def _data():
    import keras

    rng = np.random.default_rng(0)
    return rng.normal(size=(24, 4)).astype("float32"), keras.utils.to_categorical(
        np.arange(24) % 2, 2)


class _Recorder:
    """Weights after every step and at every epoch end (as validation would see them)."""

    def __new__(cls):
        import keras

        class Recorder(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.steps, self.epoch_ends = [], []

            def on_train_batch_end(self, batch, logs=None):
                self.steps.append([w.numpy().copy() for w in self.model.weights])

            def on_epoch_end(self, epoch, logs=None):
                self.epoch_ends.append([w.numpy().copy() for w in self.model.weights])

        return Recorder()


def test_ema_of_every_weight_is_swapped_in_at_epoch_end_and_out_after(tmp_path):
    model, (x, y) = _model(), _data()
    initial = [w.numpy().copy() for w in model.weights]
    state = tmp_path / "average.npz"
    average = averaging.make_callback(TrainConfig(weight_average="ema", ema_decay=0.9), state,
                                      0, 2)
    before, after = _Recorder(), _Recorder()  # trained weights / what later callbacks see
    model.fit(x, y, batch_size=6, epochs=2, verbose=0, shuffle=False,
              callbacks=[before, average, after])
    expected = [w.copy() for w in initial]
    for step, weights in enumerate(before.steps):
        decay = averaging.ema_decay(0.9, step)
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
        if step == 3:  # end of epoch 0: the callbacks after it see the average
            for seen, wanted in zip(after.epoch_ends[0], expected):
                np.testing.assert_allclose(seen, wanted, rtol=1e-5, atol=1e-6)
    for seen, wanted in zip(after.epoch_ends[1], expected):
        np.testing.assert_allclose(seen, wanted, rtol=1e-5, atol=1e-6)
    # moving statistics of BatchNorm are averaged too
    names = [w.path for w in model.weights]
    assert any("moving_mean" in n for n in names)
    # epoch 1 trained on from the trained weights, not from the average
    assert not np.allclose(before.steps[4][0], after.epoch_ends[0][0])
    # the average is saved for resume, with its update count
    with np.load(state) as saved:
        assert int(saved["updates"]) == 8
        np.testing.assert_allclose(saved["w0"], expected[0], rtol=1e-5, atol=1e-6)


def test_swa_is_the_mean_of_epoch_end_weights_from_its_start(tmp_path):
    model, (x, y) = _model(), _data()
    config = TrainConfig(weight_average="swa", swa_start=0.5)
    assert averaging.swa_start_epoch(config, 0, 4) == 2
    average = averaging.make_callback(config, tmp_path / "swa.npz", 0, 4)
    before, after = _Recorder(), _Recorder()

    model.fit(x, y, batch_size=6, epochs=4, verbose=0, shuffle=False,
              callbacks=[before, average, after])
    trained_ends = [before.steps[4 * e + 3] for e in range(4)]
    for seen, trained in zip(after.epoch_ends[1], trained_ends[1]):  # before SWA starts
        np.testing.assert_allclose(seen, trained, rtol=1e-6)
    wanted = [(a + b) / 2 for a, b in zip(trained_ends[2], trained_ends[3])]
    for seen, mean in zip(after.epoch_ends[3], wanted):
        np.testing.assert_allclose(seen, mean, rtol=1e-5, atol=1e-6)


def test_no_averaging_means_no_callback_and_decay_warms_up():
    assert averaging.make_callback(TrainConfig(), None, 0, 3) is None
    assert averaging.ema_decay(0.999, 0) == pytest.approx(0.1)
    assert averaging.ema_decay(0.999, 10_000) == 0.999

"""utils.training.optim: the cosine schedule with warm-up (set per step by a callback, so the
traced model does not depend on the number of epochs), optimisers, loss, optimiser reset."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utils.training import optim
from utils.training.config import TrainConfig


@settings(max_examples=60, deadline=None, derandomize=True)
@given(total=st.integers(2, 5000), warmup_share=st.floats(0.0, 0.5), base=st.floats(1e-5, 1.0))
def test_cosine_rate_warms_up_then_decays_to_zero(total, warmup_share, base):
    warmup = int(total * warmup_share)
    rates = [optim.cosine_rate(step, base, total, warmup) for step in range(total + 1)]
    assert max(rates) <= base * (1 + 1e-9)
    if warmup:
        assert rates[0] == pytest.approx(base / 100)
        assert all(a <= b + 1e-12 for a, b in zip(rates[:warmup], rates[1:warmup + 1]))
    assert rates[warmup] == pytest.approx(base)  # the peak, where the decay starts
    after = rates[warmup:]
    assert all(a >= b - 1e-12 for a, b in zip(after, after[1:]))  # never rises again
    assert rates[-1] == pytest.approx(0.0, abs=1e-12)
    middle = warmup + (total - warmup) // 2
    if (total - warmup) % 2 == 0:
        assert rates[middle] == pytest.approx(base / 2)
    assert not any(math.isnan(r) for r in rates)


def test_callback_sets_the_rate_per_step_and_optimisers_follow_the_config():
    import keras

    config = TrainConfig(lr_schedule="cosine", warmup_epochs=1.0, optimizer="adamw",
                         weight_decay=0.05, label_smoothing=0.1)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    optimizer = optim.make_optimizer(config, 0.01)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.05
    assert isinstance(optim.make_optimizer(TrainConfig(), 0.01), keras.optimizers.Adam)
    assert optim.make_loss(config).get_config()["label_smoothing"] == 0.1
    model.compile(optimizer=optimizer, loss=optim.make_loss(config))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate.numpy()))

    x = np.zeros((16, 3), "float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0,
              callbacks=[optim.cosine_callback(0.01, config, stage_epochs=2), Record()])
    expected = [optim.cosine_rate(step, 0.01, 8, 4) for step in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    optim.reset_optimizer(model.optimizer)
    assert int(model.optimizer.iterations.numpy()) == 0
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(seen[-1])
    assert all(not np.any(v.numpy()) for v in model.optimizer.variables
               if "learning_rate" not in v.name)


def test_a_deadline_moves_the_cosine_on_with_the_wall_clock(monkeypatch):
    """A budgeted run slower than measured: the rate follows the share of the wall clock used,
    so it is near 0 when the deadline callback stops training, not stuck mid-cosine."""
    import time

    import keras

    clock = {"now": 1000.0}
    monkeypatch.setattr(time, "time", lambda: clock["now"])
    config = TrainConfig(lr_schedule="cosine", warmup_epochs=0.0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optim.make_optimizer(config, 0.01), loss="categorical_crossentropy")
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(self.model.optimizer.learning_rate.numpy()))
            clock["now"] += 10.0  # every step takes 10 s; the deadline is 40 s away

    x = np.zeros((16, 3), "float32")
    y = keras.utils.to_categorical(np.arange(16) % 2, 2)
    schedule = optim.cosine_callback(0.01, config, stage_epochs=10, deadline=1040.0)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[schedule, Record()])
    # 40 planned steps by count, but after 3 steps 30 of the 40 s are spent
    expected = [optim.cosine_rate(step, 0.01, 40, 0) for step in (0, 10, 20, 30)]
    np.testing.assert_allclose(seen, expected, rtol=1e-6)
    assert seen[-1] < 0.0015  # vs 0.0098 by the step count alone
    without = optim.cosine_callback(0.01, config, stage_epochs=10)
    seen.clear()
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[without, Record()])
    assert seen[0] == pytest.approx(optim.cosine_rate(4, 0.01, 40, 0))  # by step count only

"""Profile steps 1-3 of a Keras `model.fit()` with memprofile's callback.

    python examples/integrations/keras_fit.py --out profiles/

A small functional model on random arrays: it runs on a CPU in seconds.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up lines

import keras
import numpy as np

from memprofile.integrations.keras import MemprofileCallback


def build_model(steps_per_execution: int = 1) -> keras.Model:
    inputs = keras.Input((64,), name="features")
    hidden = keras.layers.Dense(512, activation="relu", name="encoder_1")(inputs)
    hidden = keras.layers.Dense(512, activation="relu", name="encoder_2")(hidden)
    outputs = keras.layers.Dense(1, name="head")(hidden)
    model = keras.Model(inputs, outputs, name="regressor")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", steps_per_execution=steps_per_execution)
    return model


def main(argv: list[str] | None = None) -> keras.Model:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder (or .json.gz / .html file) for the profile")
    parser.add_argument("--steps", default="1-3", help="the training steps (batches) to profile, e.g. 1-3")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-execution", type=int, default=1, help="fit's steps per tf.function call")
    parser.add_argument("--run-eagerly", action="store_true", help="fit's steps as eager code, not a tf.function")
    parser.add_argument("--bare", action="store_true", help="train without the callback")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 64)).astype("float32")
    y = rng.standard_normal((256, 1)).astype("float32")
    model = build_model(args.steps_per_execution)
    model.run_eagerly = args.run_eagerly

    memory = MemprofileCallback(steps=args.steps, out=args.out)
    model.fit(
        x, y, batch_size=32, epochs=args.epochs, shuffle=False, verbose=0, callbacks=[] if args.bare else [memory]
    )

    if memory.profile is not None:
        p = memory.profile
        print(f"peak {p.peak_bytes} B; steps {p.capture['steps']}; largest layers: {list(p.peak.by_layer)[:3]}")
    return model


if __name__ == "__main__":
    main()

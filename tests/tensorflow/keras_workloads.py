"""Keras notebooks the Keras rules were not written on (issue 29): a
functional ResNet, a custom `GradientTape` loop, a `tf.data` pipeline, and a
model fitted on a whole dataset held as one NumPy array. Same shape as
tests/fixes/workloads.py: `setup` runs once unprofiled (it builds and
compiles), `cell` is the cell the user profiles."""

from __future__ import annotations

from tests.fixes.workloads import Workload

COMMON = """\
import numpy as np, tensorflow as tf, keras
from keras import layers
keras.utils.set_random_seed(3)
"""

RESNET = Workload(
    name="keras_resnet",
    label="functional ResNet (3 residual stages, 32-128 ch, BatchNorm), 32x32x3, batch 64, Adam, fit",
    setup=COMMON
    + """\
def residual(h, filters, stride):
    skip = h if stride == 1 and h.shape[-1] == filters else layers.Conv2D(filters, 1, strides=stride)(h)
    h = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    h = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(h))
    return layers.ReLU()(layers.Add()([h, skip]))


pixels = keras.Input((32, 32, 3))
h = layers.Conv2D(32, 3, padding="same")(pixels)
for filters, stride in ((32, 1), (64, 2), (128, 2)):
    h = residual(h, filters, stride)
h = layers.Dense(512, activation="relu")(layers.GlobalAveragePooling2D()(h))
resnet = keras.Model(pixels, layers.Dense(100)(h), name="resnet")
resnet.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
photos = np.random.rand(256, 32, 32, 3).astype("float32")
kinds = np.random.randint(0, 100, 256)
""",
    cell="resnet.fit(photos, kinds, batch_size=64, epochs=1, verbose=0);\n",
)

TAPE_LOOP = Workload(
    name="keras_tape_loop",
    label="custom GradientTape loop: MLP 784-2048-2048-10, batch 128, Adam, 4 steps",
    setup=COMMON
    + """\
scorer = keras.Sequential([keras.Input((784,)), layers.Dense(2048, activation="relu"),
                           layers.Dense(2048, activation="relu"), layers.Dense(10)], name="scorer")
adam = keras.optimizers.Adam(1e-3)
xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
digits = tf.random.uniform((512, 784))
digit_labels = tf.random.uniform((512,), maxval=10, dtype=tf.int32)
""",
    cell="""\
for i in range(4):
    xb, yb = digits[i * 128:(i + 1) * 128], digit_labels[i * 128:(i + 1) * 128]
    with tf.GradientTape() as tape:
        loss = xent(yb, scorer(xb, training=True))
    grads = tape.gradient(loss, scorer.trainable_variables)
    adam.apply_gradients(zip(grads, scorer.trainable_variables))
""",
)

PIPELINE = Workload(
    name="keras_tf_data",
    label="tf.data pipeline (map + shuffle + batch 256 + prefetch) into a Dense classifier, AdamW, fit",
    setup=COMMON
    + """\
features = np.random.rand(4096, 1024).astype("float32")
targets = np.random.randint(0, 20, 4096)
def augment(x, y):
    return x + tf.random.normal(tf.shape(x), stddev=0.01), y
pipeline = (tf.data.Dataset.from_tensor_slices((features, targets)).map(augment)
            .shuffle(1024, seed=1).batch(256).prefetch(2))
tabular = keras.Sequential([keras.Input((1024,)), layers.Dense(1024, activation="gelu"),
                            layers.Dropout(0.1), layers.Dense(1024, activation="gelu"), layers.Dense(20)],
                           name="tabular")
tabular.compile(optimizer=keras.optimizers.AdamW(1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    cell="tabular.fit(pipeline, epochs=1, verbose=0);\n",
)

# A whole dataset in one NumPy array, fitted in batches: the stream_dataset case.
IN_MEMORY = Workload(
    name="keras_in_memory",
    label="24,000 x 2,048 float32 rows (188 MiB) held in memory, fit in batches of 128 (Dense classifier, Adam)",
    setup=COMMON
    + """\
rows = np.random.rand(24000, 2048).astype("float32")
row_labels = np.random.randint(0, 10, 24000)
ranker = keras.Sequential([keras.Input((2048,)), layers.Dense(512, activation="relu"), layers.Dense(10)], name="ranker")
ranker.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
""",
    cell="ranker.fit(rows, row_labels, batch_size=128, epochs=1, verbose=0);\n",
)

KERAS_WORKLOADS = (RESNET, TAPE_LOOP, PIPELINE)
BY_NAME = {w.name: w for w in (*KERAS_WORKLOADS, IN_MEMORY)}

# tests/tensorflow/test_rules.py's nested blocks (3 x Dense 256-1024-256), fit on 2,048 rows in batches of 512.
BLOCKS = Workload(
    name="keras_blocks",
    label="3 nested blocks (Dense 256-1024-256, gelu), batch 512, Adam, fit",
    setup=COMMON
    + """\
inp = keras.Input((256,))
h = inp
for i in range(3):
    block = [layers.Dense(1024, activation="gelu"), layers.Dense(256, activation="gelu")]
    h = keras.Sequential(block, name=f"block{i}")(h)
blocks = keras.Model(inp, layers.Dense(1, name="head")(h))
blocks.compile("adam", "mse")
block_x = np.random.rand(2048, 256).astype("float32")
""",
    cell="blocks.fit(block_x, block_x[:, :1], batch_size=512, verbose=0);\n",
)
BY_NAME[BLOCKS.name] = BLOCKS

# A wide MLP on a large batch: Adam's slots a quarter of the peak, which is in the backward.
WIDE = Workload(
    name="keras_wide",
    label="MLP 1024-2048-2048-2048-10 (gelu), batch 2048, Adam, fit: the peak in the backward",
    setup=COMMON
    + """\
wide = keras.Sequential([keras.Input((1024,)), layers.Dense(2048, activation="gelu"),
                         layers.Dense(2048, activation="gelu"), layers.Dense(2048, activation="gelu"),
                         layers.Dense(10)], name="wide")
wide.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
wide_x = np.random.rand(4096, 1024).astype("float32")
wide_y = np.random.randint(0, 10, 4096)
""",
    cell="wide.fit(wide_x, wide_y, batch_size=2048, verbose=0);\n",
)
BY_NAME[WIDE.name] = WIDE

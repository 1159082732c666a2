"""Mixed precision for Keras: the global dtype policy, which layers take when
they are created (the amp rule's TensorFlow branch)."""

from __future__ import annotations

from memprofile.analysis.rules.facts import Facts
from memprofile.model.profile import Suggestion


def keras_suggestion(f: Facts, evidence: str, saving: int) -> Suggestion:
    return Suggestion(
        id="amp", title="Keep activations in 16 bits (Keras mixed precision)", evidence=evidence,
        code=('import keras\n\n# Before the model is built (layers take the policy when they are created):\n'
              'keras.mixed_precision.set_global_policy("mixed_float16")  # "mixed_bfloat16" on CPUs and TPUs'),
        estimated_saving_bytes=saving,
    )

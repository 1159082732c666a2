"""The what-if engine's sentence after a rule's evidence starts a sentence: the gallery read
"...each changes training Estimated by re-executing..." (optimizer_state, gradient_checkpointing
end their evidence without a full stop)."""

from memprofile.whatif.estimate import _then


def test_the_engines_sentence_follows_a_full_stop():
    said = " Estimated by re-executing the cell."
    assert _then("Adam keeps 2 states; each changes training", said) == (
        "Adam keeps 2 states; each changes training. Estimated by re-executing the cell."
    )
    assert _then("kept for backward.", said) == "kept for backward. Estimated by re-executing the cell."
    assert _then("(3 blocks)", said) == "(3 blocks) Estimated by re-executing the cell."
    assert _then("", said) == said

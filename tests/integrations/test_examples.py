"""The integrations' examples (examples/integrations/*.py), run in a fresh process
each: a real training script on a CPU with its framework's tiny model and the
callback on a window of steps. Each checks the profile the script wrote (the steps
asked for, in detail, a peak, the model's layers by name with their parameters) and
that the callback changed nothing: the example's main() without it, in the same
process, ends with the same losses and bit-identical weights. Then a 2-rank torchrun
job of the Hugging Face example, run as a user runs it, writes one profile per rank,
and `memprofile merge` reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memprofile

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).parents[2] / "examples" / "integrations"
BIN = Path(sys.executable).parent
#: A framework's import and a few steps take seconds; generous for a loaded 2-core machine.
TIMEOUT_S = 240


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["USE_TF"] = "0"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TF_CONFIG"):
        env.pop(name, None)  # whatever launched the tests, the job is the test's own
    for name in [n for n in env if n.startswith(("OMPI_COMM_WORLD_", "PMI_", "SLURM_"))]:
        env.pop(name)  # (these name a rank too: capture/distributed.py)
    return env


def _start(command: list[str], cwd: Path, **extra_env: str) -> subprocess.Popen:
    env = {**_env(), **extra_env}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> str:
    out, _ = process.communicate(timeout=TIMEOUT_S)
    assert process.returncode == 0, out[-4000:]
    return out


#: What a run ended with, per example: its losses and a digest of its weights (bit for bit).
SUMMARIES = {
    "huggingface_trainer": (
        "[h['loss'] for h in run.state.log_history if 'loss' in h]",
        "b''.join(t.detach().numpy().tobytes() for t in run.model.state_dict().values())",
    ),
    "lightning_fit": (
        "float(run.callback_metrics['loss'])",
        "b''.join(t.detach().numpy().tobytes() for t in run.lightning_module.state_dict().values())",
    ),
    "keras_fit": ("run.history.history['loss']", "b''.join(w.tobytes() for w in run.get_weights())"),
}


def _profiled_and_bare(tmp_path: Path, script: str, *options: str) -> tuple[memprofile.Profile, str]:
    """Run the example's main() without the callback, then with it (out="profiles"), in one
    process (one framework import): (the profile written, the output); the two runs must
    end alike: the callback is transparent."""
    module = script.removesuffix(".py")
    losses, weights = SUMMARIES[module]
    driver = (
        "import hashlib, json, sys\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        f"sys.argv = [{str(EXAMPLES / script)!r}]  # as `python {script}` runs: the profile's name is the script's\n"
        f"import {module} as example\n"
        "def summary(run):\n"
        f"    return {{'loss': {losses}, 'weights': hashlib.sha256({weights}).hexdigest()}}\n"
        f"bare = summary(example.main([*{list(options)!r}, '--bare']))\n"
        f"profiled = summary(example.main([*{list(options)!r}, '--out', 'profiles']))\n"
        "print('RESULTS', json.dumps([bare, profiled]))\n"
    )
    out = _finish(_start([sys.executable, "-c", driver], tmp_path))
    bare, profiled = json.loads(out.split("RESULTS ", 1)[1].splitlines()[0])
    assert profiled == bare  # the same losses, the same weights to the bit
    (written,) = (tmp_path / "profiles").iterdir()
    assert written.name == f"{module}.memprofile.json.gz"
    return memprofile.load(written), out


def _check(profile: memprofile.Profile, steps: str, count: int, layers: set[str]) -> None:
    assert profile.capture["steps"] == steps
    assert len(profile.steps) == count and all(s.detailed for s in profile.steps)
    assert profile.peak_bytes > 0 and profile.error is None and profile.distributed is None
    named = {layer.name for layer in profile.layers}
    assert layers <= named, f"layers {sorted(layers - named)} not in {sorted(named)}"
    assert all(next(x for x in profile.layers if x.name == name).parameter_bytes > 0 for name in layers)


def test_the_hugging_face_trainer_example(tmp_path):
    # GIVEN a Trainer run of 5 steps of a tiny BERT, with MemprofileCallback(steps="1-3", out="profiles")
    # WHEN it runs, and runs again without the callback
    profile, out = _profiled_and_bare(tmp_path, "huggingface_trainer.py")
    # THEN the profile holds steps 1-3 in detail, named by BERT's modules, and said where it went
    _check(profile, "1-3", 3, {"bert.embeddings.word_embeddings", "classifier"})
    assert any(name.startswith("bert.encoder.") for name in profile.peak.by_layer)
    assert "memprofile: steps 1-3: 'huggingface_trainer': peak" in out and "profiles/huggingface_trainer" in out


def test_the_lightning_example(tmp_path):
    # GIVEN a Lightning fit of 5 steps of an MLP, the callback on steps 2-4
    # WHEN it runs, and runs again without the callback
    profile, _ = _profiled_and_bare(tmp_path, "lightning_fit.py", "--steps", "2-4")
    # THEN the profile holds steps 2-4, with the module's layers and its AdamW state
    _check(profile, "2-4", 3, {"encoder.0", "encoder.2", "head"})
    assert profile.peak.by_category.get("optimizer_state", 0) > 0


def test_the_keras_example(tmp_path):
    # GIVEN a Keras fit of 2 epochs of 8 steps, its steps run in a tf.function, the callback on steps 7-10
    # (across the epochs' boundary) WHEN it runs, and runs again without the callback
    profile, _ = _profiled_and_bare(tmp_path, "keras_fit.py", "--steps", "7-10")
    # THEN the profile holds those 4 traced steps, with every Dense layer's exact parameters
    _check(profile, "7-10", 4, {"encoder_1", "encoder_2", "head"})
    params = {layer.name: layer.parameter_bytes for layer in profile.layers}
    assert params["encoder_1"] == (64 * 512 + 512) * 4 and params["encoder_2"] == (512 * 512 + 512) * 4


@pytest.mark.parametrize(
    "options, steps, count",
    [
        # fit's steps as eager code: each eager optimizer apply ends a step, which the profile counts itself
        (["--run-eagerly", "--steps", "1-3"], "1-3", 3),
        # 4 steps per tf.function call, which Keras reports to callbacks as one: steps 7-10 round out to the
        # executions of steps 5-8 and 9-12, the profile's two steps
        (["--steps-per-execution", "4", "--steps", "7-10"], "5-12", 2),
    ],
    ids=["run_eagerly", "steps_per_execution"],
)
def test_the_keras_example_in_other_shapes_of_fit(tmp_path, options, steps, count):
    # GIVEN the Keras example's fit in another shape, the callback writing one file
    # WHEN it runs
    example = str(EXAMPLES / "keras_fit.py")
    _finish(_start([sys.executable, example, *options, "--out", "p.json.gz"], tmp_path))
    # THEN the profile holds the window's steps, each once, on the model's layers
    _check(memprofile.load(tmp_path / "p.json.gz"), steps, count, {"encoder_1", "encoder_2", "head"})


def test_a_trainer_that_raises_in_the_window_writes_its_profile(tmp_path):
    # GIVEN a Trainer script whose step 2 raises (out of memory, say), which the Trainer tells no callback
    script = tmp_path / "fails.py"
    script.write_text(
        "import runpy, sys\n"
        "from transformers import TrainerCallback\n"
        "import transformers\n"
        "class Fail(TrainerCallback):\n"
        "    def on_step_begin(self, args, state, control, **kw):\n"
        "        if state.global_step == 1:\n"
        "            raise MemoryError('out of memory in step 2')\n"
        "real = transformers.Trainer.__init__\n"
        "def init(self, *a, callbacks=None, **k):\n"
        "    real(self, *a, callbacks=[*(callbacks or []), Fail()], **k)\n"
        "transformers.Trainer.__init__ = init\n"
        f"sys.argv = ['huggingface_trainer.py', '--out', 'profiles']\n"
        f"runpy.run_path({str(EXAMPLES / 'huggingface_trainer.py')!r}, run_name='__main__')\n"
    )
    # WHEN it runs, and dies of it
    process = _start([sys.executable, str(script)], tmp_path)
    out, _ = process.communicate(timeout=TIMEOUT_S)
    # THEN it failed as it would bare, and the profile of steps 1-2 was written first, with the error
    assert process.returncode == 1 and "MemoryError: out of memory in step 2" in out
    profile = memprofile.load(tmp_path / "profiles" / "huggingface_trainer.memprofile.json.gz")
    assert profile.error is not None and profile.error.type == "MemoryError"
    assert profile.capture["steps"] == "1-2" and len(profile.steps) == 1


def test_a_torchrun_job_writes_one_profile_per_rank_that_merge_reads(tmp_path):
    # GIVEN the Hugging Face example under torchrun, 2 ranks (gloo, CPU), the callback writing to profiles/
    command = [
        str(BIN / "torchrun"),
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "localhost:0",
        "--rdzv-id",
        "integrations",
        str(EXAMPLES / "huggingface_trainer.py"),
        "--out",
        "profiles",
    ]
    # WHEN the job runs
    out = _finish(_start(command, tmp_path))
    # THEN each rank wrote its file, named as `memprofile run` names them, holding steps 1-3 of its rank
    files = sorted((tmp_path / "profiles").iterdir())
    assert [f.name for f in files] == [f"huggingface_trainer.rank{r}.memprofile.json.gz" for r in (0, 1)]
    for rank, path in enumerate(files):
        profile = memprofile.load(path)
        assert profile.distributed is not None and profile.distributed.rank == rank
        assert profile.distributed.world_size == 2 and profile.distributed.backend == "gloo"
        assert profile.capture["steps"] == "1-3" and len(profile.steps) == 3 and profile.peak_bytes > 0
    assert "memprofile: when every rank has finished: memprofile merge" in out
    # AND `memprofile merge` reads the folder: both ranks, the merged report written
    merged = subprocess.run(
        [str(BIN / "memprofile"), "merge", "profiles"], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert merged.returncode == 0, merged.stderr
    assert "2 of 2 ranks" in merged.stdout
    assert (tmp_path / "profiles" / "huggingface_trainer.merged.memprofile.html").is_file()


def test_a_lightning_fit_that_raises_in_the_window_writes_its_profile(tmp_path):
    # GIVEN the Lightning example whose training step 2 raises (out of memory, say): Lightning
    # tells its callbacks (on_exception) before the exception ends the script
    script = tmp_path / "fails.py"
    script.write_text(
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(EXAMPLES)!r})\n"
        "import lightning_fit\n"
        "step = lightning_fit.Regressor.training_step\n"
        "def failing(self, batch, batch_idx):\n"
        "    if self.trainer.global_step == 1:\n"
        "        raise MemoryError('out of memory in step 2')\n"
        "    return step(self, batch, batch_idx)\n"
        "lightning_fit.Regressor.training_step = failing\n"
        f"sys.argv = [{str(EXAMPLES / 'lightning_fit.py')!r}]\n"
        "lightning_fit.main(['--out', 'profiles'])\n"
    )
    # WHEN it runs, and dies of it
    process = _start([sys.executable, str(script)], tmp_path)
    out, _ = process.communicate(timeout=TIMEOUT_S)
    # THEN it failed as it would bare, and the profile of steps 1-2 was written first, with the error
    assert process.returncode == 1 and "MemoryError: out of memory in step 2" in out
    profile = memprofile.load(tmp_path / "profiles" / "lightning_fit.memprofile.json.gz")
    assert profile.error is not None and profile.error.type == "MemoryError"
    assert profile.capture["steps"] == "1-2" and len(profile.steps) == 1


def test_a_tf_multi_worker_task_writes_its_rank_file(tmp_path):
    # GIVEN the Keras example started as worker 1 of a 2-worker TF job (TF_CONFIG; the example
    # trains on its own, as a worker does before its strategy is built), the callback writing to a folder
    tf_config = json.dumps({"cluster": {"worker": ["w0:2222", "w1:2222"]}, "task": {"type": "worker", "index": 1}})
    example = str(EXAMPLES / "keras_fit.py")
    # WHEN it runs
    _finish(_start([sys.executable, example, "--steps", "1-2", "--out", "profiles"], tmp_path, TF_CONFIG=tf_config))
    # THEN the worker's profile is rank 1 of 2, named as `memprofile run` names a rank's
    files = sorted((tmp_path / "profiles").iterdir())
    assert [f.name for f in files] == ["keras_fit.rank1.memprofile.json.gz"], files
    info = memprofile.load(files[0]).distributed
    assert info is not None and (info.rank, info.world_size) == (1, 2)


SIGTERM_DRIVER = """\
import signal, sys, time
from pathlib import Path
{preamble}
sys.path.insert(0, {examples!r})
import keras, numpy as np
import keras_fit
from memprofile.integrations.keras import MemprofileCallback


class Started(keras.callbacks.Callback):  # the script's own: says the window runs, then trains slowly
    def on_train_batch_end(self, batch, logs=None):
        if batch == 3:
            Path("started").write_text("yes")
        time.sleep(0.01)


x, y = np.zeros((256, 64), "float32"), np.zeros((256, 1), "float32")
keras_fit.build_model().fit(x, y, batch_size=32, epochs=100_000, verbose=0,
                            callbacks=[MemprofileCallback(steps="2-100000000", out="profiles"), Started()])
"""


#: A script's own SIGTERM handler, set before fit: it still runs, after the profile is saved.
OWN_HANDLER = """
def on_term(signum, frame):
    Path("handled").write_text("yes")
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
"""


@pytest.mark.parametrize("preamble", ["", OWN_HANDLER], ids=["default", "own_handler"])
def test_sigterm_in_the_window_saves_the_profile_and_ends_the_process_as_bare(tmp_path, preamble):
    import signal
    import time

    # GIVEN a Keras fit whose window (steps 2 on) is still open, as a cluster's job is when preempted
    driver = SIGTERM_DRIVER.format(examples=str(EXAMPLES), preamble=preamble)
    process = _start([sys.executable, "-c", driver], tmp_path)
    deadline = time.monotonic() + TIMEOUT_S
    while not (tmp_path / "started").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[0][-3000:]
        time.sleep(0.1)
    # WHEN the scheduler sends SIGTERM
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=TIMEOUT_S)
    # THEN the process ends as it would bare (by the signal, or by the script's own handler), and
    # the profile of the steps run is saved
    if preamble:
        assert process.returncode == 3 and (tmp_path / "handled").read_text() == "yes", out[-3000:]
    else:
        assert process.returncode == -signal.SIGTERM, out[-3000:]
    (written,) = (tmp_path / "profiles").iterdir()
    profile = memprofile.load(written)
    assert profile.error is not None and profile.error.type == "Terminated", profile.error
    assert "SIGTERM" in profile.error.message
    assert profile.capture["steps"].startswith("2-") and len(profile.steps) >= 2
    assert {"encoder_1", "encoder_2", "head"} <= {layer.name for layer in profile.layers}

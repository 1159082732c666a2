"""One measurement of a Keras notebook in a fresh process (TF keeps what a
traced `fit` held, even after gc.collect(): runs must not share a process).

`python -m tests.tensorflow.keras_measure` reads a JSON request on stdin:
{"workload": name, "setup": code run before the setup (or null), "fix":
code run after the setup (or null), "cell": the cell to run (null: the
workload's), "profile": bool}. It runs the setup, the fix, the cell once
(the state both runs start from), then the cell again: profiled, it prints
the suggestions; else it prints TF's own counter's peak for that run
(reset_memory_stats before it). TF's default CPU allocator keeps no
counters: the caller sets TF_CPU_ALLOCATOR_USE_BFC=true (and
TF_ENABLE_ONEDNN_OPTS=0) so its counter is the truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ENV = {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}


def request(
    workload: str,
    *,
    fix: str | None = None,
    cell: str | None = None,
    profile: bool = False,
    cwd: str | None = None,
    timeout: int = 600,
) -> dict:
    """Run one measurement in a fresh Python process; its JSON answer."""
    env = {**os.environ, **ENV, "PYTHONPATH": os.getcwd() if cwd is None else os.environ.get("PYTHONPATH", "")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root
    out = subprocess.run(
        [sys.executable, "-m", "tests.tensorflow.keras_measure"],
        input=json.dumps({"workload": workload, "fix": fix, "cell": cell, "profile": profile}),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _main() -> None:
    ask = json.loads(sys.stdin.read())
    from tests.fixes import harness
    from tests.tensorflow.keras_workloads import BY_NAME

    w = BY_NAME[ask["workload"]]
    cell = ask["cell"] or w.cell
    ip = harness.shell()
    harness.run(ip, w.setup)
    if ask["fix"]:
        harness.run(ip, ask["fix"])
    harness.run(ip, cell)
    if ask["profile"]:
        p = harness.profile(ip, cell, w.name)
        found = [
            {"id": s.id, "estimate": s.estimated_saving_bytes, "code": s.code, "title": s.title, "evidence": s.evidence}
            for s in p.suggestions
        ]
        answer = {"peak": p.peak_bytes, "device": p.peak_device.name, "suggestions": found, "profile": p.to_json()}
    else:
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("CPU:0")
        harness.run(ip, cell)
        answer = {"counter_peak": int(tf.config.experimental.get_memory_info("CPU:0")["peak"])}
    print(json.dumps(answer))


if __name__ == "__main__":
    _main()

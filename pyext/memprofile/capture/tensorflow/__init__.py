"""TensorFlow/Keras: every allocation of TF's allocators, with its op, layer and kind.

How (see DESIGN.md, "What the frameworks give"):
- The TF profiler runs around the cell; its XSpace's MemoryAllocation and
  MemoryDeallocation events (xspace.py) give each block's size, op,
  shape and dtype, and the allocator's own counters. TF's default CPU
  allocator ("cpu", when oneDNN is off) records nothing unless its statistics
  are on: they are switched on for the run through TF's exported
  `tsl::EnableCPUAllocatorStats` and back off afterwards. That allocator
  cannot size its blocks (it reports 0), so sizes there are the requested
  bytes; the BFC and oneDNN allocators report the rounded size as well.
- Layers: inside `model.fit`/`tf.function` the op names carry Keras's name
  scopes ("mlp_1/hidden_a_1/MatMul", "gradient_tape/...", "adam/...",
  "compile_loss/..."). Eager layer calls have no scopes in their op names, so
  `keras.layers.Layer.__call__` is wrapped for the run to open a profiler
  scope (a TraceMe) per eager call.
- Categories: variables and slots are recognised by buffer address (DLPack)
  in the namespace at start and end, and followed through the copies TF makes
  when it writes a variable that someone still reads (the old buffer is the
  variable's until the copy is made) and through assigned values (moving
  statistics); gradients are backward outputs shaped like one of their layer's
  trainable variables, and an eager tape's are known by address; input
  pipeline ops, tf.data's buffers and TF's copies of NumPy arrays (no op, the
  array's size) give inputs; forward outputs freed after backward started are
  activations; "temp" regions and anything else freed within the run are
  temporaries.
- tf.data: a block made inside a tf.data iterator's GetNext belongs to the
  buffer that keeps it, named by its transformation and the line that built
  it: "tf.data cache (line 2: `ds = ds.cache()`)" (datasets.py).
- `tf.config.experimental.get_memory_info`/`reset_memory_stats` per device for
  the allocator's own current and peak; a device or allocator where they fail
  or stay at zero is reported as unsupported, not as zero.
- Training steps: for the run `keras.Model.fit` gets a callback whose batch
  hooks begin and end a step, and outside `fit` an eager optimizer `apply` (a
  custom training loop) ends one. TF's profiler records only the detail
  window's steps (DetailWindow): it stops at the end of the window's last step
  and, for a window that starts later, is started at its first step (what it
  saw before is dropped). Every step's peak and end bytes come from the
  allocator's counters, read and reset at each step's end, where they work
  (BFC and oneDNN on CPU, GPUs; not TF's default CPU allocator, which sizes no
  block): the run's peak is the highest of those readings and the one at the end.
- The user's own TF profiler comes first (TF allows one session): one running
  before the cell is left alone and the run has no detail; one the cell starts
  (tf.profiler.experimental.start or Profile, Keras's TensorBoard callback, a
  profiler server's capture) ends the detail just before, through its Python
  entries patched for the run (compat.profiler_starts). Either way the
  CPU allocator's statistics are off while theirs records, as bare, and a
  note says what the profile lacks.

The package, along that pipeline:
- collector.py       TensorFlowCollector: start/stop, the steps and the detail window
- session.py         TF's profiler session: trace folder, CPU allocator statistics, clock anchor
- users_profiler.py  the user's own TF profiler first: its starts patched, the notes
- step_hooks.py      how a step is seen: fit's callback, an eager optimizer apply
- scopes.py          eager Keras layer and GradientTape scopes (TraceMe)
- patching.py        what is replaced for the run, and put back
- counters.py        get_memory_info per device and step, the CPU allocator switch, oneDNN's notes
- budget.py          the thread that ends the detail before the budget
- xspace.py          the XSpace's memory events decoded
- events.py          the events walked into allocation logs and op records (live and saved traces)
- devices.py         each allocator as a device: name, capacity, baseline, counters' figures
- attribution.py     each allocation's layer, phase and kind
- keras_model.py     what the namespace's Keras objects own
- datasets.py        tf.data pipelines: each buffer's transformation and line
- trace.py           saved XSpace files (`memprofile import`) through the same walk
- facts.py           TF's out-of-memory messages and GPU settings
- compat.py          every private TF/Keras API the capture uses, with the versions it was checked on

Nothing here imports tensorflow until a collector starts.
"""

from __future__ import annotations

from memprofile.capture.tensorflow.attribution import SCOPE_PREFIX
from memprofile.capture.tensorflow.collector import TensorFlowCollector
from memprofile.capture.tensorflow.events import raw_from_xspace
from memprofile.capture.tensorflow.facts import gpu_facts, oom_facts
from memprofile.capture.tensorflow.session import ANCHOR, TRACE_DIR_PREFIX

__all__ = [
    "ANCHOR",
    "SCOPE_PREFIX",
    "TRACE_DIR_PREFIX",
    "TensorFlowCollector",
    "gpu_facts",
    "oom_facts",
    "raw_from_xspace",
]

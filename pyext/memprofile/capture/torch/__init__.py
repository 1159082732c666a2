"""PyTorch: every allocation of the c10 allocators, with its op, layer and kind.

How (see DESIGN.md, "What the frameworks give"):
- `torch.profiler` with `profile_memory=True` records each alloc/free with the
  op that made it. Its event tree (`kineto_results.experimental_event_tree()`,
  private, pinned by the torch range in pyproject) is walked once; the
  FunctionEvent list that torch builds lazily is never built, which is where
  the profiler's end-to-end cost usually goes.
- Global module hooks open a `record_function` scope per module call, so every
  allocation's ancestors name its layer; backward ops inherit the layer of the
  forward op with the same autograd sequence number.
- Categories without the Python tracer: parameters, gradients and optimizer
  state are recognised by storage identity (module hooks, optimizer step hooks
  and a scan of the namespace at start and end), inputs are the root module's
  tensor arguments; of the rest, what forward allocated and backward freed (or
  what a grad-enabled forward left alive) is an activation, what was freed
  within the run a temporary, the remainder "other". Saved-tensor hooks would be
  exact for activations but break `torch.func` transforms, so they are not used.
- Memory that existed before the run: on CPU the profiler only sees blocks
  allocated while it runs, so the tensors reachable from the namespace (globals,
  `Out`, modules, optimizers, containers two levels deep) are the baseline, and
  a weakref finaliser on each storage tells when one is freed during the run.
  On CUDA the allocator's own counters give the exact baseline.

The package, along that pipeline:
- collector.py  TorchCollector: start/stop, the steps and the detail window
- walk.py       torch's event tree walked once into allocation logs and op records
- ledger.py     the accounting shared with recorded traces (allocations paired with frees, kinds by time)
- trace.py      recorded kineto traces (`memprofile import`) through the same ledger
- compat.py     every private torch API the capture uses, with the versions it was checked on
- cuda.py       CUDA's allocator statistics and snapshots

Nothing here imports torch until a collector starts.
"""

from __future__ import annotations

from memprofile.capture.torch.budget import MIN_BUDGET_BYTES
from memprofile.capture.torch.collector import TorchCollector
from memprofile.capture.torch.walk import LAYER_PREFIX

__all__ = ["LAYER_PREFIX", "MIN_BUDGET_BYTES", "TorchCollector"]

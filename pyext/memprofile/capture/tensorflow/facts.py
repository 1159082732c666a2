"""What TensorFlow's own words say: the op and bytes of an out-of-memory message,
and the GPU settings the memory-growth and allocator suggestions need."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

_TF_OOM_SHAPE = re.compile(r"OOM when allocating tensor with shape\s*\[([\d,\s]*)\] and type (\w+)")
_TF_OP = re.compile(r"\[Op:(\w+)\]|\bnode ([\w/.\-]+)")
_DTYPE_BYTES = {
    "float": 4,
    "double": 8,
    "half": 2,
    "bfloat16": 2,
    "int32": 4,
    "int64": 8,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "bool": 1,
    "float32": 4,
    "float64": 8,
    "float16": 2,
}


def oom_facts(message: str) -> tuple[str | None, int | None]:
    """The op and the bytes a TF out-of-memory message names, where it does."""
    op = None
    m = _TF_OP.search(message)
    if m:
        op = m.group(1) or m.group(2)
    requested = None
    m = _TF_OOM_SHAPE.search(message)
    if m:
        n = 1
        for d in m.group(1).split(","):
            if d.strip():
                n *= int(d)
        requested = n * _DTYPE_BYTES.get(m.group(2), 4)
    return op, requested


def gpu_facts(config: Any, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the memory-growth and allocator suggestions need, from `tf.config`
    (a fake in tests: no GPU has run this)."""
    environ = os.environ if environ is None else environ
    facts: dict[str, str] = {}
    try:
        gpus = config.list_physical_devices("GPU")
        visible = config.get_visible_devices("GPU")
    except Exception as exc:
        return {"tf.gpus": f"unknown ({exc})"}
    facts["tf.gpus"] = str(len(gpus))
    facts["tf.visible_gpus"] = (
        ",".join(d.name.rsplit(":", 2)[-2] + ":" + d.name.rsplit(":", 1)[-1] for d in visible) or "none"
    )
    growth = []
    limits = []
    for gpu in gpus:
        short = ":".join(gpu.name.split(":")[-2:])
        try:
            growth.append(f"{short}={'on' if config.experimental.get_memory_growth(gpu) else 'off'}")
        except Exception:
            growth.append(f"{short}=unknown")
        try:
            for dev in config.get_logical_device_configuration(gpu) or []:
                if getattr(dev, "memory_limit", None):
                    limits.append(f"{short}={int(dev.memory_limit)}MB")
        except Exception:
            pass
    if gpus:
        facts["tf.memory_growth"] = ",".join(growth)
    if limits:
        facts["tf.memory_limit"] = ",".join(limits)
    for key in ("TF_FORCE_GPU_ALLOW_GROWTH", "TF_GPU_ALLOCATOR", "CUDA_VISIBLE_DEVICES"):
        if key in environ:
            facts[f"env.{key}"] = environ[key]
    return facts

"""Which rank of a distributed job this process is, from what the launcher
set: torchrun (and torch.distributed.launch, SLURM wrappers, mpirun setups
for torch) sets RANK, WORLD_SIZE and LOCAL_RANK; where none of those is set,
Open MPI's mpirun (OMPI_COMM_WORLD_*), SLURM's srun (SLURM_PROCID,
SLURM_NTASKS, SLURM_LOCALID) and TensorFlow's multi-worker TF_CONFIG (the
chief first, then the workers) say it, for a job of more than one process
only: a notebook in a one-task SLURM allocation is no rank. Nothing here
talks to other ranks: a profile never makes a rank wait.

The process group's backend is known only once the script initialised it,
and a well-behaved script destroys it before it ends; so while a profile
runs, `BackendWatch` notes the backend each time a group is initialised
(a wrapper around `torch.distributed.init_process_group`, removed at the
end; one kept by a `from torch.distributed import init_process_group` only
passes through). It can wrap only a torch.distributed already imported:
`memprofile run` imports it before a distributed job's script.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass


# The record of a rank, made here from the launcher's environment; the Profile keeps it (model/profile.py).
@dataclass
class RankInfo:
    """Where a profile ran in a multi-process job (torchrun, or any launch
    that sets RANK and WORLD_SIZE): read from the launcher's environment and
    the process group, so ranks never talk to each other for it."""

    rank: int
    world_size: int
    local_rank: int | None = None
    host: str = ""
    #: The process group's backend ("nccl", "gloo"), where one was initialised.
    backend: str = ""
    #: The launcher's id of the job (TORCHELASTIC_RUN_ID, SLURM_JOB_ID), shared by its ranks.
    run_id: str = ""
    #: Wall clock (Unix seconds) at the profile's time 0: what aligns ranks' timelines.
    started_unix_s: float | None = None


#: Environment variables that name the job, shared by all its ranks, in the order tried.
RUN_ID_VARIABLES = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID")


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def run_id(environ: Mapping[str, str] | None = None) -> str:
    """The job's id that every rank sees alike ("" where the launcher sets
    none: torchrun without --rdzv-id/--standalone sets "none")."""
    env = os.environ if environ is None else environ
    for name in RUN_ID_VARIABLES:
        value = env.get(name, "")
        if value and value != "none":
            return value
    master = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    return f"{master[0]}-{master[1]}" if all(master) else ""


def rank_from_env(environ: Mapping[str, str] | None = None) -> RankInfo | None:
    """This process's rank, or None when it is not one rank of a job (no
    RANK or WORLD_SIZE, or values that are not a rank of a world)."""
    env = os.environ if environ is None else environ
    found: _Place
    if "RANK" in env or "WORLD_SIZE" in env:  # torchrun's: where set, they are the answer
        found = _int(env.get("RANK")), _int(env.get("WORLD_SIZE")), _int(env.get("LOCAL_RANK"))
    else:
        launched = next((f for f in (_launched(env, *names) for names in _LAUNCHERS) if f is not None), None)
        found = launched or _tf_config(env.get("TF_CONFIG", "")) or (None, None, None)
        if found[1] is not None and found[1] < 2:
            return None  # one process: not a job's rank
    rank, world, local_rank = found
    if rank is None or world is None or world < 1 or not 0 <= rank < world:
        return None
    return RankInfo(
        rank=rank,
        world_size=world,
        local_rank=local_rank,
        host=socket.gethostname(),
        run_id=run_id(env),
    )


#: (rank, world size, local rank), each None where not said.
_Place = tuple[int | None, int | None, int | None]
#: (rank, world size, local rank) variables of launchers that are not torchrun, in the order tried.
_LAUNCHERS = (
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH, Intel MPI
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


def _launched(env: Mapping[str, str], rank: str, world: str, local: str) -> _Place | None:
    if rank not in env or world not in env:
        return None
    return _int(env.get(rank)), _int(env.get(world)), _int(env.get(local))


def _tf_config(text: str) -> _Place | None:
    """(rank, world size, None) of a TF multi-worker task: the chief is rank 0 and the
    workers follow it, as MultiWorkerMirroredStrategy numbers them; a parameter server or
    an evaluator is no rank of the training (None)."""
    if not text:
        return None
    try:
        config = json.loads(text)
        cluster, task = config.get("cluster", {}), config.get("task", {})
        chiefs, workers = list(cluster.get("chief", [])), list(cluster.get("worker", []))
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return None
    if kind == "chief":
        return index, len(chiefs) + len(workers), None
    if kind == "worker":
        return len(chiefs) + index, len(chiefs) + len(workers), None
    return None


def current_backend() -> str:
    """The default process group's backend, "" where none is initialised
    (or torch.distributed is not imported: it is never imported here)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return str(dist.get_backend())
    except Exception:  # a group half torn down: no backend to report
        return ""
    return ""


class BackendWatch:
    """Notes the backend of the process groups a run initialises (see the
    module's docstring). start() before the run, stop() after: the backend
    seen, "" when none."""

    def __init__(self) -> None:
        self.backend = ""
        self._original: Callable | None = None
        self._wrapper: Callable | None = None

    def start(self) -> None:
        self.backend = current_backend()
        dist = sys.modules.get("torch.distributed")
        if dist is not None:  # `memprofile run` imports it first in a distributed job
            self._wrap(dist)

    def _wrap(self, dist) -> None:
        original = getattr(dist, "init_process_group", None)
        if original is None or self._wrapper is not None:
            return
        watch = self

        @functools.wraps(original)
        def init_process_group(*args, **kwargs):
            result = original(*args, **kwargs)
            watch.backend = current_backend() or watch.backend
            return result

        self._original, self._wrapper = original, init_process_group
        dist.init_process_group = init_process_group

    def stop(self) -> str:
        dist = sys.modules.get("torch.distributed")
        self.backend = current_backend() or self.backend
        if dist is not None and self._wrapper is not None and dist.init_process_group is self._wrapper:
            dist.init_process_group = self._original  # type: ignore[attr-defined]
        self._original = self._wrapper = None
        return self.backend


def stamp(info: RankInfo, t0_perf: float, backend: str) -> RankInfo:
    """`info` with the wall clock of perf_counter time `t0_perf` and the backend."""
    info.started_unix_s = time.time() - (time.perf_counter() - t0_perf)
    info.backend = backend
    return info

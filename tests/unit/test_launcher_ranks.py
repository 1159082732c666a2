"""A process's rank from its launcher's environment (capture/distributed.py
rank_from_env): torchrun's RANK/WORLD_SIZE first, then Open MPI, MPICH, SLURM
and TensorFlow's TF_CONFIG, for jobs of more than one process."""

from __future__ import annotations

import json

import pytest

from memprofile.capture.distributed import rank_from_env


def _place(env: dict[str, str]):
    info = rank_from_env(env)
    return None if info is None else (info.rank, info.world_size, info.local_rank)


def _tf_config(kind: str, index: int, chiefs: int = 1, workers: int = 3) -> str:
    cluster = {"worker": [f"w{i}:2222" for i in range(workers)], "ps": ["ps0:2222"]}
    if chiefs:
        cluster["chief"] = [f"c{i}:2222" for i in range(chiefs)]
    return json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})


@pytest.mark.parametrize(
    ("env", "place"),
    [
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),
        # torchrun inside a SLURM job: torchrun's variables are the rank
        ({"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "8"}, (1, 2, None)),
        ({"OMPI_COMM_WORLD_RANK": "5", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (5, 8, 1)),
        ({"PMI_RANK": "2", "PMI_SIZE": "4"}, (2, 4, None)),
        ({"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "2"}, (6, 8, 2)),
        # a notebook (or one task) in a SLURM allocation is not one rank of a job
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_LOCALID": "0"}, None),
        ({"TF_CONFIG": _tf_config("chief", 0)}, (0, 4, None)),
        ({"TF_CONFIG": _tf_config("worker", 2)}, (3, 4, None)),  # after the chief
        ({"TF_CONFIG": _tf_config("worker", 1, chiefs=0, workers=2)}, (1, 2, None)),
        ({"TF_CONFIG": _tf_config("ps", 0)}, None),  # a parameter server trains nothing
        ({"TF_CONFIG": _tf_config("evaluator", 0)}, None),
        ({"TF_CONFIG": _tf_config("worker", 0, chiefs=0, workers=1)}, None),  # one worker alone
        ({"TF_CONFIG": "{not json"}, None),
        ({"TF_CONFIG": json.dumps({"task": {"type": "worker", "index": 9}})}, None),  # not in its cluster
        ({}, None),
    ],
)
def test_the_rank_is_the_launchers(env, place):
    assert _place(env) == place

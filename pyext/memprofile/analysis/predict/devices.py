"""The devices a profile can be predicted on (`Profile.predict(device=...)`): each one's
memory as torch reports it, its CUDA context, and cuBLAS's workspace.

Capacity is `torch.cuda.get_device_properties(0).total_memory` (cudaDeviceProp.totalGlobalMem,
what deviceQuery prints in bytes). It varies by a few MiB with the driver and ECC: each row
gives the figure of one recorded device, the source, and the spread seen elsewhere.

The CUDA context lives outside the caching allocator. pytorch#86509 measured 287,047,680 B
used on the device with lazy module loading (torch's default since 1.13, CUDA >= 11.7) and
666,632,192 B with eager loading, with one 6.4 MB tensor allocated: that tensor's 20 MiB
segment is in both figures, so the context is 266,076,160 B lazy and 645,660,672 B eager.
No source gives it per architecture; users report 200-700 MB.

cuBLAS's workspace comes from the caching allocator (CublasHandlePool.cpp getNewWorkspace:
CUDACachingAllocator::get()->allocate(getChosenWorkspaceSize())), once per cuBLAS handle and
stream, at the first matmul: it is inside reserved (and allocated), so a simulation should
allocate it as a block. A training step's backward runs on autograd's own thread, which takes
a second handle: two workspaces. torch 2.x's default (no CUBLAS_WORKSPACE_CONFIG) is
:4096:8 on sm90 (32 MiB) and :4096:2:16:8 elsewhere (2 x 4 MiB + 8 x 16 KiB).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from memprofile.units import fmt_bytes

#: Share of the device a prediction keeps free: what fits uses at most 85 % of it.
HEADROOM = 0.15

_PR_86509 = "https://github.com/pytorch/pytorch/pull/86509"
_CUBLAS_POOL = "https://github.com/pytorch/pytorch/blob/main/aten/src/ATen/cuda/CublasHandlePool.cpp"
#: The 6.4 MB tensor of pytorch#86509's measurement took a 20 MiB segment (1-10 MiB requests).
_MEASURED_SEGMENT = 20 << 20
CONTEXT_LAZY_BYTES = 287_047_680 - _MEASURED_SEGMENT
CONTEXT_EAGER_BYTES = 666_632_192 - _MEASURED_SEGMENT
#: getChosenWorkspaceSize's default: :4096:8 on sm90, :4096:2:16:8 elsewhere.
WORKSPACE_SM90_BYTES = 4096 * 1024 * 8
WORKSPACE_DEFAULT_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8


@dataclass(frozen=True)
class DeviceSpec:
    """A target device: memory in bytes, as torch would see it."""

    name: str
    capacity_bytes: int
    #: Device memory outside the caching allocator (the CUDA context); 0 for the CPU.
    context_bytes: int
    #: cuBLAS's workspace per handle and stream, allocated through the caching allocator.
    workspace_bytes: int
    compute_capability: tuple[int, int] | None
    sources: tuple[str, ...]
    is_cuda: bool


def _cuda(name: str, capacity: int, cc: tuple[int, int], *sources: str) -> DeviceSpec:
    workspace = WORKSPACE_SM90_BYTES if cc == (9, 0) else WORKSPACE_DEFAULT_BYTES
    return DeviceSpec(name, capacity, CONTEXT_LAZY_BYTES, workspace, cc, (*sources, _PR_86509, _CUBLAS_POOL), True)


_FIXTURES = "tests/fixtures/gpu/PROVENANCE.md"
DEVICES: dict[str, DeviceSpec] = {
    d.name: d
    for d in (
        # deviceQuery, "Tesla T4" (driver 11.0): 15110 MBytes (15843721216 bytes), as in other deviceQuery outputs
        # (CUDA 11.2, 10.2); another T4 gives 15,843,524,608; torch prints total_memory=15079-15109MB.
        _cuda(
            "T4",
            15_843_721_216,
            (7, 5),
            "https://chiemon.github.io/2024/12/25/%E6%98%BE%E5%8D%A1%E4%BF%A1%E6%81%AF.html",
        ),
        # deviceQuery, "NVIDIA L4" (driver 12.2): 22491 MBytes (23583784960 bytes); another L4 (driver 12.0)
        # gives 23,612,293,120. nvidia-smi says 23034MiB (it counts memory the driver keeps).
        _cuda("L4", 23_583_784_960, (8, 9), "https://github.com/bottlerocket-os/bottlerocket-kernel-kit/pull/139"),
        # Only torch's rounded figure is known: _CudaDeviceProperties(name='NVIDIA A10G', ..., total_memory=22587MB)
        # (total_memory // 2**20): 22587 MiB is used, the exact bytes are up to 1 MiB more. (The A10, a different
        # board, reports 23,609,475,072 B: aalanwyr/face2cuda step2cuda/README.md.) Marketing: 24 GB.
        _cuda("A10G", 22587 << 20, (8, 6), "torch total_memory=22587MB, NVIDIA A10G (public repositories)"),
        # The TF XSpace fixture's GPU planes (V100 16GB, memory_size) and deviceQuery "Tesla V100-SXM2-16GB"
        # (16160 MBytes (16945512448 bytes)); other drivers give 16,911,433,728 and 16,928,342,016.
        _cuda(
            "V100-16GB",
            16_945_512_448,
            (7, 0),
            "https://github.com/tensorflow/profiler/tree/d6853e0c4b0dbc7466a516f51335584945ea49b5/demo",
            _FIXTURES,
        ),
        # The V100 DDP trace fixture's deviceProperties: Tesla V100-SXM2-32GB totalGlobalMem.
        _cuda(
            "V100-32GB",
            34_089_730_048,
            (7, 0),
            "https://github.com/facebookresearch/HolisticTraceAnalysis/blob/0c2146a8d003629a67f225528969752e1f0656aa/"
            "tests/data/df_index_resolver/df_index_resolver.json.gz",
            _FIXTURES,
        ),
        # deviceQuery "NVIDIA A100-SXM4-40GB", driver 12.2: 40339 MBytes (42298834944 bytes); the PCIe board
        # reports 42,505,273,344 (torch: total_memory=40536MB).
        _cuda("A100-40GB", 42_298_834_944, (8, 0), "https://github.com/bottlerocket-os/bottlerocket/pull/3873"),
        # deviceQuery "NVIDIA A100-SXM4-80GB", driver 12.5: 81158 MBytes (85100068864 bytes); driver 12.2 gives
        # 84,987,740,160 and nvidia-smi-based tables 81251 MiB.
        _cuda(
            "A100-80GB",
            85_100_068_864,
            (8, 0),
            "https://github.com/thamada/nvidia-smi/blob/HEAD/nvsim/A100SXMx4_deviceQuery.py",
        ),
        # The H100 trace fixture's deviceProperties: NVIDIA H100 80GB HBM3, driver 575.51.03, totalGlobalMem
        # (torch elsewhere: total_memory=81082-81090MB).
        _cuda(
            "H100-80GB",
            85_018_279_936,
            (9, 0),
            "https://github.com/AMD-AGI/TraceLens/blob/171dd74721ca1ec45709e5805b68ae1f65e27811/"
            "tests/traces/h100/gaunernst_bert-small-uncased__1016001.json.gz",
            _FIXTURES,
        ),
    )
}

#: Other spellings (after _key's folding) of the table's names. A bare family name is its
#: smaller board: a prediction that fits it fits the larger one.
_ALIASES = {
    "t4": "T4",
    "l4": "L4",
    "a10g": "A10G",
    "v100": "V100-16GB",
    "v10016gb": "V100-16GB",
    "v10032gb": "V100-32GB",
    "a100": "A100-40GB",
    "a10040gb": "A100-40GB",
    "a10080gb": "A100-80GB",
    "h100": "H100-80GB",
    "h10080gb": "H100-80GB",
}
#: Words of torch's device names that do not tell the boards apart.
_NOISE = frozenset({"nvidia", "tesla", "sxm2", "sxm4", "sxm5", "pcie", "hbm3", "hbm2", "hbm2e", "gddr6"})


def _key(name: str) -> str:
    """`name` folded: case, spaces, dashes and board words aside ("NVIDIA A100-SXM4-80GB" -> "a10080gb")."""
    words = [w for w in re.split(r"[^0-9a-z]+", name.lower()) if w and w not in _NOISE]
    return "".join(words)


def known_devices() -> list[str]:
    """The names device_spec takes (besides aliases and capacities in bytes)."""
    return ["cpu", *DEVICES]


def device_spec(name_or_bytes: str | int) -> DeviceSpec:
    """The device called `name_or_bytes` ("T4", "h100", "A100 80GB", torch's own device name,
    "cpu"), or a CUDA device of that many bytes; ValueError naming the known ones."""
    if isinstance(name_or_bytes, bool) or not isinstance(name_or_bytes, int | str):
        raise ValueError(f"a device is a name or a capacity in bytes, got {name_or_bytes!r}")
    if isinstance(name_or_bytes, int):
        if name_or_bytes <= 0:
            raise ValueError(f"a device's capacity is a positive number of bytes, got {name_or_bytes}")
        return DeviceSpec(
            f"{fmt_bytes(name_or_bytes)} CUDA device",
            name_or_bytes,
            CONTEXT_LAZY_BYTES,
            WORKSPACE_DEFAULT_BYTES,
            None,
            (_PR_86509, _CUBLAS_POOL),
            True,
        )
    key = _key(name_or_bytes)
    if key == "cpu":
        return _cpu()
    for name in DEVICES:
        if _key(name) == key:
            return DEVICES[name]
    if key in _ALIASES:
        return DEVICES[_ALIASES[key]]
    raise ValueError(
        f"unknown device {name_or_bytes!r}: known are {', '.join(known_devices())} "
        "(or a capacity in bytes, e.g. device=16 * 2**30)"
    )


def _cpu() -> DeviceSpec:
    """This machine's RAM: nothing outside the allocator to add, no cuBLAS."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        source = "os.sysconf(SC_PAGE_SIZE * SC_PHYS_PAGES)"
    except (AttributeError, ValueError, OSError):  # not POSIX
        import psutil

        total = int(psutil.virtual_memory().total)
        source = "psutil.virtual_memory().total"
    return DeviceSpec("cpu", int(total), 0, 0, None, (source,), False)


def device_total_bytes(spec: DeviceSpec, reserved_bytes: int) -> int:
    """What the device holds for a run whose caching allocator reserved `reserved_bytes`
    (cuBLAS's workspace among its blocks): that and the CUDA context."""
    return reserved_bytes + spec.context_bytes


def fits(spec: DeviceSpec, total: int) -> bool:
    """`total` bytes leave the device its HEADROOM free."""
    return total <= spec.capacity_bytes * (1 - HEADROOM)

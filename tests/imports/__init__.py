"""Tests of `memprofile import` on the recorded GPU traces in the project
(tests/fixtures/gpu, see its PROVENANCE.md and LICENSES/: data files from
public repositories, MIT/BSD/Apache)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
H100 = FIXTURES / "pt_trace_h100_torch2.6_bert-small_profile_memory.pt.trace.json.gz"
V100_DDP = FIXTURES / "pt_trace_v100_rank1_of_2_profile_memory.json.gz"
V100_LEGACY = FIXTURES / "pt_trace_v100_2021_resnet50_profile_memory_legacy.pt.trace.json.gz"
XSPACE = FIXTURES / "tf_xplane_8xv100_bert_squad_gpu_bfc.xplane.pb.gz"


def cut_short(data: bytes, dest: Path, keep: float = 0.5) -> Path:
    """`dest` holding the first `keep` of `data`: a file cut short."""
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest

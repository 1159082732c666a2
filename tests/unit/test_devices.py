"""The device table for predictions (analysis/predict/devices.py): names and aliases, the
recorded capacities, the CUDA context and cuBLAS workspace, headroom."""

from __future__ import annotations

import gzip
import json
import os

import pytest

from memprofile.analysis.predict.devices import (
    CONTEXT_EAGER_BYTES,
    CONTEXT_LAZY_BYTES,
    DEVICES,
    HEADROOM,
    WORKSPACE_DEFAULT_BYTES,
    WORKSPACE_SM90_BYTES,
    device_spec,
    device_total_bytes,
    fits,
)
from tests.imports import H100, V100_DDP

ISSUE_NAMES = ["cpu", "T4", "L4", "A10G", "V100-16GB", "V100-32GB", "A100-40GB", "A100-80GB", "H100-80GB"]


@pytest.mark.parametrize("name", ISSUE_NAMES)
def test_every_name_the_issue_lists_is_known(name):
    spec = device_spec(name)
    assert spec.name == name
    assert spec.capacity_bytes > 0
    assert spec.sources, "every row says where its figures come from"
    assert spec.is_cuda == (name != "cpu")


@pytest.mark.parametrize(
    "alias, name",
    [
        ("h100", "H100-80GB"),
        ("H100", "H100-80GB"),
        ("NVIDIA H100 80GB HBM3", "H100-80GB"),  # torch's own device name
        ("a100", "A100-40GB"),  # a bare family name is its smaller board
        ("A100 80GB", "A100-80GB"),
        ("a100_80gb", "A100-80GB"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100-40GB"),
        ("Tesla V100-SXM2-32GB", "V100-32GB"),
        ("v100", "V100-16GB"),
        ("Tesla T4", "T4"),
        ("t4", "T4"),
        ("NVIDIA L4", "L4"),
        ("nvidia a10g", "A10G"),
        ("CPU", "cpu"),
    ],
)
def test_aliases_are_case_and_punctuation_blind(alias, name):
    assert device_spec(alias).name == name


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError) as err:
        device_spec("RTX 4090")
    message = str(err.value)
    assert "RTX 4090" in message
    for name in ISSUE_NAMES:
        assert name in message


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, None])
def test_a_capacity_must_be_a_positive_int(bad):
    with pytest.raises(ValueError):
        device_spec(bad)


def test_a_capacity_in_bytes_is_a_cuda_device_of_that_size():
    spec = device_spec(12 * 2**30)
    assert spec.capacity_bytes == 12 * 2**30
    assert spec.is_cuda
    assert spec.context_bytes == CONTEXT_LAZY_BYTES
    assert spec.workspace_bytes == WORKSPACE_DEFAULT_BYTES
    assert "12.0 GiB" in spec.name


def test_cpu_is_this_machines_ram():
    spec = device_spec("cpu")
    assert spec.capacity_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert (spec.context_bytes, spec.workspace_bytes, spec.compute_capability) == (0, 0, None)


def _total_global_mem(path) -> int:
    with gzip.open(path, "rb") as f:
        return json.load(f)["deviceProperties"][0]["totalGlobalMem"]


def test_recorded_devices_match_the_fixtures_device_properties():
    # GIVEN the GPU traces' own deviceProperties (an H100 80GB HBM3 and V100-SXM2-32GBs)
    # THEN the table holds the same bytes, to the byte
    assert device_spec("H100-80GB").capacity_bytes == _total_global_mem(H100) == 85_018_279_936
    assert device_spec("V100-32GB").capacity_bytes == _total_global_mem(V100_DDP) == 34_089_730_048


@pytest.mark.parametrize(
    "name, low_gib, high_gib",
    [
        ("T4", 14.5, 15.0),
        ("L4", 21.5, 22.5),
        ("A10G", 21.5, 22.5),
        ("V100-16GB", 15.5, 16.0),
        ("V100-32GB", 31.5, 32.0),
        ("A100-40GB", 39.0, 40.0),
        ("A100-80GB", 78.5, 80.0),
        ("H100-80GB", 78.5, 80.0),
    ],
)
def test_capacities_are_what_the_driver_reports_not_the_marketing_gb(name, low_gib, high_gib):
    # The driver keeps some of the board's memory: a "16 GB" T4 reports under 15 GiB.
    assert low_gib * 2**30 <= device_spec(name).capacity_bytes <= high_gib * 2**30


@pytest.mark.parametrize(
    "name, cc", [("T4", (7, 5)), ("L4", (8, 9)), ("A10G", (8, 6)), ("V100-32GB", (7, 0)), ("A100-80GB", (8, 0))]
)
def test_compute_capability(name, cc):
    assert device_spec(name).compute_capability == cc


def test_cublas_workspace_is_32_mib_on_hopper_and_about_8_mib_elsewhere():
    # torch 2.x's getChosenWorkspaceSize: :4096:8 on sm90, :4096:2:16:8 elsewhere
    assert WORKSPACE_SM90_BYTES == 32 * 2**20
    assert WORKSPACE_DEFAULT_BYTES == 8 * 2**20 + 128 * 2**10
    assert device_spec("H100-80GB").workspace_bytes == WORKSPACE_SM90_BYTES
    for name in ("T4", "L4", "A10G", "V100-16GB", "V100-32GB", "A100-40GB", "A100-80GB"):
        assert device_spec(name).workspace_bytes == WORKSPACE_DEFAULT_BYTES


def test_context_is_pr_86509s_measurement_without_its_tensors_segment():
    # 287,047,680 B lazy / 666,632,192 B eager, each with one 20 MiB allocator segment in it
    assert CONTEXT_LAZY_BYTES == 287_047_680 - 20 * 2**20
    assert CONTEXT_EAGER_BYTES == 666_632_192 - 20 * 2**20
    assert all(d.context_bytes == CONTEXT_LAZY_BYTES for d in DEVICES.values())


def test_device_total_adds_the_context_to_reserved():
    spec = device_spec("T4")
    assert device_total_bytes(spec, 10 * 2**30) == 10 * 2**30 + CONTEXT_LAZY_BYTES
    assert device_total_bytes(device_spec("cpu"), 5) == 5


def test_fits_keeps_15_percent_free():
    assert HEADROOM == 0.15
    spec = device_spec(100 * 2**20)
    assert fits(spec, 85 * 2**20)
    assert not fits(spec, 85 * 2**20 + 1)

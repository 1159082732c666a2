"""Profiles built by hand for renderer and model tests (no collector runs)."""

from __future__ import annotations

from memprofile.model.profile import Device, Peak, Profile, Timeline


def make_profile(n_points: int = 50, name: str = "cell", peak_at: int | None = None, **overrides) -> Profile:
    """A small, valid host-only profile built by hand (no collector runs).

    n_points=0 gives a profile with no device and no peak (nothing was measured)."""
    if n_points == 0:
        return Profile(id="0" * 32, name=name, started_at="2026-11-23T15:00:00.000+00:00", duration_s=0.0, **overrides)
    peak_at = n_points // 2 if peak_at is None else peak_at
    base = 100 * 2**20
    t = [i * 0.005 for i in range(n_points)]
    live = [base + (i % 7) * 2**20 for i in range(n_points)]
    live[peak_at] = base + 300 * 2**20
    fields = dict(
        id="0123456789abcdef0123456789abcdef",
        name=name,
        started_at="2026-11-23T15:00:00.000+00:00",
        duration_s=t[-1] if t else 0.0,
        devices=[
            Device(
                name="host",
                kind="process",
                source="rss",
                peak_bytes=max(live),
                baseline_bytes=live[0],
                end_bytes=live[-1],
                capacity_bytes=16 * 2**30,
            )
        ],
        timelines=[Timeline(device="host", t=t, live_bytes=live, recorded_points=n_points)],
    )
    fields.update(overrides)
    profile = Profile(**fields)
    profile.peak = Peak(device="host", time_s=t[peak_at], bytes=max(live), by_category={"other": max(live)})
    return profile


def make_rich_profile(name: str = "train", text: str = "", n_points: int = 2_000) -> Profile:
    """A framework-like profile: allocator devices (torch `cpu`, TF `tf:CPU:0`)
    with category columns and op/layer labels, layers, ops, the peak anatomy.
    `text` is put into every name that comes from user code."""
    from memprofile.model.profile import LayerStat, OpStat, TensorInfo

    profile = make_profile(n_points=50, name=name)
    kinds = ["parameter", "gradient", "optimizer_state", "activation", "temporary"]
    labels = [f"aten::mm{text}", f"encoder.layers.0{text}", "adam/Square"]
    for device in ("cpu", "tf:CPU:0"):
        t = [i * 0.001 for i in range(n_points)]
        by_category = {k: [(j + 1) * 2**20 + (i % 13) * 2**16 * (k in ("activation", "temporary"))
                           for i in range(n_points)] for j, k in enumerate(kinds)}
        live = [sum(col[i] for col in by_category.values()) for i in range(n_points)]
        profile.devices.append(Device(device, "allocator", "c10" if device == "cpu" else "cpu", max(live), live[0],
                                      live[-1], 8 * 2**30 if device == "cpu" else None))
        profile.timelines.append(Timeline(device, t, live, by_category, op=[i % 3 for i in range(n_points)],
                                          layer=[(i % 2) + 0 for i in range(n_points)] and [1] * n_points,
                                          labels=labels, recorded_points=n_points * 10))
    profile.layers = [
        LayerStat("model", "Sequential", None),
        LayerStat(f"encoder{text}", "Encoder", "model", 4 * 2**20, 4 * 2**20, 8 * 2**20, 30 * 2**20, 9 * 2**20,
                  40 * 2**20, 20 * 2**20, 50 * 2**20),
        LayerStat(f"encoder{text}/dense", "Dense", f"encoder{text}", 2**20, 2**20, 2**21, 3 * 2**20, 2**20,
                  2**22, 2**21, 2**23),
        LayerStat("head", "Dense", "model", 2**16, 2**16, 2**17, 2**18, 2**18, 2**19, 2**19, 2**20),
    ]
    profile.ops = [OpStat(f"aten::mm{text}" if i == 0 else f"op_{i}", "cpu", i + 1, (600 - i) * 2**16,
                          (600 - i) * 2**15, 2**10, (600 - i) * 2**16 - 2**10, 2**16, [f"[{i},{text}]"])
                   for i in range(600)]
    peak = profile.device("cpu")
    profile.peak = Peak(device="cpu", time_s=0.5, bytes=peak.peak_bytes,
                        by_category={"parameter": 2**20, "activation": 5 * 2**20},
                        op=f"aten::mm{text}", layer=f"encoder{text}",
                        by_layer={f"encoder{text}": 5 * 2**20, "head": 2**20},
                        tensors=[TensorInfo([512, 1024], "float32", 2 * 2**20, "activation", f"aten::mm{text}",
                                            f"encoder{text}", "cpu")])
    return profile

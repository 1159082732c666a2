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
        by_category = {
            k: [(j + 1) * 2**20 + (i % 13) * 2**16 * (k in ("activation", "temporary")) for i in range(n_points)]
            for j, k in enumerate(kinds)
        }
        live = [sum(col[i] for col in by_category.values()) for i in range(n_points)]
        profile.devices.append(
            Device(
                device,
                "allocator",
                "c10" if device == "cpu" else "cpu",
                max(live),
                live[0],
                live[-1],
                8 * 2**30 if device == "cpu" else None,
            )
        )
        profile.timelines.append(
            Timeline(
                device,
                t,
                live,
                by_category,
                op=[i % 3 for i in range(n_points)],
                layer=[(i % 2) + 0 for i in range(n_points)] and [1] * n_points,
                labels=labels,
                recorded_points=n_points * 10,
            )
        )
    profile.layers = [
        LayerStat("model", "Sequential", None),
        LayerStat(
            f"encoder{text}",
            "Encoder",
            "model",
            4 * 2**20,
            4 * 2**20,
            8 * 2**20,
            30 * 2**20,
            9 * 2**20,
            40 * 2**20,
            20 * 2**20,
            50 * 2**20,
        ),
        LayerStat(
            f"encoder{text}/dense",
            "Dense",
            f"encoder{text}",
            2**20,
            2**20,
            2**21,
            3 * 2**20,
            2**20,
            2**22,
            2**21,
            2**23,
        ),
        LayerStat("head", "Dense", "model", 2**16, 2**16, 2**17, 2**18, 2**18, 2**19, 2**19, 2**20),
    ]
    profile.ops = [
        OpStat(
            f"aten::mm{text}" if i == 0 else f"op_{i}",
            "cpu",
            i + 1,
            (600 - i) * 2**16,
            (600 - i) * 2**15,
            2**10,
            (600 - i) * 2**16 - 2**10,
            2**16,
            [f"[{i},{text}]"],
        )
        for i in range(600)
    ]
    peak = profile.device("cpu")
    profile.peak = Peak(
        device="cpu",
        time_s=0.5,
        bytes=peak.peak_bytes,
        by_category={"parameter": 2**20, "activation": 5 * 2**20},
        op=f"aten::mm{text}",
        layer=f"encoder{text}",
        by_layer={f"encoder{text}": 5 * 2**20, "head": 2**20},
        tensors=[
            TensorInfo([512, 1024], "float32", 2 * 2**20, "activation", f"aten::mm{text}", f"encoder{text}", "cpu")
        ],
    )
    return profile


LINED_SOURCE = """tokens = batch["tokens"]
logits = model(tokens)
loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
loss.backward()
opt.step()
"""


def make_lined_profile(name: str = "lm-step", text: str = "") -> Profile:
    """A profile with per-line figures, as the line capture fills them: a
    language-model step whose loss is computed outside any module (its memory
    is "(no layer)" at the peak), parameters from before the cell (line 0), a
    tensor in a larger allocator block. `text` goes into every user-code name."""
    from memprofile.model.profile import LineStat, TensorInfo

    mib = 2**20
    profile = make_rich_profile(name=name, text=text, n_points=200)
    profile.source = LINED_SOURCE.replace("model", f"model{text}")
    profile.lines = [
        LineStat(0, "(before the cell)", 0, 48 * mib, {"parameter": 16 * mib, "optimizer_state": 32 * mib}),
        LineStat(
            2,
            f"logits = model{text}(tokens)",
            96 * mib,
            64 * mib,
            {"activation": 64 * mib},
            {f"aten::mm{text}": 80 * mib, "aten::gelu": 16 * mib},
            {f"encoder{text}": 96 * mib},
        ),
        LineStat(
            3,
            "loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))",
            72 * mib,
            40 * mib,
            {"activation": 32 * mib, "temporary": 8 * mib},
            {f"aten::log_softmax{text}": 64 * mib},
            {},
        ),
        LineStat(
            4,
            "loss.backward()",
            120 * mib,
            24 * mib,
            {"gradient": 24 * mib},
            {"aten::mm_backward": 120 * mib},
            {f"encoder{text}": 100 * mib},
        ),
    ]
    peak = profile.peak
    peak.line, peak.op, peak.layer = 4, "aten::mm_backward", f"encoder{text}"
    peak.by_line = {0: 48 * mib, 2: 64 * mib, 3: 40 * mib, 4: 24 * mib}
    peak.bytes = profile.device("cpu").peak_bytes = sum(peak.by_line.values())
    peak.by_category = {
        "parameter": 16 * mib,
        "gradient": 24 * mib,
        "optimizer_state": 32 * mib,
        "activation": 96 * mib,
        "temporary": 8 * mib,
    }
    peak.by_layer = {f"encoder{text}": 100 * mib, "(no layer)": 56 * mib, "head": 20 * mib}
    peak.tensors = [
        TensorInfo(
            [64, 512, 8000], "float32", 1000 * mib // 8, "activation", f"aten::log_softmax{text}", None, "cpu", line=3
        ),
        TensorInfo(
            [64, 32, 32, 32],
            "float32",
            15 * mib + 3 * mib // 4,
            "activation",
            f"conv2d{text}",
            f"encoder{text}",
            "cpu",
            line=2,
            requested_bytes=8 * mib,
        ),
        TensorInfo([8000, 512], "float32", 8000 * 512 * 4, "parameter", None, "head", "cpu", line=0),
        TensorInfo([512], "float32", 2048, "parameter", None, "head", "cpu", line=0),
    ]
    for op in profile.ops[:5]:
        op.line = 2
    profile.ops[0].line = 3
    for layer in profile.layers[1:]:
        layer.line = 2
    return profile

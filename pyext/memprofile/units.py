"""Human-readable numbers for every stage (binary units, like nvidia-smi)."""

from __future__ import annotations

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def fmt_bytes(n: int | float | None, signed: bool = False) -> str:
    if n is None:
        return "n/a"
    sign = "-" if n < 0 else ("+" if signed and n > 0 else "")
    value = float(abs(n))
    unit = 0
    while value >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{sign}{int(value)} B"
    digits = 2 if value < 10 else 1
    return f"{sign}{value:.{digits}f} {_UNITS[unit]}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    if s < 120:
        return f"{s:.2f} s"
    minutes, seconds = divmod(s, 60)
    return f"{int(minutes)} min {seconds:.0f} s"


def category_label(category: str) -> str:
    return category.replace("_", " ")


def step_runs(indices: list[int]) -> str:
    """'steps 1-3, 10-12', 'step 4': step numbers as runs."""
    runs: list[list[int]] = []
    for k in sorted(indices):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)
    return f"step {text}" if len(indices) == 1 else f"steps {text}"

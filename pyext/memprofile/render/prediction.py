"""Will-it-fit predictions in words: the card's one line, and a prediction's sentences.

Every figure is labelled predicted: none of them was measured on the device.
"""

from __future__ import annotations

from memprofile.model.profile import Prediction
from memprofile.units import fmt_bytes

TICK, CROSS = "✓", "✗"


def _decimal_gb(n: int) -> str:
    """A device's size as its maker names it (16 GB), not as fmt_bytes' GiB."""
    return f"{n / 1e9:.0f} GB" if n >= 10e9 else f"{n / 1e9:.1f} GB"


def fits_item(p: Prediction, measured_batch: bool) -> str:
    """ "T4 16 GB ✓ 41 %" at the measured batch; "batch 256 on T4 ✗ 17.9 GB" at another."""
    mark = TICK if p.fits else CROSS
    if measured_batch:
        return f"{p.device} {_decimal_gb(p.capacity_bytes)} {mark} {round(100 * p.share)} %"
    what = f"batch {p.batch:,}" if p.batch is not None else "the batch"
    if p.seq_len is not None and p.seq_len != p.measured_seq_len:
        what += f" × {p.seq_len:,}"
    return f"{what} on {p.device} {mark} {_decimal_gb(p.device_total_bytes)}"


def fits_line(predictions: list[Prediction]) -> str | None:
    """The card's line: "predicted fits: T4 16 GB ✓ 41 % · H100-80GB ✓ 3 % · batch 256 on T4 ✗ 17.9 GB"."""
    if not predictions:
        return None
    items = []
    for p in predictions:
        as_measured = (p.batch is None or p.batch == p.measured_batch) and (
            p.seq_len is None or p.seq_len == p.measured_seq_len
        )
        items.append(fits_item(p, as_measured))
    return "predicted fits: " + " · ".join(items)


def prediction_text(p: Prediction) -> str:
    """A prediction in a few lines (the CLI's and the text report's)."""
    scale = f"batch {p.batch:,}" if p.batch is not None else "the measured batch"
    if p.measured_batch is not None and p.batch != p.measured_batch:
        scale += f" (measured at {p.measured_batch:,})"
    if p.seq_len is not None and p.seq_len != p.measured_seq_len:
        scale += f", sequence {p.seq_len:,} (measured at {p.measured_seq_len:,})"
    verdict = "fits" if p.fits else "does not fit"
    lines = [
        f"{p.device}, {scale}: predicted {verdict} "
        f"({fmt_bytes(p.device_total_bytes)} of {fmt_bytes(p.capacity_bytes)}, {100 * p.share:.0f} %; "
        f"{100 * p.headroom:.0f} % kept free)",
        f"  predicted allocated peak {fmt_bytes(p.allocated_peak_bytes)}, reserved peak "
        f"{fmt_bytes(p.reserved_peak_bytes)}, device total {fmt_bytes(p.device_total_bytes)} ({p.method})",
    ]
    if p.largest_batch is not None:
        line = f"  largest batch that fits (predicted): {p.largest_batch:,}"
        if p.accumulation_steps:
            line += f"; keep batch {p.batch:,} with {p.accumulation_steps} gradient-accumulation steps"
        lines.append(line)
    lines += [f"  note: {n}" for n in p.notes]
    return "\n".join(lines)


#: The report's table of predictions: every figure in it is predicted (the title and the headers say so).
TABLE_TITLE = "Will it fit (predicted)"
TABLE_COLUMNS = (
    "device",
    "batch",
    "predicted allocated",
    "predicted reserved",
    "predicted device total",
    "capacity",
    "share",
    "fits",
    "largest batch",
    "method",
    "notes",
)


def batch_text(p: Prediction) -> str:
    """'64 × 1,024' (batch × sequence, the sequence where it was changed), '64 (measured)' where neither was."""
    batch = f"{p.batch:,}" if p.batch is not None else "measured"
    if p.seq_len is not None and p.seq_len != p.measured_seq_len:
        return batch + f" × {p.seq_len:,}"
    return batch + (" (measured)" if p.batch is not None and p.batch == p.measured_batch else "")


def largest_batch_text(p: Prediction) -> str:
    """'96 (3 accumulation steps for 256)', '' where it was not searched."""
    if p.largest_batch is None:
        return ""
    if p.accumulation_steps and p.batch is not None:
        return f"{p.largest_batch:,} ({p.accumulation_steps} accumulation steps for {p.batch:,})"
    return f"{p.largest_batch:,}"


def note_numbers(predictions: list[Prediction]) -> list[str]:
    """Each distinct note once, in the order first given (the report's numbered list under its table)."""
    return list(dict.fromkeys(n for p in predictions for n in p.notes))


def prediction_row(p: Prediction, notes: list[str] | None = None) -> list[str]:
    """One prediction as the table's cells, in TABLE_COLUMNS' order; its notes in words,
    or as their numbers in `notes` (most predictions share them)."""
    said = ", ".join(str(notes.index(n) + 1) for n in p.notes) if notes is not None else "; ".join(p.notes)
    return [
        p.device,
        batch_text(p),
        fmt_bytes(p.allocated_peak_bytes),
        fmt_bytes(p.reserved_peak_bytes),
        fmt_bytes(p.device_total_bytes),
        fmt_bytes(p.capacity_bytes),
        f"{100 * p.share:.0f} %",
        f"{TICK} fits" if p.fits else f"{CROSS} does not fit",
        largest_batch_text(p),
        p.method,
        said,
    ]


def predictions_text(predictions: list[Prediction]) -> list[str]:
    """The text report's section: a heading, then each prediction's sentences."""
    if not predictions:
        return []
    lines = [f"{TABLE_TITLE}:"]
    for p in predictions:
        lines += ["  " + line for line in prediction_text(p).splitlines()]
    return lines


def predictions_html(predictions: list[Prediction]) -> str:
    """The report's table, its notes numbered below it (render/table.py escapes every cell);
    '' without predictions."""
    from html import escape

    from memprofile.render.table import Column, html_table

    if not predictions:
        return ""
    notes = note_numbers(predictions)
    # figures and verdicts on one line; the device, the batch and the largest batch may wrap
    nowrap = set(TABLE_COLUMNS) - {"device", "batch", "largest batch"}
    columns = [Column(c, cell_style="white-space:nowrap" if c in nowrap else "") for c in TABLE_COLUMNS]
    table = html_table(
        columns,
        [prediction_row(p, notes) for p in predictions],
        attrs={"class": "mp-predictions"},
        caption=f"{round(100 * predictions[0].headroom)} % of each device kept free; nothing here was measured on it",
    )
    listed = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return f"<h3>{TABLE_TITLE}</h3>{table}" + (
        f"<ol class='mp-muted mp-prediction-notes'>{listed}</ol>" if notes else ""
    )

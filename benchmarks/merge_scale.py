"""Merging the ranks of a distributed job at scale: 2, 8, 32 and 128 ranks.

    python benchmarks/merge_scale.py [--ranks 2 8 32 128] [--repeats 5] [--opens 5] [--keep DIR]

One real profile of a small torch training loop (an MLP with Adam, 40
steps, 20 in detail: a few thousand timeline points, its layers and ops) is
recorded once with memprofile.profile(); each rank file is a copy of it with
Profile.distributed set (8 ranks a host, a few ms of start jitter) and its
memory scaled by a few per cent; one rank holds an extra 64 MiB buffer. The
files are written as a torchrun job's ranks write them
(NAME.rankR.memprofile.json.gz, rank_files.py).

Per rank count, in a fresh Python process each (so one count's memory does
not hide in the next's): merge time (median of the repeats, after one
untimed merge), the merge's peak Python memory (tracemalloc) and its growth
of the process's resident high-water mark (the first merge, memprofile
already imported), the merged report's size (save_html) and the merged
profile's JSON size. For the largest count, the time the report takes to
open in Debian's chromium (Playwright): from navigation to every bokeh
document being idle (all its views drawn), median of --opens page loads.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The rank that holds an extra buffer (modulo the world size).
EXTRA_RANK = 5
EXTRA_BYTES = 64 << 20
RANKS_PER_HOST = 8


def record_profile():
    """A real profile of a small training loop (torch on this CPU)."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # one process, not a job's rank
        os.environ.pop(var, None)
    import torch

    import memprofile

    torch.manual_seed(0)
    layers = [m for _ in range(4) for m in (torch.nn.Linear(256, 256), torch.nn.ReLU())]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters())
    with memprofile.profile(name="train", detail_steps=20, store=False) as profile:
        for _ in range(40):
            x = torch.randn(64, 256)
            loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (64,)))
            loss.backward()
            opt.step()
            opt.zero_grad()
    return profile


def _scale(d: dict, s: float) -> dict:
    return {k: int(v * s) for k, v in d.items()}


def rank_variant(base, rank: int, world: int, run_id: str, t0: float, rng: random.Random):
    """`base` as rank `rank` of a `world`-rank job: its memory scaled by a few per cent."""
    from memprofile.model.profile import RankInfo, TensorInfo

    p = copy.deepcopy(base)
    s = 1 + rng.uniform(-0.04, 0.04)
    for tl in p.timelines:
        tl.live_bytes = [int(v * s) for v in tl.live_bytes]
        tl.by_category = {k: [int(v * s) for v in vs] for k, vs in tl.by_category.items()}
    for dev in p.devices:
        dev.peak_bytes, dev.baseline_bytes, dev.end_bytes = (
            int(v * s) for v in (dev.peak_bytes, dev.baseline_bytes, dev.end_bytes)
        )
    peak = p.peak
    if peak is not None:
        peak.bytes = int(peak.bytes * s)
        peak.by_category, peak.by_layer, peak.by_op = (
            _scale(d, s) for d in (peak.by_category, peak.by_layer, peak.by_op)
        )
        peak.by_line = _scale(peak.by_line, s)
    if rank == EXTRA_RANK % world and peak is not None:
        # a buffer only this rank holds, from the peak to the end (e.g. a gathered shard)
        peak.bytes += EXTRA_BYTES
        peak.by_category["other"] = peak.by_category.get("other", 0) + EXTRA_BYTES
        peak.tensors.insert(0, TensorInfo([EXTRA_BYTES // 4], "float32", EXTRA_BYTES, "other", op="aten::empty"))
        dev = next(d for d in p.devices if d.name == peak.device)
        dev.peak_bytes += EXTRA_BYTES
        dev.end_bytes += EXTRA_BYTES
        tl = p.timeline(peak.device)
        if tl is not None:
            tl.live_bytes = [v + EXTRA_BYTES if t >= peak.time_s else v for t, v in zip(tl.t, tl.live_bytes)]
    p.id = f"{run_id}-{rank}"
    p.distributed = RankInfo(
        rank=rank,
        world_size=world,
        local_rank=rank % RANKS_PER_HOST,
        host=f"node{rank // RANKS_PER_HOST}",
        backend="nccl",
        run_id=run_id,
        started_unix_s=t0 + rng.uniform(0, 0.005),
    )
    return p


def write_ranks(base, world: int, folder: Path) -> int:
    """The `world` rank files of one job in `folder`; returns their total size."""
    from memprofile.rank_files import SUFFIX, safe_name

    rng = random.Random(world)
    run_id = f"bench{world}"
    t0 = time.time()
    total = 0
    for rank in range(world):
        path = folder / f"{safe_name(base.name)}.rank{rank}{SUFFIX}"
        rank_variant(base, rank, world, run_id, t0, rng).save(path)
        total += path.stat().st_size
    return total


def _status_bytes(key: str) -> int:
    """VmRSS or VmHWM of this process. (getrusage's ru_maxrss would not do: it
    survives exec, so a child started by a big parent reports the parent's.)"""
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith(key + ":"))
    return int(line.split()[1]) * 1024


def measure(folder: Path, repeats: int, report: Path) -> dict:
    """One rank count's figures (run in a fresh process by main())."""
    import gc
    import tracemalloc

    import memprofile.analysis.merge as merging
    import memprofile.model.codec  # noqa: F401  (imported before the memory is measured)

    gc.collect()
    rss0 = _status_bytes("VmRSS")
    merged = merging.merge(folder)
    rss_growth = _status_bytes("VmHWM") - rss0
    times = []
    for _ in range(repeats):
        del merged
        gc.collect()
        t = time.perf_counter()
        merged = merging.merge(folder)
        times.append(time.perf_counter() - t)
    del merged
    gc.collect()
    tracemalloc.start()
    merged = merging.merge(folder)
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    merged.save_html(report)  # warm: bokeh's imports
    t = time.perf_counter()
    merged.save_html(report)
    render_s = time.perf_counter() - t
    json_path = report.with_suffix(".memprofile.json")
    merged.save(json_path)
    gz_path = report.with_suffix(".memprofile.json.gz")
    merged.save(gz_path)
    return {
        "merge_s": statistics.median(times),
        "merge_range": [min(times), max(times)],
        "traced_peak": traced_peak,
        "rss_growth": rss_growth,
        "render_s": render_s,
        "report_bytes": report.stat().st_size,
        "json_bytes": json_path.stat().st_size,
        "json_gz_bytes": gz_path.stat().st_size,
    }


def open_times(report: Path, opens: int, min_canvases: int = 2) -> tuple[list[float], list[float]]:
    """Seconds from navigation to every bokeh document idle, one fresh page
    each; and the page's main-thread task time (Chrome's TaskDuration), which
    shows whether the page was busy or waiting."""
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("MEMPROFILE_CHROMIUM") or "/usr/bin/chromium"
    ready = "() => window.Bokeh && Bokeh.documents.length > 0 && Bokeh.documents.every(d => d.is_idle)"
    times, busy = [], []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        for _ in range(opens + 1):  # the first warms the browser's own caches, untimed
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            page.goto(report.resolve().as_uri(), wait_until="commit")
            page.wait_for_function(ready, polling="raf", timeout=60_000)
            times.append(page.evaluate("() => performance.now()") / 1000)  # ms since navigation began
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            busy.append(metrics["TaskDuration"])
            canvases = page.locator("canvas").count()
            context.close()
            if errors or canvases < min_canvases:
                raise RuntimeError(f"the report did not draw: {canvases} canvases, errors {errors}")
        browser.close()
    return times[1:], busy[1:]


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 8, 32, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--opens", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="write the rank files and reports here (default: a temp folder)")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child's job: one folder
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.repeats, args.report)))
        return

    t = time.perf_counter()
    base = record_profile()
    tl = base.timeline(base.peak_device.name) if base.peak_device else None
    print(
        f"recorded in {time.perf_counter() - t:.1f} s: {len(tl.t) if tl else 0} timeline points on "
        f"{base.peak_device.name if base.peak_device else '-'}, {len(base.layers)} layers, {len(base.ops)} ops, "
        f"{len(base.steps)} steps, {len(base.to_json()):,} B of JSON",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        rows, last_report = [], None
        for world in args.ranks:
            folder = root / f"ranks{world}"
            folder.mkdir(parents=True, exist_ok=True)
            files = write_ranks(base, world, folder)
            report = root / f"merged{world}.html"
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--measure",
                    str(folder),
                    "--report",
                    str(report),
                    "--repeats",
                    str(args.repeats),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r.update(world=world, files_bytes=files)
            rows.append(r)
            last_report = report
            print(f"{world} ranks: {r}", file=sys.stderr)
        opens, busy = open_times(last_report, args.opens) if last_report and args.opens else ([], [])
        floor: list[float] = []
        if opens:  # the same machine's floor, measured right after: an empty profile's report
            from memprofile.model.profile import Profile

            empty = root / "empty.html"
            Profile(id="empty", name="empty", started_at="", duration_s=0.0).save_html(empty)
            floor, _ = open_times(empty, args.opens, min_canvases=0)
        print(f"\nrank files: one rank {rows[0]['files_bytes'] // rows[0]['world']:,} B gzip-compressed\n")
        print(
            "| ranks | merge (median) | merge range | traced peak | RSS growth | render | report | JSON (gzip) "
            "| open (main thread busy) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            opened = (
                f"{statistics.median(opens):.2f} s ({min(opens):.2f}–{max(opens):.2f}; {statistics.median(busy):.2f} s)"
                if r is rows[-1] and opens
                else ""
            )
            print(
                f"| {r['world']} | {r['merge_s']:.2f} s | {r['merge_range'][0]:.2f}–{r['merge_range'][1]:.2f} s "
                f"| {_mb(r['traced_peak'])} | {_mb(r['rss_growth'])} | {r['render_s']:.2f} s "
                f"| {_mb(r['report_bytes'])} | {_mb(r['json_bytes'])} ({_mb(r['json_gz_bytes'])}) | {opened} |"
            )
        if floor:
            print(
                f"\nan empty profile's report (BokehJS alone) opened in {statistics.median(floor):.2f} s "
                f"({min(floor):.2f}–{max(floor):.2f}) in the same run"
            )


if __name__ == "__main__":
    main()

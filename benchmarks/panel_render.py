"""The side panel opening a 1,000,000-event profile: the comm message's size,
the kernel's time to build it, and the browser's time from the message's text
to the drawn view (JSON.parse + BokehJS embed_item + the next frame), in
Debian's chromium. Before the first view of a page, the kernel's own BokehJS
comes over the comm ("bokehjs"): its message's size, the kernel's time to
build it, and the browser's time from its text to BokehJS registered (JSON.parse
and the three scripts run from blob: URLs, as labextension/bokeh.ts does).

    python benchmarks/panel_render.py [--repeats 5]

Needs chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from benchmarks.render_report import million_event_profile  # noqa: E402
from memprofile.render.bokehjs import bokehjs_scripts  # noqa: E402
from memprofile.render.panel import panel_payload  # noqa: E402

LOAD_BOKEHJS = """
async (text) => {
  const t0 = performance.now();
  const { version, scripts } = JSON.parse(text);
  for (const code of scripts) {
    const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
    await new Promise((resolve, reject) => {
      const script = document.createElement('script');
      script.src = url;
      script.async = false;
      script.onload = resolve;
      script.onerror = reject;
      document.head.appendChild(script);
    });
    URL.revokeObjectURL(url);
  }
  if (!window.Bokeh[version]) throw new Error('BokehJS did not register');
  return performance.now() - t0;
}
"""
MEASURE = """
async ([text, view]) => {
  const t0 = performance.now();
  const data = JSON.parse(text);
  const target = document.createElement('div');
  target.style.width = '380px';
  document.body.appendChild(target);
  await window.Bokeh.embed.embed_item(data.views[view], target);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const ms = performance.now() - t0;
  const count = root => [...root.querySelectorAll('*')].reduce(
    (n, e) => n + (e.tagName === 'CANVAS' ? 1 : 0) + (e.shadowRoot ? count(e.shadowRoot) : 0), 0);
  const canvases = count(target);
  target.remove();
  return [ms, canvases];
}
"""


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    profile = million_event_profile()
    builds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        message = json.dumps({"type": "profile", **panel_payload(profile), "request_id": "r1"})
        builds.append(time.perf_counter() - t)
    print(f"1M-event profile: comm message {len(message):,} B, built in {statistics.median(builds):.2f} s (kernel)")
    import bokeh

    t = time.perf_counter()
    bokehjs = json.dumps(
        {"type": "bokehjs_scripts", "version": bokeh.__version__, "scripts": bokehjs_scripts(), "request_id": "r0"}
    )
    bokehjs_s = time.perf_counter() - t
    print(
        f"the kernel's BokehJS {bokeh.__version__}: comm message {len(bokehjs):,} B, built in {bokehjs_s:.3f} s "
        f"(kernel; once per page and bokeh version)"
    )
    from playwright.sync_api import sync_playwright

    chromium = os.environ.get("MEMPROFILE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        loads = []
        for _ in range(args.repeats):  # a fresh page each time: BokehJS loads once per page
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            loads.append(page.evaluate(LOAD_BOKEHJS, bokehjs))
            page.close()
        print(f"  BokehJS registered {statistics.median(loads):7.0f} ms after its message (median of {args.repeats})")
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.evaluate(LOAD_BOKEHJS, bokehjs)
        for view in ("timeline", "peak", "layers", "ops"):
            page.evaluate(MEASURE, [message, view])  # warm-up
            runs = [page.evaluate(MEASURE, [message, view]) for _ in range(args.repeats)]
            ms = statistics.median(r[0] for r in runs)
            print(
                f"  {view:<9} drawn {ms:7.0f} ms after the message (median of {args.repeats}; canvases: {runs[0][1]})"
            )
        browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

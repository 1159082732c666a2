/**
 * The side panel's width: wide enough for its charts' titles and legends when
 * it first opens, then the width the user dragged it to, in Lab and Notebook 7.
 */

import type { Widget } from '@lumino/widgets';

/**
 * The panel's width when it first opens. Lab and Notebook 7 open side panels at
 * their minimum (250 px), which cut the timeline's title and two-column legend
 * off; at 520 px they fit, and the notebook keeps ~500 px on a 1400 px screen.
 */
export const DEFAULT_PANEL_WIDTH = 520;
/** The panel never takes more than this share of the window's split. */
const MAX_PANEL_SHARE = 0.6;
const WIDTH_KEY = 'memprofile:panel-width';

/** What the sizing needs of a Lumino SplitPanel, checked by shape: the shell's copy of
 * @lumino/widgets need not be the one this extension was built with. */
interface ISplit {
  readonly widgets: ReadonlyArray<Widget>;
  readonly handleMoved: { connect(slot: () => void): unknown };
  setRelativeSizes(sizes: number[]): void;
}

/** The shell's split panel that holds `widget`'s side area, and that area (its child); null outside one. */
function sideSplit(widget: Widget): { split: ISplit; area: Widget } | null {
  for (let area = widget; area.parent; area = area.parent) {
    const parent = area.parent as unknown as Partial<ISplit>;
    if (typeof parent.setRelativeSizes === 'function' && parent.handleMoved) {
      return { split: parent as ISplit, area };
    }
  }
  return null;
}

function rememberedWidth(): number | null {
  try {
    const px = Number(window.localStorage.getItem(WIDTH_KEY));
    return px > 0 ? px : null;
  } catch {
    return null; // storage disabled: the default each time
  }
}

function rememberWidth(px: number): void {
  try {
    window.localStorage.setItem(WIDTH_KEY, String(Math.round(px)));
  } catch {
    // storage disabled
  }
}

/** Give `area` `px` of the split (at most MAX_PANEL_SHARE), from the widest other part: the main area. */
function setAreaWidth(split: ISplit, area: Widget, px: number): void {
  const widths = split.widgets.map(w => (w.isVisible ? w.node.getBoundingClientRect().width : 0));
  const index = split.widgets.indexOf(area);
  const target = Math.min(px, MAX_PANEL_SHARE * widths.reduce((a, b) => a + b, 0));
  let main = -1;
  widths.forEach((w, i) => {
    if (i !== index && (main < 0 || w > widths[main])) {
      main = i;
    }
  });
  if (index < 0 || main < 0 || Math.abs(widths[index] - target) < 2) {
    return;
  }
  widths[main] += widths[index] - target;
  widths[index] = target;
  split.setRelativeSizes(widths);
}

/**
 * Each time the panel shows, its side area gets the width the user last dragged
 * it to, or DEFAULT_PANEL_WIDTH. Lab's workspace keeps the shell's split sizes
 * (relative), Notebook 7's shell keeps none, and neither tells a width the user
 * chose from one the panel set; so the panel keeps its own, in localStorage: per
 * browser, the same in Lab and Notebook 7, and it needs no @jupyterlab/statedb.
 */
export function keepPanelWidth(panel: Widget): void {
  let found: ReturnType<typeof sideSplit> | undefined;
  let shown = false;
  // A ResizeObserver sees the panel show (0 -> its width) however it was opened:
  // command, card button, sidebar tab, or a restored layout.
  new ResizeObserver(() => {
    const visible = panel.isVisible && panel.node.offsetWidth > 0;
    if (visible && !shown) {
      if (found === undefined) {
        found = sideSplit(panel);
        // the split's handle was let go: the user chose a width
        found?.split.handleMoved.connect(() => {
          if (panel.isVisible) {
            rememberWidth(found!.area.node.getBoundingClientRect().width);
          }
        });
      }
      if (found) {
        setAreaWidth(found.split, found.area, rememberedWidth() ?? DEFAULT_PANEL_WIDTH);
      }
    }
    shown = visible;
  }).observe(panel.node);
}

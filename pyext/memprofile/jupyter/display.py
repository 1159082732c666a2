"""How a profile shows in a notebook: which views go into its output bundle.

- The custom MIME type (a summary card) for JupyterLab with the extension,
  plus static `text/html` (nbconvert, GitHub, frontends without the extension)
  and `text/plain`: always, unless the mode is "widget".
- An ipywidgets view (`application/vnd.jupyter.widget-view+json`) for
  frontends that render widgets but not the extension.

Modes (`%memprofile display MODE`, or MEMPROFILE_DISPLAY before the kernel
starts): "card" never adds the widget; "widget" shows the widget instead of
the card (also in JupyterLab); "auto" (default) adds the widget only where the
frontend is known to render widgets without having the extension: VS Code
(which starts kernels with VSCODE_PID set) and Colab (google.colab imported).
Not everywhere: each widget is a comm model whose state crosses to the
frontend, and nbclient saves widget state into the notebook, after which
nbconvert prefers the widget (loaded from a CDN) over the static HTML.
"""

from __future__ import annotations

import os
import sys

from memprofile.model.profile import Profile

WIDGET_MIME_TYPE = "application/vnd.jupyter.widget-view+json"
MODES = ("auto", "card", "widget")
_mode = os.environ.get("MEMPROFILE_DISPLAY", "auto").strip().lower()
if _mode not in MODES:
    _mode = "auto"


def display_mode() -> str:
    return _mode


def set_display_mode(mode: str) -> None:
    global _mode
    if mode not in MODES:
        raise ValueError(f"display mode must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "widget":
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            raise ValueError("display mode 'widget' needs ipywidgets: pip install 'ipywidgets>=8.1,<9'") from None
    _mode = mode


def widget_frontend() -> str | None:
    """The frontend this kernel serves, when it is one known to render
    ipywidgets without the memprofile extension; else None."""
    if "google.colab" in sys.modules:
        return "colab"
    if "VSCODE_PID" in os.environ:
        return "vscode"
    return None


def _wants_widget() -> bool:
    if _mode == "widget":
        return True
    if _mode == "card" or widget_frontend() is None:
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def notebook_bundle(profile: Profile) -> dict:
    """The output bundle of a displayed profile."""
    from memprofile.render.bundle import MIME_TYPE, mime_bundle

    bundle = mime_bundle(profile)
    if not _wants_widget():
        return bundle
    try:
        view = profile.widget()._repr_mimebundle_()
    except Exception as exc:  # the card and HTML still show; say why the widget does not
        bundle["text/plain"] += f"\n(memprofile: the widget view could not be made: {exc!r})"
        return bundle
    bundle[WIDGET_MIME_TYPE] = view[WIDGET_MIME_TYPE]
    if _mode == "widget":
        bundle.pop(MIME_TYPE, None)  # JupyterLab would prefer the card
    return bundle

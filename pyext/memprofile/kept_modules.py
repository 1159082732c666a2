"""memprofile's modules stay the first ones imported, whatever a user does
to `sys.modules`.

After `del sys.modules['memprofile…']`, the next lazy import inside
memprofile (a collector's, a renderer's) would load a second copy of that
module, with classes of its own: the first copy's objects then fail the
second copy's checks (`DetailWindow.of` refused a DetailWindow), and the
profile store, a module global, would start empty (`%reload_ext` lost every
stored profile). So the first copy's modules are kept where a re-import can
find them (an attribute of `sys`, which no `del sys.modules[...]` removes)
and put back: by `memprofile/__init__.py` when the package is imported
again (the import then returns the first package: a module may replace its
own entry in sys.modules while it runs), and at each magic and profile start.
"""

from __future__ import annotations

import sys

_KEPT = "_memprofile_modules"


def _kept() -> dict:
    kept = getattr(sys, _KEPT, None)
    if not isinstance(kept, dict):
        kept = {}
        setattr(sys, _KEPT, kept)
    return kept


def restore() -> None:
    """Keep every memprofile module imported so far; put back any that was
    removed from (or replaced in) sys.modules."""
    kept = _kept()
    for name, module in list(sys.modules.items()):
        if (name == "memprofile" or name.startswith("memprofile.")) and name not in kept:
            kept[name] = module
    for name, module in kept.items():
        if sys.modules.get(name) is not module:
            sys.modules[name] = module

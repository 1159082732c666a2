"""memprofile: a memory profiler for machine-learning notebooks.

Importing this package imports neither torch nor tensorflow: collectors load
frameworks lazily, and only when they are already imported by the user.
"""

from __future__ import annotations

import sys as _sys
import weakref as _weakref

_first_copy = getattr(_sys, "_memprofile_modules", None)
if isinstance(_first_copy, dict) and "memprofile" in _first_copy:
    # imported again after `del sys.modules[...]`: the first copy's modules go back, and this
    # import returns the first package (kept_modules.py says why)
    _sys.modules.update(_first_copy)

from memprofile._version import __version__  # noqa: E402  (after the first copy is back)
from memprofile.errors import CaptureError, MemprofileError, ProfileFormatError  # noqa: E402
from memprofile.model.codec import load  # noqa: E402
from memprofile.model.profile import CATEGORIES, SCHEMA_VERSION, Profile  # noqa: E402

#: Byte units for budgets: `assert p.peak_bytes < 512 * memprofile.MiB`.
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

__all__ = [
    "CATEGORIES",
    "SCHEMA_VERSION",
    "CaptureError",
    "GiB",
    "KiB",
    "MiB",
    "MemprofileError",
    "Profile",
    "ProfileFormatError",
    "__version__",
    "compare",
    "import_trace",
    "last",
    "load",
    "load_ipython_extension",
    "merge",
    "profile",
    "profiled",
    "profiles",
    "try_change",
    "unload_ipython_extension",
]


def profile(name: str | None = None, **options):
    """Profile a block: ``with memprofile.profile(name="step") as p: ...``.

    After the block, ``p.profile`` is the Profile (also ``memprofile.last()``).
    ``capacity_bytes=16 << 30``: the memory the run may use on its peak device, for the
    live feed's warnings ("full in about N steps"), instead of the device's own.
    """
    from memprofile.profiler import Profiler, caller_namespace
    from memprofile.whatif.block import block_in_function, block_source

    # live: names the block binds are seen at its end
    options["namespace"] = caller_namespace(options.get("namespace"))
    if not {"source", "rerun_source", "rerun"} & set(options) and _in_ipython():
        # what the block runs, for predictions and estimates (in a notebook only: a script's
        # code is never re-executed, it may read its data or write its files again)
        frame = _sys._getframe(1)
        if frame.f_locals is frame.f_globals:
            options["rerun_source"] = block_source(frame)
        else:
            options["rerun"] = _never_raising(block_in_function, frame)
            # a function's block may run once per step: the engine measures each shape once
            options.setdefault("whatif_memo", _site_memo(frame.f_code, frame.f_lineno))
    return Profiler(name=name, **options)


#: The what-if engine's outcomes per code site (a decorated function; a block in a function: its
#: code object and line), by the shapes it ran with (whatif/estimate.py): a site run once per
#: training step is measured once per shape, not after each step. Weak: gone with the code.
_SITE_MEMOS: _weakref.WeakKeyDictionary = _weakref.WeakKeyDictionary()


def _site_memo(code, line: int = 0) -> dict:
    return _SITE_MEMOS.setdefault(code, {}).setdefault(line, {})


def _never_raising(make, *args):
    """What re-executes a run, or why not: whatever the user's objects do when looked at, the
    user's own code runs (a profile that cannot keep its code replays instead)."""
    try:
        return make(*args)
    except Exception as e:  # noqa: BLE001
        return f"its code could not be kept for a re-run ({type(e).__name__}: {e})"


def _in_ipython() -> bool:
    shell = _sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return get is not None and get() is not None


def profiled(name: str | None = None, **options):
    """Profile each call of a function: ``@memprofile.profiled(name="step")``.

    The decorated function returns what it returns; its newest Profile is
    its ``.profile`` attribute (and ``memprofile.last()``), e.g. to hold a
    memory budget in a test: ``step(); assert step.profile.peak_bytes < 512 * MiB``.
    A call that raises keeps its profile and re-raises. Options are
    memprofile.profile()'s; objects are looked for in the function's module.
    """
    import functools
    import inspect

    from memprofile.profiler import Profiler

    def decorate(fn):
        if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"memprofile.profiled profiles a plain function's call; {fn.__qualname__} returns a "
                f"coroutine or generator that runs later: profile inside it with memprofile.profile()"
            )

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            extra = {}
            if not {"source", "rerun_source", "rerun"} & set(options) and _in_ipython():
                from memprofile.whatif.call import call_rerun

                # the call again, for predictions and estimates (the arguments held weakly); the
                # engine measures each shape once (a decorated step runs once per training step)
                extra = {"rerun": _never_raising(call_rerun, fn, args, kwargs), "whatif_memo": _site_memo(wrapper)}
            with Profiler(
                name=name or fn.__qualname__,
                namespace=options.get("namespace", fn.__globals__),
                **{**extra, **{k: v for k, v in options.items() if k != "namespace"}},
            ) as p:
                wrapper.profile = p
                return fn(*args, **kwargs)

        wrapper.profile = None
        return wrapper

    return decorate


def merge(paths, name: str | None = None):
    """One profile of a distributed job's ranks: `paths` are the ranks'
    profile files (NAME.rankR.memprofile.json.gz), the folder they were
    written to, or Profiles. The result is a MergedProfile: `.ranks` (each
    rank's Profile, with `.rank`), `.highest_rank`, `.merged` (every rank's
    peak and timeline, the imbalance, what the highest holds that the others
    do not); it shows the highest rank in detail."""
    from memprofile.analysis.merge import merge as _merge
    from memprofile.store import STORE

    merged = _merge(paths, name=name)
    STORE.add(merged)  # the panel lists it like any other
    return merged


def try_change(run, change: str, name: str = "trial", **options):
    """Profile `run()` as it is and under `change` ("amp", "inference_mode",
    "checkpoint=layer,..."): a Trial with both profiles and the measured
    difference (`.saving_bytes`, `.time_change`). `run` runs two or three times
    (once more as is when the first run creates state, see memprofile.trial)."""
    from memprofile.profiler import caller_namespace
    from memprofile.trial import run_trial

    options["namespace"] = caller_namespace(options.get("namespace"))
    return run_trial(run, change, name=name, **options)


def compare(a: Profile, b: Profile):
    """What changed from profile a to profile b (a Comparison)."""
    from memprofile.analysis.compare import compare as _compare
    from memprofile.render.compare import shown

    return shown(_compare(a, b))


def import_trace(path, name: str | None = None) -> Profile:
    """A Profile from a trace users already have: a PyTorch kineto/Chrome
    trace recorded with profile_memory=True (gzipped or not), or a
    TensorFlow XSpace (.xplane.pb, gzipped or not). Raises
    ProfileFormatError, saying why, for anything else."""
    from memprofile.importing import import_trace as _import

    return _import(path, name=name)


def last() -> Profile | None:
    """The newest profile of this kernel/process, or None."""
    from memprofile.store import STORE

    return STORE.last()


def profiles() -> list[Profile]:
    """Every stored profile of this kernel/process, oldest first (bounded store)."""
    from memprofile.store import STORE

    return STORE.all()


def load_ipython_extension(ipython) -> None:
    from memprofile.jupyter.magic import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython) -> None:
    from memprofile.jupyter.magic import unload_ipython_extension as _unload

    _unload(ipython)


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "memprofile"}]


from memprofile import kept_modules as _kept_modules  # noqa: E402  (after the package's names)

_kept_modules.restore()

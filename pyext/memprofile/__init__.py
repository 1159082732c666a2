"""memprofile: a memory profiler for machine-learning notebooks.

Importing this package imports neither torch nor tensorflow: collectors load
frameworks lazily, and only when they are already imported by the user.
"""

from __future__ import annotations

from memprofile._version import __version__
from memprofile.errors import CaptureError, MemprofileError, ProfileFormatError
from memprofile.model.codec import load
from memprofile.model.profile import CATEGORIES, SCHEMA_VERSION, Profile

__all__ = [
    "CATEGORIES",
    "SCHEMA_VERSION",
    "CaptureError",
    "MemprofileError",
    "Profile",
    "ProfileFormatError",
    "__version__",
    "compare",
    "import_trace",
    "last",
    "load",
    "load_ipython_extension",
    "profile",
    "profiles",
    "try_change",
    "unload_ipython_extension",
]


def profile(name: str | None = None, **options):
    """Profile a block: ``with memprofile.profile(name="step") as p: ...``.

    After the block, ``p.profile`` is the Profile (also ``memprofile.last()``).
    """
    from memprofile.profiler import Profiler, caller_namespace

    # live: names the block binds are seen at its end
    options["namespace"] = caller_namespace(options.get("namespace"))
    return Profiler(name=name, **options)


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

    return _compare(a, b)


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

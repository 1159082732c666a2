"""tf.data's buffers named as users know them: "tf.data cache (line 2:
`ds = ds.cache()`)", not the op that made the element it keeps.

How:
- Where: tf.data's iterators open a TraceMe per GetNext named by their chain,
  "Iterator::Root::Prefetch::BatchV2::Shuffle::MemoryCacheImpl::Map"; the
  XSpace's memory events inside one (xspace.py reads them as scopes) were
  made by its innermost stage (here Map). The element belongs to the first
  stage above that keeps elements (a cache, a shuffle buffer, a prefetch
  buffer) when only stages that pass elements on (take, repeat, filter, ...)
  lie between; else (a batch or map above copies it) to the stage that made it.
- Which line: for the run, `Dataset.cache`, `.shuffle` and `.prefetch` record
  the caller's line (the first frame outside TF and Keras: the cell, a function
  of another cell, an imported module) on the dataset they return, kept for
  the process (a pipeline built in an earlier profiled cell keeps its line). A
  pipeline's stages are its datasets' `_inputs()` chain (the namespace's
  datasets and those built in the run); a buffer is matched to its dataset by
  kind and by how many buffers of that kind lie below it (Keras may add stages
  above the user's). A dataset built where nothing recorded it (before any
  profiled cell) is found in the notebook's earlier cells (IPython's `In`) by
  its variable and the transformation's name.
"""

from __future__ import annotations

import ast
import linecache
import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

from memprofile.capture.tensorflow.patching import Patches, wrapped

#: The methods whose datasets hold elements, and the kind each makes.
METHODS = {"cache": "cache", "shuffle": "shuffle buffer", "prefetch": "prefetch buffer"}
#: Iterator stage (TraceMe name) -> the kind of buffer it keeps.
_STAGE_KINDS = {
    "MemoryCache": "cache",
    "Cache": "cache",
    "FileCache": "cache",
    "Shuffle": "shuffle buffer",
    "ShuffleAndRepeat": "shuffle buffer",
    "Prefetch": "prefetch buffer",
}
#: Stages that hand their input's elements on unchanged.
_PASS_ON = frozenset(
    {
        "Take",
        "FiniteTake",
        "Skip",
        "FiniteSkip",
        "Repeat",
        "ForeverRepeat",
        "FiniteRepeat",
        "Filter",
        "Shard",
        "Options",
        "Model",
        "MaxIntraOpParallelism",
        "PrivateThreadPool",
        "AssertCardinality",
        "AssertNext",
        "Root",
    }
)
#: What a stage that makes elements is called in tf.data's Python API.
_STAGE_NAMES = {"TensorSlice": "from_tensor_slices", "Tensor": "from_tensors", "FlatMap": "flat_map"}
#: The packages whose calls are not the user's (Keras's own prefetch in fit): by their installed
#: folders, so a user's project folder named keras/ or memprofile/ is still the user's.
_LIBRARIES = ("tensorflow", "keras", "tf_keras", "memprofile")


def _library_dirs() -> tuple[str, ...]:
    dirs = []
    for name in _LIBRARIES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            dirs.append(os.path.dirname(os.path.abspath(path)) + os.sep)
    return tuple(dirs)


PREFIX = "tf.data "


@dataclass(frozen=True)
class Site:
    """Where a transformation was called: file, line, the line's text."""

    filename: str
    line: int
    text: str

    def label(self, cell_file: str | None) -> str:
        where = f"line {self.line}" if self.filename == cell_file else f"{_source(self.filename)}, line {self.line}"
        return f"{where}: `{self.text}`" if self.text else where


def _source(filename: str) -> str:
    """Where a line other than the profiled cell's is: a cell or a file."""
    if filename.startswith("<cell In["):
        return filename[1:-1]
    base = os.path.basename(filename)
    if filename.startswith("<") or "ipykernel_" in filename:
        return "another cell"
    return base


#: Dataset -> the site of the call that made it (the process's: later cells read it too).
_sites: weakref.WeakKeyDictionary[Any, Site] = weakref.WeakKeyDictionary()
#: A cache dataset -> the bytes its elements held when a profiled run's events ended: a
#: later run that starts with it finds them there before the cell (no event makes them).
_held: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _caller_site() -> Site | None:
    """The line that called the transformation; None when TF or Keras called it
    (Keras's own prefetch in fit is not the user's)."""
    frame = sys._getframe(2)
    name = frame.f_code.co_filename
    if name.startswith(_library_dirs()):
        return None
    text = linecache.getline(name, frame.f_lineno, frame.f_globals).strip()
    return Site(name, frame.f_lineno, text)


def _site_of(ds: Any) -> Site | None:
    try:
        return _sites.get(ds)
    except TypeError:
        return None


def _caches_in(ds: Any, limit: int = 64) -> list[Any]:
    out = []
    while ds is not None and limit > 0:
        limit -= 1
        if _key(type(ds).__name__) == "cache":
            out.append(ds)
        try:
            inputs = ds._inputs()
        except Exception:
            break
        ds = inputs[0] if len(inputs) == 1 else None
    return out


def cache_label(site: Site, cell_file: str | None) -> str:
    return f"{PREFIX}cache ({site.label(cell_file)})"


def _key(name: str) -> str:
    """A stage's name as Python's dataset class and TF's iterator both spell it:
    "_ShuffleDataset" and "Shuffle", "CacheDataset" and "MemoryCache" ("cache")."""
    key = name.lstrip("_").removesuffix("Dataset").removeprefix("Parallel").removeprefix("Memory")
    while key and key[-1].isdigit():
        key = key[:-1]
    return key.removesuffix("V").lower()


def chain_of(ds: Any, limit: int = 64) -> list[tuple[str, Site | None]]:
    """The pipeline from `ds` down to its source: (stage key, its site) per dataset."""
    out: list[tuple[str, Site | None]] = []
    while ds is not None and len(out) < limit:
        try:
            site = _sites.get(ds)
        except TypeError:
            site = None
        out.append((_key(type(ds).__name__), site))
        try:
            inputs = ds._inputs()
        except Exception:
            break
        ds = inputs[0] if len(inputs) == 1 else None
    return out


class Pipelines:
    """The run's tf.data pipelines as Python built them, and names for their buffers."""

    def __init__(self) -> None:
        self.chains: list[list[tuple[str, Site | None]]] = []
        self.cell_file: str | None = None
        #: Each cache's site -> the cache dataset (weakly), and the label a run gave it -> its site.
        self.caches: dict[Site, Any] = {}
        self.label_sites: dict[str, Site] = {}
        #: Caches found filled at the start (a profiled run before saw them fill):
        #: (site, bytes, the cache dataset, weakly).
        self.held: list[tuple[Site, int, Any]] = []
        self._seen: set[tuple] = set()

    def add(self, ds: Any) -> None:
        self.add_chain(chain_of(ds))
        for cache in _caches_in(ds):
            site = _site_of(cache)
            if site is not None:
                self.caches[site] = weakref.ref(cache)
            held = _held.get(cache)
            if held and site is not None and all(h[0] != site for h in self.held):
                self.held.append((site, held, weakref.ref(cache)))

    def merge(self, other: Pipelines) -> None:
        for chain in other.chains:
            self.add_chain(chain)
        for site, ref in other.caches.items():
            self.caches.setdefault(site, ref)

    def remember(self, owners: dict[str, int]) -> None:
        """Bytes each named cache holds at the end of the run's events, for the next run."""
        for label, held in owners.items():
            site = self.label_sites.get(label)
            ref = self.caches.get(site) if site is not None else None
            cache = ref() if ref is not None else None
            if cache is not None:
                try:
                    _held[cache] = held
                except TypeError:
                    pass

    def add_chain(self, chain: list[tuple[str, Site | None]]) -> None:
        key = tuple(chain)
        if key not in self._seen:
            self._seen.add(key)
            self.chains.append(chain)

    def patch(self, tf: Any, patches: Patches) -> None:
        """Dataset.cache/shuffle/prefetch record their caller's line for the run."""
        cls = getattr(getattr(tf, "data", None), "Dataset", None)
        if cls is None:
            return
        for method in METHODS:
            original = cls.__dict__.get(method)
            if original is None or hasattr(original, "__memprofile_original__"):
                continue
            patches.replace(cls, method, wrapped(self._recording(original), original), original)

    def _recording(self, original: Any) -> Any:
        def recorded(ds: Any, *args: Any, **kwargs: Any) -> Any:
            out = original(ds, *args, **kwargs)
            try:
                site = _caller_site()
                if site is not None:
                    _sites[out] = site
                self.add(out)
            except Exception:
                pass  # naming a buffer never fails the user's pipeline
            return out

        return recorded

    def resolver(self, scopes: set[str], history: list[str] | None = None) -> BufferNames:
        return BufferNames(self, [s for s in scopes if s.startswith("Iterator::")], history or [])


def _stages(scope: str) -> list[str]:
    """An iterator scope's stages from Root down ("MemoryCacheImpl", the
    cache's filling pass, is its MemoryCache)."""
    return [s.removesuffix("Impl") for s in scope.split("::")[1:]]


def _stage_name(stage: str) -> str:
    base = stage.removeprefix("Parallel").removeprefix("Legacy")
    while base and base[-1].isdigit():
        base = base[:-1]
    base = base.removesuffix("V")
    return _STAGE_NAMES.get(base, base.lower())


class BufferNames:
    """Iterator scope -> the owner's name ("tf.data cache (line 2: `...`)")."""

    def __init__(self, pipelines: Pipelines, scopes: list[str], history: list[str]) -> None:
        self._pipelines = pipelines
        self._longest = sorted((_stages(s) for s in scopes), key=len, reverse=True)
        self._history = history
        self._names: dict[str, str] = {}

    def name(self, scope: str) -> str:
        got = self._names.get(scope)
        if got is None:
            got = self._names[scope] = self._name(scope)
        return got

    def _name(self, scope: str) -> str:
        stages = _stages(scope)
        if not stages:
            return PREFIX + "pipeline"
        holder = len(stages) - 1
        for j in range(len(stages) - 2, -1, -1):
            if stages[j] in _STAGE_KINDS:
                holder = j
                break
            if stages[j] not in _PASS_ON:
                break
        kind = _STAGE_KINDS.get(stages[holder])
        if kind is None:
            return PREFIX + _stage_name(stages[holder])
        site = self._site(stages, holder, kind)
        if site is None:
            return PREFIX + kind
        label = f"{PREFIX}{kind} ({site.label(self._pipelines.cell_file)})"
        self._pipelines.label_sites[label] = site
        return label

    def _site(self, stages: list[str], holder: int, kind: str) -> Site | None:
        """The site of the dataset behind stage `holder`: the Python pipeline
        whose stages line up with the iterator's (Keras may add stages above
        the user's), the most stages agreeing."""
        full = next((c for c in self._longest if c[: holder + 1] == stages[: holder + 1]), stages)
        keys = [_key(s) for s in full]
        best: Site | None = None
        best_score = 0
        for chain in self._pipelines.chains:
            for offset in range(0, holder + 1):
                at = holder - offset
                if at >= len(chain) or chain[at][0] != keys[holder]:
                    continue
                span = min(len(chain), len(keys) - offset)
                if any(chain[i][0] != keys[offset + i] for i in range(span)):
                    continue
                site = chain[at][1]
                if site is not None and span > best_score:
                    best, best_score = site, span
        if best is None:
            below = sum(1 for s in full[holder + 1 :] if _STAGE_KINDS.get(s) == kind)
            best = self._from_history(kind, below)
        return best

    def _from_history(self, kind: str, below: int) -> Site | None:
        """A pipeline built before any profiled cell: the newest earlier cell
        with that transformation (the `below`-th from its last)."""
        method = next(m for m, k in METHODS.items() if k == kind)
        for n in range(len(self._history) - 2, 0, -1):  # the last is the profiled cell
            lines = _calls_of(self._history[n], method)
            if len(lines) > below:
                line = lines[len(lines) - 1 - below]
                text = self._history[n].splitlines()[line - 1].strip()
                return Site(f"<cell In[{n}]>", line, text)
        return None


def _calls_of(source: str, method: str) -> list[int]:
    """Lines of `.method(...)` calls in `source` (a cell), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == method:
            found.append(node.func.end_lineno or node.lineno)
    return sorted(found)

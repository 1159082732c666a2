"""Every module the run saw, by qualified name (`encoder.layers.3.self_attn`): the trees of the
namespace's models named at the start, modules first seen in a call named under their parent,
and models built during the run renamed after the variable that holds them at the end."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from memprofile.capture.names import root_of
from memprofile.capture.namespace import walk_namespace


class LayerTree:
    """Qualified names of modules, their types and parents."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}  # id(module) -> its name
        self.roots: set[int] = set()  # id() of the root modules
        self.modules: dict[str, weakref.ref] = {}
        self.types: dict[str, str] = {}
        self.parents: dict[str, str] = {}

    def root_of(self, name: str) -> str:
        return root_of(name, self.parents)

    def qualname(self, module: Any, parent: Any | None) -> str:
        """The name of `module`, called from `parent` (None: a root), named now if it is new."""
        key = id(module)
        name = self.names.get(key)
        if name is not None:
            return name
        if parent is None:
            name = type(module).__name__
        else:
            pname = self.names[id(parent)]
            attr = next((k for k, v in parent._modules.items() if v is module), None)
            local = attr if attr is not None else f"<{type(module).__name__}>"
            name = self.child_name(pname, local) if id(parent) in self.roots else f"{pname}.{local}"
            self.parents.setdefault(name, pname)
        if parent is None:
            self.roots.add(key)
        self.register(module, name, self.parents.get(name))
        return name

    def child_name(self, root: str, local: str) -> str:
        """A root's children go by their own names (`encoder.layers.3`), unless
        another model in the notebook already has a module (or is a model) of that
        name, or it is the root's own: then they carry their root's
        (`critic.encoder.layers.3`, `classifier.classifier`)."""
        owner = self.parents.get(local)
        if local in self.modules and (owner is None or owner.split(".", 1)[0] != root):
            # taken by another tree's module, or by a root (`classifier = BertFor...(...)` has a
            # child `.classifier`: by its own name it would be its root's parent: a cycle)
            return f"{root}.{local}"
        if local == root:
            return f"{root}.{local}"
        return local

    def register(self, module: Any, name: str, parent: str | None) -> None:
        self.names[id(module)] = name
        self.modules.setdefault(name, weakref.ref(module))
        self.types.setdefault(name, type(module).__name__)
        if parent is not None and parent != name:
            self.parents.setdefault(name, parent)

    def name_roots(self, modules: list[tuple[str, Any]], param_layer: dict[int, str]) -> None:
        """Qualified names for every module reachable from the namespace (`modules`: (variable,
        module)); the largest root names a submodule also bound to its own variable. Each
        parameter's layer goes into `param_layer`."""
        unique = {id(m): (n, m) for n, m in reversed(modules)}
        ordered = sorted(unique.values(), key=lambda nm: -sum(1 for _ in nm[1].modules()))
        for var, root in ordered:
            if id(root) in self.names:
                continue
            self.roots.add(id(root))
            self.register(root, var, None)
            for p in root.parameters(recurse=False):
                param_layer.setdefault(id(p), var)
            for sub, module in root.named_modules():
                if sub and id(module) not in self.names:
                    top = sub.split(".", 1)[0]
                    prefix = self.child_name(var, top)[: -len(top)]
                    name = prefix + sub
                    parent = prefix + sub.rsplit(".", 1)[0] if "." in sub else var
                    self.register(module, name, parent)
                for p in module.parameters(recurse=False):
                    param_layer.setdefault(id(p), self.names[id(module)])

    def trees_not_run(self, ran: set[str], ran_ids: set[int]) -> set[str]:
        """The roots of the known trees of which no module has run (`ran`: names; `ran_ids`: id()s)."""
        parents = self.parents
        done = {root_of(n, parents) for n in ran}
        done.update(root_of(self.names[k], parents) for k in ran_ids if k in self.names)
        return {n for n in self.modules if parents.get(n) is None and n not in done}

    def new_root_names(self, namespace: dict[str, Any], torch: Any) -> dict[str, str]:
        """A model built during the run was named by its type when it first
        ran (`Sequential`); the namespace now names it (`net`): {old: new}."""
        by_id = {key: self.names[key] for key in self.roots if key in self.names}
        typed = {
            key: name
            for key, name in by_id.items()
            if (ref := self.modules.get(name)) is not None
            and (m := ref()) is not None
            and id(m) == key
            and name == type(m).__name__
        }
        if not typed:
            return {}
        found: dict[str, str] = {}

        def take(variable: str, path: str, value: Any, via: str) -> bool:
            if id(value) in typed and via == "variable" and path.isidentifier():
                found.setdefault(typed[id(value)], path)
            return isinstance(value, torch.nn.Module | torch.Tensor)

        walk_namespace(namespace, take)

        def free(name: str) -> bool:
            """No module goes by it, or an old root the variable no longer holds; never a layer
            of a tree (`classifier = BertForSequenceClassification(...)`: its `.classifier`
            head), which would then be its own root's parent."""
            ref = self.modules.get(name)
            module = ref() if ref is not None else None
            return module is None or (namespace.get(name) is not module and name not in self.parents)

        return {old: new for old, new in found.items() if free(new)}

    def rename(self, renames: dict[str, str]) -> Callable[[str], str]:
        """Rename trees ({old root: new root}) here; returns the renaming, for names kept elsewhere."""

        def renamed(name: str) -> str:
            head, dot, rest = name.partition(".")
            new = renames.get(head)
            return (new + dot + rest) if new is not None else name

        self.modules = {renamed(k): v for k, v in self.modules.items()}
        self.types = {renamed(k): v for k, v in self.types.items()}
        self.parents = {renamed(k): renamed(v) for k, v in self.parents.items()}
        self.names = {k: renamed(v) for k, v in self.names.items()}
        return renamed

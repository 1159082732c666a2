"""`%%memprofile` (profile a cell) and `%memprofile` (list/show/export/clear).

The cell runs as IPython would run it: IPython's input transformers (magics,
`!cmd`) and AST transformers apply, variables land in the user namespace, the
value of a last expression is returned (so it shows as Out[n]). If the cell
raises, the profile is stored and displayed first, then the exception
propagates unchanged.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import shlex
from types import CodeType
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from memprofile import kept_modules, store  # store: the module, as tests swap its STORE
from memprofile.capture import lines
from memprofile.capture.base import DetailWindow
from memprofile.capture.host import MAX_INTERVAL_S, check_interval
from memprofile.errors import MemprofileError, writing
from memprofile.model.profile import Profile
from memprofile.profiler import Profiler, parse_budget

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

LINE_USAGE = """\
%memprofile list                 the profiles of this kernel, oldest first
%memprofile show [ID|NAME|-1]    display a profile (default: the newest)
%memprofile show PATH            display a saved profile (.json, .json.gz), or merge and display the rank
                                 profiles of a distributed job (their folder); it joins the panel's list
%memprofile export PATH [ID]     write a profile: .html (report), .json or .json.gz
%memprofile clear                forget every stored profile
%memprofile compare A B          peak, kinds, layers and ops of two profiles side by side
%memprofile insert SUGGESTION [ID]  replace this cell with a suggestion's code (default: the newest profile)
%memprofile display [auto|card|widget]  how profiles show (widget: ipywidgets, for frontends without the extension)
%%memprofile [options]           profile the cell below (see %%memprofile --help)"""


def compile_cell(shell, cell: str) -> tuple[CodeType | None, CodeType | None]:
    """Compile `cell` the way run_cell would: (statements, last expression),
    with each statement marking its line for the profile (capture/lines.py).

    Raises SyntaxError before anything runs, so a cell that cannot compile is
    never profiled."""
    transformed = shell.transform_cell(cell)
    filename = shell.compile.cache(transformed, cell_number(shell), raw_code=cell)
    tree = shell.compile.ast_parse(transformed, filename=filename)
    tree = shell.transform_ast(tree)
    if tree is None:  # an AST transformer rejected the cell and already said why
        return None, None
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = tree.body.pop()
        last_line = expr.lineno
        with shell.compile.extra_flags(_TOP_LEVEL_AWAIT):
            last = shell.compile(ast.Expression(expr.value), filename, "eval")
        # The last expression's line is marked by a statement of its own.
        tree.body.append(lines.mark_statement(last_line, expr))
    marked = lines.instrument(tree)
    if last is not None:
        marked.tree.body.pop(-2)  # instrument marked the mark itself: one is enough
    with shell.compile.extra_flags(_TOP_LEVEL_AWAIT):
        return marked.compile(shell.compile, filename), last


# Top-level `await` compiles as it does in IPython: the code object is then a
# coroutine function, run by run_awaitable below.
_TOP_LEVEL_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def cell_number(shell) -> int:
    """The number IPython shows for the running cell (In [N], Cell In[N]).

    IPython 9 counts execution_count up before it runs a cell, older ones after;
    the running cell's ExecutionResult has the number either way."""
    running = getattr(shell.displayhook, "exec_result", None)
    if running is not None and running.execution_count is not None:
        return running.execution_count
    return shell.displayhook.prompt_count


def run_awaitable(awaitable):
    """Run a top-level-await cell's coroutine to its end from a magic (a plain
    function). Outside a kernel it runs on IPython's own asyncio loop, as
    IPython runs such cells. In a kernel the kernel's loop is running this
    very cell and cannot be re-entered, so the coroutine runs on a loop of
    memprofile's, in this thread, with the kernel's set aside meanwhile."""
    from IPython.core.async_helpers import get_asyncio_loop

    loop = get_asyncio_loop()
    running = asyncio.events._get_running_loop()
    if loop.is_running() or loop is running:
        loop = _own_loop()
    asyncio.events._set_running_loop(None)
    try:
        return loop.run_until_complete(awaitable)
    finally:
        asyncio.events._set_running_loop(running)


_loop: asyncio.AbstractEventLoop | None = None


def _own_loop() -> asyncio.AbstractEventLoop:
    """One loop for every profiled await cell, so what one cell starts on it
    (a task, a client session) is still there for the next."""
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
    return _loop


def _run_code(code: CodeType, shell):
    """exec/eval `code` in the user namespace (eval runs "exec" code too, giving None)."""
    __tracebackhide__ = True  # noqa: F841
    result = eval(code, shell.user_global_ns, shell.user_ns)
    if code.co_flags & inspect.CO_COROUTINE:  # the cell awaits at top level
        return run_awaitable(result)
    return result


def run_compiled(shell, body: CodeType | None, last: CodeType | None):
    """Run a compiled cell in the user namespace; return the last expression's value."""
    __tracebackhide__ = True  # noqa: F841  (IPython hides this frame in tracebacks)
    if body is not None:
        _run_code(body, shell)
    if last is not None:
        return _run_code(last, shell)
    return None


def try_in_kernel(profile: Profile, change: str):
    """Run a profiled cell's code again in this kernel, as is and changed (the
    panel's and the widget's "Try it"); the profile's suggestion for that
    change gets the measurement."""
    from IPython import get_ipython

    from memprofile.trial import record_measurement, run_trial

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("no IPython kernel: use memprofile.try_change(fn, change) instead")
    body, last = compile_cell(shell, profile.source)

    def run() -> None:
        run_compiled(shell, body, last)

    trial = run_trial(run, change, name=profile.name, namespace=shell.user_ns, source=profile.source,
                      cell_lines=True)
    record_measurement(profile, trial.change, trial.comparison)
    return trial


@magics_class
class MemprofileMagics(Magics):
    # Registered on a shell (load_ipython_extension): never None here, unlike Magics' own annotation.
    shell: InteractiveShell

    @magic_arguments()
    @argument("--name", "-n", help="name of the profile (default: In [N])")
    @argument(
        "--interval",
        type=float,
        default=5.0,
        metavar="MS",
        help="host memory sampling interval in milliseconds (default 5)",
    )
    @argument(
        "--no-reset-peak",
        action="store_true",
        help="leave the peak counters alone: the OS's peak RSS (Linux VmHWM), TF's get_memory_info peak and "
        "torch.cuda.max_memory_allocated read after the cell as after a bare run (no per-step TF or CUDA peaks)",
    )
    @argument("--no-shapes", action="store_true", help="PyTorch: do not record op input shapes")
    @argument(
        "--stack",
        action="store_true",
        help="PyTorch: record Python stacks (torch.profiler with_stack=True; several times slower)",
    )
    @argument(
        "--cuda-history",
        action="store_true",
        help="PyTorch on CUDA: record allocation stack traces (torch.cuda.memory._record_memory_history)",
    )
    @argument("--no-torch", action="store_true", help="do not profile PyTorch even if it is imported")
    @argument("--no-tf", action="store_true", help="do not profile TensorFlow even if it is imported")
    @argument(
        "--tf-max-events",
        type=int,
        default=None,
        metavar="N",
        help="TensorFlow: keep tensor shapes for the first N memory events only (default 500000)",
    )
    @argument(
        "--try",
        dest="try_change",
        metavar="CHANGE",
        help="run the cell as is (twice when the first run creates state) and with CHANGE applied in place "
        "(amp, inference_mode, checkpoint[=layer,...]), and show both and the measured difference; the "
        "cell's effects happen two or three times",
    )
    @argument(
        "--detail-steps",
        default="3",
        metavar="N|A-B|all",
        help="training steps (optimizer steps, Keras batches) recorded in full detail: ops, layers, kinds: "
        "the first N (default 3), steps A to B (10-12), or all; the other steps are measured by their "
        "boundaries (each one's peak) at almost no cost",
    )
    @argument(
        "--budget",
        default=None,
        metavar="SIZE",
        help="the profiler's own memory budget, e.g. 512M or 2G (default: 1G or a tenth of the available "
        "memory, whichever is smaller); past it the detail ends and the profile says so",
    )
    @argument("--quiet", "-q", action="store_true", help="store the profile without displaying it")
    @no_var_expand
    @line_cell_magic
    def memprofile(self, line: str, cell: str | None = None):
        """Profile the memory of a cell: %%memprofile [--name NAME] [--interval MS] [--quiet]."""
        __tracebackhide__ = True  # noqa: F841
        kept_modules.restore()  # before any lazy import: a user may have deleted memprofile's modules
        if cell is None:
            return self._line_command(line)
        args = self._parse(line)
        count = cell_number(self.shell)
        options = dict(
            source=cell,
            host_interval_s=args.interval / 1000.0,
            reset_os_peak=not args.no_reset_peak,
            torch=False if args.no_torch else None,
            tensorflow=False if args.no_tf else None,
            tf_max_events=args.tf_max_events,
            record_shapes=not args.no_shapes,
            with_stack=args.stack,
            cuda_history=args.cuda_history,
            namespace=self.shell.user_ns,
            cell_lines=True,
            detail_steps=args.detail_steps,
            budget_bytes=args.budget,
        )
        name = args.name or f"In [{count}]"
        body, last = compile_cell(self.shell, cell)  # a SyntaxError runs nothing: no profile
        if args.try_change:
            return self._try(args.try_change, name, body, last, options, quiet=args.quiet)
        profiler = Profiler(name=name, **options)
        profiler.start()
        try:
            result = run_compiled(self.shell, body, last)
        except BaseException as exc:
            profile = profiler.stop(exc)
            if not args.quiet:
                display(profile)
            raise
        cached = result is not None and self.shell.displayhook.do_full_cache and not self.shell.displayhook.quiet()
        profile = profiler.stop(output=(count, result) if cached else None)
        if not args.quiet:
            display(profile)
        return result

    def _try(self, change: str, name: str, body, last, options: dict, quiet: bool):
        from memprofile.trial import run_trial

        results: list = []

        def run() -> None:
            results.append(run_compiled(self.shell, body, last))

        print(f"memprofile: running the cell as is (twice when the first run creates state, such as an "
              f"optimizer's), then with {change}: its effects happen two or three times")
        trial = run_trial(run, change, name=name, **options)
        if not quiet:  # both cards, then what changed between them
            display(trial.before)
            display(trial.after)
            display(trial)
        return results[-1] if results else None

    def _parse(self, line: str):
        try:  # shell quoting, as in the line commands: --name "two words"
            args = self.memprofile.parser.parse_args(shlex.split(line))
        except ValueError as exc:  # shlex: "No closing quotation"
            raise UsageError(f"{exc}\n\n{self.memprofile.parser.format_help()}") from None
        except UsageError as exc:
            raise UsageError(f"{exc}\n\n{self.memprofile.parser.format_help()}") from None
        try:
            check_interval(args.interval / 1000.0)  # the sampler's own check, said in milliseconds here
        except ValueError:
            raise UsageError(f"--interval must be a number of milliseconds above 0 and at most "
                             f"{MAX_INTERVAL_S * 1000:g}, got {args.interval}\n\n"
                             f"{self.memprofile.parser.format_help()}") from None
        if args.tf_max_events is not None and args.tf_max_events < 0:
            raise UsageError(f"--tf-max-events must be 0 or more, got {args.tf_max_events}")
        try:
            args.detail_steps = parse_detail_steps(args.detail_steps)
            args.budget = parse_budget(args.budget) if args.budget is not None else None
        except ValueError as exc:
            raise UsageError(f"{exc}\n\n{self.memprofile.parser.format_help()}") from None
        if args.try_change:
            from memprofile.trial import parse_change

            try:
                parse_change(args.try_change)
            except MemprofileError as exc:
                raise UsageError(f"{exc}\n\n{self.memprofile.parser.format_help()}") from None
        return args

    def _line_command(self, line: str):
        try:
            words = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"{exc}\n\n{LINE_USAGE}") from None
        if not words:
            raise UsageError(f"%memprofile needs a command\n\n{LINE_USAGE}")
        command, rest = words[0], words[1:]
        try:
            if command == "list" and not rest:
                return self._list()
            if command == "show" and len(rest) <= 1:
                display(_stored_or_read(rest[0] if rest else "-1"))
                return None
            if command == "export" and 1 <= len(rest) <= 2:
                return self._export(rest[0], _key(rest[1] if len(rest) > 1 else "-1"))
            if command == "compare" and len(rest) == 2:
                from memprofile.analysis.compare import compare

                display(compare(store.STORE.get(_key(rest[0])), store.STORE.get(_key(rest[1]))))
                return None
            if command == "insert" and 1 <= len(rest) <= 2:
                return self._insert(rest[0], _key(rest[1] if len(rest) > 1 else "-1"))
            if command == "display" and len(rest) <= 1:
                return self._display_mode(rest[0] if rest else None)
            if command == "clear" and not rest:
                store.STORE.clear()
                print("memprofile: cleared every stored profile")
                return None
        except KeyError as exc:
            raise UsageError(exc.args[0]) from None
        except MemprofileError as exc:
            raise UsageError(str(exc)) from None
        raise UsageError(f"unknown or malformed command: %memprofile {line}\n\n{LINE_USAGE}")

    def _list(self) -> None:
        from memprofile.units import fmt_bytes, fmt_seconds

        profiles = store.STORE.all()
        if not profiles:
            print("memprofile: no profiles yet; put %%memprofile on the first line of a cell")
            return
        if store.STORE.dropped:
            print(f"({store.STORE.dropped} older profile(s) dropped: the store keeps the last "
                  f"{store.STORE.capacity})")
        # Columns as wide as their longest entry (long names stay aligned); the name last but one.
        devices = [p.peak_device.name if p.peak_device else "-" for p in profiles]
        name_w = max(16, *(len(p.name) for p in profiles))
        device_w = max(7, *(len(d) for d in devices))
        for i, (p, device) in enumerate(zip(profiles, devices)):
            status = f"  raised {p.error.type}" if p.error else ""
            print(
                f"{i:>3}  {p.id[:8]}  {p.name:<{name_w}} peak {fmt_bytes(p.peak_bytes):>10} on {device:<{device_w}}"
                f" {fmt_seconds(p.duration_s):>9}{status}"
            )

    def _insert(self, suggestion_id: str, key: str | int) -> None:
        profile = store.STORE.get(key)
        known = [s.id for s in profile.suggestions]
        suggestion = next((s for s in profile.suggestions if s.id == suggestion_id), None)
        if suggestion is None:
            have = f"it has: {', '.join(known)}" if known else "it has no suggestion"
            raise UsageError(f"profile {profile.name!r} has no suggestion {suggestion_id!r}; {have}")
        code = suggestion.code
        if suggestion.placement == "top":
            code = (f"# memprofile ({suggestion.id}): this must run before the framework starts: move this cell "
                    f"to the top of the notebook, restart the kernel, run it first\n{code}")
        self.shell.set_next_input(code, replace=True)
        print(f"memprofile: this cell now holds the fix {suggestion.id!r} from {profile.name!r}; run it when ready")

    def _display_mode(self, mode: str | None) -> None:
        from memprofile.jupyter.display import display_mode, set_display_mode, widget_frontend

        if mode is not None:
            try:
                set_display_mode(mode)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        frontend = widget_frontend()
        seen = f" (frontend seen as {frontend})" if frontend else ""
        print(f"memprofile: display mode {display_mode()}{seen}")

    def _export(self, path: str, key: str | int) -> None:
        profile = store.STORE.get(key)
        lower = path.lower()
        if not lower.endswith((".html", ".htm", ".json", ".json.gz")):
            raise UsageError(f"cannot tell the format of {path!r}: use a name ending in .html, .json or .json.gz")
        with writing(path):  # a bad folder: one line that says what to do
            written = profile.save_html(path) if lower.endswith((".html", ".htm")) else profile.save(path)
        print(f"memprofile: wrote {profile.name!r} to {written}")


#: The --detail-steps parser (the CLI's too).
parse_detail_steps = DetailWindow.parse


def _stored_or_read(key: str) -> Profile:
    """A stored profile by id, name or position; else a profile file or a
    folder of rank profiles (merged), read and stored."""
    from pathlib import Path

    try:
        return store.STORE.get(_key(key))
    except KeyError:
        path = Path(key).expanduser()
        if not path.exists():
            raise
    if path.is_dir():
        from memprofile.analysis.merge import merge

        profile: Profile = merge(path)
    else:
        from memprofile.model.codec import load

        profile = load(path)
        try:
            return store.STORE.get(profile.id)  # shown before: one entry in the panel
        except KeyError:
            pass
    store.STORE.add(profile)
    return profile


def _key(text: str) -> str | int:
    """A position (-1, 0, 12) or an id prefix/name; ids are hex, so an 8-digit
    prefix of only digits is still an id."""
    if len(text) < 8:
        try:
            return int(text)
        except ValueError:
            pass
    return text


_loaded: dict[int, MemprofileMagics] = {}


def load_ipython_extension(ipython) -> None:
    kept_modules.restore()
    magics = MemprofileMagics(ipython)
    ipython.register_magics(magics)
    _loaded[id(ipython)] = magics
    if getattr(ipython, "kernel", None) is not None:  # a kernel: the JupyterLab panel may be listening
        from memprofile.jupyter.comm import PANEL

        PANEL.open()


def unload_ipython_extension(ipython) -> None:
    magics = _loaded.pop(id(ipython), None)
    if magics is not None:
        for kind in ("line", "cell"):
            ipython.magics_manager.magics[kind].pop("memprofile", None)
    from memprofile.jupyter.comm import PANEL

    PANEL.close()  # nothing else to undo: no profiler runs between cells

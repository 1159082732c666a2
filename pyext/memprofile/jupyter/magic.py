"""`%%memprofile` (profile a cell) and `%memprofile` (list/show/export/clear).

The cell runs as IPython would run it: IPython's input transformers (magics,
`!cmd`) and AST transformers apply, variables land in the user namespace, the
value of a last expression is returned (so it shows as Out[n]). If the cell
raises, the profile is stored and displayed first, then the exception
propagates unchanged.

It compiles and runs the cell itself (memprofile/cell_runner.py) rather than
handing it to `shell.run_cell` with an AST transformer, as pyinstrument's and
memray's magics do, for two reasons: the line marks are bound into the code
objects' constants after compiling (capture/lines.py: dynamo takes only
literal constants, and a global would change the user's namespace), which
run_cell's compile step leaves no place for; and a nested run_cell of a cell
with top-level `await` tries to run the kernel's own, running, event loop
(run_awaitable below runs it on a loop of memprofile's instead).
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from memprofile import kept_modules, store  # store: the module, as tests swap its STORE
from memprofile.capture.base import DetailWindow
from memprofile.capture.host import MAX_INTERVAL_S, check_interval
from memprofile.cell_runner import cell_number, compile_cell, run_compiled
from memprofile.errors import MemprofileError, writing
from memprofile.model.profile import Profile
from memprofile.profiler import Profiler, parse_budget, parse_capacity

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

    trial = run_trial(run, change, name=profile.name, namespace=shell.user_ns, source=profile.source, cell_lines=True)
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
    @argument(
        "--capacity",
        default=None,
        metavar="SIZE",
        help="the memory the cell may use on its peak device (its GPU, else the host), e.g. 16G: the live "
        "line under the running cell warns when the steps grow toward it (default: the device's own)",
    )
    @argument(
        "--predict",
        default=None,
        metavar="DEVICE[:BATCH[:SEQ]],...",
        help="after the cell, predict whether its run fits each device (T4, L4, A10G, V100-32GB, A100-40GB, "
        "A100-80GB, H100-80GB, cpu, or bytes), at the measured batch or BATCH (256, or 4x), and the largest "
        "batch that fits: the cell's first steps are re-executed on fake tensors (no memory, no compute)",
    )
    @argument(
        "--no-whatif",
        action="store_true",
        help="keep the rules' own estimates: do not re-execute the cell's first steps on fake tensors with "
        "each suggestion's code after it",
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
            capacity_bytes=args.capacity,
            whatif=not args.no_whatif,
        )
        name = args.name or f"In [{count}]"
        body, last = compile_cell(self.shell, cell)  # a SyntaxError runs nothing: no profile
        if args.try_change:
            return self._try(args.try_change, name, body, last, options, quiet=args.quiet)
        profiler = Profiler(name=name, **options)
        profiler.start()
        # after start (a start that raises leaves no sink), closed whatever stop does: a card
        # left open would keep the feed building samples and write under this cell for good
        card = LiveCard(self.shell, shown=not args.quiet)  # -q: nothing under the cell, live line included
        try:
            try:
                result = run_compiled(self.shell, body, last)
            except BaseException as exc:
                profile = profiler.stop(exc)
                card.close()
                if not args.quiet:
                    display(profile)
                raise
            cached = result is not None and self.shell.displayhook.do_full_cache and not self.shell.displayhook.quiet()
            profile = profiler.stop(output=(count, result) if cached else None)
        finally:
            card.close()
        if args.predict:
            from memprofile.whatif.predict import predict_requested

            for failure in predict_requested(profile, args.predict):
                print(f"memprofile: no prediction for {failure}")
        if not args.quiet:
            display(profile)
        return result

    def _try(self, change: str, name: str, body, last, options: dict, quiet: bool):
        from memprofile.trial import run_trial

        results: list = []

        def run() -> None:
            results.append(run_compiled(self.shell, body, last))

        print(
            f"memprofile: running the cell as is (twice when the first run creates state, such as an "
            f"optimizer's), then with {change}: its effects happen two or three times"
        )
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
            raise UsageError(
                f"--interval must be a number of milliseconds above 0 and at most "
                f"{MAX_INTERVAL_S * 1000:g}, got {args.interval}\n\n"
                f"{self.memprofile.parser.format_help()}"
            ) from None
        if args.tf_max_events is not None and args.tf_max_events < 0:
            raise UsageError(f"--tf-max-events must be 0 or more, got {args.tf_max_events}")
        try:
            args.detail_steps = parse_detail_steps(args.detail_steps)
            args.budget = parse_budget(args.budget) if args.budget is not None else None
            args.capacity = parse_capacity(args.capacity) if args.capacity is not None else None
        except ValueError as exc:
            raise UsageError(f"{exc}\n\n{self.memprofile.parser.format_help()}") from None
        if args.predict is not None:
            from memprofile.whatif.predict import parse_requests

            try:
                args.predict = parse_requests(args.predict)
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
                from memprofile.render.compare import shown

                display(shown(compare(store.STORE.get(_key(rest[0])), store.STORE.get(_key(rest[1])))))
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
            print(f"({store.STORE.dropped} older profile(s) dropped: the store keeps the last {store.STORE.capacity})")
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
            code = (
                f"# memprofile ({suggestion.id}): this must run before the framework starts: move this cell "
                f"to the top of the notebook, restart the kernel, run it first\n{code}"
            )
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


class LiveCard:
    """One line under the running cell, updated about twice a second from the live feed
    (render/live.py words it): shown once the cell has run CARD_AFTER_S, so short cells print
    nothing new; at the end it becomes a quiet line and the profile's card below stays.
    text/plain and text/html: frontends without the panel show it too. It is a feed sink,
    called on the feed's sender thread: the display goes out with the cell's parent header."""

    CARD_AFTER_S = 1.0
    EVERY_S = 0.5

    def __init__(self, shell: InteractiveShell, shown: bool = True) -> None:
        import uuid

        from memprofile.capture import live

        self._pub = getattr(shell, "display_pub", None)
        self._parent = getattr(self._pub, "parent_header", None)
        self._id = f"memprofile-live-{uuid.uuid4().hex[:12]}"
        self._shown = False
        self._last = 0.0
        self._t = 0.0
        self._remove = live.add_sink(self._on_message) if shown and hasattr(self._pub, "set_thread_parent") else None

    def _on_message(self, message: dict) -> None:
        if message["type"] != "live" or not message["samples"]:
            return
        sample = message["samples"][-1]
        self._t = sample["t"]
        if self._t < self.CARD_AFTER_S or self._t - self._last < self.EVERY_S:
            return
        from memprofile.render.live import live_bundle

        self._last = self._t
        self._publish(live_bundle(sample, message["warnings"]), update=self._shown)
        self._shown = True

    def _publish(self, bundle: dict, update: bool) -> None:
        assert self._pub is not None
        token = self._pub.set_thread_parent(self._parent)  # the cell's, from any thread
        try:
            self._pub.publish(bundle, transient={"display_id": self._id}, update=update)
        finally:
            self._pub.reset_thread_parent(token)

    def close(self) -> None:
        """The run ended (the feed flushed): stop listening; a line shown becomes a quiet one."""
        if self._remove is not None:
            self._remove()
            self._remove = None
        if self._shown:
            from memprofile.render.live import ended_bundle

            self._publish(ended_bundle(self._t), update=True)


def _stored_or_read(key: str) -> Profile:
    """A stored profile by id, name or position; else a profile file or a
    folder of rank profiles (merged), read and stored; either may be an
    fsspec URL (s3://bucket/job/)."""
    from pathlib import Path

    from memprofile import storage

    try:
        return store.STORE.get(_key(key))
    except KeyError:
        path = storage.as_target(key) if storage.is_url(key) else Path(key).expanduser()
        if isinstance(path, Path) and not path.exists():
            raise
    if (key.endswith("/") or storage.is_dir(path)) if isinstance(path, storage.Url) else path.is_dir():
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

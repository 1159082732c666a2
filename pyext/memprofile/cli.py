"""`memprofile` on the command line: profile a script, read and export profiles."""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import sys
from pathlib import Path

from memprofile.errors import MemprofileError, writing
from memprofile.storage import Url, as_target


def _target(path: str) -> Path | Url:
    """A command line's path: a Path, or a Url for an fsspec URL (s3://bucket/key)."""
    return as_target(path)


def _run_target(args: argparse.Namespace) -> tuple[str, str, str]:
    """(the absolute path of what runs, or the module's name where it has no
    file; its default profile name; its source, read as python reads it)
    for a script or `-m module`. A script python would refuse raises
    python's SyntaxError."""
    from memprofile.python_source import read_python_source

    if args.module:
        import importlib.util

        try:
            spec = importlib.util.find_spec(args.module)
        except (ImportError, ValueError) as exc:
            raise MemprofileError(f"no such module: {args.module} ({exc})") from None
        if spec is None:
            raise MemprofileError(f"no such module: {args.module}")
        origin = spec.origin if spec.origin and spec.origin.endswith(".py") else ""
        if spec.submodule_search_locations is not None:  # a package runs its __main__
            main = importlib.util.find_spec(f"{args.module}.__main__")
            origin = main.origin if main and main.origin else origin
        source = read_python_source(origin) if origin else ""
        return origin or args.module, args.module.rsplit(".", 1)[-1], source
    script = Path(args.script)
    if not script.is_file():
        raise MemprofileError(f"no such script: {script}")
    # Absolute, as python makes a script's __file__: the script may os.chdir().
    path = os.path.abspath(script)
    return path, script.name.removesuffix(".py"), read_python_source(path)


def _run_outputs(args: argparse.Namespace, rank) -> tuple[Path | Url, Path | Url | None]:
    """(the folder the profile goes to, the file -o names), absolute, fixed
    before the script runs (which may os.chdir()); a bad path is said
    before, not after, a long run. A folder that has to be made is made now
    to see that it can be, and taken away again: it is made when the
    profile is written, so a run that writes nothing leaves no empty folder.
    A URL (s3://bucket/job/) is checked as far as reading can: fsspec and
    the store's package, credentials, the bucket."""
    from memprofile import rank_files, storage

    given = storage.as_target(args.output) if args.output else None
    output = Path(os.path.abspath(given)) if isinstance(given, Path) else given
    if output is not None:
        where: Path | Url = output.parent
    else:
        out = storage.as_target(args.out) if args.out else rank_files.default_dir(rank)
        where = Path(os.path.abspath(out)) if isinstance(out, Path) else out
    if isinstance(where, Url):
        storage.check_folder(where)
        return where, output
    folder = where
    if (rank is not None or args.out) and not folder.is_dir():
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            from memprofile.errors import why_unwritable

            raise MemprofileError(why_unwritable(folder / "profile", exc)) from None
        for made in missing:  # innermost first
            try:
                made.rmdir()
            except OSError:  # another rank's files are in it already
                break
        return folder, output
    if not folder.is_dir():
        raise MemprofileError(f"cannot write to {folder}: the folder does not exist; create it or choose another path")
    return folder, output


def _cmd_run(args: argparse.Namespace) -> int:
    import traceback

    from memprofile import run_end
    from memprofile.capture.distributed import rank_from_env
    from memprofile.profiler import Profiler

    rank = rank_from_env()
    try:
        if rank is not None and args.output:
            raise MemprofileError(
                f"-o names one file, but each rank of this job (rank {rank.rank} of "
                f"{rank.world_size}) writes its own: use --out DIR"
            )
        target, default_name, source = _run_target(args)
        folder, output = _run_outputs(args, rank)
    except MemprofileError as exc:  # said before the script runs
        print(f"memprofile: {exc}", file=sys.stderr)
        return 2
    except SyntaxError as exc:  # python refuses the script: said as python says it; nothing runs
        print("".join(traceback.format_exception_only(exc)), end="", file=sys.stderr)
        return 1
    name = args.name or default_name
    if rank is not None:
        _import_torch_distributed()  # so the profile sees the backend the script initialises
    run_end.watch()
    run_end.catch_sigterm()
    sys.argv = [args.script or target, *args.args]
    detail = {"detail_steps": args.detail_steps} if args.detail_steps else {}
    # The script's globals: what the profile finds the models and optimizers by, at its end.
    module = None if args.module else _main_module(target)
    scope: dict = {} if module is None else module.__dict__
    profiler = Profiler(
        name=name,
        source=source,
        cell_lines=not args.module,
        budget_bytes=args.budget,
        **detail,
        out=None if output else folder,
        namespace=scope,
        script=args.script or target,
    )
    profiler.start()
    error: BaseException | None = None
    try:
        if args.module:
            scope.update(runpy.run_module(args.module, run_name="__main__", alter_sys=True))
        else:
            run_script(target, source, module)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = exc
    except BaseException as exc:  # keep the profile, then fail like the script did
        error = exc
    if profiler.forked_off:  # a child the script forked: it ends as it would bare, the profile is the parent's
        return _ended_like(error)
    run_end.hold_sigterm_while_writing()
    profile = profiler.stop(error)
    _write_run_outputs(profile, profiler.saved_path, output, rank)
    run_end.done()
    if run_end.terminated():
        print(
            "memprofile: the script was stopped by SIGTERM: its profile up to then is written; the process "
            "now ends by SIGTERM, as it would have bare",
            file=sys.stderr,
        )
        run_end.die_of(signal.SIGTERM)
    return _ended_like(error)


def _ended_like(error: BaseException | None) -> int:
    """The exit status python gives a script that ended with `error`
    (SystemExit's code: None is 0, a number itself, anything else is
    printed and is 1); another exception is raised again."""
    if error is None:
        return 0
    if not isinstance(error, SystemExit):
        raise error
    if error.code is None or isinstance(error.code, int):
        return error.code or 0
    print(error.code, file=sys.stderr)
    return 1


def _main_module(path: str):
    import builtins
    import types

    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__dict__["__builtins__"] = builtins
    return module


def run_script(path: str, source: str, module) -> None:
    """Run a script as `python script.py` does (as `module`, a __main__ that
    keeps its globals after it ends; its folder first on sys.path), compiled
    with a mark before each of its statements, in its functions too, so that
    allocations get the script's lines."""
    import ast

    from memprofile.capture import lines

    code = lines.instrument(ast.parse(source, path), into_definitions=True).compile(
        compile, path, namespace=module.__dict__
    )
    saved_main = sys.modules.get("__main__")
    sys.modules["__main__"] = module  # pickle and multiprocessing find its classes there
    sys.path.insert(0, str(Path(path).resolve().parent))
    try:
        exec(code, module.__dict__)
    finally:
        if saved_main is not None:
            sys.modules["__main__"] = saved_main


def _import_torch_distributed() -> None:
    import importlib.util

    if importlib.util.find_spec("torch") is not None:
        import torch.distributed  # noqa: F401


def _write_run_outputs(profile, saved: Path | Url | None, output: Path | Url | None, rank) -> bool:
    """Print the summary (one line per rank in a job) and the paths written;
    a single process also gets its HTML report. False: nothing was written
    (a line said why; the script's own outcome still decides the exit status)."""
    from memprofile.render.text import one_line, render_text

    if rank is not None:
        where = f"written to {saved}" if saved else "NOT written (see above)"
        print(f"memprofile: rank {rank.rank}/{rank.world_size}: {one_line(profile)}; {where}", file=sys.stderr)
        if saved and rank.rank == 0:
            print(f"memprofile: when every rank has finished: memprofile merge {saved.parent}", file=sys.stderr)
        return saved is not None
    print(render_text(profile), file=sys.stderr)
    try:
        if output is not None:
            saved = profile.save(output)
        if saved is None:  # the profiler said why it could not save it
            return False
        html = saved.with_name(saved.name.split(".memprofile.")[0].split(".json")[0] + ".memprofile.html")
        with writing(str(html)):
            profile.save_html(str(html))
    except MemprofileError as exc:
        print(f"memprofile: {exc}", file=sys.stderr)
        return False
    print(f"memprofile: profile written to {saved}\nmemprofile: report written to {html}", file=sys.stderr)
    return True


def _cmd_show(args: argparse.Namespace) -> int:
    from memprofile.model.codec import load
    from memprofile.render.text import render_text

    print(render_text(load(args.profile)))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    """A saved profile on other devices and batches: replayed (the script's names are gone)."""
    from memprofile.model.codec import load
    from memprofile.render.prediction import prediction_text
    from memprofile.whatif.predict import parse_requests

    spec = ",".join(f"{d}:{args.batch or ''}:{args.seq_len or ''}".rstrip(":") for d in args.device or ["cpu"])
    try:
        requests = parse_requests(spec)
    except ValueError as exc:
        args.parser.error(str(exc))
    profile = load(args.profile)
    for device, batch, seq in requests:
        made = profile.predict(device, batch=batch, seq_len=seq, expandable_segments=args.expandable_segments)
        print(prediction_text(made))
    if args.output:
        _save_as(profile, _target(args.output))
    return 0


def _unwritable(out: Path | Url) -> int:
    """0, or the exit status after saying why `out` cannot take a profile or
    report (before the work): 2 for a name of no known format, 1 for a
    folder that cannot hold it (a URL's: no fsspec, no credentials, no bucket)."""
    import errno

    from memprofile.errors import why_unwritable

    if not out.name.lower().endswith((".html", ".htm", ".json", ".json.gz")):
        print(
            f"memprofile: cannot write {out}: the output is a report (.html) or a profile (.json, .json.gz)",
            file=sys.stderr,
        )
        return 2
    if isinstance(out, Url):
        from memprofile.storage import check_folder

        try:
            check_folder(out.parent)
        except MemprofileError as exc:
            print(f"memprofile: {exc}", file=sys.stderr)
            return 1
        return 0
    if not out.parent.is_dir():
        print(f"memprofile: {why_unwritable(out, OSError(errno.ENOENT, 'No such file or directory'))}", file=sys.stderr)
        return 1
    return 0


def _save_as(profile, out: Path | Url) -> None:
    """.html: the report; .json, .json.gz: the profile (a URL: an object)."""
    with writing(str(out)):
        if out.name.lower().endswith((".html", ".htm")):
            profile.save_html(str(out))
        else:
            profile.save(out)


def _cmd_export(args: argparse.Namespace) -> int:
    from memprofile.model.codec import load

    out = _target(args.output or _target(args.profile).name.split(".")[0] + ".html")
    problem = _unwritable(out)
    if problem:
        return problem
    _save_as(load(args.profile), out)
    print(f"memprofile: wrote {out}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from memprofile.analysis.merge import merge
    from memprofile.rank_files import safe_name
    from memprofile.render.text import render_text

    problem = _unwritable(_target(args.output)) if args.output else 0
    if problem:
        return problem
    merged = merge(args.profiles, name=args.name)
    print(render_text(merged))
    assert merged.merged is not None
    first = _target(args.profiles[0])
    report = f"{safe_name(merged.merged.ranks[0].name)}.merged.memprofile.html"
    if args.output:
        out = _target(args.output)
    elif isinstance(first, Url):  # ranks read from a store: the report is for this machine's browser
        out = Path(report)
    else:
        out = (first if first.is_dir() else first.parent) / report
    _save_as(merged, out)
    print(f"memprofile: wrote {out}", file=sys.stderr)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from memprofile.analysis.compare import compare
    from memprofile.model.codec import load
    from memprofile.render.compare import render_compare_html, render_compare_text

    comparison = compare(load(args.before), load(args.after))
    print(render_compare_text(comparison))
    if args.output:
        from memprofile.files import write_atomic

        write_atomic(
            args.output,
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memprofile compare"
            f"</title></head><body>{render_compare_html(comparison)}</body></html>",
        )
        print(f"memprofile: wrote {args.output}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from memprofile.importing import import_trace
    from memprofile.render.text import render_text

    out = _target(args.output) if args.output else None
    problem = _unwritable(out) if out is not None else 0
    if problem:
        return problem
    profile = import_trace(args.trace, name=args.name)
    print(render_text(profile))
    if out is not None:
        _save_as(profile, out)
        print(f"memprofile: written to {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from memprofile import __version__

    parser = argparse.ArgumentParser(prog="memprofile", description=__doc__)
    parser.add_argument("--version", action="version", version=f"memprofile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        allow_abbrev=False,
        usage="memprofile run [options] (SCRIPT | -m MODULE) [ARGS ...]",
        help="run a Python script (or -m module) under the profiler and save its profile and report",
        description="Profile a whole script as %%memprofile profiles a cell; write NAME.memprofile.json.gz and "
        "NAME.memprofile.html. Under torchrun (RANK and WORLD_SIZE set) each rank writes "
        "NAME.rankR.memprofile.json.gz into one folder, for `memprofile merge`.",
    )
    run.add_argument(
        "--out",
        metavar="DIR|URL",
        help="folder for the profile (and report), or an fsspec URL such as s3://bucket/job/ "
        "(pip install 'memprofile[storage]'); default: the current "
        "folder, or ./memprofile-<run id>/ for a distributed job's ranks",
    )
    run.add_argument("-o", "--output", metavar="FILE", help="the profile's file (.json or .json.gz) instead")
    run.add_argument("-n", "--name", help="name of the profile (default: the script's or module's name)")
    run.add_argument(
        "--detail-steps",
        type=_detail_steps,
        default=None,
        metavar="N|A-B|A-|all",
        help="training steps recorded in full detail (default: the first 3)",
    )
    run.add_argument(
        "--budget",
        type=_budget,
        default=None,
        metavar="SIZE",
        help="the profiler's own memory budget, e.g. 512M or 2G (default: 1G or a tenth of the "
        "available memory, whichever is smaller; per rank)",
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module as `python -m MODULE` does")
    run.add_argument("script", nargs="?", help="the script to run")
    run.set_defaults(func=_cmd_run, parser=run)
    show = sub.add_parser("show", help="print a saved profile's summary")
    show.add_argument("profile")
    show.set_defaults(func=_cmd_show)
    export = sub.add_parser("export", help="write a saved profile as a standalone HTML report (or JSON)")
    export.add_argument("profile")
    export.add_argument("-o", "--output", help="output file: .html, .json or .json.gz (default: NAME.html)")
    export.set_defaults(func=_cmd_export)
    mrg = sub.add_parser(
        "merge",
        help="the ranks of a distributed job as one report (their profiles, or the folder they were written to)",
    )
    mrg.add_argument("profiles", nargs="+", metavar="DIR|FILE|URL")
    mrg.add_argument(
        "-o",
        "--output",
        help="the report (.html; default: NAME.merged.memprofile.html beside the "
        "ranks' files, or in the current folder when they are read from a URL), or the merged profile "
        "(.json, .json.gz)",
    )
    mrg.add_argument("-n", "--name", help="name of the merged profile")
    mrg.set_defaults(func=_cmd_merge)
    comp = sub.add_parser("compare", help="what changed between two saved profiles (before, after)")
    comp.add_argument("before")
    comp.add_argument("after")
    comp.add_argument("-o", "--output", help="also write the comparison as HTML")
    comp.set_defaults(func=_cmd_compare)
    pred = sub.add_parser(
        "predict",
        help="will a saved profile's run fit a device (T4, L4, A10G, V100-32GB, A100-40GB, A100-80GB, "
        "H100-80GB, cpu, or bytes) at another batch: predicted from its recorded timeline",
    )
    pred.add_argument("profile")
    pred.add_argument("--device", action="append", help="a device (repeat for several; default: cpu)")
    pred.add_argument("--batch", help="the batch to predict for: a number, or a factor of the measured one (4x)")
    pred.add_argument("--seq-len", help="the sequence length: a number, or a factor (2x)")
    pred.add_argument(
        "--expandable-segments", action="store_true", help="PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True"
    )
    pred.add_argument("-o", "--output", help="also write the profile with its predictions: .html, .json, .json.gz")
    pred.set_defaults(func=_cmd_predict, parser=pred)
    imp = sub.add_parser(
        "import",
        help="a profile from a PyTorch kineto/Chrome trace (profile_memory=True) or a "
        "TensorFlow .xplane.pb, printed; -o writes it as HTML or JSON",
    )
    imp.add_argument("trace")
    imp.add_argument("-o", "--output", help="also write it: .html (a report), .json or .json.gz (a profile)")
    imp.add_argument("-n", "--name", help="name of the profile (default: the trace's file name)")
    imp.set_defaults(func=_cmd_import)
    return parser


def _budget(text: str) -> int:
    from memprofile.profiler import parse_budget

    try:
        return parse_budget(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _detail_steps(text: str):
    from memprofile.capture.base import DetailWindow

    try:
        return DetailWindow.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def split_run_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """`run`'s own options, and the script's (or module's) arguments: all
    after the script or `-m MODULE`, which argparse alone would read as run's
    (`memprofile run -m pkg --lr 3`)."""
    takes_value = {"--out", "-o", "--output", "-n", "--name", "--detail-steps", "--budget"}
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "-m" or (word.startswith("-m") and len(word) > 2):
            cut = i + 2 if word == "-m" else i + 1
            return argv[:cut], argv[cut:]
        if word == "--":
            return argv[:i], argv[i + 1 :]
        if not word.startswith("-") or word == "-":
            return argv[: i + 1], argv[i + 1 :]
        i += 2 if word in takes_value else 1
    return argv, []


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    passed: list[str] = []
    if argv and argv[0] == "run":
        argv, passed = split_run_args(argv)
    args = parser.parse_args(argv)
    if args.command == "run":
        args.args = passed
        if bool(args.module) == bool(args.script):
            args.parser.error("give a script or -m MODULE (one of them)")  # usage, exit status 2
    try:
        return args.func(args)
    except MemprofileError as exc:
        print(f"memprofile: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

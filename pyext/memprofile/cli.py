"""`memprofile` on the command line: profile a script, read and export profiles."""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from memprofile.errors import MemprofileError, writing


def _cmd_run(args: argparse.Namespace) -> int:
    from memprofile.profiler import Profiler

    script = Path(args.script)
    if not script.is_file():
        print(f"memprofile: no such script: {script}", file=sys.stderr)
        return 2
    out = Path(args.output or script.with_suffix(".memprofile.json").name)
    if not out.parent.is_dir():  # say so before the script runs, not after
        print(f"memprofile: cannot write {out}: the folder {out.parent} does not exist; create it or choose "
              f"another path", file=sys.stderr)
        return 2
    sys.argv = [str(script), *args.args]
    profiler = Profiler(name=args.name or script.name, source=script.read_text(errors="replace"))
    profiler.start()
    error: BaseException | None = None
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (None, 0):
            error = exc
    except BaseException as exc:  # keep the profile, then fail like the script did
        error = exc
    profile = profiler.stop(error)
    from memprofile.render.text import render_text

    print(render_text(profile), file=sys.stderr)
    try:
        profile.save(out)
        print(f"memprofile: profile written to {out}", file=sys.stderr)
    except MemprofileError as exc:  # the script's own outcome still decides the exit status
        print(f"memprofile: {exc}", file=sys.stderr)
        if error is None:
            return 1
    if error is not None:
        if isinstance(error, SystemExit):
            return error.code if isinstance(error.code, int) else 1
        raise error
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from memprofile.model.codec import load
    from memprofile.render.text import render_text

    print(render_text(load(args.profile)))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from memprofile.model.codec import load

    profile = load(args.profile)
    out = Path(args.output or Path(args.profile).name.split(".")[0] + ".html")
    if out.suffix.lower() in (".html", ".htm"):
        with writing(out):
            profile.save_html(out)
    elif out.name.endswith((".json", ".json.gz")):
        profile.save(out)
    else:
        print(f"memprofile: cannot tell the format of {out}: use .html, .json or .json.gz", file=sys.stderr)
        return 2
    print(f"memprofile: wrote {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from memprofile.analysis.compare import compare
    from memprofile.model.codec import load
    from memprofile.render.compare import render_compare_html, render_compare_text

    comparison = compare(load(args.before), load(args.after))
    print(render_compare_text(comparison))
    if args.output:
        with writing(args.output) as out:
            out.write_text(
                f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>memprofile compare</title></head>"
                f"<body>{render_compare_html(comparison)}</body></html>", encoding="utf-8")
        print(f"memprofile: wrote {args.output}")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    from memprofile.importing import import_trace
    from memprofile.render.text import render_text

    out = Path(args.output) if args.output else None
    if out is not None and not out.name.lower().endswith((".html", ".htm", ".json", ".json.gz")):
        print(f"memprofile: cannot write {out}: the output is a report (.html) or a profile (.json, .json.gz)",
              file=sys.stderr)
        return 2
    if out is not None and not out.parent.is_dir():
        print(f"memprofile: cannot write {out}: the folder {out.parent} does not exist; create it or choose "
              f"another path", file=sys.stderr)
        return 2
    profile = import_trace(args.trace, name=args.name)
    print(render_text(profile))
    if out is not None:
        if out.suffix.lower() in (".html", ".htm"):
            profile.save_html(out)
        else:
            profile.save(out)
        print(f"memprofile: written to {out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from memprofile import __version__

    parser = argparse.ArgumentParser(prog="memprofile", description=__doc__)
    parser.add_argument("--version", action="version", version=f"memprofile {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a Python script under the profiler and save its profile")
    run.add_argument("-o", "--output", help="where to write the profile (default: SCRIPT.memprofile.json)")
    run.add_argument("-n", "--name", help="name of the profile (default: the script's name)")
    run.add_argument("script")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the script")
    run.set_defaults(func=_cmd_run)
    show = sub.add_parser("show", help="print a saved profile's summary")
    show.add_argument("profile")
    show.set_defaults(func=_cmd_show)
    export = sub.add_parser("export", help="write a saved profile as a standalone HTML report (or JSON)")
    export.add_argument("profile")
    export.add_argument("-o", "--output", help="output file: .html, .json or .json.gz (default: NAME.html)")
    export.set_defaults(func=_cmd_export)
    comp = sub.add_parser("compare", help="what changed between two saved profiles (before, after)")
    comp.add_argument("before")
    comp.add_argument("after")
    comp.add_argument("-o", "--output", help="also write the comparison as HTML")
    comp.set_defaults(func=_cmd_compare)
    imp = sub.add_parser("import", help="a profile from a PyTorch kineto/Chrome trace (profile_memory=True) or a "
                                        "TensorFlow .xplane.pb, printed; -o writes it as HTML or JSON")
    imp.add_argument("trace")
    imp.add_argument("-o", "--output", help="also write it: .html (a report), .json or .json.gz (a profile)")
    imp.add_argument("-n", "--name", help="name of the profile (default: the trace's file name)")
    imp.set_defaults(func=_cmd_import)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MemprofileError as exc:
        print(f"memprofile: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

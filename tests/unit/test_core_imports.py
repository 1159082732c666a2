"""The core (memprofile, its profiler, store and trials) works without the
Jupyter package: profiling a block, storing it and reading it back import
nothing from memprofile.jupyter (the notebook layer sits on top, not under)."""

import subprocess
import sys


def test_profiling_and_the_store_do_not_import_the_jupyter_package():
    # GIVEN a fresh interpreter WHEN the core is imported and a block is profiled, stored and read back
    code = (
        "import sys, memprofile, memprofile.profiler, memprofile.store, memprofile.trial\n"
        "with memprofile.profile(name='block', torch=False, tensorflow=False) as p:\n"
        "    data = bytearray(1 << 20)\n"
        "assert memprofile.last() is p and memprofile.profiles() == [p]\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('memprofile.jupyter'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # THEN no module of the Jupyter package was imported
    assert out.stdout.strip() == ""

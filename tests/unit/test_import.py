"""Importing memprofile must stay cheap: no framework, no notebook stack."""

import subprocess
import sys


def test_import_loads_no_framework():
    # GIVEN a fresh interpreter WHEN memprofile and its profiler are imported
    code = (
        "import sys, memprofile, memprofile.profiler, memprofile.store\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'bokeh', 'jupyterlab') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # THEN none of the heavy packages was imported
    assert out.stdout.strip() == ""


def test_public_api():
    import memprofile

    for name in memprofile.__all__:
        assert hasattr(memprofile, name), name
    assert memprofile.SCHEMA_VERSION == 1

"""`python -m memprofile ...` (and `torchrun -m memprofile run ...`): the CLI."""

from memprofile.cli import main

raise SystemExit(main())

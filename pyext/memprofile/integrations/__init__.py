"""Callbacks that profile steps A-B of a framework's training run, for scripts
and clusters where no notebook cell wraps the loop (docs/integrations.md):

- `memprofile.integrations.huggingface.MemprofileCallback`: a transformers `TrainerCallback`
- `memprofile.integrations.lightning.MemprofileCallback`: a Lightning `Callback`
  (`lightning.pytorch`, or `pytorch_lightning` where only that is installed)
- `memprofile.integrations.keras.MemprofileCallback`: a Keras callback for `model.fit`

Each profiles the run's steps `steps=(first, last)` (1-based; default 1-3) with
memprofile.profile()'s profiler, keeps the Profile (`callback.profile`,
`memprofile.last()`), and writes it where `out` says: a folder (one file per
profile, one per rank under torchrun, named as `memprofile run` names them) or
a file (.json, .json.gz, .html). This package imports no framework; each
callback's module imports its own.
"""

"""Training: prepare (before any run directory), fit with per-epoch commits, resume, folds."""

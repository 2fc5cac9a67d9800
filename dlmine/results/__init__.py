"""What a finished run gives: evaluate, predict, export, report, runs and compare."""

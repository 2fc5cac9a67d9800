"""Hyperparameter search with Optuna: the space, the study, its report."""

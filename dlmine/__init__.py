"""dlmine: declarative deep learning for data mining, from one YAML file."""

__version__ = "0.1.0"

"""gan-pipeline: GAN training as a reproducible DVC + Prefect workflow."""

__version__ = "0.1.0"

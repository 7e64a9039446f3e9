"""Scoring a generator: feature extractors, metrics, memorisation, the evaluate stage."""

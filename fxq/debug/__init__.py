"""Seeing what quantization did: graph dumps and records, provenance of lowered ops, per-layer comparison,
sensitivity ranking, the calibration helper and timing. Public entry points are re-exported from ``fxq``."""

"""Quantized, reference and fused modules that fxq lowers to."""

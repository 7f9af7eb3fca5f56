"""Scripts that are not the library: benchmarks against torch.ao (see tools/bench.py)."""

"""Graph passes: one file per pass, ordered in pipeline.py."""

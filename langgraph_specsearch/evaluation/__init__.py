"""Evaluation: datasets, methods and ablations, interleaved runs, grading, tables and plots."""

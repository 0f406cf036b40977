"""Batched trials: M trials of a study trained as one stacked model (issue 18)."""

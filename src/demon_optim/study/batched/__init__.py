"""Batched trials (issue 18): M trials of one task trained as one batched model."""

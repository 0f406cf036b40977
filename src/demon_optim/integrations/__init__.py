"""Integrations with training frameworks: one module per framework, each an optional
dependency imported only by its own module (nothing is imported here)."""

"""Integrations with training frameworks that know the run's length only when training starts.

Each submodule imports its framework and is imported on its own; importing this package
imports none of them.
"""

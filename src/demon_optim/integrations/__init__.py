"""Integrations with training frameworks that know the run's length only when training starts.

One submodule per framework (``lightning``, ``transformers``), each importing its framework
and imported on its own; importing this package imports none of them.
"""

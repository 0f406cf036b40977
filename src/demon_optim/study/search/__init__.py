"""Search as a study axis: sampled configurations instead of a grid, drawn by Optuna.

``space``: the settings and the search space of a sampled method, parsed from the study
file (no Optuna needed); ``sampler``: Optuna's samplers behind one ask/tell interface;
``coordinator``: the driver's loop that asks configurations in fixed batches, records them
in the store, runs their trials and tells the results in trial order. See
``docs/study.md`` ("Search: sampled configurations").
"""

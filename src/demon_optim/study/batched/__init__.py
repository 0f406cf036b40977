"""Batched trials: train several trials of one study together, as one set of stacked models.

An execution strategy, not a new protocol (``demon-optim run --batch-trials auto|N|off``,
the study key ``batch_trials``; docs/batched-trials.md). Small models train far below what
a CPU core (or a GPU) can do, because every step of one model is a few dozen tiny kernels;
M models of one architecture, their parameters stacked along a leading dimension M, take
one step in the same few kernels, each M times larger. Each model is still exactly one
trial of the study: its own seed (initial weights and data order), hyperparameters and
schedules, its own row in the store under the trial id it has when trained alone, and a
model that diverges stops while the others go on.

The pieces, one concern each:

- :mod:`~demon_optim.study.batched.plan`: which trials batch (same task and budget, and a
  method with a batched form), in batches of at most N (``auto``: from the model's size,
  never from the machine), and why the others run one at a time (announced once each);
- :mod:`~demon_optim.study.batched.models`: M copies of a model with stacked parameters,
  and each copy as an ordinary module for the task's own evaluation;
- :mod:`~demon_optim.study.batched.optim` and :mod:`~demon_optim.study.batched.schedules`:
  one update of the SGD / Adam / Demon optimizers for M models, with each model's learning
  rate and momentum moved as its own torch schedulers would move them;
- :mod:`~demon_optim.study.batched.train`: the trial loop of ``study/trial.py`` for the M
  models of one batch (:func:`~demon_optim.study.batched.train.run_batch`).

The executors run a batch as one unit of work and the driver writes its trials in one
transaction (``study/executors``); each trial's ``execution`` in the store says it was
batched and with which batch. Batched arithmetic rounds differently from one model at a
time, so a batched trial equals an earlier batched run of the same study, not the same trial
trained alone, in its last bits; the selected methods and their metrics agree within seed
noise.
"""

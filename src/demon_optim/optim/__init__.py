"""Torch optimizers whose momentum follows a schedule (Demon by default)."""

from .adam import DemonAdam, DemonAdamW
from .aggmo import AggMo
from .composite import CompositeOptimizer
from .muon import Muon, muon_with_adamw, split_hidden
from .qhadam import QHAdam
from .qhm import QHM
from .sgd import DemonSGD, demon_sgd
from .yellowfin import YellowFin

__all__ = ["DemonAdam", "DemonAdamW", "DemonSGD", "demon_sgd"]
__all__ += ["QHM", "AggMo", "QHAdam", "YellowFin"]  # reference optimizers (issue 5)
__all__ += ["CompositeOptimizer", "Muon", "muon_with_adamw", "split_hidden"]  # issue 17

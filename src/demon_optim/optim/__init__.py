"""Torch optimizers whose momentum follows a schedule (Demon by default)."""

from .adam import DemonAdam, DemonAdamW
from .sgd import DemonSGD, demon_sgd

__all__ = ["DemonAdam", "DemonAdamW", "DemonSGD", "demon_sgd"]

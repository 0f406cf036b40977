"""demon-optim: Demon momentum decay for PyTorch (Chen et al., arXiv 1910.04952).

>>> from demon_optim import DemonSGD, DemonAdam, MomentumScheduler
"""

from . import schedules
from .errors import ConfigError, EnvironmentFailure
from .optim import QHM, AggMo, DemonAdam, DemonAdamW, DemonSGD, QHAdam, YellowFin
from .scheduler import MomentumScheduler

__version__ = "0.1.0"

__all__ = [
    "QHM",
    "AggMo",
    "ConfigError",
    "DemonAdam",
    "DemonAdamW",
    "DemonSGD",
    "EnvironmentFailure",
    "MomentumScheduler",
    "QHAdam",
    "YellowFin",
    "__version__",
    "schedules",
]

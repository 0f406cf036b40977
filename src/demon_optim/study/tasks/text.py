"""Text classification (and regression) with Hugging Face transformers: the task base of the
GLUE and Rotten Tomatoes tasks (``docs/text-tasks.md``).

Data: a subclass says where its sentences are (:meth:`TextTask.read_splits`); the base
tokenises them once per process at load (:meth:`Task.load_data` caches the result), each
split as one right-padded int64 tensor ``[N, W]`` of token ids (``W``: the split's longest
encoding, at most :attr:`TextTask.max_length`; pairs encoded as BERT pairs,
``[CLS] a [SEP] b [SEP]``, truncated longest-first) in :class:`TextSplit`.

Training: :meth:`TextTask.batches` cuts a seeded permutation into batches and trims each to
its longest sequence (dynamic padding: what a batch costs follows its own lengths, not the
maximum), deterministically; evaluation batches the split sorted by length, trimmed the
same way. The model (:class:`~demon_optim.study.models.transformer.SequenceClassifier`)
derives the attention mask from the pad id. Classification uses cross-entropy,
regression (``num_labels == 1``, STS-B) the mean squared error of a 1-output head.

Models come from a local folder only (no network): the catalogue entry :attr:`model_set`
(found like data, under ``--data-dir`` or an installed package) or a subclass's
:attr:`model_dir`. ``transformers`` is optional: without it a study stops before training
with one line saying ``pip install 'demon-optim[text]'``.
"""

from __future__ import annotations

import functools
import pathlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from demon_optim.study import metrics as text_metrics
from demon_optim.study.datasets import check_task_data, require
from demon_optim.study.datasets.glue import Examples
from demon_optim.study.models.transformer import (
    SequenceClassifier,
    from_config,
    load_pretrained,
    load_tokenizer,
    require_transformers,
)
from demon_optim.study.tasks import base
from demon_optim.study.tasks.base import Split, Task, TaskData, stratified_split

ENCODE_CHUNK = 4096  # sentences tokenised at a time (bounds the Python lists' memory)


@dataclass(frozen=True)
class TextSplit(Split):
    """A split of right-padded token ids ``[N, W]`` (int64) with its labels (int64 classes
    or float32 scores).

    ``pad_id`` marks padding; ``extra`` holds further labelled sets evaluated with this one
    (MNLI's mismatched dev set beside the matched one), reported as ``<metric>_<name>``.
    """

    pad_id: int = 0
    extra: Mapping[str, Split] = field(default_factory=dict)

    def to(self, device: torch.device) -> TextSplit:
        if self.inputs.device == device and self.targets.device == device and not self.extra:
            return self
        extra = {name: split.to(device) for name, split in self.extra.items()}
        return TextSplit(self.inputs.to(device), self.targets.to(device), self.pad_id, extra)

    def lengths(self) -> torch.Tensor:
        """Tokens before the padding, per example."""
        return (self.inputs != self.pad_id).sum(1)


@dataclass(frozen=True)
class TextSplits:
    """The labelled sentences of a task's three splits (``extra``: more test sets, see
    :class:`TextSplit`)."""

    train: Examples
    val: Examples
    test: Examples
    extra: Mapping[str, Examples] = field(default_factory=dict)


def subset(examples: Examples, index: torch.Tensor) -> Examples:
    """The examples at ``index`` (in that order)."""
    rows = index.tolist()
    text_b = None if examples.text_b is None else tuple(examples.text_b[i] for i in rows)
    return Examples(
        tuple(examples.text_a[i] for i in rows),
        text_b,
        tuple(examples.labels[i] for i in rows),
    )


def carve(
    examples: Examples, n_held_out: int, seed: int, strata: torch.Tensor | None = None
) -> tuple[Examples, Examples]:
    """``(kept, held_out)``: ``n_held_out`` examples held out, stratified by label (or by
    ``strata``, e.g. binned scores), with a fixed ``seed``; both keep the file order."""
    strata = torch.tensor(examples.labels) if strata is None else strata
    keep, held_out = stratified_split(strata, n_held_out, seed)
    return subset(examples, keep), subset(examples, held_out)


def encode(
    tokenizer: Any, text_a: Sequence[str], text_b: Sequence[str] | None, max_length: int
) -> torch.Tensor:
    """Token ids ``[N, W]`` (int64), right-padded with the tokenizer's pad id to the longest
    encoding ``W <= max_length``; pairs as the tokenizer encodes them, truncated
    longest-first."""
    pad = tokenizer.pad_token_id
    chunks = []
    for start in range(0, len(text_a), ENCODE_CHUNK):
        a = list(text_a[start : start + ENCODE_CHUNK])
        b = None if text_b is None else list(text_b[start : start + ENCODE_CHUNK])
        ids = tokenizer(
            a,
            b,
            truncation=True,
            max_length=max_length,
            padding="longest",
            return_attention_mask=False,
            return_token_type_ids=False,
            return_tensors="np",
        )["input_ids"]
        chunks.append(torch.from_numpy(ids).long())
    width = max(chunk.shape[1] for chunk in chunks)
    return torch.cat([F.pad(chunk, (0, width - chunk.shape[1]), value=pad) for chunk in chunks])


class TextTask(Task):
    """Sequence classification or regression of sentences (or sentence pairs) by a
    Hugging Face model; see the module docstring.

    Subclasses set :attr:`num_labels`, :attr:`pairs`, the model (:attr:`model_set` or
    :attr:`model_dir`; :attr:`pretrained` False for a random-init :meth:`model_config`)
    and implement :meth:`read_splits`; :meth:`scores` gives the metrics of predictions.
    """

    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True
    batch_size: ClassVar[int] = 32
    epochs: ClassVar[int] = 3
    num_labels: ClassVar[int]  # 1: regression (MSE on one output)
    pairs: ClassVar[bool] = False  # examples are sentence pairs
    max_length: ClassVar[int] = 128
    eval_batch_size: ClassVar[int] = 128
    model_set: ClassVar[str]  # the catalogue entry of the model folder
    model_dir: ClassVar[str | None] = None  # a folder of your own instead of model_set
    pretrained: ClassVar[bool] = True  # False: random init from model_config()

    # --- data -------------------------------------------------------------------------------

    def read_splits(self, data_dir: pathlib.Path | None) -> TextSplits:
        """The task's labelled sentences, val carved with a fixed seed (see :func:`carve`)."""
        raise NotImplementedError

    def model_folder(self, data_dir: pathlib.Path | str | None = None) -> pathlib.Path:
        """The model (and tokenizer) folder: :attr:`model_dir` if set, else where the
        catalogue finds :attr:`model_set` (a DataUnavailableError saying how to get it)."""
        if self.model_dir is not None:
            folder = pathlib.Path(self.model_dir).expanduser()
            if not (folder / "config.json").is_file():
                raise require_missing_model(self, folder)
            return folder
        return require(self.model_set, data_dir).path

    def check_data(self, data_dir: pathlib.Path | str | None = None) -> None:
        """Before any training: transformers installed, the data and the model folder there
        (one line each saying how to get them)."""
        require_transformers()
        check_task_data(self, data_dir)
        if self.model_dir is None:
            check_task_data(_Named(self.model_set), data_dir)  # found and its md5s match
        else:
            self.model_folder(data_dir)

    def load_data(self, data_dir: pathlib.Path | None = None) -> TaskData:
        """The tokenised splits, loaded once per process per ``(data_key, model folder,
        data_dir)``: the tokenizer's folder is part of the key, so a subclass with its own
        ``model_dir`` never shares another's token ids."""
        folder = self.model_folder(data_dir)
        # build_model() takes no arguments: it builds from the folder the data was made with
        self._folder = folder
        key = (
            f"{self.data_key}@{folder}/L{self.max_length}",
            None if data_dir is None else str(pathlib.Path(data_dir)),
        )
        with base._DATA_LOCK:
            data = base._DATA_CACHE.get(key)
            if data is None:
                data = self._load_data(data_dir)
                base._DATA_CACHE[key] = data
        return data

    def _load_data(self, data_dir: pathlib.Path | None) -> TaskData:
        require_transformers()
        texts = self.read_splits(data_dir)
        tokenizer = tokenizer_of(self._folder)
        pad = tokenizer.pad_token_id
        if pad is None:
            raise require_missing_model(self, self._folder, "its tokenizer has no pad token")

        def split(examples: Examples) -> TextSplit:
            ids = encode(tokenizer, examples.text_a, examples.text_b, self.max_length)
            return TextSplit(ids, self.target_tensor(examples.labels), pad)

        test = split(texts.test)
        extra = {name: split(examples) for name, examples in texts.extra.items()}
        test = TextSplit(test.inputs, test.targets, pad, extra)
        return TaskData(split(texts.train), split(texts.val), test)

    def target_tensor(self, labels: Sequence[float]) -> torch.Tensor:
        """Labels as a tensor: float32 scores for regression, int64 classes otherwise."""
        if self.num_labels == 1:
            return torch.tensor(labels, dtype=torch.float32)
        return torch.tensor(labels, dtype=torch.int64)

    # --- model and loss ---------------------------------------------------------------------

    def model_config(self, folder: pathlib.Path) -> Any:
        """The architecture of a randomly initialised model (``pretrained = False``)."""
        raise NotImplementedError

    def build_model(self) -> torch.nn.Module:
        """The folder's pretrained model with a new head (or a random one, ``pretrained =
        False``), wrapped as a :class:`SequenceClassifier`; the caller seeds torch first."""
        folder = getattr(self, "_folder", None) or self.model_folder(None)
        tokenizer = tokenizer_of(folder)
        if self.pretrained:
            model = load_pretrained(folder, self.num_labels)
        else:
            model = from_config(self.model_config(folder))
        return SequenceClassifier(
            model, tokenizer.pad_token_id, tokenizer.sep_token_id, self.pairs, self.num_labels == 1
        )

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy; regression: mean squared error ``(1/B) sum_i (y_i - t_i)^2``."""
        if self.num_labels == 1:
            return F.mse_loss(outputs.float(), targets)
        return F.cross_entropy(outputs, targets)

    # --- batches: dynamic padding -----------------------------------------------------------

    def batches(
        self,
        split: Split,
        batch_size: int,
        generator: torch.Generator,
        *,
        augment_generator: torch.Generator | None = None,
        token_budget: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """A seeded permutation cut into ``batch_size`` batches, each batch's ids trimmed to
        its longest sequence (no augmentation)."""
        order = torch.randperm(len(split), generator=generator)
        pad = _pad_id(split)
        for start in range(0, len(split), batch_size):
            index = order[start : start + batch_size]
            yield trim(split.inputs[index], pad), split.targets[index]

    # --- evaluation -------------------------------------------------------------------------

    def predict(
        self, model: torch.nn.Module, split: Split, batch_size: int | None = None
    ) -> torch.Tensor:
        """Predicted classes (int64) or scores (float) of every example, in split order;
        batches of similar length (sorted), trimmed; eval mode, no gradients."""
        if len(split) == 0:
            raise ValueError("cannot evaluate on an empty split")
        size = batch_size or self.eval_batch_size
        pad = _pad_id(split)
        order = torch.sort((split.inputs != pad).sum(1), descending=True, stable=True).indices
        outputs = []
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for start in range(0, len(split), size):
                    index = order[start : start + size]
                    out = model(trim(split.inputs[index], pad))
                    outputs.append(out.float() if self.num_labels == 1 else out.argmax(-1))
        finally:
            model.train(was_training)
        predicted = torch.cat(outputs)
        result = torch.empty_like(predicted)
        result[order.to(predicted.device)] = predicted
        return result.cpu()

    def scores(self, predicted: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The task's metrics of predictions (default: accuracy)."""
        return {"accuracy": text_metrics.accuracy(predicted, targets)}

    def evaluate_metrics(
        self, model: torch.nn.Module, split: Split, batch_size: int | None = None
    ) -> dict[str, float]:
        """:meth:`scores` on the split, and on each of its ``extra`` sets as
        ``<metric>_<name>`` (batch size default :attr:`eval_batch_size`)."""
        values = self.scores(self.predict(model, split, batch_size), split.targets.cpu())
        for name, other in getattr(split, "extra", {}).items():
            extra = self.scores(self.predict(model, other, batch_size), other.targets.cpu())
            values.update({f"{metric}_{name}": value for metric, value in extra.items()})
        return values

    def evaluate(
        self, model: torch.nn.Module, split: Split, batch_size: int | None = None
    ) -> float:
        """The selection metric (:attr:`metric`) of :meth:`evaluate_metrics`."""
        return self.evaluate_metrics(model, split, batch_size)[self.metric]


def trim(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Right-padded ids cut after the batch's last non-pad column (at least one column)."""
    used = (ids != pad_id).any(0)
    width = int(used.nonzero().max()) + 1 if bool(used.any()) else 1
    return ids[:, :width]


def _pad_id(split: Split) -> int:
    return getattr(split, "pad_id", 0)


@functools.lru_cache(maxsize=4)
def tokenizer_of(folder: pathlib.Path) -> Any:
    return load_tokenizer(folder)


@dataclass(frozen=True)
class _Named:
    """Stands for a task whose ``data_set`` is a model folder (for check_task_data)."""

    data_set: str


def require_missing_model(task: TextTask, folder: pathlib.Path, why: str = "") -> Exception:
    """A DataUnavailableError for a task's own ``model_dir`` that is not a model folder."""
    from demon_optim.study.datasets import DataUnavailableError

    reason = why or "no config.json there"
    return DataUnavailableError(
        f"task {task.name}: model folder {folder}: {reason}; expected a Hugging Face folder "
        "(config.json, model.safetensors or pytorch_model.bin, tokenizer.json or vocab.txt) "
        "as save_pretrained writes it"
    )

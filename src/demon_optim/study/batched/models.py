"""M models of one architecture as one module with stacked parameters.

:func:`batch_models` takes M models built one by one (``torch.manual_seed(seed_m)`` then
``task.build_model()``, as each trial builds its own), stacks every parameter and buffer
along a new leading dimension M (``stacked[m]`` is model m's tensor, bit for bit), and
returns a :class:`BatchedModel` whose ``forward`` maps inputs ``[M, B, ...]`` (model m's
batch at index m) to outputs ``[M, B, ...]``. The models become its *members*: their
parameters and buffers are rebound to views of the stacked storage, so
``batched.member(m)`` is model m itself, an ordinary module of its own class that sees
every update of the stacked weights (the task's own evaluation runs on it unchanged).

Gradients. Summing the models' losses, ``L = sum_m L_m(theta_m)``, makes the gradient of
the stacked parameters exactly the models' own: ``dL/dtheta_m = dL_m/dtheta_m``, since
``L_k`` does not depend on ``theta_m`` for ``k != m``. So one backward pass over the sum
fills ``stacked.grad[m]`` with what model m's backward pass alone would give.

Forms (chosen from the model's exact class; a subclass may change ``forward``, so it gets
the generic form):

- ``MLP`` (study/models/small.py, residual or not): every linear layer is one ``baddbmm``
  over the M models (:func:`~demon_optim.study.batched.layers.linear`).
- ``ConvNet1D``: the convolutions either as im2col + ``baddbmm`` (``conv="unfold"``) or as
  one grouped convolution with the model axis folded into the channels
  (``conv="grouped"``); ``"auto"`` is the one measured faster (benchmarks/batched_models.py:
  unfold, on the CPU, at every M measured).
- ``GRUClassifier``: a hand-written GRU whose M models and two directions are the batch of
  one ``baddbmm`` per time step, with ``nn.GRU``'s gates
  (:func:`~demon_optim.study.batched.layers.gru_layer`).
- any other architecture: ``torch.func`` (``functional_call`` of the model over the
  stacked parameters and buffers under ``vmap(randomness="different")``). BatchNorm keeps
  per-model running statistics (the stacked buffers, updated in place in train mode);
  dropout and any other random op draw different numbers for each model. A batched trial
  with dropout is therefore equal to its unbatched run only in distribution, not in its
  values: the random numbers come from one shared stream, not from each trial's own.
  (The dedicated forms have no random ops, so they equal the unbatched models up to
  floating-point rounding.)

What cannot be batched raises :class:`NotBatchable` with a short reason: models of
different classes or shapes, a parameter shared between models, a tensor held outside
parameters and buffers (it could not be stacked), and, with an ``example`` input (or at
the generic form's first forward pass), a forward pass ``vmap`` refuses (in-place writes
into unbatched tensors, data-dependent control flow, ``.item()``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from demon_optim.errors import invalid
from demon_optim.study.batched import layers
from demon_optim.study.models import MLP, ConvNet1D, GRUClassifier

FORMS = ("auto", "generic")
CONVS = ("auto", "unfold", "grouped")
# the ConvNet1D form "auto" picks (benchmarks/batched_models.py, one CPU thread, batch 100:
# unfold 1.4-2.0x faster than the grouped convolution at M = 16, 64 and 128)
AUTO_CONV = "unfold"


class NotBatchable(Exception):
    """These models cannot be trained as one batched model; ``reason`` says why in a few
    words (the run says it once and trains them one at a time)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BatchedModel(nn.Module):
    """M independent copies of one architecture with stacked parameters (leading dim M).

    ``forward(inputs [M, B, ...]) -> outputs [M, B, ...]``; the stacked tensors are this
    module's parameters and buffers (``.to(device)`` moves them; :meth:`member` follows).
    Built by :func:`batch_models`; subclasses are the forms it chooses from.
    """

    size: int

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.size = len(models)
        first = models[0]
        self.parameter_names = tuple(name for name, _ in first.named_parameters())
        self.buffer_names = tuple(name for name, _ in first.named_buffers())
        self.stacked = nn.ParameterList()
        for name in self.parameter_names:
            tensors = [model.get_parameter(name) for model in models]
            stacked = torch.stack([t.detach() for t in tensors])
            self.stacked.append(nn.Parameter(stacked, requires_grad=tensors[0].requires_grad))
        for index, name in enumerate(self.buffer_names):
            tensors = [model.get_buffer(name) for model in models]
            self.register_buffer(f"buffer{index}", torch.stack([t.detach() for t in tensors]))
        # plain attributes, not submodules: their tensors are views of ours and must not be
        # moved, counted or saved a second time
        self._members = list(models)
        self._slots = [_slots_of(model) for model in models]
        for m in range(self.size):
            self._rebind(m)  # the models' own tensors are freed: the stacked copy is theirs

    def stacked_parameters(self) -> list[nn.Parameter]:
        """The stacked leaf tensors an optimizer steps (those that require gradients), in
        the order of the first model's ``named_parameters()``."""
        return [p for p in self.stacked if p.requires_grad]

    def named_stacked(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter and buffer under the member's own name (``"out.weight"``)."""
        named: dict[str, torch.Tensor] = dict(zip(self.parameter_names, self.stacked, strict=True))
        for index, name in enumerate(self.buffer_names):
            named[name] = getattr(self, f"buffer{index}")
        return named

    def stacked_buffers(self) -> dict[str, torch.Tensor]:
        """The stacked buffers by the member's own name (BatchNorm's running statistics)."""
        return {name: getattr(self, f"buffer{i}") for i, name in enumerate(self.buffer_names)}

    def member(self, m: int) -> nn.Module:
        """Model m as an ordinary unbatched module of its own class (the module passed to
        :func:`batch_models`), its parameters and buffers views of ``stacked[m]``.

        In-place updates of the stacked tensors (the optimizer's) show in the member at
        once; its buffers written in place (BatchNorm in train mode) write the stacked
        storage. Its train/eval mode is its own. Call it again after moving the batched
        model (``.to``): the views are rebound to the current storage on every call.
        Gradients of a loss computed through the member reach the member's parameters, not
        the stacked ones: train through :meth:`forward`.
        """
        if not 0 <= m < self.size:
            raise invalid("m", m, f"0 .. {self.size - 1}")
        self._rebind(m)
        return self._members[m]

    def _rebind(self, m: int) -> None:
        named = self.named_stacked()
        for module, key, name, is_parameter in self._slots[m]:
            view = named[name].detach()[m]
            current = (module._parameters if is_parameter else module._buffers)[key]
            if current is not None and _same_memory(current, view):
                continue
            if is_parameter:
                view = nn.Parameter(view, requires_grad=named[name].requires_grad)
            # setattr, not the tables: modules that cache their weights see the change
            # (nn.GRU's _flat_weights)
            setattr(module, key, view)

    def forward(self, inputs: torch.Tensor) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class BatchedMLP(BatchedModel):
    """:class:`~demon_optim.study.models.MLP` x M: each layer one ``baddbmm``.

    ``h_1 = relu(W_1 x + b_1)``; ``h_k = relu(W_k h_{k-1} + b_k)`` (+ ``h_{k-1}`` when the
    MLP is residual and the widths agree, as ``MLP.forward``); logits ``W_out h_K + b_out``.
    """

    def __init__(self, models: Sequence[MLP]) -> None:
        super().__init__(models)
        index = {name: i for i, name in enumerate(self.parameter_names)}
        first = models[0]
        self._hidden = [
            (index[f"hidden.{k}.weight"], index[f"hidden.{k}.bias"])
            for k in range(len(first.hidden))
        ]
        self._out = (index["out.weight"], index["out.bias"])
        self._residual = first.residual

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, out]`` for inputs ``[M, B, *]`` (flattened per example)."""
        stacked = self.stacked
        h = inputs.flatten(start_dim=2)
        for k, (weight, bias) in enumerate(self._hidden):
            residual = self._residual and k > 0 and stacked[weight].shape[1] == h.shape[-1]
            h = layers.linear(h, stacked[weight], stacked[bias], relu=True, residual=residual)
        weight, bias = self._out
        return layers.linear(h, stacked[weight], stacked[bias])


class BatchedConvNet1D(BatchedModel):
    """:class:`~demon_optim.study.models.ConvNet1D` x M: three strided convolutions with
    ReLU, then the linear classifier as one ``baddbmm``.

    ``conv="unfold"``: every convolution im2col + ``baddbmm``, channels last;
    ``conv="grouped"``: one grouped ``conv1d`` per layer, the models folded into the
    channels (``[B, M C, L]``).
    """

    def __init__(self, models: Sequence[ConvNet1D], conv: str) -> None:
        super().__init__(models)
        index = {name: i for i, name in enumerate(self.parameter_names)}
        first = models[0]
        self._convs = []
        for name in ("conv1", "conv2", "conv3"):
            module = getattr(first, name)
            (stride,), (padding,) = module.stride, module.padding
            self._convs.append((index[f"{name}.weight"], index[f"{name}.bias"], stride, padding))
        self._linear = (index["linear.weight"], index["linear.bias"])
        self.conv = conv

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, classes]`` for signals ``[M, B, length]``."""
        models, batch = inputs.shape[:2]
        stacked = self.stacked
        if self.conv == "grouped":
            h = inputs.reshape(models, batch, -1).transpose(0, 1)  # [B, M x 1 channel, L]
            for weight, bias, stride, padding in self._convs:
                h = torch.relu_(
                    layers.conv1d_grouped(h, stacked[weight], stacked[bias], stride, padding)
                )
            # [B, M C, L'] -> [M, B, C L'], torch's flatten order (channel-major) per model
            features = h.reshape(batch, models, -1).transpose(0, 1)
            weight, bias = self._linear
            return layers.linear(features, stacked[weight], stacked[bias])
        h = inputs.reshape(models, batch, -1, 1)  # [M, B, L, 1 channel], channels last
        for weight, bias, stride, padding in self._convs:
            h = layers.conv1d_unfold(h, stacked[weight], stacked[bias], stride, padding, relu=True)
        # channels last: features in (step, channel) order; the classifier's weights, in
        # torch's (channel, step) order, are permuted to match (a copy of the small weights)
        steps, channels = h.shape[2], h.shape[3]
        weight, bias = self._linear
        classes = stacked[weight].shape[1]
        permuted = (
            stacked[weight]
            .view(models, classes, channels, steps)
            .transpose(2, 3)
            .reshape(models, classes, steps * channels)
        )
        return layers.linear(h.reshape(models, batch, steps * channels), permuted, stacked[bias])


class BatchedGRUClassifier(BatchedModel):
    """:class:`~demon_optim.study.models.GRUClassifier` x M: one GRU over the M models and
    their directions (:func:`~demon_optim.study.batched.layers.gru_layer`), then the linear
    layer on all outputs as one ``bmm``.

    torch's bidirectional output at step t is ``[h_fwd_t, h_rev_t]``, flattened
    ``(t, direction, unit)``; the reverse direction runs over the flipped sequence, so its
    states come in reversed time. Rather than reorder the states (``[2M, H, T, B]``, large),
    the classifier's weights (``[M, classes, 2 T H]``, small) are split per direction,
    the reverse half flipped in time, and both put in the states' ``(unit, step)`` order:
    then ``logits^T = sum_d W_d S_d + b`` is one product over the 2M (model, direction)
    pairs and a sum of the two halves.
    """

    def __init__(self, models: Sequence[GRUClassifier]) -> None:
        super().__init__(models)
        index = {name: i for i, name in enumerate(self.parameter_names)}
        gru = models[0].gru
        suffixes = ["_l0", "_l0_reverse"] if gru.bidirectional else ["_l0"]
        self._directions = [
            tuple(index[f"gru.{kind}{suffix}"] for kind in KINDS) for suffix in suffixes
        ]
        self._linear = (index["linear.weight"], index["linear.bias"])
        self.hidden_size = gru.hidden_size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits ``[M, B, classes]`` for signals ``[M, B, length]``."""
        models, batch = inputs.shape[:2]
        stacked = self.stacked
        x = inputs.reshape(models, batch, -1).transpose(1, 2).unsqueeze(1)  # [M, 1, T, B]
        steps, directions = x.shape[2], len(self._directions)
        sequences = [x, x.flip(2)][:directions]  # the reverse direction reads it backwards
        weights = [
            torch.cat([stacked[direction[i]] for direction in self._directions])
            for i in range(len(KINDS))
        ]  # [D M, ...]: direction-major
        states = layers.gru_layer(torch.cat(sequences).contiguous(), *weights)  # [D M, H, T, B]
        hidden = self.hidden_size
        weight, bias = self._linear
        classes = stacked[weight].shape[1]
        per_step = stacked[weight].view(models, classes, steps, directions, hidden)
        blocks = []
        for d in range(directions):
            w = per_step[:, :, :, d]  # [M, classes, T, H]
            if d == 1:
                w = w.flip(2)  # reverse states are in reading order: step s is time T-1-s
            blocks.append(w.transpose(2, 3).reshape(models, classes, hidden * steps))
        products = torch.bmm(torch.cat(blocks), states.view(directions * models, -1, batch))
        # the bias in the products' dtype: under autocast the logits stay in it, as
        # nn.Linear's do
        logits = products.view(directions, models, classes, batch).sum(0)
        return (logits + stacked[bias].unsqueeze(2).to(logits.dtype)).transpose(1, 2)


KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class FunctionalBatchedModel(BatchedModel):
    """Any architecture: ``torch.func.functional_call`` of the model under
    ``torch.func.vmap(..., randomness="different")`` over the stacked parameters, buffers
    and inputs.

    BatchNorm's running statistics are stacked buffers, updated in place per model in train
    mode; random ops (dropout) draw different numbers for each model. The model itself is
    called on a copy living on the ``meta`` device (no memory), in this module's mode.
    If ``vmap`` refuses the forward pass, the first call raises :class:`NotBatchable`.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        # copied before the stacking makes its tensors views of all M models' storage
        base = copy.deepcopy(models[0]).to("meta")
        super().__init__(models)
        self._base = base
        self._vmapped = torch.func.vmap(self._call, randomness="different")
        self._checked = False

    def _call(self, parameters: dict, buffers: dict, inputs: torch.Tensor) -> Any:
        return torch.func.functional_call(self._base, (parameters, buffers), (inputs,))

    def forward(self, inputs: torch.Tensor) -> Any:
        """Outputs ``[M, B, ...]`` (every tensor of a tuple output too) for ``[M, B, ...]``."""
        self._base.train(self.training)
        parameters = dict(zip(self.parameter_names, self.stacked, strict=True))
        if self._checked:
            return self._vmapped(parameters, self.stacked_buffers(), inputs)
        try:
            outputs = self._vmapped(parameters, self.stacked_buffers(), inputs)
        except Exception as error:  # vmap's refusals are RuntimeErrors of many kinds
            raise NotBatchable(
                f"torch.func.vmap refuses its forward pass ({_first(error)})"
            ) from error
        self._checked = True
        return outputs

    def probe(self, example: torch.Tensor) -> None:
        """One forward and backward pass on ``example`` (one model's inputs ``[B, ...]``, the
        same for every model) in train mode, leaving no trace: parameters, buffers, their
        gradients and the global random state are as before. Raises :class:`NotBatchable`
        if ``vmap`` refuses it."""
        parameters = {
            name: p.detach().clone().requires_grad_(p.requires_grad)
            for name, p in zip(self.parameter_names, self.stacked, strict=True)
        }
        buffers = {name: b.clone() for name, b in self.stacked_buffers().items()}
        inputs = example.unsqueeze(0).expand(self.size, *example.shape)
        devices = [example.device] if example.device.type == "cuda" else []  # + the CPU's
        was_training = self._base.training
        self._base.train(True)
        try:
            with torch.random.fork_rng(devices=devices):
                outputs = self._vmapped(parameters, buffers, inputs)
                leaves = [
                    t
                    for t in torch.utils._pytree.tree_leaves(outputs)
                    if isinstance(t, torch.Tensor) and t.requires_grad
                ]
                if leaves:
                    sum(leaf.float().sum() for leaf in leaves).backward()
        except Exception as error:
            raise NotBatchable(
                f"torch.func.vmap refuses its forward pass ({_first(error)})"
            ) from error
        finally:
            self._base.train(was_training)
        self._checked = True


def batch_models(
    models: Sequence[nn.Module],
    *,
    example: torch.Tensor | None = None,
    form: str = "auto",
    conv: str = "auto",
) -> BatchedModel:
    """One :class:`BatchedModel` from M models of one architecture.

    Args:
        models: M modules, each built by ``task.build_model()`` after
            ``torch.manual_seed(seed_m)``, so the stacked initial weights are each trial's
            own, exactly. They become the members (:meth:`BatchedModel.member`): their
            parameters and buffers are rebound to views of the stacked storage.
        example: one model's inputs ``[B, ...]`` (a few examples suffice); with it the
            generic form is tried once here (forward and backward, without side effects) so
            a refusal raises now rather than at the first training step.
        form: ``"auto"`` (the dedicated form of a built-in MNIST-1D model, else generic) or
            ``"generic"`` (always ``torch.func``; for comparisons).
        conv: ``ConvNet1D`` only: ``"unfold"`` (im2col + bmm), ``"grouped"`` (one grouped
            convolution) or ``"auto"`` (the faster one measured: unfold).

    Raises:
        NotBatchable: with the reason, when the models cannot be one batched model.
        ConfigError: no models, the same module twice, or a bad ``form`` / ``conv``.
    """
    if form not in FORMS:
        raise invalid("form", form, FORMS)
    if conv not in CONVS:
        raise invalid("conv", conv, CONVS)
    if not models:
        raise invalid("models", "[]", "one model or more")
    if len({id(model) for model in models}) != len(models):
        raise invalid("models", "the same module twice", "distinct modules")
    _check_alike(models)
    cls = type(models[0])
    dedicated = form == "auto" and not any(_has_hooks(model) for model in models)
    if dedicated and cls is MLP:
        return BatchedMLP(models)  # type: ignore[arg-type]
    if dedicated and cls is ConvNet1D and _plain_convs(models[0]):
        return BatchedConvNet1D(models, AUTO_CONV if conv == "auto" else conv)  # type: ignore[arg-type]
    if dedicated and cls is GRUClassifier and _plain_gru(models[0].gru):
        return BatchedGRUClassifier(models)  # type: ignore[arg-type]
    batched = FunctionalBatchedModel(models)
    if example is not None:
        batched.probe(example)
    return batched


def _check_alike(models: Sequence[nn.Module]) -> None:
    """NotBatchable unless the models are independent copies of one architecture."""
    first = models[0]
    classes = sorted({type(model).__name__ for model in models})
    if len(classes) > 1:
        raise NotBatchable(f"models of different classes ({', '.join(classes)})")
    for kind in ("parameters", "buffers"):
        signature = _signature(first, kind)
        for model in models[1:]:
            other = _signature(model, kind)
            if other != signature:
                differing = sorted(set(signature.items()) ^ set(other.items()))
                raise NotBatchable(f"models differ in their {kind} ({differing[0][0]})")
    for model in models:
        for path, module in model.named_modules():
            for attribute, value in vars(module).items():
                if isinstance(value, torch.Tensor):
                    where = f"{path}.{attribute}" if path else attribute
                    raise NotBatchable(
                        f"it holds a tensor outside its parameters and buffers ({where})"
                    )
        unique = dict(model.named_parameters())
        for name, _ in model.named_parameters(remove_duplicate=False):
            if name not in unique:
                raise NotBatchable(f"a parameter is tied within the model ({name})")
    seen: dict[int, str] = {}
    for model in models:
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if id(tensor) in seen:
                raise NotBatchable(f"models share a tensor ({name})")
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            seen[id(tensor)] = name


def _signature(model: nn.Module, kind: str) -> dict[str, tuple]:
    named = model.named_parameters() if kind == "parameters" else model.named_buffers()
    return {
        name: (tuple(t.shape), t.dtype, t.device, getattr(t, "requires_grad", False))
        for name, t in named
    }


def _slots_of(model: nn.Module) -> list[tuple[nn.Module, str, str, bool]]:
    """Where each stacked tensor lives in ``model``: ``(module, key, name, is_parameter)``."""
    slots = []
    for path, module in model.named_modules():
        prefix = f"{path}." if path else ""
        for key, value in module._parameters.items():
            if value is not None:
                slots.append((module, key, prefix + key, True))
        for key, value in module._buffers.items():
            if value is not None:
                slots.append((module, key, prefix + key, False))
    return slots


def _same_memory(current: torch.Tensor, view: torch.Tensor) -> bool:
    return (
        current.device == view.device
        and current.dtype == view.dtype
        and current.shape == view.shape
        and current.data_ptr() == view.data_ptr()
    )


def _has_hooks(model: nn.Module) -> bool:
    """Hooks run in ``module(...)``: only the generic form calls the module itself."""
    return any(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
        for module in model.modules()
    )


def _plain_convs(model: ConvNet1D) -> bool:
    """Convolutions the dedicated form computes: zero padding, dilation 1, one group."""
    return all(
        conv.padding_mode == "zeros"
        and conv.dilation == (1,)
        and conv.groups == 1
        and conv.bias is not None
        and isinstance(conv.padding, tuple)
        for conv in (model.conv1, model.conv2, model.conv3)
    )


def _plain_gru(gru: nn.GRU) -> bool:
    """A GRU the dedicated form computes: one layer, biases, batch first, no projection."""
    return gru.num_layers == 1 and gru.bias and gru.batch_first


def _first(error: Exception) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 160 else line[:157] + "..."

"""Layers of M independent models at once, over stacked parameters (leading dimension M).

Each function computes, for every model m, what the unbatched torch layer computes with
model m's parameters on model m's inputs, as batched matrix products: the model axis is
the batch axis of ``torch.baddbmm`` / ``torch.bmm`` (or the groups of one grouped
convolution), so M small products cost one call. Parameters keep the layout of the torch
module they came from (``[M, *param.shape]``), so that model m's weights are the plain
slice ``stacked[m]``; any other layout a product needs is a view, or a copy of the small
weights made in the forward pass, never of the stored parameters.

:func:`linear` and :func:`conv1d_unfold` are autograd Functions with hand-written backward
passes: autograd's own (``baddbmm`` with a transposed weight, ``unfold``) costs a copy of
every weight gradient and a slow scatter for the unfolded windows, which on these small
models takes more time than the products themselves. The backward formulas are the
standard ones (below); ReLU's is torch's own ``threshold_backward`` on its output.

Under autocast (bf16 / fp16 trials) the Functions cast their inputs to the autocast dtype
once and run in it, forward and backward, as autocast would run their products; the
gradients reach the parameters in the parameters' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _autocast(*tensors: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
    """The tensors in the autocast dtype when autocast is on for their device, else as is."""
    device = next(t for t in tensors if t is not None).device.type
    if not torch.is_autocast_enabled(device):
        return tensors
    dtype = torch.get_autocast_dtype(device)
    return tuple(None if t is None or not t.is_floating_point() else t.to(dtype) for t in tensors)


def _device_type(tensor: torch.Tensor) -> str:
    return tensor.device.type


class _Linear(torch.autograd.Function):
    """``a = x W^T + b``, then ``relu`` (optional), then ``+ x`` (optional residual)."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        relu: bool,
        residual: bool,
    ) -> torch.Tensor:
        inputs, weight, bias = _autocast(inputs, weight, bias)
        with torch.autocast(_device_type(inputs), enabled=False):
            if bias is None:
                out = torch.bmm(inputs, weight.transpose(1, 2))
            else:
                out = torch.baddbmm(bias.unsqueeze(1), inputs, weight.transpose(1, 2))
            if relu:
                out = out.relu_()
            activation = out
            if residual:
                out = inputs + activation
        ctx.save_for_backward(inputs, weight, activation if relu else None)
        ctx.flags = (relu, residual, bias is not None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight, activation = ctx.saved_tensors
        relu, residual, has_bias = ctx.flags
        grad = grad.to(weight.dtype)
        # dL/dz = dL/da * [a > 0]: what torch's relu backward computes from its output
        grad_z = torch.ops.aten.threshold_backward(grad, activation, 0) if relu else grad
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            # dL/dx = dL/dz W (+ dL/dout through the skip connection, in the same product)
            if residual:
                grad_inputs = torch.baddbmm(grad, grad_z, weight)
            else:
                grad_inputs = torch.bmm(grad_z, weight)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.bmm(grad_z.transpose(1, 2), inputs)  # dL/dW = dz^T x
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_z.sum(dim=1)
        return grad_inputs, grad_weight, grad_bias, None, None


def linear(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    relu: bool = False,
    residual: bool = False,
) -> torch.Tensor:
    """``y_m = x_m W_m^T + b_m`` for every model m: ``[M, N, in] -> [M, N, out]``;
    ``relu``: ``max(y, 0)``; ``residual``: plus ``x_m`` (in = out).

    ``weight`` ``[M, out, in]`` (``nn.Linear``'s layout, read transposed without a copy),
    ``bias`` ``[M, out]`` or None. One ``baddbmm``, the bias added inside the product as
    ``nn.Linear``'s ``addmm`` adds it. Backward: ``dz = dy [z > 0]``, ``dW = dz^T x``,
    ``db = sum_n dz``, ``dx = dz W`` (+ ``dy`` with the skip connection, in one ``baddbmm``).
    """
    return _Linear.apply(inputs, weight, bias, relu, residual)


class _Conv1d(torch.autograd.Function):
    """im2col + ``baddbmm`` convolution, channels last, with an optional ReLU."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int,
        padding: int,
        relu: bool,
    ) -> torch.Tensor:
        inputs, weight, bias = _autocast(inputs, weight, bias)
        models, batch, length, channels = inputs.shape
        _, out_channels, _, kernel = weight.shape
        steps = (length + 2 * padding - kernel) // stride + 1
        with torch.autocast(_device_type(inputs), enabled=False):
            padded = F.pad(inputs, (0, 0, padding, padding)) if padding else inputs
            # windows [M, B, L', k, C] (a view: window t, tap j is padded step stride t + j)
            # -> columns [M, B L', k C], channels innermost: one strided copy
            windows = padded.unfold(2, kernel, stride).transpose(3, 4)
            columns = windows.reshape(models, batch * steps, kernel * channels)
            # W [M, O, C, k] -> [M, O, k C] to match (a copy of the small weights)
            matrix = weight.transpose(2, 3).reshape(models, out_channels, kernel * channels)
            if bias is None:
                out = torch.bmm(columns, matrix.transpose(1, 2))
            else:
                out = torch.baddbmm(bias.unsqueeze(1), columns, matrix.transpose(1, 2))
            if relu:
                out = out.relu_()
        ctx.save_for_backward(columns, matrix, out if relu else None)
        ctx.geometry = (length, channels, kernel, stride, padding, steps, relu, bias is not None)
        return out.view(models, batch, steps, out_channels)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        columns, matrix, activation = ctx.saved_tensors
        length, channels, kernel, stride, padding, steps, relu, has_bias = ctx.geometry
        models, batch = grad.shape[:2]
        grad = grad.to(matrix.dtype).reshape(models, batch * steps, -1)
        grad_z = torch.ops.aten.threshold_backward(grad, activation, 0) if relu else grad
        grad_inputs = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_columns = torch.bmm(grad_z, matrix).view(models, batch, steps, kernel, channels)
            grad_inputs = _col2im(grad_columns, length, stride, padding)
        if ctx.needs_input_grad[1]:
            grad_matrix = torch.bmm(grad_z.transpose(1, 2), columns)  # [M, O, k C]
            out_channels = grad_matrix.shape[1]
            grad_weight = grad_matrix.view(models, out_channels, kernel, channels).transpose(2, 3)
        if has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_z.sum(dim=1)
        return grad_inputs, grad_weight, grad_bias, None, None, None


def _col2im(columns: torch.Tensor, length: int, stride: int, padding: int) -> torch.Tensor:
    """The input gradient ``[M, B, L, C]`` from the columns' ``[M, B, L', k, C]``: the sum,
    for every step, of the taps that read it (step ``stride t + j - padding`` from window t,
    tap j).

    Taps ``j0 .. j0 + stride - 1`` of all windows cover distinct steps, so each group of
    ``stride`` taps is one strided add (a copy for the first, which covers every step but
    the tail): ``ceil(k / stride)`` passes instead of k.
    """
    models, batch, steps, kernel, channels = columns.shape
    padded = columns.new_empty(models, batch, length + 2 * padding, channels)
    for j0 in range(0, kernel, stride):
        taps = min(stride, kernel - j0)
        window_view = padded.as_strided(
            (models, batch, steps, taps, channels),
            (padded.stride(0), padded.stride(1), stride * channels, channels, 1),
            padded.storage_offset() + j0 * channels,
        )
        source = columns[:, :, :, j0 : j0 + taps]
        if j0 > 0:
            window_view.add_(source)
        elif taps == stride:  # steps 0 .. stride L' - 1, each once
            padded[:, :, stride * steps :].zero_()
            window_view.copy_(source)
        else:  # kernel < stride: steps between windows are read by no tap
            padded.zero_()
            window_view.copy_(source)
    return padded[:, :, padding : padding + length]


def conv1d_unfold(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
    *,
    relu: bool = False,
) -> torch.Tensor:
    """``nn.Conv1d`` (zero padding, dilation 1, one group) of every model as im2col + bmm,
    then ``relu`` (optional).

    ``inputs`` ``[M, B, L, C_in]`` (channels last), ``weight`` ``[M, C_out, C_in, k]``,
    ``bias`` ``[M, C_out]``; returns ``[M, B, L', C_out]`` (channels last again), with
    ``L' = (L + 2 padding - k) // stride + 1``:
    ``y_m[b, t, o] = b_m[o] + sum_{c, j} W_m[o, c, j] x_m[b, stride t + j - padding, c]``.

    The windows are read by ``unfold`` (a view) and gathered into one ``[B L', k C_in]``
    matrix per model, whose product with ``W_m`` is the convolution; channels last makes
    the product's output the next layer's input as it is. Backward: ``dW`` and ``db`` as for
    :func:`linear` on the gathered matrix; the input gradient is the gathered matrix's
    (``dz W``) added back into place, one strided add per kernel tap.
    """
    return _Conv1d.apply(inputs, weight, bias, stride, padding, relu)


def conv1d_grouped(
    inputs: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: int,
    padding: int,
) -> torch.Tensor:
    """``nn.Conv1d`` of every model as one grouped convolution, the models as groups.

    ``inputs`` ``[B, M C_in, L]`` (model m's channels at ``m C_in .. (m + 1) C_in - 1``),
    ``weight`` ``[M, C_out, C_in, k]``, ``bias`` ``[M, C_out]``; returns ``[B, M C_out, L']``
    in the same folded layout, so convolutions chain without reshaping. The weights are
    viewed ``[M C_out, C_in, k]`` (no copy): group m sees only model m's channels.
    """
    models, out_channels, channels, kernel = weight.shape
    folded = weight.reshape(models * out_channels, channels, kernel)
    flat_bias = None if bias is None else bias.reshape(models * out_channels)
    return F.conv1d(inputs, folded, flat_bias, stride=stride, padding=padding, groups=models)


class _GRU(torch.autograd.Function):
    """One GRU layer over G independent sequences, with backpropagation through time
    written out.

    Layout ``[G, features, T, B]``: every per-step slice is ``[G, features, B]`` with the
    batch innermost and contiguous. (``nn.GRU``'s ``[..., B, 3H]`` makes the gate slices
    rows of H = 6 values, on which every elementwise kernel crawls; autograd's graph of T
    steps x a dozen small ops, whose gate slices each allocate a full-size gradient in
    backward, costs more than the arithmetic.) Only the states are kept for backward,
    which recomputes each step's gates from them: storing the gates of all steps (and
    their gradients) takes ~10 times the states' memory, and on a CPU first touching that
    much fresh memory every step costs more than computing the gates twice.
    """

    @staticmethod
    def forward(
        ctx: Any,
        inputs: torch.Tensor,
        weight_ih: torch.Tensor,
        weight_hh: torch.Tensor,
        bias_ih: torch.Tensor,
        bias_hh: torch.Tensor,
    ) -> torch.Tensor:
        inputs, weight_ih, weight_hh, bias_ih, bias_hh = _autocast(
            inputs, weight_ih, weight_hh, bias_ih, bias_hh
        )
        pairs, _, steps, batch = inputs.shape
        hidden = weight_hh.shape[2]
        with torch.autocast(_device_type(inputs), enabled=False):
            states = inputs.new_empty(pairs, hidden, steps, batch)  # h_1 .. h_T
            for t in range(steps):
                previous = states[:, :, t - 1] if t else None
                _gates(
                    inputs[:, :, t],
                    previous,
                    weight_ih,
                    weight_hh,
                    bias_ih,
                    bias_hh,
                    out=states[:, :, t],
                )
        ctx.save_for_backward(inputs, weight_ih, weight_hh, bias_ih, bias_hh, states)
        return states

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, weight_ih, weight_hh, bias_ih, bias_hh, states = ctx.saved_tensors
        pairs, hidden, steps, batch = states.shape
        h2 = 2 * hidden
        grad = grad.to(weight_hh.dtype)  # [G, H, T, B]
        grad_weight_ih = torch.zeros_like(weight_ih)
        grad_weight_hh = torch.zeros_like(weight_hh)
        grad_bias_ih = torch.zeros_like(bias_ih)
        grad_bias_hh = torch.zeros_like(bias_hh)
        grad_inputs = torch.empty_like(inputs) if ctx.needs_input_grad[0] else None
        recurrent_t = weight_hh.transpose(1, 2)  # [G, H, 3H]
        # gradients of the gates' pre-activations at one step: the recurrent side's
        # (h_r, h_z, h_n) and the input side's (i_r, i_z, i_n); they differ only in n
        grad_h = grad.new_empty(pairs, 3 * hidden, batch)
        grad_i = grad.new_empty(pairs, 3 * hidden, batch)
        buffer = grad.new_empty(pairs, h2, batch)
        carry = None  # dL/dh_t through h_{t+1}
        for t in reversed(range(steps)):
            x, previous = inputs[:, :, t], (states[:, :, t - 1] if t else None)
            reset_update, new, gate_hn = _gates(
                x, previous, weight_ih, weight_hh, bias_ih, bias_hh, out=None
            )
            reset, update = reset_update[:, :hidden], reset_update[:, hidden:]
            d_state = grad[:, :, t] if carry is None else grad[:, :, t] + carry
            through_update = d_state * update  # h' = z h + (1 - z) n
            d_new = torch.ops.aten.tanh_backward(d_state - through_update, new)
            grad_i[:, h2:] = d_new
            torch.mul(d_new, reset, out=grad_h[:, h2:])  # d(h_n) = da_n r
            torch.mul(d_new, gate_hn, out=buffer[:, :hidden])  # dr = da_n h_n
            if previous is None:
                torch.mul(d_state, new, out=buffer[:, hidden:]).neg_()  # dz = dh' (0 - n)
            else:
                torch.mul(d_state, previous - new, out=buffer[:, hidden:])  # dh' (h - n)
            torch.ops.aten.sigmoid_backward.grad_input(
                buffer, reset_update, grad_input=grad_h[:, :h2]
            )
            grad_i[:, :h2] = grad_h[:, :h2]
            grad_bias_hh.add_(grad_h.sum(dim=2))
            grad_bias_ih.add_(grad_i.sum(dim=2))
            grad_weight_ih.baddbmm_(grad_i, x.transpose(1, 2))  # += d(gates_i) x_t^T
            if grad_inputs is not None:
                torch.bmm(weight_ih.transpose(1, 2), grad_i, out=grad_inputs[:, :, t])
            if previous is not None:  # h_0 = 0: no weight gradient, no carry
                grad_weight_hh.baddbmm_(grad_h, previous.transpose(1, 2))
                carry = torch.baddbmm(through_update, recurrent_t, grad_h)
        return grad_inputs, grad_weight_ih, grad_weight_hh, grad_bias_ih, grad_bias_hh


def _gates(
    x: torch.Tensor,
    previous: torch.Tensor | None,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
    out: torch.Tensor | None,
) -> Any:
    """One GRU step, torch's CPU cell: ``r, z = sigmoid(h_rz + i_rz)``,
    ``n = tanh(i_n + h_n r)``, ``h' = (h - n) z + n``; ``previous`` None is h = 0.

    With ``out``: writes h' there. Without: returns ``(r z [G, 2H, B], n, h_n)`` for the
    backward pass.
    """
    hidden = weight_hh.shape[2]
    h2 = 2 * hidden
    if x.shape[1] == 1:  # one input feature: W x + b is b + w x, broadcast (no product)
        gates_i = torch.addcmul(bias_ih.unsqueeze(2), weight_ih, x)  # [G, 3H, B]
    else:
        gates_i = torch.baddbmm(bias_ih.unsqueeze(2), weight_ih, x)
    if previous is None:
        gates_h = bias_hh.unsqueeze(2)  # W_hh 0 + b_hh, broadcast over the batch
    else:
        gates_h = torch.baddbmm(bias_hh.unsqueeze(2), weight_hh, previous)
    reset_update = torch.sigmoid(gates_h[:, :h2] + gates_i[:, :h2])
    gate_hn = gates_h[:, h2:]
    new = torch.tanh(torch.addcmul(gates_i[:, h2:], gate_hn, reset_update[:, :hidden]))
    if out is None:
        return reset_update, new, gate_hn
    update = reset_update[:, hidden:]
    if previous is None:
        return torch.addcmul(new, new, update, value=-1, out=out)
    return torch.addcmul(new, previous - new, update, out=out)


def gru_layer(
    inputs: torch.Tensor,
    weight_ih: torch.Tensor,
    weight_hh: torch.Tensor,
    bias_ih: torch.Tensor,
    bias_hh: torch.Tensor,
) -> torch.Tensor:
    """One GRU layer for ``G`` independent sequences (e.g. M models x 2 directions), zero
    initial state.

    ``inputs`` ``[G, I, T, B]`` (features, then time, then the batch innermost; each
    sequence already in the order it is read: flip it in time for a reverse direction),
    ``weight_ih`` ``[G, 3H, I]``, ``weight_hh`` ``[G, 3H, H]``, ``bias_ih`` / ``bias_hh``
    ``[G, 3H]`` in ``nn.GRU``'s gate order (reset r, update z, new n). Returns the hidden
    states ``[G, H, T, B]`` in reading order. The gates are ``nn.GRU``'s, computed in the
    order of its CPU cell::

        r_t = sigmoid(W_hr h_{t-1} + b_hr + W_ir x_t + b_ir)
        z_t = sigmoid(W_hz h_{t-1} + b_hz + W_iz x_t + b_iz)
        n_t = tanh(W_in x_t + b_in + (W_hn h_{t-1} + b_hn) * r_t)
        h_t = (h_{t-1} - n_t) * z_t + n_t        # = (1 - z_t) n_t + z_t h_{t-1}

    The input projections of all steps are one ``baddbmm`` (torch also projects the whole
    sequence first on the CPU); each step is one ``baddbmm`` over the G sequences for the
    recurrent projections plus five elementwise kernels on ``[G, 3H, B]``, so T steps cost
    T rounds of small kernels whatever G is. Backward, per step from the last (``dh`` the
    gradient reaching ``h_t``)::

        da_n = (dh (1 - z)) (1 - n^2)                 # input and recurrent n gates
        da_r = (da_n (W_hn h_{t-1} + b_hn)) r (1 - r)
        da_z = (dh (h_{t-1} - n)) z (1 - z)
        dh_{t-1} = dh z + W_hh^T [da_r, da_z, da_n r]   (+ the output's gradient at t-1)

    and each weight gradient one product over all steps and examples:
    ``dW_hh = sum_t [da_r, da_z, da_n r]_t h_{t-1}^T``, ``dW_ih = sum_t da_t x_t^T``.
    """
    return _GRU.apply(inputs, weight_ih, weight_hh, bias_ih, bias_hh)

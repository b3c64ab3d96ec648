"""Torch functions that hide their linear operations, replayed as those operations so that the rules by
operation see them.

A ``TorchFunctionMode`` sees one call of ``F.multi_head_attention_forward`` (Python code that runs with the
modes switched off) or of ``torch.lstm``/``gru``/``rnn_tanh``/``rnn_relu`` (one C++ kernel over the whole
sequence), never the ``F.linear`` of the packed in-projection, the out-projection or a recurrent cell. While
the structured engine probes and captures a model (and only then), its modes compute such calls another way,
with the same numbers up to rounding:

- ``F.multi_head_attention_forward``: torch's own Python code, run with its override check off, so that the
  modes see the operations it is made of (``F.linear`` on ``in_proj_weight`` and ``out_proj.weight``);
- a recurrent layer: its cell written out step by step, ``F.linear(x, W_ih, b_ih)`` over all ``T`` steps at
  once and ``F.linear(h, W_hh, b_hh)`` once per step. ``W_hh`` is then a weight shared by ``T`` calls, exactly
  like a layer called at ``T`` positions, and the dense rule factors it with ``T`` = the sequence length.

Packed sequences and recurrent dropout in training mode are left to the original kernels (their parameters
then fall back to per-sample gradients, still exact).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def _without_override_check(func: Callable) -> Callable:
    """A copy of a Python torch function whose ``has_torch_function`` check is off (its body is unchanged)."""
    namespace = {**func.__globals__, "has_torch_function": lambda *_: False}
    copy = types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    return copy


_MULTI_HEAD_ATTENTION = _without_override_check(F.multi_head_attention_forward)


def replay(func: Callable, args: tuple, kwargs: dict) -> Callable[[], Any] | None:
    """How to compute ``func(*args, **kwargs)`` in the operations it is made of, or ``None`` to call it as is.

    The caller runs the returned thunk with its ``TorchFunctionMode`` active again, so that the mode sees
    those operations.
    """
    if func is F.multi_head_attention_forward:
        return lambda: _MULTI_HEAD_ATTENTION(*args, **kwargs)
    cell = _CELLS.get(func)
    if cell is None:
        return None
    # The padded overload: (input, hx, weights, has_biases, num_layers, dropout, train, bidirectional,
    # batch_first); the packed one has batch_sizes second and the weights fourth.
    if kwargs or len(args) != 9 or not isinstance(args[3], bool) or not isinstance(args[2], (list, tuple)):
        return None
    dropout, train = args[5], args[6]
    if dropout and train:
        return None
    return lambda: _recurrent(cell, *args)


def _tanh(gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    return torch.tanh(gi + gh), None


def _relu(gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    return torch.relu(gi + gh), None


def _lstm(gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    assert c is not None, "an LSTM carries a cell state"
    i, f, g, o = (gi + gh).chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru(gi: Tensor, gh: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
    ri, zi, ni = gi.chunk(3, -1)
    rh, zh, nh = gh.chunk(3, -1)
    r, z = torch.sigmoid(ri + rh), torch.sigmoid(zi + zh)
    n = torch.tanh(ni + r * nh)
    return (1 - z) * n + z * h, None


#: The cell of each recurrent function: ``(gi, gh, h, c) -> (h', c')`` from the input's and the hidden state's
#: projections ``W_ih x_t + b_ih`` and ``W_hh h + b_hh``, gates in PyTorch's order (LSTM: i, f, g, o; GRU: r, z, n).
_CELLS: dict[Callable, Callable] = {torch.rnn_tanh: _tanh, torch.rnn_relu: _relu, torch.lstm: _lstm, torch.gru: _gru}


def _recurrent(
    cell: Callable,
    input: Tensor,
    hx: Tensor | tuple[Tensor, Tensor],
    weights: list[Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[Tensor, ...]:
    """A recurrent layer step by step, as ``torch.lstm`` (etc.) computes it on a padded batch.

    Args:
        input: ``[T, B, n]`` (``[B, T, n]`` if ``batch_first``).
        hx: ``h0 [L·D, B, H_out]``, and ``c0 [L·D, B, H]`` for an LSTM.
        weights: per layer and direction ``W_ih, W_hh``, then ``b_ih, b_hh`` with biases, then ``W_hr`` for an
            LSTM with projections.

    Returns:
        ``(output [T, B, D·H_out] (batch-first if asked), h_n)``, and ``c_n`` for an LSTM.
    """
    lstm = cell is _lstm
    h0, c0 = hx if lstm else (hx, None)
    D = 2 if bidirectional else 1
    per = len(weights) // (num_layers * D)
    projected = per == (5 if has_biases else 3)
    x = input.transpose(0, 1) if batch_first else input
    T = x.shape[0]
    h_n: list[Tensor] = []
    c_n: list[Tensor] = []
    for layer in range(num_layers):
        outputs = []
        for d in range(D):
            k = layer * D + d
            w = weights[k * per : (k + 1) * per]
            b_ih, b_hh = (w[2], w[3]) if has_biases else (None, None)
            h, c = h0[k], None if c0 is None else c0[k]
            gi = F.linear(x, w[0], b_ih)  # every step's input projection at once: [T, B, G·H]
            hs: list[Tensor] = [h] * T
            for t in range(T) if d == 0 else reversed(range(T)):
                h, c = cell(gi[t], F.linear(h, w[1], b_hh), h, c)
                if projected:
                    h = F.linear(h, w[-1])
                hs[t] = h
            outputs.append(torch.stack(hs))
            h_n.append(h)
            if c is not None:
                c_n.append(c)
        x = torch.cat(outputs, -1) if D == 2 else outputs[0]
    output = x.transpose(0, 1) if batch_first else x
    if lstm:
        return output, torch.stack(h_n), torch.stack(c_n)
    return output, torch.stack(h_n)

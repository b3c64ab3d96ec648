"""Kernel regression with the eNTK against the pNTK work-around, with and without a ridge, and the network.

The eNTK is matrix-valued, the pNTK scalar; the work-around applies the scalar kernel to each of the ``O``
target columns (one ``N × N`` solve). Predictions are those of plain kernel regression (``f0 ≡ 0``) on
centred one-hot targets, and a test point's class is its largest output.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis import IllConditionedKernelWarning, kernel_regression
from ..data import Dataset
from ..kernels import pntk
from ..training import TrainConfig, train
from .results import file_stem, jsonable
from .setup import (
    Log,
    accuracy,
    as_float64,
    kernel_pair,
    load_split,
    log_line,
    make_model,
    timed,
    torch_dtype,
    training_targets,
)

GiB = 1 << 30


@dataclass(frozen=True)
class Regression:
    """Kernel regression at several widths, and the pNTK alone at a size the eNTK cannot reach.

    Attributes:
        dataset: a dataset name; ``N_train`` training and ``N_test`` test samples.
        model: a zoo name.
        widths: ascending widths.
        N_train: training samples; the eNTK system is ``N_train·O`` square.
        N_test: test samples.
        ridge: the ridge relative to the kernel's scale: ``λ = ridge · tr K(X, X) / N`` (the mean diagonal
            entry of the pNTK, the scale of a diagonal entry of ``Θ`` too), the same ``λ`` for every kernel.
        train: how the network itself is trained on the same ``N_train`` samples (squared loss).
        seed: the initialisation seed.
        large_N: training samples for the pNTK-only run; ``None`` skips it.
        large_width: the width of that run.
        entk_budget: bytes the eNTK may take; the pNTK-only run is at an ``N`` whose eNTK
            ``N²·O²·8`` bytes exceeds it.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` or ``"ntk"``.
        dtype: the dtype the kernels are computed in.
    """

    dataset: str
    model: str
    widths: tuple[int, ...]
    N_train: int = 100
    N_test: int = 200
    ridge: float = 1.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="sgd", lr=0.05, epochs=200))
    seed: int = 0
    large_N: int | None = None
    large_width: int = 128
    entk_budget: int = 4 * GiB
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem (see :func:`.results.file_stem`), e.g. ``regression_digits_mlp``."""
        return file_stem("regression", self.dataset, self.model, self.parametrization)


def relative_difference(f: np.ndarray, f_reference: np.ndarray) -> float:
    """``‖f − f_ref‖_F / ‖f_ref‖_F`` of two prediction arrays ``[M, O]``."""
    return float(np.linalg.norm(f - f_reference) / np.linalg.norm(f_reference))


def regression(spec: Regression, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None) -> dict:
    """Test accuracy of eNTK and pNTK kernel regression and of the trained network, at each width.

    At each width, with ``Y`` the centred one-hot targets and ``λ`` from ``spec.ridge``:

    - ``entk``: ``Θ(x, X) Θ(X, X)⁻¹ Y`` (an ``N·O`` square solve), and ``entk_ridge`` with ``Θ + λI``;
    - ``pntk``: ``K(x, X) K(X, X)⁻¹ Y`` column by column, and ``pntk_ridge`` with ``K + λI``;
    - ``sum_ridge``: the same with ``O·K``, the kernel of the summed logits ``Σ_a f_a`` without the
      ``1/√O`` of ``g``. Without a ridge the scale of a kernel cancels and it gives the ``pntk``
      predictions exactly; with a ridge it does not, so agreement with the eNTK then depends on how the
      scalar kernel is normalised;
    - ``network``: the model trained by ``spec.train`` on the same samples.

    Relative differences ``‖f_K − f_Θ‖_F / ‖f_Θ‖_F`` are taken against the eNTK predictor with the same
    ridge. A singular train kernel is solved by the pseudo-inverse (see
    :func:`pntk.analysis.kernel_regression`) and flagged in ``singular``.

    Args:
        spec: what to run.
        device: where models, data and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per width.

    Returns:
        A JSON-able dict: ``spec``; ``N_train``, ``N_test``, ``O``; ``widths``, one dict per width with
        ``width``, ``ridge`` (the absolute ``λ``), ``accuracy`` (per predictor), ``relative_difference``
        (``pntk``, ``pntk_ridge``, ``sum_ridge``), ``singular`` (per predictor), ``seconds``; ``large``
        (``None`` or ``N``, ``width``, ``entk_bytes``, ``pntk_bytes``, ``entk_budget``, ``accuracy``,
        ``seconds_pntk``, ``seconds``); ``seconds``.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.N_train, data_root=data_root, device=device)
    test = load_split(spec.dataset, split="test", N=spec.N_test, data_root=data_root, device=device)
    Y = as_float64(data.targets(center=True))
    O = data.num_classes
    labels = test.y.cpu().numpy()
    rows = []
    for width in spec.widths:
        t0 = time.perf_counter()
        model = _model(spec, width, data, device)
        train_pair = kernel_pair(model, data.x, dtype=spec.dtype)
        test_pair = kernel_pair(model, test.x, data.x, dtype=spec.dtype)
        ridge = spec.ridge * float(np.trace(train_pair.K)) / spec.N_train
        systems = {
            "entk": (train_pair.Theta, test_pair.Theta, 0.0),
            "pntk": (train_pair.K, test_pair.K, 0.0),
            "entk_ridge": (train_pair.Theta, test_pair.Theta, ridge),
            "pntk_ridge": (train_pair.K, test_pair.K, ridge),
            "sum_ridge": (O * train_pair.K, O * test_pair.K, ridge),
        }
        predictions, singular = {}, {}
        for key, (K_train_train, K_test_train, lam) in systems.items():
            predictions[key], singular[key] = _solve(K_train_train, K_test_train, Y, lam)
        network = _model(spec, width, data, device)
        train(network, data.x, training_targets(data, spec.train.loss), spec.train)
        row: dict[str, Any] = {
            "width": width,
            "ridge": ridge,
            "accuracy": {
                **{key: float((f.argmax(-1) == labels).mean()) for key, f in predictions.items()},
                "network": accuracy(network.eval(), test),
            },
            "relative_difference": {
                "pntk": relative_difference(predictions["pntk"], predictions["entk"]),
                "pntk_ridge": relative_difference(predictions["pntk_ridge"], predictions["entk_ridge"]),
                "sum_ridge": relative_difference(predictions["sum_ridge"], predictions["entk_ridge"]),
            },
            "singular": singular,
            "seconds": time.perf_counter() - t0,
        }
        rows.append(row)
        acc, diff = row["accuracy"], row["relative_difference"]
        log_line(
            log,
            f"regression {spec.model}/{spec.dataset} width {width:>5}: acc. eNTK {acc['entk']:.3f} "
            f"pNTK {acc['pntk']:.3f} net {acc['network']:.3f}; ‖f_pNTK − f_eNTK‖/‖f_eNTK‖ {diff['pntk']:.4f} "
            f"(ridge: {diff['pntk_ridge']:.4f}, summed logits {diff['sum_ridge']:.4f}) ({row['seconds']:.1f} s)",
        )
    return {
        "experiment": "regression",
        "spec": jsonable(spec),
        "N_train": spec.N_train,
        "N_test": spec.N_test,
        "O": O,
        "widths": rows,
        "large": None if spec.large_N is None else _large(spec, test, device, data_root, log),
        "seconds": time.perf_counter() - start,
    }


def _model(spec: Regression, width: int, data: Dataset, device: str) -> torch.nn.Module:
    return make_model(
        spec.model,
        width=width,
        depth=spec.depth,
        data=data,
        parametrization=spec.parametrization,
        seed=spec.seed,
        device=device,
    )


def _solve(K_train_train: np.ndarray, K_test_train: np.ndarray, Y: np.ndarray, ridge: float) -> tuple[np.ndarray, bool]:
    """Kernel-regression predictions ``[M, O]``, and whether the train kernel needed the pseudo-inverse."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IllConditionedKernelWarning)
        f = kernel_regression(K_train_train, K_test_train, Y, ridge=ridge)
    return f, any(issubclass(w.category, IllConditionedKernelWarning) for w in caught)


def _large(spec: Regression, test: Dataset, device: str, data_root: str | Path | None, log: Log) -> dict:
    """pNTK kernel regression on ``spec.large_N`` training samples, where the eNTK would exceed its budget."""
    t0 = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.large_N, data_root=data_root, device=device)
    model = _model(spec, spec.large_width, data, device)
    dt = torch_dtype(spec.dtype)
    K_train_train, seconds_pntk = timed(lambda: pntk(model, data.x, dtype=dt))
    K_test_train, seconds_test = timed(lambda: pntk(model, test.x, data.x, dtype=dt))
    Y = as_float64(data.targets(center=True))
    f, singular = _solve(as_float64(K_train_train), as_float64(K_test_train), Y, 0.0)
    N, O = len(data), data.num_classes
    result = {
        "N": N,
        "width": spec.large_width,
        "entk_bytes": N * N * O * O * 8,
        "pntk_bytes": N * N * 8,
        "entk_budget": spec.entk_budget,
        "accuracy": float((f.argmax(-1) == test.y.cpu().numpy()).mean()),
        "singular": singular,
        "seconds_pntk": seconds_pntk + seconds_test,
        "seconds": time.perf_counter() - t0,
    }
    log_line(
        log,
        f"regression {spec.model}/{spec.dataset} pNTK only, N = {N} (eNTK would take "
        f"{result['entk_bytes'] / GiB:.1f} GiB > budget {spec.entk_budget / GiB:.1f} GiB): "
        f"test acc. {result['accuracy']:.3f} ({result['seconds']:.1f} s)",
    )
    return result

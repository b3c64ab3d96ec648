"""Kernel regression with the eNTK against the pNTK work-around, ridgeless and along a ridge sweep, with the
kernels of trained networks, and the networks themselves.

The eNTK is matrix-valued, the pNTK scalar; the work-around applies the scalar kernel to each of the ``O``
target columns (one ``N × N`` solve). Predictions are those of plain kernel regression (``f0 ≡ 0``) on
centred one-hot targets, and a test point's class is its largest output.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis import IllConditionedKernelWarning, kernel_regression
from ..analysis._linalg import entk_as_matrix
from ..training import Loss, TrainConfig, train
from .kernel_pair import as_float64, kernel_pair
from .networks import accuracy, load_split, spec_model, training_targets
from .progress import Log, log_line
from .results import file_stem, result_type
from .stats import McNemar, mcnemar

GiB = 1 << 30


@dataclass(frozen=True)
class Regression:
    """Kernel regression with the kernels of trained networks, at several widths and seeds.

    Attributes:
        dataset: a dataset name; ``N_train`` training and ``N_test`` test samples.
        model: a zoo name.
        widths: ascending widths.
        seeds: initialisation seeds.
        N_train: training samples; the eNTK system is ``N_train·O`` square.
        N_test: test samples (≥ 1,000 for a McNemar test with power at a few points of accuracy).
        ridges: the ridge sweep, relative to the kernel's scale: ``λ = r · tr K(X, X) / N`` (the mean
            diagonal entry of the pNTK, the scale of a diagonal entry of ``Θ`` too).
        train: how the network is trained on the ``N_train`` samples before its kernels are taken.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` (He-scaled), ``"ntk"`` or ``"torch"``.
        dtype: the dtype the kernels are computed in.
    """

    dataset: str
    model: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    N_train: int = 200
    N_test: int = 1000
    ridges: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.05, epochs=30, batch_size=50))
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem (see :func:`.results.file_stem`), e.g. ``regression_mnist1d_mlp``."""
        return file_stem("regression", self.dataset, self.model, self.parametrization)


@dataclass(frozen=True)
class RidgePoint:
    """Kernel ridge regression at one ridge ``λ``: ``Θ``, ``K`` and ``O·K`` with the same ``λ``.

    ``O·K`` is the kernel of the summed logits ``Σ_a f_a`` without the ``1/√O`` of ``g``; its predictions at
    ``λ`` are exactly those of ``K`` at ``λ/O``.

    Attributes:
        relative: ``r`` of ``λ = r · tr K / N``.
        ridge: ``λ``.
        accuracy_entk: test accuracy of eNTK-KRR.
        accuracy_K: test accuracy of pNTK-KRR with ``K``.
        accuracy_OK: test accuracy with ``O·K``.
        difference_K: ``‖f_K − f_Θ‖_F / ‖f_Θ‖_F`` at the same ``λ``.
        difference_OK: the same for ``O·K``.
    """

    relative: float
    ridge: float
    accuracy_entk: float
    accuracy_K: float
    accuracy_OK: float
    difference_K: float
    difference_OK: float


@dataclass(frozen=True)
class RegressionRun:
    """One trained network, its kernels' regressions and their comparison.

    Attributes:
        width: the network's width.
        seed: its initialisation seed.
        accuracy_entk: ridgeless eNTK-KR test accuracy.
        accuracy_pntk: ridgeless pNTK-KR test accuracy (``K`` per output).
        accuracy_network: the trained network's test accuracy.
        relative_difference: ``‖f_K − f_Θ‖_F / ‖f_Θ‖_F`` of the ridgeless predictions.
        mcnemar: McNemar's test of eNTK-KR against pNTK-KR on the same test points.
        ridge_sweep: one point per ridge.
        singular: whether each ridgeless train kernel (``"entk"``, ``"pntk"``) needed the pseudo-inverse.
        seconds: wall time of the run.
    """

    width: int
    seed: int
    accuracy_entk: float
    accuracy_pntk: float
    accuracy_network: float
    relative_difference: float
    mcnemar: McNemar
    ridge_sweep: list[RidgePoint]
    singular: dict[str, bool]
    seconds: float


@result_type("regression")
@dataclass(frozen=True)
class RegressionResult:
    """What :func:`regression` measured.

    Attributes:
        spec: the experiment.
        N_train: training samples.
        N_test: test samples.
        O: outputs.
        runs: one per width and seed.
        seconds: wall time.
    """

    spec: Regression
    N_train: int
    N_test: int
    O: int
    runs: list[RegressionRun]
    seconds: float = 0.0

    def at(self, width: int) -> list[RegressionRun]:
        """The runs at ``width``, one per seed."""
        return [r for r in self.runs if r.width == width]

    def pooled_mcnemar(self, width: int) -> McNemar:
        """McNemar's test on the discordant counts summed over the seeds at ``width``."""
        runs = self.at(width)
        return McNemar.of_counts(sum(r.mcnemar.only_first for r in runs), sum(r.mcnemar.only_second for r in runs))


def relative_difference(f: np.ndarray, f_reference: np.ndarray) -> float:
    """``‖f − f_ref‖_F / ‖f_ref‖_F`` of two prediction arrays ``[M, O]``."""
    return float(np.linalg.norm(f - f_reference) / np.linalg.norm(f_reference))


def regression(
    spec: Regression, *, device: str = "cpu", data_root: str | Path | None = None, log: Log = None
) -> RegressionResult:
    """Train networks, then compare eNTK and pNTK kernel regression with their kernels, at every width and seed.

    For each network, with ``Y`` the centred one-hot targets: ridgeless ``Θ(x, X) Θ(X, X)⁻¹ Y`` (an
    ``N·O`` square solve) against ``K(x, X) K(X, X)⁻¹ Y`` column by column, both by
    :func:`pntk.analysis.kernel_regression` with its precision-aware cut-off, compared by McNemar's test on
    the same test points; then ``Θ``, ``K`` and ``O·K`` at each ridge of ``spec.ridges`` (one
    eigendecomposition per kernel serves the whole sweep: ``(A + λI)⁻¹ = V (Λ + λ)⁻¹ Vᵀ``).

    Args:
        spec: what to run.
        device: where models, data and kernels live.
        data_root: directory of file-based datasets.
        log: receives one line per run.

    Returns:
        A :class:`RegressionResult`.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.N_train, data_root=data_root, device=device)
    test = load_split(spec.dataset, split="test", N=spec.N_test, data_root=data_root, device=device)
    Y = as_float64(data.targets(center=True))
    labels = test.y.cpu().numpy()
    O = data.num_classes
    runs = []
    for width in spec.widths:
        for seed in spec.seeds:
            t0 = time.perf_counter()
            model = spec_model(spec, width=width, seed=seed, data=data, device=device)
            train(model, data.x, training_targets(data, Loss(spec.train.loss)), spec.train)
            model.eval()
            train_pair = kernel_pair(model, data.x, dtype=spec.dtype)
            test_pair = kernel_pair(model, test.x, data.x, dtype=spec.dtype)
            f_entk, singular_entk = _solve(train_pair.Theta, test_pair.Theta, Y, spec.dtype)
            f_pntk, singular_pntk = _solve(train_pair.K, test_pair.K, Y, spec.dtype)
            right_entk, right_pntk = f_entk.argmax(-1) == labels, f_pntk.argmax(-1) == labels
            run = RegressionRun(
                width=width,
                seed=seed,
                accuracy_entk=float(right_entk.mean()),
                accuracy_pntk=float(right_pntk.mean()),
                accuracy_network=accuracy(model, test),
                relative_difference=relative_difference(f_pntk, f_entk),
                mcnemar=mcnemar(right_entk, right_pntk),
                ridge_sweep=ridge_sweep(
                    train_pair.Theta, test_pair.Theta, train_pair.K, test_pair.K, Y, labels, spec.ridges
                ),
                singular={"entk": singular_entk, "pntk": singular_pntk},
                seconds=time.perf_counter() - t0,
            )
            runs.append(run)
            log_line(
                log,
                f"regression {spec.model}/{spec.dataset} width {width:>5} seed {seed}: acc. eNTK "
                f"{run.accuracy_entk:.3f} pNTK {run.accuracy_pntk:.3f} net {run.accuracy_network:.3f} "
                f"(McNemar p {run.mcnemar.p_value:.3f}); ‖f_pNTK − f_eNTK‖/‖f_eNTK‖ {run.relative_difference:.4f} "
                f"({run.seconds:.1f} s)",
            )
    return RegressionResult(spec, spec.N_train, spec.N_test, O, runs, time.perf_counter() - start)


def _solve(K_train_train: np.ndarray, K_test_train: np.ndarray, Y: np.ndarray, dtype: str) -> tuple[np.ndarray, bool]:
    """Ridgeless predictions ``[M, O]``, and whether the train kernel needed the pseudo-inverse."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IllConditionedKernelWarning)
        f = kernel_regression(K_train_train, K_test_train, Y, kernel_dtype=dtype)
    return f, any(issubclass(w.category, IllConditionedKernelWarning) for w in caught)


def ridge_sweep(
    Theta_train: np.ndarray,
    Theta_test: np.ndarray,
    K_train: np.ndarray,
    K_test: np.ndarray,
    Y: np.ndarray,
    labels: np.ndarray,
    ridges: tuple[float, ...],
) -> list[RidgePoint]:
    """Kernel ridge regression with ``Θ``, ``K`` and ``O·K`` at each ``λ = r · tr K / N``.

    Args:
        Theta_train: ``[N, N, O, O]`` eNTK.
        Theta_test: ``[M, N, O, O]``.
        K_train: ``[N, N]`` pNTK.
        K_test: ``[M, N]``.
        Y: ``[N, O]`` targets.
        labels: ``[M]`` test labels.
        ridges: the relative ridges ``r``.

    Returns:
        One :class:`RidgePoint` per ridge.
    """
    N, O = Y.shape
    scale = float(np.trace(K_train)) / N
    w_Theta, V_Theta = np.linalg.eigh(entk_as_matrix(Theta_train))
    w_K, V_K = np.linalg.eigh(K_train)
    B_Theta, R_Theta = entk_as_matrix(Theta_test) @ V_Theta, V_Theta.T @ Y.reshape(N * O, 1)
    B_K, R_K = K_test @ V_K, V_K.T @ Y

    def f_Theta(lam: float) -> np.ndarray:
        return (B_Theta @ (R_Theta / (w_Theta + lam)[:, None])).reshape(-1, O)

    def f_K(lam: float) -> np.ndarray:
        return B_K @ (R_K / (w_K + lam)[:, None])

    points = []
    for r in ridges:
        lam = r * scale
        fT, fK, fOK = f_Theta(lam), f_K(lam), f_K(lam / O)  # O·K at λ is K at λ/O
        points.append(
            RidgePoint(
                relative=r,
                ridge=lam,
                accuracy_entk=float((fT.argmax(-1) == labels).mean()),
                accuracy_K=float((fK.argmax(-1) == labels).mean()),
                accuracy_OK=float((fOK.argmax(-1) == labels).mean()),
                difference_K=relative_difference(fK, fT),
                difference_OK=relative_difference(fOK, fT),
            )
        )
    return points


def entk_bytes(N: int, O: int, itemsize: int = 8) -> int:
    """Bytes of a dense eNTK on ``N`` inputs with ``O`` outputs: ``N²·O²·itemsize``.

    Example:
        >>> entk_bytes(50_000, 10) / 2**40  # ResNet-18 on CIFAR-10's training set, float64: TiB
        1.8189894035458565
    """
    return N * N * O * O * itemsize

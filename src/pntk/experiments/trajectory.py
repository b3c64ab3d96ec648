"""Through training: the eNTK/pNTK comparison at checkpoints of networks as they learn."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..analysis import Comparison, compare
from ..training import Checkpoint, Loss, TrainConfig, train
from .kernel_pair import kernel_pair
from .networks import accuracy, load_split, spec_model, training_targets
from .progress import Log, log_line
from .results import file_stem, result_type


@dataclass(frozen=True)
class Trajectory:
    """Training runs, several widths × seeds, whose kernels are compared at checkpoints.

    Attributes:
        dataset: a dataset name; ``N_train`` samples of its training split are learnt.
        model: a zoo name.
        widths: the model's widths.
        seeds: initialisation seeds (the minibatch order is ``train.seed``).
        N_train: training samples.
        N: kernel inputs: the first ``N`` training samples.
        N_test: test samples for the accuracy at each checkpoint.
        train: the loss (cross-entropy by default, as the paper trains), optimiser and epochs.
        checkpoint_epochs: epochs (``0`` = initialisation) at which the kernels are compared.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` (He-scaled), ``"ntk"`` or ``"torch"``.
        dtype: the dtype the kernels are computed in.
    """

    dataset: str
    model: str
    widths: tuple[int, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    N_train: int = 1000
    N: int = 64
    N_test: int = 500
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=0.05, epochs=10, batch_size=64))
    checkpoint_epochs: tuple[int, ...] = (0, 1, 2, 5, 10)
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem: ``trajectory_mnist1d_mlp``, with ``_mse`` for the squared-loss variant."""
        stem = file_stem("trajectory", self.dataset, self.model, self.parametrization)
        return stem + ("_mse" if self.train.loss is Loss.MSE else "")


@dataclass(frozen=True)
class TrajectoryCheckpoint:
    """The kernels of one network at one checkpoint.

    Attributes:
        epoch: epochs done.
        train_loss: loss on the whole training set.
        test_accuracy: accuracy on the test samples.
        readout_sum_ratio: ``‖Σ_a W_a‖ / ‖W‖_F`` of the readout (:func:`pntk.training.readout_sum_ratio`).
        comparison: :func:`pntk.analysis.compare` of its eNTK and pNTK on the ``N`` kernel inputs.
    """

    epoch: int
    train_loss: float
    test_accuracy: float
    readout_sum_ratio: float
    comparison: Comparison


@dataclass(frozen=True)
class TrajectoryRun:
    """One network through training.

    Attributes:
        width: its width.
        seed: its initialisation seed.
        losses: training loss before training and after each epoch.
        checkpoints: one per checkpoint epoch.
    """

    width: int
    seed: int
    losses: list[float]
    checkpoints: list[TrajectoryCheckpoint]


@result_type("trajectory")
@dataclass(frozen=True)
class TrajectoryResult:
    """What :func:`trajectory` measured.

    Attributes:
        spec: the runs.
        N: kernel inputs.
        O: outputs.
        runs: one per width and seed.
        seconds: wall time.
    """

    spec: Trajectory
    N: int
    O: int
    runs: list[TrajectoryRun]
    seconds: float = 0.0

    def at(self, width: int) -> list[TrajectoryRun]:
        """The runs at ``width``, one per seed."""
        return [r for r in self.runs if r.width == width]


def trajectory(
    spec: Trajectory,
    *,
    device: str = "cpu",
    data_root: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    log: Log = None,
) -> TrajectoryResult:
    """Train networks and compare their eNTK ``Θ`` and pNTK ``K`` on ``N`` training inputs at checkpoints.

    Args:
        spec: what to train and when to look.
        device: where the models, data and kernels live.
        data_root: directory of file-based datasets.
        checkpoint_dir: where to keep the checkpoints (safetensors, one folder per width and seed); ``None``
            keeps none.
        log: receives one line per checkpoint.

    Returns:
        A :class:`TrajectoryResult`.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.N_train, data_root=data_root, device=device)
    test = load_split(spec.dataset, split="test", N=spec.N_test, data_root=data_root, device=device)
    x = data.x[: spec.N]
    runs = []
    for width in spec.widths:
        for seed in spec.seeds:
            model = spec_model(spec, width=width, seed=seed, data=data, device=device)
            rows: list[TrajectoryCheckpoint] = []

            def at_checkpoint(
                checkpoint: Checkpoint, model: nn.Module, width: int = width, seed: int = seed, rows: list = rows
            ) -> None:
                pair = kernel_pair(model, x, dtype=spec.dtype)
                assert checkpoint.readout_sum_ratio is not None
                row = TrajectoryCheckpoint(
                    checkpoint.epoch,
                    checkpoint.loss,
                    accuracy(model, test),
                    checkpoint.readout_sum_ratio,
                    compare(pair.Theta, pair.K, kernel_dtype=pair.dtype),
                )
                rows.append(row)
                log_line(
                    log,
                    f"{spec.model}/{spec.dataset} width {width} seed {seed} epoch {row.epoch:>3}: loss "
                    f"{row.train_loss:.4f}, test acc. {row.test_accuracy:.3f}, rel. error "
                    f"{row.comparison.relative_error:.4f}, ‖Σ_a W_a‖/‖W‖ {row.readout_sum_ratio:.3f}",
                )

            folder = None if checkpoint_dir is None else Path(checkpoint_dir) / f"width_{width}_seed_{seed}"
            result = train(
                model,
                data.x,
                training_targets(data, Loss(spec.train.loss)),
                spec.train,
                checkpoint_epochs=spec.checkpoint_epochs,
                checkpoint_dir=folder,
                callback=at_checkpoint,
            )
            runs.append(TrajectoryRun(width, seed, result.losses, rows))
    return TrajectoryResult(spec, len(x), data.num_classes, runs, time.perf_counter() - start)

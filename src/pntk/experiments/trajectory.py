"""Through training: the eNTK/pNTK comparison at checkpoints of a network as it learns."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from ..analysis import compare
from ..training import Checkpoint, TrainConfig, train
from .results import file_stem, jsonable
from .setup import Log, accuracy, kernel_pair, load_split, log_line, make_model, training_targets


@dataclass(frozen=True)
class Trajectory:
    """One training run whose kernels are compared at checkpoints.

    Attributes:
        dataset: a dataset name; ``N_train`` samples of its training split are learnt.
        model: a zoo name.
        width: the model's width.
        N_train: training samples.
        N: kernel inputs: the first ``N`` training samples.
        N_test: test samples for the accuracy at each checkpoint.
        train: the loss, optimiser and epochs.
        checkpoint_epochs: epochs (``0`` = initialisation) at which the kernels are compared.
        seed: the initialisation seed.
        depth: the model's depth; ``None`` for its default.
        parametrization: ``"standard"`` or ``"ntk"``.
        dtype: the dtype the kernels are computed in.
    """

    dataset: str
    model: str
    width: int
    N_train: int = 1000
    N: int = 64
    N_test: int = 500
    train: TrainConfig = field(default_factory=lambda: TrainConfig(optimizer="sgd", lr=0.05, epochs=10, batch_size=64))
    checkpoint_epochs: tuple[int, ...] = (0, 1, 2, 5, 10)
    seed: int = 0
    depth: int | None = None
    parametrization: str = "standard"
    dtype: str = "float64"

    @property
    def name(self) -> str:
        """A file-name stem (see :func:`.results.file_stem`), e.g. ``trajectory_mnist1d_mlp``."""
        return file_stem("trajectory", self.dataset, self.model, self.parametrization)


def trajectory(
    spec: Trajectory,
    *,
    device: str = "cpu",
    data_root: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    log: Log = None,
) -> dict:
    """Train a network and compare its eNTK ``Θ`` and pNTK ``K`` on ``N`` training inputs at each checkpoint.

    Args:
        spec: what to train and when to look.
        device: where the model, data and kernels live.
        data_root: directory of file-based datasets.
        checkpoint_dir: where to keep the checkpoints (safetensors); ``None`` keeps none.
        log: receives one line per checkpoint.

    Returns:
        A JSON-able dict: ``spec``; ``N``, ``O``; ``losses`` (training loss before training and after each
        epoch); ``checkpoints``, one dict per checkpoint epoch with ``epoch``, ``train_loss``,
        ``test_accuracy``, the fields of :func:`pntk.analysis.compare`, ``seconds_entk``, ``seconds_pntk``;
        ``seconds``.
    """
    start = time.perf_counter()
    data = load_split(spec.dataset, split="train", N=spec.N_train, data_root=data_root, device=device)
    test = load_split(spec.dataset, split="test", N=spec.N_test, data_root=data_root, device=device)
    x = data.x[: spec.N]
    model = make_model(
        spec.model,
        width=spec.width,
        depth=spec.depth,
        data=data,
        parametrization=spec.parametrization,
        seed=spec.seed,
        device=device,
    )
    rows = []

    def at_checkpoint(checkpoint: Checkpoint, model: nn.Module) -> None:
        pair = kernel_pair(model, x, dtype=spec.dtype)
        row = {
            "epoch": checkpoint.epoch,
            "train_loss": checkpoint.loss,
            "test_accuracy": accuracy(model, test),
            **compare(pair.Theta, pair.K).to_dict(),
            "seconds_entk": pair.seconds_entk,
            "seconds_pntk": pair.seconds_pntk,
        }
        rows.append(row)
        log_line(
            log,
            f"{spec.model}/{spec.dataset} width {spec.width} epoch {checkpoint.epoch:>3}: loss {checkpoint.loss:.4f}, "
            f"test acc. {row['test_accuracy']:.3f}, rel. error {row['relative_error']:.4f}",
        )

    result = train(
        model,
        data.x,
        training_targets(data, spec.train.loss),
        spec.train,
        checkpoint_epochs=spec.checkpoint_epochs,
        checkpoint_dir=checkpoint_dir,
        callback=at_checkpoint,
    )
    return {
        "experiment": "trajectory",
        "spec": jsonable(spec),
        "N": len(x),
        "O": data.num_classes,
        "losses": result.losses,
        "checkpoints": rows,
        "seconds": time.perf_counter() - start,
    }

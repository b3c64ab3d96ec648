"""Named sets of experiments for ``pntk reproduce``: ``quick`` (seconds, for tests), ``demo`` (minutes on a
2-core CPU, built-in data) and ``paper`` (CIFAR-10 with ResNet-18 and WideResNet, for a GPU)."""

from __future__ import annotations

from dataclasses import dataclass

from ..training import TrainConfig
from .regression import Regression
from .timing import Timing
from .trajectory import Trajectory
from .width_sweep import WidthSweep


@dataclass(frozen=True)
class Preset:
    """The experiments one ``pntk reproduce`` runs.

    Attributes:
        name: the preset's name.
        description: one line on what it is for.
        sweeps: width sweeps at initialisation.
        trajectories: kernels through training.
        regressions: kernel-regression comparisons.
        timings: cost measurements.
    """

    name: str
    description: str
    sweeps: tuple[WidthSweep, ...] = ()
    trajectories: tuple[Trajectory, ...] = ()
    regressions: tuple[Regression, ...] = ()
    timings: tuple[Timing, ...] = ()

    @property
    def specs(self) -> tuple:
        """Every experiment's spec, in the order they run."""
        return (*self.sweeps, *self.trajectories, *self.regressions, *self.timings)


QUICK = Preset(
    "quick",
    "a few seconds on a CPU: every experiment at toy sizes, for tests",
    sweeps=(WidthSweep("mnist1d", "mlp", widths=(16, 32, 64), seeds=(0, 1), data_seeds=(0, 1), N=12),),
    trajectories=(
        Trajectory(
            "mnist1d",
            "mlp",
            widths=(16, 32),
            seeds=(0, 1),
            N_train=200,
            N=12,
            N_test=100,
            train=TrainConfig(lr=0.05, epochs=2, batch_size=50),
            checkpoint_epochs=(0, 1, 2),
        ),
    ),
    regressions=(
        Regression(
            "digits",
            "mlp",
            widths=(16, 64),
            seeds=(0, 1),
            N_train=40,
            N_test=100,
            ridges=(0.01, 1.0),
            train=TrainConfig(lr=0.05, epochs=5, batch_size=20),
        ),
    ),
    timings=(Timing("mnist1d", "mlp", width=32, Ns=(8, 16), Os=(1, 4), N_for_O=8, repeats=2),),
)

DEMO = Preset(
    "demo",
    "the paper in miniature on built-in MNIST-1D, MLP and Myrtle ConvNet, about 6 CPU-minutes",
    sweeps=(
        WidthSweep("mnist1d", "mlp", widths=(64, 128, 256, 512, 1024, 2048), N=50),
        WidthSweep("mnist1d", "convnet", widths=(16, 32, 64, 128, 256), N=50, parametrization="ntk"),
        WidthSweep("mnist1d", "convnet", widths=(16, 32, 64, 128, 256), N=50),
    ),
    trajectories=(
        Trajectory(
            "mnist1d",
            "mlp",
            widths=(64, 256, 1024),
            N_train=500,
            N=50,
            N_test=1000,
            train=TrainConfig(lr=0.05, epochs=5, batch_size=50),
            checkpoint_epochs=(0, 1, 5),
        ),
    ),
    regressions=(
        Regression(
            "mnist1d",
            "mlp",
            widths=(64, 256, 1024),
            N_train=200,
            N_test=1000,
            train=TrainConfig(lr=0.05, epochs=20, batch_size=50),
        ),
    ),
    timings=(
        Timing("mnist1d", "mlp", width=256, Ns=(64, 128, 256, 512), Os=(2, 5, 10, 20, 50), N_for_O=128, repeats=3),
    ),
)

PAPER = Preset(
    "paper",
    "CIFAR-10 (binary files under --data-root) with ResNet-18, WideResNet and an MLP, for a GPU",
    sweeps=(
        WidthSweep("cifar10", "mlp", widths=(128, 256, 512, 1024, 2048, 4096), data_seeds=(0, 1, 2), N=200),
        WidthSweep("cifar10", "resnet18", widths=(8, 16, 32, 64), data_seeds=(0, 1, 2), N=100, dtype="float32"),
        WidthSweep("cifar10", "wrn", widths=(1, 2, 4, 8), data_seeds=(0, 1, 2), N=100, dtype="float32"),
    ),
    trajectories=(
        Trajectory(
            "cifar10",
            "resnet18",
            widths=(16, 32, 64),
            N_train=10000,
            N=100,
            N_test=2000,
            train=TrainConfig(lr=0.05, epochs=20, batch_size=128),
            checkpoint_epochs=(0, 1, 2, 5, 10, 20),
            dtype="float32",
        ),
    ),
    regressions=(
        Regression(
            "cifar10",
            "resnet18",
            widths=(8, 16, 32, 64),
            N_train=500,
            N_test=2000,
            train=TrainConfig(lr=0.05, epochs=100, batch_size=100),
            dtype="float32",
        ),
    ),
    timings=(
        Timing("cifar10", "resnet18", width=32, Ns=(32, 64, 128, 256), Os=(1, 2, 5, 10, 20, 50), N_for_O=64, repeats=5),
    ),
)

PRESETS = {p.name: p for p in (QUICK, DEMO, PAPER)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError that lists the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(map(repr, PRESETS))}")
    return PRESETS[name]

"""Named sets of experiments for ``pntk reproduce``: ``quick`` (seconds, for tests), ``demo`` (minutes on a
2-core CPU, built-in data) and ``paper`` (CIFAR-10 with ResNet-18 and WideResNet, for a GPU)."""

from __future__ import annotations

from dataclasses import dataclass

from ..training import TrainConfig
from .regression import GiB, Regression
from .timing import Timing
from .trajectory import Trajectory
from .width_sweep import WidthSweep

MiB = 1 << 20


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
    sweeps=(WidthSweep("mnist1d", "mlp", widths=(16, 32, 64), seeds=(0, 1), N=16),),
    trajectories=(
        Trajectory(
            "mnist1d",
            "mlp",
            width=32,
            N_train=200,
            N=16,
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
            N_train=40,
            N_test=60,
            train=TrainConfig(lr=0.05, epochs=20),
            large_N=300,
            large_width=32,
            entk_budget=16 * MiB,
        ),
    ),
    timings=(Timing("mnist1d", "mlp", width=32, Ns=(8, 16), Os=(1, 4), N_for_O=8),),
)

DEMO = Preset(
    "demo",
    "the paper in miniature on built-in MNIST-1D and digits, MLP and ConvNet, 3 to 6 minutes on 2 CPU cores",
    sweeps=(
        WidthSweep("mnist1d", "mlp", widths=(16, 32, 64, 128, 256, 512, 1024), N=100),
        WidthSweep("mnist1d", "convnet", widths=(16, 32, 64, 128, 256), N=100),
        # The paper's networks are neural-tangents' stax models, NTK-parametrised by default; with PyTorch's
        # standard initialisation the ConvNet's signal fades with depth and its error falls far more slowly.
        WidthSweep("mnist1d", "convnet", widths=(16, 32, 64, 128, 256), N=100, parametrization="ntk"),
        WidthSweep("digits", "mlp", widths=(16, 32, 64, 128, 256, 512, 1024), N=100),
        WidthSweep("digits", "convnet", widths=(16, 32, 64, 128), N=100),
    ),
    trajectories=(
        Trajectory(
            "mnist1d",
            "mlp",
            width=256,
            N_train=4000,
            N=100,
            N_test=1000,
            train=TrainConfig(optimizer="sgd", lr=0.05, epochs=10, batch_size=100),
            checkpoint_epochs=(0, 1, 2, 5, 10),
        ),
        Trajectory(
            "digits",
            "convnet",
            width=128,
            N_train=1442,
            N=100,
            N_test=355,
            train=TrainConfig(optimizer="sgd", lr=0.05, epochs=10, batch_size=100),
            checkpoint_epochs=(0, 1, 2, 5, 10),
        ),
    ),
    regressions=(
        Regression("digits", "mlp", widths=(32, 64, 128, 256, 512, 1024), N_train=100, N_test=200),
        Regression("digits", "convnet", widths=(16, 32, 64, 128), N_train=100, N_test=200),
        # N = 4000: the eNTK would take 12.8 GB, and its factorisation as much again, past this machine's memory.
        Regression(
            "mnist1d",
            "mlp",
            widths=(64, 256, 1024),
            N_train=100,
            N_test=500,
            large_N=4000,
            large_width=256,
            entk_budget=8 * GiB,
        ),
    ),
    timings=(
        Timing(
            "mnist1d",
            "mlp",
            width=256,
            Ns=(128, 256, 512, 1024),
            Os=(2, 5, 10, 20, 50, 100),
            N_for_O=128,
            repeats=3,
        ),
        # Times of seconds: one run each is enough to read the scaling.
        Timing("digits", "convnet", width=64, Ns=(64, 128, 256, 512), Os=(2, 5, 10, 20, 50), N_for_O=64),
    ),
)

PAPER = Preset(
    "paper",
    "CIFAR-10 (binary files under --data-root) with ResNet-18, WideResNet and an MLP, for a GPU",
    sweeps=(
        WidthSweep("cifar10", "mlp", widths=(64, 128, 256, 512, 1024, 2048, 4096), seeds=(0, 1, 2), N=200),
        WidthSweep("cifar10", "resnet18", widths=(8, 16, 32, 64), seeds=(0, 1, 2), N=100, dtype="float32"),
        WidthSweep("cifar10", "wrn", widths=(1, 2, 4, 8), seeds=(0, 1, 2), N=100, dtype="float32"),
    ),
    trajectories=(
        Trajectory(
            "cifar10",
            "resnet18",
            width=32,
            N_train=10000,
            N=100,
            N_test=2000,
            train=TrainConfig(optimizer="sgd", lr=0.05, epochs=20, batch_size=128),
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
            N_test=500,
            train=TrainConfig(optimizer="sgd", lr=0.05, epochs=200, batch_size=100),
            large_N=20000,
            large_width=32,
            entk_budget=16 * GiB,
            dtype="float32",
        ),
    ),
    timings=(
        Timing("cifar10", "resnet18", width=32, Ns=(32, 64, 128, 256), Os=(1, 2, 5, 10, 20, 50), N_for_O=64, repeats=3),
    ),
)

PRESETS = {p.name: p for p in (QUICK, DEMO, PAPER)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError that lists the valid names otherwise."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets are {', '.join(map(repr, PRESETS))}")
    return PRESETS[name]

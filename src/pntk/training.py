"""Training a network by SGD or Adam, with checkpoints in safetensors at chosen epochs.

The experiments follow a kernel along training: :func:`train` hands the network to a callback at each
checkpoint epoch (epoch 0 is the initialisation) and writes its parameters with safetensors;
:func:`load_checkpoint` reads them back into a network of the same architecture (or a torch checkpoint, read
with ``weights_only=True``). Nothing is pickled or unpickled.
"""

from __future__ import annotations

import enum
import pickle
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .choices import parse_enum
from .errors import CheckpointError


class Loss(str, enum.Enum):
    """The training loss; ``"mse"`` and ``Loss.MSE`` both work.

    - ``CROSS_ENTROPY`` (the default, as the pNTK paper trains): softmax cross-entropy averaged over
      samples, against integer labels ``[N]``. Its gradient with respect to the logits, ``softmax − onehot``,
      sums to zero over the ``O`` outputs, so SGD without weight decay leaves ``Σ_a W_a`` of the readout
      unchanged (see :func:`readout_sum_ratio`).
    - ``MSE``: ``½ ‖f(x) − y‖²`` averaged over samples, against float targets ``y`` ``[N, O]`` (one-hot or
      centred) — the loss under which the linearised network is kernel regression. With centred targets it
      drives ``Σ_a f_a`` and with it ``Σ_a W_a`` towards zero, which is what the pNTK's ``g = Σ_a f_a/√O``
      differentiates: a labelled variant here.
    """

    MSE = "mse"
    CROSS_ENTROPY = "cross_entropy"


class Optimizer(str, enum.Enum):
    """The optimiser: ``"sgd"`` (with momentum) or ``"adam"``."""

    SGD = "sgd"
    ADAM = "adam"


@dataclass(frozen=True)
class TrainConfig:
    """How to train: the loss, the optimiser and its settings, the epochs and the minibatches.

    Attributes:
        loss: ``"cross_entropy"`` (default) or ``"mse"`` (see :class:`Loss`).
        optimizer: ``"sgd"`` or ``"adam"``.
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        weight_decay: L2 penalty of the optimiser.
        epochs: passes over the training set.
        batch_size: samples per step; ``None`` for full-batch gradient descent.
        seed: seed of the minibatch order (the initialisation is the model's own).
    """

    loss: Loss | str = Loss.CROSS_ENTROPY
    optimizer: Optimizer | str = Optimizer.SGD
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "loss", parse_enum(Loss, self.loss, "loss"))
        object.__setattr__(self, "optimizer", parse_enum(Optimizer, self.optimizer, "optimizer"))
        if self.epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer or None (full batch), got {self.batch_size}")


@dataclass(frozen=True)
class Checkpoint:
    """The network after ``epoch`` epochs.

    Attributes:
        epoch: epochs done (0: the initialisation).
        loss: the training loss on the whole training set at that point.
        path: the safetensors file, or ``None`` when no directory was given.
        readout_sum_ratio: ``‖Σ_a W_a‖ / ‖W‖_F`` of the readout at that point (:func:`readout_sum_ratio`).
    """

    epoch: int
    loss: float
    path: Path | None = None
    readout_sum_ratio: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did.

    Attributes:
        losses: ``[epochs + 1]`` training loss on the whole training set before training and after each epoch.
        checkpoints: one :class:`Checkpoint` per checkpoint epoch, in order.
    """

    losses: list[float]
    checkpoints: list[Checkpoint] = field(default_factory=list)


def half_squared_error(f: Tensor, y: Tensor) -> Tensor:
    """``½ ‖f(x) − y‖²`` averaged over the batch: ``f``, ``y`` ``[B, O]`` → scalar."""
    return 0.5 * (f - y).pow(2).sum(-1).mean()


def loss_function(loss: Loss | str) -> Callable[[Tensor, Tensor], Tensor]:
    """The mean loss over a batch, ``(outputs [B, O], targets) → scalar``; see :class:`Loss`."""
    return half_squared_error if parse_enum(Loss, loss, "loss") is Loss.MSE else nn.functional.cross_entropy


def train(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint_epochs: Iterable[int] = (),
    checkpoint_dir: str | Path | None = None,
    callback: Callable[[Checkpoint, nn.Module], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x, y)`` and checkpoint it at the chosen epochs.

    At each epoch ``e`` in ``checkpoint_epochs`` (``0`` is before the first step), the parameters and buffers
    are written to ``checkpoint_dir/epoch_{e:04d}.safetensors`` when a directory is given, and
    ``callback(checkpoint, model)`` is called with the model in eval mode (its mode is restored afterwards).

    Args:
        model: the network, mapping ``[B, *input]`` to ``[B, O]``; trained on its own device.
        x: ``[N, *input]`` training inputs.
        y: ``[N, O]`` float targets for ``"mse"``, ``[N]`` integer labels for ``"cross_entropy"``.
        config: the loss, optimiser and schedule.
        checkpoint_epochs: epochs in ``0..config.epochs`` at which to checkpoint.
        checkpoint_dir: where to write the safetensors files; created if missing; ``None`` writes nothing.
        callback: called at each checkpoint, e.g. to compute kernels of the network there.

    Returns:
        A :class:`TrainResult` with the loss after every epoch and the checkpoints.

    Raises:
        ValueError: a checkpoint epoch outside ``0..epochs``, or ``x`` and ``y`` of different lengths.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> x, y = torch.randn(16, 3), torch.randn(16, 2)
        >>> result = train(net, x, y, TrainConfig(lr=0.1, epochs=5), checkpoint_epochs=[0, 5])
        >>> [c.epoch for c in result.checkpoints], result.losses[-1] < result.losses[0]
        ([0, 5], True)
    """
    epochs_wanted = sorted(set(int(e) for e in checkpoint_epochs))
    if epochs_wanted and not 0 <= epochs_wanted[0] <= epochs_wanted[-1] <= config.epochs:
        raise ValueError(f"checkpoint epochs must lie in 0..{config.epochs}, got {epochs_wanted}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples and y {len(y)}; they must match")
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)
    criterion = loss_function(config.loss)
    optimizer = _optimizer(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    batch_size = config.batch_size or len(x)
    directory = None if checkpoint_dir is None else Path(checkpoint_dir)
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)

    losses, checkpoints = [_full_loss(model, x, y, criterion)], []
    for epoch in range(config.epochs + 1):
        if epoch > 0:
            model.train()
            for batch in torch.randperm(len(x), generator=generator).to(device).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                criterion(model(x[batch]), y[batch]).backward()
                optimizer.step()
            losses.append(_full_loss(model, x, y, criterion))
        if epoch in epochs_wanted:
            path = None if directory is None else directory / f"epoch_{epoch:04d}.safetensors"
            checkpoint = Checkpoint(epoch, losses[-1], path, readout_sum_ratio(model))
            if path is not None:
                save_checkpoint(model, path, epoch=epoch, loss=losses[-1])
            if callback is not None:
                was_training = model.training
                callback(checkpoint, model.eval())
                model.train(was_training)
            checkpoints.append(checkpoint)
    return TrainResult(losses, checkpoints)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer is Optimizer.SGD:
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@torch.no_grad()
def _full_loss(model: nn.Module, x: Tensor, y: Tensor, criterion: Callable[[Tensor, Tensor], Tensor]) -> float:
    # Evaluated in eval mode so that BatchNorm uses its running statistics, as the kernels do.
    was_training = model.training
    loss = float(criterion(model.eval()(x), y))
    model.train(was_training)
    return loss


def readout(model: nn.Module) -> nn.Linear:
    """The network's readout: its last ``nn.Linear`` module (NTK-parametrised ones included).

    Raises:
        ValueError: if the network has no ``nn.Linear``.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear readout whose weights could be summed")
    return linears[-1]


@torch.no_grad()
def readout_sum_ratio(model: nn.Module) -> float:
    r"""``‖Σ_a W_a‖ / ‖W‖_F`` of the readout ``W`` ``[O, n]``: how much of it lies along the summed logit.

    The pNTK differentiates ``g = Σ_a f_a / √O``, whose last-layer weight is ``Σ_a W_a / √O``. For ``O``
    independent rows of equal norm the ratio is about ``1``; cross-entropy training leaves ``Σ_a W_a``
    unchanged, while the squared loss on centred targets drives it to zero.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]))
        >>> readout_sum_ratio(nn.Sequential(layer))
        0.0
    """
    W = readout(model).weight
    return float(W.sum(0).norm() / W.norm())


def save_checkpoint(model: nn.Module, path: str | Path, **metadata: object) -> None:
    """Write the parameters and buffers of ``model`` (its ``state_dict``) to a safetensors file.

    Args:
        model: the network.
        path: the file to write.
        **metadata: stored as strings in the file's header (e.g. ``epoch=3``).
    """
    state = {name: t.detach().cpu().contiguous().clone() for name, t in model.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a checkpoint's tensors into ``model`` (same architecture), in place; nothing is unpickled.

    A ``.safetensors`` file (as :func:`save_checkpoint` writes) is read with safetensors; any other file as a
    torch checkpoint with ``torch.load(weights_only=True)``, which reads tensors and plain containers only.
    The tensors are the file's state dict, or the one under its ``"state_dict"`` or ``"model"`` entry.

    Args:
        model: the network to fill.
        path: the checkpoint file.

    Returns:
        ``model``, for chaining.

    Raises:
        CheckpointError: the file is missing, truncated or not a checkpoint; holds objects beyond tensors
            (loading it would run pickled code); holds no state dict; or its tensors do not match the model's
            names or shapes. The message says what to do.

    Example:
        >>> import tempfile
        >>> net, path = nn.Linear(3, 2), tempfile.mkdtemp() + "/net.safetensors"
        >>> save_checkpoint(net, path)
        >>> bool((load_checkpoint(nn.Linear(3, 2), path).weight == net.weight).all())
        True
    """
    path = Path(path)
    state = read_state_dict(path)
    device = next(model.parameters()).device
    try:
        model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=True)
    except RuntimeError as err:
        mismatch = " ".join(str(err).split()).rstrip(".")
        raise CheckpointError(
            f"the tensors of {path} do not fit the model: {mismatch}. Build the model with the architecture and "
            "settings it was saved from"
        ) from None
    return model


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a checkpoint file by name, on the CPU, read without unpickling anything.

    See :func:`load_checkpoint` for the formats.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, except for the match with a model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; check the path")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as err:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({err}); it may be truncated or damaged: save or "
                "download it again"
            ) from None
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not zipfile.is_zipfile(path):
            raise CheckpointError(
                f"{path} is not a readable checkpoint: neither safetensors nor a torch.save file (or one that is "
                "truncated or damaged); save or download it again"
            ) from None
        # Torch's own message suggests loading it unsafely; this one does not.
        raise CheckpointError(
            f"{path} holds Python objects beyond tensors, and loading it would run the pickled code inside it; "
            "pntk never unpickles such files. If you trust where it came from, convert it once to safetensors "
            "in the code that made it: save_file(model.state_dict(), 'weights.safetensors') with "
            "safetensors.torch.save_file, and pass that file instead"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        cause = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"{path} is not a readable torch checkpoint ({cause}); "
            "it may be truncated or damaged: save or download it again"
        ) from None
    for candidate in (content, *(content.get(k) for k in ("state_dict", "model") if isinstance(content, dict))):
        if isinstance(candidate, Mapping) and candidate and all(isinstance(v, Tensor) for v in candidate.values()):
            return dict(candidate)
    raise CheckpointError(
        f"{path} holds no state dict (a dict from names to tensors, or one under 'state_dict' or 'model'); "
        "save model.state_dict() rather than the model or other objects"
    )

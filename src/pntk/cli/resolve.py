"""What the command line names, made real: models, weights and datasets.

Nothing here unpickles user data: tensor files are read with ``torch.load(..., weights_only=True)``, NumPy
files with ``allow_pickle=False``, model weights also from safetensors.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import DatasetName, load_dataset
from ..models import ModelName, build_model


def load_inputs(
    spec: str, *, split: str = "train", n: int | None = None, fmt: str | None = None, seed: int = 0
) -> tuple[Tensor | np.ndarray, int | None]:
    """The inputs named by ``spec``, and their number of classes when the source knows it.

    Args:
        spec: a built-in dataset name (``digits``, ``mnist1d``; ``cifar10``, ... from their default place); a
            directory of a dataset's standard files, with ``fmt`` saying which dataset; a ``.npy`` file
            (memory-mapped, so a large one is read only where needed) or a ``.pt`` file holding a tensor of
            inputs ``[N, *input]`` (or an ``(inputs, labels)`` pair).
        split: ``"train"``, ``"test"`` or ``"all"``, for datasets.
        n: keep ``n`` samples: a stratified subset for datasets, the first ``n`` rows for files.
        fmt: the dataset in a directory: ``cifar10``, ``cifar100``, ``mnist``, ``fashion-mnist``.
        seed: the seed of a dataset's subset.

    Returns:
        ``(x, num_classes)``: ``x`` ``[N, *input]``, a tensor or a (memory-mapped) NumPy array;
        ``num_classes`` for datasets, ``None`` for tensor files.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a directory without ``fmt``, an unknown name, a file of the wrong content.
    """
    path = Path(spec)
    if path.is_dir():
        if fmt is None:
            valid = ", ".join(m.value for m in DatasetName)
            raise ValueError(f"{spec} is a directory; say which dataset its files hold with --dataset-format ({valid})")
        ds = load_dataset(fmt, root=path, split=split, n=n, seed=seed)
        return ds.x, ds.num_classes
    if path.suffix in (".npy", ".pt", ".pth"):
        if not path.is_file():
            raise FileNotFoundError(f"no input file {spec}")
        x = _read_tensor_file(path)
        if x.ndim < 2:
            raise ValueError(f"{spec} holds an array of shape {list(x.shape)}; inputs need [N, *input] (2-D or more)")
        return (x[:n] if n is not None else x), None
    if path.suffix or "/" in spec:
        raise FileNotFoundError(f"no dataset file or directory {spec} (files must end in .npy, .pt or .pth)")
    ds = load_dataset(spec, split=split, n=n, seed=seed)
    return ds.x, ds.num_classes


def _read_tensor_file(path: Path) -> Tensor | np.ndarray:
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise ValueError(
                f"{path} holds no numeric array ({err}); pntk does not unpickle Python objects, save the inputs "
                "as numbers with np.save(path, x.astype(np.float32))"
            ) from None
    content = _torch_load(path)
    if isinstance(content, (tuple, list)) and content and isinstance(content[0], Tensor):
        content = content[0]  # (inputs, labels)
    if not isinstance(content, Tensor):
        raise ValueError(f"{path} holds a {type(content).__name__}; save a tensor of inputs with torch.save(x, ...)")
    return content


def load_model(
    spec: str,
    *,
    in_shape: Sequence[int],
    num_classes: int,
    width: int | None = None,
    depth: int | None = None,
    parametrization: str = "standard",
    seed: int = 0,
) -> nn.Module:
    """The model named by ``spec``, in eval mode.

    Args:
        spec: a zoo name (``mlp``, ``convnet``, ``resnet18``, ``wrn``), built by
            :func:`pntk.models.build_model` from the other arguments; or ``path/to/file.py:factory``, a
            function of no argument in that file that returns an ``nn.Module`` (the other arguments are
            then unused).
        in_shape: the shape of one input sample.
        num_classes: ``O``.
        width, depth, parametrization, seed: as :func:`pntk.models.build_model` (``width`` is required).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown zoo name, no ``width``, no such factory, a factory that returns no module.
    """
    if ":" in spec:
        file, _, factory = spec.rpartition(":")
        model = _call_factory(Path(file), factory)
    else:
        name = ModelName(spec)
        if width is None:
            raise ValueError(f"the zoo model {name.value!r} needs --width")
        model = build_model(
            name,
            width=width,
            depth=depth,
            in_shape=in_shape,
            num_classes=num_classes,
            parametrization=parametrization,
            seed=seed,
        )
    return model.eval()


def _call_factory(file: Path, factory: str) -> nn.Module:
    if not file.is_file():
        raise FileNotFoundError(f"no model file {file} (expected path/to/file.py:factory)")
    module_spec = importlib.util.spec_from_file_location(f"pntk_user_model_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {file} as a Python module (expected path/to/file.py:factory)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ValueError(f"{file} defines no function {factory!r}; expected path/to/file.py:factory")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ValueError(f"{file}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a state dict into ``model`` (all keys must match).

    Args:
        path: a ``.safetensors`` file, or a torch checkpoint (a state dict, or a dict with a ``state_dict`` or
            ``model`` entry holding one) read with ``weights_only=True``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict, or its keys or shapes do not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path))
    else:
        state = _torch_load(path)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict(), ...)")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit the model: {err}") from None


def _torch_load(path: Path):
    """``torch.load`` of tensors and plain containers only: never arbitrary pickled objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path} holds Python objects other than tensors, which pntk does not unpickle; save tensors or a "
            f"state dict (torch.save(model.state_dict(), ...)) instead ({str(err).splitlines()[0]})"
        ) from None

"""What the command line names, made real: models, weights and datasets, each with a record of where it came
from (for a store's provenance).

Nothing here unpickles user data: tensor files are read with ``torch.load(..., weights_only=True)``, NumPy
files with ``allow_pickle=False``, model weights also from safetensors. A file that cannot be read gives a
``ValueError`` that names the file, the cause and the fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import Dataset, DatasetName, load_dataset
from ..models import ModelName, build_model
from ..models.registry import DEFAULT_DEPTHS

#: Bytes read at a time when a file is hashed.
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class LoadedInputs:
    """Inputs named on the command line and where they came from.

    Attributes:
        x: ``[N, *input]``, a tensor or a (memory-mapped) NumPy array.
        num_classes: ``O`` for datasets; ``None`` for tensor files.
        record: JSON-ready: for a dataset its name, directory and format, split, subset size and seed, the
            rows of the split (``indices``), ``labels`` and ``normalization``; for a file its path, format,
            ``sha256``, the rows taken and the labels it holds (if any).
    """

    x: Tensor | np.ndarray
    num_classes: int | None
    record: dict[str, Any]


def load_inputs(
    spec: str, *, split: str = "train", n: int | None = None, fmt: str | None = None, seed: int = 0
) -> LoadedInputs:
    """The inputs named by ``spec``, their number of classes when the source knows it, and their record.

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
        A :class:`LoadedInputs`.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a directory without ``fmt``, an unknown name, a file of the wrong content, a pickle.
    """
    path = Path(spec)
    if path.is_dir() or fmt is not None:
        if fmt is None:
            valid = ", ".join(m.value for m in DatasetName)
            raise ValueError(f"{spec} is a directory; say which dataset its files hold with --dataset-format ({valid})")
        if not path.is_dir():
            raise FileNotFoundError(
                f"no dataset directory {spec}; --dataset-format {fmt} reads the dataset's standard files from the "
                "directory --dataset names"
            )
        ds = load_dataset(fmt, root=path, split=split, n=n, seed=seed)
        return LoadedInputs(ds.x, ds.num_classes, _dataset_record(ds, str(path.resolve()), fmt, n, seed))
    if path.suffix in (".npy", ".pt", ".pth"):
        return _file_inputs(path, n)
    if path.suffix or "/" in spec:
        raise FileNotFoundError(f"no dataset file or directory {spec} (files must end in .npy, .pt or .pth)")
    ds = load_dataset(spec, split=split, n=n, seed=seed)
    return LoadedInputs(ds.x, ds.num_classes, _dataset_record(ds, None, fmt, n, seed))


def _file_inputs(path: Path, n: int | None) -> LoadedInputs:
    """The first ``n`` rows (all for ``None``) of a ``.npy`` or ``.pt`` file of inputs, and their record."""
    if not path.is_file():
        raise FileNotFoundError(f"no input file {path}")
    x, labels = _read_tensor_file(path)
    if x.ndim < 2:
        raise ValueError(f"{path} holds an array of shape {list(x.shape)}; inputs need [N, *input] (2-D or more)")
    if n is not None and n > len(x):
        raise ValueError(f"--num-samples {n} is more than the {len(x)} rows of {path}")
    rows = len(x) if n is None else n
    record = {
        "source": "file",
        "path": str(path.resolve()),
        "format": "npy" if path.suffix == ".npy" else "torch",
        "sha256": file_sha256(path),
        "indices": list(range(rows)),
        "labels": None if labels is None else labels[:rows].tolist(),
        "shape": [rows, *x.shape[1:]],
    }
    return LoadedInputs(x[:rows] if n is not None else x, None, record)


def _dataset_record(ds: Dataset, root: str | None, fmt: str | None, n: int | None, seed: int) -> dict[str, Any]:
    """What a loaded dataset is: its name, directory, format, split, subset, rows, labels and normalisation."""
    return {
        "source": "dataset",
        "name": ds.name,
        "path": root,
        "format": fmt,
        "split": ds.split,
        "num_samples": n,
        "data_seed": seed if n is not None else None,
        "indices": None if ds.indices is None else ds.indices.tolist(),
        "labels": ds.y.tolist(),
        "num_classes": ds.num_classes,
        "normalization": None if ds.normalization is None else ds.normalization.to_dict(),
        "shape": list(ds.x.shape),
    }


def _read_tensor_file(path: Path) -> tuple[Tensor | np.ndarray, Tensor | None]:
    """The inputs a ``.npy`` or ``.pt`` file holds, and its labels when it holds an ``(inputs, labels)`` pair."""
    if path.suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False), None
        except ValueError as err:
            if "pickle" in str(err).lower() or "Python objects" in str(err):
                raise ValueError(f"{path} {_UNSAFE} {_PICKLE_ADVICE['inputs']}") from None
            raise ValueError(f"{path} is not a readable .npy file ({err}); save it again with np.save") from None
        except (OSError, EOFError) as err:
            raise ValueError(f"{path} is not a readable .npy file ({err}); save it again with np.save") from None
    content = _torch_load(path, "inputs")
    labels = None
    if isinstance(content, (tuple, list)) and content and isinstance(content[0], Tensor):
        if len(content) > 1 and isinstance(content[1], Tensor) and content[1].ndim == 1:
            labels = content[1]
        content = content[0]  # (inputs, labels)
    if not isinstance(content, Tensor):
        raise ValueError(f"{path} holds a {type(content).__name__}; save a tensor of inputs with torch.save(x, ...)")
    return content, labels


def load_model(
    spec: str,
    *,
    in_shape: Sequence[int],
    num_classes: int,
    width: int | None = None,
    depth: int | None = None,
    parametrization: str = "standard",
    seed: int = 0,
) -> tuple[nn.Module, dict[str, Any]]:
    """The model named by ``spec``, in eval mode, and its record.

    Args:
        spec: a zoo name (``mlp``, ``convnet``, ``resnet18``, ``wrn``), built by
            :func:`pntk.models.build_model` from the other arguments; or ``path/to/file.py:factory``, a
            function of no argument in that file that returns an ``nn.Module`` (the other arguments are
            then unused).
        in_shape: the shape of one input sample.
        num_classes: ``O``.
        width, depth, parametrization, seed: as :func:`pntk.models.build_model` (``width`` is required).

    Returns:
        ``(model, record)``; the record holds the zoo name and every option of :func:`pntk.models.build_model`
        (``depth`` resolved to the model's default), or the file's absolute path, the factory and the file's
        ``sha256``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unknown zoo name, no ``width``, a file that does not run (a syntax error, an exception
            while importing it), no such factory, a factory that raises or returns no module.
    """
    if ":" in spec:
        file, _, factory = spec.rpartition(":")
        model = _call_factory(Path(file), factory)
        record: dict[str, Any] = {
            "file": str(Path(file).resolve()),
            "factory": factory,
            "sha256": file_sha256(Path(file)),
        }
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
        record = {
            "zoo": name.value,
            "width": width,
            "depth": DEFAULT_DEPTHS[name] if depth is None else depth,
            "in_shape": list(in_shape),
            "num_classes": num_classes,
            "parametrization": parametrization,
            "seed": seed,
        }
    return model.eval(), record


def check_materialized(model: nn.Module) -> None:
    """Refuse a model whose tensors are on the meta device (shapes without values), before it is moved.

    Raises:
        ValueError: names the first such tensors and what to do.
    """
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        shown = ", ".join(meta[:3]) + (", ..." if len(meta) > 3 else "")
        raise ValueError(
            f"the model's tensors {shown} are on the meta device, which holds no values; build the model with real "
            "tensors, or pass --weights with a file that holds them all"
        )


def check_forward(model: nn.Module, x: Tensor | np.ndarray, device: torch.device, what: str = "--dataset") -> None:
    """Run ``model`` on the first two samples of ``x``, so that a model that does not fit the data fails here
    with a message rather than deep inside a kernel engine.

    Raises:
        ValueError: the forward pass raised; the message gives the batch's shape and the model's error.
    """
    batch = torch.as_tensor(np.array(x[:2]) if isinstance(x, np.ndarray) else x[:2]).to(device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    if dtype is not None and batch.is_floating_point():
        batch = batch.to(dtype)  # as the kernel engines feed it
    try:
        with torch.no_grad():
            model(batch)
    except Exception as err:
        raise ValueError(
            f"the model cannot run on the inputs of {what} (a batch of shape {list(batch.shape)}, "
            f"{batch.dtype}): {type(err).__name__}: {str(err).strip()}; check that the model's input shape and "
            "dtype match the data"
        ) from None


def _call_factory(file: Path, factory: str) -> nn.Module:
    if not file.is_file():
        raise FileNotFoundError(f"no model file {file} (expected path/to/file.py:factory)")
    module_spec = importlib.util.spec_from_file_location(f"pntk_user_model_{file.stem}", file)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{file} is not a Python file that can be imported; expected path/to/file.py:factory")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ValueError(f"{file}, line {err.lineno}: syntax error: {err.msg}; fix the model file") from None
    except Exception as err:
        raise ValueError(f"importing {file} failed{_where(err, file)}: {type(err).__name__}: {err}") from None
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ValueError(f"{file} defines no function {factory!r}; expected path/to/file.py:factory")
    try:
        model = fn()
    except Exception as err:
        raise ValueError(f"{file}:{factory}() raised {type(err).__name__}{_where(err, file)}: {err}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{file}:{factory}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def _where(err: BaseException, file: Path) -> str:
    """`` at line L`` of the innermost frame of ``err``'s traceback that lies in ``file``, if any."""
    lines = [f.lineno for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == file]
    return f" at line {lines[-1]}" if lines else ""


def load_weights(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a state dict into ``model`` (all keys must match), and return the weights' record.

    Args:
        model: the module to load into.
        path: a ``.safetensors`` file, or a torch checkpoint (a state dict, or a dict with a ``state_dict`` or
            ``model`` entry holding one) read with ``weights_only=True``.

    Returns:
        ``{"path": absolute path, "format": "safetensors" or "torch", "sha256": hex digest of the file}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a truncated or damaged file, a pickle of Python objects (refused), no state dict, or keys
            or shapes that do not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise ValueError(
                f"{path} is not a readable safetensors file ({err}): it is truncated or not in the safetensors "
                "format; copy it again, or save it again with safetensors.torch.save_file(model.state_dict(), path)"
            ) from None
    else:
        state = _torch_load(path, "weights")
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} holds no state dict of tensors; save one with torch.save(model.state_dict(), ...)")
    try:
        # A model built on the meta device takes the file's tensors themselves (copying into it would do nothing).
        model.load_state_dict(state, assign=any(t.is_meta for t in model.parameters()))
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit the model: {err}") from None
    return {
        "path": str(path.resolve()),
        "format": "safetensors" if path.suffix == ".safetensors" else "torch",
        "sha256": file_sha256(path),
    }


_UNSAFE = (
    "holds pickled Python objects other than tensors, so it is unsafe to unpickle: loading it could run any code "
    "it contains, and pntk refuses to."
)
_PICKLE_ADVICE = {
    "weights": "Save the weights as safetensors where the model is defined: from safetensors.torch import "
    "save_file; save_file(model.state_dict(), 'weights.safetensors'), then pass --weights weights.safetensors",
    "inputs": "Save the inputs as numbers instead: torch.save(x, path) with x a tensor, or "
    "np.save(path, x.astype(np.float32))",
}


def _torch_load(path: Path, what: str) -> Any:
    """``torch.load`` of tensors and plain containers only: never arbitrary pickled objects.

    Raises:
        ValueError: the file holds other Python objects (refused: unpickling runs code), or it is truncated or
            not a torch file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # A pickle of other objects names them ("Unsupported global: ..."); bytes that are no pickle at all give
        # an unknown opcode ("Unsupported operand ...") and are a damaged file.
        if "weights only" in str(err).lower() and "unsupported operand" not in str(err).lower():
            # torch's own message suggests weights_only=False; never pass that on.
            raise ValueError(f"{path} {_UNSAFE} {_PICKLE_ADVICE[what]}") from None
        cause = "its bytes are neither a zip archive nor a pickle that torch can read"
    except Exception as err:  # a damaged file fails in many ways: RuntimeError, EOFError, KeyError, ...
        cause = (str(err).splitlines() or [""])[0] or type(err).__name__
    raise ValueError(
        f"{path} is not a readable torch file ({cause[:200]}): it is truncated, damaged or was not written by "
        "torch.save; copy or save it again"
    )


def file_sha256(path: str | Path) -> str:
    """``sha256:…`` of a file's bytes, read a megabyte at a time.

    Example:
        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "empty"; _ = f.write_bytes(b"")
        >>> file_sha256(f)[:19]
        'sha256:e3b0c44298fc'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            h.update(block)
    return "sha256:" + h.hexdigest()

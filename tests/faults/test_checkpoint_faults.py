"""Checkpoints that cannot be loaded safely are refused with what to do, and nothing is ever unpickled."""

import pytest
import torch
from torch import nn

from pntk.errors import CheckpointError
from pntk.training import load_checkpoint, save_checkpoint

RAN = []


class Payload:
    """Unpickling this would run code: it must never happen."""

    def __reduce__(self):
        return (RAN.append, ("unpickled",))


def net():
    torch.manual_seed(0)
    return nn.Linear(3, 2)


@pytest.fixture
def saved(tmp_path):
    model = net()
    save_checkpoint(model, tmp_path / "w.safetensors")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    return model, tmp_path


def test_both_formats_load(saved):
    model, path = saved
    for name in ("w.safetensors", "w.pt"):
        loaded = load_checkpoint(nn.Linear(3, 2), path / name)
        assert torch.equal(loaded.weight, model.weight) and torch.equal(loaded.bias, model.bias)
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, path / "nested.pt")
    assert torch.equal(load_checkpoint(nn.Linear(3, 2), path / "nested.pt").weight, model.weight)


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_truncated_or_garbage_files(saved, name, damage):
    _, path = saved
    data = (path / name).read_bytes()
    (path / name).write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x93NUMPY garbage" * 50)
    with pytest.raises(CheckpointError, match="not a readable .*(truncated|damaged)") as err:
        load_checkpoint(nn.Linear(3, 2), path / name)
    assert isinstance(err.value, ValueError)


def test_a_pickle_with_code_is_refused_without_running_it(tmp_path):
    torch.save({"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "extra": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="would run the pickled code.*never unpickles.*safetensors") as err:
        load_checkpoint(nn.Linear(3, 2), tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value) and "will likely succeed" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # torch's hint is not chained either
    assert RAN == []


def test_other_architectures_and_missing_files(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match="do not fit the model.*architecture"):
        load_checkpoint(nn.Linear(4, 2), path / "w.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(nn.Linear(3, 2), path / "nothing.pt")
    torch.save([1, 2, 3], path / "list.pt")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        load_checkpoint(nn.Linear(3, 2), path / "list.pt")

"""Training: the loss goes down, runs are reproducible, and checkpoints load back bit for bit (safetensors)."""

import pytest
import torch
from safetensors import safe_open

from pntk.models import build_model
from pntk.training import TrainConfig, load_checkpoint, readout, train


def _problem(n=64, O=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    labels = (x[:, :O]).argmax(-1)
    return x, labels, torch.nn.functional.one_hot(labels, O).float() - 1.0 / O


def _model(seed=0):
    return build_model("mlp", width=32, in_shape=(5,), num_classes=3, seed=seed)


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(loss="mse", optimizer="sgd", lr=0.1, epochs=30),
        TrainConfig(loss="mse", optimizer="sgd", lr=0.05, epochs=10, batch_size=16),
        TrainConfig(loss="cross_entropy", optimizer="adam", lr=0.01, epochs=20, batch_size=16),
    ],
    ids=["full-batch-sgd-mse", "minibatch-sgd-mse", "adam-cross-entropy"],
)
def test_training_reduces_the_loss(config):
    x, labels, Y = _problem()
    y = Y if config.loss.value == "mse" else labels
    result = train(_model(), x, y, config)
    assert len(result.losses) == config.epochs + 1
    assert result.losses[-1] < 0.5 * result.losses[0]


def test_checkpoints_load_back_to_identical_parameters(tmp_path):
    x, _, Y = _problem()
    seen = {}

    def remember(checkpoint, model):
        assert not model.training  # the callback sees the model in eval mode
        seen[checkpoint.epoch] = {k: v.clone() for k, v in model.state_dict().items()}

    model = _model()
    config = TrainConfig(loss="mse", lr=0.1, epochs=4, batch_size=16, seed=3)
    result = train(model, x, Y, config, checkpoint_epochs=[0, 2, 4], checkpoint_dir=tmp_path, callback=remember)
    assert model.training  # its mode is restored after the callback
    assert [c.epoch for c in result.checkpoints] == [0, 2, 4]
    assert [c.loss for c in result.checkpoints] == [result.losses[e] for e in (0, 2, 4)]
    assert not torch.equal(seen[0]["layers.0.weight"], seen[4]["layers.0.weight"])
    for checkpoint in result.checkpoints:
        assert checkpoint.path == tmp_path / f"epoch_{checkpoint.epoch:04d}.safetensors"
        fresh = load_checkpoint(_model(seed=99), checkpoint.path)
        for name, tensor in fresh.state_dict().items():
            assert torch.equal(tensor, seen[checkpoint.epoch][name]), name
        with safe_open(str(checkpoint.path), framework="pt") as f:
            assert f.metadata()["epoch"] == str(checkpoint.epoch)
            assert float(f.metadata()["loss"]) == checkpoint.loss


def test_same_seed_same_run():
    x, _, Y = _problem()
    config = TrainConfig(loss="mse", lr=0.05, epochs=3, batch_size=8, seed=7)
    a, b = _model(), _model()
    train(a, x, Y, config)
    train(b, x, Y, config)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name


def test_bad_settings_are_refused_with_the_valid_values():
    with pytest.raises(ValueError, match="'sgd', 'adam'"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="'mse', 'cross_entropy'"):
        TrainConfig(loss="hinge")
    x, _, Y = _problem()
    with pytest.raises(ValueError, match=r"0\.\.2"):
        train(_model(), x, Y, TrainConfig(epochs=2), checkpoint_epochs=[3])


def test_cross_entropy_is_the_default_and_keeps_the_summed_readout():
    """softmax − onehot sums to zero over outputs: SGD on cross-entropy never moves Σ_a W_a of the readout."""
    assert TrainConfig().loss.value == "cross_entropy"
    x, labels, _ = _problem(n=128, O=3)
    model = _model()
    before = readout(model).weight.detach().sum(0).clone()
    result = train(model, x, labels, TrainConfig(lr=0.1, epochs=20, batch_size=16), checkpoint_epochs=[0, 20])
    after = readout(model).weight.detach().sum(0)
    assert result.losses[-1] < 0.5 * result.losses[0]
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    # the ratio changes only because ‖W‖_F grows; it is logged at every checkpoint
    assert all(0 < c.readout_sum_ratio < 2 for c in result.checkpoints)


def test_squared_loss_on_centred_targets_drives_the_summed_logit_to_zero():
    """Under MSE on centred one-hot targets the gradient of Σ_a W_a is Σ_a f_a · h: the summed logit is fitted
    to zero, the direction the pNTK differentiates; under cross-entropy Σ_a W_a is not moved at all."""
    x, labels, Y = _problem(n=128, O=3)
    summed = {}
    for loss, target in (("mse", Y), ("cross_entropy", labels)):
        model = _model()
        with torch.no_grad():
            before = model(x).sum(-1).pow(2).mean().item()
        train(model, x, target, TrainConfig(loss=loss, lr=0.1, epochs=30, batch_size=16))
        with torch.no_grad():
            summed[loss] = model.eval()(x).sum(-1).pow(2).mean().item() / before
    assert summed["mse"] < 0.05 < summed["cross_entropy"]

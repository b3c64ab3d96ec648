"""``--params PATTERN`` and ``--output SELECTION`` on the subcommands that compute a network's kernel, and the
selection recorded in a store (a rerun with another selection is refused)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pntk.store
from pntk.cli import main
from pntk.cli.flags import output_selection
from pntk.kernels.outputs import LabelWords
from pntk.store import KernelSpec, KernelStore
from reference import reference_kernel

#: A tiny language model: ``{"logits": [B, L, V]}`` from ``[B, L, 4]`` inputs.
MODEL_FILE = """
import torch

class LM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 6)
        self.head = torch.nn.Linear(6, 5)

    def forward(self, x):
        return {"logits": self.head(torch.tanh(self.body(x)))}

def make():
    torch.manual_seed(0)
    return LM().eval()
"""

HEAD = ["head.weight", "head.bias"]
WORDS = LabelWords([1, 3], position=-1)


@pytest.fixture
def lm(tmp_path):
    (tmp_path / "lm.py").write_text(MODEL_FILE)
    x = torch.randn(7, 3, 4, generator=torch.Generator().manual_seed(1))
    torch.save(x, tmp_path / "x.pt")
    namespace: dict = {}
    exec(MODEL_FILE, namespace)
    source = ["--model", f"{tmp_path / 'lm.py'}:make", "--dataset", str(tmp_path / "x.pt"), "--dtype", "float64"]
    return namespace["make"](), x, source


def test_output_selection_parses_fields_and_label_words():
    assert output_selection("logits") == "logits"
    assert output_selection("3,7@-1") == LabelWords([3, 7], -1)
    assert output_selection("scores:2@0") == LabelWords([2], 0, "scores")
    with pytest.raises(Exception, match="label words"):
        output_selection("a,b@-1")


def test_compute_records_the_selection_and_refuses_another(lm, tmp_path, capsys):
    model, x, source = lm
    out = tmp_path / "k.zarr"
    argv = ["compute", *source, "--kind", "entk", "--out", str(out), "--params", "head.*", "--output", "1,3@-1"]
    assert main(argv) == 0
    expected = reference_kernel(model, x, None, "entk", names=HEAD, output=WORDS)
    np.testing.assert_allclose(pntk.store.open(out).numpy(), expected.numpy(), rtol=1e-10, atol=1e-12)
    spec = KernelStore(out).spec
    assert spec.params is not None and spec.params.startswith("2 of 4 parameter tensors")
    assert spec.output == "logits[:, -1, [1, 3]]"
    record = KernelStore(out).provenance
    assert record["params"] == ["head.*"] and record["output"] == "logits[:, -1, [1, 3]]"

    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 of 4 parameter tensors" in text and "logits[:, -1, [1, 3]]" in text

    assert main(argv) == 0  # the same selection: the complete store is kept
    for changed in (["--params", "body.*"], ["--output", "0,3@-1"], []):
        rerun = [a for a in argv if a not in ("--params", "head.*", "--output", "1,3@-1")] + changed
        if "--output" not in changed:
            rerun += ["--output", "1,3@-1"]
        if "--params" not in changed and changed:
            rerun += ["--params", "head.*"]
        capsys.readouterr()
        assert main(rerun) != 0
        err = capsys.readouterr().err
        what = "output" if "--output" in changed else "params"
        assert f"{what} selection" in err, err


def test_old_stores_without_selection_stay_readable_and_resumable(lm, tmp_path):
    _, _, source = lm
    out = tmp_path / "k.zarr"
    argv = ["compute", *source, "--kind", "pntk", "--out", str(out), "--output", "logits:1,3@-1"]
    assert main(argv) == 0
    attrs = KernelStore(out).spec.to_attrs()
    del attrs["params"], attrs["output"]
    old = KernelSpec.from_attrs(attrs)
    assert old.params is None and old.output is None
    assert old.differences(KernelStore(out).spec) == []


def test_eig_with_selection(lm, tmp_path, capsys):
    model, x, source = lm
    dense = reference_kernel(model, x, None, "pntk", names=HEAD, output=WORDS)
    top = np.linalg.eigvalsh(dense.numpy())[::-1][:2]
    out = tmp_path / "eig.json"
    argv = ["eig", *source, "--params", "head.*", "--output", "1,3@-1", "--top", "2", "--tol", "1e-10"]
    assert main([*argv, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    np.testing.assert_allclose(result["eigenvalues"], top, rtol=1e-8)
    capsys.readouterr()
    assert main(["eig", "--store", str(tmp_path / "k.zarr"), "--params", "head.*"]) != 0
    assert "pntk info shows it" in capsys.readouterr().err


def test_features_with_selection(lm, tmp_path):
    """Nyström features with every sample a landmark reproduce the selected kernel exactly."""
    model, x, source = lm
    out = tmp_path / "phi.npy"
    argv = ["features", *source, "--method", "nystrom", "--k", "7", "--out", str(out)]
    assert main([*argv, "--params", "head.*", "--output", "1,3@-1"]) == 0
    Phi = np.load(out, allow_pickle=False)
    expected = reference_kernel(model, x, None, "pntk", names=HEAD, output=WORDS).numpy()
    np.testing.assert_allclose(Phi @ Phi.T, expected, rtol=1e-8, atol=1e-10)

"""One CLI shape: the shared flags, --config files that flags override, and a subcommand's own usage on errors."""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest
import torch

import pntk
from pntk.cli import build_parser, main
from pntk.cli.flags import DTYPES, add_common_flags, resolve_device
from pntk.cli.runner import _subparsers
from pntk.data import load_dataset
from pntk.models import build_model


def _base(out, *extra: str) -> list[str]:
    return ["compute", "--model", "mlp", "--width", "8", "--dataset", "digits", "--kind", "pntk", "--out", str(out)] + [
        *extra
    ]


def _options(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    """Each option of ``parser``: what a user sees and gets from it."""
    return {
        a.option_strings[0]: (a.dest, a.type, a.choices, a.default, a.help, a.metavar)
        for a in parser._actions
        if a.option_strings
    }


def _usage_error(capsys, argv: list[str]) -> str:
    """Run ``argv``, which must stop as argparse does on bad usage (status 2); return what it printed."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def _shared_definitions() -> dict[str, tuple]:
    reference = argparse.ArgumentParser()
    add_common_flags(reference)
    return _options(reference)


#: Common flags that a subcommand defines otherwise on purpose: a sweep takes lists of seeds (--seed 0,1,2) and
#: computes the kernels of its analyses in float32 or float64 only.
_OWN_DEFINITIONS = {"sweep": {"--seed", "--data-seed", "--dtype"}}


@pytest.mark.parametrize(
    "name",
    [name for name, sub in _subparsers(build_parser()).items() if set(_options(sub)) & set(_shared_definitions())],
)
def test_every_subcommand_defines_the_common_flags_alike(name) -> None:
    """A subcommand that takes a common flag takes it as the shared helper defines it (name, type, choices),
    except where it says it does not; such an exception must still differ, or it is stale."""
    expected = _shared_definitions()
    mine = _options(_subparsers(build_parser())[name])
    own = _OWN_DEFINITIONS.get(name, set())
    for flag in set(mine) & set(expected):
        same = mine[flag][:3] == expected[flag][:3]
        assert same != (flag in own), f"pntk {name} {flag} " + ("is no exception" if same else "differs")
    assert "--n" not in mine, f"pntk {name} has --n; the flag is --num-samples"


def test_a_sweep_checks_its_lists(capsys) -> None:
    """Widths are positive and seeds non-negative, item by item; N is positive."""
    base = ["sweep", "--dataset", "digits", "--model", "mlp"]
    assert "a positive integer" in _usage_error(capsys, [*base, "--widths", "16,0"])
    assert "a seed" in _usage_error(capsys, [*base, "--widths", "16", "--seed", "0,-1"])
    assert "a positive integer" in _usage_error(capsys, [*base, "--widths", "16", "--num-samples", "0"])
    args = build_parser().parse_args([*base, "--widths", "16,32", "--seed", "3,4"])
    assert (args.widths, args.seed, args.data_seed) == ((16, 32), (3, 4), (0, 1))


@pytest.mark.parametrize(
    "size, expected",
    [
        ("4GB", 4 * 10**9),
        ("4GiB", 4 * 2**30),
        ("512MB", 512 * 10**6),
        ("4G", 4 * 10**9),
        ("512M", 512 * 10**6),
    ],
)
def test_memory_sizes(size, expected) -> None:
    args = build_parser().parse_args(_base("k.zarr", "--memory", size))
    assert args.memory == expected


def test_bad_values_and_unknown_flags_print_the_subcommands_usage(tmp_path, capsys) -> None:
    cases = [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--num-samples", "-3"], "argument --num-samples: expected a positive integer, got '-3'"),
        (["--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
        (["--memory", "lots"], "argument --memory: cannot read the memory size 'lots'"),
        (["--seed", "x"], "argument --seed: expected a seed"),
    ]
    for extra, message in cases:
        err = _usage_error(capsys, _base(tmp_path / "k.zarr", *extra))
        assert err.startswith("usage: pntk compute ") and f"pntk compute: error: {message}" in err, err
    err = _usage_error(capsys, ["compute", "--model", "mlp"])
    assert err.startswith("usage: pntk compute ") and "required: --dataset, --kind, --out" in err
    assert _usage_error(capsys, ["nope"]).startswith("usage: pntk [-h]")
    assert not (tmp_path / "k.zarr").exists()


def test_seed_sets_the_model_and_data_seed_the_subset(tmp_path) -> None:
    stores = {}
    for name, extra in {"a": [], "seed": ["--seed", "1"], "data": ["--data-seed", "1"]}.items():
        assert main(_base(tmp_path / f"{name}.zarr", "--num-samples", "20", *extra)) == 0
        stores[name] = pntk.open(tmp_path / f"{name}.zarr")
    a, seed, data = (stores[k].spec for k in ("a", "seed", "data"))
    assert seed.data1 == a.data1 and seed.model != a.model
    assert data.model == a.model and data.data1 != a.data1
    model = build_model("mlp", width=8, in_shape=(1, 8, 8), num_classes=10, seed=1).eval()
    x = load_dataset("digits", n=20, seed=0).x
    np.testing.assert_array_equal(stores["seed"].numpy(), pntk.kernel(model, x, kind="pntk", batch_size=20).numpy())
    assert stores["data"].provenance["dataset"]["indices"] == load_dataset("digits", n=20, seed=1).indices.tolist()


def test_dtypes(tmp_path, capsys) -> None:
    assert set(DTYPES) == {"float32", "float64", "bfloat16", "float16"}
    assert main(_base(tmp_path / "h.zarr", "--num-samples", "10", "--dtype", "float16")) == 0
    K = pntk.open(tmp_path / "h.zarr")
    assert K.dtype == np.float16
    model = build_model("mlp", width=8, in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = load_dataset("digits", n=10).x
    expected = pntk.kernel(model, x, kind="pntk", dtype=torch.float16, batch_size=K.spec.tile).numpy()
    np.testing.assert_array_equal(K.numpy(), expected)
    capsys.readouterr()
    assert main(_base(tmp_path / "b.zarr", "--num-samples", "10", "--dtype", "bfloat16")) == 2
    err = capsys.readouterr().err
    assert "NumPy has no bfloat16; use --dtype float16" in err and "pntk.kernel(..., dtype=torch.bfloat16)" in err
    assert not (tmp_path / "b.zarr").exists()


def test_devices(tmp_path, capsys) -> None:
    assert resolve_device("auto") == torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    assert main(_base(tmp_path / "k.zarr", "--device", "tpu")) == 2
    assert "unknown device 'tpu'; use cpu, cuda, cuda:N or mps" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(_base(tmp_path / "k.zarr", "--device", "cuda")) == 2
        err = capsys.readouterr().err
        assert "--device cuda: " in err and "use --device cpu" in err and "Traceback" not in err
    assert main(_base(tmp_path / "k.zarr", "--device", "cuda:99")) == 2
    assert "--device cuda:99: " in capsys.readouterr().err


CONFIG = """
model = "mlp"
width = 8
dataset = "digits"
num-samples = 30
data_seed = 2
memory = "64MB"

[compute]
kind = "trace"
out = "{out}"

[sweep]
widths = "16,32"
"""


def test_config_file_with_flags_overriding_it(tmp_path, capsys) -> None:
    config = tmp_path / "run.toml"
    config.write_text(CONFIG.format(out=tmp_path / "k.zarr"))
    assert main(["compute", "--config", str(config), "--num-samples", "20", "--overwrite"]) == 0
    K = pntk.open(tmp_path / "k.zarr")
    assert K.shape == (20, 20) and K.kind.value == "trace"
    record = K.provenance
    assert record["dataset"]["data_seed"] == 2 and record["dataset"]["num_samples"] == 20
    assert record["config"]["path"] == str(config) and "--num-samples" in record["config"]["flags"]
    assert record["command"] == ["pntk", "compute", "--config", str(config), "--num-samples", "20", "--overwrite"]
    model = build_model("mlp", width=8, in_shape=(1, 8, 8), num_classes=10, seed=0).eval()
    x = load_dataset("digits", n=20, seed=2).x
    np.testing.assert_allclose(K.numpy(), pntk.kernel(model, x, kind="trace").numpy(), rtol=1e-5, atol=1e-6)

    yaml = tmp_path / "run.yaml"
    yaml.write_text(f"model: mlp\nwidth: 8\ndataset: digits\nnum_samples: 12\nkind: pntk\nout: {tmp_path / 'y.zarr'}\n")
    assert main(["compute", "--config", str(yaml)]) == 0
    assert pntk.open(tmp_path / "y.zarr").shape == (12, 12)


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle = 'mlp'", "has no option 'modle'; valid keys are "),
        ("num-samples = 'many'", "num-samples = 'many': expected a positive integer"),
        ("kind = 'ntk'", "kind = 'ntk': invalid choice; valid ones are entk, trace, pntk"),
        ("overwrite = 'yes'", "--overwrite is a switch; write true or false"),
        ("model = ", "is not valid TOML"),
        ("[compute]\nconfig = 'x.toml'", "has no option 'config'"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, capsys, text, message) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    err = _usage_error(capsys, ["compute", "--config", str(config)])
    assert err.startswith("usage: pntk compute") and f"{config}" in err and message in err, err


def test_missing_config_file(tmp_path, capsys) -> None:
    err = _usage_error(capsys, ["compute", "--config", str(tmp_path / "none.toml")])
    assert f"no config file {tmp_path / 'none.toml'}" in err


def test_config_values_become_the_flags_they_name() -> None:
    from pntk.cli.config import config_arguments

    p = argparse.ArgumentParser()
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction)
    p.add_argument("--widths", type=lambda t: tuple(int(v) for v in t.split(",")))
    p.add_argument("--files", nargs="+")
    values = {"overwrite": False, "progress": False, "widths": [16, 32], "files": ["a", "b"], "other": {"x": 1}}
    tokens = config_arguments(p, "compute", {"compute", "other"}, values, "c.toml")
    assert tokens == ["--no-progress", "--widths", "16,32", "--files", "a", "b"]
    args = p.parse_args([*tokens, "--progress"])  # the command line's flags come after, and win
    assert (args.overwrite, args.progress, args.widths, args.files) == (False, True, (16, 32), ["a", "b"])


def test_yaml_without_pyyaml_says_what_to_install(tmp_path, monkeypatch) -> None:
    from pntk.cli.config import ConfigError, load_config

    (tmp_path / "c.yaml").write_text("width: 8\n")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigError, match="reading YAML needs PyYAML"):
        load_config(tmp_path / "c.yaml")

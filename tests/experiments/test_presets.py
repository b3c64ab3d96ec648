"""Presets are well formed: unique result names, ascending sizes, checkpoints within the training run."""

import pytest

from pntk.experiments import PRESETS, Regression, Timing, Trajectory, WidthSweep, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_is_well_formed(name):
    preset = get_preset(name)
    names = [spec.name for spec in preset.specs]
    assert len(names) == len(set(names))  # one JSON and one figure per experiment
    for spec in preset.specs:
        if isinstance(spec, (WidthSweep, Regression)):
            assert list(spec.widths) == sorted(set(spec.widths)) and len(spec.widths) >= 2
        if isinstance(spec, WidthSweep):
            assert len(spec.widths) >= 3  # a slope with a standard error
        if isinstance(spec, Trajectory):
            assert 0 in spec.checkpoint_epochs and max(spec.checkpoint_epochs) <= spec.train.epochs
            assert spec.N <= spec.N_train
        if isinstance(spec, Regression) and spec.large_N is not None:
            O = 100 if spec.dataset == "cifar100" else 10
            assert spec.large_N**2 * O**2 * 8 > spec.entk_budget
        if isinstance(spec, Timing):
            assert list(spec.Ns) == sorted(set(spec.Ns)) and list(spec.Os) == sorted(set(spec.Os))


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'quick', 'demo', 'paper'"):
        get_preset("full")

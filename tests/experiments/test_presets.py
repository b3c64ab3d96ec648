"""Presets are well formed: unique result names, ascending sizes, enough seeds and input sets for intervals,
checkpoints within the training run, the test sizes the claims need."""

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
            assert len(spec.widths) >= 3 and len(spec.data_seeds) >= 2 and len(spec.seeds) >= 2
        if isinstance(spec, Trajectory):
            assert 0 in spec.checkpoint_epochs and max(spec.checkpoint_epochs) <= spec.train.epochs
            assert spec.N <= spec.N_train
        if isinstance(spec, Timing):
            assert list(spec.Ns) == sorted(set(spec.Ns)) and list(spec.Os) == sorted(set(spec.Os))
            assert spec.repeats >= 2


@pytest.mark.parametrize("name", ["demo", "paper"])
def test_demo_and_paper_presets_have_the_sizes_the_claims_need(name):
    preset = get_preset(name)
    for spec in preset.sweeps:
        assert len(spec.seeds) >= 3
    for spec in preset.trajectories:
        assert len(spec.widths) >= 3 and len(spec.seeds) >= 3 and spec.train.loss.value == "cross_entropy"
    for spec in preset.regressions:
        assert len(spec.seeds) >= 3 and spec.N_test >= 1000 and len(spec.ridges) >= 3
    for spec in preset.timings:
        assert spec.repeats >= 3


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'quick', 'demo', 'paper'"):
        get_preset("full")

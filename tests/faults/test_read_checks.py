"""Reads check every chunk they touch: the chunks named for an index cover every element it selects."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import pntk.store
from pntk.compute import compute
from store_worker import make_problem

N1, N2, TILE = 12, 9, 5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    model, x = make_problem(N1)
    return compute(model, x, x[:N2], kind="pntk", out=tmp_path_factory.mktemp("r") / "k.zarr", batch_size=TILE)


def axis_index(n):
    ints = st.integers(-n, n - 1)
    slices = st.builds(
        slice,
        st.none() | st.integers(-n - 2, n + 2),
        st.none() | st.integers(-n - 2, n + 2),
        st.none() | st.integers(1, 4),
    )
    lists = st.lists(st.integers(0, n - 1), min_size=1, max_size=4)
    return ints | slices | lists


keys = st.one_of(
    axis_index(N1),
    st.tuples(axis_index(N1), axis_index(N2)),
    st.tuples(st.just(Ellipsis), axis_index(N2)),
    st.tuples(axis_index(N1), st.just(Ellipsis)),
    st.just(Ellipsis),
)


@settings(max_examples=200, deadline=None)
@given(key=keys)
def test_the_chunks_of_a_read_cover_what_it_selects(store, key):
    rows, cols = np.indices((N1, N2))  # each element's row and column
    normalised = key if isinstance(key, tuple) else (key,)
    if sum(isinstance(k, list) for k in normalised) > 1:
        return  # NumPy pairs several lists up; Zarr reads them as an outer product: not comparable here
    try:
        selected = zip(np.ravel(rows[key]), np.ravel(cols[key]))
    except IndexError:
        return
    touched = {(int(r) // TILE, int(c) // TILE) for r, c in selected}
    assert touched <= set(store._chunks_under(key))


def test_an_index_it_cannot_analyse_checks_every_chunk(store):
    assert len(store._chunks_under(("not", "an index"))) == 3 * 2


def test_the_reads_agree_with_plain_zarr(store):
    import zarr

    plain = zarr.open_array(str(store.path), mode="r")
    for key in [(slice(2, 11, 3), 4), (-1, slice(None)), Ellipsis, (slice(None), [0, 8])]:
        np.testing.assert_array_equal(store[key], plain[key])
    assert torch.isfinite(torch.from_numpy(pntk.store.open(store.path).numpy())).all()

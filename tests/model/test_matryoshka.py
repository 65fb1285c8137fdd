import numpy as np
import pytest
import torch

from model.constants import EMBED_DIM, MATRYOSHKA_DIMS
from model.errors import InvalidInput
from model.matryoshka import check_dims, truncate


def test_dims_are_the_nested_sizes():
    assert MATRYOSHKA_DIMS == (64, 128, 256, 512)
    assert EMBED_DIM == MATRYOSHKA_DIMS[-1]


@pytest.mark.parametrize("dims", [64, 128, 256, 512, np.int64(128)])
def test_check_dims_accepts_allowed(dims):
    assert check_dims(dims) == int(dims)


@pytest.mark.parametrize("dims", [0, 32, 100, 1024, -64, 64.0, "64", None, True])
def test_check_dims_rejects_others(dims):
    with pytest.raises(InvalidInput, match="dims"):
        check_dims(dims)


def test_truncate_numpy_is_prefix_renormalised():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 512)).astype(np.float64)
    out = truncate(x, 64)
    expected = x[:, :64] / np.linalg.norm(x[:, :64], axis=1, keepdims=True)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_truncate_torch_matches_numpy():
    x = torch.randn(3, 512)
    np.testing.assert_allclose(truncate(x, 128).numpy(), truncate(x.numpy(), 128), atol=1e-6)
    assert truncate(x, 512).shape == (3, 512)


def test_truncate_keeps_zero_rows_finite():
    x = np.zeros((2, 512), dtype=np.float32)
    x[1, 0] = 3.0
    out = truncate(x, 64)
    assert np.isfinite(out).all()
    assert np.all(out[0] == 0)
    assert out[1, 0] == pytest.approx(1.0)


def test_truncate_refuses_more_dims_than_present():
    with pytest.raises(InvalidInput, match="cannot truncate 128-d"):
        truncate(np.ones((1, 128)), 256)

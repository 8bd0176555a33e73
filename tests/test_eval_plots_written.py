"""PNG figures are written, readable and non-empty; the numpy-SVD PCA is correct."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from btrans_verl.eval.metrics import SamplingSettings
from btrans_verl.eval.plots import pca_2d, plot_embedding_map, plot_pass_at_k, settings_summary

BT = SamplingSettings("B-Trans minds", n=16, sigma=0.3, temperature=0.0, seed=0)
TEMP = SamplingSettings("temperature", n=16, sigma=0.0, temperature=1.0, seed=0)


def _check_png(path):
    assert path.exists() and path.stat().st_size > 0
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)
    assert float(np.std(img[..., :3])) > 0          # not a blank canvas
    return img


def test_pass_at_k_png_is_written_and_readable(tmp_path):
    curves = {BT: {1: 0.30, 2: 0.45, 4: 0.58, 8: 0.67, 16: 0.74},
              TEMP: {1: 0.32, 2: 0.42, 4: 0.50, 8: 0.56, 16: 0.60}}
    out = plot_pass_at_k(curves, tmp_path / "sub" / "pass_at_k.png", num_problems=50)
    assert out == tmp_path / "sub" / "pass_at_k.png"
    _check_png(out)


def test_embedding_map_png_is_written_and_readable(tmp_path):
    rng = np.random.default_rng(0)
    embs = {BT: rng.normal(size=(40, 384)), TEMP: rng.normal(loc=0.5, size=(30, 384))}
    _check_png(plot_embedding_map(embs, tmp_path / "map.png"))


def test_plot_inputs_are_validated(tmp_path):
    with pytest.raises(ValueError):
        plot_pass_at_k({}, tmp_path / "x.png")
    with pytest.raises(ValueError):
        plot_embedding_map({BT: np.zeros((3, 4)), TEMP: np.zeros((3, 5))}, tmp_path / "y.png")


def test_title_states_shared_settings():
    assert settings_summary([BT, TEMP]) == "n=16, σ per method, T per method, seed=0"
    assert BT.label() == "B-Trans minds (n=16, σ=0.3, T=0, seed=0)"


def test_pca_matches_covariance_eigendecomposition():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 6)) @ np.diag([5.0, 2.0, 1.0, 0.5, 0.1, 0.1]) + 3.0
    coords, ratio = pca_2d(x)
    xc = x - x.mean(axis=0)
    w, v = np.linalg.eigh(np.cov(xc.T))
    order = np.argsort(w)[::-1]
    for i in range(2):
        axis = v[:, order[i]]
        axis = axis if axis[np.argmax(np.abs(axis))] > 0 else -axis
        assert np.allclose(coords[:, i], xc @ axis, atol=1e-8)
        assert ratio[i] == pytest.approx(w[order[i]] / w.sum())
    assert np.allclose(coords.mean(axis=0), 0.0, atol=1e-9)


def test_pca_degenerate_inputs():
    line = np.outer(np.arange(5.0), [1.0, 2.0, 2.0])      # rank 1
    coords, ratio = pca_2d(line)
    assert ratio == pytest.approx([1.0, 0.0], abs=1e-12)
    assert np.allclose(np.abs(coords[:, 0]), 3.0 * np.abs(np.arange(5.0) - 2.0))
    coords, ratio = pca_2d(np.ones((4, 3)))                # no variance at all
    assert np.all(coords == 0) and np.all(ratio == 0)
    assert pca_2d(np.array([[1.0, 2.0]]))[0].shape == (1, 2)

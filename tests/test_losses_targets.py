"""The separable target builder ``losses.landmark_targets`` against the 2-D route and the official golden."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax import layout, losses
from hybridjax.train import steps

HEIGHT, WIDTH = 24, 40  # non-square on purpose: a swapped axis would not go unnoticed


def _landmarks(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``[T=3, B=2, J, 2]`` (u, v): every border row/column pair, fractional, missing and out-of-range joints."""
    rng = np.random.default_rng(seed)
    edges_v = [0, 1, height - 2, height - 1]
    edges_u = [0, 1, width - 2, width - 1]
    border = [(u + f, v + g) for u in edges_u for v in edges_v for f, g in ((0.0, 0.0), (0.99, 0.5))]
    special = [
        (np.nan, 3.0), (3.0, np.nan), (np.nan, np.nan),  # missing
        (-0.5, 4.0), (4.0, -0.5), (width, 2.0), (2.0, height), (width + 7.3, 1.0), (np.inf, 2.0),  # outside
        (width - 1e-3, height - 1e-3),  # just inside: pixel (H-1, W-1)
    ]
    fixed = np.array(border + special)  # [J, 2]
    out = np.empty((3, 2) + fixed.shape)
    for t in range(3):
        for b in range(2):
            joints = fixed.copy()
            # Half of the regular joints moved to random positions (still including the specials).
            moved = rng.random(len(border)) < 0.5
            joints[: len(border)][moved] = rng.uniform([0, 0], [width, height], size=(int(moved.sum()), 2))
            out[t, b] = joints
    return out


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _two_d_route(landmarks, height, width, dtype, sigma=losses.BLUR_SIGMA, taps=losses.BLUR_TAPS):
    return losses.gaussian_targets(losses.landmarks_to_onehot(landmarks, height, width, dtype), sigma, taps)


_separable = jax.jit(losses.landmark_targets, static_argnums=(1, 2, 3, 4, 5))


def test_landmark_targets_equal_blurred_onehot_float64():
    lm = _landmarks(HEIGHT, WIDTH)
    with jax.enable_x64(True):
        got = _separable(jnp.asarray(lm), HEIGHT, WIDTH, losses.BLUR_SIGMA, losses.BLUR_TAPS, jnp.float64)
        want = _two_d_route(jnp.asarray(lm), HEIGHT, WIDTH, jnp.float64)
        assert got.dtype == jnp.float64
        got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape == (3, 2, HEIGHT, WIDTH, lm.shape[2])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # Missing/outside joints give all-zero maps; present ones have maximum exactly 1.
    present = np.isfinite(lm).all(-1) & (lm[..., 0] >= 0) & (lm[..., 0] < WIDTH) & (lm[..., 1] >= 0) & (
        lm[..., 1] < HEIGHT)
    assert not present.all() and present.any()
    assert np.all(got.max(axis=(2, 3))[~present] == 0.0)
    peak = got.max(axis=(2, 3))
    np.testing.assert_allclose(peak[present], 1.0, rtol=0, atol=1e-15)
    # Away from the border the peak sits on the truncated pixel. Within 2 pixels of a border it does not:
    # reflect padding (no edge repeat) folds the Gaussian back, e.g. a one at row 1 gives row 0 the weight
    # 2 k(1) > k(0) + k(2) (unnormalised k(x) = exp(-x^2 / 8)), as in the official targets.
    rows, cols = (np.where(present, lm[..., i], 0).astype(int) for i in (1, 0))
    interior = present & (rows >= 3) & (rows <= HEIGHT - 4) & (cols >= 3) & (cols <= WIDTH - 4)
    assert interior.any()
    t, b, j = np.nonzero(interior)
    np.testing.assert_allclose(got[t, b, rows[interior], cols[interior], j], 1.0, rtol=0, atol=1e-15)
    t, b, j = np.nonzero(present & (rows == 1) & (cols >= 3) & (cols <= WIDTH - 4))
    assert len(t)
    np.testing.assert_allclose(got[t, b, 0, cols[t, b, j], j], 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(got[t, b, 1, cols[t, b, j], j], (1 + np.exp(-1 / 2)) / (2 * np.exp(-1 / 8)), rtol=1e-12)


@pytest.mark.parametrize("height,width", [(HEIGHT, WIDTH), (32, 16)])
def test_landmark_targets_equal_blurred_onehot_float32(height, width):
    lm = jnp.asarray(_landmarks(height, width, seed=1), jnp.float32)
    got = _separable(lm, height, width, losses.BLUR_SIGMA, losses.BLUR_TAPS, jnp.float32)
    want = _two_d_route(lm, height, width, jnp.float32)
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_landmark_targets_other_kernel_and_leading_axes():
    """Sigma/taps are passed through; any number of leading axes (here none and one)."""
    lm = _landmarks(HEIGHT, WIDTH, seed=2)[0, 0]  # [J, 2]
    with jax.enable_x64(True):
        for shape in (lm.shape, (1,) + lm.shape):
            x = jnp.asarray(lm.reshape(shape))
            got = _separable(x, HEIGHT, WIDTH, 1.3, 7, jnp.float64)
            want = _two_d_route(x, HEIGHT, WIDTH, jnp.float64, 1.3, 7)
            assert got.shape == shape[:-2] + (HEIGHT, WIDTH, lm.shape[0])
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-12)


def test_heatmap_targets_use_the_grid_and_match_the_2d_route():
    lm = jnp.asarray(_landmarks(256, 256, seed=3), jnp.float32)
    got = jax.jit(steps.heatmap_targets, static_argnums=(1, 2, 3))(lm, 32, 32, 8)
    want = _two_d_route(jnp.floor(lm / 8), 32, 32, jnp.float32)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-6)


def test_landmark_targets_match_official_golden(shared_dir):
    g = np.load(shared_dir / "reference" / "golden" / "heatmap_targets.npz")
    labels = layout.from_official_image(g["labels"])  # [B, H, W, J] one-hot maps
    b, height, width, j = labels.shape
    flat = labels.reshape(b, height * width, j)
    row, col = np.divmod(flat.argmax(axis=1), width)  # [B, J]
    landmarks = np.stack([col, row], axis=-1).astype(np.float64)
    landmarks[flat.max(axis=1) == 0] = np.nan
    assert np.isnan(landmarks).any()  # the golden includes missing joints
    with jax.enable_x64(True):
        # The recovered landmarks re-encode to the golden one-hot maps exactly.
        np.testing.assert_array_equal(
            np.asarray(losses.landmarks_to_onehot(jnp.asarray(landmarks), height, width, jnp.float64)), labels)
        got = np.asarray(_separable(jnp.asarray(landmarks), height, width, losses.BLUR_SIGMA, losses.BLUR_TAPS,
                                    jnp.float64))
    np.testing.assert_allclose(got, layout.from_official_image(g["targets"]), rtol=0, atol=1e-12)

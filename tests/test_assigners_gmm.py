"""PAA's two-component mixture (model/assigners/gmm.py) against scikit-learn's GaussianMixture."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from atssrepro.model.assigners.gmm import fit_two_gaussians, predict_and_score

mixture = pytest.importorskip("sklearn.mixture", reason="scikit-learn (the dev extra) is the reference")


def sklearn_fit(values: np.ndarray):
    """GaussianMixture as mmdetection's PAAHead calls it, on float32 losses sorted ascending."""
    x = np.sort(values.astype(np.float32)).reshape(-1, 1)
    gmm = mixture.GaussianMixture(
        2,
        weights_init=np.array([0.5, 0.5]),
        means_init=np.array([x.min(), x.max()]).reshape(2, 1),
        precisions_init=np.array([1.0, 1.0]).reshape(2, 1),
        covariance_type="diag",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on rows that reach max_iter
        gmm.fit(x)
    return x[:, 0], gmm


def random_rows(seed: int, rows: int, width: int = 45) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss-like rows: a low and a high cluster of random sizes and spreads, 2..width samples each."""
    rng = np.random.default_rng(seed)
    values = np.zeros((rows, width), dtype=np.float32)
    valid = np.zeros((rows, width), dtype=bool)
    for r in range(rows):
        n = int(rng.integers(2, width + 1))
        low = int(rng.integers(0, n + 1))
        sample = np.concatenate(
            [
                rng.gamma(2.0, rng.uniform(0.05, 0.5), low),
                rng.uniform(0.5, 3.0) + rng.gamma(2.0, rng.uniform(0.1, 1.0), n - low),
            ]
        )
        values[r, :n] = np.sort(sample)
        valid[r, :n] = True
    return torch.from_numpy(values), torch.from_numpy(valid)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_fit_iterations_labels_and_scores_as_sklearn(seed):
    values, valid = random_rows(seed, rows=60)
    fitted, iterations = fit_two_gaussians(values, valid)
    component, score = predict_and_score(fitted, values)
    assert torch.isfinite(score[valid]).all()
    compared = 0
    for r in range(len(values)):
        n = int(valid[r].sum())
        try:
            x, gmm = sklearn_fit(values[r, :n].numpy())
        except (
            ValueError
        ):  # a component collapsed on one sample whose float32 square rounds down: see fit_two_gaussians
            continue
        compared += 1
        assert iterations[r].item() == gmm.n_iter_
        np.testing.assert_allclose(fitted.weights[r].numpy(), gmm.weights_, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fitted.means[r].numpy(), gmm.means_[:, 0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fitted.precisions_chol[r].numpy(), gmm.precisions_cholesky_[:, 0], rtol=1e-7)
        assert component[r, :n].tolist() == gmm.predict(x[:, None]).tolist()
        np.testing.assert_allclose(score[r, :n].numpy(), gmm.score_samples(x[:, None]), rtol=1e-9, atol=1e-9)
    assert compared >= 0.8 * len(values)


def test_rows_with_fewer_than_two_samples_are_not_fitted():
    values = torch.tensor([[0.3, 0.0, 0.0], [0.1, 0.2, 5.0]])
    valid = torch.tensor([[True, False, False], [True, True, True]])
    fitted, iterations = fit_two_gaussians(values, valid)
    assert iterations[0].item() == 0 and iterations[1].item() > 0
    assert fitted.weights[0].tolist() == [0.5, 0.5]


def test_equal_samples_do_not_break_the_fit():
    # scikit-learn can raise here (a variance <= 0 by rounding); the fit stays finite.
    values = torch.full((1, 5), 12.5)
    fitted, _ = fit_two_gaussians(values, torch.ones(1, 5, dtype=torch.bool))
    component, score = predict_and_score(fitted, values)
    assert torch.isfinite(score).all() and torch.isfinite(fitted.precisions_chol).all()


def test_the_assigners_do_not_import_sklearn():
    code = "import sys, atssrepro.model.assigners; sys.exit('sklearn' in sys.modules or 'scipy' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0

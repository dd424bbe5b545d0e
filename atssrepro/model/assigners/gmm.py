"""A two-component 1-D Gaussian mixture fitted by EM, one mixture per row of a batch.

This is scikit-learn's ``GaussianMixture(2, covariance_type="diag", weights_init=[0.5, 0.5],
means_init=[[min], [max]], precisions_init=[[1], [1]])`` as PAA's reference calls it on float32
losses, step for step: the same E and M steps, ``reg_covar`` 1e-6, the same stopping test (the
change of the mean per-sample log-likelihood below ``tol``, checked after each M step) and
``max_iter``, each row stopping at its own iteration. Its arithmetic is float64, except that, as
scikit-learn on float32 input, squares of the samples and of the initial means are rounded to
float32 first. scikit-learn itself is not needed (nor imported) here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2 * math.pi)
WEIGHT_EPS = 10 * torch.finfo(torch.float64).eps
"""Added to each component's total responsibility (scikit-learn's ``10 * eps``)."""


@dataclass(frozen=True)
class TwoGaussians:
    """Mixtures of two 1-D Gaussians, one per row: each field [M, 2] float64.

    ``means_sq`` is the square of ``means`` as scikit-learn forms it (float32 for the initial means).
    """

    weights: torch.Tensor
    means: torch.Tensor
    precisions_chol: torch.Tensor
    means_sq: torch.Tensor

    def weighted_log_prob(self, x: torch.Tensor, x_sq: torch.Tensor) -> torch.Tensor:
        """log p(x | component) + log weight: x and x_sq [M, K] float64 -> [M, K, 2]."""
        precisions = self.precisions_chol**2
        x, x_sq = x[..., None], x_sq[..., None]
        quadratic = (self.means_sq * precisions)[:, None] - 2.0 * (x * (self.means * precisions)[:, None])
        quadratic = quadratic + x_sq * precisions[:, None]
        log_prob = -0.5 * (LOG_2PI + quadratic) + torch.log(self.precisions_chol)[:, None]
        return log_prob + torch.log(self.weights)[:, None]


def _logsumexp2(values: torch.Tensor) -> torch.Tensor:
    """log(exp(a) + exp(b)) over the last dimension of size 2, as scikit-learn's ``_logsumexp``."""
    a, b = values.unbind(-1)
    high, low = torch.maximum(a, b), torch.minimum(a, b)
    equal = a == b
    return torch.where(equal, math.log(2) + high, torch.log1p(torch.where(equal, 0.0, torch.exp(low - high))) + high)


def _samples(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.float()
    return x.double(), (x * x).double()


def fit_two_gaussians(
    x: torch.Tensor, valid: torch.Tensor, *, tol: float = 1e-3, reg_covar: float = 1e-6, max_iter: int = 100
) -> tuple[TwoGaussians, torch.Tensor]:
    """Fit each row's mixture by EM from means (row min, row max), weights 0.5, precisions 1.

    Rows with fewer than 2 valid samples are left at that start (scikit-learn refuses them). Where
    scikit-learn would raise (a variance <= 0 by rounding, e.g. equal samples), the variance is
    ``reg_covar``. The loop runs until every row has stopped; it asks the device once per iteration
    whether any row is still running.

    Args:
        x: [M, K] float samples (float32 values, as PAA's losses); padding anywhere ``valid`` is False.
        valid: [M, K] bool.

    Returns:
        the mixtures, and [M] int64: the EM iterations of each row (0 for rows not fitted).
    """
    samples, samples_sq = _samples(x)
    weight = valid.double()
    count = weight.sum(dim=-1)
    low = x.float().masked_fill(~valid, float("inf")).amin(dim=-1)
    high = x.float().masked_fill(~valid, float("-inf")).amax(dim=-1)
    start_means = torch.stack([low, high], dim=-1).masked_fill(count[:, None] < 2, 0.0)  # [M, 2] float32
    mixture = TwoGaussians(
        weights=torch.full_like(start_means, 0.5, dtype=torch.float64),
        means=start_means.double(),
        precisions_chol=torch.ones_like(start_means, dtype=torch.float64),
        means_sq=(start_means * start_means).double(),
    )
    running = count >= 2
    lower_bound = torch.full_like(count, float("-inf"))
    iterations = torch.zeros_like(count, dtype=torch.long)
    for _ in range(max_iter):
        if not bool(running.any()):
            break
        weighted = mixture.weighted_log_prob(samples, samples_sq)  # E step
        log_norm = _logsumexp2(weighted)  # [M, K]
        resp = torch.exp(weighted - log_norm[..., None]) * weight[..., None]  # [M, K, 2]
        new_lower_bound = (log_norm * weight).sum(dim=-1) / count.clamp(min=1)

        totals = resp.sum(dim=1) + WEIGHT_EPS  # M step, [M, 2]
        means = (resp * samples[..., None]).sum(dim=1) / totals
        means_sq = means**2
        variances = (resp * samples_sq[..., None]).sum(dim=1) / totals - means_sq + reg_covar
        variances = torch.where(variances > 0, variances, reg_covar)
        update = running[:, None]
        mixture = TwoGaussians(
            weights=torch.where(update, totals / totals.sum(dim=-1, keepdim=True), mixture.weights),
            means=torch.where(update, means, mixture.means),
            precisions_chol=torch.where(update, 1.0 / torch.sqrt(variances), mixture.precisions_chol),
            means_sq=torch.where(update, means_sq, mixture.means_sq),
        )
        iterations += running.long()
        change = new_lower_bound - lower_bound
        lower_bound = torch.where(running, new_lower_bound, lower_bound)
        running = running & ~(change.abs() < tol)
    return mixture, iterations


def predict_and_score(mixture: TwoGaussians, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's ``predict`` and ``score_samples``.

    Args:
        x: [M, K] float samples.

    Returns:
        component [M, K] int64 (the more likely one, component 0 on a tie) and log-likelihood [M, K] float64.
    """
    weighted = mixture.weighted_log_prob(*_samples(x))
    return (weighted[..., 1] > weighted[..., 0]).long(), _logsumexp2(weighted)

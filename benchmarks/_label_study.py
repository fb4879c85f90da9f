"""The candidate rankings of benchmarks/label_ranking_study.py (issue 26 item 2): what moves label-error
detection beyond the default ``combined`` ranking, measured on the label-noise benchmark's five settings.

Every score is LARGER = MORE SUSPECT. The Gaussians are those of docs/design.md 1.2 (class means, one shared
within-class covariance, ridge eps * trace(W) / d as in ``CovarianceConfig(shrinkage="ridge")``), fitted
here in the eigenbasis of the within-class scatter W = V diag(w) V^T, so that any ridge costs O(N d K)
and the leave-one-out formulas need no refactorisation. With D_k = MD(x, k) - q(x) (q cancels, docs/design.md
1.13) and the MD_0 gain g^T C^-1 g:

- rmd = D_y + gain, margin = D_y - min_{k != y} D_k, combined = their rank average (the library's);
- the tempered Gaussian posterior: -log p(y | x) with p(k | x) proportional to pi_k exp(-D_k / 2T), T a
  multiple of the median |margin| (a generative classifier's self-confidence, no training);
- the noise-aware posterior: -log p(true class = y | x, given label y) under a noise transition
  T_kj = p(given j | true k) estimated by EM from those posteriors (the posteriors held fixed), so that
  plausible confusions (cat <-> dog) weigh more than implausible ones;
- class-wise ranks: each score ranked within its given class before the rank average;
- leave-one-out: each sample removed from its class mean, the within scatter, the global mean and the
  total scatter (exact Sherman-Morrison updates, same ridge);
- a trimmed refit: the top fraction by ``combined`` left out of a second fit, every sample then scored out
  of sample (left-out ones as they are, kept ones by leave-one-out);
- a label-noise EM refit: soft class memberships r_ik ~ p(k | x) T_{k, y}, the means and the within scatter
  (total scatter minus the soft between scatter) refitted from them.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import rankdata

# name -> feature transform applied before the fit (the features are ReLU6 averages: >= 0, many exact zeros)
TRANSFORMS = {
    "raw": lambda x: x,
    "sqrt": np.sqrt,
    "x^0.25": lambda x: x ** 0.25,
    "log1p": np.log1p,
    "l2-normalised": lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12),
    "sqrt, l2-normalised": lambda x: TRANSFORMS["l2-normalised"](np.sqrt(x)),
    "standardised": lambda x: (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6),
}


class WithinEigen:
    """Shared-covariance Gaussians fitted on the rows ``keep`` (all by default), every row expressed in the
    eigenbasis of the within-class scatter."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, n_classes: int, keep: np.ndarray | None = None):
        x = np.asarray(features, dtype=np.float64)
        keep = np.ones(len(labels), dtype=bool) if keep is None else keep
        self.labels, self.n_classes, self.d = labels, n_classes, x.shape[1]
        xs, ys = x[keep], labels[keep]
        self.n_fit = int(keep.sum())
        self.counts = np.bincount(ys, minlength=n_classes).astype(np.float64)
        means = np.stack([xs[ys == k].mean(axis=0) for k in range(n_classes)])
        mu0 = xs.mean(axis=0)
        residuals = xs - means[ys]
        scatter = residuals.T @ residuals
        self.trace = float(np.trace(scatter))
        self.eigenvalues, vectors = np.linalg.eigh(scatter)
        self.rows = (x - mu0) @ vectors  # f - mu_0 for every row, fitted or not
        self.means = (means - mu0) @ vectors  # m_k - mu_0
        self.residuals = self.rows - self.means[labels]  # f - m_y

    def _ridged(self, eps: float) -> np.ndarray:
        return self.eigenvalues + eps * self.trace / self.d

    def parts(self, eps: float) -> tuple[np.ndarray, np.ndarray]:
        """D (N, K) = MD(x, k) - q(x) and the MD_0 gain g^T C^-1 g (N,), Sigma = (W + ridge) / N_fit."""
        precision = self.n_fit / self._ridged(eps)
        solved = (self.means * precision).T  # Sigma^-1 (m - mu_0)^T, (d, K)
        coordinates = self.rows @ solved
        between = self.means @ solved
        distances = -2.0 * coordinates + np.diag(between)
        root = np.sqrt(self.counts / self.n_fit)
        g = coordinates * root
        c = np.eye(self.n_classes) + root[:, None] * between * root[None, :]
        return distances, np.einsum("ij,ij->i", g, np.linalg.solve(c, g.T).T)

    def out_of_sample(self, eps: float, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MD (N, K) and MD_0 (N,) with every sample out of sample: rows not in the fit as they are, rows in
        it by the exact leave-one-out updates (the ridge held fixed)."""
        a = self._ridged(eps)
        scaled = self.means / a
        h = np.einsum("ij,ij->i", self.residuals, self.residuals / a)  # r^T A^-1 r
        q = self.residuals @ scaled.T  # r^T A^-1 (m_k - mu_0)
        quad = np.einsum("ij,ij->i", self.rows, self.rows / a)
        cross = self.rows @ scaled.T
        between = self.means @ scaled.T
        md = quad[:, None] - 2.0 * cross + np.diag(between)  # (f - m_k)^T A^-1 (f - m_k)
        root = np.sqrt(self.counts)
        u = cross * root
        c = np.eye(self.n_classes) + root[:, None] * between * root[None, :]
        md0 = quad - np.einsum("ij,ij->i", u, np.linalg.solve(c, u.T).T)  # Woodbury on the total scatter
        rows = np.flatnonzero(keep)
        y = self.labels[rows]
        shrink = self.counts[y] / (self.counts[y] - 1.0)
        denominator = 1.0 - shrink * h[rows]
        own_q = q[rows, y]
        out = md[rows] + shrink[:, None] * (h[rows, None] + own_q[:, None] - q[rows]) ** 2 / denominator[:, None]
        out[np.arange(len(rows)), y] = shrink**2 * h[rows] / denominator
        total = self.n_fit / (self.n_fit - 1.0)
        loo0 = total**2 * md0[rows] / (1.0 - total * md0[rows])
        md, md0 = md * self.n_fit, md0 * self.n_fit
        md[rows], md0[rows] = out * (self.n_fit - 1), loo0 * (self.n_fit - 1)
        return md, md0


def own(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return distances[np.arange(len(labels)), labels]


def margin_of(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    others = distances.copy()
    others[np.arange(len(labels)), labels] = np.inf
    return own(distances, labels) - others.min(axis=1)


def log_posterior(distances: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """log p(k | x) (N, K) of the tempered Gaussian classifier, priors the given-label frequencies."""
    prior = np.bincount(labels, minlength=distances.shape[1]) / len(labels)
    logits = -distances / (2.0 * temperature) + np.log(np.maximum(prior, 1e-12))
    return logits - logsumexp(logits, axis=1, keepdims=True)


def noise_transition(log_post: np.ndarray, labels: np.ndarray, *, iterations: int = 30) -> np.ndarray:
    """T_kj = p(given j | true k) by EM with the posteriors fixed, from T = 0.8 I + 0.2 / (K - 1) off it."""
    k = log_post.shape[1]
    post, onehot = np.exp(log_post), np.eye(k)[labels]
    transition = np.full((k, k), 0.2 / (k - 1))
    np.fill_diagonal(transition, 0.8)
    for _ in range(iterations):
        joint = post * transition[:, labels].T
        joint /= joint.sum(axis=1, keepdims=True)
        transition = joint.T @ onehot / np.maximum(joint.sum(axis=0), 1e-12)[:, None]
    return np.maximum(transition, 1e-12)


def noise_aware(distances: np.ndarray, labels: np.ndarray, temperature: float) -> np.ndarray:
    """-log p(true = given | x, given) under the EM transition (module docstring)."""
    log_post = log_posterior(distances, labels, temperature)
    joint = log_post + np.log(noise_transition(log_post, labels)[:, labels].T)
    return logsumexp(joint, axis=1) - own(joint, labels)


def classwise_ranks(score: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each score's rank among the samples of its given class, over that class's size."""
    out = np.empty(len(score))
    for k in np.unique(labels):
        members = labels == k
        out[members] = rankdata(score[members]) / members.sum()
    return out


def weighted_ranks(*pairs: tuple[float, np.ndarray]) -> np.ndarray:
    return sum(w * rankdata(s) for w, s in pairs) / len(pairs[0][1])


def label_noise_em(features: np.ndarray, labels: np.ndarray, n_classes: int, eps: float, *,
                   iterations: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """(D, gain) after ``iterations`` EM steps of soft memberships r_ik ~ p(k | x) T_{k, y}: means and within
    scatter (total minus soft between scatter) refitted from r, T re-estimated, the ridge of the first fit."""
    from scipy.linalg import cho_factor, cho_solve

    x = np.asarray(features, dtype=np.float64)
    n, d = x.shape
    centred = x - x.mean(axis=0)
    total = centred.T @ centred
    memberships, onehot = np.eye(n_classes)[labels], np.eye(n_classes)[labels]
    transition, ridge = None, None
    for step in range(iterations + 1):
        counts = memberships.sum(axis=0)
        means = memberships.T @ centred / counts[:, None]
        within = total - (means.T * counts) @ means
        ridge = eps * np.trace(within) / d if ridge is None else ridge
        within[np.diag_indices(d)] += ridge
        solved = n * cho_solve(cho_factor(within), means.T)
        coordinates, between = centred @ solved, means @ solved
        distances = -2.0 * coordinates + np.diag(between)
        root = np.sqrt(counts / n)
        g = coordinates * root
        c = np.eye(n_classes) + root[:, None] * between * root[None, :]
        gain = np.einsum("ij,ij->i", g, np.linalg.solve(c, g.T).T)
        if step == iterations:
            return distances, gain
        log_post = log_posterior(distances, labels, temperature)
        if transition is None:  # 10% noise spread evenly, the EM's start
            transition = np.full((n_classes, n_classes), 0.1 / (n_classes - 1))
            np.fill_diagonal(transition, 0.9)
        joint = np.exp(log_post) * transition[:, labels].T
        memberships = joint / joint.sum(axis=1, keepdims=True)
        transition = np.maximum(memberships.T @ onehot / memberships.sum(axis=0)[:, None], 1e-12)
    raise AssertionError("unreachable")

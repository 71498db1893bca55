"""Covariance families: one object per ``covariance_type``.

Everything that depends on the shape of a component's covariance lives in
one class here, behind the :class:`Covariance` protocol: the Pyro prior site
and the observation distribution, the closed-form log prior, the component
log-density pieces, the second-moment statistics and the MAP M-step, the
parameter count, the change of units, fitted-array checks and the covariance
matrix a plot draws (sampling goes through the Pyro model and the family's
observation distribution).  Nothing outside this module branches on the
type; other modules read only the protocol's flags (``per_component``:
whether the value has a component dimension; ``isotropic``: whether the
internal standardisation must use one scale for all features) and
``prior_fields``.

The parameter each family stores (the value of its Pyro site, shapes per
mixture; a batch of mixtures adds leading dimensions):

============  ==============  ================  =========================================
type          site            shape             prior (in the model's units)
============  ==============  ================  =========================================
``diag``      ``scales``      (K, D)            InverseGamma(a, b_d) on each standard deviation
``spherical`` ``scales``      (K,)              InverseGamma(a, b) on one standard deviation
``full``      ``precisions``  (K, D, D)         Wishart(nu, Psi^-1) on each precision matrix
``tied``      ``precision``   (D, D)            Wishart(nu, Psi^-1) on the shared precision
============  ==============  ================  =========================================

Why a Wishart on the precision for ``full`` and ``tied``: it is conjugate to
the Gaussian likelihood, so the MAP M-step is closed form,
``Sigma = (Psi + S_k) / (nu - D - 1 + N_k)``, and it is positive definite for
any responsibility mass (an empty component gets ``Psi / (nu - D - 1)``), so
the MAP exists for every data set.  ``Psi`` is resolved from the data
(2 x the within-cluster variance of a k-means++ seeding, per feature: one
point's worth at twice a typical component's variance) and maps exactly under the affine change of
units, so results are unit-free.  The alternative, InverseGamma scales with
an ``LKJCholesky`` correlation, has no closed-form M-step: every EM iteration
would need an inner numerical optimisation.  The diagonal and spherical
families keep the InverseGamma on the standard deviation of the first
release; with one feature ``full`` falls back to the diagonal model (see
:func:`get`), so 1-D fits with the default type are unchanged.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from . import _pyro  # noqa: F401  (Pyro imported without tqdm's notebook warning)
import pyro.distributions as dist
from torch.distributions import constraints

from ._options import COVARIANCE_TYPES, CovarianceType  # noqa: E402,F401 (re-exported)


# ----------------------------------------------------------------------------
# Shared closed forms
# ----------------------------------------------------------------------------
def _inverse_gamma_log_prob(x: torch.Tensor, shape: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Elementwise log InverseGamma(x | shape, rate), closed form (building
    torch distributions every EM iteration costs more than the arithmetic)."""
    return shape * torch.log(rate) - torch.lgamma(shape) - (shape + 1) * torch.log(x) - rate / x


def sum_features(t: torch.Tensor) -> torch.Tensor:
    """sum_d t_d over the features, dim -2 of (..., D, n) -> (..., n), as a
    matrix product: ``.sum(-2)`` over that small middle dimension ran 1.4-3.6x
    slower on the CPU ((20, 9, D, 512) float32, one thread: 71 against 27 us
    at D = 2, 112 against 79 us at D = 5)."""
    return (t.new_ones(1, t.shape[-2]) @ t).squeeze(-2)


def _inverse_gamma_root(a: torch.Tensor, b: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """The positive root s of a s^2 - b s - S = 0: the stationary point in s
    of an InverseGamma(shape, b) prior (a = shape + 1 + n) times n Gaussian
    terms with squared deviations S.  Written as h + sqrt(h^2 + S/a), h =
    b / 2a: the textbook form squares b and multiplies a by S, which leaves
    float32's range once the weight behind a component passes ~1e19; the
    square root as hypot(h, sqrt(S / a)), since h^2 and S/a underflow in
    float32 (a ~1e23 halved the root of S = 0, b/a, to h)."""
    h = b / (2 * a)
    return h + torch.hypot(h, torch.sqrt(S.clamp_min(0)) / torch.sqrt(a))


def _wishart_log_prob(prec: torch.Tensor, logdet_prec: torch.Tensor, dof: torch.Tensor,
                      psi: torch.Tensor, logdet_psi: torch.Tensor) -> torch.Tensor:
    """log Wishart(prec | dof, covariance Psi^-1), closed form, batched over
    the leading dimensions of ``prec`` (..., D, D)."""
    D = prec.shape[-1]
    trace = (psi * prec).sum((-1, -2))            # tr(Psi prec), both symmetric
    return (0.5 * (dof - D - 1) * logdet_prec - 0.5 * trace - 0.5 * dof * D * math.log(2.0)
            + 0.5 * dof * logdet_psi - torch.mvlgamma(0.5 * dof, D))


def _solve_shift(Nk: torch.Tensor, S1: torch.Tensor, prec: torch.Tensor, prior_prec: torch.Tensor,
                 prior_shift: torch.Tensor) -> torch.Tensor:
    """Mean update given a precision, as a shift from the statistics'
    reference point (exact in float32 for narrow, off-centre components):
    (N_k Lambda + Lambda_0)^-1 (Lambda S1 + Lambda_0 (m_0 - ref)), with
    Lambda_0 = diag(prior_prec).  ``prec`` (..., K, D, D) or (..., K, D)
    (diagonal; then ``Nk`` may be per feature, (..., K, D): the counts of
    a feature's observed entries, variational Bayes with missing values)."""
    # A prior mean known to ~1e-20 of the data's spread (a constant feature
    # beside others, under one common scale) has a precision beyond float32:
    # capped, it still pins that mean where an infinity would give inf/inf.
    prior_prec = prior_prec.clamp_max(torch.finfo(prior_prec.dtype).max / 1e6)
    if prec.dim() == S1.dim():      # diagonal precision, elementwise
        N = Nk if Nk.dim() == S1.dim() else Nk.unsqueeze(-1)
        return (prec * S1 + prior_prec * prior_shift) / (N * prec + prior_prec)
    A = Nk[..., None, None] * prec + torch.diag_embed(prior_prec).expand_as(prec)
    rhs = (prec @ S1.unsqueeze(-1)).squeeze(-1) + prior_prec * prior_shift
    # A system singular in the fit's precision (float32, a precision of
    # condition ~1e13) gives NaN means, which the fit's guard turns into
    # its error naming dtype="float64" (torch's own LinAlgError came from
    # deep inside: from a property test).
    shift, info = torch.linalg.solve_ex(A, rhs)
    return torch.where((info == 0).unsqueeze(-1), shift, torch.full_like(shift, math.nan))


def _symmetrize(M: torch.Tensor) -> torch.Tensor:
    return 0.5 * (M + M.transpose(-1, -2))


def _chol(M: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor; NaN (not an exception) where ``M`` is not
    positive definite, so that a diverged restart is dropped by the
    finiteness checks of the callers rather than raising from deep in torch.
    On the CPU the substitution is skipped when every factor is good (the
    common case); on an accelerator it is unconditional, as asking would
    wait for the device (a host sync per factorisation inside EM's loop)."""
    L, info = torch.linalg.cholesky_ex(M)
    bad = (info > 0)[..., None, None]
    if L.device.type == "cpu" and not bool(bad.any()):
        return L
    return torch.where(bad, torch.full_like(L, math.nan), L)


def observed_gaussian(cov: torch.Tensor, observed: torch.Tensor):
    """The Gaussian N(mu, Sigma) seen through a missingness pattern: for
    covariances ``cov`` (..., D, D) and ``observed`` (..., D) bool
    (broadcast against each other), returns

    * ``A`` (..., D, D): Sigma_oo^-1 embedded in the observed rows and
      columns, zero elsewhere, so that d^T A d is the Mahalanobis form of
      the observed coordinates of any difference d;
    * ``half_logdet`` (...): 0.5 log |Sigma_oo|;
    * ``n_obs`` (...): the number of observed coordinates.

    From these, log N(x_o | mu_o, Sigma_oo) = -(n_obs log 2 pi + 2
    half_logdet + d^T A d) / 2; the conditional mean of the missing
    coordinates is mu + Sigma A d (exact on the observed ones too: there it
    returns x), and their conditional covariance Sigma - Sigma A Sigma
    (zero on the observed rows and columns).  One Cholesky factor per
    pattern of the embedded matrix P Sigma P + (I - P), P the projector on
    the observed coordinates: its determinant is |Sigma_oo| and its inverse
    is Sigma_oo^-1 on the observed block, the identity elsewhere."""
    o = observed.to(cov.dtype)
    oo = o.unsqueeze(-1) * o.unsqueeze(-2)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    M = cov * oo + eye * (1 - o).unsqueeze(-1)
    L = _chol(M)
    A = torch.cholesky_inverse(L) * oo
    half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return A, half_logdet, o.sum(-1)


# ----------------------------------------------------------------------------
# The protocol
# ----------------------------------------------------------------------------
# Covariances a fitted model may hold: every marginal variance a normal
# float64 number (the fit refuses data whose variances are not).
MIN_VARIANCE = float(np.finfo(np.float64).tiny)
MAX_VARIANCE = 1e308


class Covariance:
    """One covariance family.  Instances are stateless and shared."""

    #: ``covariance_type`` string.
    name: str
    #: Name of the Pyro site (and of the parameter) this family adds.
    site: str
    #: Support of the site: AutoDelta and the fused SVI optimise in its
    #: unconstrained image (``transform_to(constraint)``).
    constraint: constraints.Constraint
    #: The :class:`~bayesgmm.Priors` fields of this family's site.
    prior_fields: tuple
    #: Whether the statistics need full (D, D) second moments per component.
    full_moments: bool
    #: Whether the value has a component dimension (False: shared by all).
    per_component: bool
    #: Whether the family is only invariant under one common scale for all
    #: features (so the internal standardisation must be isotropic).
    isotropic: bool = False
    #: Whether the precisions are diagonal (:meth:`feature_precisions`).
    diagonal_precision: bool = False

    # ---- shapes and counts
    def value_shape(self, K: int, D: int) -> tuple:
        raise NotImplementedError

    def covariance_shape(self, K: int, D: int) -> tuple:
        """Shape of scikit-learn's ``covariances_``: that of the value."""
        return self.value_shape(K, D)

    def n_parameters(self, K: int, D: int) -> int:
        """Free parameters of the covariances of a K-component mixture."""
        raise NotImplementedError

    def mixture_parameters(self, K: int, D: int) -> int:
        """Free parameters of a K-component mixture (weights, means and
        covariances): what BIC and AIC count."""
        return (K - 1) + K * D + self.n_parameters(K, D)

    # ---- priors (tensors in the model's units; see priors.PriorTensors)
    def prior(self, pt, K: int, batch: tuple = ()) -> dist.Distribution:
        """The prior distribution of the site, batch shape ``batch + (K,)``
        (per-component families) or ``batch`` (tied)."""
        raise NotImplementedError

    def log_prior(self, value: torch.Tensor, pt) -> torch.Tensor:
        """log prior density per component (..., K), or of the shared value
        (...) when the family has no component dimension."""
        raise NotImplementedError

    # ---- densities
    def precision_factor(self, value: torch.Tensor) -> torch.Tensor:
        """What :meth:`mahalanobis` needs: precisions (diagonal) or lower
        Cholesky factors of the precisions, per component (``(..., K, D)``,
        ``(..., K)`` or ``(..., K, D, D)``; tied is broadcast over K)."""
        raise NotImplementedError

    def half_log_det(self, factor: torch.Tensor, K: int) -> torch.Tensor:
        """0.5 log |Lambda_k| per component, (..., K)."""
        raise NotImplementedError

    def feature_precisions(self, factor: torch.Tensor, D: int) -> torch.Tensor:
        """Per-feature precisions (..., K, D) from :meth:`precision_factor`,
        for families whose precisions are diagonal (``diagonal_precision``
        true; the E-step's expanded route)."""
        raise NotImplementedError

    def mahalanobis(self, diff: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        """(x - mu_k)^T Lambda_k (x - mu_k) for ``diff`` (..., K, D, n) -> (..., K, n).

        The differences are laid out features before points, so every
        per-feature operation runs over a contiguous row of n values (the
        points-last layout made CPU matrix-vector products over D = 2 the
        bottleneck: 3x slower per EM step)."""
        raise NotImplementedError

    # ---- EM
    def moments(self, rd: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
        """Responsibility-weighted second moments about the reference:
        (..., K, D) (diagonal) or (..., K, D, D), from the weighted
        differences rd = r (x - ref) and the differences, both (..., K, D, n)."""
        if self.full_moments:
            return rd @ diff.transpose(-1, -2)
        return (rd * diff).sum(-1)

    def recentre(self, S2: torch.Tensor, S1: torch.Tensor, Nk: torch.Tensor,
                 shift: torch.Tensor) -> torch.Tensor:
        """Second moments about ref + shift from those about ref:
        S2 - d S1^T - S1 d^T + N_k d d^T (every term small when the shift is).
        Diagonal layouts take ``Nk`` per feature too, (..., K, D)."""
        if self.full_moments:
            cross = shift.unsqueeze(-1) * S1.unsqueeze(-2)
            return (S2 - cross - cross.transpose(-1, -2)
                    + Nk[..., None, None] * shift.unsqueeze(-1) * shift.unsqueeze(-2))
        N = Nk if Nk.dim() == S1.dim() else Nk.unsqueeze(-1)
        return S2 - 2 * shift * S1 + N * shift * shift

    def trace(self, value: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
        """tr(Lambda_k S_k) per component (..., K), from the site value and
        the second moments S in :meth:`moments`'s layout."""
        raise NotImplementedError

    def mean_shift(self, Nk, S1, value, pt, ref) -> torch.Tensor:
        """Conditional MAP of the means given the covariances, as a shift
        from the statistics' reference means ``ref``."""
        raise NotImplementedError

    def m_step(self, Nk: torch.Tensor, S: torch.Tensor, pt) -> torch.Tensor:
        """Conditional MAP of the site given the means (``S``: moments about
        the new means, per component)."""
        raise NotImplementedError

    # ---- conversions
    def to_units(self, value: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The value after x -> x * scale (scale (D,) per feature): used both
        ways (pass 1/scale to go back)."""
        raise NotImplementedError

    def log_jacobian(self, log_scale: np.ndarray, K: int) -> float:
        """log |d value(standardised) / d value(data units)| summed over the
        site (``log_scale``: log of the per-feature scale, data = scale x
        standardised): the site's contribution to the loss offset,
        loss(data units) - loss(standardised)."""
        raise NotImplementedError

    def covariances(self, value: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``covariances_`` from the value."""
        raise NotImplementedError

    def dense(self, value: torch.Tensor, K: int) -> torch.Tensor:
        """Covariance matrices (..., K, D, D) from the value, as tensors (the
        marginals and conditionals of points with missing features)."""
        raise NotImplementedError

    def from_covariances(self, cov: torch.Tensor) -> torch.Tensor:
        """The value from scikit-learn-shaped covariances."""
        raise NotImplementedError

    def precisions_cholesky(self, value: torch.Tensor) -> torch.Tensor:
        """scikit-learn's ``precisions_cholesky_``: the upper factor P with
        precision = P P^T (full/tied), or 1/std (diag/spherical)."""
        raise NotImplementedError

    def marginal_scales(self, cov: np.ndarray, K: int, D: int) -> np.ndarray:
        """Per-feature standard deviations (K, D) from ``covariances_``."""
        raise NotImplementedError

    def matrices(self, cov: np.ndarray, K: int, D: int) -> np.ndarray:
        """Full (K, D, D) covariance matrices from ``covariances_`` (plots, sampling)."""
        raise NotImplementedError

    def check_covariances(self, cov: np.ndarray, K: int, D: int,
                          dtype=np.float32) -> Optional[str]:
        """What is wrong with ``covariances_`` (scikit-learn's shape) for K
        components in D features, or None (loaded files are checked with it).

        Every marginal variance must be a normal float64 number (as the fit
        requires of the data's), and full matrices positive definite in their
        correlation form (scale-free: the eigenvalues of raw matrices with
        variances 1e-300 and 1e300 lose the small ones), with a Cholesky
        factor of their precision in ``dtype``, the fit's (float32 unless
        the model was fitted with ``dtype="float64"``).  Memory stays that of ``cov``: diagonal
        families are never expanded to matrices, a tied one is checked once."""
        if cov.shape != self.covariance_shape(K, D):
            return f"covariances_ has shape {cov.shape}, expected {self.covariance_shape(K, D)}"
        if not np.all(np.isfinite(cov)):
            return "covariances_ has non-finite entries"
        n = K if self.per_component else 1
        with np.errstate(invalid="ignore"):
            sd = self.marginal_scales(np.asarray(cov, dtype=np.float64), n, D)
        if np.any(np.isnan(sd)):
            return "covariances_ have negative variances"
        if not (np.all(sd >= math.sqrt(MIN_VARIANCE)) and np.all(sd <= math.sqrt(MAX_VARIANCE))):
            return (f"covariances_ have variances outside [{MIN_VARIANCE:.3g}, {MAX_VARIANCE:.0e}] "
                    f"(smallest {sd.min() ** 2:.3g}, largest {sd.max() ** 2:.3g})")
        if not self.full_moments:      # diagonal: positive variances are all it takes
            return None
        mats = self.matrices(np.asarray(cov, dtype=np.float64), n, D)
        with np.errstate(all="ignore"):   # huge off-diagonal entries: refused below
            corr = mats / sd[..., :, None] / sd[..., None, :]
        if not np.all(np.isfinite(corr)):
            return "covariances_ are not positive definite"
        if not np.allclose(corr, np.swapaxes(corr, -1, -2), rtol=0, atol=1e-8):
            return "covariances_ are not symmetric"
        try:
            np.linalg.cholesky(corr)
            # The precisions, scaled to unit diagonal, also need a float32
            # Cholesky factor: the fit and the predictions factor them in float32.
            with np.errstate(all="ignore"):
                prec = np.linalg.inv(corr)
                d = np.sqrt(np.diagonal(prec, axis1=-2, axis2=-1))
                unit = (prec / d[..., :, None] / d[..., None, :]).astype(dtype)
            if not np.all(np.isfinite(unit)):
                raise np.linalg.LinAlgError
            np.linalg.cholesky(unit)
        except np.linalg.LinAlgError:
            return (f"covariances_ are not positive definite (or too nearly singular for "
                    f"{np.dtype(dtype).name})")
        return None

    def neutral_like(self, value: torch.Tensor) -> torch.Tensor:
        """Unit covariances in the shape of ``value``."""
        return torch.ones_like(value)

    def identity(self, batch: tuple, K: int, D: int, dtype, device) -> torch.Tensor:
        """Unit covariances of batch shape ``batch``."""
        return self.neutral_like(torch.empty(batch + self.value_shape(K, D), dtype=dtype,
                                             device=device))

    def pad(self, value: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Padded components (``mask`` False, (..., K)) at unit covariances."""
        if not self.per_component:
            return value
        m = mask.reshape(mask.shape + (1,) * (value.dim() - mask.dim()))
        return torch.where(m, value, self.neutral_like(value))

    # ---- Pyro helpers
    def gather(self, value: torch.Tensor, *index) -> torch.Tensor:
        """The site value of the components picked by ``index`` (advanced
        indices over the leading dims; the last is the component)."""
        return value[index] if self.per_component else value[index[:-1]]

    def obs(self, loc: torch.Tensor, value: torch.Tensor) -> dist.Distribution:
        """The observation distribution of points with mean ``loc`` (..., D)
        and gathered site value."""
        raise NotImplementedError


# ----------------------------------------------------------------------------
# Diagonal and spherical: InverseGamma on standard deviations
# ----------------------------------------------------------------------------
class Diagonal(Covariance):
    name = "diag"
    site = "scales"
    constraint = constraints.positive
    prior_fields = ("scale_shape", "scale_rate")
    full_moments = False
    per_component = True
    diagonal_precision = True

    def value_shape(self, K, D):
        return (K, D)

    def n_parameters(self, K, D):
        return K * D

    def prior(self, pt, K, batch=()):
        D = pt.mean_loc.shape[-1]
        return dist.InverseGamma(pt.scale_shape, pt.scale_rate).expand(batch + (K, D)).to_event(1)

    def log_prior(self, value, pt):
        return _inverse_gamma_log_prob(value, pt.scale_shape, pt.scale_rate).sum(-1)

    def precision_factor(self, value):
        return value.pow(-2)

    def half_log_det(self, factor, K):
        return 0.5 * torch.log(factor).sum(-1)

    def feature_precisions(self, factor, D):
        return factor

    def mahalanobis(self, diff, factor):
        # The weighted sum over features as one product (see sum_features).
        return (factor.unsqueeze(-2) @ diff.square()).squeeze(-2)

    def trace(self, value, S):
        return (value.pow(-2) * S).sum(-1)

    def mean_shift(self, Nk, S1, value, pt, ref):
        return _solve_shift(Nk, S1, value.pow(-2), pt.mean_scale.pow(-2), pt.mean_loc - ref)

    def m_step(self, Nk, S, pt):
        return _inverse_gamma_root(pt.scale_shape + 1 + Nk.unsqueeze(-1), pt.scale_rate, S)

    def to_units(self, value, scale):
        return value * scale

    def log_jacobian(self, log_scale, K):
        return float(K * log_scale.sum())

    def covariances(self, value):
        return value * value

    def dense(self, value, K):
        return torch.diag_embed(value * value)

    def from_covariances(self, cov):
        return torch.sqrt(cov)

    def precisions_cholesky(self, value):
        return 1.0 / value

    def marginal_scales(self, cov, K, D):
        return np.sqrt(cov)

    def matrices(self, cov, K, D):
        return np.einsum("kd,de->kde", cov, np.eye(D))

    def obs(self, loc, value):
        return dist.Normal(loc, value).to_event(1)


class Spherical(Diagonal):
    name = "spherical"
    isotropic = True

    def __init__(self, n_features: int = 1):
        # The log-determinant D log(sigma) needs the number of features.
        self._D = n_features

    def value_shape(self, K, D):
        return (K,)

    def n_parameters(self, K, D):
        return K

    def prior(self, pt, K, batch=()):
        return dist.InverseGamma(pt.scale_shape, pt.scale_rate).expand(batch + (K,))

    def log_prior(self, value, pt):
        return _inverse_gamma_log_prob(value, pt.scale_shape, pt.scale_rate)

    def half_log_det(self, factor, K):
        return 0.5 * torch.log(factor) * self._D

    def feature_precisions(self, factor, D):
        return factor.unsqueeze(-1).expand(factor.shape + (D,))

    def mahalanobis(self, diff, factor):
        return sum_features(diff.square()) * factor.unsqueeze(-1)

    def trace(self, value, S):
        return value.pow(-2) * S.sum(-1)

    def mean_shift(self, Nk, S1, value, pt, ref):
        prec = value.pow(-2).unsqueeze(-1).expand_as(S1)
        return _solve_shift(Nk, S1, prec, pt.mean_scale.pow(-2), pt.mean_loc - ref)

    def m_step(self, Nk, S, pt):
        D = S.shape[-1]
        return _inverse_gamma_root(pt.scale_shape + 1 + D * Nk, pt.scale_rate, S.sum(-1))

    def to_units(self, value, scale):
        # The standardisation of a spherical family is isotropic (all
        # entries of scale equal), so any entry is the common factor.
        return value * scale[..., 0]

    def log_jacobian(self, log_scale, K):
        return float(K * log_scale[0])

    def dense(self, value, K):
        eye = torch.eye(self._D, dtype=value.dtype, device=value.device)
        return (value * value)[..., None, None] * eye

    def marginal_scales(self, cov, K, D):
        return np.repeat(np.sqrt(cov)[:, None], D, axis=1)

    def matrices(self, cov, K, D):
        return cov[:, None, None] * np.eye(D)

    def obs(self, loc, value):
        return dist.Normal(loc, value.unsqueeze(-1).expand(loc.shape)).to_event(1)


# ----------------------------------------------------------------------------
# Full and tied: Wishart on precision matrices
# ----------------------------------------------------------------------------
class Full(Covariance):
    name = "full"
    site = "precisions"
    constraint = constraints.positive_definite
    prior_fields = ("covariance_dof", "covariance_scale")
    full_moments = True
    per_component = True

    def value_shape(self, K, D):
        return (K, D, D)

    def n_parameters(self, K, D):
        return K * D * (D + 1) // 2

    def prior(self, pt, K, batch=()):
        return dist.Wishart(df=pt.dof, precision_matrix=pt.psi).expand(batch + (K,))

    def log_prior(self, value, pt):
        logdet = 2 * torch.log(torch.diagonal(_chol(value), dim1=-2, dim2=-1)).sum(-1)
        return _wishart_log_prob(value, logdet, pt.dof, pt.psi, pt.logdet_psi)

    def precision_factor(self, value):
        return _chol(value)

    def half_log_det(self, factor, K):
        h = torch.log(torch.diagonal(factor, dim1=-2, dim2=-1)).sum(-1)
        return h if self.per_component else h.unsqueeze(-1).expand(h.shape + (K,))

    def mahalanobis(self, diff, factor):
        if not self.per_component:
            factor = factor.unsqueeze(-3)
        # (x - mu)^T L L^T (x - mu) = |L^T (x - mu)|^2.
        z = factor.transpose(-1, -2) @ diff
        # Squared in place when no gradient is taken (z is a temporary).
        return sum_features(z.square() if z.requires_grad else z.square_())

    def trace(self, value, S):
        prec = value if self.per_component else value.unsqueeze(-3)
        return (prec * S).sum((-1, -2))

    def mean_shift(self, Nk, S1, value, pt, ref):
        prec = value if self.per_component else value.unsqueeze(-3).expand(S1.shape + S1.shape[-1:])
        return _solve_shift(Nk, S1, prec, pt.mean_scale.pow(-2), pt.mean_loc - ref)

    def m_step(self, Nk, S, pt):
        D = S.shape[-1]
        if not self.per_component:
            S, Nk = S.sum(-3), Nk.sum(-1)
        cov = (pt.psi + S) / (pt.dof - D - 1 + Nk)[..., None, None]
        return _symmetrize(torch.cholesky_inverse(_chol(_symmetrize(cov))))

    def to_units(self, value, scale):
        # Lambda(x * a) = A^-1 Lambda A^-1 for A = diag(a).
        inv = 1.0 / scale
        return value * inv.unsqueeze(-1) * inv.unsqueeze(-2)

    def log_jacobian(self, log_scale, K):
        # Lambda -> A^-1 Lambda A^-1 on symmetric matrices has Jacobian |A|^-(D+1).
        D = log_scale.shape[0]
        return float(-(K if self.per_component else 1) * (D + 1) * log_scale.sum())

    def covariances(self, value):
        return _symmetrize(torch.cholesky_inverse(_chol(value)))

    def dense(self, value, K):
        cov = self.covariances(value)
        return cov if self.per_component else cov.unsqueeze(-3).expand(
            cov.shape[:-2] + (K,) + cov.shape[-2:])

    def from_covariances(self, cov):
        return _symmetrize(torch.cholesky_inverse(_chol(cov)))

    def precisions_cholesky(self, value):
        # scikit-learn's convention: upper triangular P with precision = P P^T.
        L = _chol(value.flip(-1, -2)).flip(-1, -2)   # precision = U U^T with U upper
        return L

    def marginal_scales(self, cov, K, D):
        return np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))

    def matrices(self, cov, K, D):
        return cov

    def neutral_like(self, value):
        eye = torch.eye(value.shape[-1], dtype=value.dtype, device=value.device)
        return eye.expand_as(value).clone()

    def obs(self, loc, value):
        return dist.MultivariateNormal(loc, precision_matrix=value)


class Tied(Full):
    name = "tied"
    site = "precision"
    per_component = False

    def value_shape(self, K, D):
        return (D, D)

    def n_parameters(self, K, D):
        return D * (D + 1) // 2

    def prior(self, pt, K, batch=()):
        return dist.Wishart(df=pt.dof, precision_matrix=pt.psi).expand(batch)

    def marginal_scales(self, cov, K, D):
        return np.repeat(np.sqrt(np.diagonal(cov))[None], K, axis=0)

    def matrices(self, cov, K, D):
        return np.repeat(cov[None], K, axis=0)



class _FullOneFeature(Diagonal):
    """``full`` with one feature: the diagonal model (InverseGamma on the
    standard deviation, as in the first release), reported in ``full``'s
    shapes ((K, 1, 1) covariances)."""

    name = "full"

    def covariance_shape(self, K, D):
        return (K, D, D)

    def covariances(self, value):
        return torch.diag_embed(value * value)

    def dense(self, value, K):
        return torch.diag_embed(value * value)

    def from_covariances(self, cov):
        return torch.sqrt(torch.diagonal(cov, dim1=-2, dim2=-1))

    def precisions_cholesky(self, value):
        return torch.diag_embed(1.0 / value)

    def marginal_scales(self, cov, K, D):
        return np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))

    def matrices(self, cov, K, D):
        return cov



_FAMILIES = {"full": Full(), "tied": Tied(), "diag": Diagonal(), "full-1d": _FullOneFeature()}


def get(name: str, n_features: int) -> Covariance:
    """The family for ``covariance_type`` ``name`` and ``n_features`` D.

    With one feature ``full`` uses the diagonal model (an InverseGamma on the
    standard deviation), so that 1-D fits with the default type are those of
    the first release; its arrays keep ``full``'s shapes."""
    if name not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {list(COVARIANCE_TYPES)}, got {name!r}")
    if name == "spherical":
        return Spherical(n_features)
    if name == "full" and n_features == 1:
        return _FAMILIES["full-1d"]
    return _FAMILIES[name]

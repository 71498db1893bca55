"""Prediction plumbing shared by the estimators: input in either kind
(array-likes or torch tensors), row blocks standardised on the model's
device, outputs in the caller's kind, and an optional compiled kernel for
large inputs on CUDA.

* Array-likes (numpy, pandas, lists) give numpy outputs, as in scikit-learn.
* A ``torch.Tensor`` gives tensors on the tensor's own device: a CUDA
  tensor is validated, scored and answered on the GPU, with no copy through
  the host.

Whatever the input, rows are processed in blocks whose working set is
bounded, so the memory beyond the outputs does not grow with N.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

from . import _validation as V
from .fitting import far_component_log_prob, read_rows

ArrayOrTensor = Union[np.ndarray, torch.Tensor]

# Elements of the working tensors of a prediction block (64 MiB in float32):
# prediction memory stays bounded whatever the number of rows.
CHUNK_ELEMENTS = 2 ** 24
# Rows per block of the compiled kernel: a fixed shape, so it compiles once
# per (classes, components, features) and the last block is zero-padded.
COMPILED_ROWS = 2 ** 20
# A compiled block's rows times its components and features, at most: what
# a temporary the compiler does not fuse away (the full and tied types'
# batched products) may hold, 1 GiB in float32.  Reached only by posterior
# predictives (S draws x K components per class: 45,000 components for five
# classes at 1000 draws of 9), whose blocks shrink; MAP models keep
# COMPILED_ROWS.
COMPILED_ELEMENTS = 2 ** 28
_compile_state = {"failed": False}
_compiled: dict = {}


def check_input(estimator, X: Any) -> tuple[ArrayOrTensor, Optional[torch.device]]:
    """Validated input and the device of the outputs (None: numpy outputs).
    Out-of-core input (a memmap, h5py, zarr or dask array) is checked for
    its shape and type here and for its values block by block in
    :func:`blocks`, never loaded whole."""
    if isinstance(X, torch.Tensor):
        return V.check_X_tensor(estimator, X), X.device
    from ._base import is_row_source

    if is_row_source(X):
        return V.check_X_rows(estimator, X), None
    return V.check_X(estimator, X, reset=False, empty_rows=True), None


def model_device(estimator) -> torch.device:
    """Where a fitted estimator predicts: its ``device_``, or the CPU when
    that is a GPU this machine lacks (a model fitted elsewhere)."""
    device = getattr(estimator, "device_", torch.device("cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        return torch.device("cpu")
    return device


def compiled_rows(eager_rows: int) -> int:
    """Rows of a compiled block for a kernel whose eager blocks hold
    ``eager_rows`` rows (CHUNK_ELEMENTS over its classes x components x
    features): COMPILED_ROWS, or the largest power of two keeping the
    block's elements within COMPILED_ELEMENTS (at least 1024 rows)."""
    per_row = max(1, CHUNK_ELEMENTS // max(1, eager_rows))
    fit = COMPILED_ELEMENTS // per_row
    return max(1024, min(COMPILED_ROWS, 1 << (max(1, fit).bit_length() - 1)))


def block_rows(device: torch.device, eager_rows: int) -> int:
    """Rows per prediction block: ``eager_rows`` (bounded eager temporaries),
    or several compiled blocks at once where :func:`run_kernel` compiles."""
    if device.type == "cuda" and compile_enabled():
        return max(eager_rows, 8 * compiled_rows(eager_rows))
    return eager_rows


def blocks(X: ArrayOrTensor, rows: int, device: torch.device, center: np.ndarray,
           scale: np.ndarray, dtype: torch.dtype = torch.float32, allow_nan: bool = False
           ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(start, stop, z, raw) over the rows of X: ``raw`` the block in float64
    on ``device``, ``z`` it standardised, (x - center) / scale, and rounded to
    ``dtype``, the precision the mixtures were fitted in."""
    c = torch.as_tensor(center, dtype=torch.float64, device=device)
    s = torch.as_tensor(scale, dtype=torch.float64, device=device)
    n = X.shape[0]
    # Out-of-core input was not validated whole (check_input): per block.
    unchecked = isinstance(X, np.memmap) or not isinstance(X, (np.ndarray, torch.Tensor))
    for a in range(0, n, rows):
        b = min(a + rows, n)
        block = X[a:b]
        if unchecked:
            block = read_rows(X, a, b)
            V._check_finite(block, "X", None, allow_nan, row_offset=a, empty_rows=True)
        if isinstance(block, np.ndarray):
            block = np.ascontiguousarray(block)
            if not block.flags.writeable:   # pandas 3 hands out read-only arrays
                block = block.copy()
            block = torch.from_numpy(block)
        block = block.to(device=device, dtype=torch.float64)
        yield a, b, ((block - c) / s).to(dtype), block


def split_missing(z: torch.Tensor, allow: bool, scale: np.ndarray
                  ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """A block's rows with missing (NaN) entries, when the estimator takes
    them (``allow``): (z with those entries 0, the rows' indices, their
    Jacobian correction), or (z, None, None) when it has none (one
    reduction and one host sync per block).  The correction (rows,) is
    the log of the standardisation's scales of each row's missing features:
    a density of the observed features alone picks up the Jacobian of those
    only, so it is added back to the full frame's offset."""
    if not allow:
        return z, None, None
    nan = torch.isnan(z)
    if not bool(nan.any()):
        return z, None, None
    rows = nan.any(1).nonzero().squeeze(1)
    log_s = torch.log(torch.as_tensor(scale, dtype=torch.float64, device=z.device))
    corr = (nan[rows].to(torch.float64) * log_s).sum(1)
    return torch.where(nan, torch.zeros((), dtype=z.dtype, device=z.device), z), rows, corr


class MissingRows:
    """The scores of a block's rows with missing entries, shared by both
    estimators: the observed coordinates' marginal
    (:func:`bayesgmm.fitting.observed_component_log_prob`) in float64, in
    sub-blocks whose (rows, K, D, D) terms stay within
    :data:`CHUNK_ELEMENTS`.  Rows whose observed coordinates lie beyond
    :data:`FAR` take the far-point rule of complete rows on the same
    marginal (:func:`bayesgmm.fitting.far_observed_log_prob`): the direct
    form loses the linear differences between components that share a
    covariance past ~1e16 of the spread, and overflows past ~1e150."""

    def __init__(self, params, family, std) -> None:
        self.params, self.family, self.std = params, family, std
        self._params64 = None

    def scores(self, raw: torch.Tensor, per_class: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``raw`` (m, D) rows with NaN, in the data's units (float64: the
        standardised rows are formed here in float64, where a float32 model's
        rounding would turn values past 3e38 into inf); returns their
        component log joints (m, K), or class log-likelihoods (m, C) with
        ``per_class``, relative to each row's best, and that best as the
        ``lead`` to add (m,) (-inf past float64's range)."""
        from .fitting import observed_component_log_prob

        if self._params64 is None:
            self._params64 = self.params.map(lambda t: t.double())
        p = self._params64
        K, D = p.means.shape[-2:]
        C = p.weights.shape[0] if per_class else 1
        step = max(1, CHUNK_ELEMENTS // (C * K * D * D))
        c = torch.as_tensor(self.std.center, dtype=torch.float64, device=raw.device)
        s = torch.as_tensor(self.std.scale, dtype=torch.float64, device=raw.device)
        z = (raw.double() - c) / s
        out = []
        for a in range(0, z.shape[0], step):
            lp = observed_component_log_prob(z[a:a + step], p, self.family,
                                             self.params.weights.dtype)       # (..., K, m)
            out.append((torch.logsumexp(lp, -2) if per_class else lp).t())
        s = torch.cat(out)
        # Relative to the row's best score, with that score as ``lead``:
        # scores of -5e59 +- 1 would lose their differences once a
        # normaliser of the same size is subtracted from them.
        top = s.amax(-1)
        far = ~(torch.nan_to_num(z, nan=0.0).abs().amax(-1) <= FAR) | ~torch.isfinite(top)
        lead = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        s = s - lead.unsqueeze(-1)
        if bool(far.any()):
            rel, lead[far] = self.far(raw[far])
            s[far] = (torch.logsumexp(rel, -2) if per_class else rel).t()
        return s, lead

    def far(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The far-point rule for rows ``raw`` (m, D) with NaN, in the data's
        units: their component log joints relative to a lead, (..., K, m),
        and the lead (m,) (:func:`bayesgmm.fitting.far_observed_log_prob`).
        Directions are formed without z, which overflows past ~1e308 x the
        spread; a missing entry is placed at the centre (no part of the
        direction), then marked missing again."""
        from .fitting import far_observed_log_prob

        if self._params64 is None:
            self._params64 = self.params.map(lambda t: t.double())
        rows = raw.double()
        centre = torch.as_tensor(self.std.center, dtype=torch.float64, device=rows.device)
        u, log_s = _directions(torch.where(torch.isnan(rows), centre, rows),
                               self.std.center, self.std.scale)
        u = torch.where(torch.isnan(rows), torch.full_like(u, math.nan), u)
        return far_observed_log_prob(u, log_s, self._params64, self.family)


#: Rows farther than this from the fitted mixture (in its standardised
#: frame, where the data lie within a few units) are scored by the far-point
#: rule: float32 Mahalanobis terms lose the differences between components
#: from about here on, and overflow at ~1e19.
FAR = 1e3


class FarPoints:
    """The far-point rule of one prediction call, shared by both estimators.

    :meth:`patch` rescores in place the rows of a block that lie beyond
    :data:`FAR` (or whose float32 scores are not finite) by
    :func:`bayesgmm.fitting.far_component_log_prob`, in float64: exact, and
    with the right limits, so that no finite input gets NaN."""

    def __init__(self, params, family, std) -> None:
        self.params, self.family, self.std = params, family, std
        self._params64 = None       # converted on the first far row only

    def patch(self, z: torch.Tensor, raw: torch.Tensor, scores: torch.Tensor,
              per_class: bool = False, exclude: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``scores``: the block's component log joints (n, K), or with
        ``per_class`` its class log-likelihoods (n, C) of class mixtures.
        The far rows are replaced by their values relative to one
        reference component; returns ``lead`` (n,), zero elsewhere, so that
        ``scores + lead`` are the true values (``lead`` may be -inf, past
        the float64 range, while the relative scores stay numbers).
        ``exclude``: rows scored otherwise (those with missing entries)."""
        lead = scores.new_zeros(scores.shape[0])
        far = _far_rows(z, scores, exclude)
        if far is None:
            return lead
        if self._params64 is None:
            self._params64 = self.params.map(lambda t: t.double())
        u, log_s = _directions(raw[far], self.std.center, self.std.scale)
        rel, lead[far] = far_component_log_prob(u, log_s, self._params64, self.family)
        scores[far] = (torch.logsumexp(rel, -2) if per_class else rel).t()
        return lead


def _far_rows(z: torch.Tensor, scores: torch.Tensor,
              exclude: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Indices of the rows of a block to rescore by the far-point rule:
    beyond :data:`FAR`,
    or with a non-finite score; None when there are none (the common case,
    one reduction and one host sync per block)."""
    # Two reductions: "not <= FAR" also catches NaN and inf in z, and a row
    # sum is finite exactly when every score of the row is (the scores of
    # rows within FAR are far from overflowing).
    bad = ~(z.abs().amax(-1) <= FAR) | ~torch.isfinite(scores.sum(-1))
    if exclude is not None:
        bad[exclude] = False
    if not bool(bad.any()):
        return None
    return bad.nonzero().squeeze(1)


def _directions(raw: torch.Tensor, center: np.ndarray, scale: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised points z = (x - center) / scale as s * u with ``u`` the
    direction scaled to max |u_d| = 1, and log s, in float64, without forming
    z (which overflows for finite x beyond ~1e308 times the model's scale)."""
    c = torch.as_tensor(center, dtype=torch.float64, device=raw.device)
    s = torch.as_tensor(scale, dtype=torch.float64, device=raw.device)
    big = torch.finfo(torch.float64).max
    w = torch.nan_to_num(raw.double() - c, posinf=big, neginf=-big)
    log_a = torch.log(w.abs()) - torch.log(s)
    log_s = log_a.amax(-1).clamp_min(0.0)       # a point at the centre has u = 0, s = 1
    return torch.sign(w) * torch.exp(log_a - log_s.unsqueeze(-1)), log_s


_TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.int64): torch.int64}


def new_output(out_device: Optional[torch.device], shape: tuple, dtype) -> ArrayOrTensor:
    """An empty numpy array (out_device None) or tensor on out_device."""
    if out_device is None:
        return np.empty(shape, dtype=dtype)
    return torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)], device=out_device)


def put(out: ArrayOrTensor, index, value: ArrayOrTensor) -> None:
    """out[index] = value, across devices and kinds."""
    if isinstance(out, np.ndarray):
        out[index] = value if isinstance(value, np.ndarray) else value.cpu().numpy()
    else:
        out[index] = value.to(device=out.device, dtype=out.dtype)


def compile_enabled() -> bool:
    """Whether the compiled kernel may be used: not disabled by the
    environment variable ``BAYESGMM_COMPILE=0``, and no earlier compile
    failure in this process."""
    return os.environ.get("BAYESGMM_COMPILE", "1") != "0" and not _compile_state["failed"]


def _eager(fn, z: torch.Tensor, args, rows: int) -> torch.Tensor:
    if z.shape[0] <= rows:
        return fn(z, *args)
    return torch.cat([fn(z[a:a + rows], *args) for a in range(0, z.shape[0], rows)])


def run_kernel(fn: Callable[..., torch.Tensor], key: tuple, z: torch.Tensor, args: tuple,
               eager_rows: int) -> torch.Tensor:
    """``fn(z, *args)`` for a block of rows z (n, D) on its device.

    On CUDA, for full blocks of :func:`compiled_rows` rows or more
    (:data:`COMPILED_ROWS`, fewer for kernels of very many components), the
    function is compiled once per ``key`` (``torch.compile``, fixed shapes;
    the last block is zero-padded to the same shape) so that the whole
    per-point computation is one fused kernel reading each point once: the
    eager form writes (n, classes, components, features) temporaries, so it
    runs ``eager_rows`` rows at a time.  A
    failed compile (no Triton, no compiler) warns once and falls back to the
    eager form for the rest of the process."""
    n = z.shape[0]
    rows = compiled_rows(eager_rows)
    if z.device.type != "cuda" or n < rows or not compile_enabled():
        return _eager(fn, z, args, eager_rows)
    f = _compiled.get(key)
    try:
        if f is None:
            f = _compiled[key] = torch.compile(fn, dynamic=False)
        outs = []
        for a in range(0, n, rows):
            part = z[a:a + rows]
            m = part.shape[0]
            if m < rows:
                part = torch.cat([part, part.new_zeros(rows - m, part.shape[1])])
            outs.append(f(part, *args)[:m])
        return outs[0] if len(outs) == 1 else torch.cat(outs)
    except Exception as exc:  # compile needs Triton and a working toolchain
        _compile_state["failed"] = True
        warnings.warn(f"torch.compile of the prediction kernel failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''}); predicting with eager "
                      f"kernels from now on (set BAYESGMM_COMPILE=0 to skip the attempt)",
                      RuntimeWarning, stacklevel=3)
        return _eager(fn, z, args, eager_rows)


def fill_missing(X: np.ndarray, rows: np.ndarray, out: np.ndarray, std, params, family,
                 gen: Optional[torch.Generator], device: torch.device,
                 dtype: torch.dtype = torch.float32) -> None:
    """Fill the missing entries (NaN) of ``X``'s ``rows`` into ``out`` (the
    same shape; observed entries are left as they are) under one mixture:
    ``params`` (float64, batch 1) in the frame of ``std`` (a
    :class:`~bayesgmm.priors.Standardizer`).

    Without ``gen``, each missing entry gets its conditional mean given the
    row's observed features, E[x_m | x_o] = sum_k p(k | x_o) (mu_k,m +
    Sigma_k,mo Sigma_k,oo^-1 (x_o - mu_k,o)); with ``gen`` a draw from
    p(x_m | x_o) (a component, then its conditional Gaussian).  Blocks of
    rows keep the memory bounded (the terms are up to (K, D, D) per row).
    Diagonal precisions on the CPU take the expanded route
    (:func:`~bayesgmm.fitting.expanded_route`, its bound for the model's
    ``dtype``): there a missing coordinate's conditional mean and variance
    are the component's own.  Rows whose observed coordinates lie beyond
    :data:`FAR` (or whose terms overflow, past ~1e154 of the spread) are
    weighed between components by the far-point rule of the scores
    (:meth:`MissingRows.far`): their responsibilities are those
    ``predict_proba`` gives, never NaN."""
    from .fitting import (expanded_bound, expanded_log_normal, expanded_route, observed_terms,
                          square_terms)

    K, D = params.means.shape[-2:]
    expanded = expanded_route(family, D, device, True)
    if expanded:
        factor = family.precision_factor(params.cov)
        sd = family.feature_precisions(factor, D)[0].rsqrt()                 # (K, D)
    c = torch.as_tensor(std.center, dtype=torch.float64, device=device)
    s = torch.as_tensor(std.scale, dtype=torch.float64, device=device)
    log_w = torch.log(params.weights[0]).unsqueeze(-1)
    real = torch.isfinite(log_w)                                            # (K, 1)
    step = max(1, CHUNK_ELEMENTS // (K * D * D))
    zero = torch.zeros((), dtype=torch.float64, device=device)
    scorer = None            # the far-point rule, made on the first far row
    with torch.no_grad():
        for a in range(0, rows.size, step):
            idx = rows[a:a + step]
            raw = torch.as_tensor(X[idx], dtype=torch.float64, device=device)
            observed = ~torch.isnan(raw)
            z = torch.where(observed, (raw - c) / s, zero)
            zT, oT = z.t().contiguous()[None], observed.t().contiguous()[None]
            if expanded:
                logn = expanded_log_normal(square_terms(zT), params.means, factor, family, oT,
                                           expanded_bound(dtype))
            else:
                logn, y, ccov, inv = observed_terms(zT, oT, params, family)
                cond = params.means[0].unsqueeze(-1) + y[0]                 # (K, D, m)
            logr = torch.log_softmax(logn[0] + log_w, 0)                    # (K, m)
            # (Components of weight 0, a classifier's padding, are -inf by
            # their weight, not by overflow: every row was sent to the rule.)
            far = ~(z.abs().amax(-1) <= FAR) | ~(torch.isfinite(logn[0]) | ~real).all(0)
            if bool(far.any()):
                if scorer is None:
                    scorer = MissingRows(params.map(lambda t: t[0]), family, std)
                rel, _ = scorer.far(raw[far])
                logr[:, far] = torch.log_softmax(rel, 0)
            if gen is None:
                fill = logr.exp().t() @ params.means[0] if expanded else \
                    (logr.exp().unsqueeze(1) * cond).sum(0).t()             # (m, D)
            else:
                k = torch.multinomial(logr.t().exp(), 1, generator=gen).squeeze(1)
                m = torch.arange(idx.size, device=device)
                eps = torch.randn(idx.size, D, 1, dtype=torch.float64, device=device,
                                  generator=gen).squeeze(-1)
                fill = params.means[0, k] + sd[k] * eps if expanded else \
                    cond[k, :, m] + ccov.draw(inv[0], k, eps, observed)
            value = (fill * s + c).cpu().numpy()
            out[idx] = np.where(np.isnan(X[idx]), value, out[idx])

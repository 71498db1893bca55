"""The one inference core: densities, sufficient statistics, initialisation,
MAP-EM, the SVI loop, the far-point rule of prediction and sampling through
the model, for every covariance family.

Everything works on a batch of mixtures that each see one *group* of
points: a plain mixture is one group (all points), the classifier has one
group per class.  Restarts, classes and candidate K are batch dimensions of
the same code, so one mixture is simply the per-class batch with one class.

Shapes: G groups, B variants (restarts x candidate K), K components (padded
to the largest K, ``mask`` marks the real ones), D features.  Parameters are
:class:`~bayesgmm.priors.MixtureParams` with batch shape (B, G) while a fit
runs; the E-step works on a flat list of P (variant, group) pairs.

Sufficient statistics (:class:`Stats`) are counts, first and second moments
*about the current means*: centred moments stay accurate in float32 for a
narrow component far from the data's centre (the expanded form
``Sxx - 2 mu Sx + mu^2 N`` lost a factor 7 in such a component's variance;
diagonal families from a few features form it in float64 instead, for the
components where float64 keeps it accurate, see :func:`expanded_route`),
and they are additive over blocks of rows, so summing the statistics of
row blocks (or, later, of processes) gives the same M-step as one pass.
"""

from __future__ import annotations

import contextlib
import math
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from . import _pyro  # noqa: F401  (Pyro imported without tqdm's notebook warning)
import pyro
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, JitTraceEnum_ELBO, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDelta
from pyro.infer.autoguide.initialization import init_to_value
from torch.distributions import constraints, transform_to

from ._validation import check_result_size
from .covariance import Covariance, _chol, observed_gaussian, sum_features
from .models import (class_gmm_model, class_global_sites, global_sites, gmm_model,
                     masked_dirichlet_log_prob)
from .priors import MixtureParams, PriorTensors

Callback = Optional[Callable[[int, float], None]]

# Smallest weight a component may have: the AutoDelta guide lives on the open
# simplex, and log(0) would poison the loss.
MIN_WEIGHT = 1e-10
# Lower clamp of the exponents of responsibilities: exp(x) for x in about
# (-103, -87) is a float32 denormal, which x86 CPUs compute ~10x slower.
# exp(-80) ~ 2e-35 is zero next to the largest term (exactly 1).
_EXP_FLOOR = -80.0
# Elements of the (P, K, D, rows) working tensors per block of rows: 256 KiB
# in float32, so a block's several live temporaries (about 1 MiB together)
# stay in a core's L2 cache, and below the size at which the allocator maps
# fresh pages for every tensor.  With 2**22 (16 MiB) an EM step at N = 1e5,
# K = 8, D = 2 ran 2-3x slower in some processes; against 2**18, 2**16 made
# default diag fits at D = 2 13-20% faster (N = 1e5 and 1e6, K = 8, and the
# five-class classifier; 2-core Xeon, 2 MiB L2 per core) and left full
# covariances and D = 10 within +-5%.  Smaller blocks cost more per-block
# overhead (2**14 was 40% slower on the classifier).
BLOCK_ELEMENTS = 2 ** 16
#: ... but full and tied covariances (matrix precisions, complete data) take
#: 2**18: their per-block products (D, D) x (D, rows) run faster on longer
#: rows, and their fixed per-block cost weighs more.  Measured against 2**16
#: (one thread, AMD EPYC, default fits, N = 1e5, K = 8, medians of 7
#: alternating; a /tmp sweep, 2026-12-06; benchmarks/block_budget.py repeats
#: the comparison, README Performance): full 0.80 at D = 20, 0.83 at D = 10,
#: 1.01 at D = 2, 1.02 at D = 50 (N = 2e4: 512 rows either way); tied 0.86
#: at D = 20, 0.95 at D = 2; the five-class classifier (true K) 0.96 full,
#: 1.02 tied.
#: A 2**18 budget for every family made diagonal classifier fits 7% slower.
DENSE_BLOCK_ELEMENTS = 2 ** 18
# On a GPU a block costs kernel launches: 2**26 elements (256 MiB per float32
# temporary) keeps N = 1e7, K = 8, D = 2 with 4 restarts to 10 blocks.  Not
# yet measured on a GPU.
CUDA_BLOCK_ELEMENTS = 2 ** 26
# ... but at least this many rows per CPU block: at D = 50 (4 restarts, K =
# 5) the budget gave blocks of 65 rows, whose per-block Python and dispatch
# cost exceeded their arithmetic; 512 rows made full-covariance fits at
# D = 50-100 20-30% faster and changed nothing at D = 2 (2-core Xeon;
# 2048 was slower for diagonal D = 50).
MIN_BLOCK_ROWS = 512
# ... as long as a temporary stays within this many elements (16 MiB in
# float32): wide data with missing entries (terms up to (D, D) per point) or many
# restarts and components keep blocks that fit in memory.
MAX_BLOCK_ELEMENTS = 2 ** 22
#: Fewest features from which diagonal and spherical mixtures take the
#: expanded route on the CPU (:func:`expanded_route`): densities and
#: statistics by matrix products in float64 instead of per-component
#: differences.  Measured (one E-step, one thread, Xeon; products against
#: differences): 4 restarts x K=5, 20,000 rows: 0.33-0.34 at D=6-10, 0.26 at
#: D=16, 0.1 at D=50 (14 against 142 ms); 10 and 20 pairs (5 groups) x K=9,
#: 2,000 rows: 0.38-0.80 at D=6, 0.46-0.64 at D=8, but 0.49-1.17 at D=4 and
#: 0.99-1.77 at D=2, where the differences' few passes are cheaper than
#: small matrix products.
EXPANDED_MIN_FEATURES = 6
#: Elements of float64 per block of the expanded route ((P, K + D) per
#: row): 2,048 rows at 4 restarts, K=5, D=50, where 512 and 8,192 rows were
#: slower.
EXPANDED_BLOCK_ELEMENTS = 2 ** 19
_LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------
# Data layout
# ----------------------------------------------------------------------------
def block_rows(P: int, K: int, D: int, missing: bool, device: torch.device,
               expanded: bool = False, dense: bool = False) -> int:
    """Rows per E-step block for P pairs of K components of D features (in
    memory, :meth:`Groups.rows`, and streamed, :meth:`RowStream.rows`): a
    temporary of P K D (D D with missing entries: a row missing more than
    half the features takes (D, D) terms in :func:`observed_terms`, the
    others (m, m) for m missing, at most a quarter of that) elements per
    row within the device's budget, and on the CPU
    at least :data:`MIN_BLOCK_ROWS` rows where that stays within
    :data:`MAX_BLOCK_ELEMENTS`.  The ``expanded`` route (:func:`expanded_route`
    on the CPU; the variational E-step with missing values on every device)
    holds (P, K) and (P, D) float64 terms per row: on the CPU
    :data:`EXPANDED_BLOCK_ELEMENTS` of them, at least :data:`MIN_BLOCK_ROWS`
    rows (its terms stay far below :data:`MAX_BLOCK_ELEMENTS` there); on a
    GPU :data:`CUDA_BLOCK_ELEMENTS`.  ``dense`` (matrix precisions: full and
    tied) takes :data:`DENSE_BLOCK_ELEMENTS` on the CPU for complete data."""
    if expanded:
        if device.type != "cpu":
            return max(1, CUDA_BLOCK_ELEMENTS // (P * (K + D)))
        return max(MIN_BLOCK_ROWS, EXPANDED_BLOCK_ELEMENTS // (P * (K + D)))
    per_row = P * K * D * (D if missing else 1)
    if device.type != "cpu":
        return max(1, CUDA_BLOCK_ELEMENTS // per_row)
    budget = DENSE_BLOCK_ELEMENTS if dense and not missing else BLOCK_ELEMENTS
    return max(1, budget // per_row, min(MIN_BLOCK_ROWS, MAX_BLOCK_ELEMENTS // per_row))


@dataclass
class Groups:
    """The training points of G groups, zero-padded to the largest group and
    stored features first: ``XT`` (G, D, n) contiguous (every per-feature
    operation of the E-step then runs over contiguous rows of points; with
    points first, strided inputs made each EM step 2-3x slower on CPU),
    ``weight`` (G, n): each point's weight (``sample_weight``; 0 on padded
    rows), None when every point counts once and no group is padded;
    ``counts`` (G,): rows per group; ``observed`` (G, D, n) bool: which
    entries are observed (missing ones are stored as 0), None when all are.
    ``mass`` (G,) is the total weight of each group, the N of the
    tolerances.

    ``reduce``: the statistics-reduce hook of a fit over several processes
    (:func:`bayesgmm.distributed.reducer`): these rows are one shard, and
    every sum over rows (statistics, log-likelihoods, ``mass``) is summed
    over the shards in place; None in a one-process fit."""

    XT: torch.Tensor
    weight: Optional[torch.Tensor]
    counts: torch.Tensor
    observed: Optional[torch.Tensor] = None
    reduce: Optional[Callable] = None

    @property
    def mass(self) -> torch.Tensor:
        local = self.counts.to(self.XT.dtype) if self.weight is None else self.weight.sum(-1)
        if self.reduce is not None:
            local = local.clone()
            self.reduce([local])
        return local

    @classmethod
    def single(cls, X: torch.Tensor, weight: Optional[torch.Tensor] = None,
               reduce: Optional[Callable] = None) -> "Groups":
        """All points X (n, D) as one group (a plain mixture); NaN entries
        are missing; ``reduce``: X is one shard of several processes'."""
        observed = None
        if bool(torch.isnan(X).any()):
            observed = ~torch.isnan(X)
            X = torch.where(observed, X, torch.zeros((), dtype=X.dtype, device=X.device))
            observed = observed.t().contiguous().unsqueeze(0)
        return cls(X.t().contiguous().unsqueeze(0), None if weight is None else weight[None],
                   torch.tensor([X.shape[0]], device=X.device), observed, reduce)

    @classmethod
    def from_labels(cls, X: torch.Tensor, labels: torch.Tensor, n_groups: int,
                    weight: Optional[torch.Tensor] = None,
                    reduce: Optional[Callable] = None) -> "Groups":
        """Points laid out per label (stable order), padded with zeros (of
        weight 0); NaN entries are missing."""
        counts = torch.bincount(labels, minlength=n_groups)
        n_max = int(counts.max())
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(n_max, device=X.device)
        valid = pos.unsqueeze(0) < counts.unsqueeze(1)                       # (G, n)
        idx = order[(starts.unsqueeze(1) + pos).clamp_max(X.shape[0] - 1)]
        zero = torch.zeros((), dtype=X.dtype, device=X.device)
        Xg = torch.where(valid.unsqueeze(-1), X[idx], zero)
        w = valid.to(X.dtype) if weight is None else torch.where(valid, weight[idx], zero)
        observed = None
        if bool(torch.isnan(Xg).any()):
            observed = ~torch.isnan(Xg)
            Xg = torch.where(observed, Xg, zero)
            observed = observed.transpose(1, 2).contiguous()
        return cls(Xg.transpose(1, 2).contiguous(), w, counts, observed, reduce)

    def rows(self, P: int, K: int, expanded: bool = False, dense: bool = False) -> int:
        """Rows per block for P pairs of K components (larger blocks on a
        GPU, where each block costs kernel launches, not cache; smaller with
        missing entries, whose terms are up to (D, D) per point)."""
        return block_rows(P, K, self.XT.shape[1], self.observed is not None, self.XT.device,
                          expanded, dense)

    def blocks(self, gidx: torch.Tensor, rows: int):
        """(block of points (P, D, rows), weights (P, rows) or None, observed
        (P, D, rows) or None) for the pairs' groups ``gidx`` (P,).  A single
        group is yielded once, (1, D, rows), for every pair to broadcast
        against (no copy per pair)."""
        G, D, n = self.XT.shape
        pick = (lambda t, a: t[..., a:a + rows]) if G == 1 else (lambda t, a: t[gidx, ..., a:a + rows])
        for a in range(0, n, rows):
            yield (pick(self.XT, a), None if self.weight is None else pick(self.weight, a),
                   None if self.observed is None else pick(self.observed, a))

    @property
    def has_missing(self) -> bool:
        return self.observed is not None

    def subset(self, index: torch.Tensor) -> "Groups":
        """A single group's rows ``index`` (restart screening)."""
        return Groups(self.XT[..., index], None if self.weight is None else self.weight[..., index],
                      torch.tensor([index.shape[0]], device=self.XT.device),
                      None if self.observed is None else self.observed[..., index])


#: Rows read from an out-of-core source at a time (a float64 host copy of
#: 2**20 rows x D features: 32 MiB at D = 4).
STREAM_CHUNK_ROWS = 2 ** 20


def _file_layout(source) -> Optional[tuple]:
    """(path, byte offset of row 0, bytes per row) of a C-contiguous numpy
    memmap of a file (a view of one too) whose values are the file's, else
    None.  A copy-on-write map (mode "c", ``np.load(..., mmap_mode="c")``)
    keeps its edits in private pages that a read of the file does not see,
    so it is read through its mapping."""
    mm = getattr(source, "_mmap", None)
    if not (isinstance(source, np.memmap) and mm is not None and source.filename
            and source.flags.c_contiguous and source.ndim == 2
            and getattr(source, "mode", "c") in ("r", "r+", "w+")):
        return None
    import mmap as _mmap

    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    aligned = source.offset - source.offset % _mmap.ALLOCATIONGRANULARITY
    return source.filename, source.ctypes.data - base + aligned, source.strides[0]


def read_rows(source, a: int, b: int) -> np.ndarray:
    """Rows a:b of an out-of-core source as a float64 array of their own.
    A memmap of a file is read with ``np.fromfile`` rather than through
    its mapping: pages touched through a mapping stay in the process's
    resident memory, so a pass over a 1.6 GB memmap would end with 1.6 GB
    resident; a read leaves them to the page cache."""
    b = min(b, int(source.shape[0]))
    layout = _file_layout(source)
    if layout is None:
        return np.array(source[a:b], dtype=np.float64)
    path, start, row_bytes = layout
    D = int(source.shape[1])
    rows = np.fromfile(path, dtype=source.dtype, count=(b - a) * D, offset=start + a * row_bytes)
    if rows.size != (b - a) * D:
        # numpy's "cannot reshape array of size 147000 into shape (50000,3)".
        raise ValueError(
            f"X changed while it was being read: rows {a} to {b - 1} of {str(path)!r} could not "
            f"be read (the file ends {(b - a) * D - rows.size} value(s) short of them: it was "
            f"truncated or rewritten meanwhile); use a copy that nothing writes to")
    return rows.reshape(b - a, D).astype(np.float64, copy=False)


def chunk_signature(raw: np.ndarray, weight: Optional[np.ndarray]) -> np.ndarray:
    """A cheap fingerprint of one chunk of rows as read (float64, NaN kept)
    and its weights: the weights' sum and their sum weighted by row
    position (1, 2, ...), then the count of finite entries, their sum and
    sum of squares, and per column their sum weighted by row position.  A
    pass over an out-of-core source compares each chunk's with the first
    pass's, so that a source modified during the fit is refused rather than
    fitted half old, half new.  The positional sums see values moved
    between rows or columns (two columns swapped kept the plain sum and sum
    of squares bit for bit)."""
    with np.errstate(all="ignore"):
        position = np.arange(1, raw.shape[0] + 1, dtype=np.float64)
        flat = raw.ravel()
        # A plain sum and BLAS products (2 ms each for 2^20 x 4; a masked
        # sum took 13 ms, numpy's column sums raw.sum(0) 20 ms), which only
        # chunks with NaN or inf entries (or an overflowing sum) give up.
        count, total, squares, placed = flat.size, flat.sum(), np.dot(flat, flat), position @ raw
        if not (np.isfinite(total) and np.isfinite(squares) and np.all(np.isfinite(placed))):
            finite = np.isfinite(raw)
            clean = np.where(finite, raw, 0.0)
            flat = clean.ravel()
            count, total, squares, placed = (finite.sum(), flat.sum(), np.dot(flat, flat),
                                             position @ clean)
        weights = ([np.nan, np.nan] if weight is None
                   else [np.sum(weight), position @ np.asarray(weight, dtype=np.float64)])
        return np.concatenate([weights, [count, total, squares], placed]).astype(np.float64)


def check_unchanged(signature: np.ndarray, raw: np.ndarray, weight, a: int) -> None:
    """Refuse chunk ``a`` when it reads differently from the first pass."""
    now = chunk_signature(raw, weight)
    if not np.array_equal(signature, now, equal_nan=True):
        what = "sample_weight" if np.array_equal(signature[2:], now[2:], equal_nan=True) else "X"
        raise ValueError(
            f"{what} changed during the fit: rows {a} to {a + raw.shape[0] - 1} read differently "
            f"in a later pass over them than in the first (the file or array was modified while "
            f"it was being fitted); fit a copy that nothing writes to, e.g. np.save it first")


class RowStream:
    """One group of points read from an array-like in row chunks (a numpy
    memmap, an ``.npy`` file opened with ``mmap_mode``, h5py, zarr or dask
    arrays: anything with ``.shape`` and row slicing), standardised on the
    fly: the fit's memory does not grow with N.  Serves the E-step as
    :class:`Groups` does (``blocks``, ``rows``, ``mass``, ``reduce``); a
    pass over the data reads every chunk once.

    ``weight``: sample weights (an array-like of the same rows, or None);
    ``mass``: their total over every process (from the first pass,
    :func:`bayesgmm._base.stream_data`, which also finds ``has_missing``:
    whether any entry is NaN); ``reduce``: the rows are one process's
    shard."""

    def __init__(self, source, center: np.ndarray, scale: np.ndarray, device, dtype,
                 weight=None, mass=0.0, has_missing: bool = False,
                 reduce: Optional[Callable] = None, chunk_rows: int = STREAM_CHUNK_ROWS,
                 labels: Optional[np.ndarray] = None, counts: Optional[np.ndarray] = None,
                 signatures: Optional[list] = None):
        self.source, self.weight_source = source, weight
        # Each chunk's chunk_signature from the first pass, checked on every read.
        self.signatures = signatures
        self.n, self.D = int(source.shape[0]), int(source.shape[1])
        self.center = torch.as_tensor(center, dtype=torch.float64, device=device)
        self.scale = torch.as_tensor(scale, dtype=torch.float64, device=device)
        self.device, self.dtype = torch.device(device), dtype
        self.has_missing, self.chunk_rows = has_missing, chunk_rows
        # Over several processes a pass that fails on this rank (a chunk
        # changed or unreadable) is not raised at once: the pass goes on
        # with that chunk at weight 0, and its closing sum raises on every
        # rank (see :func:`bayesgmm.distributed.reducer`), so that no rank
        # waits for a sum this one never joins.
        self._sum, self.failure = reduce, None
        self.reduce = None if reduce is None else self._reduce
        # ``labels`` (n,): the group (class) of every row, for per-class
        # mixtures: each chunk is laid out per class as Groups.from_labels does.
        self.labels = labels
        self.counts = torch.as_tensor([self.n] if counts is None else counts, device=self.device)
        # The total weight of every shard per group, from the first pass (no re-read).
        self.mass = torch.as_tensor(np.atleast_1d(mass), dtype=dtype, device=self.device)

    def rows(self, P: int, K: int, expanded: bool = False, dense: bool = False) -> int:
        return block_rows(P, K, self.D, self.has_missing, self.device, expanded, dense)

    def chunks(self):
        """(start, standardised chunk (m, D) in ``dtype`` with NaN kept,
        weights (m,) or None), one host read per chunk."""
        for a in range(0, self.n, self.chunk_rows):
            try:
                raw, w = self._read(a)
            except Exception as exc:
                if self._sum is None:
                    raise
                self.failure = self.failure or exc
                # The chunk's rows at weight 0: they add nothing to the sums.
                raw = np.zeros((min(self.chunk_rows, self.n - a), self.D))
                w = np.zeros(raw.shape[0])
            z = ((torch.as_tensor(raw, device=self.device) - self.center) / self.scale).to(self.dtype)
            if w is not None:
                w = torch.as_tensor(w, dtype=self.dtype, device=self.device)
            yield a, z, w

    def _read(self, a: int):
        """Chunk ``a``'s rows (float64) and weights (or None), checked
        against the first pass's reading."""
        raw = read_rows(self.source, a, a + self.chunk_rows)
        w = None
        if self.weight_source is not None:
            w = (read_rows(self.weight_source[:, None], a, a + self.chunk_rows)[:, 0]
                 if isinstance(self.weight_source, np.memmap) else
                 np.array(self.weight_source[a:a + self.chunk_rows], dtype=np.float64))
        if self.signatures is not None:
            check_unchanged(self.signatures[a // self.chunk_rows], raw, w, a)
        return raw, w

    def _reduce(self, tensors) -> None:
        """The sum over the ranks that closes a pass, raising on every rank
        when any rank's pass failed."""
        self._sum(tensors, error=self.failure, check=True)

    def blocks(self, gidx: torch.Tensor, rows: int):
        for a, z, w in self.chunks():
            if self.labels is not None:
                y = torch.as_tensor(np.asarray(self.labels[a:a + z.shape[0]]), dtype=torch.long,
                                    device=self.device)
                yield from Groups.from_labels(z, y, len(self.counts), w).blocks(gidx, rows)
                continue
            o = None
            if self.has_missing:
                nan = torch.isnan(z)
                o = (~nan).t().contiguous().unsqueeze(0)
                z = torch.where(nan, torch.zeros((), dtype=z.dtype, device=z.device), z)
            zT = z.t().contiguous().unsqueeze(0)
            for c in range(0, zT.shape[-1], rows):
                yield (zT[..., c:c + rows], None if w is None else w[None, c:c + rows],
                       None if o is None else o[..., c:c + rows])


# ----------------------------------------------------------------------------
# Densities
# ----------------------------------------------------------------------------
def log_normal(XT: torch.Tensor, means: torch.Tensor, cov: torch.Tensor, family: Covariance,
               factor: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log N(x_n | mu_k, Sigma_k) for points XT (..., D, n) (features first)
    and means (..., K, D):
    shape (..., K, n), with the differences x - mu laid out (..., K, D, n)
    (features before points: see :meth:`Covariance.mahalanobis`).

    Computed from differences rather than an expanded quadratic form, so a
    point far from a narrow component loses no precision."""
    K, D = means.shape[-2], means.shape[-1]
    if factor is None:
        factor = family.precision_factor(cov)
    diff = XT.unsqueeze(-3) - means.unsqueeze(-1)
    const = (family.half_log_det(factor, K) - 0.5 * D * _LOG_2PI).unsqueeze(-1)
    logn = torch.add(const, family.mahalanobis(diff, factor), alpha=-0.5)
    return logn, diff


def _nearest(d2: torch.Tensor) -> torch.Tensor:
    """The index of the smallest of (..., K, n) over K, keepdim, the first
    of ties: ``min(-2).indices`` (the same index as ``argmin(-2)``, which ran
    5-8x slower over that middle dimension on the CPU: 1.4 against 0.18 ms
    for (4, 5, 2383), one thread)."""
    return d2.min(-2, keepdim=True).indices


def _hard_assignments(d2: torch.Tensor, weights: torch.Tensor,
                      weight: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point to its nearest real component (``d2`` (P, K, n) squared
    distances, up to a term all components share; padded components, of
    weight 0, never), as one-hot responsibilities scaled by ``weight``, and
    a zero log-likelihood (P,): the initialisation's E-step."""
    d2 = torch.where(weights.unsqueeze(-1) > 0, d2, torch.full_like(d2, math.inf))
    r = torch.zeros_like(d2).scatter_(-2, _nearest(d2), 1.0)
    if weight is not None:
        r = r * weight.unsqueeze(-2)
    return r, torch.zeros(r.shape[:-2], dtype=r.dtype, device=r.device)


def expanded_route(family: Covariance, D: int, device: torch.device, missing: bool) -> bool:
    """Whether the E-step, the losses and the predictions take the expanded
    route (:func:`expanded_log_normal`): families with diagonal precisions,
    on the CPU, from :data:`EXPANDED_MIN_FEATURES` features, or at any D
    when entries are missing.  There the per-component differences cost K
    passes over the (D, n) block each, where a few matrix products do; with
    missing entries the marginal of a diagonal Gaussian is the product of
    its observed features' (masks in the products), where the general
    route of :func:`observed_terms` factorises a covariance per pattern."""
    return (family.diagonal_precision and device.type == "cpu"
            and (missing or D >= EXPANDED_MIN_FEATURES))


def _products(W: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """W (P, K, E) @ x (P or 1, E, m) -> (P, K, m); a single x as one
    matrix product over the P K rows (other batch shapes broadcast as
    ``torch.matmul`` does)."""
    if W.dim() == 3 and x.dim() == 3 and x.shape[0] == 1:
        P, K, E = W.shape
        return (W.reshape(P * K, E) @ x[0]).reshape(P, K, -1)
    return W @ x


def square_terms(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x^2, x) in float64 for a block x (..., D, n)."""
    x = x.double()
    return x * x, x


#: Largest p_kd mu_kd^2 of any feature (standardised units) of a component
#: whose float32 results the expanded route computes by products: their
#: rounding is about 1e-16 of p |x|^2 per feature for a point x near mu
#: (the expanded form's terms), so 1e-9 of S2 and 4e-9 nats per feature at
#: this bound, below float32's 6e-8.  A narrower or more distant component
#: is taken by differences (its own pass over the block): a float32 fit of
#: a component of sd 1e-4 at 100 sds otherwise carried 1.4e-4 relative
#: error in its S2.
EXPANDED_MAX_TERM = 1e7
#: The bound for a float32 fit's loss (evaluated in float64, it chooses
#: between restarts and is reported): 4e-12 nats per feature and point.
EXPANDED_MAX_TERM_LOSS = 1e4
#: The bound for float64 fits and models: 4e-14 nats per feature and point,
#: where the differences give float64's rounding (a narrow, distant
#: component was 0.18 nats off in the data log-likelihood at D=50 on
#: products alone).
EXPANDED_MAX_TERM_EXACT = 1e2


def expanded_bound(dtype: torch.dtype) -> float:
    """:data:`EXPANDED_MAX_TERM` for float32 results,
    :data:`EXPANDED_MAX_TERM_EXACT` for float64 ones."""
    return EXPANDED_MAX_TERM_EXACT if dtype == torch.float64 else EXPANDED_MAX_TERM


def _beyond(p: torch.Tensor, m: torch.Tensor, bound: float):
    """(batch, component) indices into the flattened (-1, K) batch of the
    components with some p_kd mu_kd^2 above ``bound``, or None."""
    K, D = m.shape[-2:]
    big = ((p * m * m).amax(-1) > bound).reshape(-1, K)
    if not bool(big.any()):
        return None
    return tuple(big.nonzero().unbind(1))


def _differences(x: torch.Tensor, observed: Optional[torch.Tensor], m: torch.Tensor, idx):
    """x - mu_k (R, D, n) for the (batch, component) pairs ``idx``
    (:func:`_beyond`), zero where missing, and the rows' observed masks
    (R, D, n) or None: the differences of the components the expanded
    route leaves to them."""
    K, D = m.shape[-2:]
    b, k = idx
    xf = x.reshape(-1, D, x.shape[-1])
    rows = b if xf.shape[0] > 1 else torch.zeros_like(b)
    d = xf[rows] - m.reshape(-1, K, D)[b, k].unsqueeze(-1)
    if observed is None:
        return d, None
    o = observed.reshape(-1, D, observed.shape[-1])[rows].to(d.dtype)
    return d * o, o


def expanded_log_normal(xs: tuple, means: torch.Tensor, factor: torch.Tensor,
                        family: Covariance, observed: Optional[torch.Tensor] = None,
                        bound: float = EXPANDED_MAX_TERM) -> torch.Tensor:
    """log N(x_n | mu_k, Sigma_k) (..., K, n) in float64 for diagonal
    precisions p_k (``factor``, :meth:`Covariance.precision_factor`), by
    the expanded quadratic form -1/2 sum_d p_d x_d^2 + sum_d p_d mu_d x_d -
    1/2 sum_d p_d mu_d^2: a product of -p/2 with x^2 and one of p mu with x
    (``xs`` = (x^2, x), :func:`square_terms`).  With ``observed`` (P or 1, D, n)
    (x 0 where missing) the sums run over each point's observed features
    (the marginal density): the constant terms (log p_d - log 2 pi - p_d
    mu_d^2) / 2 too, as one more product with the mask.  In float64: in
    float32 this form lost 1% of the loss with a narrow component far from
    the data's centre; in float64 its rounding is about 1e-16 of p |x|^2
    per feature for x near mu, so components with some p_d mu_d^2 above
    ``bound`` (:func:`expanded_bound`) are scored by differences instead.
    (:func:`feature_log_density` with the Gaussian's own constants.)"""
    m = means.double()
    p = family.feature_precisions(factor.double(), m.shape[-1])
    return feature_log_density(xs, m, p, gaussian_constants(p), observed, bound)


def gaussian_constants(p: torch.Tensor) -> torch.Tensor:
    """(log p_d - log 2 pi) / 2 per feature: a diagonal Gaussian's log
    normaliser, split by feature (:func:`feature_log_density`)."""
    return 0.5 * (torch.log(p) - _LOG_2PI)


def feature_log_density(xs: tuple, m: torch.Tensor, p: torch.Tensor, base: torch.Tensor,
                        observed: Optional[torch.Tensor] = None,
                        bound: float = EXPANDED_MAX_TERM, far=False) -> torch.Tensor:
    """sum_d o_nd (base_kd - p_kd (x_nd - m_kd)^2 / 2) (..., K, n) in
    float64, for per-feature precisions p and constants ``base`` (..., K,
    D) and means m (float64), by the expanded form (see
    :func:`expanded_log_normal`; ``xs`` = (x^2, x), x 0 where ``observed``
    (P or 1, D, n) is False; every feature counts without it).  A diagonal
    Gaussian's log density for ``base`` = :func:`gaussian_constants`; the
    mean-field bound's expected one for its own constants
    (:meth:`bayesgmm.variational.VariationalPosterior.feature_terms`).
    Components with some p_d m_d^2 above ``bound`` take differences
    (``far``: their :func:`_beyond` indices where the caller has them)."""
    K = m.shape[-2]
    pm = p * m
    if observed is None:
        const = (base - 0.5 * pm * m).sum(-1).unsqueeze(-1)
    else:
        const = _products(base - 0.5 * pm * m, observed.double())
    out = _products(pm, xs[1]).add_(const)
    out.add_(_products(p, xs[0]), alpha=-0.5)
    if far is False:
        far = _beyond(p, m, bound)
    if far is not None:
        d, o = _differences(xs[1], observed, m, far)
        pk = p.reshape(-1, K, p.shape[-1])[far]                               # (R, D)
        c = base.reshape(-1, K, base.shape[-1])[far]
        c = c.sum(-1, keepdim=True) if o is None else (c.unsqueeze(-2) @ o).squeeze(-2)
        out.view(-1, K, out.shape[-1])[far] = c - 0.5 * (pk.unsqueeze(-2) @ d.square()).squeeze(-2)
    return out


def feature_stats(x: torch.Tensor, weight: Optional[torch.Tensor], logw: torch.Tensor,
                  m: torch.Tensor, p: torch.Tensor, base: torch.Tensor,
                  observed: Optional[torch.Tensor], hard: bool, bound: float,
                  far=False) -> tuple:
    """The statistics of one block x (P or 1, D, n) (0 where ``observed``
    is False) under per-feature log densities (:func:`feature_log_density`
    of ``m``, ``p``, ``base``; float64) plus ``logw`` (P, K), by products
    in float64: (log-likelihood (P,), N_k (P, K), N_kd = sum_n r o_nd
    (P, K, D), S1 = sum_n r o (x - m) and S2 = sum_n r o (x - m)^2 over
    the observed entries (P, K, D)).  The sums sum r x and sum r x^2 are
    moved to m in float64 (sum r (x - m)^2 = sum r x^2 - 2 m sum r x + N
    m^2, rounded to about 1e-16 of N p |m|^2 relative to S2 ~ N / p);
    components beyond ``bound`` (:func:`expanded_bound`) by differences.
    ``hard``: each point to its nearest mean over its observed features
    (the initialisation), log-likelihood 0.  ``far``: :func:`_beyond`'s
    indices where the caller computed them once for many blocks."""
    if far is False:
        far = _beyond(p, m, bound)
    x2, x = square_terms(x)
    o = None if observed is None else observed.double()
    w = None if weight is None else weight.double()
    if hard:
        # Nearest means over the observed features: |x - mu|^2 less |x|^2,
        # which all means share.
        mm = m * m
        d2 = (mm.sum(-1).unsqueeze(-1) if o is None else _products(mm, o)) \
            - 2 * _products(m, x)
        r, ll = _hard_assignments(d2, logw.exp(), w)
    else:
        logp = feature_log_density((x2, x), m, p, base, o, bound, far)
        logp.add_(logw.double().unsqueeze(-1))
        lse, r = _softmax_stats(logp, w, -2)
        ll = lse.sum(-1)
    Nk = r.sum(-1)
    N = Nk.unsqueeze(-1).expand(m.shape) if o is None else _products(r, o.transpose(-1, -2))
    Sx = _products(r, x.transpose(-1, -2))                                       # (P, K, D)
    S1 = Sx - N * m
    S2 = (_products(r, x2.transpose(-1, -2)) - 2 * m * Sx + N * m * m).clamp_min_(0)
    if far is not None:
        d, _ = _differences(x, o, m, far)
        rd = d * r[far].unsqueeze(-2)
        S1[far], S2[far] = rd.sum(-1), (rd * d).sum(-1)
    return ll, Nk, N, S1, S2


def _expanded_stats(x: torch.Tensor, weight: Optional[torch.Tensor], params: MixtureParams,
                    family: Covariance, factor: torch.Tensor, hard: bool,
                    observed: Optional[torch.Tensor] = None) -> Stats:
    """:func:`block_stats` on the expanded route (:func:`expanded_route`):
    :func:`feature_stats` of the Gaussian's densities, about the current
    means, then in the parameters' dtype.  With missing entries
    (``observed``; x is 0 there) a missing coordinate's conditional
    expectation is the component's mean and its conditional variance the
    component's variance (the features are independent given the
    component): S1 and the squares count observed entries only (N_kd in
    place of N_k), and S2 adds (N_k - N_kd) / p_kd."""
    m = params.means.double()
    p = family.feature_precisions(factor.double(), m.shape[-1])
    ll, Nk, N, S1, S2 = feature_stats(x, weight, torch.log(params.weights.double()), m, p,
                                      gaussian_constants(p), observed, hard,
                                      expanded_bound(params.weights.dtype))
    if observed is not None:
        S2 = S2 + (Nk.unsqueeze(-1) - N).clamp_min(0) / p
    dt = params.weights.dtype
    return Stats(ll.to(dt), Nk.to(dt), S1.to(dt), S2.to(dt), params.means.detach())


def component_log_prob(X: torch.Tensor, params: MixtureParams, family: Covariance,
                       factor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log w_k + log N(x_n | mu_k, Sigma_k) for X (..., n, D), shape (..., K, n).
    ``factor``: :meth:`Covariance.precision_factor` of ``params.cov``, when
    the caller scores many blocks with the same parameters.  On the
    expanded route (:func:`expanded_route`) by :func:`expanded_log_normal`,
    in X's dtype."""
    if expanded_route(family, X.shape[-1], X.device, False):
        if factor is None:
            factor = family.precision_factor(params.cov)
        logn = expanded_log_normal(square_terms(X.transpose(-1, -2).contiguous()), params.means,
                                   factor, family, bound=expanded_bound(X.dtype)).to(X.dtype)
    else:
        logn, _ = log_normal(X.transpose(-1, -2).contiguous(), params.means, params.cov, family,
                             factor)
    return torch.log(params.weights).unsqueeze(-1) + logn


def logsumexp_components(logp: torch.Tensor) -> torch.Tensor:
    """log sum_k exp(logp) over the components, dim -2 of (..., K, n), by
    operations on whole rows of n contiguous values (``torch.logsumexp``
    over that middle dimension of a few components ran 6.5x slower on the
    CPU: 76 against 11.6 ms for (5, 8, 2e5) float32, one thread).  The
    exponents are clamped on the CPU as in :func:`_softmax_stats` (the
    clamped terms are below 2e-35 of the largest); a row whose largest
    term is infinite or NaN gives that value, as ``torch.logsumexp`` does.
    No autograd: the exponentials are taken in place."""
    top = logp.amax(-2, keepdim=True)
    finite = torch.isfinite(top)
    shift = torch.where(finite, top, 0.0)
    e = logp - shift
    if e.device.type == "cpu":   # GPUs compute denormals at full speed
        e = e.clamp_min_(_EXP_FLOOR)
    out = e.exp_().sum(-2).log_().add_(shift.squeeze(-2))
    return torch.where(finite.squeeze(-2), out, top.squeeze(-2))


def mixture_log_likelihood(X: torch.Tensor, params: MixtureParams, family: Covariance,
                           factor: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log p(x_n | mixture) for a batch of mixtures: X (n, D), params with
    batch shape (C,) -> (n, C), contiguous (the callers' reductions over
    the mixtures then run along rows).  The one log-probability primitive
    behind the predictions of both estimators (a plain mixture is C = 1)."""
    lse = logsumexp_components(component_log_prob(X, params, family, factor))
    return lse.transpose(-1, -2).contiguous()


def observed_component_log_prob(X: torch.Tensor, params: MixtureParams,
                                family: Covariance, dtype: Optional[torch.dtype] = None
                                ) -> torch.Tensor:
    """log w_k + log N(x_o | mu_k,o, Sigma_k,oo) for points X (n, D) with
    missing entries (NaN): each point scored on its observed features (the
    marginal Gaussian), shape (..., K, n) for params of batch shape (...)
    (() or (C,)).  The rule of every prediction for rows with missing
    values (``missing="marginalize"``).  ``dtype``: the precision the
    answer is for (the model's; X's when None), which sets the expanded
    route's bound (:func:`expanded_bound`)."""
    single = params.weights.dim() == 1
    p = params.map(lambda t: t[None]) if single else params
    observed = ~torch.isnan(X)
    x = torch.where(observed, X, torch.zeros((), dtype=X.dtype, device=X.device))
    xT, oT = x.t().contiguous()[None], observed.t().contiguous()[None]
    if expanded_route(family, X.shape[-1], X.device, True):
        logn = expanded_log_normal(square_terms(xT), p.means, family.precision_factor(p.cov),
                                   family, oT, expanded_bound(dtype or X.dtype)).to(X.dtype)
    else:
        logn = observed_terms(xT, oT, p, family, need_moments=False)[0]
    out = torch.log(p.weights).unsqueeze(-1) + logn
    return out[0] if single else out


def far_component_log_prob(U: torch.Tensor, log_s: torch.Tensor, params: MixtureParams,
                           family: Covariance) -> tuple[torch.Tensor, torch.Tensor]:
    """log w_k + log N(x | mu_k, Sigma_k) for points x = s u far from the
    mixture, in float64, as ``rel + lead``: ``rel`` (..., K, n) relative to
    one reference component per point, ``lead`` (n,) that component's value.

    The prediction rule for far points.  Expanded in powers of the distance,
    log N = -s^2 q(u)/2 + s u^T Lambda mu + (c - q(mu)/2) with q the
    Mahalanobis form; the coefficients are O(1) for the unit direction ``u``
    (max |u_d| = 1, given with ``log_s`` = log s: s itself may overflow), and
    the differences between components are taken coefficient by
    coefficient.  So the answer is exact where the direct form
    loses the linear term to rounding (two components of equal covariance,
    a point at 1e19: float64 cannot resolve 1e19 beside 1e38), and keeps its
    limit where s^2 overflows: the component with the heaviest tail along u
    (the smallest q(u)), then the largest linear term, then the constant.
    ``rel`` is finite for that component, so responsibilities and class
    posteriors are always numbers; ``lead`` (the log density's scale) is
    -inf only where it is below the float64 range.  Components of zero
    weight (padding) never serve as the reference."""
    means, K = params.means, params.weights.shape[-1]
    factor = family.precision_factor(params.cov)
    UT = U.t().expand(means.shape[:-1] + U.t().shape)                 # (..., K, D, n)
    q_u = family.mahalanobis(UT, factor)
    q_m = family.mahalanobis(means.unsqueeze(-1), factor)            # (..., K, 1)
    q_d = family.mahalanobis(UT - means.unsqueeze(-1), factor)
    logw = torch.log(params.weights).unsqueeze(-1)
    A = -0.5 * q_u
    B = 0.5 * (q_u + q_m - q_d)                                      # u^T Lambda mu
    C = (logw + family.half_log_det(factor, K).unsqueeze(-1) - 0.5 * q_m
         - 0.5 * means.shape[-1] * _LOG_2PI).expand_as(A)
    return _far_relative(A, B, C, log_s)


def far_observed_log_prob(U: torch.Tensor, log_s: torch.Tensor, params: MixtureParams,
                          family: Covariance) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`far_component_log_prob` for far points with missing entries
    (``U`` NaN there): the same expansion of the observed coordinates'
    marginal, log w_k + log N(x_o | mu_k,o, Sigma_k,oo), with A the embedded
    Sigma_oo^-1 of :func:`~bayesgmm.covariance.observed_gaussian` per
    missingness pattern: -s^2 u^T A u / 2 + s u^T A mu + (c - mu^T A mu / 2).
    Components sharing a covariance ("tied") get bitwise equal quadratic
    terms, so their differences are exactly the linear ones (the direct
    float64 form lost them past ~1e16 x the spread).  ``params`` of batch
    shape () or (C,); returns (``rel`` (..., K, n), ``lead`` (n,))."""
    single = params.weights.dim() == 1
    p = params.map(lambda t: t[None]) if single else params
    K = p.weights.shape[-1]
    observed = ~torch.isnan(U)
    u = torch.where(observed, U, torch.zeros((), dtype=U.dtype, device=U.device))
    uniq, inv = torch.unique(observed, dim=0, return_inverse=True)
    A, hld, n_obs = observed_gaussian(family.dense(p.cov, K).unsqueeze(1),
                                      uniq[None, :, None, :])          # (P, T, K, D, D)
    Ap = A[:, inv]                                                     # (P, n, K, D, D)
    Au = (Ap @ u[None, :, None, :, None]).squeeze(-1)                  # (P, n, K, D)
    Am = (Ap @ p.means[:, None, :, :, None]).squeeze(-1)
    mu = p.means[:, None]                                              # (P, 1, K, D)
    quad_u = (u[None, :, None, :] * Au).sum(-1)                        # (P, n, K)
    quad_m = (mu * Am).sum(-1)
    lin = (mu * Au).sum(-1)
    C = (torch.log(p.weights)[:, None] - hld[:, inv] - 0.5 * n_obs[:, inv] * _LOG_2PI
         - 0.5 * quad_m)
    rel, lead = _far_relative(*(v.transpose(-1, -2) for v in (-0.5 * quad_u, lin, C)), log_s)
    return (rel[0] if single else rel), lead


def _far_relative(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, log_s: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The scores s^2 A + s B + C (..., K, n) of far points, s = exp(log_s),
    relative to a reference component per point, and that component's
    value (see :func:`far_component_log_prob`)."""
    shape, n = A.shape, A.shape[-1]
    A, B, C = (t.reshape(-1, n) for t in (A, B, C))
    real = torch.isfinite(C)
    # The reference: lexicographic maximum of (A, B) over real components.
    neg = torch.tensor(-math.inf, dtype=A.dtype, device=A.device)
    a_ref = torch.where(real, A, neg).amax(0)
    tie = real & (A == a_ref)
    b_ref = torch.where(tie, B, neg).amax(0)
    ref = (tie & (B == b_ref)).to(torch.uint8).argmax(0, keepdim=True)
    c_ref = C.gather(0, ref).squeeze(0)
    s = torch.exp(log_s)
    dA, dB = A - a_ref, B - b_ref
    quad = torch.where(dA == 0, torch.zeros_like(dA), s * s * dA)   # <= 0, -inf past the range
    rel = torch.where(torch.isinf(quad), quad,
                      quad + torch.where(dB == 0, torch.zeros_like(dB), s * dB) + (C - c_ref))
    rel = torch.where(real, rel, neg)
    lead = s * s * a_ref
    lead = torch.where(torch.isfinite(lead), lead + s * b_ref + c_ref, neg)
    return rel.reshape(shape), torch.where(torch.isnan(lead), neg, lead)


def log_prior(params: MixtureParams, pt: PriorTensors, family: Covariance,
              mask: Optional[torch.Tensor] = None,
              log_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """log p(weights) + log p(means) + log p(covariances) over the real
    (``mask``) components, batched over the leading dims."""
    if mask is None:
        mask = torch.ones(params.weights.shape, dtype=torch.bool, device=params.weights.device)
    maskf = mask.to(params.weights.dtype)
    if log_weights is None:
        log_weights = torch.log(params.weights.clamp_min(torch.finfo(params.weights.dtype).tiny))
    lp = masked_dirichlet_log_prob(log_weights, pt.concentration, mask)
    z = (params.means - pt.mean_loc) / pt.mean_scale
    lp_means = (-0.5 * z * z - torch.log(pt.mean_scale) - 0.5 * _LOG_2PI).sum(-1)
    lp_cov = family.log_prior(params.cov, pt)
    lp = lp + (lp_means * maskf).sum(-1)
    return lp + ((lp_cov * maskf).sum(-1) if family.per_component else lp_cov)


# ----------------------------------------------------------------------------
# Sufficient statistics and the M-step
# ----------------------------------------------------------------------------
@dataclass
class Stats:
    """Additive sufficient statistics of a batch of P mixtures about the
    reference means ``ref`` (P, K, D): data log-likelihood (P,), counts N_k
    (P, K), S1 = sum r (x - ref) (P, K, D) and S2 = sum r (x - ref)(x - ref)^T
    ((P, K, D, D), or its diagonal (P, K, D)).  Statistics of disjoint row
    blocks about the same reference add up to those of their union."""

    loglik: torch.Tensor
    Nk: torch.Tensor
    S1: torch.Tensor
    S2: torch.Tensor
    ref: torch.Tensor

    def __add__(self, other: "Stats") -> "Stats":
        return Stats(self.loglik + other.loglik, self.Nk + other.Nk, self.S1 + other.S1,
                     self.S2 + other.S2, self.ref)


def _softmax_stats(logp: torch.Tensor, weight: Optional[torch.Tensor], dim: int):
    """log-sum-exp of ``logp`` over ``dim`` and the responsibilities (in
    ``logp``'s memory), with the exponents clamped on CPU: exp(x) for x in
    about (-103, -87) is a float32 denormal, which x86 CPUs compute ~10x
    slower; exp(-80) ~ 2e-35 is zero next to the largest term (exactly 1).
    ``weight`` (points) scales both (0 on padded rows)."""
    top = logp.amax(dim, keepdim=True)
    e = logp.sub_(top)
    if e.device.type == "cpu":   # GPUs compute denormals at full speed
        e = e.clamp_min_(_EXP_FLOOR)
    e = e.exp_()
    total = e.sum(dim, keepdim=True)
    lse = (top + torch.log(total)).squeeze(dim)
    r = e.div_(total)
    if weight is not None:
        lse = torch.where(weight > 0, lse * weight, torch.zeros_like(lse))
        r = r * weight.unsqueeze(dim)
    return lse, r


#: Fewest features at which points with missing entries take the precision
#: route of :func:`observed_terms`: below it the per-pattern factors are
#: cheap and the route's per-bucket steps cost more than they save (5,000
#: rows, K=3, full, one thread: D=5 with 30% missing 0.99 s by factors
#: against 1.6 s, D=8 with 10% equal, D=10 with 10% 0.84 against 0.76 s,
#: D=12 with 30% 4.2 against 2.3 s).
PRECISION_ROUTE_MIN_FEATURES = 10


def _rows_in(t: torch.Tensor, T: int, pattern: torch.Tensor):
    """The rows whose pattern (``pattern`` (n,), of T) is among ``t``, and
    each one's position in ``t``."""
    local = torch.full((T,), -1, dtype=torch.long, device=pattern.device)
    local[t] = torch.arange(t.shape[0], device=pattern.device)
    f = (local[pattern] >= 0).nonzero().squeeze(1)
    return f, local[pattern[f]]


class ConditionalCovariance:
    """The conditional covariance C_t of the missing coordinates given the
    observed ones, per missingness pattern t (of T) and component of P
    mixtures: (Lambda_mm)^-1 = Sigma_mm - Sigma_mo Sigma_oo^-1 Sigma_om on
    the missing block (Lambda = Sigma^-1), zero on the observed rows and
    columns.  With the covariances ``Sigma`` (P, K, D, D), held in the
    form the route of :func:`observed_terms` built: ``parts``, a list of
    (patterns ``t`` (T_b,), their coordinates ``slots`` (T_b, m_b), the
    padding D, and (Lambda_mm)^-1 (P, K, T_b, m_b, m_b) on those slots,
    zero on the padding); or the embedded Sigma_oo^-1 ``A``
    (P, T, K, D, D), as Sigma - Sigma A Sigma."""

    def __init__(self, D: int, T: int, parts=None, Sigma=None, A=None):
        self.D, self.T, self.parts, self.Sigma, self.A = D, T, parts, Sigma, A

    def _flat(self, slots: torch.Tensor) -> torch.Tensor:
        """(T_b, m_b m_b) positions of each pattern's block in a flattened
        (D + 1, D + 1) matrix whose last row and column take the padding."""
        flat = slots.unsqueeze(-1) * (self.D + 1) + slots.unsqueeze(-2)
        return flat.reshape(slots.shape[0], -1)

    def weighted(self, R: torch.Tensor) -> torch.Tensor:
        """sum_t R_t C_t (P, K, D, D) for pattern masses ``R`` (P, K, T)."""
        D = self.D
        if self.parts is None:
            # (sum_t R_t) Sigma - Sigma (sum_t R_t A_t) Sigma: two products
            # per component instead of two per pattern.
            S = self.Sigma
            return (R.sum(-1)[..., None, None] * S
                    - S @ torch.einsum("pkt,ptkde->pkde", R, self.A) @ S)
        P, K = R.shape[:2]
        out = R.new_zeros(P, K, (D + 1) * (D + 1))
        for t, slots, inv_mm in self.parts:
            v = (R[..., t, None, None] * inv_mm).reshape(P, K, -1)
            out.scatter_add_(-1, self._flat(slots).reshape(-1).expand(P, K, -1), v)
        return out.reshape(P, K, D + 1, D + 1)[..., :D, :D]

    def per_pattern(self) -> torch.Tensor:
        """C_t of every pattern and component, (P, T, K, D, D)."""
        D = self.D
        if self.parts is None:
            S = self.Sigma.unsqueeze(1)
            return S - S @ self.A @ S
        P, K = self.Sigma.shape[:2]
        out = self.Sigma.new_zeros(P, K, self.T, (D + 1) * (D + 1))
        for t, slots, inv_mm in self.parts:
            blk = inv_mm.new_zeros(P, K, t.shape[0], (D + 1) * (D + 1))
            blk.scatter_add_(-1, self._flat(slots).expand(P, K, -1, -1),
                             inv_mm.reshape(P, K, t.shape[0], -1))
            out[:, :, t] = blk
        return out.reshape(P, K, self.T, D + 1, D + 1)[..., :D, :D].transpose(1, 2)

    def draw(self, pattern: torch.Tensor, comp: torch.Tensor, eps: torch.Tensor,
             observed: torch.Tensor) -> torch.Tensor:
        """Draws (n, D) from N(0, C) of each row's pattern (``pattern``
        (n,)) and component (``comp`` (n,)) of the batch's first mixture,
        from standard normals ``eps`` (n, D): L eps on the missing
        coordinates, L the lower Cholesky factor of C_mm in their order
        (the observed coordinates, ``observed`` (n, D), get eps or 0).  That
        is the factor of C with a unit diagonal on the observed
        coordinates restricted to the missing ones, so both forms give the
        same draw from the same ``eps``."""
        D = self.D
        if self.parts is None:
            C = self.per_pattern()[0, pattern, comp]                       # (n, D, D)
            L = torch.linalg.cholesky(C + torch.diag_embed(observed.to(C.dtype)))
            return (L @ eps.unsqueeze(-1)).squeeze(-1)
        out = eps.new_zeros(eps.shape[0], D + 1)
        e = torch.cat([eps, eps.new_zeros(eps.shape[0], 1)], -1)
        for t, slots, inv_mm in self.parts:
            f, lt = _rows_in(t, self.T, pattern)
            sl = slots[lt]                                                  # (F, m), D: padding
            L = torch.linalg.cholesky(inv_mm[0, comp[f], lt]
                                      + torch.diag_embed((sl == D).to(eps.dtype)))
            out[f] = out[f].scatter_(-1, sl, (L @ e[f].gather(-1, sl).unsqueeze(-1)).squeeze(-1))
        return out[:, :D]


class _JoinedConditional(ConditionalCovariance):
    """The :class:`ConditionalCovariance` of two sets of patterns, the
    second's numbered after the first's."""

    def __init__(self, first: ConditionalCovariance, second: ConditionalCovariance):
        super().__init__(first.D, first.T + second.T)
        self.first, self.second = first, second

    def weighted(self, R: torch.Tensor) -> torch.Tensor:
        T0 = self.first.T
        return self.first.weighted(R[..., :T0]) + self.second.weighted(R[..., T0:])

    def per_pattern(self) -> torch.Tensor:
        return torch.cat([self.first.per_pattern(), self.second.per_pattern()], 1)

    def draw(self, pattern: torch.Tensor, comp: torch.Tensor, eps: torch.Tensor,
             observed: torch.Tensor) -> torch.Tensor:
        T0 = self.first.T
        out = torch.empty_like(eps)
        for rows, part, shift in (((pattern < T0).nonzero().squeeze(1), self.first, 0),
                                  ((pattern >= T0).nonzero().squeeze(1), self.second, T0)):
            out[rows] = part.draw(pattern[rows] - shift, comp[rows], eps[rows], observed[rows])
        return out


def observed_terms(x: torch.Tensor, observed: torch.Tensor, params: MixtureParams,
                   family: Covariance, need_moments: bool = True):
    """Log densities of points with missing entries under P mixtures, by
    their observed coordinates only (the marginal Gaussian), and what the
    E-step needs of the missing ones.

    ``x`` (P or 1, D, n) with missing entries 0, ``observed`` likewise bool.
    Returns ``logn`` (P, K, n); and with ``need_moments`` ``y`` (P, K, D, n),
    the conditional expectation of x - mu_k given the observed coordinates
    (the difference itself where observed), the
    :class:`ConditionalCovariance` of each missingness pattern present (at
    most min(n, 2^D) of them) and each point's pattern (P or 1, n).

    Points that miss at most half the coordinates (m of D) take the
    precision Lambda = Sigma^-1 of each component (one D x D factorisation)
    and one m x m factor per pattern (:func:`_schur_terms`): with d the
    difference, zero where missing, and u = (Lambda d)_m, E[x_m - mu_m |
    x_o] = -Lambda_mm^-1 u, the conditional covariance is Lambda_mm^-1,
    |Sigma_oo| = |Sigma| |Lambda_mm| (the Schur complements of a
    partitioned matrix and its inverse), and d_o^T Sigma_oo^-1 d_o is the
    full Mahalanobis form of d completed by E[x_m - mu_m | x_o].  The others
    take one D x D factor of the embedded Sigma_oo per pattern
    (:func:`~bayesgmm.covariance.observed_gaussian`), which keeps its
    accuracy where few coordinates are observed (the partitions would
    subtract nearly equal terms there).  At D = 30 with 10% of entries
    missing, a row misses 3 on average, at most about 10.  Below
    :data:`PRECISION_ROUTE_MIN_FEATURES` features every point takes the
    factor route."""
    P, K, D = params.means.shape
    n = x.shape[-1]
    # Missingness patterns of the block: a code per point, made unique.
    bits = (observed.to(torch.int64) << torch.arange(D, device=x.device).unsqueeze(-1)).sum(-2) \
        if D < 63 else None
    if bits is None:
        uniq, inv = torch.unique(observed.transpose(-1, -2).reshape(-1, D), dim=0,
                                 return_inverse=True)
    else:
        codes, inv = torch.unique(bits.reshape(-1), return_inverse=True)
        uniq = ((codes.unsqueeze(-1) >> torch.arange(D, device=x.device)) & 1).bool()
    inv = inv.reshape(observed.shape[0], n)                                  # (P or 1, n)
    pi = inv.expand(P, n)
    n_obs = uniq.sum(-1)                                                     # (T,)
    heavy = (2 * (D - n_obs[pi]) > D).any(0) if D >= PRECISION_ROUTE_MIN_FEATURES \
        else torch.ones(n, dtype=torch.bool, device=x.device)               # (n,): for any pair
    if bool(heavy.any()) and not bool(heavy.all()):
        # Each kind of point by its own route (a few heavy rows no longer
        # send every row of the block down the costlier one).
        parts = [heavy.logical_not().nonzero().squeeze(1), heavy.nonzero().squeeze(1)]
        runs = [observed_terms(x[..., c], observed[..., c], params, family, need_moments)
                for c in parts]
        logn = x.new_empty(P, K, n)
        for c, r in zip(parts, runs):
            logn[..., c] = r[0]
        if not need_moments:
            return logn, None, None, None
        y = x.new_empty(P, K, D, n)
        inv = inv.new_empty(inv.shape)
        T0 = runs[0][2].T
        for c, r, shift in zip(parts, runs, (0, T0)):
            y[..., c] = r[1]
            inv[..., c] = r[3] + shift
        return logn, y, _JoinedConditional(runs[0][2], runs[1][2]), inv
    n_obs = n_obs.to(x.dtype)
    Sigma = family.dense(params.cov, K)                                      # (P, K, D, D)
    diff = torch.where(observed.unsqueeze(-3), x.unsqueeze(-3) - params.means.unsqueeze(-1),
                       torch.zeros((), dtype=x.dtype, device=x.device))     # (P, K, D, n)
    if not bool(heavy.any()):
        logn, y, cond = _schur_terms(diff, Sigma, uniq, n_obs, pi, need_moments)
        return logn, y, cond, (inv if need_moments else None)
    pidx = torch.arange(P, device=x.device).unsqueeze(-1)
    A, hld, _ = observed_gaussian(Sigma.unsqueeze(1), uniq[None, :, None, :])  # (P, T, K, ...)
    Ap = A[pidx, pi].permute(0, 2, 1, 3, 4)                                 # (P, K, n, D, D)
    d = diff.permute(0, 1, 3, 2).unsqueeze(-1)                              # (P, K, n, D, 1)
    Ad = (Ap @ d)
    quad = (d * Ad).sum((-1, -2))                                           # (P, K, n)
    const = hld[pidx, pi].permute(0, 2, 1) + (0.5 * _LOG_2PI) * n_obs[pi].unsqueeze(1)
    logn = -const - 0.5 * quad
    if not need_moments:
        return logn, None, None, None
    # One (D, D) x (D, n) product per mixture and component, not one
    # matrix-vector product per point (17x faster at D = 30).
    y = Sigma @ Ad.squeeze(-1).permute(0, 1, 3, 2)                          # (P, K, D, n)
    return logn, y, ConditionalCovariance(D, uniq.shape[0], Sigma=Sigma, A=A), inv


def _schur_terms(diff: torch.Tensor, Sigma: torch.Tensor, uniq: torch.Tensor,
                 n_obs: torch.Tensor, pi: torch.Tensor, need_moments: bool):
    """:func:`observed_terms` by the precision's partitions: ``diff``
    (P, K, D, n) zero where missing, patterns ``uniq`` (T, D) with ``n_obs``
    observed coordinates (none missing more than half), each point's
    pattern ``pi`` (P, n); returns ``logn``, ``y`` and the
    :class:`ConditionalCovariance` (None, None without moments).
    Patterns are taken in buckets of missing counts (1, 2, 3-4, 5-8, ...),
    each padded to its largest count m_b only: the (m, m) terms per pattern and point cost m^2
    to m^3, and most rows miss few entries.

    The Mahalanobis form is that of the completed difference (the missing
    coordinates at their conditional expectation, which minimises it over
    them, to d_o^T Sigma_oo^-1 d_o), as |L^-1 d~|^2 with Sigma = L L^T: a
    sum of squares, where d^T Lambda d - u^T Lambda_mm^-1 u subtracts terms
    up to cond(Sigma) times larger than the result (in float32, errors of
    0.1-10 nats at condition numbers 1e5-1e6, against 2e-3-3e-2 by the
    factor route), and first-order insensitive to the error of the
    conditional expectation."""
    P, K, D, n = diff.shape
    T = uniq.shape[0]
    dev, dt = diff.device, diff.dtype
    L = _chol(Sigma)
    Lam = torch.cholesky_inverse(L)                                          # (P, K, D, D)
    half_logdet = torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1) \
        .unsqueeze(-1).expand(P, K, T).clone()                               # 0.5 log |Sigma_oo|
    # Points flattened over the pairs, each with its pair and pattern.
    gT = (Lam @ diff).permute(0, 3, 1, 2).reshape(P * n, K, D)               # Lambda d
    fp = torch.arange(P, device=dev).repeat_interleave(n)
    ft = pi.reshape(-1)
    # The completed differences, with a padding coordinate (dropped).
    yT = torch.cat([diff.permute(0, 3, 1, 2).reshape(P * n, K, D),
                    diff.new_zeros(P * n, K, 1)], -1)
    missing = D - n_obs.long()                                               # (T,)
    # Each pattern's missing coordinates first (stable: in order).
    order_all = torch.argsort(uniq.to(torch.uint8), dim=-1, stable=True)
    bucket = torch.where(missing > 0, torch.ceil(torch.log2(missing.clamp_min(1).float())).long(),
                         torch.full_like(missing, -1))
    parts = []
    for b in torch.unique(bucket).tolist():
        if b < 0:                                                            # complete rows
            continue
        t = (bucket == b).nonzero().squeeze(1)                               # (T_b,)
        m = int(missing[t].max())
        order = order_all[t, :m]
        valid = torch.arange(m, device=dev) < missing[t].unsqueeze(-1)       # (T_b, m)
        vv = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        eye = torch.eye(m, dtype=dt, device=dev)
        # Lambda_mm per pattern, the identity on the padding.
        Lm = _chol(torch.where(vv, Lam[:, :, order.unsqueeze(-1), order.unsqueeze(-2)], eye))
        half_logdet[:, :, t] += torch.log(torch.diagonal(Lm, dim1=-2, dim2=-1)).sum(-1)
        f, lt = _rows_in(t, T, ft)                                           # the bucket's points
        lp = fp[f]
        # u = (Lambda d)_m
        u = gT[f].gather(-1, order[lt].unsqueeze(1).expand(-1, K, m)) \
            * valid[lt].unsqueeze(1).to(dt)                                  # (F, K, m)
        inv_mm = torch.cholesky_inverse(Lm) * vv.to(dt)                      # (P, K, T_b, m, m)
        v = (inv_mm[lp, :, lt] * u.unsqueeze(-2)).sum(-1)                    # (F, K, m)
        # E[x_m - mu_m | x_o] = -v in the missing slots (the padding goes
        # to the extra coordinate).
        slots = torch.where(valid, order, torch.full_like(order, D))
        yT[f] = yT[f].scatter_(-1, slots[lt].unsqueeze(1).expand(-1, K, m), -v)
        parts.append((t, slots, inv_mm))
    y = yT[..., :D].reshape(P, n, K, D).permute(0, 2, 3, 1)                  # (P, K, D, n)
    quad = torch.linalg.solve_triangular(L, y, upper=False).square().sum(-2)  # (P, K, n)
    const = half_logdet.gather(-1, pi.unsqueeze(1).expand(P, K, n)) \
        + (0.5 * _LOG_2PI) * n_obs[pi].unsqueeze(1)
    logn = -const - 0.5 * quad
    if not need_moments:
        return logn, None, None
    return logn, y, ConditionalCovariance(D, T, parts=parts, Sigma=Sigma)


def block_stats(x: torch.Tensor, weight: Optional[torch.Tensor], params: MixtureParams,
                family: Covariance, factor: Optional[torch.Tensor] = None,
                hard: bool = False, observed: Optional[torch.Tensor] = None) -> Stats:
    """E-step statistics of one block of points x (P or 1, D, n) for P
    mixtures, by exact differences from the current means (or on the
    expanded route, :func:`expanded_route`, by products in float64);
    ``weight`` (P or 1, n) scales each point's contribution.

    ``hard=True`` assigns each point to its nearest mean (initialisation)
    instead of the posterior responsibilities.  With ``observed``, points
    with missing entries count by their observed coordinates (the marginal
    Gaussian), and the statistics take the conditional expectations of the
    missing ones: E[x_m | x_o] in the first moments, plus their conditional
    covariance in the second (exact EM for Gaussian mixtures with data
    missing at random)."""
    if expanded_route(family, x.shape[-2], x.device, observed is not None):
        return _expanded_stats(x, weight, params, family, factor, hard, observed)
    if hard and observed is None:
        # Nearest means only: the differences, not the densities.
        logn, diff = None, x.unsqueeze(-3) - params.means.unsqueeze(-1)
    else:
        logn, diff = log_normal(x, params.means, params.cov, family, factor)   # (P, K, n)
    inc = None
    if observed is not None:
        # Only the points with a missing entry (for any pair) take the
        # marginal path; complete ones keep the exact, cheaper plain terms.
        inc = (~observed).any(-2).any(0).nonzero().squeeze(1)
        if inc.numel() == 0:
            inc = None
        else:
            logn_m, y_m, cond, inv = observed_terms(x[..., inc], observed[..., inc], params,
                                                    family)
            logn[..., inc] = logn_m
            diff = diff.expand(logn.shape[:-1] + diff.shape[-2:]).clone() \
                if diff.shape[0] != logn.shape[0] else diff
            diff[..., inc] = y_m
    if hard:
        # Missing coordinates have y = 0 under the unit start covariances.
        r, ll = _hard_assignments(sum_features(diff.square()), params.weights, weight)
    else:
        # Components are rows of n contiguous values: the max, the sum and the
        # division over K are vectorised adds of whole rows.
        lse, r = _softmax_stats(logn.add_(torch.log(params.weights).unsqueeze(-1)), weight, -2)
        ll = lse.sum(-1)
    rd = diff * r.unsqueeze(-2)                                                 # (P, K, D, n)
    S2 = family.moments(rd, diff)
    if inc is not None:
        # The missing coordinates' conditional covariance, per pattern, times
        # the pattern's responsibility mass R_t.
        P, K = r.shape[:2]
        Rt = r.new_zeros(P, K, cond.T).scatter_add_(
            -1, inv.expand(P, -1).unsqueeze(1).expand(P, K, -1), r[..., inc])   # (P, K, T)
        extra = cond.weighted(Rt)
        S2 = S2 + (extra if family.full_moments else torch.diagonal(extra, dim1=-2, dim2=-1))
    return Stats(ll, r.sum(-1), rd.sum(-1), S2, params.means.detach())


def e_step(groups: Groups, params: MixtureParams, gidx: torch.Tensor, family: Covariance,
           hard: bool = False) -> Stats:
    """Statistics of P mixtures (batch shape (P,)) over their groups' points,
    summed over blocks of rows (bounded memory at any N)."""
    P, K, D = params.means.shape
    factor = family.precision_factor(params.cov)
    total = None
    expanded = expanded_route(family, D, params.means.device, groups.has_missing)
    dense = not family.diagonal_precision
    for x, w, o in groups.blocks(gidx, groups.rows(P, K, expanded, dense)):
        s = block_stats(x, w, params, family, factor, hard, o)
        total = s if total is None else total + s
    if groups.reduce is not None:      # one shard of several processes: sum the shards
        groups.reduce([total.loglik, total.Nk, total.S1, total.S2])
    return total


#: The fixed cost of one E-step call on the CPU (its blocks' dispatch and
#: Python), in elements of (pair, component, row): what a separate bucket of
#: :func:`bucketed_e_step` must save to be worth it.
BUCKET_OVERHEAD_ELEMENTS = 2 ** 17


def k_buckets(k_real: Sequence[int], K: int, rows: int) -> list[tuple[int, list[int]]]:
    """Pairs of real component counts ``k_real`` (padded to K) grouped into
    buckets, each computed at its own largest k: [(k_b, pair positions)].
    The buckets minimise the elements computed (pairs x k_b x ``rows``)
    plus :data:`BUCKET_OVERHEAD_ELEMENTS` per bucket (a dynamic programme over
    the sorted distinct counts); one bucket at K when splitting saves
    nothing (a single bucket below K trims every pair's padding)."""
    ks = sorted(set(int(k) for k in k_real))
    count = {k: 0 for k in ks}
    for k in k_real:
        count[int(k)] += 1
    V = len(ks)
    # best[j]: the cheapest bucketing of the counts ks[:j]; a bucket
    # ks[i:j] costs its pairs times ks[j - 1] (its largest) times rows.
    best, cut = [0.0] + [math.inf] * V, [0] * (V + 1)
    for j in range(1, V + 1):
        pairs = 0
        for i in range(j - 1, -1, -1):
            pairs += count[ks[i]]
            c = best[i] + pairs * ks[j - 1] * rows + BUCKET_OVERHEAD_ELEMENTS
            if c < best[j]:
                best[j], cut[j] = c, i
    if best[V] >= len(k_real) * K * rows + BUCKET_OVERHEAD_ELEMENTS:
        return [(K, list(range(len(k_real))))]
    out, j = [], V
    while j > 0:
        i = cut[j]
        members = set(ks[i:j])
        out.append((ks[j - 1], [n for n, k in enumerate(k_real) if int(k) in members]))
        j = i
    return out[::-1]


def trim(params: MixtureParams, k: int, family: Covariance) -> MixtureParams:
    """Parameters (G, K, ...) cut to the first k components."""
    cov = params.cov[:, :k] if family.per_component else params.cov
    return MixtureParams(params.weights[:, :k], params.means[:, :k], cov)


def bucketed_e_step(groups, params: MixtureParams, gidx: torch.Tensor, family: Covariance,
                    mask: torch.Tensor) -> Stats:
    """:func:`e_step` of P mixtures whose real components (``mask`` (P, K);
    each pair computed up to its last real one) differ in number: pairs are computed in buckets at
    their own largest K (:func:`k_buckets`) and their statistics padded
    back with zeros, as padded components (weight 0) get.  In memory, one
    process, CPU only (elsewhere one call: a streamed or reduced pass per
    bucket, or kernel launches on a GPU, would cost more than the padding)."""
    P, K = params.weights.shape
    # With ``reduce`` the buckets (chosen from this shard's rows) could
    # differ between processes, and so would their number of reduce calls:
    # a deadlock, not only a slower pass.
    if not isinstance(groups, Groups) or groups.reduce is not None \
            or params.means.device.type != "cpu" or P < 2:
        return e_step(groups, params, gidx, family)
    k_real = (mask * torch.arange(1, K + 1, device=mask.device)).amax(-1).tolist()
    buckets = k_buckets(k_real, K, groups.XT.shape[-1])
    if buckets[0][0] == K:                  # one bucket, at K: nothing to save
        return e_step(groups, params, gidx, family)
    parts, order = [], []
    for k, members in buckets:
        idx = torch.tensor(members, device=gidx.device)
        parts.append(e_step(groups, trim(params.select(idx), k, family), gidx[idx], family))
        order += members
    pad = lambda t: torch.nn.functional.pad(t, (0, 0) * (t.dim() - 2) + (0, K - t.shape[1]))
    inv = torch.empty(P, dtype=torch.long, device=gidx.device)
    inv[torch.tensor(order, device=gidx.device)] = torch.arange(P, device=gidx.device)
    join = lambda ts: torch.cat(ts)[inv]
    return Stats(join([s.loglik for s in parts]), join([pad(s.Nk) for s in parts]),
                 join([pad(s.S1) for s in parts]), join([pad(s.S2) for s in parts]),
                 params.means.detach())


def dirichlet_mode(Nk: torch.Tensor, concentration: torch.Tensor,
                   mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Weights maximising Dirichlet(w | a) times prod w_k^N_k over the real
    components: (N_k + a_k - 1) / sum, kept off the simplex's edge."""
    maskf = 1.0 if mask is None else mask.to(Nk.dtype)
    w = (Nk + concentration - 1).clamp_min(0) * maskf
    w = w / w.sum(-1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    w = w.clamp_min(MIN_WEIGHT) * maskf
    return w / w.sum(-1, keepdim=True)


def m_step(stats: Stats, params: MixtureParams, pt: PriorTensors, family: Covariance,
           mask: Optional[torch.Tensor]) -> MixtureParams:
    """Closed-form conditional maximisation of the log joint (ECM): the
    weights (Dirichlet mode), then the means given the current covariances,
    then the covariances given the new means.  Each step cannot decrease the
    log joint, and its fixed points are stationary points of the MAP
    objective SVI optimises."""
    w = dirichlet_mode(stats.Nk, pt.concentration, mask)
    shift = family.mean_shift(stats.Nk, stats.S1, params.cov, pt, stats.ref)
    S = family.recentre(stats.S2, stats.S1, stats.Nk, shift)
    out = MixtureParams(w, stats.ref + shift, family.m_step(stats.Nk, S, pt))
    return out if mask is None else masked(out, mask, family)


def masked(params: MixtureParams, mask: torch.Tensor, family: Covariance) -> MixtureParams:
    """Padded components at weight 0, mean 0 and a neutral covariance."""
    w = torch.where(mask, params.weights, torch.zeros_like(params.weights))
    w = w / w.sum(-1, keepdim=True)
    m = torch.where(mask.unsqueeze(-1), params.means, torch.zeros_like(params.means))
    return MixtureParams(w, m, family.pad(params.cov, mask))


def negative_log_joint(groups: Groups, params: MixtureParams, gidx: torch.Tensor,
                       pt: PriorTensors, family: Covariance, mask: Optional[torch.Tensor] = None,
                       dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """-log p(X_g, weights, means, covariances) of P mixtures (batch (P,)),
    the assignments summed out: the quantity ``TraceEnum_ELBO`` reports for
    an ``AutoDelta`` guide.  Evaluated in ``dtype`` (float64 by default, so
    the reported loss is exact whatever precision the fit ran in)."""
    p = params.map(lambda t: t.to(dtype))
    # On the simplex in ``dtype``, as the reported weights_ are: float32
    # weights summing to 1 +- 1e-7 would shift the loss by N x 1e-7.
    p = MixtureParams(p.weights / p.weights.sum(-1, keepdim=True), p.means, p.cov)
    pt64 = pt.to(dtype)
    P, K = p.weights.shape
    factor = family.precision_factor(p.cov)
    ll = torch.zeros(P, dtype=dtype, device=p.weights.device)
    expanded = expanded_route(family, p.means.shape[-1], p.means.device, groups.has_missing)
    loss_bound = EXPANDED_MAX_TERM_EXACT if params.weights.dtype == torch.float64 \
        else EXPANDED_MAX_TERM_LOSS
    dense = not family.diagonal_precision
    for x, w, o in groups.blocks(gidx, groups.rows(P, K, expanded, dense)):
        if expanded:
            logn = expanded_log_normal(square_terms(x), p.means, factor, family, o,
                                       loss_bound).to(dtype)
            o = None                   # the marginal is already taken
        else:
            logn = log_normal(x.to(dtype), p.means, p.cov, family, factor)[0]
        if o is not None:          # points with a missing entry: their observed marginal
            inc = (~o).any(-2).any(0).nonzero().squeeze(1)
            if inc.numel():
                logn[..., inc] = observed_terms(x[..., inc].to(dtype), o[..., inc], p, family,
                                                need_moments=False)[0]
        lse = torch.logsumexp(torch.log(p.weights).unsqueeze(-1) + logn, -2)
        if w is not None:
            lse = torch.where(w > 0, lse * w.to(dtype), torch.zeros_like(lse))
        ll = ll + lse.sum(-1)
    if groups.reduce is not None:
        groups.reduce([ll])
    out = -(ll + log_prior(p, pt64, family, mask))
    return torch.where(torch.isfinite(out), out, torch.full_like(out, math.inf))


# ----------------------------------------------------------------------------
# Initialisation
# ----------------------------------------------------------------------------
# k-means++ / k-means seed on at most this many points of a group: the seeds
# only start EM, and sklearn's seeding is O(N K) on the host, which would
# dominate a GPU fit of millions of points.
SEED_SAMPLE_SIZE = 100_000
#: Rows of the subsample on which restarts are screened (:func:`screen_rows`).
SCREEN_ROWS = 8192
#: A class keeps at least this many of its rows (all, if it has fewer) in a
#: seeding sample drawn over all classes (:func:`cover_classes`).
MIN_CLASS_SEED_ROWS = 100


def cover_classes(idx: np.ndarray, labels: np.ndarray,
                  minimum: int = MIN_CLASS_SEED_ROWS) -> np.ndarray:
    """Sorted positions ``idx`` of a seeding sample drawn over all classes,
    topped up for every class (``labels``: the class of every row ``idx``
    indexes) with fewer than min(its rows, ``minimum``) rows in it, by that
    many of its rows drawn at random (a fixed seed): a class rare enough to
    miss a random sample (two rows in 250,000) still seeds its own mixture,
    where it raised from scikit-learn's k-means++ ("n_clusters ... Got 0").
    A sample with at least ``minimum`` rows of every class (or all of a
    smaller class's) is returned unchanged."""
    labels = np.asarray(labels)
    if idx.size >= labels.size:
        return idx
    counts = np.bincount(labels)
    have = np.bincount(labels[idx], minlength=counts.size)
    short = np.flatnonzero(have < np.minimum(counts, minimum))
    if short.size == 0:
        return idx
    rng = np.random.default_rng(0)
    extra = [rng.choice(rows, min(rows.size, minimum), replace=False)
             for rows in (np.flatnonzero(labels == c) for c in short)]
    return np.union1d(idx, np.concatenate(extra))


def seed_rows(m: int, key, labels: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The sorted positions, among ``m`` rows of positive weight, of the
    sample a fit seeds from once they are more than ``SEED_SAMPLE_SIZE``
    (None: all of them): ``SEED_SAMPLE_SIZE`` drawn with seed ``key``, and
    with ``labels`` (a classifier's, per row) topped up for rare classes
    (:func:`cover_classes`).  The same rows whether the data are in memory
    or read from a file (the pass keeps them), so the two fits are one; an
    in-memory fit drew a fresh sample per restart inside the seeding, and
    above 100,000 rows its fit differed from the out-of-core one."""
    if m <= SEED_SAMPLE_SIZE:
        return None
    idx = np.sort(np.random.default_rng(key).choice(m, SEED_SAMPLE_SIZE, replace=False))
    return idx if labels is None else cover_classes(idx, labels)


def canonical_order(P: np.ndarray) -> np.ndarray:
    """``np.lexsort(P.T[::-1])`` for points P (n, D) without NaN: the rows
    by their first feature, ties broken by the next and so on, identical
    rows in their given order.  lexsort pays a stable sort of all n rows
    per feature (73 ms at 20,000 x 50); here the first feature's stable
    sort orders every row, and lexsort runs on the rows whose first
    feature ties (a few in continuous float32 data, more in discrete)."""
    order = np.argsort(P[:, 0], kind="stable")
    first = P[order, 0]
    tie = first[1:] == first[:-1]
    if P.shape[1] > 1 and bool(tie.any()):
        # Rows of a tie are adjacent in ``order``, in their given order,
        # and the runs stay in order of their first feature: lexsort of
        # them all, written back to their positions, is lexsort's order.
        inrun = np.zeros(P.shape[0], dtype=bool)
        inrun[1:] |= tie
        inrun[:-1] |= tie
        pos = np.flatnonzero(inrun)
        if 2 * pos.size > P.shape[0]:      # mostly ties (discrete data): lexsort is no slower
            return np.lexsort(P.T[::-1])
        sub = order[pos]
        order[pos] = sub[np.lexsort(P[sub].T[::-1])]
    return order


# Lloyd's steps after the seeding before the default priors' spread is
# measured (:func:`seeded_spread`).
SPREAD_LLOYD_STEPS = 1


#: Copies of the restarts' means a fit holds at once, at the least (the
#: seeds, EM's parameters and statistics, SQUAREM's iterates): the size a
#: huge ``n_init`` is refused by before any work.
RESTART_COPIES = 8


def seed_centres(points: Sequence[np.ndarray], n_components: int, n_init: int, init,
                 seeds: Sequence[int], weights: Optional[Sequence] = None) -> np.ndarray:
    """Initial means (n_init, G, K, D) for each group's points (arrays or
    tensors (n_g, D), standardised units), from scikit-learn's k-means++ seeding or Lloyd's
    k-means, K distinct random points, or user means (K, D) (jittered by 0.01
    of a standardised unit after the first restart).

    A group with fewer points than K is seeded with all its points, the
    rest repeated (the estimator masks components beyond the group's size).
    The first k of a k-means++ seeding are a k-means++ seeding for k, so
    variants that differ only in K share one seeding.

    ``weights`` (per group, (n_g,) or None): sample weights, which weight
    the seeding as repeated points would (k-means++ and k-means take them;
    "random" draws points with probability proportional to them).  The
    points are seeded in a sorted order, so the k-means++ seeds depend
    neither on the rows' order nor on whether a point is repeated or
    weighted (below ``SEED_SAMPLE_SIZE`` points), and each group's on its
    own points and the restart's seed only, not on the other groups or its
    place among them.  Missing entries (NaN) count as 0, the feature's
    standardised mean, in the seeding's distances; a seed's own missing
    coordinates then take the value of a row that observes them (drawn
    with the restart's seed, by weight), and a Lloyd ("kmeans") centre's
    the mean of its cluster's observed values, so that components start
    apart in every feature (at 0 they started equal where no seed observed
    a feature, and EM kept them so).  Without missing entries nothing is
    drawn: the seeds are those of the complete data."""
    import sklearn
    from sklearn.cluster import KMeans, kmeans_plusplus

    K = n_components
    D = points[0].shape[1]
    # The restarts run as one batch: their centres, and EM's copies of them
    # (parameters, statistics, the accelerator's iterates), at the least.
    check_result_size(f"n_init={n_init}",
                      8 * RESTART_COPIES * int(n_init) * len(points) * int(K) * int(D),
                      "use fewer restarts (the default: n_init=4)")
    out = np.zeros((n_init, len(points), K, D))

    def host(v):
        return None if v is None else np.asarray(v.detach().cpu() if torch.is_tensor(v) else v,
                                                 dtype=np.float64)

    def canonical(P, w):
        # Seeded in a canonical (sorted) order of the points: the seeds
        # then do not depend on the rows' order, and a point of weight w
        # is drawn exactly when w repeated copies of it would be.
        miss = np.isnan(P)
        P = np.where(miss, 0.0, P)
        order = canonical_order(P)
        return P[order], None if w is None else w[order], miss[order] if miss.any() else None

    def fill(c, unset, P, w, miss, rng):
        # A seed's missing coordinates (``unset`` (k, D)) take the value of
        # a row that observes that feature, drawn as the seeds are (with
        # probability by weight): all at 0, the feature's mean, the
        # components would start equal in every feature no seed observes,
        # and EM keeps that symmetry (rows that observe only such features
        # have equal responsibilities, whatever their values).
        # Always by explicit probabilities (numpy's cumulative draw): a row
        # of weight w then takes the draws w repeated copies of it would
        # (the uniform draw without ``p`` takes another route).
        c = c.copy()
        for j in np.flatnonzero(unset.any(0)):
            rows = np.flatnonzero(~miss[:, j])
            if rows.size == 0:           # this group never observes feature j
                continue
            p = np.ones(rows.size) if w is None else w[rows]
            at = np.flatnonzero(unset[:, j])
            c[at, j] = P[rng.choice(rows, at.size, p=p / p.sum()), j]
        return c

    group_w = [None if weights is None else weights[g] for g in range(len(points))]
    # Groups small enough to seed on whole: prepared once, for every restart.
    prepared = [canonical(host(P), host(w))
                if isinstance(init, str) and P.shape[0] <= SEED_SAMPLE_SIZE else None
                for P, w in zip(points, group_w)]
    for r in range(n_init):
        for g, P in enumerate(points):
            # Every group draws from the restart's seed afresh: a group's
            # seeding depends on its own points only, not on its place
            # among the groups (a classifier's classes in sorted-label
            # order, which renaming a class would change).
            rng = np.random.default_rng(int(seeds[r]))
            if not isinstance(init, str):
                c = np.asarray(init, dtype=np.float64)
                out[r, g] = c if r == 0 else c + 0.01 * rng.standard_normal(c.shape)
                continue
            n = P.shape[0]
            if n == 0:                 # the callers give every group points
                raise ValueError(f"group {g} has no points to seed from")
            k = min(K, n)
            if prepared[g] is not None:
                P, w, miss = prepared[g]
            else:                      # subsampled where the points are, then copied
                pick = rng.choice(n, SEED_SAMPLE_SIZE, replace=False)
                w = group_w[g]
                P, w, miss = canonical(host(P[pick]), None if w is None else host(w[pick]))
            if w is not None:      # the seeding is scale-free in the weights
                w = w / w.max()
            if init == "random":
                idx = rng.choice(P.shape[0], k, replace=False,
                                 p=None if w is None else w / w.sum())
                c = P[idx]
            elif init == "kmeans++":
                # The points are finite float64 and the arguments valid:
                # scikit-learn's checks of them took 10-30% of each call
                # (25 calls in the five-class classifier's fit).
                with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                    c, idx = kmeans_plusplus(P, k, sample_weight=w,
                                             random_state=int(rng.integers(2 ** 31 - 1)))
            elif init == "kmeans":
                with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
                    km = KMeans(k, init="k-means++", n_init=1,
                                random_state=int(rng.integers(2 ** 31 - 1))).fit(
                                    P, sample_weight=w)
                c = km.cluster_centers_
                if miss is not None:
                    # Each centre's features at its cluster's observed
                    # values (not pulled towards 0 by the missing ones).
                    wk = np.ones(P.shape[0]) if w is None else w
                    obs = ~miss
                    s0 = np.stack([np.bincount(km.labels_, wk * obs[:, j], k)
                                   for j in range(P.shape[1])], 1)                  # (k, D)
                    s1 = np.stack([np.bincount(km.labels_, wk * P[:, j], k)
                                   for j in range(P.shape[1])], 1)
                    c = np.where(s0 > 0, s1 / np.where(s0 > 0, s0, 1.0), c)
                    idx = None
                    unset = s0 == 0
            else:  # validated by the estimators; kept as a guard for direct callers
                raise ValueError(f"init must be 'kmeans++', 'kmeans', 'random' or an array, "
                                 f"got {init!r}")
            if miss is not None:
                c = fill(c, miss[idx] if idx is not None else unset, P, w, miss, rng)
            out[r, g, :k] = c
            out[r, g, k:] = c[np.arange(K - k) % k]
    return out


def seeded_spread(points: Sequence, weights: Optional[Sequence], centres: np.ndarray,
                  n_components: Sequence[int], refine: int = SPREAD_LLOYD_STEPS) -> np.ndarray:
    """The within-cluster variance per feature (D,) of the partition a
    seeding induces: each group's points (n_g, D) go to their nearest of the
    group's first ``n_components[g]`` centres (``centres`` (R, G, K, D),
    every restart), the centres move to their clusters' (weighted) means
    and the points are assigned again, ``refine`` times (Lloyd's steps),
    and their squared deviations from their cluster's mean are averaged,
    weighted by ``weights`` (per group, (n_g,) or None), over points,
    groups and restarts.  (About the cluster's mean rather than the seed: a
    k-means++ seed is itself one of the cluster's points, and the mean
    squared distance to it is twice the cluster's variance.  The Lloyd step:
    a seed is one point, not its cluster's centre, and the nearest-seed
    partition takes points that are far from their cluster's seed along
    another feature into a neighbouring cluster; with two clusters 2,000
    sds apart in one feature and noise in the other, it put 6% of each
    cluster's points into the other, which made that feature's spread 300
    times the clusters' own.)  Missing entries (NaN) count only where
    observed (distances over the observed features).  The typical spread
    of one component: what the default covariance priors are scaled to
    (:func:`bayesgmm.priors.resolve_priors`; the caller,
    :func:`bayesgmm._base.seeded_priors`, bounds the points).  Chunked over
    points, so the memory is bounded whatever n."""
    R, G, K, D = centres.shape
    total = np.zeros(D)
    mass = np.zeros(D)
    tiny = np.finfo(np.float64).tiny
    for g in range(G):
        P = points[g]
        w = None if weights is None else weights[g]
        P = np.asarray(P.detach().cpu() if torch.is_tensor(P) else P, dtype=np.float64)
        w = (np.ones(P.shape[0]) if w is None else
             np.asarray(w.detach().cpu() if torch.is_tensor(w) else w, dtype=np.float64))
        obs = ~np.isnan(P)
        Z = np.where(obs, P, 0.0)
        k = int(n_components[g])
        c = centres[:, g, :k]                                          # (R, k, D)
        step = max(1, 2 ** 22 // max(1, R * k * D))
        complete = bool(obs.all())
        for it in range(refine + 1):
            # Per restart, cluster and feature: observed weight, sum, sum of squares.
            s0, s1, s2 = np.zeros((R, k, D)), np.zeros((R, k, D)), np.zeros((R, k, D))
            for a in range(0, P.shape[0], step):
                z, o, wa = Z[a:a + step], obs[a:a + step], w[a:a + step]
                # Squared distances (R, n, k), one centre at a time (its
                # temporaries stay in cache; exact ties break as before).
                d2 = np.empty((R, z.shape[0], k))
                for j in range(k):
                    diff = z[None] - c[:, j, None, :]                          # (R, n, D)
                    np.square(diff, out=diff)
                    if not complete:
                        diff *= o[None]
                    d2[:, :, j] = diff.sum(-1)
                onehot = (np.eye(k)[d2.argmin(-1)] * wa[None, :, None]).transpose(0, 2, 1)
                s0 += onehot @ o.astype(np.float64)
                s1 += onehot @ z
                if it == refine:
                    s2 += onehot @ (z * z)
            if it < refine:
                # A cluster (or a feature of it) with no weight keeps its centre.
                c = np.where(s0 > 0, s1 / np.maximum(s0, tiny), c)
        total += np.maximum(s2 - s1 ** 2 / np.maximum(s0, tiny), 0).sum((0, 1))
        mass += s0.sum((0, 1))
    return total / np.maximum(mass, tiny)


def screen_rows(n_samples: int, n_components: int) -> Optional[int]:
    """Size of the subsample on which restarts are screened (seeded, run
    to convergence and compared), or None to screen on all the data:
    8,192 rows or 256 per component, used once the data hold four times
    that.  The restarts then cost a bounded amount whatever N, and only the
    best runs on all the data (see :class:`~bayesgmm.BayesianGMM`)."""
    rows = max(SCREEN_ROWS, 256 * n_components)
    return rows if n_samples > 4 * rows else None


def initial_params(groups: Groups, centres: torch.Tensor, mask: torch.Tensor, pt: PriorTensors,
                   family: Covariance) -> MixtureParams:
    """Weights and covariances consistent with the partition the centres
    (B, G, K, D) induce (each point to its nearest real centre of its own
    group), by one closed-form M-step about the centres; the centres are
    kept as the means."""
    B, G, K, D = centres.shape
    maskb = mask.expand(B, G, K)
    gidx = torch.arange(G, device=centres.device).repeat(B)
    start = MixtureParams(maskb.reshape(B * G, K).to(centres.dtype), centres.reshape(B * G, K, D),
                          family.identity((B * G,), K, D, centres.dtype, centres.device))
    stats = e_step(groups, start, gidx, family, hard=True)
    mflat = maskb.reshape(B * G, K)
    w = dirichlet_mode(stats.Nk, pt.concentration, mflat)
    out = masked(MixtureParams(w, start.means, family.m_step(stats.Nk, stats.S2, pt)), mflat, family)
    return out.map(lambda t: t.reshape((B, G) + t.shape[1:]))


# ----------------------------------------------------------------------------
# EM
# ----------------------------------------------------------------------------
@dataclass
class FitTrace:
    """What a fit stage leaves behind: parameters (batch (B, G)), the loss
    before each update and at the end (B, G, T) in standardised units
    (float64; a pair that stopped early repeats its last loss), the number of
    iterations of this stage's longest-running pair, whether every pair met
    the tolerance, and the iterations each pair ran (B, G), counting those
    of an earlier stage it continues (``spent`` (B, G), zero for a first
    stage)."""

    params: MixtureParams
    losses: torch.Tensor
    n_iter: int
    converged: bool
    iterations: Optional[torch.Tensor] = None
    spent: Optional[torch.Tensor] = None

    def previous_loss(self) -> torch.Tensor:
        """Each pair's loss before its last update in this stage (B, G), inf
        where it did not run: what a continuation's first iteration (whose
        loss is that of the pair's final parameters) is measured against,
        so that it sees the gain of this stage's last update, as one run
        would."""
        own = self.iterations - (0 if self.spent is None else self.spent.to(self.iterations))
        prev = self.losses.gather(-1, (own - 1).clamp_min(0).unsqueeze(-1)).squeeze(-1)
        return torch.where(own > 0, prev, torch.full_like(prev, math.inf))

    def history(self, b: int, g: int = 0) -> np.ndarray:
        """Pair (b, g)'s own loss history in this stage: its iterations,
        then its final loss."""
        t = int(self.iterations[b, g]) if self.iterations is not None else self.losses.shape[-1] - 1
        if self.spent is not None:
            t -= int(self.spent[b, g])
        h = self.losses[b, g].double().cpu().numpy()
        return np.concatenate([h[:t], h[-1:]])


#: SQUAREM's growth factor of the largest extrapolation step after a step
#: that was accepted at that bound (Varadhan & Roland 2008, ``mstep``).
SQUAREM_GROWTH = 4.0


def _squarem_jump(theta0: MixtureParams, theta1: MixtureParams, theta2: MixtureParams,
                  mask: torch.Tensor, family: Covariance, bound: torch.Tensor):
    """SQUAREM's step (scheme S3) from ``theta0`` along two EM updates, per
    pair of the batch, in the unconstrained coordinates SVI uses: r = z1 -
    z0, v = z2 - 2 z1 + z0, alpha = -|r| / |v| clamped to [-bound, -1],
    theta' = z0 - 2 alpha r + alpha^2 v.  Returns (alpha (float64), theta');
    theta' is theta2 itself where alpha = -1 (not its round trip through
    the coordinates), and alpha is -1 where the step would leave the finite
    numbers."""
    try:
        coords = _Unconstrained(theta0, mask, family, grad=False)
        z0, z1, z2 = coords.u, coords.free(theta1), coords.free(theta2)
    except torch.linalg.LinAlgError:
        # A covariance that float32 rounding left not positive definite
        # has no coordinates (the transform's Cholesky raises): no step
        # this cycle, plain EM's theta2 (its finiteness checks decide).
        return torch.full(bound.shape, -1.0, dtype=torch.float64, device=bound.device), theta2
    r = [b - a for a, b in zip(z0, z1)]
    v = [c - 2 * b + a for a, b, c in zip(z0, z1, z2)]
    norm = lambda ts: sum(t.double().reshape(t.shape[0], -1).square().sum(-1) for t in ts)
    alpha = -(norm(r) / norm(v)).sqrt()
    alpha = torch.where(torch.isfinite(alpha), alpha, torch.full_like(alpha, -1.0))
    alpha = torch.maximum(alpha.clamp_max(-1.0), -bound)
    a = alpha.to(z0[0].dtype)
    col = lambda t, z: t.reshape((-1,) + (1,) * (z.dim() - 1))
    jump = masked(coords.at([z - 2 * col(a, z) * rr + col(a * a, z) * vv
                             for z, rr, vv in zip(z0, r, v)])[0], mask, family)
    # A step past the finite numbers is not taken: alpha = -1, theta2.
    alpha = torch.where(jump.finite(), alpha, torch.full_like(alpha, -1.0))
    return alpha, jump.where(alpha != -1.0, theta2)


def em_fit(groups: Groups, params: MixtureParams, mask: torch.Tensor, pt: PriorTensors,
           family: Covariance, max_iter: int, tol: float, callback: Callback = None,
           spent: Optional[torch.Tensor] = None,
           last_loss: Optional[torch.Tensor] = None, accelerate: bool = True) -> FitTrace:
    """Closed-form MAP-EM of every (variant, group) pair at once,
    accelerated by SQUAREM.

    An iteration is one E-step and one M-step (one EM update).  With
    ``accelerate`` (and at least three iterations of budget left) they come
    in SQUAREM cycles (Varadhan & Roland 2008, scheme S3): two EM updates
    theta0 -> theta1 -> theta2, a step along them in the unconstrained
    coordinates SVI uses (r = theta1 - theta0, v = theta2 - 2 theta1 +
    theta0, alpha = -|r| / |v| clamped to [-step_max, -1]: theta' = theta0 -
    2 alpha r + alpha^2 v), then one EM update from theta'.  At alpha = -1
    theta' is theta2 and the cycle is three plain updates; step_max starts
    at 1 (so does the first cycle) and grows by SQUAREM_GROWTH after a step
    accepted at it, shrinks after a rejected one.  A jump's update is kept
    only if the loss at theta' is no worse than at theta1, else theta2 is
    kept, so the loss never rises (each EM update cannot increase it).
    Where EM creeps along a ridge (overlapping components) a cycle covers
    many plain updates' distance to the same kind of stationary point of
    the same objective.  ``accelerate=False`` runs plain updates; a
    continuation (``spent``) starts a fresh cycle, so with acceleration two
    stages are not step for step one run.

    Pairs with fewer real components than the batch's K (a classifier's
    classes, an "auto" scan's candidates) take their E-steps at their own K
    in buckets (:func:`bucketed_e_step`, on the CPU), where that saves
    arithmetic.

    A pair leaves the batch once an EM update improves the loss by less
    than ``tol`` nats per point of its group (plain EM's rule, read after
    every update but a jump's, so a pair may stop mid-cycle, keeping that
    update); no pair runs more iterations than a separate fit would.  A
    pair whose loss or parameters become non-finite in an EM update keeps
    its last finite parameters, stops, and ends with an infinite loss so
    that it is never selected.

    ``spent`` (B, G): iterations each pair already ran in an earlier stage
    (a continuation); ``max_iter`` then bounds the total, and the trace's
    ``iterations`` count both stages.  ``last_loss`` (B, G): each pair's
    loss before the earlier stage's last update
    (:meth:`FitTrace.previous_loss`), so that the continuation's first
    iteration measures that update's gain, as one run would (else it
    always counts as a gain)."""
    B, G, K = params.weights.shape
    shape = lambda t: t.reshape((B * G,) + t.shape[2:])
    flat = params.map(lambda t: shape(t).clone())
    mflat = shape(mask.expand(B, G, K))
    gall = torch.arange(G, device=mask.device).repeat(B)
    n_g = groups.mass.to(flat.weights.dtype).clamp_min(torch.finfo(flat.weights.dtype).tiny)[gall]
    active = torch.ones(B * G, dtype=torch.bool, device=mask.device)
    alive = torch.ones_like(active)
    # Losses in float64: the final one is exact (evaluated in float64) and
    # chooses between restarts, K and stages; rounding it would undo that.
    last = torch.full((B * G,), math.inf, dtype=torch.float64, device=mask.device) \
        if last_loss is None else last_loss.reshape(B * G).to(mask.device, torch.float64).clone()
    iters = torch.zeros(B * G, dtype=torch.long, device=mask.device) if spent is None \
        else spent.reshape(B * G).to(device=mask.device, dtype=torch.long).clone()
    step_max = torch.ones(B * G, dtype=torch.float64, device=mask.device)
    hit = iters >= max_iter                    # pairs stopped by the budget, still improving
    active &= ~hit
    history = []
    it = 0

    def update(p: MixtureParams, msub: torch.Tensor, g: torch.Tensor):
        """One EM update of a batch: (loss at p (float64), the update, ok)."""
        stats = bucketed_e_step(groups, p, g, family, msub)
        loss = -(stats.loglik + log_prior(p, pt, family, msub))
        new = m_step(stats, p, pt, family, msub)
        return loss.double(), new, new.finite() & torch.isfinite(loss)

    def record(idx, loss, ok, new, old):
        """One iteration of pairs ``idx``: the update from ``old``, of loss
        ``loss``, to ``new`` (kept where ``ok``, both finite); whether each
        pair goes on (its update gained more than ``tol``)."""
        nonlocal it
        it += 1
        prev = last[idx]
        gain = (prev - loss) / n_g[idx]
        last[idx] = torch.where(ok, loss, torch.full_like(loss, math.inf))
        iters[idx] += 1
        alive[idx] = alive[idx] & ok
        keep = new.where(ok, old)
        flat.weights[idx], flat.means[idx], flat.cov[idx] = keep.weights, keep.means, keep.cov
        history.append(last.clone())
        if callback is not None:
            # The fit's loss so far: each group's best restart (summed over
            # groups), not the sum over every restart still running (which
            # showed four restarts' losses as one, four times the fit's).
            callback(it, float(last.reshape(B, G).min(0).values.sum()))
        return ok & ((gain > tol) | ~torch.isfinite(prev))

    while it < max_iter:
        idx = active.nonzero().squeeze(-1)     # the host sync of each cycle
        if idx.numel() == 0:                   # every pair stopped in the last iteration
            break
        going = torch.zeros_like(active)
        cycle = accelerate and int((max_iter - iters[idx]).min()) >= 3
        sub, msub, g = flat.select(idx), mflat[idx], gall[idx]
        l0, p1, ok = update(sub, msub, g)
        going[idx] = record(idx, l0, ok, p1, sub)
        # A SQUAREM cycle goes on for the pairs whose updates still gain
        # (each update's gain is read as plain EM reads it, and a pair that
        # stops keeps that update, as plain EM does).
        on = going[idx]
        if cycle and bool(on.any()):
            i1, sub, msub, g, p1 = idx[on], sub.select(on), msub[on], g[on], p1.select(on)
            l1, p2, ok = update(p1, msub, g)
            going[i1] = record(i1, l1, ok, p2, p1)
            on = going[i1]
            if bool(on.any()):
                i2, sub, msub, g = i1[on], sub.select(on), msub[on], g[on]
                l1, p1, p2 = l1[on], p1.select(on), p2.select(on)
                bound = step_max[i2]
                # A first cycle (every bound 1) takes no step: nothing to compute.
                alpha, jump = _squarem_jump(sub, p1, p2, msub, family, bound) \
                    if bool((bound > 1).any()) else (-bound, p2)
                plain = alpha == -1.0
                lj, p3, okj = update(jump, msub, g)
                accept = okj & ((lj <= l1) | plain)
                # The bound grows after a step accepted at it and shrinks
                # after a rejected one (SQUAREM's step.max and mstep).
                step_max[i2] = torch.where(accept & (alpha <= -bound), bound * SQUAREM_GROWTH,
                                           torch.where(accept, bound,
                                                       (bound / SQUAREM_GROWTH).clamp_min(1.0)))
                # The third iteration: theta' -> theta3 where accepted, else
                # theta2 kept (its loss is at most l1, so the history never
                # rises).  Its gain is an EM update's only where there was
                # no jump (alpha = -1: theta' is theta2); a jump's gain is
                # not, and the rule reads the next cycle's first update.
                third = record(i2, torch.where(accept, lj, l1), torch.ones_like(accept),
                               p3.where(accept, p2), p2)
                going[i2] = torch.where(accept & plain, third, going[i2])
        hit[idx] = going[idx] & (iters[idx] >= max_iter)
        active[idx] = going[idx] & ~hit[idx]
    converged = bool(max_iter > 0 and not hit.any())
    final = negative_log_joint(groups, flat, gall, pt, family, mflat)
    final = torch.where(alive, final, torch.full_like(final, math.inf))
    history.append(final)
    losses = torch.stack(history, -1).reshape(B, G, -1)
    return FitTrace(flat.map(lambda t: t.reshape((B, G) + t.shape[1:])), losses, it, converged,
                    iters.reshape(B, G), spent)


# ----------------------------------------------------------------------------
# SVI
# ----------------------------------------------------------------------------
#: Losses within this relative difference of the lowest count as tied.
TIE_RTOL = 1e-10


def first_best(losses) -> torch.Tensor:
    """Index along the first dimension of the lowest loss, taken as the
    first among those within :data:`TIE_RTOL` (relative) of it; NaN counts
    as +inf.  Restarts that reach one optimum end with losses that differ
    in their last bits, by an amount that depends on how the sums were
    taken (one process or several, float32 parameters); the first keeps
    the choice, and with it the components' order, the same either way."""
    # A tensor stays on its device; host losses (a list, an array) on the
    # CPU, whatever torch.set_default_device says.
    f = (losses.to(torch.float64) if torch.is_tensor(losses)
         else torch.from_numpy(np.asarray(losses, dtype=np.float64)))
    f = torch.nan_to_num(f, nan=math.inf)
    best = f.min(0).values
    near = f <= best + TIE_RTOL * best.abs()
    return near.to(torch.int8).argmax(0)


def svi_converged(losses: Sequence[float], window: int, n_samples: float, tol: float) -> bool:
    """SVI's stopping rule: the best loss of the last ``window`` steps beats
    the best before them by less than ``tol`` nats per sample per step; or
    it does not beat it, but stays within that amount of it, or the window's
    losses have settled (their spread below that amount, as at a float32
    optimum, where a window's best can sit above the best before it).

    Adam's losses oscillate, so neither single steps nor the latest value are
    a fair measure of progress.  A window that merely rises, its losses still
    spread (Adam overshooting early, with a large learning rate), is not
    convergence: that stopped a fit after 45 steps 0.27 nats short of the
    optimum with ``converged_`` True.  With ``tol=0`` the rule never fires
    and SVI runs ``max_iter`` steps."""
    if tol <= 0 or len(losses) <= window:
        return False
    before = min(losses[:-window])
    recent = losses[-window:]
    best = min(recent)
    scale = window * n_samples
    gain = (before - best) / scale
    if gain >= 0:
        return gain < tol
    # No new best: converged if the window hovers at the earlier best or
    # has settled; not if it rose and still swings.
    return -gain < tol or (max(recent) - best) / scale < tol


def run_svi_loop(step: Callable[[np.ndarray], np.ndarray], n_pairs: int, max_iter: int,
                 n_samples: np.ndarray, tol: float, window: int, callback: Callback = None):
    """The one SVI loop: call ``step(done)`` (one optimiser step for the P
    pairs, those marked ``done`` held still; returns the P losses before
    it) until every pair has met
    :func:`svi_converged` or diverged (non-finite loss), or ``max_iter``.

    Returns (loss histories, steps taken, converged, diverged (P,) bool)."""
    hist = [[] for _ in range(n_pairs)]
    done = np.zeros(n_pairs, dtype=bool)
    diverged = np.zeros(n_pairs, dtype=bool)
    it = 0
    for it in range(1, max_iter + 1):
        losses = step(done)
        for p in np.flatnonzero(~done):
            if not math.isfinite(losses[p]):
                diverged[p] = done[p] = True
                continue
            hist[p].append(float(losses[p]))
            if svi_converged(hist[p], window, n_samples[p], tol):
                done[p] = True
        if callback is not None:       # the best pair's (restarts of one mixture)
            finite = losses[np.isfinite(losses)]
            callback(it, float(finite.min()) if finite.size else math.inf)
        if done.all():
            return hist, it, bool(not diverged.any()), diverged
    return hist, it, False, diverged


class _Unconstrained:
    """AutoDelta's parameterisation of a batch of mixtures: the weights on
    the simplex through ``transform_to(simplex)`` (a softmax, as AutoDelta's), the means
    as they are, the covariance site through ``transform_to`` of its support
    (exp for scales, a Cholesky map for precision matrices).  Padded
    components are masked out of the weights."""

    def __init__(self, params: MixtureParams, mask: torch.Tensor, family: Covariance,
                 grad: bool = True):
        self.family, self.mask = family, mask
        self.to_simplex = transform_to(constraints.simplex)
        self.to_cov = transform_to(family.constraint)
        self.u = self.free(params)
        if grad:
            self.u = [u.detach().clone().requires_grad_(True) for u in self.u]

    def free(self, params: MixtureParams) -> list[torch.Tensor]:
        """The unconstrained coordinates of ``params`` (padded components'
        weights at MIN_WEIGHT, which :meth:`at` masks out again)."""
        w0 = params.weights.clamp_min(MIN_WEIGHT)
        w0 = torch.where(self.mask, w0, torch.full_like(w0, MIN_WEIGHT))
        w0 = w0 / w0.sum(-1, keepdim=True)
        return [self.to_simplex.inv(w0), params.means, self.to_cov.inv(params.cov)]

    def at(self, u: Sequence[torch.Tensor]) -> tuple[MixtureParams, torch.Tensor]:
        """The constrained parameters at coordinates ``u`` and their log
        weights (exactly -inf at padded components, with finite gradients)."""
        w = self.to_simplex(u[0])
        logw = torch.log(w)
        norm = torch.logsumexp(logw.masked_fill(~self.mask, -math.inf), -1, keepdim=True)
        logw = torch.where(self.mask, logw - norm, torch.full_like(logw, -math.inf))
        return MixtureParams(logw.exp(), u[1], self.to_cov(u[2])), logw

    def current(self) -> tuple[MixtureParams, torch.Tensor]:
        """The constrained parameters at the current coordinates."""
        return self.at(self.u)


def expected_complete_loglik(params: MixtureParams, logw: torch.Tensor, stats: Stats,
                             family: Covariance, mask: torch.Tensor) -> torch.Tensor:
    """sum_n sum_k r_nk log(w_k N(x_n | mu_k, Sigma_k)) as a function of the
    parameters, with the responsibilities r fixed at those the statistics
    ``stats`` were computed with: N_k log w_k + N_k log|Lambda_k|^(1/2)
    - tr(Lambda_k S_k(mu_k)) / 2 - N_k D log(2 pi) / 2, where S_k(mu) is the
    scatter about mu, moved exactly from the statistics' reference.  Its
    gradient at the point of the E-step is the gradient of the data
    log-likelihood (the fused SVI's gradient); shape (P,)."""
    K, D = params.means.shape[-2:]
    factor = family.precision_factor(params.cov)
    S = family.recentre(stats.S2, stats.S1, stats.Nk, params.means - stats.ref)
    per_k = stats.Nk * (torch.where(mask, logw, torch.zeros_like(logw))
                        + family.half_log_det(factor, K) - 0.5 * D * _LOG_2PI) \
        - 0.5 * family.trace(params.cov, S)
    return torch.where(mask, per_k, torch.zeros_like(per_k)).sum(-1)


def svi_fit(groups: Groups, params: MixtureParams, mask: torch.Tensor, pt: PriorTensors,
            family: Covariance, max_iter: int, tol: float, learning_rate: float,
            callback: Callback = None, window: int = 10, batch_size: Optional[int] = None,
            generator: Optional[torch.Generator] = None) -> FitTrace:
    """MAP of P (variant, group) pairs at once by the SVI of an ``AutoDelta``
    guide on the enumerated model: the same unconstrained parameters as
    AutoDelta, the same Adam as ``pyro.optim.Adam``, and the loss
    ``TraceEnum_ELBO`` gives for that guide, the negative log joint with the
    assignments summed out (tested equal, with its gradient, to Pyro's).
    Nothing is traced, so a step costs a fraction of Pyro's.

    Pairs stop at their own tolerance; a pair that diverges keeps its start
    with an infinite final loss (the callers warn and keep EM's answer).

    ``batch_size``: minibatch SVI (one group, in memory): each step's
    E-step sees ``batch_size`` rows drawn without replacement by
    ``generator``, its statistics scaled by N / batch_size, an unbiased
    estimate of the whole data's (what Pyro's subsampled ``plate`` does to
    the ELBO); the step size decays as lr / sqrt(1 + t / 100) (Robbins-Monro,
    so the iterates settle at the optimum rather than around it).  The
    losses in the history are then estimates, too noisy for the stopping
    rule: minibatch SVI runs ``max_iter`` steps; the final loss is exact."""
    B, G, K = params.weights.shape
    P = B * G
    flat = params.map(lambda t: t.reshape((P,) + t.shape[2:]))
    mflat = mask.expand(B, G, K).reshape(P, K)
    gidx = torch.arange(G, device=mask.device).repeat(B)
    par = _Unconstrained(flat, mflat, family)
    opt = torch.optim.Adam(par.u, lr=learning_rate)
    state = {"t": 0}
    if batch_size is not None:
        if G != 1 or not isinstance(groups, Groups):
            raise ValueError("minibatch SVI takes one group of rows in memory")
        n_rows = int(groups.counts[0])
        batch_size = min(batch_size, n_rows)
        scale = n_rows / batch_size
        # Minibatch losses are estimates with a spread (~1/sqrt(batch) nats
        # per point) far above the tolerance: no stopping rule can read
        # them, so minibatch SVI runs its max_iter steps.
        window = max_iter + 1

        def minibatch():
            # device: the CPU generator's, whatever torch.set_default_device says.
            pick = torch.randperm(n_rows, generator=generator,
                                  device=generator.device)[:batch_size].sort().values
            return (groups.subset(pick.to(groups.XT.device)),)

    def step(done: np.ndarray) -> np.ndarray:
        opt.zero_grad(set_to_none=True)
        cur, logw = par.current()
        with torch.no_grad():
            # The data term's value and the statistics of its gradient: one
            # blocked E-step, no autograd through the (pairs, K, D, N) terms.
            if batch_size is None:
                stats = e_step(groups, cur.detach(), gidx, family)
            else:
                stats = e_step(*minibatch(), cur.detach(), gidx, family)
                stats = Stats(stats.loglik * scale, stats.Nk * scale, stats.S1 * scale,
                              stats.S2 * scale, stats.ref)
                state["t"] += 1
                for g in opt.param_groups:
                    g["lr"] = learning_rate / math.sqrt(1 + state["t"] / 100)
        prior = log_prior(cur, pt, family, mflat, logw)
        losses = -(stats.loglik + prior.detach())
        ok = torch.isfinite(losses)
        # Fisher's identity: at the current point the gradient of the data
        # log-likelihood equals that of the expected complete-data log
        # likelihood under the current responsibilities, a function of the
        # parameters and the E-step's statistics only.
        surrogate = expected_complete_loglik(cur, logw, stats, family, mflat) + prior
        (-torch.where(ok, surrogate, torch.zeros_like(surrogate)).sum()).backward()
        # Pairs that have stopped, and pairs whose loss just went non-finite
        # (their gradient may be NaN), stay where they are: Adam's momentum
        # would move them even with a zero gradient.  Adam is elementwise, so
        # the other pairs' steps are those of separate fits.
        hold = torch.as_tensor(done, device=losses.device) | ~ok
        before = [u.detach().clone() for u in par.u]
        opt.step()
        with torch.no_grad():
            for u, b in zip(par.u, before):
                u.copy_(torch.where(hold.reshape((P,) + (1,) * (u.dim() - 1)), b, u))
        return losses.detach().double().cpu().numpy()   # one host sync: the stopping rule

    n_g = groups.mass.double().cpu().numpy()[gidx.cpu().numpy()]
    hist, it, converged, diverged = run_svi_loop(step, P, max_iter, n_g, tol, window, callback)
    with torch.no_grad():
        out = masked(par.current()[0].detach(), mflat, family)
    final = negative_log_joint(groups, out, gidx, pt, family, mflat)
    bad = torch.as_tensor(diverged, device=final.device) | ~out.finite() | ~torch.isfinite(final)
    out = flat.where(bad, out)
    final = torch.where(bad, torch.full_like(final, math.inf), final)
    T = max(len(h) for h in hist) + 1
    losses = torch.full((P, T), math.nan, dtype=torch.float64, device=final.device)
    for p, h in enumerate(hist):
        losses[p, :len(h)] = torch.tensor(h, dtype=torch.float64, device=final.device)
        losses[p, len(h):] = final[p]
    iterations = torch.tensor([len(h) for h in hist], device=final.device).reshape(B, G)
    return FitTrace(out.map(lambda t: t.reshape((B, G) + t.shape[1:])), losses.reshape(B, G, T),
                    it, converged, iterations)


# ----------------------------------------------------------------------------
# Pyro's own SVI and the reference loss (backend="pyro", tests)
# ----------------------------------------------------------------------------
def _model(pt: PriorTensors, K: int, family: Covariance, weight: Optional[torch.Tensor] = None):
    def model(data):
        return gmm_model(data, pt, K, family, weight=weight)
    return model


def _elbo(jit: bool, weighted: bool, nesting: int = 1):
    """The ELBO of the MAP fits: ``TraceEnum_ELBO`` (or its JIT variant)
    enumerating the assignments; ``Trace_ELBO`` for weighted models, which
    sum the assignments out themselves (enumeration takes only scalar
    scales), the same loss for an AutoDelta guide."""
    if weighted:
        return (JitTrace_ELBO(ignore_jit_warnings=True) if jit else Trace_ELBO())
    return (JitTraceEnum_ELBO(max_plate_nesting=nesting, ignore_jit_warnings=True) if jit
            else TraceEnum_ELBO(max_plate_nesting=nesting))


def _guide(model, values: dict, sites):
    return AutoDelta(poutine.block(model, expose=list(sites)),
                     init_loc_fn=init_to_value(values=values))


def _site_values(params: MixtureParams, family: Covariance) -> dict:
    w = params.weights.clamp_min(MIN_WEIGHT)
    return {"weights": (w / w.sum(-1, keepdim=True)).detach().clone(),
            "means": params.means.detach().clone(), family.site: params.cov.detach().clone()}


# Pyro's handler stack and param store are process-wide: two threads inside
# Pyro at once corrupt both (a handler left on the stack breaks every later
# Pyro call in the process).  Every use of Pyro here holds this lock.
_PYRO_LOCK = threading.RLock()


@contextlib.contextmanager
def pyro_session(seed: Optional[int] = None, device: Optional[torch.device] = None):
    """Exclusive use of Pyro: the process-wide lock, a param store scoped to
    the block, the caller's effect handlers set aside (a fit called inside a
    user's ``poutine.trace`` or ``pyro.plate`` had its sites recorded or
    broadcast there: "Multiple sample sites named 'weights'", plates that
    collide) and, with ``seed``, torch's global RNG forked and seeded (Pyro
    samples from it), so the caller's RNG state is left as it was."""
    from pyro.poutine import runtime

    with _PYRO_LOCK, pyro.get_param_store().scope(), contextlib.ExitStack() as stack:
        if seed is not None:
            stack.enter_context(torch.random.fork_rng(
                devices=[device] if device is not None and device.type == "cuda" else []))
            torch.manual_seed(seed)
        # Pyro's global handler stack and its plates' and enumeration's dim
        # allocators, emptied for the fit and given back as they were.
        outer = (runtime._PYRO_STACK[:], runtime._DIM_ALLOCATOR._stack[:],
                 dict(vars(runtime._ENUM_ALLOCATOR)))
        runtime._PYRO_STACK.clear()
        runtime._DIM_ALLOCATOR._stack.clear()
        try:
            yield
        finally:
            runtime._PYRO_STACK[:], runtime._DIM_ALLOCATOR._stack[:] = outer[:2]
            vars(runtime._ENUM_ALLOCATOR).clear()
            vars(runtime._ENUM_ALLOCATOR).update(outer[2])


def pyro_svi_fit(X: torch.Tensor, params: MixtureParams, pt: PriorTensors, family: Covariance,
                 max_iter: int, tol: float, learning_rate: float, jit: bool = False,
                 callback: Callback = None, window: int = 10, seed: int = 0,
                 weight: Optional[torch.Tensor] = None) -> FitTrace:
    """MAP of one mixture (batch shape ()) by ``pyro.infer.SVI`` itself:
    ``AutoDelta`` over the global sites, ``TraceEnum_ELBO`` (or
    ``JitTraceEnum_ELBO``; falls back with a warning if tracing fails)
    enumerating the assignments, Adam.  Same loop, stopping rule and
    divergence policy as :func:`svi_fit`; the param store is scoped to the
    call, so concurrent or repeated fits never see each other's parameters,
    and torch's global RNG (Pyro draws from it) is forked and seeded with
    ``seed``."""
    K = params.weights.shape[-1]
    model = _model(pt, K, family, weight)
    sites = global_sites(family)
    elbo = lambda j: _elbo(j, weight is not None)
    with pyro_session(seed, X.device):
        guide = _guide(model, _site_values(params, family), sites)
        state = {"svi": SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}), elbo(jit)),
                 "first": True}

        def one() -> float:
            try:
                return state["svi"].step(X)
            except ValueError as exc:
                # A step that drove the parameters to NaN/inf, or out of their
                # support in float arithmetic (a precision matrix whose
                # Cholesky map underflowed to a zero pivot), fails the next
                # trace's argument checks: that is divergence, not a bug.
                with torch.no_grad():
                    finite = all(bool(torch.isfinite(v).all()) for v in guide.median().values())
                if finite and "to satisfy the constraint" not in str(exc):
                    raise
                return math.nan

        def step(done: np.ndarray) -> np.ndarray:
            first, state["first"] = state["first"], False
            try:
                return np.array([one()])
            except Exception as exc:  # only the JIT path's first step may fail
                if not (jit and first):
                    raise
                warnings.warn(f"JitTraceEnum_ELBO failed ({type(exc).__name__}: {exc}); "
                              f"falling back to TraceEnum_ELBO", RuntimeWarning)
                state["svi"] = SVI(model, guide, pyro.optim.Adam({"lr": learning_rate}), elbo(False))
                return np.array([one()])

        groups = Groups.single(X, weight)
        hist, it, converged, diverged = run_svi_loop(step, 1, max_iter,
                                                     groups.mass.double().cpu().numpy(),
                                                     tol, window, callback)
        with torch.no_grad():
            fitted = {k: v.detach() for k, v in guide.median().items()}
    out = MixtureParams(fitted["weights"], fitted["means"], fitted[family.site])
    final = float(negative_log_joint(groups, out.map(lambda t: t[None]),
                                     torch.zeros(1, dtype=torch.long, device=X.device), pt,
                                     family)[0]) if bool(out.finite()) else math.inf
    if diverged[0] or not math.isfinite(final):
        return FitTrace(params, torch.tensor(hist[0] + [math.inf], dtype=torch.float64,
                                             device="cpu"), it, False)
    # On the host, as the callers read them (.numpy()), whatever the default device.
    return FitTrace(out, torch.tensor(hist[0] + [final], dtype=torch.float64, device="cpu"),
                    it, converged)


def elbo_loss(X: torch.Tensor, params: MixtureParams, pt: PriorTensors, family: Covariance,
              weight: Optional[torch.Tensor] = None) -> float:
    """``TraceEnum_ELBO`` loss of :func:`gmm_model` with an AutoDelta guide
    sitting exactly on ``params`` (batch shape ()): the reference definition
    of the objective, for tests (``Trace_ELBO`` with sample weights, see
    :func:`_elbo`)."""
    model = _model(pt, params.weights.shape[-1], family, weight)
    with pyro_session():
        guide = _guide(model, {"weights": params.weights, "means": params.means,
                               family.site: params.cov}, global_sites(family))
        return _elbo(False, weight is not None).loss(model, guide, X)


def class_elbo_loss(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams,
                    pt: PriorTensors, mask: torch.Tensor, family: Covariance,
                    weight: Optional[torch.Tensor] = None) -> float:
    """``TraceEnum_ELBO`` loss of :func:`class_gmm_model` with an AutoDelta
    guide on ``params`` (batch shape (C,)); equals the sum over classes of
    each class's :func:`elbo_loss`."""
    def model(data, lab):
        return class_gmm_model(data, lab, pt, mask, family, weight)
    logw = torch.log(params.weights.clamp_min(MIN_WEIGHT))
    cov = params.cov if family.per_component else params.cov.unsqueeze(1)
    values = {"weight_logits": torch.where(mask, logw, torch.zeros_like(logw)).unsqueeze(-2),
              "means": params.means, family.site: cov}
    with pyro_session():
        guide = _guide(model, values, class_global_sites(family))
        return _elbo(False, weight is not None, 2).loss(model, guide, X, labels)


# ----------------------------------------------------------------------------
# Sampling through the model
# ----------------------------------------------------------------------------
def sample_model(params: MixtureParams, pt: PriorTensors, family: Covariance, n_samples: int,
                 seed: int):
    """Draw ``n_samples`` (x, z) pairs from the model at fixed parameters,
    seeded by ``seed``."""
    K = params.weights.shape[-1]
    conditioned = poutine.condition(gmm_model, data={"weights": params.weights,
                                                     "means": params.means,
                                                     family.site: params.cov})
    with torch.no_grad(), pyro_session(seed, params.means.device):
        trace = poutine.trace(conditioned).get_trace(None, pt, K, family, n_samples)
    return trace.nodes["obs"]["value"], trace.nodes["assignment"]["value"]


# ----------------------------------------------------------------------------
# Discriminative fine-tuning (GMMClassifier)
# ----------------------------------------------------------------------------
def discriminative_fit(X: torch.Tensor, labels: torch.Tensor, params: MixtureParams,
                       mask: torch.Tensor, family: Covariance, log_class_prior: torch.Tensor,
                       steps: int, learning_rate: float, batch_size: int,
                       generator: torch.Generator, callback: Callback = None,
                       weight: Optional[torch.Tensor] = None
                       ) -> tuple[MixtureParams, torch.Tensor]:
    """Discriminative fine-tuning, as in the original PyTorch study: from
    the generative MAP (class mixtures, batch (C,)), minimise the
    cross-entropy of the class logits log p(x | c) + log p(c) with Adam in
    AutoDelta's unconstrained parameters.  Full batch when ``batch_size >=
    N``, else minibatches drawn with ``generator``.  ``weight``: sample
    weights (the weighted mean cross-entropy); rows with missing (NaN)
    entries are scored on their observed features.  Returns the new
    parameters and the loss per step."""
    par = _Unconstrained(params, mask, family)
    opt = torch.optim.Adam(par.u, lr=learning_rate)
    N = X.shape[0]
    missing = bool(torch.isnan(X).any())
    history = []
    for step in range(1, steps + 1):
        if batch_size >= N:
            x, y, w = X, labels, weight
        else:
            pick = torch.randint(0, N, (batch_size,), generator=generator,
                                 device=generator.device).to(X.device)
            x, y, w = X[pick], labels[pick], None if weight is None else weight[pick]
        opt.zero_grad()
        cur, logw = par.current()
        if missing:
            logp = observed_component_log_prob(x, MixtureParams(logw.exp(), cur.means, cur.cov),
                                               family)
        else:
            logp = log_normal(x.t().contiguous(), cur.means, cur.cov, family)[0] \
                + logw.unsqueeze(-1)                                         # (C, K, n)
        logit = torch.logsumexp(logp, -2).transpose(0, 1) + log_class_prior
        if w is None:
            loss = torch.nn.functional.cross_entropy(logit, y)
        else:
            ce = torch.nn.functional.cross_entropy(logit, y, reduction="none")
            loss = (w * ce).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)
        loss.backward()
        opt.step()
        history.append(loss.detach())
        if callback is not None:
            callback(step, float(loss.detach()))
    with torch.no_grad():
        out = masked(par.current()[0].detach(), mask, family)
    return out, torch.stack(history) if history else torch.zeros(0, device=out.means.device)

"""Fits over several processes with ``torch.distributed``.

Each process (rank) holds a shard of the rows; every sum over rows that a
fit takes (the standardisation's moments, the EM statistics, the data
log-likelihood, the counts) is summed over the shards with ``all_reduce``,
so every rank runs the same iterations on the same numbers and ends with
the same parameters as one process fitting the union of the shards (up to
the order of float additions; but restarts are not screened on a
subsample, which one process does past 32,768 rows (for K <= 32) with
``n_init > 1``).  The fused SVI stage needs nothing more: its
gradient comes from the same reduced statistics (Fisher's identity), so the
ranks take identical Adam steps.

It is explicit: a fit is distributed only when ``fit(..., process_group=g)``
is given a process group (``torch.distributed.group.WORLD`` for every
process started by ``torchrun``); a process group that merely exists changes
nothing.  gloo (CPU tensors) and NCCL (CUDA tensors) both work: the
statistics live on the fit's device.

Example (``torchrun --nproc-per-node 2 script.py``)::

    import torch.distributed as dist
    from bayesgmm import BayesianGMM
    from bayesgmm.distributed import exit_process

    dist.init_process_group("gloo")
    X_shard = load_my_rows(rank=dist.get_rank(), world=dist.get_world_size())
    gmm = BayesianGMM(3, random_state=0).fit(X_shard, process_group=dist.group.WORLD)
    # every rank now holds the same gmm.means_, gmm.covariances_, ...
    dist.destroy_process_group()   # before exit: gloo's threads must be joined
    exit_process(0)                # see exit_process: no abort after the work is done
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Callable, NoReturn, Optional, Sequence

import numpy as np
import torch

Reduce = Callable[..., None]   # (tensors, error=None, check=False): see reducer


def exit_process(code: int = 0) -> NoReturn:
    """End a torchrun worker with exit status ``code`` once its work is done
    and its process group destroyed: standard streams flushed and ``atexit``
    handlers run, as at a normal exit, but without the interpreter's final
    teardown (``os._exit``).

    Why: with gloo (torch 2.13, 2-core Xeon host) a rank that had destroyed
    its process group and written its results still aborted at exit in
    about one torchrun launch in ten ("terminate called without an active
    exception", SIGABRT; torchrun then ends the other ranks and fails).
    The abort comes after Python's finalisation (``faulthandler`` shows no
    Python frame), in C++ teardown; where it was logged, the other rank was
    still inside ``destroy_process_group``.  Skipping that teardown leaves
    nothing undone that the process's results depend on."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):   # closed or gone (a closed pipe)
            pass
    os._exit(code)


def check_group(process_group):
    """The process group, after checking torch.distributed is initialised
    (None passes through: a one-process fit)."""
    if process_group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError(
            "process_group was given but torch.distributed is not initialised: call "
            "torch.distributed.init_process_group(...) first (torchrun sets up the environment), "
            "or leave process_group=None for a one-process fit")
    if not isinstance(process_group, dist.ProcessGroup):
        raise ValueError(f"process_group must be a torch.distributed ProcessGroup (e.g. "
                         f"torch.distributed.group.WORLD), got {process_group!r:.80}")
    return process_group


def reducer(process_group) -> Optional[Reduce]:
    """The statistics-reduce hook of a fit: sums tensors over the group's
    ranks, in place, in one ``all_reduce`` per dtype (the tensors are
    flattened into one buffer, so an EM iteration costs one round trip);
    None without a group.

    ``check=True`` (a sum that closes a pass over an out-of-core shard,
    which can fail on one rank mid-fit: a file changed or truncated) adds
    one element to the sum, the ranks whose pass failed; ``error`` is this
    rank's failure.  After the sum the failing ranks raise their own error
    and every other rank a ``ValueError`` that says so: no rank is left
    waiting in a collective the others never reach."""
    if process_group is None:
        return None
    import torch.distributed as dist

    def reduce(tensors: Sequence[torch.Tensor], error: Optional[BaseException] = None,
               check: bool = False) -> None:
        by_dtype: dict = {}
        for t in tensors:
            by_dtype.setdefault(t.dtype, []).append(t)
        for i, group in enumerate(by_dtype.values()):
            parts = [t.reshape(-1) for t in group]
            if check and i == 0:
                # One more element: how many ranks' passes failed (exact in
                # any float type for any number of ranks that fits here).
                parts.append(torch.full((1,), 0.0 if error is None else 1.0,
                                        dtype=group[0].dtype, device=group[0].device))
            flat = torch.cat(parts)
            dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=process_group)
            if check and i == 0:
                failed = int(flat[-1])
                if error is not None:
                    raise error
                if failed:
                    raise ValueError(
                        f"{failed} other rank(s) of the process group failed to read their "
                        f"shard during the fit (see their error): every rank stops")
            offset = 0
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()

    # Where this rank's values go in a table of every rank's (reduce_extremes).
    reduce.rank = dist.get_rank(process_group)
    reduce.size = dist.get_world_size(process_group)
    return reduce


def reduce_array(values: np.ndarray, reduce: Optional[Reduce], device="cpu",
                 error: Optional[BaseException] = None, check: bool = False) -> np.ndarray:
    """A float64 numpy array summed over the ranks (itself without a hook),
    through a tensor on ``device`` (NCCL reduces CUDA tensors only).  With
    ``check`` (the sum closes a pass over an out-of-core shard), ``error``
    is this rank's failure in that pass: it is raised here, after the sum,
    and every other rank raises too, so that none is left waiting in the
    next collective (see :func:`reducer`)."""
    if reduce is None:
        if error is not None:
            raise error
        return values
    t = torch.as_tensor(np.array(values, dtype=np.float64), device=device)
    reduce([t], error=error, check=check)
    return t.cpu().numpy()


def reduce_extremes(lo, hi, reduce: Optional[Reduce], device="cpu") -> tuple[np.ndarray, np.ndarray]:
    """The smallest of ``lo`` and the largest of ``hi`` (float64 arrays of
    one shape, or numbers) over the ranks (themselves without a hook),
    exactly: each rank writes its values into its own row of a table of
    zeros and the tables are summed (x + 0 is x), so that every rank can
    word an error with the same, global figures.  A collective: call it on
    every rank or on none (after a decision every rank shares)."""
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    if reduce is None:
        return lo, hi
    table = np.zeros((reduce.size, 2) + lo.shape)
    table[reduce.rank, 0], table[reduce.rank, 1] = lo, hi
    table = reduce_array(table, reduce, device)
    return table[:, 0].min(0), table[:, 1].max(0)


def _device(process_group) -> torch.device:
    """Where the group's collectives take tensors: CUDA for NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.get_backend(process_group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _fingerprint(text: Optional[str]) -> float:
    """48 bits of a string's SHA-256 (exact in a float64), 0 for None."""
    if text is None:
        return 0.0
    import hashlib

    return float(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) + 1)


#: Parameters that may differ between ranks: where each process runs and
#: what it shows, not what it fits.
RANK_LOCAL_PARAMS = ("device", "progress", "n_threads")


def shared_settings(estimator, streamed: bool = False) -> dict:
    """The estimator's parameters that every rank must share:
    ``get_params`` without :data:`RANK_LOCAL_PARAMS`, ``random_state`` as
    given when it is a number and as the text "drawn on rank 0" otherwise
    (None or a generator: rank 0's seeds are used, :func:`shared_seeds`,
    so the ranks need not agree on it); and how each rank holds its shard (``streamed``:
    read in chunks, :func:`bayesgmm._base.is_row_source`, or in memory),
    since the two paths run different collectives."""
    import numbers

    params = estimator.get_params(deep=False)
    for name in RANK_LOCAL_PARAMS:
        params.pop(name, None)
    rs = params.get("random_state")
    if not (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)):
        params["random_state"] = "drawn on rank 0"
    params[WARM_KEY] = _warm_state(estimator)[0]
    params[SHARD_KEY] = "read in chunks (out of core)" if streamed else "in memory"
    return params


#: The entry of :func:`shared_settings` that describes the fitted model a
#: warm start continues (its values are compared by :func:`agree`).
WARM_KEY = "the fitted model warm_start continues"
#: The entry of :func:`shared_settings` that says how the shard is held.
SHARD_KEY = "the shard"


def _canonical(value) -> str:
    """A text that equals another value's exactly when the values are equal:
    ``repr``, but arrays (and tensors) by dtype, shape and a hash of every
    byte (numpy's repr elides the middle of large arrays and rounds to 8
    digits), and dataclasses (``Priors``), lists, tuples and dicts element
    by element."""
    import dataclasses
    import hashlib

    if torch.is_tensor(value):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        body = (repr(value.tolist()).encode() if value.dtype.kind == "O" else
                np.ascontiguousarray(value).tobytes())
        return f"array({value.dtype.str}, {value.shape}, {hashlib.sha256(body).hexdigest()})"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (f"{type(value).__name__}("
                + ", ".join(f"{f.name}={_canonical(getattr(value, f.name))}"
                            for f in dataclasses.fields(value)) + ")")
    if isinstance(value, (list, tuple)):
        inner = ", ".join(_canonical(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_canonical(k)}: {_canonical(v)}"
                               for k, v in sorted(value.items(), key=lambda kv: repr(kv[0]))) + "}"
    return repr(value)


def _warm_state(estimator) -> tuple[str, Optional[np.ndarray]]:
    """What a fit continues under ``warm_start``: a description of the
    fitted model's layout (shapes, K, classes; "none" for a fresh fit) and
    its values (weights, means, covariances and resolved priors, float64,
    NaN padding as 0), or None for a fresh fit.  Each rank continues its own
    model, so all must hold the same one."""
    if not estimator._warm_asked():
        return "none (a fresh fit)", None
    arrays = [np.asarray(getattr(estimator, name), dtype=np.float64)
              for name in ("weights_", "means_", "covariances_")]
    priors = estimator.priors_ if isinstance(estimator.priors_, list) else [estimator.priors_]
    for p in priors:
        arrays += [np.asarray(v, dtype=np.float64) for v in vars(p).values() if v is not None]
    layout = f"shapes {[a.shape for a in arrays[:3]]}"
    if hasattr(estimator, "classes_"):
        layout += (f", classes {estimator.classes_.tolist()!r:.200}, "
                   f"K {np.asarray(estimator.n_components_).tolist()}")
    values = np.concatenate([np.nan_to_num(a.ravel()) for a in arrays])
    return f"{layout}, {values.size} values", values


def agree(error: Optional[BaseException], process_group, n_features: int,
          columns: Optional[Sequence[str]] = None, settings: Optional[dict] = None,
          estimator=None) -> None:
    """Collective check after each rank's own input validation: raises on
    every rank when any rank failed (the failing rank its own error), the
    shards have different numbers of features or different column names
    (``columns``: a DataFrame shard's, None without names), or the ranks'
    estimators have different ``settings`` (:func:`shared_settings`), so that
    no rank is left waiting in a collective the others never reach and no
    fit silently sums different columns or runs different fits.  With
    ``estimator`` under ``warm_start``, the fitted models the ranks continue
    must also agree in value (to 1e-4 relative), not only in layout."""
    if process_group is None:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    # [failed ranks, -min, max of: features, columns' and settings'
    # fingerprints] in one all_reduce (MAX).
    world = dist.get_world_size(process_group)
    flags = torch.zeros(world + 6, dtype=torch.float64, device=_device(process_group))
    flags[dist.get_rank(process_group)] = 0.0 if error is None else 1.0
    columns = None if columns is None else [str(c) for c in columns]
    marks = (float(n_features), _fingerprint(None if columns is None else repr(columns)),
             _fingerprint(None if settings is None else _canonical(settings)))
    for i, v in enumerate(marks):
        flags[world + 2 * i], flags[world + 2 * i + 1] = -v, v
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=process_group)
    if error is not None:
        raise error
    flags = flags.cpu()
    failed = int(flags[:world].sum())
    if failed:
        raise ValueError(f"{failed} other rank(s) of the process group refused their shard "
                         f"(see their error): every rank stops")
    lo = lambda i: -flags[world + 2 * i]
    hi = lambda i: flags[world + 2 * i + 1]
    if lo(0) != hi(0):
        raise ValueError(f"the shards have different numbers of features (from "
                         f"{int(lo(0))} to {int(hi(0))}): give every rank the same columns")
    if lo(1) != hi(1) or lo(2) != hi(2):
        # Every rank sees the same flags, so every rank gathers: what differs, by rank.
        parts: list = [None] * world
        dist.all_gather_object(parts, (columns, settings or {}), group=process_group)
        if lo(1) != hi(1):
            raise ValueError(f"the shards have different columns (names or order): "
                             + "; ".join(f"rank {r}: {c}" for r, (c, _) in enumerate(parts))
                             + ": give every rank the same columns in the same order")
        names = sorted({k for _, p in parts for k in p}, key=str)
        differ = [k for k in names if len({_canonical(p.get(k)) for _, p in parts}) > 1]
        if differ == [WARM_KEY]:
            raise _warm_mismatch("; ".join(f"rank {r}: {p.get(WARM_KEY)}"
                                           for r, (_, p) in enumerate(parts)))
        if differ == [SHARD_KEY]:
            raise ValueError(
                "the ranks hold their shards differently ("
                + "; ".join(f"rank {r}: {p.get(SHARD_KEY)}" for r, (_, p) in enumerate(parts))
                + "), and the two paths run different collectives: give every rank an "
                  "in-memory array, or every rank an out-of-core one (e.g. np.load(path, "
                  "mmap_mode='r'))")
        raise ValueError(
            "the ranks' estimators have different parameters: "
            + "; ".join(f"{k}: " + ", ".join(f"rank {r} {p.get(k)!r:.60}"
                                             for r, (_, p) in enumerate(parts))
                        for k in differ)
            + f" (every parameter but {', '.join(RANK_LOCAL_PARAMS)} must agree, random_state "
              f"too when it is a number): construct the same estimator on every rank")
    values = None if estimator is None else _warm_state(estimator)[1]
    if values is not None:     # every rank's layout agrees: so do the sizes
        t = torch.as_tensor(np.concatenate([values, -values]), dtype=torch.float64,
                            device=_device(process_group))
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=process_group)
        t = t.cpu().numpy()
        hi, lo = t[:values.size], -t[values.size:]
        gap = float(np.max(np.abs(hi - lo) / (1.0 + np.abs(hi)), initial=0.0))
        if not gap <= 1e-4:
            raise _warm_mismatch(f"their values differ by up to {gap:.3g} (relative)")


def _warm_mismatch(detail: str) -> ValueError:
    return ValueError(
        f"warm_start=True continues each rank's fitted model, and the ranks hold different "
        f"ones ({detail}): every rank must hold the result of the same fit over the process "
        f"group; fit with warm_start=False first")


def shared_seeds(seeds: np.ndarray, process_group) -> np.ndarray:
    """Rank 0's seeds on every rank (``seeds`` as drawn on this rank): with
    ``random_state=None`` each rank would draw its own, and the ranks would
    seed different fits."""
    if process_group is None:
        return seeds
    import torch.distributed as dist

    t = torch.as_tensor(np.asarray(seeds, dtype=np.int64), device=_device(process_group))
    dist.broadcast(t, src=dist.get_global_rank(process_group, 0), group=process_group)
    return t.cpu().numpy().astype(seeds.dtype, copy=False)


def seed_sample(Xt: torch.Tensor, weight: Optional[torch.Tensor], n_total: int, seed: int,
                process_group, labels: Optional[torch.Tensor] = None,
                n_local: Optional[int] = None):
    """The points every rank seeds from, identical on every rank: the union
    of the shards when it has at most ``SEED_SAMPLE_SIZE`` rows (then the
    seeds are exactly a one-process fit's: the seeding sorts its points
    first), else a random sample of each shard in proportion to its size.
    ``Xt``: this rank's rows, or (out of core) a sample of up to
    ``SEED_SAMPLE_SIZE`` of its ``n_local`` rows, all of them when it has
    no more; ``n_total``: every rank's rows.
    Returns (points, weights or None), and their ``labels`` too when given."""
    import math

    import torch.distributed as dist

    from .fitting import SEED_SAMPLE_SIZE

    n = Xt.shape[0]
    n_local = n if n_local is None else n_local
    take = n if n_total <= SEED_SAMPLE_SIZE else \
        min(n, math.ceil(SEED_SAMPLE_SIZE * n_local / n_total))
    rank = dist.get_rank(process_group)
    idx = (np.arange(n) if take >= n else
           np.sort(np.random.default_rng([seed, rank]).choice(n, take, replace=False)))
    if labels is not None:        # a rare class keeps some of its rows
        from .fitting import cover_classes
        idx = cover_classes(idx, labels.cpu().numpy())
    index = torch.as_tensor(idx, device=Xt.device)
    X = gather_rows(Xt[index].cpu().numpy(), process_group)
    w = None if weight is None else weight[index].cpu().numpy()
    # Weighted on some ranks and not on others: ones stand for no weights.
    has_w = torch.tensor([0.0 if w is None else 1.0], dtype=torch.float64,
                         device=_device(process_group))
    dist.all_reduce(has_w, op=dist.ReduceOp.MAX, group=process_group)
    if float(has_w) > 0:
        w = gather_rows(np.ones(idx.size) if w is None else w, process_group)
    if labels is None:
        return X, w
    return X, w, gather_rows(labels[index].cpu().numpy(), process_group)


def gather_parts(X: np.ndarray, process_group) -> list:
    """Every rank's array ``X``, in rank order, on every rank."""
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size(process_group)
    dist.all_gather_object(parts, np.asarray(X), group=process_group)
    return parts


def gather_rows(X: np.ndarray, process_group) -> np.ndarray:
    """Every rank's rows (a small sample of them: the seeding's), stacked on
    every rank; rank order, which the seeding's canonical sort makes
    irrelevant to the seeds (not to the default priors' spread above
    ``SPREAD_SAMPLE_SIZE`` rows, measured on a sample of positions)."""
    return np.concatenate(gather_parts(X, process_group))

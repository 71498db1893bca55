"""Streaming fits: the time of a ``partial_fit`` call, and the share of the
fit-end check that later calls run on their chunk, with scikit-learn's
streaming ``MiniBatchKMeans.partial_fit`` on the same chunks beside them.

Each case streams ``--calls`` chunks of ``--chunk`` rows of
``make_mixture`` data (seed 0; a classifier's labels are ``--classes``
classes drawn uniformly, each class's rows its own mixture) through
``BayesianGMM(K, covariance_type=t).partial_fit`` or
``GMMClassifier(K, covariance_type=t).partial_fit``; the first call fits the
first chunk (not timed).  A later call also runs the fit-end check of
components on single values on its chunk (``warn_discrete_features``) on
the schedule ``bayesgmm._base.checked_call`` sets (the first 16 calls, then
one in 16): the table gives the median time of checked and of unchecked
calls, their difference (the check's cost), and the time per call over the
whole stream.  ``MiniBatchKMeans(K).partial_fit`` takes the same chunks (for
scale: k-means, not a mixture; for a classifier, one per class).

Run ``python benchmarks/streaming.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DEFAULT_CASES = ["gmm:diag:2", "gmm:diag:20", "gmm:full:20", "classifier:diag:20"]


def parse_case(text: str) -> tuple[str, str, int]:
    kind, t, d = (text.split(":") + ["", ""])[:3]
    if kind not in ("gmm", "classifier") or t not in ("full", "tied", "diag", "spherical") \
            or not d.isdigit() or int(d) < 1:
        raise SystemExit(f"a case is KIND:TYPE:D with KIND gmm or classifier, e.g. gmm:diag:20, "
                         f"got {text!r}")
    return kind, t, int(d)


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--chunk", type=int, default=10_000, help="rows per partial_fit call")
    p.add_argument("--calls", type=int, default=48, help="partial_fit calls per case")
    p.add_argument("--k", type=int, default=4, help="components (per class)")
    p.add_argument("--classes", type=int, default=10, help="a classifier's classes")
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="KIND:TYPE:D")
    args = p.parse_args()
    if args.quick:
        args.chunk, args.calls, args.k, args.classes = 500, 20, 2, 3
        args.cases = ["gmm:diag:2", "classifier:diag:3"]
    if args.calls < 18:
        raise SystemExit(f"--calls must be at least 18 (checked and unchecked calls both), "
                         f"got {args.calls}")
    cases = [parse_case(c) for c in args.cases]
    C.apply_threads(args.threads)
    C.warn_filter()
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    from bayesgmm import BayesianGMM, GMMClassifier
    from bayesgmm._base import checked_call
    from bayesgmm.datasets import make_mixture

    info = C.machine_info("cpu")
    print(C.header("streaming", info))
    print(f"command: {C.argv_line()}\n")
    rows = []
    for kind, t, d in cases:
        n = args.chunk * args.calls
        classifier = kind == "classifier"
        if classifier:
            y = np.random.default_rng(1).integers(0, args.classes, n)
            X = np.empty((n, d))
            for c in range(args.classes):
                at = np.flatnonzero(y == c)
                X[at] = make_mixture(at.size, args.k, d, random_state=c)[0]
            model = GMMClassifier(args.k, covariance_type=t, random_state=0)
            peers = [MiniBatchKMeans(args.k, random_state=0, n_init=1)
                     for _ in range(args.classes)]
        else:
            y = None
            X = make_mixture(n, args.k, d, random_state=0)[0]
            model = BayesianGMM(args.k, covariance_type=t, random_state=0)
            peers = [MiniBatchKMeans(args.k, random_state=0, n_init=1)]
        checked, unchecked, peer_secs = [], [], []
        last = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(args.calls):
                part = slice(i * args.chunk, (i + 1) * args.chunk)
                Xc = X[part]
                yc = None if y is None else y[part]
                t0 = time.perf_counter()
                model.partial_fit(Xc, yc) if classifier else model.partial_fit(Xc)
                secs = time.perf_counter() - t0
                t0 = time.perf_counter()
                for c, peer in enumerate(peers):
                    peer.partial_fit(Xc if yc is None else Xc[yc == c])
                peer_secs.append(time.perf_counter() - t0)
                if i == 0:
                    continue
                # The schedule partial_fit followed on this call (its count
                # is i + 1; the last checked call is known to the caller).
                if checked_call(i + 1, Xc.shape[0], last):
                    checked.append(secs)
                    last = i + 1
                else:
                    unchecked.append(secs)
        if model._discrete_checked != last:       # the library's own record of its checks
            raise SystemExit(f"the schedule here ({last}) is not the library's "
                             f"({model._discrete_checked}): update this script")
        one = statistics.median(unchecked)
        row = {"kind": kind, "type": t, "D": d, "chunk": args.chunk,
               "classes": args.classes if classifier else 1, "K": args.k,
               "checked calls": len(checked), "checked s": statistics.median(checked),
               "unchecked s": one, "check s": statistics.median(checked) - one,
               "per call s": statistics.mean(checked + unchecked),
               "MiniBatchKMeans s": statistics.median(peer_secs[1:]),
               "raw": {"checked": checked, "unchecked": unchecked, "peer": peer_secs}}
        rows.append(row)
        print(f"{kind} {t} D={d}: checked {C.fmt(row['checked s'])} s, unchecked "
              f"{C.fmt(one)} s, MiniBatchKMeans {C.fmt(row['MiniBatchKMeans s'])} s", flush=True)
    print(f"\nmedian seconds per partial_fit call of {args.chunk} rows over {args.calls} calls "
          f"(per call: the mean over every call after the first)\n")
    cols = [(k, k) for k in rows[0] if k != "raw"]
    print(C.markdown_table(rows, cols) + "\n")
    C.write_json(args.json or C.default_json_path("streaming", "cpu"),
                 {"benchmark": "streaming", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows})


if __name__ == "__main__":
    main()

"""The E-step's CPU block budget: default fits at several budgets, side by
side in one process, with scikit-learn's default fit beside them.

Each fit's E-step (and loss) visits the rows in blocks whose temporaries
hold about ``budget`` elements (``bayesgmm.fitting.block_rows``): 2**16
for diagonal and spherical mixtures (``BLOCK_ELEMENTS``), 2**18 for full
and tied ones with complete data (``DENSE_BLOCK_ELEMENTS``).  This script
times ``BayesianGMM(K, covariance_type=t)`` at its defaults on
``make_mixture(N, K, D)`` (seed 0) with the family's budget set to each of
``--budgets`` in turn (the module constant, read at every E-step), the
budgets alternating in order and reverse order over ``--repeats`` rounds
after one untimed fit each, and scikit-learn's
``GaussianMixture(K, covariance_type=t)`` at its defaults in the same
rounds.  Diagonal and spherical fits from D = 6 take the expanded route
(``EXPANDED_BLOCK_ELEMENTS``) everywhere, so ``BLOCK_ELEMENTS`` is not read
at all there: such a case (the default diag:20) is a control, the same fit
timed under two names, whose ratio is the run's noise (column "budget
read" False).  Reported per case: the median time at each budget, its ratio to
the shipped budget's, whether every budget reached the same loss (they
differ only in the order of sums), and scikit-learn's median time.

The blocks are a CPU setting (``--device`` is not used).  Run
``python benchmarks/block_budget.py --help``; ``--quick`` checks the
pipeline in seconds (its figures mean nothing).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

DEFAULT_CASES = ["full:2", "full:10", "full:20", "tied:2", "tied:20", "diag:2", "diag:20"]


def parse_case(text: str) -> tuple[str, int]:
    t, _, d = text.partition(":")
    if t not in ("full", "tied", "diag", "spherical") or not d.isdigit() or int(d) < 1:
        raise SystemExit(f"a case is TYPE:D, e.g. full:20, got {text!r}")
    return t, int(d)


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--cases", nargs="+", default=DEFAULT_CASES,
                   help="covariance type and number of features, TYPE:D")
    p.add_argument("--budgets", type=int, nargs="+", default=[2 ** 16, 2 ** 18],
                   help="elements per block to compare (the family's shipped budget is added "
                        "when missing)")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    if args.quick:
        args.n, args.k, args.cases, args.repeats = 2000, 3, ["full:2", "diag:2"], 1
    cases = [parse_case(c) for c in args.cases]
    C.apply_threads(args.threads)
    C.warn_filter()
    from sklearn.mixture import GaussianMixture

    import torch

    from bayesgmm import BayesianGMM, fitting
    from bayesgmm.covariance import get
    from bayesgmm.datasets import make_mixture

    info = C.machine_info("cpu")
    print(C.header("block_budget", info))
    print(f"command: {C.argv_line()}\n")
    rows = []
    for t, d in cases:
        X, _, _ = make_mixture(args.n, args.k, d, random_state=0)
        dense = not get(t, d).diagonal_precision
        name = "DENSE_BLOCK_ELEMENTS" if dense else "BLOCK_ELEMENTS"
        shipped = getattr(fitting, name)
        budgets = sorted(set(args.budgets) | {shipped})

        def fit(budget: int) -> float:
            setattr(fitting, name, budget)
            try:
                return BayesianGMM(args.k, covariance_type=t, random_state=0).fit(X).loss_
            finally:
                setattr(fitting, name, shipped)

        def sklearn_fit() -> None:
            GaussianMixture(args.k, covariance_type=t, random_state=0).fit(X)

        losses = {b: fit(b) for b in budgets}          # one untimed fit each
        sklearn_fit()
        secs = {b: [] for b in budgets} | {"sklearn": []}
        for r in range(args.repeats):
            for b in (budgets if r % 2 == 0 else budgets[::-1]) + ["sklearn"]:
                t0 = time.perf_counter()
                sklearn_fit() if b == "sklearn" else fit(b)
                secs[b].append(time.perf_counter() - t0)
        base = statistics.median(secs[shipped])
        family = get(t, d)
        read = not fitting.expanded_route(family, d, torch.device("cpu"), False)
        row = {"type": t, "D": d, "budget constant": name, "budget read": read,
               "shipped": shipped}
        for b in budgets:
            row[f"2**{b.bit_length() - 1} s" if b & (b - 1) == 0 else f"{b} s"] = \
                statistics.median(secs[b])
        for b in budgets:
            label = f"2**{b.bit_length() - 1}" if b & (b - 1) == 0 else str(b)
            row[f"{label} / shipped"] = statistics.median(secs[b]) / base
        row["sklearn s"] = statistics.median(secs["sklearn"])
        spread = max(losses.values()) - min(losses.values())
        row["loss spread / point"] = spread / args.n
        row["raw"] = {"seconds": {str(k): v for k, v in secs.items()},
                      "losses": {str(k): v for k, v in losses.items()}}
        rows.append(row)
        print(f"{t} D={d}: " + ", ".join(f"{k} {C.fmt(v)}" for k, v in row.items()
                                          if k.endswith(" s") or k.endswith("shipped")),
              flush=True)
    print(f"\nN = {args.n}, K = {args.k}, defaults, medians of {args.repeats} alternating rounds\n")
    # One table per set of columns (the same budgets give one table).
    groups: dict = {}
    for row in rows:
        groups.setdefault(tuple(k for k in row if k != "raw"), []).append(row)
    for keys, members in groups.items():
        print(C.markdown_table(members, [(k, k) for k in keys]) + "\n")
    C.write_json(args.json or C.default_json_path("block_budget", "cpu"),
                 {"benchmark": "block_budget", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows})


if __name__ == "__main__":
    main()

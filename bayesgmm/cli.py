"""The ``bayesgmm`` command line.

``bayesgmm demo`` fits the Pyro iris study (K=2 on ``petal_length``) on the
shipped data; ``bayesgmm fit FILE.csv`` fits any CSV.  Errors in the user's
input end with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .covariance import COVARIANCE_TYPES


class CLIError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bayesgmm",
        description="Bayesian Gaussian mixture models (MAP by SVI with Pyro).")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser, default_out: str) -> None:
        p.add_argument("-k", "--n-components", type=int, default=2, metavar="K",
                       help="number of mixture components (default: %(default)s)")
        p.add_argument("--covariance-type", default="full", choices=COVARIANCE_TYPES,
                       help="covariance of each component, as in scikit-learn: its own full "
                            "matrix, one matrix shared by all (tied), diagonal, or one variance "
                            "(spherical); with one feature full is diagonal "
                            "(default: %(default)s)")
        p.add_argument("--out", default=default_out, metavar="DIR",
                       help="output folder, created if missing (default: %(default)s)")
        p.add_argument("--seed", type=int, default=0,
                       help="random seed; the same seed gives the same fit (default: %(default)s)")
        p.add_argument("--n-init", type=int, default=4,
                       help="restarts, the best by final loss is kept (default: %(default)s)")
        p.add_argument("--device", default="auto",
                       help="'auto' (CUDA when available), 'cpu' or 'cuda' (default: %(default)s)")
        p.add_argument("--progress", action="store_true", help="show a progress bar")

    demo = sub.add_parser(
        "demo", help="fit K=2 on the shipped iris petal_length data (Pyro's iris study)",
        description="Fit a 2-component Bayesian GMM to iris petal_length (shipped with the "
                    "package), print the fitted weights/means/scales, the cluster-by-species "
                    "table and the adjusted Rand index against setosa / not setosa, and write "
                    "the loss curve and a cluster plot into the output folder.")
    common(demo, "bayesgmm-demo")
    demo.add_argument("--column", default="petal_length",
                      choices=["sepal_length", "sepal_width", "petal_length", "petal_width"],
                      help="iris column to cluster (default: %(default)s)")

    fit = sub.add_parser(
        "fit", help="fit a mixture to columns of a CSV file",
        description="Fit a Bayesian GMM to numeric columns of a CSV file; write params.json "
                    "(weights, means, covariance type, covariances in scikit-learn's shapes, "
                    "per-feature scales, priors, loss) and assignments.csv (the input rows "
                    "with the MAP cluster and each cluster's probability) into the output folder.")
    fit.add_argument("file", metavar="FILE.csv", help="input CSV with a header row")
    fit.add_argument("--columns", nargs="+", metavar="COL",
                     help="columns to use (default: every numeric column)")
    common(fit, "bayesgmm-out")
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        return _fit(args)
    except CLIError as exc:
        print(f"bayesgmm: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # validation errors from the estimator: user input too
        print(f"bayesgmm: error: {exc}", file=sys.stderr)
        return 2


def _make_estimator(args):
    from .mixture import BayesianGMM
    return BayesianGMM(n_components=args.n_components, covariance_type=args.covariance_type,
                       n_init=args.n_init, device=args.device, random_state=args.seed,
                       progress=args.progress)


def _out_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output folder {path!r}: {exc.strerror}") from None
    return out


def _format_params(gmm, names: Sequence[str]) -> str:
    import pandas as pd
    rows = {"weight": gmm.weights_}
    for j, name in enumerate(names):
        rows[f"mean[{name}]"] = gmm.means_[:, j]
        rows[f"scale[{name}]"] = gmm.scales_[:, j]
    table = pd.DataFrame(rows)
    table.index.name = "cluster"
    return table.to_string(float_format=lambda v: f"{v:.4f}")


def _demo(args) -> int:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from .datasets import load_iris

    iris = load_iris()
    X = iris[[args.column]]
    gmm = _make_estimator(args).fit(X)
    labels = gmm.predict(X)
    setosa = (iris["species"] == "setosa").astype(int)
    ari_setosa = adjusted_rand_score(setosa, labels)
    ari_species = adjusted_rand_score(iris["species"], labels)
    out = _out_dir(args.out)

    print(f"Bayesian GMM, K={args.n_components}, covariance_type={gmm.covariance_type_}, "
          f"on iris {args.column} (150 points, seed {args.seed}, device {gmm.device_})")
    print(f"converged: {gmm.converged_} after {gmm.n_iter_} iterations; "
          f"final loss (negative log joint) {gmm.loss_:.4f}")
    print()
    print(_format_params(gmm, [args.column]))
    print()
    print("clusters by species:")
    print(pd.crosstab(pd.Series(labels, name="cluster"), iris["species"]).to_string())
    print()
    print(f"adjusted Rand index vs setosa / not setosa: {ari_setosa:.4f}")
    print(f"adjusted Rand index vs species:             {ari_species:.4f}")

    _plot_demo(gmm, X[args.column].to_numpy(), labels, iris["species"], out, args.column)
    _write_params(gmm, [args.column], out / "params.json")
    print()
    print(f"wrote {out / 'loss.png'}, {out / 'clusters.png'}, {out / 'params.json'}")
    return 0


def _plot_demo(gmm, x: np.ndarray, labels: np.ndarray, species, out: Path, column: str) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only: the CLI never opens a window
    import matplotlib.pyplot as plt

    from . import plotting

    fig, ax = plt.subplots(figsize=(6, 3.5))
    plotting.plot_loss_history(gmm, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "loss.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    plotting.plot_density_1d(gmm, x, ax=axes[0])
    axes[0].set_xlabel(column)
    plotting.plot_assignments(x, labels, ax=axes[1], hue=np.asarray(species))
    axes[1].set_ylabel(column)
    fig.tight_layout()
    fig.savefig(out / "clusters.png", dpi=100)
    plt.close(fig)


def _write_params(gmm, names: Sequence[str], path: Path) -> None:
    import dataclasses
    # The resolved priors: the fields of the fitted covariance type (the
    # others are None and left out).
    priors = {f.name: np.asarray(getattr(gmm.priors_, f.name)).tolist()
              for f in dataclasses.fields(gmm.priors_)
              if getattr(gmm.priors_, f.name) is not None}
    doc = {
        "n_components": int(gmm.weights_.size),
        "features": list(names),
        "covariance_type": gmm.covariance_type_,
        "weights": gmm.weights_.tolist(),
        "means": gmm.means_.tolist(),
        # scikit-learn's shapes: (K, D, D) full, (D, D) tied, (K, D) diag, (K,) spherical
        "covariances": gmm.covariances_.tolist(),
        # per-feature (marginal) standard deviations, (K, D) for every type
        "scales": gmm.scales_.tolist(),
        "loss": gmm.loss_,
        "n_iter": gmm.n_iter_,
        "converged": gmm.converged_,
        "priors": priors,
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)


def _read_csv(path: str):
    import pandas as pd
    if not os.path.exists(path):
        raise CLIError(f"file not found: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a folder, not a CSV file")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"cannot read {path!r} as CSV: {msg}") from None
    if df.shape[0] == 0:
        raise CLIError(f"{path!r} has a header but no data rows")
    return df


def _fit(args) -> int:
    import pandas as pd

    df = _read_csv(args.file)
    if args.columns:
        missing = [c for c in args.columns if c not in df.columns]
        if missing:
            raise CLIError(f"column(s) {missing} not in {args.file!r}; available: "
                           f"{list(map(str, df.columns))}")
        columns = list(args.columns)
    else:
        columns = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c])]
        if not columns:
            raise CLIError(f"{args.file!r} has no numeric columns; name them with --columns")
    gmm = _make_estimator(args).fit(df[columns])
    out = _out_dir(args.out)
    labels = gmm.predict(df[columns])
    proba = gmm.predict_proba(df[columns])
    result = df.copy()
    result["cluster"] = labels
    for k in range(proba.shape[1]):
        result[f"p_cluster_{k}"] = proba[:, k]
    tmp = out / "assignments.csv.tmp"
    result.to_csv(tmp, index=False)
    os.replace(tmp, out / "assignments.csv")
    _write_params(gmm, columns, out / "params.json")
    print(f"fitted K={args.n_components} ({gmm.covariance_type_} covariances) on {len(df)} rows "
          f"x {len(columns)} column(s) {columns}; loss {gmm.loss_:.4f}, "
          f"converged {gmm.converged_}")
    print(_format_params(gmm, columns))
    print(f"wrote {out / 'params.json'} and {out / 'assignments.csv'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Peak memory of BayesianGMM prediction at large N: chunking keeps the
working set bounded.

Each (N, method) runs in a fresh subprocess, so that the peak resident set
(Linux ``VmHWM``, reset just before the call through ``/proc/self/clear_refs``)
and ``torch.cuda.max_memory_allocated`` belong to that one call.  The model is
fitted (EM only) on a 5,000-point sample; prediction then runs on N points of D
features.  Columns:

- ``host peak +MiB``: the rise of the peak resident set over the resident set
  just before the call (so it includes the returned array);
- ``host beyond output``: that rise minus the size of the returned array, the
  working memory of the call itself;
- ``GPU peak MiB``: ``torch.cuda.max_memory_allocated`` during the call, above
  what was allocated before it;
- ``unchunked N*K*D MiB``: the float32 (N, K, D) tensor (N, C, K, D for the
  classifier) an unchunked computation of the component log densities would
  need, for scale.

Run ``python benchmarks/predict_memory.py --help``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _common import (base_parser, default_json_path, header, machine_info,  # noqa: E402
                     markdown_table, resolve_device, write_json)

METHODS = {"gmm": ("predict_proba", "score_samples", "predict"),
           "classifier": ("predict_proba", "predict")}
MiB = 2.0 ** 20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def child(n: int, method: str, device: str, K: int, D: int, seed: int, estimator: str,
          n_classes: int) -> dict:
    """One measurement; runs in its own process."""
    import gc

    import torch

    from bayesgmm import BayesianGMM, GMMClassifier

    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 5, (K, D))
    labels = rng.integers(0, K, 5_000)
    sample = centers[labels] + rng.normal(0, 1, (5_000, D))
    if estimator == "gmm":
        est = BayesianGMM(K, covariance_type="diag", n_init=1, em_max_iter=30, max_iter=0, device=device,
                          random_state=seed).fit(sample)
    else:
        # Classes made of interleaved clusters, K components each.
        est = GMMClassifier(covariance_type="diag", n_components=K, n_init=1, em_max_iter=30, max_iter=0, device=device,
                            random_state=seed).fit(sample, labels % n_classes)
    X = rng.standard_normal((n, D))
    X *= 5.0
    fn = getattr(est, method)
    fn(X[:1000])                                    # warm up kernels and allocators
    gc.collect()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    reset_ok = _reset_peak_rss()
    rss_before = _status_kib("VmRSS") * 1024
    t0 = time.perf_counter()
    out = fn(X)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM") * 1024
    row = {
        "n": n, "estimator": estimator, "method": method, "device": device, "K": K, "D": D,
        "seconds": seconds, "points_per_s": n / seconds,
        "input_mib": X.nbytes / MiB, "output_mib": out.nbytes / MiB,
        "host_peak_rise_mib": (peak - rss_before) / MiB,
        "host_beyond_output_mib": (peak - rss_before - out.nbytes) / MiB,
        "peak_rss_reset": reset_ok,
        "gpu_peak_mib": ((torch.cuda.max_memory_allocated() - gpu_before) / MiB) if cuda else None,
        "unchunked_nkd_mib": n * K * D * 4 * (n_classes if estimator == "classifier" else 1) / MiB,
    }
    return row


def main(argv=None) -> None:
    p = base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=float, nargs="+", default=None,
                   help="numbers of points N (default: 1e5 1e6 1e7 on CPU, 1e6 1e7 1e8 on CUDA)")
    p.add_argument("--estimator", choices=sorted(METHODS), default="gmm",
                   help="BayesianGMM, or GMMClassifier with --n-classes classes")
    p.add_argument("--methods", nargs="+", choices=sorted(set(sum(METHODS.values(), ()))),
                   default=None, help="default: every method of the estimator")
    p.add_argument("--n-components", type=int, default=8, help="per class for the classifier")
    p.add_argument("--n-classes", type=int, default=5)
    p.add_argument("--n-features", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true", help=argparse_suppress())
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.child:
        n = int(args.sizes[0])
        row = child(n, args.methods[0], device, args.n_components, args.n_features, args.seed,
                    args.estimator, args.n_classes)
        print("RESULT " + json.dumps(row), flush=True)
        return
    sizes = args.sizes or ([1e4, 1e5] if args.quick else
                           [1e5, 1e6, 1e7] if device == "cpu" else [1e6, 1e7, 1e8])
    methods = args.methods or list(METHODS[args.estimator])
    bad = sorted(set(methods) - set(METHODS[args.estimator]))
    if bad:
        raise SystemExit(f"--estimator {args.estimator} has no method(s) {bad}: "
                         f"choose from {list(METHODS[args.estimator])}")
    info = machine_info(device)
    name = "BayesianGMM" if args.estimator == "gmm" else "GMMClassifier"
    print(header(f"Prediction peak memory ({name}, chunked)", info), flush=True)
    rows = []
    for n in sizes:
        for method in methods:
            cmd = [sys.executable, __file__, "--child", "--device", device, "--sizes", str(int(n)),
                   "--methods", method, "--n-components", str(args.n_components),
                   "--n-features", str(args.n_features), "--seed", str(args.seed),
                   "--estimator", args.estimator, "--n-classes", str(args.n_classes)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                print(f"N={int(n)} {method}: failed (exit {proc.returncode}): {' | '.join(tail)}",
                      flush=True)
                rows.append({"n": int(n), "method": method, "device": device, "failed": True})
                continue
            row = json.loads(lines[-1][len("RESULT "):])
            rows.append(row)
            print(f"N={int(n)} {method}: {row['seconds']:.2f} s, host +{row['host_peak_rise_mib']:.0f} MiB",
                  flush=True)
    columns = [("n", "N"), ("method", "method"), ("seconds", "time s"),
               ("points_per_s", "points/s"), ("input_mib", "input MiB"),
               ("output_mib", "output MiB"), ("host_peak_rise_mib", "host peak +MiB"),
               ("host_beyond_output_mib", "host beyond output MiB"),
               ("gpu_peak_mib", "GPU peak MiB"), ("unchunked_nkd_mib", "unchunked N*K*D MiB")]
    print()
    classes = f"{args.n_classes} classes x " if args.estimator == "classifier" else ""
    print(f"{name}: {classes}K = {args.n_components}, D = {args.n_features}, float64 input\n")
    print(markdown_table(rows, columns, digits=3), flush=True)
    write_json(args.json or default_json_path(f"predict_memory_{args.estimator}", device),
               {"machine": info, "args": vars(args) | {"json": str(args.json)}, "rows": rows})


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

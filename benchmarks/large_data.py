"""Out-of-core and multi-process fits: a float32 memmap of N x D points
(1e8 x 4, 1.6 GB on disk, by default) fitted by ``BayesianGMM`` reading row
chunks, in one process and in two processes under ``torchrun`` (gloo, each
rank a half of the rows), with the peak resident memory of every process.

Each fit runs in a fresh child process (so its peak RSS is its own):
``BayesianGMM(K, n_init=1, em_max_iter=E, max_iter=0, tol=0)`` on
``np.load(path, mmap_mode="r")`` with a progress bar per pass.  A fit
reads the data 3 + E + 1 times: two passes for the moments (validation,
first and second moments, the seeding sample), one for the initial
partition, one per EM iteration, one for the final loss.  Reported: the
whole fit's time, the time per EM pass (the fit's time less that of a
moments-only scan, over the E + 2 E-step passes), and peak RSS
(``VmHWM``).  The data: K well separated Gaussians, written in chunks.

Run ``python benchmarks/large_data.py --help``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def make_file(path: Path, n: int, d: int, k: int, seed: int = 0) -> float:
    """Write the .npy file in chunks with plain writes (bounded memory, and
    no mapping whose pages would stay resident in this process and be
    inherited by the children's peak-RSS counters); returns seconds."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6.0, (k, d)).astype(np.float32)
    step = 2 ** 21
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                 "fortran_order": False, "shape": (n, d)})
        for a in range(0, n, step):
            m = min(step, n - a)
            z = rng.integers(0, k, m)
            fh.write((centres[z] + rng.standard_normal((m, d), dtype=np.float32)).tobytes())
    return time.perf_counter() - t0


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's
    ru_maxrss it is not inherited from the parent across fork and exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """One fit (one rank under torchrun); prints a JSON line."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    X = np.load(args.file, mmap_mode="r")
    if not args.distributed:
        _fit_and_report(args, X, None, 0, 1)
        return
    import torch.distributed as dist
    dist.init_process_group("gloo")
    try:
        rank, world = dist.get_rank(), dist.get_world_size()
        n = X.shape[0]
        _fit_and_report(args, X[rank * n // world:(rank + 1) * n // world], dist.group.WORLD,
                        rank, world)
    finally:
        # gloo's threads must be joined before the interpreter exits, or
        # the process can abort ("terminate called without an active
        # exception") after its work is done.
        dist.destroy_process_group()
    from bayesgmm.distributed import exit_process
    exit_process(0)    # even then the C++ teardown can abort: skipped


def _fit_and_report(args, X, group, rank: int, world: int) -> None:
    import torch
    from bayesgmm import BayesianGMM
    from bayesgmm._base import stream_data
    from bayesgmm import covariance

    gmm = BayesianGMM(args.components, n_init=1, em_max_iter=args.em_iters, max_iter=0, tol=0.0,
                      random_state=0, device="cpu", progress=args.progress and rank == 0)
    t0 = time.perf_counter()
    gmm.fit(X, process_group=group)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    from bayesgmm.distributed import reducer
    stream_data(BayesianGMM(), X, None, covariance.get("full", X.shape[1]), torch.device("cpu"),
                False, torch.float32, {}, reducer(group))
    scan_s = time.perf_counter() - t0
    result = {"rank": rank, "world": world, "rows": int(X.shape[0]), "fit_s": fit_s,
              "scan_s": scan_s, "em_pass_s": (fit_s - scan_s) / (args.em_iters + 2),
              "peak_rss_mb": peak_rss_mb(), "n_iter": gmm.n_iter_, "means": gmm.means_.tolist()}
    # One file per rank: the ranks' stdout lines would interleave.
    Path(f"{args.file}.{world}.rank{rank}.json").write_text(json.dumps(result))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = C.base_parser(__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=float, default=1e8)
    p.add_argument("--features", type=int, default=4)
    p.add_argument("--components", type=int, default=4)
    p.add_argument("--em-iters", type=int, default=3)
    p.add_argument("--dir", type=Path, default=None,
                   help="folder for the data file (default: a temporary folder, removed after)")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--progress", action="store_true", help="progress bar per pass")
    p.add_argument("--child", action="store_true", help=argparse_hidden())
    p.add_argument("--file", type=Path, help=argparse_hidden())
    p.add_argument("--distributed", action="store_true", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.quick:
        args.rows, args.em_iters = 2e6, 2
    C.warn_filter()
    device = C.resolve_device(args.device)
    # The fits run in child processes on this many threads: the machine
    # line records theirs (this process only writes the file and waits).
    C.apply_threads(args.threads or 1)
    info = C.machine_info(device)
    print(C.header("large_data", info))
    n = int(args.rows)
    tmp = None
    folder = args.dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    path = folder / f"gmm_{n}x{args.features}.npy"
    write_s = make_file(path, n, args.features, args.components)
    size_gb = path.stat().st_size / 1e9
    print(f"  wrote {path.name}: {n:.3g} x {args.features} float32, {size_gb:.2f} GB in "
          f"{write_s:.1f} s", flush=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads or 1), PYTHONWARNINGS="ignore")
    common = [str(Path(__file__).resolve()), "--child", "--file", str(path),
              "--components", str(args.components), "--em-iters", str(args.em_iters),
              "--threads", str(args.threads or 1)] + (["--progress"] if args.progress else [])
    rows = []
    for procs in args.processes:
        if procs == 1:
            cmd = [sys.executable] + common
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
                   "--master-addr", "127.0.0.1", "--master-port", str(_free_port())] + common + \
                  ["--distributed"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"fit with {procs} process(es) failed:\n{proc.stderr[-3000:]}")
        ranks = [json.loads(Path(f"{path}.{procs}.rank{r}.json").read_text())
                 for r in range(procs)]
        r0 = min(ranks, key=lambda r: r["rank"])
        row = {"processes": procs, "rows": n, "features": args.features,
               "components": args.components, "em_iters": args.em_iters,
               "fit_s": max(r["fit_s"] for r in ranks), "em_pass_s": max(r["em_pass_s"] for r in ranks),
               "scan_s": max(r["scan_s"] for r in ranks),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in ranks), "wall_s": wall,
               "ranks_agree": all(r["means"] == r0["means"] for r in ranks),
               "means": r0["means"]}
        rows.append(row)
        print(f"  {procs} process(es): fit {row['fit_s']:.1f} s, {row['em_pass_s']:.2f} s per EM "
              f"pass, peak RSS {row['peak_rss_mb']:.0f} MB per process", flush=True)
    print(f"\n{n:.3g} x {args.features} float32 memmap ({size_gb:.2f} GB), K={args.components}, "
          f"{args.em_iters} EM iterations, {args.threads or 1} thread(s) per process\n")
    print(C.markdown_table(rows, [("rows", "N"), ("processes", "processes"), ("fit_s", "fit (s)"),
                                  ("em_pass_s", "s per EM pass"), ("scan_s", "moments scan (s)"),
                                  ("peak_rss_mb", "peak RSS per process (MB)"),
                                  ("ranks_agree", "ranks agree")]))
    C.write_json(args.json or C.default_json_path("large_data", device),
                 {"benchmark": "large_data", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "file_gb": size_gb, "write_s": write_s,
                  "settings": vars(args) | {"json": str(args.json), "dir": str(args.dir),
                                            "file": None},
                  "rows": rows})
    if tmp is not None:
        tmp.cleanup()


def argparse_hidden():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()

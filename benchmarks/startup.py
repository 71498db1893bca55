"""Start-up times of the package and its console script, with the dependencies' own floors.

The bar of issue 12, on the idle CPU: ``python -c "import bayesgmm"`` under
0.5 s, ``bayesgmm --help`` under 1 s, ``bayesgmm demo`` under 4 s.

Each command runs in a fresh interpreter (``subprocess.run``, wall clock by
``time.perf_counter`` around it), the commands alternating ``--repeats``
times after one untimed round (the first run after an install also compiles
bytecode and fills the disk cache).  Side by side, the floors a user pays
whatever this package does: the bare interpreter, ``import torch`` and
``import sklearn.base`` (bayesgmm's estimators subclass scikit-learn's), and
the demo's job done by hand with scikit-learn (read the shipped iris CSV
with pandas, ``GaussianMixture(2)`` on ``petal_length``, a matplotlib
histogram with the two weighted component densities saved as PNG).  Every
command's stderr is kept: ``warning lines`` counts the lines that contain
"Warning" (the issue asks for none).

Run ``python benchmarks/startup.py --help``; ``--quick`` checks the pipeline
(one round, no warm-up; its figures mean nothing).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

#: The demo's job with scikit-learn, as a user would write it (argv[1]: the
#: iris CSV, argv[2]: the PNG to write).
SKLEARN_DEMO = """
import sys
import numpy as np, pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from scipy.stats import norm
from sklearn.mixture import GaussianMixture
x = pd.read_csv(sys.argv[1])[["petal_length"]].to_numpy()
g = GaussianMixture(2, random_state=0).fit(x)
print(g.weights_, g.means_.ravel(), np.sqrt(g.covariances_.ravel()))
grid = np.linspace(x.min() - 1, x.max() + 1, 400)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.hist(x[:, 0], bins=30, density=True, alpha=0.4)
for w, m, c in zip(g.weights_, g.means_.ravel(), g.covariances_.ravel()):
    ax.plot(grid, w * norm.pdf(grid, m, np.sqrt(c)))
fig.savefig(sys.argv[2], dpi=100)
"""


def commands(python: str, script: str, out: Path, iris: str) -> list[tuple[str, list[str], float]]:
    """(name, argv, bar in seconds or nan) of every command timed."""
    nan = float("nan")
    return [
        ("python -c pass", [python, "-c", "pass"], nan),
        ('python -c "import bayesgmm"', [python, "-c", "import bayesgmm"], 0.5),
        ("bayesgmm --help", [script, "--help"], 1.0),
        ("bayesgmm demo", [script, "demo", "--out", str(out / "demo")], 4.0),
        ('python -c "import torch"', [python, "-c", "import torch"], nan),
        ('python -c "import sklearn.base"', [python, "-c", "import sklearn.base"], nan),
        ("the demo's job with scikit-learn", [python, "-c", SKLEARN_DEMO, iris,
                                              str(out / "sklearn.png")], nan),
    ]


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7, help="timed rounds of every command")
    args = p.parse_args()
    if args.quick:
        args.repeats = 1
    info = C.machine_info("cpu")
    print(C.header("Start-up times", info))
    print(f"command: {C.argv_line()}\n")
    script = Path(sys.executable).with_name("bayesgmm")
    if not script.exists():
        sys.exit(f"the console script {script} is missing: install the package "
                 f"(pip install -e .) into this environment first")
    iris = str(resources.files("bayesgmm") / "data" / "iris.csv")
    # Each child's own defaults (threads included), as a user's shell gives them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(sys.executable, str(script), Path(tmp), iris)
        times = {name: [] for name, _, _ in cmds}
        warned = {name: 0 for name, _, _ in cmds}
        for rnd in range(args.repeats + (0 if args.quick else 1)):
            timed = args.quick or rnd > 0
            for name, argv, _ in cmds:
                t0 = time.perf_counter()
                proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp)
                dt = time.perf_counter() - t0
                if proc.returncode != 0:
                    sys.exit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
                warned[name] = max(warned[name], sum("Warning" in line
                                                     for line in proc.stderr.splitlines()))
                if timed:
                    times[name].append(dt)
            if timed:
                print(f"round {len(times[cmds[0][0]])}: " + ", ".join(
                    f"{n} {times[n][-1]:.2f} s" for n, _, _ in cmds), flush=True)
    rows = []
    for name, _, bar in cmds:
        t = times[name]
        rows.append({"command": name, "median s": statistics.median(t), "min s": min(t),
                     "max s": max(t), "bar s": bar if bar == bar else None,
                     "within bar": (f"{sum(v < bar for v in t)}/{len(t)}" if bar == bar else "-"),
                     "warning lines": warned[name]})
    print(f"\nwall clock of each command in a fresh interpreter, {args.repeats} rounds "
          f"(commands alternating)\n")
    print(C.markdown_table(rows, [("command", "command"), ("median s", "median (s)"),
                                  ("min s", "min (s)"), ("max s", "max (s)"),
                                  ("bar s", "bar (s)"), ("within bar", "runs within bar"),
                                  ("warning lines", "warning lines on stderr")], digits=3))
    C.write_json(args.json or C.default_json_path("startup", "cpu"),
                 {"benchmark": "startup", "quick": args.quick, "command": C.argv_line(),
                  "machine": info, "settings": vars(args) | {"json": str(args.json)},
                  "skipped": [], "rows": rows, "raw": times})


if __name__ == "__main__":
    main()

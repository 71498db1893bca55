"""The bayesgmm command line: the demo (main job) and fit on any CSV."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bayesgmm.cli import main


def test_demo_prints_the_study_and_writes_its_files(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "adjusted Rand index vs setosa / not setosa: 1.0000" in text
    assert "clusters by species" in text and "setosa" in text
    for name in ("loss.png", "clusters.png", "params.json"):
        assert (out / name).stat().st_size > 0
    params = json.loads((out / "params.json").read_text())
    means = sorted(m[0] for m in params["means"])
    np.testing.assert_allclose(means, [1.46, 4.9], atol=0.05)
    np.testing.assert_allclose(sorted(params["weights"]), [1 / 3, 2 / 3], atol=0.02)
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_writes_parameters_and_assignments(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": np.r_[rng.normal(0, 1, 100), rng.normal(8, 1, 50)],
                       "y": np.r_[rng.normal(0, 1, 100), rng.normal(8, 1, 50)],
                       "name": ["row"] * 150})
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    out = tmp_path / "res"
    assert main(["fit", str(path), "--columns", "x", "y", "-k", "2", "--out", str(out),
                 "--device", "cpu"]) == 0
    params = json.loads((out / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    assert np.asarray(params["means"]).shape == (2, 2)
    result = pd.read_csv(out / "assignments.csv")
    assert list(result.columns) == ["x", "y", "name", "cluster", "p_cluster_0", "p_cluster_1"]
    # The two blobs are two clusters.
    assert result.groupby("cluster").size().sort_values().tolist() == [50, 100]
    np.testing.assert_allclose(result[["p_cluster_0", "p_cluster_1"]].sum(axis=1), 1.0, atol=1e-9)
    # Without --columns every numeric column is used.
    assert main(["fit", str(path), "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads((out / "params.json").read_text())["features"] == ["x", "y"]


@pytest.mark.parametrize("setup,args,message", [
    (None, ["fit", "{tmp}/missing.csv"], "file not found"),
    ("x,y\n1,2\n3,4\n5,6\n", ["fit", "{tmp}/d.csv", "--columns", "x", "z"],
     r"column(s) ['z'] not in"),
    ("x,s\n1,a\n2,b\n3,c\n", ["fit", "{tmp}/d.csv", "--columns", "x", "s"], "non-numeric column"),
    ("x,y\n", ["fit", "{tmp}/d.csv"], "no data rows"),
    ("x,y\n1,2\n", ["fit", "{tmp}/d.csv", "-k", "3"], "n_components=3 but only 1 sample"),
    ("x,y\n1,2\n3,\n5,6\n", ["fit", "{tmp}/d.csv"], "NaN in column 1 ('y')"),
    ("a\n\"unclosed\n", ["fit", "{tmp}/d.csv"], "cannot read"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys, setup, args, message):
    if setup is not None:
        (tmp_path / "d.csv").write_text(setup)
    argv = [a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesgmm: error: ") and message in err
    assert err.count("\n") == 1


def test_console_script_help_documents_every_option():
    exe = shutil.which("bayesgmm", path=os.path.dirname(sys.executable)) or shutil.which("bayesgmm")
    assert exe, "the bayesgmm console script is not installed"
    text = subprocess.run([exe, "fit", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--columns", "--n-components", "--out", "--seed", "--n-init", "--device",
                   "--progress"):
        assert option in text
    bad = subprocess.run([exe, "fit", "nowhere.csv"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "bayesgmm: error: file not found: 'nowhere.csv'"

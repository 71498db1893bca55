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
    # the default covariance type; with one feature "full" is (K, 1, 1)
    assert params["covariance_type"] == "full"
    cov = np.asarray(params["covariances"])
    assert cov.shape == (2, 1, 1)
    np.testing.assert_allclose(np.sqrt(cov[:, 0, 0]), np.asarray(params["scales"])[:, 0])
    assert "covariance_type=full" in text


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


@pytest.fixture(scope="module")
def blobs_csv(tmp_path_factory):
    # Two tilted blobs: x and y strongly correlated within each.
    rng = np.random.default_rng(1)
    cov = [[1.0, 0.8], [0.8, 1.0]]
    xy = np.r_[rng.multivariate_normal([0, 0], cov, 80), rng.multivariate_normal([6, 0], cov, 40)]
    df = pd.DataFrame(xy, columns=["x", "y"])
    path = tmp_path_factory.mktemp("blobs") / "blobs.csv"
    df.to_csv(path, index=False)
    return path, df


@pytest.mark.parametrize("covariance_type,shape", [
    ("full", (2, 2, 2)), ("tied", (2, 2)), ("diag", (2, 2)), ("spherical", (2,))])
def test_fit_covariance_type_flag(tmp_path, capsys, blobs_csv, covariance_type, shape):
    from bayesgmm import BayesianGMM
    from bayesgmm.covariance import get

    path, df = blobs_csv
    out = tmp_path / "res"
    assert main(["fit", str(path), "-k", "2", "--covariance-type", covariance_type,
                 "--n-init", "2", "--out", str(out), "--device", "cpu"]) == 0
    assert f"({covariance_type} covariances)" in capsys.readouterr().out
    params = json.loads((out / "params.json").read_text())
    assert params["covariance_type"] == covariance_type
    cov = np.asarray(params["covariances"])
    assert cov.shape == shape  # scikit-learn's shapes
    scales = np.asarray(params["scales"])
    assert scales.shape == (2, 2)  # kept, per feature, for every type
    mats = get(covariance_type, 2).matrices(cov, 2, 2)
    np.testing.assert_allclose(scales, np.sqrt(np.diagonal(mats, axis1=1, axis2=2)))
    # exactly the estimator's fit with the same settings
    gmm = BayesianGMM(2, covariance_type=covariance_type, n_init=2, random_state=0,
                      device="cpu").fit(df)
    np.testing.assert_allclose(cov, gmm.covariances_, rtol=1e-6)
    np.testing.assert_allclose(params["means"], gmm.means_, rtol=1e-6)
    # the resolved priors of this type only: Wishart for full/tied, InverseGamma otherwise
    wishart = {"covariance_dof", "covariance_scale"}
    inverse_gamma = {"scale_shape", "scale_rate"}
    keys = set(params["priors"])
    assert {"weight_concentration", "mean_loc", "mean_scale"} <= keys
    assert keys & (wishart | inverse_gamma) == (
        wishart if covariance_type in ("full", "tied") else inverse_gamma)
    if covariance_type == "full":  # the blobs are tilted: the fit sees it
        corr = cov[:, 0, 1] / np.sqrt(cov[:, 0, 0] * cov[:, 1, 1])
        assert np.all(corr > 0.6)


def test_demo_covariance_type_flag(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--covariance-type", "spherical", "--n-init", "1", "--out", str(out),
                 "--device", "cpu"]) == 0
    assert "covariance_type=spherical" in capsys.readouterr().out
    params = json.loads((out / "params.json").read_text())
    assert params["covariance_type"] == "spherical"
    assert np.asarray(params["covariances"]).shape == (2,)


@pytest.mark.parametrize("command", ["fit", "demo"])
def test_bad_covariance_type_exits_2_with_the_choices(tmp_path, capsys, command):
    argv = [command] + (["data.csv"] if command == "fit" else []) + [
        "--covariance-type", "banana", "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"bayesgmm {command}: error: argument --covariance-type: "
                           "invalid choice: ")
    assert "banana" in last
    for name in ("full", "tied", "diag", "spherical"):
        assert name in last
    assert not (tmp_path / "o").exists()  # nothing was fitted or written


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
                   "--progress", "--covariance-type"):
        assert option in text
    assert "{full,tied,diag,spherical}" in text
    demo = subprocess.run([exe, "demo", "--help"], capture_output=True, text=True,
                          check=True).stdout
    assert "--covariance-type" in demo and "{full,tied,diag,spherical}" in demo
    bad = subprocess.run([exe, "fit", "nowhere.csv"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip() == "bayesgmm: error: file not found: 'nowhere.csv'"

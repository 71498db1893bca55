"""The bayesgmm command line: the demo (main job), fit on any CSV, and fit on a
.npy array out of core, in one process or several (torchrun)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

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


def test_demo_called_from_python_leaves_the_callers_matplotlib_backend(tmp_path):
    """(From an audit.) main(["demo"]) called matplotlib.use("Agg"): in a
    notebook the inline or interactive backend was gone after it.  The
    demo draws on figures of its own: the backend stays, no pyplot figure
    is left open, and the PNG files are written."""
    import matplotlib
    import matplotlib.pyplot as plt
    before = matplotlib.get_backend()
    try:
        matplotlib.use("svg")
        open_before = plt.get_fignums()
        assert main(["demo", "--out", str(tmp_path), "--device", "cpu"]) == 0
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == open_before
    finally:
        matplotlib.use(before)
    for name in ("loss.png", "clusters.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    ("x,y\n1,2\n", ["fit", "{tmp}/d.csv", "-k", "3"], "-k 3 but only 1 sample(s): use -k <= 1"),
    ("x,y\n1,2\n3,\n5,6\n", ["fit", "{tmp}/d.csv"], "NaN in column 'y', data row 2"),
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


# --- Through the installed console script --------------------------------------------------
# Each run of the script spends ~5 s importing torch and Pyro, so the runs of
# a test are started side by side (the regression tests below share one module
# fixture), and each test checks its own.  Checks that need no real process use
# main() in-process.

def _console_script() -> str:
    exe = shutil.which("bayesgmm", path=os.path.dirname(sys.executable)) or shutil.which("bayesgmm")
    assert exe, "the bayesgmm console script is not installed"
    return exe


def _run_script(argv, close_stdout=False) -> subprocess.CompletedProcess:
    cmd = [_console_script(), *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the runs share the cores
    if not close_stdout:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    proc.stdout.close()  # the reader is gone before the first line, as with `| head`
    err = proc.stderr.read()
    proc.wait(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, None, err)


def _run_side_by_side(cases: dict) -> dict:
    """Run ``{name: (argv, close_stdout)}`` together; the CompletedProcess of each name."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        futures = {name: pool.submit(_run_script, argv, close)
                   for name, (argv, close) in cases.items()}
        return {name: f.result() for name, f in futures.items()}


def test_console_script_help_documents_every_option():
    runs = _run_side_by_side({"fit": (["fit", "--help"], False),
                              "demo": (["demo", "--help"], False),
                              "predict": (["predict", "--help"], False),
                              "bad": (["fit", "nowhere.csv"], False),
                              "swallowed": (["fit", "--columns", "x", "y", "d.csv"], False)})
    text = runs["fit"].stdout
    assert runs["fit"].returncode == 0
    for option in ("--columns", "--n-components", "--max-components", "--out", "--seed",
                   "--n-init", "--device", "--progress", "--covariance-type", "--sep",
                   "--decimal", "--thousands", "--weights", "--missing", "--dropna", "--save",
                   "--impute", "--encoding",
                   "--distributed",
                   "--inference", "--weight-prior", "--concentration", "--n-samples",
                   "--n-chains", "--n-warmup", "--threads", "--max-iter", "--dtype"):
        assert option in text
    assert ".npy" in text and "torchrun" in text
    assert "{full,tied,diag,spherical}" in text and "{error,marginalize}" in text
    assert "{map,vi,nuts}" in text and "{dirichlet,dirichlet_process}" in text
    pred = runs["predict"].stdout
    assert runs["predict"].returncode == 0
    for option in ("--missing {error,marginalize}", "--dropna", "--sep", "--decimal",
                   "--thousands", "--out", "--device", "--threads", "--impute", "--encoding"):
        assert option in pred
    demo = runs["demo"].stdout
    assert runs["demo"].returncode == 0
    assert "--covariance-type" in demo and "{full,tied,diag,spherical}" in demo
    bad = runs["bad"]
    assert bad.returncode == 2
    assert bad.stderr.strip() == "bayesgmm: error: file not found: 'nowhere.csv'"
    # --columns takes every word up to the next option, the data file too:
    # the error says so, and how to write it.
    swallowed = runs["swallowed"]
    assert swallowed.returncode == 2
    assert swallowed.stderr.strip().endswith(
        "the following arguments are required: FILE (--columns takes every word up to the next "
        "option, so it read 'd.csv' as a column name: give FILE before --columns, e.g. "
        "'bayesgmm fit d.csv --columns x y', or end the names with '--' and give FILE last, "
        "after every option: 'bayesgmm fit --columns x y -- d.csv')"), swallowed.stderr


def _two_blobs(seed: int) -> tuple:
    """Two round blobs (sd 0.5) of 120 and 60 points and their true means."""
    rng = np.random.default_rng(seed)
    truth = np.array([[0.0, 0.0], [6.0, 3.0]])
    xy = np.r_[rng.normal(truth[0], 0.5, (120, 2)), rng.normal(truth[1], 0.5, (60, 2))]
    return pd.DataFrame(xy.round(3), columns=["x", "y"]), truth


def _assert_means(params: dict, truth: np.ndarray) -> None:
    # sorted by x to undo label switching; 0.3 is over 4 standard errors
    # (0.5 / sqrt(60)) of a blob's sample mean
    means = np.asarray(params["means"])
    np.testing.assert_allclose(means[np.argsort(means[:, 0])], truth, atol=0.3)


def _one_error_line(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("bayesgmm: error: ") and run.stderr.count("\n") == 1, run.stderr
    return run.stderr


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("script")
    blobs, _ = _two_blobs(3)
    fit = ["fit", "-k", "2", "--n-init", "1", "--device", "cpu"]

    # the user's own columns named like the ones the fit adds
    mine = blobs.assign(cluster=np.arange(len(blobs)) % 7, p_cluster_0=0.25, name="r")
    mine.to_csv(root / "mine.csv", index=False)
    blobs.to_csv(root / "blobs.tsv", sep="\t", index=False)
    blobs.to_csv(root / "blobs_de.csv", sep=";", decimal=",", index=False)
    (root / "nul.csv").write_bytes(b"x,y\x00z\n1,2\n3,4\n")
    (root / "blocked" / "params.json").mkdir(parents=True)  # a folder where a file goes
    blobs.assign(name="r").to_csv(root / "named.csv", index=False)
    wide = pd.DataFrame(np.random.default_rng(0).normal(size=(90, 13)).round(3),
                        columns=[f"feature_{j}" for j in range(13)])
    wide.to_csv(root / "wide.csv", index=False)
    blobs[["x"]].to_csv(root / "one.csv", index=False)
    blobs.assign(target=[0] * 120 + [1] * 60).to_csv(root / "target.csv", index=False)
    stray = blobs.astype({"y": object})
    stray.loc[3, "y"] = "?"                 # one stray token in a column of numbers
    stray.to_csv(root / "stray.csv", index=False)
    _write_aligned(blobs, root / "aligned.txt")
    blobs.rename(columns={"x": "-x"}).to_csv(root / "dash.csv", index=False)
    cases = {
        # A column whose name starts with '-': joined by '=', --columns repeated.
        "dash": ([*fit, root / "dash.csv", "--columns=-x", "--columns", "y", "--out",
                  root / "o_dash"], False),
        "dash_spaced": ([*fit, root / "dash.csv", "--columns", "-x", "y", "--out",
                         root / "o_dash2"], False),
        "aligned": ([*fit, root / "aligned.txt", "--out", root / "o_aligned"], False),
        "mine": ([*fit, root / "mine.csv", "--columns", "x", "y", "--out", root / "o_mine"],
                 False),
        "tsv_piped": ([*fit, root / "blobs.tsv", "--out", root / "o_tsv"], True),
        "decimal_commas": ([*fit, root / "blobs_de.csv", "--out", root / "o_de"], False),
        "nul": ([*fit, root / "nul.csv", "--out", root / "o_nul"], False),
        "blocked": (["demo", "--device", "cpu", "--out", root / "blocked"], False),
        "twice": ([*fit, root / "named.csv", "--columns", "x", "x", "--out", root / "o_2"],
                  False),
        "text": ([*fit, root / "named.csv", "--columns", "x", "name", "--out", root / "o_t"],
                 False),
        "progress": ([*fit, root / "blobs.tsv", "--progress", "--out", root / "o_p"], False),
        "wide": ([*fit, root / "wide.csv", "--covariance-type", "diag", "--out", root / "o_w"],
                 False),
        "k_too_big": (["fit", "-k", "300", "--device", "cpu", root / "named.csv", "--out",
                       root / "o_k"], False),
        "wrong_sep": ([*fit, root / "blobs.tsv", "--sep", ",", "--out", root / "o_s"], False),
        "one_column": ([*fit, root / "one.csv", "--columns", "y", "--out", root / "o_1"],
                       False),
        "device": ([*fit, root / "named.csv", "--device", "tpu", "--out", root / "o_d"], False),
        "target": ([*fit, root / "target.csv", "--out", root / "o_target"], False),
        "sep_tab": ([*fit, root / "blobs.tsv", "--sep", "tab", "--out", root / "o_tab"], False),
        "save_nowhere": ([*fit, root / "named.csv", "--save", root / "no" / "m.bgmm", "--out",
                          root / "o_save"], False),
        "vi_dp": (["fit", "-k", "5", "--device", "cpu", root / "named.csv", "--inference", "vi",
                   "--weight-prior", "dirichlet_process", "--n-samples", "200", "--save",
                   root / "dp.bgmm", "--out", root / "o_dp"], False),
        "sparse": (["fit", "-k", "5", "--device", "cpu", root / "named.csv", "--inference",
                    "vi", "--concentration", "0.05", "--out", root / "o_sparse"], False),
        "nuts": ([*fit, root / "named.csv", "--covariance-type", "diag", "--inference", "nuts",
                  "--n-samples", "40", "--n-chains", "2", "--n-warmup", "30", "--out",
                  root / "o_nuts"], False),
        "dp_map": ([*fit, root / "named.csv", "--weight-prior", "dirichlet_process", "--out",
                    root / "o_dpmap"], False),
        "stray": ([*fit, root / "stray.csv", "--out", root / "o_stray"], False),
    }
    return root, _run_side_by_side(cases)


def test_script_takes_a_column_named_with_a_leading_dash(script_runs):
    root, runs = script_runs
    ok = runs["dash"]
    assert ok.returncode == 0, ok.stderr
    params = json.loads((root / "o_dash" / "params.json").read_text())
    assert params["features"] == ["-x", "y"], params["features"]
    bad = runs["dash_spaced"]
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "argument --columns: expected at least one argument (the word after it, '-x', starts "
        "with '-' and so reads as an option: for a column of that name write --columns=-x, and "
        "repeat --columns for the others, e.g. --columns=-x --columns b)"), bad.stderr


def test_script_keeps_input_columns_named_like_the_added_ones(script_runs):
    root, runs = script_runs
    run = runs["mine"]
    assert run.returncode == 0, run.stderr
    assert run.stderr == ("bayesgmm: note: '" + str(root / "mine.csv") + "' already has "
                          "column(s) ['cluster', 'p_cluster_0']; assignments.csv names the "
                          "added columns cluster_1, p_cluster_0_1, p_cluster_1_1\n")
    mine = pd.read_csv(root / "mine.csv")
    result = pd.read_csv(root / "o_mine" / "assignments.csv")
    assert list(result.columns) == [*mine.columns, "cluster_1", "p_cluster_0_1", "p_cluster_1_1"]
    pd.testing.assert_frame_equal(result[mine.columns], mine)  # the user's data, unchanged
    assert result.groupby("cluster_1").size().sort_values().tolist() == [60, 120]
    np.testing.assert_allclose(result[["p_cluster_0_1", "p_cluster_1_1"]].sum(axis=1), 1.0,
                               atol=1e-9)


def test_script_detects_a_tab_separator(script_runs, tmp_path, capsys):
    root, runs = script_runs
    assert runs["tsv_piped"].returncode in (0, 141)  # stdout closed early: see the next test
    blobs, truth = _two_blobs(3)
    params = json.loads((root / "o_tsv" / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    _assert_means(params, truth)
    # assignments.csv keeps the input's separator
    result = pd.read_csv(root / "o_tsv" / "assignments.csv", sep="\t")
    pd.testing.assert_frame_equal(result[["x", "y"]], blobs)
    # --sep tab and a typed \t name the tab too
    for sep in ("tab", "\\t"):
        out = tmp_path / sep.strip("\\")
        assert main(["fit", str(root / "blobs.tsv"), "--sep", sep, "--n-init", "1",
                     "--device", "cpu", "--out", str(out)]) == 0
        _assert_means(json.loads((out / "params.json").read_text()), truth)


def _write_aligned(df, path) -> None:
    """A table with its columns aligned by padding spaces (fixed-width
    output of many programs): right-aligned fields of width 10."""
    lines = ["".join(f"{c:>10}" for c in df.columns)]
    lines += ["".join(f"{v:>10.3f}" for v in row) for row in df.to_numpy()]
    path.write_text("\n".join(lines) + "\n")


def test_script_reads_columns_aligned_by_spaces(script_runs, tmp_path, capsys):
    """Detected (header and rows split at runs of spaces into the same
    number of fields), or named with --sep space / ' ' / whitespace;
    assignments.csv is written with single spaces, which read back the same
    way (predict takes it); a file whose header has spaces but whose rows do
    not line up is read as one column, and the error names --sep space."""
    root, runs = script_runs
    run = runs["aligned"]
    assert run.returncode == 0, run.stderr
    blobs, truth = _two_blobs(3)
    params = json.loads((root / "o_aligned" / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    _assert_means(params, truth)
    result = pd.read_csv(root / "o_aligned" / "assignments.csv", sep=r"\s+")
    pd.testing.assert_frame_equal(result[["x", "y"]], blobs)
    for sep in ("space", " ", "whitespace"):
        out = tmp_path / f"o{len(sep)}"
        assert main(["fit", str(root / "aligned.txt"), "--sep", sep, "-k", "2", "--n-init", "1",
                     "--device", "cpu", "--out", str(out), "--save", str(out) + ".bgmm"]) == 0
        _assert_means(json.loads((out / "params.json").read_text()), truth)
    again = tmp_path / "again"
    assert main(["predict", str(tmp_path / "o5.bgmm"), str(root / "aligned.txt"), "--out",
                 str(again)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again / "assignments.csv", sep=r"\s+"),
                                  pd.read_csv(tmp_path / "o5" / "assignments.csv", sep=r"\s+"))
    # A row left unassigned (--dropna) writes NaN, not an empty cell, which
    # single spaces cannot hold: the table reads back, by predict too.
    gaps = tmp_path / "gaps.txt"
    _write_aligned(blobs, gaps)
    text = gaps.read_text().splitlines()
    gaps.write_text("\n".join(text[:2] + [text[2][:10] + "       NaN"] + text[3:]) + "\n")
    assert main(["fit", str(gaps), "--dropna", "-k", "2", "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "g"), "--save", str(tmp_path / "g.bgmm")]) == 0
    lines = (tmp_path / "g" / "assignments.csv").read_text().splitlines()
    assert len({len(line.split(" ")) for line in lines}) == 1 and " NaN NaN " in lines[2]
    assert main(["predict", str(tmp_path / "g.bgmm"), str(tmp_path / "g" / "assignments.csv"),
                 "--dropna", "--out", str(tmp_path / "g2")]) == 0
    back = pd.read_csv(tmp_path / "g2" / "assignments.csv", sep=r"\s+")
    first = pd.read_csv(tmp_path / "g" / "assignments.csv", sep=r"\s+")
    np.testing.assert_array_equal(back["cluster_1"].to_numpy(), first["cluster"].to_numpy())
    capsys.readouterr()
    (tmp_path / "uneven.txt").write_text("a b\n1 2\n3 4 5\n")
    assert main(["fit", str(tmp_path / "uneven.txt"), "-k", "1", "--out",
                 str(tmp_path / "u")]) == 2
    assert "give its separator with --sep space" in capsys.readouterr().err


def test_script_ends_quietly_on_a_closed_stdout(script_runs):
    root, runs = script_runs
    run = runs["tsv_piped"]
    assert run.stderr == ""  # no BrokenPipeError traceback
    assert run.returncode == 141  # as a shell reports a process ended by SIGPIPE
    assert (root / "o_tsv" / "assignments.csv").exists()  # written before the summary


def test_script_names_decimal_option_for_decimal_commas(script_runs, tmp_path, capsys):
    root, runs = script_runs
    err = _one_error_line(runs["decimal_commas"])
    assert "column(s) ['x', 'y']" in err and "decimal commas" in err and "--decimal ," in err
    assert not (root / "o_de").exists()
    blobs, truth = _two_blobs(3)
    for extra in ([], ["--sep", ";"]):
        out = tmp_path / f"o{len(extra)}"
        assert main(["fit", str(root / "blobs_de.csv"), "--decimal", ",", "--n-init", "1",
                     "--device", "cpu", "--out", str(out), *extra]) == 0
        params = json.loads((out / "params.json").read_text())
        assert params["features"] == ["x", "y"]
        _assert_means(params, truth)
        result = pd.read_csv(out / "assignments.csv", sep=";", decimal=",")
        pd.testing.assert_frame_equal(result[["x", "y"]], blobs)


def test_script_refuses_nul_bytes(script_runs):
    root, runs = script_runs
    err = _one_error_line(runs["nul"])
    assert "NUL bytes" in err and "re-save it as UTF-8 text" in err


def test_script_checks_the_output_folder_before_fitting(script_runs):
    root, runs = script_runs
    run = runs["blocked"]
    err = _one_error_line(run)
    assert repr(str(root / "blocked" / "params.json")) in err and "--out" in err
    assert run.stdout == ""  # nothing fitted, nothing printed
    assert sorted(p.name for p in (root / "blocked").iterdir()) == ["params.json"]


def test_out_problems_stop_before_fitting(tmp_path, capsys, monkeypatch):
    from bayesgmm.mixture import BayesianGMM

    def no_fit(self, X, y=None):
        raise AssertionError("fitted despite a bad --out")

    monkeypatch.setattr(BayesianGMM, "fit", no_fit)
    data = tmp_path / "d.csv"
    data.write_text("x,y\n1,2\n3,4\n5,6\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    blocked = tmp_path / "blocked"
    (blocked / "assignments.csv").mkdir(parents=True)
    for argv, message in [
        (["fit", str(data), "--out", str(a_file)], f"--out {str(a_file)!r} is a file"),
        (["demo", "--out", str(a_file)], f"--out {str(a_file)!r} is a file"),
        (["fit", str(data), "--out", str(blocked)],
         f"cannot write {str(blocked / 'assignments.csv')!r}: a folder of that name"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("bayesgmm: error: ") and message in err and err.count("\n") == 1
    assert a_file.read_text() == "mine"
    assert [p.name for p in blocked.iterdir()] == ["assignments.csv"]


def test_failed_write_reports_the_path_and_leaves_no_temporary(tmp_path, capsys, monkeypatch):
    import errno

    def disk_full(self, path, *args, **kwargs):
        open(path, "w").write("half a ro")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", disk_full)
    data = tmp_path / "d.csv"
    data.write_text("x\n1\n2\n8\n9\n")
    out = tmp_path / "out"
    assert main(["fit", str(data), "--n-init", "1", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (f"bayesgmm: error: cannot write {str(out / 'assignments.csv')!r}: "
                   f"{os.strerror(errno.ENOSPC)}; choose another --out\n")
    assert not out.exists()       # nothing written, and the folder the run made is gone


def test_script_refuses_a_column_named_twice(script_runs, tmp_path, capsys):
    root, runs = script_runs
    err = _one_error_line(runs["twice"])
    assert "--columns names ['x'] more than once" in err
    # A header naming a column twice is refused too: pandas read the second
    # as "a.1" and it was fitted as another feature without a word.
    data = tmp_path / "d.csv"
    data.write_text("a,a\n1,2\n1.1,2.1\n9,8\n9.1,8.1\n")
    assert main(["fit", str(data), "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 2
    assert "names column(s) ['a'] more than once" in capsys.readouterr().err


def test_script_refuses_a_number_column_with_stray_text(script_runs, tmp_path, capsys):
    """A column of numbers with one stray token reads as text; the default
    rule (every numeric column) left it out of the fit without a word.  Now
    the cell is named, by fit (through the script) and by predict."""
    root, runs = script_runs
    err = _one_error_line(runs["stray"])
    assert "column 'y' of" in err and "holds numbers but also '?' (data row 4)" in err, err
    assert "--missing marginalize or --dropna" in err and "--columns" in err
    assert not (root / "o_stray" / "params.json").exists()
    # predict has no --columns (the model fixes them): not suggested
    assert main(["fit", str(root / "named.csv"), "-k", "2", "--n-init", "1", "--device", "cpu",
                 "--save", str(tmp_path / "m.bgmm"), "--out", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.bgmm"), str(root / "stray.csv"),
                 "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "holds numbers but also '?' (data row 4)" in err and "--columns" not in err
    # a column of words with one number is text, still left out by default;
    # named with --columns, the message quotes a word, not the number
    data = tmp_path / "words.csv"
    pd.DataFrame({"x": [0.1, 0.4, 5.2, 5.5, 0.3, 5.1], "w": ["a", "b", "7", "c", "d", "e"]}
                 ).to_csv(data, index=False)
    assert main(["fit", str(data), "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "ow")]) == 0
    assert json.loads((tmp_path / "ow" / "params.json").read_text())["features"] == ["x"]
    capsys.readouterr()
    assert main(["fit", str(data), "--columns", "x", "w", "--device", "cpu",
                 "--out", str(tmp_path / "ow2")]) == 2
    assert "non-numeric column(s) ['w'] in" in capsys.readouterr().err


@pytest.mark.parametrize("cells, unit", [
    (["12.5%", "-0.13%", "3%", "4.25%", "7%", "1%"], "%"),
    (["1.234 kg", "2 kg", "0.5 kg", "8 kg", "7.75 kg", "6 kg"], "kg"),
    (["$10.12", "-$3", "$4", "$5.5", "$0.25", "$9"], "$"),
    (["10 \u20ac", "12,50 \u20ac", "3 \u20ac", "4 \u20ac", "5 \u20ac", "6 \u20ac"], "\u20ac"),
    (["20\u00b0C", "21.5\u00b0C", "19\u00b0C", "18\u00b0C", "22\u00b0C", "20\u00b0C"], "\u00b0C"),
    (["10 s", "12 s", "9 s", "1.5 s", "3 s", "4 s"], "s"),           # one letter: after a space
    (["32 GB", "64 GB", "8 GB", "16 GB", "4 GB", "2 GB"], "GB"),
    (["5 \u03bcg", "6 \u03bcg", "7 \u03bcg", "1 \u03bcg", "2 \u03bcg", "3 \u03bcg"], "\u03bcg"),
])
def test_numbers_written_with_a_unit_are_refused_not_left_out(tmp_path, capsys, cells, unit):
    """A column of numbers written with a unit or currency symbol reads as
    text: the default rule left it out of the fit, which went on without it
    and exited 0.  Refused, naming the unit, whether named or by default."""
    data = tmp_path / "units.csv"
    pd.DataFrame({"x": [0.1, 0.4, 5.2, 5.5, 0.3, 5.1], "y": cells}).to_csv(data, index=False)
    for extra, rest in (([], "or leave them out with --columns"), (["--columns", "x", "y"], None)):
        assert main(["fit", str(data), "-k", "2", "--n-init", "1", "--device", "cpu",
                     "--out", str(tmp_path / "o")] + extra) == 2
        err = capsys.readouterr().err
        assert "column(s) ['y'] of" in err and "written with a unit or symbol" in err, err
        assert f"remove {unit!r} from the values" in err
        assert (rest in err) if rest else "--columns" not in err
        assert not (tmp_path / "o" / "params.json").exists()
    # codes, identifiers, addresses, dates and notes written with numbers
    # and letters that are not units are text: still left out by default
    pd.DataFrame({"x": [0.1, 0.4, 5.2, 5.5, 0.3, 5.1],
                  "code": ["12a", "3b", "4c", "5d", "6e", "7f"],
                  "id": ["s1", "s2", "s3", "s4", "s5", "s6"],
                  "plate": ["100A", "101A", "102A", "103A", "104A", "105A"],
                  "street": [f"{i} High St" for i in range(6)],
                  "visit": ["5 Jan", "6 Jan", "7 Jan", "8 Jan", "9 Jan", "10 Jan"],
                  "season": ["2024 season"] * 6,
                  "network": ["4g", "5g", "3g", "4g", "5g", "4g"],       # one letter, no space
                  "event": ["100m", "200m", "400m", "100m", "800m", "200m"],
                  "longitude": ["74.0 W", "87.6 W", "118.2 W", "71.1 W", "80.2 W", "95.4 W"],
                  "notes": [None, "3 samples lost", None, None, None, None]}
                 ).to_csv(data, index=False)
    assert main(["fit", str(data), "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "params.json").read_text())["features"] == ["x"]


def test_script_names_columns_option_for_text_columns(script_runs):
    root, runs = script_runs
    err = _one_error_line(runs["text"])
    assert "non-numeric column(s) ['name']" in err and "with --columns" in err
    assert "df[[" not in err  # the library's wording stays in the library


def test_script_default_columns_sep_tab_and_save_path(script_runs):
    """Through the script: a numeric 'target' column is left out of the
    default columns and said; --sep tab reads a TSV; --save into a missing
    folder names the user's path before anything is fitted."""
    root, runs = script_runs
    _, truth = _two_blobs(3)
    run = runs["target"]
    assert run.returncode == 0, run.stderr
    assert "left out column(s) ['target']" in run.stderr and "--columns" in run.stderr
    params = json.loads((root / "o_target" / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    _assert_means(params, truth)
    assert runs["sep_tab"].returncode == 0, runs["sep_tab"].stderr
    tab = json.loads((root / "o_tab" / "params.json").read_text())
    assert tab["features"] == ["x", "y"]
    _assert_means(tab, truth)
    err = _one_error_line(runs["save_nowhere"])
    assert str(root / "no" / "m.bgmm") in err and "does not exist" in err
    assert not (root / "o_save" / "params.json").exists()


def test_script_posterior_fits(script_runs):
    """--inference vi with the Dirichlet-process prior (-k 5 on two blobs:
    2 clusters carry the data), a sparse Dirichlet (--concentration 0.05),
    and NUTS: the summary line says so, params.json holds the posterior's
    point estimates, 90% credible intervals and diagnostics, and the saved
    model predicts with the posterior predictive."""
    root, runs = script_runs
    _, truth = _two_blobs(3)
    for name, prior in (("vi_dp", "dirichlet_process"), ("sparse", "dirichlet")):
        run = runs[name]
        assert run.returncode == 0, run.stderr
        first = run.stdout.splitlines()[0]
        assert first.startswith("fitted K=5 (2 carrying the data)") and \
            "variational posterior, ELBO -" in first
        params = json.loads((root / f"o_{name.replace('vi_', '')}" / "params.json").read_text())
        assert params["inference"] == "vi" and params["weight_prior"] == prior
        assert params["n_effective_components"] == 2 and params["elbo"] < 0
        w = np.asarray(params["weights"])
        big = w > 0.1
        assert big.sum() == 2 and w[~big].sum() < 0.02
        means = np.asarray(params["means"])[big]
        np.testing.assert_allclose(means[np.argsort(means[:, 0])], truth, atol=0.3)
        lo, hi = (np.asarray(b) for b in params["credible_intervals_90"]["means"])
        assert lo.shape == hi.shape == (5, 2) and np.all(lo <= hi)
        lo_w, hi_w = (np.asarray(b) for b in params["credible_intervals_90"]["weights"])
        assert np.all((lo_w <= w) & (w <= hi_w))
        # The console table lists the 2 clusters carrying the data and names
        # the 3 others below it (they were mixed in among them).
        lines = run.stdout.splitlines()
        listed = {int(line.split()[0]) for line in lines[2:6]}
        assert listed == set(np.flatnonzero(big).tolist()) and lines[1].split()[0] == "cluster"
        assert lines[6] == (f"(3 cluster(s) with less than one row's share of the data not "
                            f"shown: {np.flatnonzero(~big).tolist()}; params.json lists every "
                            f"cluster)")
    # The saved DP model predicts new rows as the fit assigned them.
    fitted = pd.read_csv(root / "o_dp" / "assignments.csv")
    from bayesgmm import BayesianGMM
    model = BayesianGMM.load(root / "dp.bgmm")
    np.testing.assert_array_equal(model.predict(fitted[["x", "y"]]), fitted["cluster"])
    run = runs["nuts"]
    assert run.returncode == 0, run.stderr
    assert "; NUTS, largest R-hat " in run.stdout.splitlines()[0]
    params = json.loads((root / "o_nuts" / "params.json").read_text())
    assert params["inference"] == "nuts" and set(params["rhat"]) == {"weights", "means",
                                                                      "covariances"}
    assert params["n_divergent"] >= 0
    # Short chains: the convergence warning, in the command line's words.
    for line in run.stderr.splitlines():
        assert line.startswith("bayesgmm: warning: NUTS draws may not represent"), line
        assert "--n-warmup" in line and "n_warmup" not in line and "UserWarning" not in line
    err = _one_error_line(runs["dp_map"])
    assert "--weight-prior dirichlet_process is fitted by --inference vi" in err
    assert "set --inference vi" in err and "inference='" not in err


@pytest.mark.parametrize("args,message", [
    (["--concentration", "-1"], "argument --concentration: '-1' is not a concentration"),
    (["--concentration", "nan"], "'nan' is not a concentration: give a number > 0"),
    (["--n-chains", "0"], "argument --n-chains: '0' is not a number of chains"),
    (["--inference", "mcmc"], "argument --inference: invalid choice: 'mcmc'"),
    (["--threads", "0"], "argument --threads: '0' is not a number of threads"),
])
def test_bad_posterior_options_are_argument_errors(capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "d.csv", *args])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_posterior_option_errors_are_in_the_command_lines_words(tmp_path, capsys):
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    np.save(tmp_path / "b.npy", blobs.to_numpy())
    cases = [
        (["fit", tmp_path / "b.csv", "-k", "3", "--concentration", "0.1"],
         r"--concentration must be >= 1.*\(--inference vi or --inference nuts takes any "
         r"positive concentration"),
        (["fit", tmp_path / "b.csv", "-k", "auto", "--inference", "vi", "--weight-prior",
          "dirichlet_process"], "with -k as its truncation: give an integer -k"),
        (["fit", tmp_path / "b.npy", "--inference", "vi", "--distributed"],
         "--inference vi runs on all the rows in one process, but --distributed"),
    ]
    for argv, message in cases:
        assert main([str(a) for a in argv] + ["--out", str(tmp_path / "o"), "--device",
                                              "cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bayesgmm: error: ") and err.count("\n") == 1, err
        assert __import__("re").search(message, err), err
        assert "n_components" not in err and "Priors." not in err


def test_threads_option_is_the_estimators_n_threads(tmp_path, capsys):
    """--threads N reaches the estimator (kept in the saved model) and the
    caller's thread count is restored after the fit."""
    import torch
    from bayesgmm import BayesianGMM
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    before = torch.get_num_threads()
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "2", "--threads", "1", "--save",
                 str(tmp_path / "m.bgmm"), "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert torch.get_num_threads() == before
    assert BayesianGMM.load(tmp_path / "m.bgmm").get_params()["n_threads"] == 1


def test_far_too_many_threads_is_one_error_line_before_any_work(tmp_path, capsys):
    """--threads 100000 crashed the process inside OpenMP (a segmentation
    fault): refused in the option's words, exit 2, no output folder."""
    import torch
    before = torch.get_num_threads()
    cap = max(256, 4 * (os.cpu_count() or 1))
    assert main(["demo", "--threads", "100000", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bayesgmm: error: --threads must be in [1, {cap}], got 100000: "), err
    assert "n_threads" not in err and "None" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists() and torch.get_num_threads() == before


def test_threads_option_holds_for_the_whole_run(tmp_path, monkeypatch):
    """--threads N sets torch's threads for the whole run, predict's too
    (its assignments are computed outside any fit), and restores the
    caller's setting after it; without it the threads are left alone."""
    import torch
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "2", "--save", str(tmp_path / "m.bgmm"),
                 "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    calls = []
    real = torch.set_num_threads

    def recording(n):
        calls.append(n)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", recording)
    before = torch.get_num_threads()
    assert main(["predict", str(tmp_path / "m.bgmm"), str(tmp_path / "b.csv"), "--out",
                 str(tmp_path / "p")]) == 0
    assert calls == []
    assert main(["predict", str(tmp_path / "m.bgmm"), str(tmp_path / "b.csv"), "--threads", "3",
                 "--out", str(tmp_path / "p"), "--device", "cpu"]) == 0
    assert calls == [3, before] and torch.get_num_threads() == before


def test_predict_device_option(tmp_path, capsys):
    """predict --device: where the loaded model predicts; a bad one is the
    command line's one-line error."""
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "2", "--save", str(tmp_path / "m.bgmm"),
                 "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert main(["predict", str(tmp_path / "m.bgmm"), str(tmp_path / "b.csv"), "--device", "cpu",
                 "--out", str(tmp_path / "p")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "p" / "assignments.csv"),
                                  pd.read_csv(tmp_path / "o" / "assignments.csv"))
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "m.bgmm"), str(tmp_path / "b.csv"), "--device", "gpu",
                 "--out", str(tmp_path / "q")]) == 2
    assert capsys.readouterr().err == ("bayesgmm: error: --device must be 'auto', 'cpu', 'cuda' "
                                       "or 'cuda:N', got 'gpu'\n")
    assert not (tmp_path / "q").exists()


def test_options_given_where_they_do_not_apply_are_said_to_be_ignored(tmp_path, capsys):
    """--max-components without -k auto, --n-samples with the MAP, --n-chains
    and --n-warmup without NUTS: one warning line each, and the fit is the
    one without them."""
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    base = ["fit", str(tmp_path / "b.csv"), "-k", "2", "--device", "cpu"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert capsys.readouterr().err == ""
    assert main(base + ["--out", str(tmp_path / "b"), "--max-components", "5", "--n-samples",
                        "10", "--n-chains", "2", "--n-warmup", "5"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        "bayesgmm: warning: --max-components applies to -k auto only; ignored here",
        "bayesgmm: warning: --n-samples applies to --inference vi or nuts only; ignored here",
        "bayesgmm: warning: --n-chains applies to --inference nuts only; ignored here",
        "bayesgmm: warning: --n-warmup applies to --inference nuts only; ignored here"]
    assert (tmp_path / "a" / "params.json").read_text() == (tmp_path / "b" / "params.json").read_text()
    # Where they apply, they are taken without a word.
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "auto", "--max-components", "3",
                 "--device", "cpu", "--out", str(tmp_path / "c")]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "among K=1..3" in captured.out, captured.out
    assert main(base + ["--inference", "vi", "--n-samples", "10", "--out", str(tmp_path / "d"),
                        "--save", str(tmp_path / "d.bgmm")]) == 0
    assert "ignored" not in capsys.readouterr().err
    from bayesgmm import BayesianGMM
    assert BayesianGMM.load(tmp_path / "d.bgmm").posterior_samples()["weights"].shape == (10, 2)


def test_max_iter_option_and_its_warning_in_the_command_lines_words(tmp_path, capsys):
    """--max-iter caps the variational fit; stopped short, the fit's
    warning is one 'bayesgmm: warning:' line naming --max-iter."""
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "4", "--inference", "vi", "--max-iter",
                 "2", "--n-samples", "20", "--out", str(tmp_path / "o"), "--device",
                 "cpu"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("bayesgmm: warning: the variational fit was still improving after 2 "
                          "iterations") and err.rstrip().endswith("raise --max-iter"), err
    assert "max_iter" not in err and err.count("\n") == 1


def test_warnings_from_other_packages_during_a_fit_are_shown_once(tmp_path):
    """A warning raised during the fit by another package is shown once, as
    Python shows it, and the run ends: it used to be shown while the fit's
    warnings were still being recorded, which recorded it again, and the
    loop over them never ended (memory grew without bound: pyro 1.8.6 raises
    a DeprecationWarning as the fit first imports pyro.infer).  Deprecation
    notices are for developers and not shown.  pyro 1.8.6 is not installed
    here, so the fit is wrapped to raise such warnings; in a subprocess
    with a timeout, so that a loop fails the test instead of hanging it."""
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    code = f"""
import sys, warnings
import bayesgmm.cli as cli
from bayesgmm import BayesianGMM
fit = BayesianGMM.fit
def noisy(self, X, *a, **k):
    warnings.warn_explicit("a stage fell back", UserWarning, "torch/fake.py", 7)
    warnings.warn_explicit("old syntax", DeprecationWarning, "pyro/fake.py", 9)
    return fit(self, X, *a, **k)
BayesianGMM.fit = noisy
sys.exit(cli.main(["fit", {str(tmp_path / "b.csv")!r}, "-k", "2", "--n-init", "1",
                   "--device", "cpu", "--out", {str(tmp_path / "o")!r}]))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("UserWarning: a stage fell back") == 1, run.stderr
    assert "old syntax" not in run.stderr and "bayesgmm: warning" not in run.stderr
    assert (tmp_path / "o" / "params.json").exists()


def test_npy_posterior_fit_reads_the_array_into_memory(tmp_path, capsys):
    """An .npy with --inference vi: the posterior needs every row at every
    step, so the array is read whole; the fit equals the CSV's."""
    blobs, truth = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    np.save(tmp_path / "b.npy", blobs.to_numpy())
    common = ["-k", "2", "--n-init", "1", "--inference", "vi", "--n-samples", "50",
              "--device", "cpu"]
    assert main(["fit", str(tmp_path / "b.npy"), *common, "--out", str(tmp_path / "n")]) == 0
    assert main(["fit", str(tmp_path / "b.csv"), *common, "--out", str(tmp_path / "c")]) == 0
    npy = json.loads((tmp_path / "n" / "params.json").read_text())
    csv = json.loads((tmp_path / "c" / "params.json").read_text())
    assert npy["inference"] == "vi"
    np.testing.assert_allclose(npy["means"], csv["means"], rtol=1e-5)
    np.testing.assert_allclose(npy["elbo"], csv["elbo"], rtol=1e-6)


def test_script_progress_bar_ends_at_its_total(script_runs):
    """--progress: tqdm's bar on stderr, its total the iterations planned
    (EM's cap), closed at the iterations run: the last state reads 100%."""
    run = script_runs[1]["progress"]
    assert run.returncode == 0, run.stderr
    states = [s for s in run.stderr.replace("\r", "\n").splitlines() if "BayesianGMM" in s]
    assert states and "/500" in states[0]
    done, total = states[-1].split("|")[2].split()[0].split("/")
    assert "100%" in states[-1] and done == total and 0 < int(total) < 500, states[-1]
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr


def test_script_output_stays_narrow_with_many_columns(script_runs):
    """13 features: the summary line names the first and last column, the
    parameter table is long (one row per cluster and feature)."""
    root, runs = script_runs
    run = runs["wide"]
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("fitted K=2") and "13 column(s) ['feature_0' ... 'feature_12']" \
        in lines[0]
    assert max(map(len, lines[:-1])) <= 120, max(lines, key=len)   # the last line: paths
    assert sum("feature_" in line for line in lines[1:-1]) == 2 * 13


def test_script_errors_name_the_options_not_the_library(script_runs):
    root, runs = script_runs
    err = _one_error_line(runs["k_too_big"])
    assert "-k 300 but only 180 sample(s): use -k <= 180" in err and "n_components" not in err
    err = _one_error_line(runs["device"])
    assert err.startswith("bayesgmm: error: --device must be") and "'tpu'" in err
    # A wrong --sep: the one column read holds the real separator, named as the option.
    err = _one_error_line(runs["wrong_sep"])
    assert "has no numeric columns" in err and "its header holds '\\t'" in err
    assert "--sep tab" in err
    # A file of one column really has one column: no separator hint.
    err = _one_error_line(runs["one_column"])
    assert "column(s) ['y'] not in" in err and "available: ['x']" in err and "--sep" not in err


@pytest.mark.parametrize("option,value,message", [
    ("--n-init", "0", "'0' is not a number of restarts: give an integer >= 1"),
    ("--max-components", "0", "'0' is not a number of components: give an integer >= 1"),
    ("-k", "0", "'0' is not a number of components: give an integer K >= 1"),
    ("-k", "-2", "'-2' is not a number of components"),
    ("--seed", "-1", "'-1' is not a seed: give an integer from 0 to 2**32 - 1"),
    ("--seed", str(2 ** 32), "is not a seed"),
])
def test_out_of_range_counts_are_argument_errors(capsys, option, value, message):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "d.csv", option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "argument " in err and "Traceback" not in err


@pytest.mark.parametrize("setup,args,message", [
    ("x\n1,5\n2,5\n", ["--columns", "x"], "more fields than its header"),
    ("x,y\n1.5,2.5\n", ["--sep", ";", "--columns", "x"], "give its separator with --sep"),
    ("x;y;n\n1,5;2,5;a\n", ["--columns", "n"], "non-numeric column(s) ['n']"),
    ("x;y\n1,5;2,5\n", ["--columns", "x"], "decimal commas (x: '1,5'): add --decimal ,\n"),
    ("x,y\n1,2\n3,inf\n", [], "inf in column 'y', data row 2"),
    # comment lines before the header: named as such, not the separator
    # or the decimal mark (or a stray text value, or R's row names)
    ("# exported 2024-01-01\nx,y\n1,2\n3,4\n", [],
     "'{tmp}/d.csv' begins with a comment line before its header ('# exported 2024-01-01'), "
     "which would be read as the header: remove the line before the header"),
    ("#exported\n#by tool\nx,y\n1,2\n3,4\n", [],
     "begins with comment lines before its header ('#exported')"),
    ("# exported 2024-01-01, by tool\nx,y\n1,2\n3,4\n", [],
     "the first line of '{tmp}/d.csv' looks like a comment ('# exported 2024-01-01'), read as "
     "the header, and the next one like the header (its 'x' is not a number): remove the "
     "comment line"),
    (" # exported 2024\nx,y\n1,2\n3,4\n", [], "begins with a comment line"),
    ("# exported by tool, 2024-01-01\nx,y,z\n1,2,3\n3,4,5\n", [], "begins with a comment line"),
    ("#exported\nx,y\n1,2\n3,4\n", [], "begins with a comment line before its header"),
])
def test_more_bad_input_is_one_line(tmp_path, capsys, setup, args, message):
    (tmp_path / "d.csv").write_text(setup)
    assert main(["fit", str(tmp_path / "d.csv"), *args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    message = message.replace("{tmp}", str(tmp_path))
    assert err.startswith("bayesgmm: error: ") and message in err and err.count("\n") == 1
    assert "df[[" not in err and "df.dropna" not in err


def test_headers_that_begin_with_a_hash_are_headers(tmp_path, capsys):
    """A header written as '#id,x,y', or '# x,y' by numpy.savetxt(header=...),
    has the rows' fields: read as the header, not refused as a comment;
    a later bad row is the parser's error, not blamed on the header."""
    np.savetxt(tmp_path / "s.csv", np.arange(8.0).reshape(4, 2) ** 1.5, delimiter=",",
               header="x,y")
    assert (tmp_path / "s.csv").read_text().startswith("# x,y")
    assert main(["fit", str(tmp_path / "s.csv"), "-k", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "params.json").read_text())["features"] == ["# x", "y"]
    (tmp_path / "h.csv").write_text("#id,x,y\n1,2,3\n4,5,6,7\n1,2,3\n")
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "h.csv"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "Expected 3 fields in line 3, saw 4" in err and "comment" not in err


@pytest.mark.parametrize("option,value", [("--sep", ";;"), ("--decimal", "ab"),
                                          ("--decimal", "1")])
def test_bad_sep_or_decimal_is_an_argument_error(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "d.csv", option, value])
    assert exc.value.code == 2
    assert f"error: argument {option}: {value!r}" in capsys.readouterr().err


def test_script_fit_save_then_predict_with_missing_values(tmp_path):
    """fit --dropna --save MODEL, then predict MODEL on new rows, through the
    real console script: rows with a missing value are left unassigned, the
    saved model assigns new rows as the fitted one did, and the parameter
    table is long (one row per cluster and feature)."""
    blobs, truth = _two_blobs(5)
    data = blobs.copy()
    data.loc[[3, 50], "x"] = np.nan
    data.to_csv(tmp_path / "train.csv", index=False)
    model = tmp_path / "model.bgmm"
    fit = _run_script(["fit", tmp_path / "train.csv", "-k", "2", "--n-init", "1", "--device",
                       "cpu", "--dropna", "--save", model, "--out", tmp_path / "o"])
    assert fit.returncode == 0, fit.stderr
    assert "--dropna left out 2 of 180 rows" in fit.stderr
    lines = fit.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:5] == [
        "cluster", "weight", "feature", "mean", "scale"])
    assert len(lines[head + 1:head + 5]) == 4 and all(len(line) < 60 for line in lines[head:head + 5])
    _assert_means(json.loads((tmp_path / "o" / "params.json").read_text()), truth)
    fitted = pd.read_csv(tmp_path / "o" / "assignments.csv")
    assert fitted["cluster"].isna().tolist() == [i in (3, 50) for i in range(180)]

    new = blobs.iloc[::7].reset_index(drop=True)
    new.loc[0, "y"] = np.nan
    new.to_csv(tmp_path / "new.csv", sep=";", index=False)
    pred = _run_script(["predict", model, tmp_path / "new.csv", "--dropna",
                        "--out", tmp_path / "p"])
    assert pred.returncode == 0, pred.stderr
    got = pd.read_csv(tmp_path / "p" / "assignments.csv", sep=";")
    same = fitted.iloc[::7].reset_index(drop=True)
    assert pd.isna(got.loc[0, "cluster"])
    np.testing.assert_array_equal(got["cluster"][1:].astype(int), same["cluster"][1:].astype(int))
    np.testing.assert_allclose(got["p_cluster_0"][1:], same["p_cluster_0"][1:], atol=1e-12)


def test_predict_and_save_errors_are_one_line(tmp_path, capsys):
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    cases = [
        (["predict", tmp_path / "none.bgmm", tmp_path / "b.csv"], "model file not found"),
        (["fit", tmp_path / "b.csv", "--save", tmp_path / "no" / "m.bgmm"],
         "the folder .* does not exist"),
        (["fit", tmp_path / "b.csv", "--save", tmp_path], "is a folder"),
        # A name ending in a separator is a folder, existing or not: said
        # before the fit (the outputs of --out stay as they were).
        (["fit", tmp_path / "b.csv", "--save", str(tmp_path / "models") + os.sep],
         r"is a folder: give a file name, e\.g\. '.*models/model\.bgmm'"),
    ]
    (tmp_path / "junk.bgmm").write_bytes(b"not a model")
    cases.append((["predict", tmp_path / "junk.bgmm", tmp_path / "b.csv"], "not a zip archive"))
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "params.json").write_text("earlier")
    for argv, message in cases:
        assert main([str(a) for a in argv] + ["--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("bayesgmm: error: ") and err.count("\n") == 1, err
        assert __import__("re").search(message, err), err
    assert (tmp_path / "o" / "params.json").read_text() == "earlier"
    assert not (tmp_path / "models").exists()


def test_predict_names_a_model_it_cannot_read(tmp_path, capsys):
    """(From an independent persistence audit.)  A symlink loop was reported
    as "model file not found" (and an unreadable model blamed the output):
    the reason is said, naming the model."""
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    os.symlink(tmp_path / "loop.bgmm", tmp_path / "loop.bgmm")
    assert main(["predict", str(tmp_path / "loop.bgmm"), str(tmp_path / "b.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesgmm: error: cannot read the model '") and \
        "loop.bgmm': Too many levels of symbolic links" in err and err.count("\n") == 1, err


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="needs RLIMIT_FSIZE")
def test_fit_save_writes_the_model_before_the_outputs(tmp_path):
    """(From an independent persistence audit.)  fit --save wrote
    assignments.csv and params.json first: a failed output write lost the
    fit (the model never saved), and a failed save left --out holding the
    new fit's outputs beside the old model.  Under a file-size limit that
    the model fits and assignments.csv does not, the model is now saved and
    the error says so, with the command that writes the assignments."""
    import resource
    rng = np.random.default_rng(0)
    pd.DataFrame(rng.normal(size=(20000, 2)).round(3), columns=["x", "y"]).to_csv(
        tmp_path / "big.csv", index=False)
    limit = 200_000

    def capped():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [_console_script(), "fit", str(tmp_path / "big.csv"), "-k", "2", "--n-init", "1",
           "--device", "cpu", "--save", str(tmp_path / "m.bgmm"), "--out", str(tmp_path / "o")]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, preexec_fn=capped,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 2, run.stderr
    assert "File too large" in run.stderr and "the model was saved to" in run.stderr and \
        "bayesgmm predict" in run.stderr, run.stderr
    from bayesgmm import BayesianGMM
    model = BayesianGMM.load(tmp_path / "m.bgmm")
    assert model.n_components_ == 2 and (tmp_path / "m.bgmm").stat().st_size < limit
    # The command it names writes them (no limit now).
    assert main(["predict", str(tmp_path / "m.bgmm"), str(tmp_path / "big.csv"),
                 "--out", str(tmp_path / "p")]) == 0
    assert len(pd.read_csv(tmp_path / "p" / "assignments.csv")) == 20000


def test_default_columns_leave_out_label_columns(tmp_path, capsys):
    blobs, truth = _two_blobs(2)
    blobs.assign(target=[0] * 120 + [1] * 60).to_csv(tmp_path / "t.csv", index=False)
    assert main(["fit", str(tmp_path / "t.csv"), "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert "left out column(s) ['target']" in captured.err and "--columns" in captured.err
    params = json.loads((tmp_path / "o" / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    _assert_means(params, truth)
    # Named explicitly, it is used.
    assert main(["fit", str(tmp_path / "t.csv"), "--columns", "x", "target", "--n-init", "1",
                 "--device", "cpu", "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "params.json").read_text())["features"] == ["x", "target"]


# --- Sample weights (--weights) and missing values (--missing), through the script -------

_FIT_FAST = ["fit", "-k", "2", "--n-init", "1", "--device", "cpu", "--seed", "7"]


def _weighted_blobs() -> pd.DataFrame:
    """The two blobs with an integer weight per row, 0 to 3 (some rows 0)."""
    blobs, _ = _two_blobs(11)
    w = np.random.default_rng(11).integers(0, 4, len(blobs))
    assert (w == 0).sum() > 10
    return blobs.assign(w=w)


def _with_missing(seed: int) -> pd.DataFrame:
    """The blobs with 20 cells emptied, never both of a row."""
    blobs, _ = _two_blobs(seed)
    rng = np.random.default_rng(seed)
    data = blobs.copy()
    rows = rng.choice(len(data), 20, replace=False)
    data.loc[rows[:10], "x"] = np.nan
    data.loc[rows[10:], "y"] = np.nan
    return data


@pytest.fixture(scope="module")
def weight_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    data = _weighted_blobs()
    data.to_csv(root / "weighted.csv", index=False)
    # the same fit written out: each row repeated as often as its weight says
    data.loc[data.index.repeat(data["w"]), ["x", "y"]].to_csv(root / "repeated.csv",
                                                               index=False)
    bad = data.assign(w=data["w"].astype(float))
    for name, value in [("negative", -1.5), ("empty", np.nan), ("inf", np.inf)]:
        bad.assign(w=bad["w"].where(bad.index != 4, value)).to_csv(root / f"{name}.csv",
                                                                    index=False)
    bad.assign(w=0).to_csv(root / "zero.csv", index=False)
    # numbers with one word: the message quotes the word and its row
    bad.assign(w=bad["w"].astype(object).where(bad.index != 4, "often")).to_csv(
        root / "text.csv", index=False)
    # an integer past float64's range among integers: pandas reads Python ints
    data.assign(w=data["w"].astype(object).where(data.index != 4, 10 ** 400)).to_csv(
        root / "huge.csv", index=False)
    _with_missing(12).to_csv(root / "missing.csv", index=False)
    empty_row = _with_missing(12)
    empty_row.loc[[6, 9], ["x", "y"]] = np.nan
    empty_row.to_csv(root / "empty_row.csv", index=False)

    cases = {  # name: (input file, options); each run writes into o_<name>
        "weighted": ("weighted", "--weights", "w"),
        "repeated": ("repeated",),
        "marginalize": ("missing", "--missing", "marginalize", "--save", root / "m.bgmm"),
        "impute": ("missing", "--missing", "marginalize", "--impute", "--save", root / "mi.bgmm"),
        "nan_refused": ("missing",),
        "empty_row": ("empty_row", "--missing", "marginalize"),
        "w_absent": ("weighted", "--weights", "weight"),
        "w_in_columns": ("weighted", "--weights", "w", "--columns", "x", "w"),
        **{f"w_{name}": (name, "--weights", "w")
           for name in ("negative", "empty", "inf", "zero", "text", "huge")},
    }
    return root, _run_side_by_side({
        name: ([*_FIT_FAST, root / f"{file}.csv", *extra, "--out", root / f"o_{name}"], False)
        for name, (file, *extra) in cases.items()})


def test_script_weights_give_the_fit_of_the_rows_repeated(weight_runs):
    root, runs = weight_runs
    for name in ("weighted", "repeated"):
        assert runs[name].returncode == 0, runs[name].stderr
    data = _weighted_blobs()
    assert f"on {len(data)} rows x 2 column(s) ['x', 'y'] (total weight {data['w'].sum()})" \
        in runs["weighted"].stdout

    def components(name):
        # sorted by x to undo label switching
        params = json.loads((root / f"o_{name}" / "params.json").read_text())
        order = np.argsort(np.asarray(params["means"])[:, 0])
        return params, np.asarray(params["means"])[order], np.asarray(params["weights"])[order]

    weighted, means, weights = components("weighted")
    repeated, means_r, weights_r = components("repeated")
    # The weights column is no feature: left out of the default columns.
    assert weighted["features"] == repeated["features"] == ["x", "y"]
    # Integer weights are the rows repeated: the same fit, to float32 rounding.
    np.testing.assert_allclose(means, means_r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(weights, weights_r, rtol=1e-4)
    np.testing.assert_allclose(weighted["loss"], repeated["loss"], rtol=1e-4)
    _assert_means(weighted, _two_blobs(11)[1])
    # Every row is assigned, those of weight 0 too, and the weights column stays.
    result = pd.read_csv(root / "o_weighted" / "assignments.csv")
    assert list(result.columns) == ["x", "y", "w", "cluster", "p_cluster_0", "p_cluster_1"]
    assert result["cluster"].notna().all() and (result["w"] == 0).any()
    first = result["cluster"].to_numpy()[:120]   # the first blob is one cluster
    assert (first == first[0]).all() and (result["cluster"][120:] != first[0]).all()


def test_script_integers_past_float64_in_columns_are_one_line(tmp_path):
    """A column of integers with one past float64's range (pandas reads
    Python ints): one error line naming the column and the data row, not
    numpy's OverflowError; an identifier column holding one is left out
    by the default columns, as any row index is (from a review)."""
    x = np.linspace(0.0, 3.0, 30)
    count = (np.arange(30) * 3).astype(object)
    count[7] = 10 ** 400
    pd.DataFrame({"x": x, "count": count}).to_csv(tmp_path / "c.csv", index=False)
    ids = np.arange(30).astype(object)
    ids[7] = 10 ** 400
    pd.DataFrame({"id": ids, "x": x, "y": np.sin(x)}).to_csv(tmp_path / "d.csv", index=False)
    runs = _run_side_by_side({
        "count": ([*_FIT_FAST, tmp_path / "c.csv", "--out", tmp_path / "oc"], False),
        "id": ([*_FIT_FAST, tmp_path / "d.csv", "--out", tmp_path / "od"], False)})
    err = _one_error_line(runs["count"])
    if int(pd.__version__.split(".")[0]) < 2:
        # pandas 1.5 reads the number, and so its column, as text: refused
        # in one line naming the column, the identifier column too.
        assert f"column(s) ['count'] of '{tmp_path}/c.csv' hold n" in err
        assert f"column(s) ['id'] of '{tmp_path}/d.csv' hold n" in _one_error_line(runs["id"])
        return
    assert (f"column 'count' of '{tmp_path}/c.csv' holds an integer of 401 digits in data "
            f"row 8, beyond float64's range: ") in err
    assert runs["id"].returncode == 0, runs["id"].stderr
    assert json.loads((tmp_path / "od" / "params.json").read_text())["features"] == ["x", "y"]


@pytest.mark.parametrize("run,message", [
    ("w_negative", "--weights column 'w' of '{root}/negative.csv' holds -1.5 in data row 5: "),
    ("w_inf", "--weights column 'w' of '{root}/inf.csv' holds inf in data row 5: "),
    ("w_empty", ("--weights column 'w' of '{root}/empty.csv' is empty in 1 row(s) "
                 "(data row(s) [5]): give every row a weight, or pass --dropna")),
    ("w_zero", "--weights column 'w' of '{root}/zero.csv' is 0 in every row: "),
    ("w_text", "--weights column 'w' of '{root}/text.csv' is not numeric ('often', data row 5)"),
    # pandas >= 2 reads Python ints; pandas 1.5 reads the number as text
    ("w_huge", ("--weights column 'w' of '{root}/huge.csv' holds an integer of 401 digits in "
                "data row 5, beyond float64's range: "
                if int(pd.__version__.split(".")[0]) >= 2 else
                "--weights column 'w' of '{root}/huge.csv' is not numeric ('1000000")),
    ("w_absent", ("--weights column 'weight' not in '{root}/weighted.csv'; available: "
                  "['x', 'y', 'w']")),
    ("w_in_columns", "--weights column 'w' is also named in --columns"),
])
def test_script_bad_weights_are_one_line(weight_runs, run, message):
    root, runs = weight_runs
    err = _one_error_line(runs[run])
    assert message.format(root=root) in err
    assert "sample_weight" not in err   # the library's wording stays in the library
    assert not (root / f"o_{run}").exists()  # refused before the fit and --out


def test_script_marginalizes_missing_values(weight_runs):
    root, runs = weight_runs
    run = runs["marginalize"]
    assert run.returncode == 0, run.stderr
    assert "(20 rows with missing values marginalised)" in run.stdout
    data = _with_missing(12)
    _assert_means(json.loads((root / "o_marginalize" / "params.json").read_text()),
                  _two_blobs(12)[1])
    result = pd.read_csv(root / "o_marginalize" / "assignments.csv")
    pd.testing.assert_frame_equal(result[["x", "y"]], data)
    assert result["cluster"].notna().all()   # a cluster for every row, NaN ones too
    # the blobs are 6 sd apart in x and in y: one observed feature tells them apart
    blob = np.r_[np.zeros(120), np.ones(60)].astype(int)
    cluster = result["cluster"].to_numpy()
    np.testing.assert_array_equal(cluster == cluster[0], blob == 0)
    np.testing.assert_allclose(result[["p_cluster_0", "p_cluster_1"]].sum(axis=1), 1.0,
                               atol=1e-9)


def test_script_impute_fills_the_empty_cells_with_the_models_conditional_means(
        weight_runs, tmp_path, capsys):
    """fit --impute writes assignments.csv with each empty cell of the
    chosen columns filled by the saved model's impute() (the same numbers,
    in text that reads back exactly with a round-trip parser); observed cells, the other columns and
    a row with every chosen column empty stay as they were; predict --impute
    does the same with a model, in the file's decimal mark."""
    from bayesgmm import load

    root, runs = weight_runs
    run = runs["impute"]
    assert run.returncode == 0, run.stderr
    assert "--impute filled 20 empty cell(s) in 20 row(s) of assignments.csv" in run.stderr
    data = _with_missing(12)
    model = load(root / "mi.bgmm")
    got = pd.read_csv(root / "o_impute" / "assignments.csv")
    assert not got[["x", "y"]].isna().any().any()
    # Equal up to the CSV parser's last bit (older pandas' default parser is
    # not round-trip exact).
    np.testing.assert_allclose(got[["x", "y"]].to_numpy(), model.impute(data).to_numpy(),
                               rtol=1e-13, atol=0)
    plain = pd.read_csv(root / "o_marginalize" / "assignments.csv")
    pd.testing.assert_frame_equal(got.drop(columns=["x", "y"]), plain.drop(columns=["x", "y"]))

    new = _with_missing(13).iloc[::6].reset_index(drop=True)
    new.loc[[2], ["x", "y"]] = np.nan
    new.assign(name=[f"r{i}" for i in range(len(new))]).to_csv(
        tmp_path / "new.csv", index=False, sep=";", decimal=",")
    assert main(["predict", str(root / "mi.bgmm"), str(tmp_path / "new.csv"), "--decimal", ",",
                 "--dropna", "--impute", "--out", str(tmp_path / "p")]) == 0
    err = capsys.readouterr().err
    n_cells = int(new[["x", "y"]].isna().sum().sum()) - 2
    assert f"--impute filled {n_cells} empty cell(s)" in err
    back = pd.read_csv(tmp_path / "p" / "assignments.csv", sep=";", decimal=",")
    expected = model.impute(new.drop(index=2))
    np.testing.assert_allclose(back[["x", "y"]].drop(index=2).to_numpy(), expected.to_numpy(),
                               rtol=1e-13, atol=0)
    assert back.loc[2, ["x", "y", "cluster"]].isna().all()
    assert back["name"].tolist() == [f"r{i}" for i in range(len(new))]
    np.save(tmp_path / "a.npy", new.drop(index=2)[["x", "y"]].to_numpy())
    assert main(["predict", str(root / "mi.bgmm"), str(tmp_path / "a.npy"), "--impute",
                 "--out", str(tmp_path / "q")]) == 2
    assert "--impute does not apply to" in capsys.readouterr().err


def test_script_nan_without_marginalize_names_both_remedies(weight_runs):
    _, runs = weight_runs
    err = _one_error_line(runs["nan_refused"])
    data = _with_missing(12)
    row = int(np.flatnonzero(data["x"].isna())[0])
    assert f"contains NaN in column 'x', data row {row + 1}: " in err
    assert "--missing marginalize" in err and "--dropna" in err
    assert "missing='marginalize'" not in err and "df.dropna" not in err


def test_script_rows_with_every_feature_missing_are_named(weight_runs):
    _, runs = weight_runs
    err = _one_error_line(runs["empty_row"])
    assert ("has 2 row(s) with every chosen column empty (data row(s) [7, 10])" in err
            and "--dropna" in err)
    assert "df.dropna" not in err


def test_script_predict_with_a_marginalizing_model(weight_runs, tmp_path, capsys):
    """A model saved by fit --missing marginalize assigns rows with NaN
    (through the script); a row with every feature missing is named, or
    left unassigned with --dropna; --missing error restores the refusal,
    --missing marginalize lifts it for a model fitted without it (in-process:
    no fit, the script's start would be all the cost)."""
    root, runs = weight_runs
    assert runs["marginalize"].returncode == 0, runs["marginalize"].stderr
    model = root / "m.bgmm"
    new = _with_missing(13).iloc[::6].reset_index(drop=True)
    assert new[["x", "y"]].isna().any(axis=1).sum() >= 2
    new.to_csv(tmp_path / "new.csv", index=False)
    run = _run_script(["predict", model, tmp_path / "new.csv", "--out", tmp_path / "p"])
    assert run.returncode == 0, run.stderr
    got = pd.read_csv(tmp_path / "p" / "assignments.csv")
    assert got["cluster"].notna().all() and len(got) == len(new)
    # the model's blobs are those of _two_blobs: rows 0-119 and 120-179
    blob = np.arange(0, 180, 6) >= 120
    np.testing.assert_array_equal(got["cluster"] == got["cluster"][0], ~blob)

    new.loc[[2], ["x", "y"]] = np.nan
    new.to_csv(tmp_path / "empty_row.csv", index=False)
    predict = ["predict", str(model), str(tmp_path / "empty_row.csv")]
    assert main([*predict, "--dropna", "--out", str(tmp_path / "d")]) == 0
    assert "--dropna left out 1 of 30 rows with every chosen column empty" in \
        capsys.readouterr().err
    dropped = pd.read_csv(tmp_path / "d" / "assignments.csv")
    assert dropped["cluster"].isna().tolist() == [i == 2 for i in range(len(new))]
    assert main([*predict, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "every chosen column empty (data row(s) [3])" in err and err.count("\n") == 1
    predict[2] = str(tmp_path / "new.csv")
    assert main([*predict, "--missing", "error", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "contains NaN" in err and "--missing marginalize" in err and "--dropna" in err
    # a model fitted without --missing marginalize marginalises when told to
    plain = tmp_path / "plain.bgmm"
    assert main(["fit", str(tmp_path / "new.csv"), "--dropna", "--n-init", "1", "--device",
                 "cpu", "--save", str(plain), "--out", str(tmp_path / "f")]) == 0
    predict[1] = str(plain)
    assert main([*predict, "--out", str(tmp_path / "r")]) == 2
    assert "contains NaN" in capsys.readouterr().err
    assert main([*predict, "--missing", "marginalize", "--out", str(tmp_path / "m")]) == 0
    assert pd.read_csv(tmp_path / "m" / "assignments.csv")["cluster"].notna().all()


def test_dropna_leaves_out_empty_weights_and_keeps_marginalized_rows(tmp_path, capsys):
    data = _weighted_blobs().astype({"w": float})
    data.loc[4, "w"] = np.nan
    data.loc[[5, 150], "x"] = np.nan
    data.loc[7, "y"] = np.nan
    data.loc[8, ["x", "y"]] = np.nan
    data.to_csv(tmp_path / "d.csv", index=False)
    assert main(["fit", str(tmp_path / "d.csv"), "--weights", "w", "--missing", "marginalize",
                 "--dropna", "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert ("--dropna left out 2 of 180 rows with every chosen column empty or an empty "
            "--weights value") in captured.err
    assert "on 178 rows x 2 column(s) ['x', 'y'] (total weight" in captured.out
    result = pd.read_csv(tmp_path / "o" / "assignments.csv")
    assert result["cluster"].isna().tolist() == [i in (4, 8) for i in range(180)]
    # A column with no value in the rows fitted is named (the library knows its index only).
    # (Two values: a column of one value is left out as constant.)
    data.assign(z=np.where(data["w"] == 0, 1.0 + 0.5 * (np.arange(len(data)) % 2), np.nan)).to_csv(
        tmp_path / "z.csv", index=False)
    assert main(["fit", str(tmp_path / "z.csv"), "--weights", "w", "--missing", "marginalize",
                 "--dropna", "--out", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.splitlines()[-1]   # after the --dropna note
    assert last.startswith("bayesgmm: error: column(s) ['z'] of ")
    assert last.endswith("have no value in the rows fitted: leave them out with --columns")


# --- .npy input: out of core, and over several processes (torchrun) ----------------------

_FIT_NPY = ["fit", "-k", "2", "--n-init", "2", "--device", "cpu", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_torchrun(launch, argv) -> subprocess.CompletedProcess:
    """``argv`` under torchrun with two processes (gloo on the CPU, a free
    port); ``launch``: what torchrun runs, the console script's path or
    ``-m bayesgmm.cli``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *launch,
           *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Output into files, not pipes: workers that outlive torchrun cannot
    # keep the reads here waiting.  On a timeout (processes waiting on each
    # other) SIGTERM makes torchrun end its workers before it exits.
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, text=True, env=env)
        timed_out = False
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        out_file.seek(0)
        err_file.seek(0)
        out, err = out_file.read(), err_file.read()
    if timed_out:
        err += "\n[torchrun timed out after 120 s]"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def npy_runs(tmp_path_factory):
    """One-process fits of the same blobs as CSV and as .npy, fits of a .npy
    with NaN, and the .npy fit under torchrun (two processes, launched both
    ways the README shows), all started side by side."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("npy")
    blobs, _ = _two_blobs(4)
    blobs.to_csv(root / "blobs.csv", index=False)
    np.save(root / "blobs.npy", blobs.to_numpy())
    np.save(root / "missing.npy", _with_missing(12).to_numpy())
    one_nan = blobs.to_numpy().copy()   # pandas 3 hands out read-only arrays
    one_nan[150, 0] = np.nan   # in the second process's rows only
    np.save(root / "one_nan.npy", one_nan)
    blobs_npy, missing_npy = root / "blobs.npy", root / "missing.npy"
    scripts = {
        "csv": [*_FIT_NPY, root / "blobs.csv", "--out", root / "o_csv"],
        "npy": [*_FIT_NPY, blobs_npy, "--save", root / "m.bgmm", "--out", root / "o_npy"],
        "marginalize": [*_FIT_NPY, missing_npy, "--missing", "marginalize",
                        "--out", root / "o_marginalize"],
        "nan_refused": [*_FIT_NPY, missing_npy, "--out", root / "o_nan"],
        "sep_refused": [*_FIT_NPY, blobs_npy, "--sep", ";", "--out", root / "o_sep"],
        "no_torchrun": [*_FIT_NPY, blobs_npy, "--distributed", "--out", root / "o_alone"],
    }
    torchruns = {
        "dist": ([_console_script()], [*_FIT_NPY, blobs_npy, "--distributed",
                                       "--save", root / "d.bgmm", "--out", root / "o_dist"]),
        "dist_marginalize": (["-m", "bayesgmm.cli"], [
            *_FIT_NPY, missing_npy, "--missing", "marginalize", "--distributed",
            "--out", root / "o_dist_marginalize"]),
        "dist_nan": ([_console_script()], [*_FIT_NPY, root / "one_nan.npy", "--distributed",
                                           "--out", root / "o_dist_nan"]),
    }
    with ThreadPoolExecutor(max_workers=len(scripts) + len(torchruns)) as pool:
        futures = {name: pool.submit(_run_script, argv) for name, argv in scripts.items()}
        futures.update({name: pool.submit(_run_torchrun, launch, argv)
                        for name, (launch, argv) in torchruns.items()})
        return root, {name: f.result() for name, f in futures.items()}


def _params(root, name: str) -> dict:
    return json.loads((root / f"o_{name}" / "params.json").read_text())


def _sorted_means(params: dict) -> np.ndarray:
    # sorted by x to undo label switching
    means = np.asarray(params["means"])
    return means[np.argsort(means[:, 0])]


def test_npy_fit_equals_the_csv_fit(npy_runs):
    root, runs = npy_runs
    for name in ("csv", "npy"):
        assert runs[name].returncode == 0, runs[name].stderr
    csv, npy = _params(root, "csv"), _params(root, "npy")
    assert npy["features"] == ["x0", "x1"] and csv["features"] == ["x", "y"]
    # The same fit, read in row chunks instead of loaded: same seed, same
    # labelling; float32 arithmetic in both, summed in another order.
    for key in ("weights", "means", "covariances", "scales"):
        np.testing.assert_allclose(npy[key], csv[key], rtol=1e-5, atol=1e-7)
    assert npy["loss"] == pytest.approx(csv["loss"], rel=1e-6)
    _assert_means(npy, _two_blobs(4)[1])
    labels = np.load(root / "o_npy" / "assignments.npy")   # a plain .npy file
    assert labels.dtype == np.int64 and labels.shape == (180,)
    np.testing.assert_array_equal(labels,
                                  pd.read_csv(root / "o_csv" / "assignments.csv")["cluster"])
    assert sorted(p.name for p in (root / "o_npy").iterdir()) == ["assignments.npy",
                                                                   "params.json"]
    out = runs["npy"].stdout
    assert "on 180 rows x 2 column(s) (x0..x1) of " in out and "read in row chunks" in out
    assert "rows per cluster: " in out and len(out.splitlines()) < 12   # no table of rows


def test_npy_model_predicts_npy_input(npy_runs, tmp_path, capsys):
    """fit FILE.npy --save MODEL, then predict MODEL on a .npy (in-process:
    no fit, the script's start would be all the cost): the fit's labels; a
    model fitted on CSV columns takes a .npy of them too."""
    root, runs = npy_runs
    assert runs["npy"].returncode == 0, runs["npy"].stderr
    fitted = np.load(root / "o_npy" / "assignments.npy")
    x = np.load(root / "blobs.npy")
    np.save(tmp_path / "new.npy", x[::7])
    assert main(["predict", str(root / "m.bgmm"), str(tmp_path / "new.npy"),
                 "--out", str(tmp_path / "p")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "p" / "assignments.npy"), fitted[::7])
    assert "wrote " in capsys.readouterr().out
    # the model has no column names: a CSV is refused, naming the remedy
    pd.DataFrame(x, columns=["x0", "x1"]).to_csv(tmp_path / "new.csv", index=False)
    assert main(["predict", str(root / "m.bgmm"), str(tmp_path / "new.csv"),
                 "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "fitted without column names" in err and ".npy" in err and err.count("\n") == 1
    np.save(tmp_path / "three.npy", np.c_[x, x[:, :1]])
    assert main(["predict", str(root / "m.bgmm"), str(tmp_path / "three.npy"),
                 "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "has 3 column(s) but the model" in err and "fitted on 2 feature(s)" in err
    # A model fitted on CSV columns takes a .npy of them, in order, without
    # the library's warning about arrays without column names.
    assert main(["fit", str(tmp_path / "new.csv"), "-k", "2", "--save", str(tmp_path / "c.bgmm"),
                 "--out", str(tmp_path / "c"), "--device", "cpu"]) == 0
    capsys.readouterr()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert main(["predict", str(tmp_path / "c.bgmm"), str(tmp_path / "new.npy"),
                     "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().err == ""
    labels = pd.read_csv(tmp_path / "c" / "assignments.csv")["cluster"].to_numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "r" / "assignments.npy"), labels[::7])


def test_npy_missing_values(npy_runs):
    """--missing marginalize passes through for .npy input; without it a
    NaN is refused in the command line's words."""
    root, runs = npy_runs
    assert runs["marginalize"].returncode == 0, runs["marginalize"].stderr
    _assert_means(_params(root, "marginalize"), _two_blobs(12)[1])
    labels = np.load(root / "o_marginalize" / "assignments.npy")
    blob = np.r_[np.zeros(120), np.ones(60)].astype(bool)   # rows with NaN included
    np.testing.assert_array_equal(labels == labels[0], ~blob)
    err = _one_error_line(runs["nan_refused"])
    assert "contains NaN at x[" in err and "--missing marginalize" in err
    # Said of the file, which is the X here (not "X contains ...").
    assert ".npy' contains NaN at x[" in err, err
    assert "missing='marginalize'" not in err and "df.dropna" not in err
    assert not (root / "o_nan" / "params.json").exists()


@pytest.mark.parametrize("command,option", [
    ("fit", ["--sep", ";"]), ("fit", ["--decimal", ","]), ("fit", ["--columns", "x0"]),
    ("fit", ["--weights", "w"]), ("fit", ["--dropna"]),
    ("predict", ["--sep", "tab"]), ("predict", ["--decimal", ","]), ("predict", ["--dropna"]),
])
def test_npy_refuses_csv_options(npy_runs, tmp_path, capsys, command, option):
    root, runs = npy_runs
    if command == "fit" and option[0] == "--sep":   # through the script: exit code 2
        err = _one_error_line(runs["sep_refused"])
        assert f"--sep does not apply to {str(root / 'blobs.npy')!r}: " in err
        assert not (root / "o_sep").exists()   # refused before the fit and --out
    model = [str(root / "m.bgmm")] if command == "predict" else []
    argv = [command, *model, str(root / "blobs.npy"), *option, "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bayesgmm: error: {option[0]} does not apply to ")
    assert err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("make,message", [
    (lambda p: np.save(p, np.arange(5.0)), "holds an array of shape (5,): a 2-D array"),
    (lambda p: np.save(p, np.ones((3, 2), complex)),
     "holds complex values (dtype complex128): save their real part or magnitude"),
    (lambda p: np.save(p, np.array([["a", "b"]])), "dtype <U1, not numbers"),
    (lambda p: np.save(p, np.zeros((0, 2))), "at least one row and one column"),
    (lambda p: p.write_text("x,y\n1,2\n"), "is not a .npy file"),
    (lambda p: np.save(p, np.array([[1, "a"]], dtype=object), allow_pickle=True),
     "holds Python objects (dtype object), not numbers: save the features as floats"),
    # a record array: its fields are the columns (a reshape would not help)
    (lambda p: np.save(p, np.rec.fromarrays([np.ones(3), np.zeros(3)], names="a,b")),
     "holds a structured array (fields ['a', 'b']), not a 2-D array of numbers: save "
     "numpy.lib.recfunctions.structured_to_unstructured(x)"),
    (lambda p: np.save(p, np.full((4, 2), np.inf)), "inf"),
])
def test_bad_npy_is_one_line(tmp_path, capsys, make, message):
    make(tmp_path / "d.npy")
    assert main(["fit", str(tmp_path / "d.npy"), "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayesgmm: error: ") and message in err and err.count("\n") == 1


def test_bad_values_of_a_npy_to_predict_are_said_of_the_file(npy_runs, tmp_path, capsys,
                                                               monkeypatch):
    root, _ = npy_runs
    X = np.load(root / "blobs.npy")
    X[9, 1] = np.inf
    np.save(tmp_path / "inf.npy", X)
    assert main(["predict", str(root / "m.bgmm"), str(tmp_path / "inf.npy"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"bayesgmm: error: {str(tmp_path / 'inf.npy')!r} contains inf at "
                          f"x[9, 1]"), err
    # The row counts from the file's start, past the first block read.
    import bayesgmm.cli as cli
    monkeypatch.setattr(cli, "_LABEL_BLOCK_ROWS", 4)
    assert main(["predict", str(root / "m.bgmm"), str(tmp_path / "inf.npy"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "contains inf at x[9, 1]" in capsys.readouterr().err
    assert err.count("\n") == 1


def test_distributed_needs_torchrun_and_npy(npy_runs, tmp_path, capsys):
    root, runs = npy_runs
    err = _one_error_line(runs["no_torchrun"])
    assert "--distributed runs under torchrun" in err and "--nproc-per-node" in err
    assert not (root / "o_alone").exists()
    assert main(["fit", str(root / "blobs.csv"), "--distributed",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--distributed needs .npy input" in err and err.count("\n") == 1


@pytest.mark.parametrize("run,one", [("dist", "npy"), ("dist_marginalize", "marginalize")])
def test_distributed_fit_equals_the_one_process_fit(npy_runs, run, one):
    """Two processes under torchrun, each reading half of the rows, end with
    the one-process fit of the whole array; the first alone writes the
    outputs and prints, and every row gets its cluster."""
    root, runs = npy_runs
    assert runs[run].returncode == 0, runs[run].stderr[-3000:]
    assert runs[one].returncode == 0, runs[one].stderr
    dist, single = _params(root, run), _params(root, one)
    assert dist["features"] == ["x0", "x1"]
    # Restarts reaching one optimum in another labelling tie to float
    # rounding: the sums over two shards may pick another, so sorted.
    np.testing.assert_allclose(_sorted_means(dist), _sorted_means(single), rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(sorted(dist["weights"]), sorted(single["weights"]), rtol=1e-5)
    assert dist["loss"] == pytest.approx(single["loss"], rel=1e-5)
    labels = np.load(root / f"o_{run}" / "assignments.npy")
    assert labels.dtype == np.int64 and labels.shape == (180,)
    same = np.load(root / f"o_{one}" / "assignments.npy")
    # the same partition of the rows into two clusters, whatever the labelling
    assert len(set(zip(labels.tolist(), same.tolist()))) == len(set(labels.tolist())) == 2
    out = runs[run].stdout
    assert out.count("fitted K=2") == 1 and "read by 2 processes" in out
    assert not [p.name for p in (root / f"o_{run}").iterdir() if p.name.startswith(".")]
    if run == "dist":   # the model, saved by the first process, is the fit
        from bayesgmm import BayesianGMM
        model = BayesianGMM.load(root / "d.bgmm")
        np.testing.assert_allclose(model.means_, dist["means"], rtol=1e-12)


def test_distributed_error_of_one_process_stops_all(npy_runs):
    """NaN in the second process's rows only: every process stops (none
    waits for the others in the fit), and the first reports the row."""
    root, runs = npy_runs
    run = runs["dist_nan"]
    assert "timed out" not in run.stderr
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("bayesgmm: error:")]
    assert errors == [f"bayesgmm: error: {str(root / 'one_nan.npy')!r} contains NaN at "
                      f"x[150, 0]: pass --missing marginalize to use such rows' other "
                      f"columns, or remove them"]
    assert "Traceback" not in run.stderr.split("bayesgmm: error:")[0]   # none from bayesgmm
    assert not (root / "o_dist_nan" / "params.json").exists()


# --- -k auto: K chosen by BIC ------------------------------------------------------------

_FIT_AUTO = ["fit", "-k", "auto", "--max-components", "4", "--n-init", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def auto_runs(tmp_path_factory):
    """'-k auto' through the console script on the same blobs as CSV, as
    .npy (out of core), and as .npy under torchrun (two processes), and a
    -k that is neither, all started side by side."""
    from concurrent.futures import ThreadPoolExecutor

    root = tmp_path_factory.mktemp("auto")
    blobs, _ = _two_blobs(5)
    blobs.to_csv(root / "blobs.csv", index=False)
    np.save(root / "blobs.npy", blobs.to_numpy())
    scripts = {
        "csv": [*_FIT_AUTO, root / "blobs.csv", "--save", root / "m.bgmm", "--out", root / "o_csv"],
        "npy": [*_FIT_AUTO, root / "blobs.npy", "--out", root / "o_npy"],
        "bad_k": ["fit", root / "blobs.csv", "-k", "many", "--out", root / "o_bad"],
    }
    with ThreadPoolExecutor(max_workers=len(scripts) + 1) as pool:
        futures = {name: pool.submit(_run_script, argv) for name, argv in scripts.items()}
        futures["dist"] = pool.submit(_run_torchrun, [_console_script()], [
            *_FIT_AUTO, root / "blobs.npy", "--distributed", "--out", root / "o_dist"])
        return root, {name: f.result() for name, f in futures.items()}


def test_fit_auto_chooses_k_and_prints_the_bic_table(auto_runs):
    root, runs = auto_runs
    run = runs["csv"]
    assert run.returncode == 0, run.stderr
    params = _params(root, "csv")
    bic = np.asarray(params["bic"], dtype=float)
    assert params["n_components"] == 2 and bic.shape == (4,) and int(np.argmin(bic)) == 1
    _assert_means(params, _two_blobs(5)[1])
    lines = run.stdout.splitlines()
    assert lines[0].startswith("fitted K=2 (chosen by BIC among K=1..4) (full covariances) on "
                               "180 rows x 2 column(s) ['x', 'y']")
    # the table: a header line, then one row per K with its BIC, the chosen one marked
    start = lines.index("BIC by K (lower is better):")
    assert lines[start + 1].split() == ["K", "BIC"]
    rows = [line.split() for line in lines[start + 2:start + 6]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    np.testing.assert_allclose([float(r[1]) for r in rows], bic, atol=0.006)
    assert [r[2:] for r in rows] == [[], ["<-", "chosen"], [], []]
    assert "cluster" in lines[start + 6]          # then the parameters, as for a given K
    assert list(pd.read_csv(root / "o_csv" / "assignments.csv").columns) == [
        "x", "y", "cluster", "p_cluster_0", "p_cluster_1"]
    # The saved model keeps "auto" and the chosen K, and its BIC is the table's.
    from bayesgmm import BayesianGMM
    model = BayesianGMM.load(root / "m.bgmm")
    assert model.n_components == "auto" and model.max_components == 4
    assert model.n_components_ == 2
    np.testing.assert_allclose(model.bic_, bic, rtol=1e-12)


def test_fit_auto_on_npy_in_one_process_and_two(auto_runs):
    """.npy input read in row chunks, and by two processes under torchrun:
    the same K and BIC table as the CSV fit."""
    root, runs = auto_runs
    csv = _params(root, "csv")
    for name in ("npy", "dist"):
        assert runs[name].returncode == 0, runs[name].stderr
        params = _params(root, name)
        assert params["n_components"] == 2
        # The chosen K's BIC is the polished fit's; the others stop at the
        # scan's tolerance (1e-4 nats per point per update), where summation
        # order (row chunks, two processes) moves the last bits of the
        # updates a SQUAREM step extrapolates from, and so where the
        # accelerated EM of a surplus K stops: measured up to 1.0 (0.12%)
        # at K=4 on these 180 points.
        np.testing.assert_allclose(params["bic"][1], csv["bic"][1], rtol=1e-6)
        np.testing.assert_allclose(params["bic"], csv["bic"], rtol=3e-3)
        assert "fitted K=2 (chosen by BIC among K=1..4)" in runs[name].stdout
    assert runs["dist"].stdout.count("BIC by K") == 1      # the first process prints


def test_fit_refuses_a_k_that_is_not_a_number_or_auto(auto_runs):
    root, runs = auto_runs
    run = runs["bad_k"]
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.splitlines()[-1] == (
        "bayesgmm fit: error: argument -k/--n-components: 'many' is not a number of "
        "components: give an integer K >= 1, e.g. 3, or 'auto' to choose K by BIC")
    assert not (root / "o_bad").exists()


def test_fit_auto_at_max_components_notes_it(tmp_path, capsys):
    """The library's warning in the command line's words (in-process: the
    check needs no real process)."""
    _two_blobs(6)[0].to_csv(tmp_path / "d.csv", index=False)
    assert main(["fit", str(tmp_path / "d.csv"), "-k", "auto", "--max-components", "1",
                 "--n-init", "1", "--device", "cpu", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    assert captured.err == ("bayesgmm: note: -k auto chose the largest K tried "
                            "(--max-components 1): BIC may fall further beyond it; raise "
                            "--max-components\n")
    assert captured.out.startswith("fitted K=1 (chosen by BIC among K=1..1)")
    # On data too small for K > 1 the summary says which K were tried.
    pd.DataFrame({"x": [0.0, 1.0, 3.0], "y": [1.0, 0.5, 2.0]}).to_csv(tmp_path / "s.csv",
                                                                     index=False)
    assert main(["fit", str(tmp_path / "s.csv"), "-k", "auto", "--device", "cpu",
                 "--out", str(tmp_path / "o2")]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("fitted K=1 (chosen by BIC among K=1 alone: larger K have "
                                   "more free parameters than points)"), captured.out
    # Said there and in the BIC table's note, not a third time by the
    # library's warning (stop 50) in its own words.
    assert captured.err == "", captured.err


def test_option_defaults_are_the_estimators():
    """The CLI repeats the estimator's defaults (so that --help stays light):
    they must not drift apart."""
    import inspect
    from bayesgmm import BayesianGMM
    from bayesgmm.cli import _build_parser, _fill_defaults
    args = _build_parser().parse_args(["fit", "d.csv"])
    _fill_defaults(args)
    defaults = inspect.signature(BayesianGMM).parameters
    for option, param in (("n_init", "n_init"), ("max_components", "max_components"),
                          ("max_iter", "max_iter"), ("n_samples", "n_samples"),
                          ("n_chains", "n_chains"), ("n_warmup", "n_warmup"),
                          ("covariance_type", "covariance_type"), ("missing", "missing"),
                          ("inference", "inference"), ("weight_prior", "weight_prior")):
        assert getattr(args, option) == defaults[param].default, option


def test_posterior_fit_of_a_npy_and_a_missing_device_are_said_in_cli_words(tmp_path, capsys):
    # (From an independent audit.) A .npy fitted with --inference vi is read
    # into memory, not in row chunks as the summary said; the library's
    # "device='cuda' ... use device='cpu'" reached the command line as is.
    import torch
    from bayesgmm.datasets import load_iris
    np.save(tmp_path / "x.npy", load_iris()[["petal_length", "petal_width"]].to_numpy())
    assert main(["fit", str(tmp_path / "x.npy"), "-k", "2", "--inference", "vi", "--threads",
                 "1", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert "read into memory" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert main(["fit", str(tmp_path / "x.npy"), "-k", "2", "--device", "cuda",
                     "--out", str(tmp_path / "o2")]) == 2
        err = capsys.readouterr().err
        assert "--device cuda but CUDA is not available" in err and "use --device cpu" in err


def test_number_formats_index_columns_headers_and_the_input_file_are_guarded(tmp_path):
    # From an audit of the CLI's input handling: each of these gave exit 0 and
    # a wrong fit, or destroyed the input.
    df, truth = _two_blobs(3)
    income = np.r_[np.full(120, 600.0), np.full(60, 1800.0)] + np.arange(180)
    quoted = [f'"{v:,.0f}"' for v in income]                   # "628", "1,817"
    (tmp_path / "thousands.csv").write_text(
        "income,x\n" + "".join(f"{q},{x}\n" for q, x in zip(quoted, df["x"])))
    (tmp_path / "dots.csv").write_text(                          # 28.2 next to 1,5
        "a;b\n" + "".join(f"{x:.1f};{str(y).replace('.', ',')}\n"
                          for x, y in zip(df["x"], df["y"])))
    df.to_csv(tmp_path / "indexed.csv")                           # ",x,y" and 0..n-1
    df.to_csv(tmp_path / "plain.csv", index=False)
    df.to_csv(tmp_path / "noheader.csv", index=False, header=False)
    df.to_csv(tmp_path / "inplace.csv", index=False)
    (tmp_path / "ow").mkdir()
    df.to_csv(tmp_path / "ow" / "assignments.csv", index=False)
    fast = ["-k", "2", "--n-init", "1", "--max-iter", "0"]
    t = tmp_path
    runs = _run_side_by_side({
        "ambiguous": (["fit", t / "thousands.csv", *fast, "--out", t / "o1"], False),
        "thousands": (["fit", t / "thousands.csv", *fast, "--thousands", ",", "--out",
                       t / "o2"], False),
        "dots": (["fit", t / "dots.csv", *fast, "--decimal", ",", "--out", t / "o3"], False),
        "indexed": (["fit", t / "indexed.csv", *fast, "--out", t / "o4"], False),
        "plain": (["fit", t / "plain.csv", *fast, "--out", t / "o5"], False),
        "noheader": (["fit", t / "noheader.csv", *fast, "--out", t / "o6"], False),
        "inplace": (["fit", t / "inplace.csv", *fast, "--out", t / "o7", "--save",
                     t / "inplace.csv"], False),
        "ow": (["fit", t / "ow" / "assignments.csv", *fast, "--out", t / "ow"], False),
        "long": (["fit", t / "plain.csv", *fast, "--out", t / "o8", "--save",
                  t / ("m" * 300 + ".bgmm")], False),
    })
    err = _one_error_line(runs["ambiguous"])
    assert "hold numbers with commas (income: '1," in err
    assert "--decimal , if the comma is the decimal mark" in err and "--thousands ," in err
    assert runs["thousands"].returncode == 0, runs["thousands"].stderr
    means = np.asarray(json.loads((t / "o2" / "params.json").read_text())["means"])[:, 0]
    np.testing.assert_allclose(np.sort(means), [income[:120].mean(), income[120:].mean()],
                               rtol=1e-3)                        # 1,817 read as 1817
    err = _one_error_line(runs["dots"])
    assert "column(s) ['a'] of" in err and "do not read with decimal mark ','" in err
    assert "(a: '" in err and "--thousands" in err
    assert runs["indexed"].returncode == 0
    assert "left out column(s) ['Unnamed: 0']" in runs["indexed"].stderr
    assert "look like a row index" in runs["indexed"].stderr
    assert json.loads((t / "o4" / "params.json").read_text())["means"] == \
        json.loads((t / "o5" / "params.json").read_text())["means"]
    err = _one_error_line(runs["noheader"])
    assert "holds numbers (" in err and "needs a header row" in err
    err = _one_error_line(runs["inplace"])
    assert "--save would overwrite the input file" in err
    assert (t / "inplace.csv").read_text() == (t / "plain.csv").read_text()
    err = _one_error_line(runs["ow"])
    assert "--out would overwrite the input file" in err
    assert (t / "ow" / "assignments.csv").read_text() == (t / "plain.csv").read_text()
    err = _one_error_line(runs["long"])
    assert "cannot save the model to" in err and "File name too long" in err
    assert not (t / "o8").exists()                               # said before the fit


def test_default_columns_leave_out_shuffled_indexes_identifiers_and_constants(tmp_path, capsys):
    """(From an independent new-user walkthrough.) DataFrame.to_csv after a
    shuffle or a filter writes an unnamed index that is not 0..n-1, a
    customer_id numbers rows, a constant column carries nothing: each was
    fitted as a feature without a word (a shuffled index took iris's ARI
    from 0.90 to 0.53).  Left out with a note; the fit is the plain one; an
    empty header cell stays empty in assignments.csv."""
    df, truth = _two_blobs(3)
    rng = np.random.default_rng(0)
    plain = df.sample(frac=1, random_state=0)
    plain.to_csv(tmp_path / "plain.csv", index=False)
    extra = plain.assign(const=2.5, customer_id=rng.permutation(len(df)) + 1000)
    extra.to_csv(tmp_path / "extra.csv")                 # ",x,y,const,customer_id", shuffled
    fast = ["-k", "2", "--n-init", "1", "--device", "cpu"]
    assert main(["fit", str(tmp_path / "plain.csv"), *fast, "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "extra.csv"), *fast, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert err == (f"bayesgmm: note: left out column(s) ['Unnamed: 0', 'const', 'customer_id'] "
                   f"of '{tmp_path / 'extra.csv'}', which look like a row index or identifiers, "
                   f"constant columns; name them with --columns to use them\n")
    a, b = (json.loads((tmp_path / d / "params.json").read_text()) for d in "ab")
    assert b["features"] == ["x", "y"] and a["means"] == b["means"]
    header = (tmp_path / "b" / "assignments.csv").read_text().splitlines()[0]
    assert header == ",x,y,const,customer_id,cluster,p_cluster_0,p_cluster_1"
    # Named in --columns, they are fitted (the user's choice).
    assert main(["fit", str(tmp_path / "extra.csv"), *fast, "--columns", "x", "y", "customer_id",
                 "--out", str(tmp_path / "c")]) == 0
    assert json.loads((tmp_path / "c" / "params.json").read_text())["features"][-1] == \
        "customer_id"
    # Distinct integers that are not an index or an id (a count) stay features.
    plain.assign(visits=np.arange(len(df)) % 7 + 100 * (np.arange(len(df)) // 7)).to_csv(
        tmp_path / "visits.csv", index=False)
    assert main(["fit", str(tmp_path / "visits.csv"), *fast, "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "params.json").read_text())["features"] == \
        ["x", "y", "visits"]


def test_a_header_of_whole_numbers_is_read_as_names_with_a_note(tmp_path, capsys):
    """(From an independent new-user walkthrough.) '1,2' over rows '3,4' may
    be a file without a header, whose first row is then taken as the names
    and not fitted; whole numbers may also be names (years, wavelengths),
    so they are read as names and said in a note.  Decimals are refused."""
    (tmp_path / "nohead.csv").write_text("1,2\n3,4\n5,9\n0,1\n")     # not on a line
    (tmp_path / "decimals.csv").write_text("1.5,2\n3,4\n5,6\n0,1\n")
    assert main(["fit", str(tmp_path / "nohead.csv"), "-k", "1", "--out",
                 str(tmp_path / "a"), "--device", "cpu"]) == 0
    assert capsys.readouterr().err == (
        f"bayesgmm: note: the first line of '{tmp_path / 'nohead.csv'}' holds whole numbers "
        f"(1, 2), read as the column names; if the file has no header row, add one (else its "
        f"first row is not read as data)\n")
    assert json.loads((tmp_path / "a" / "params.json").read_text())["features"] == ["1", "2"]
    assert main(["fit", str(tmp_path / "decimals.csv"), "-k", "1", "--out",
                 str(tmp_path / "b")]) == 2
    assert "holds numbers (1.5, 2), not column names" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_an_unwritable_standard_output_is_one_line(tmp_path):
    df, _ = _two_blobs(0)
    df.to_csv(tmp_path / "d.csv", index=False)
    with open("/dev/full", "w") as full:
        run = subprocess.run([_console_script(), "fit", str(tmp_path / "d.csv"), "-k", "2",
                              "--n-init", "1", "--max-iter", "0", "--out", str(tmp_path / "o")],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                             env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == "bayesgmm: error: cannot write the output: No space left on device"


def test_compressed_files_trailing_separators_and_a_folder_as_model(tmp_path, capsys):
    import gzip

    df, truth = _two_blobs(1)
    text = df.to_csv(index=False)
    (tmp_path / "d.csv.gz").write_bytes(gzip.compress(text.encode()))
    np.savez(tmp_path / "d.npz", x=df.to_numpy())
    # A separator ending every line (spreadsheet exports): an empty, unnamed column.
    (tmp_path / "trail.csv").write_text("".join(line + ",\n" for line in text.splitlines()))
    (tmp_path / "model.bgmm").mkdir()
    fast = ["-k", "2", "--n-init", "1", "--max-iter", "0"]
    assert main(["fit", str(tmp_path / "d.csv.gz"), *fast]) == 2
    assert "is a gzip-compressed file: decompress it first" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "d.npz"), *fast]) == 2
    assert "is a zip archive (.zip, .npz, .xlsx)" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "trail.csv"), *fast, "--out", str(tmp_path / "o")]) == 0
    assert "2 column(s) ['x', 'y']" in capsys.readouterr().out
    _assert_means(json.loads((tmp_path / "o" / "params.json").read_text()), truth)
    assert main(["predict", str(tmp_path / "model.bgmm"), str(tmp_path / "trail.csv")]) == 2
    assert "is a folder, not a model file" in capsys.readouterr().err


def test_a_map_fit_out_of_budget_is_said_in_the_command_lines_words():
    """The command line sets only SVI's budget (--max-iter; EM keeps its
    500): the library's ConvergenceWarning of a MAP fit at both budgets
    (raised here by a real fit) reads as '... raise --max-iter', naming no
    parameter the command line lacks."""
    from sklearn.exceptions import ConvergenceWarning

    from bayesgmm import BayesianGMM
    from bayesgmm.cli import _message
    blobs, _ = _two_blobs(1)
    with pytest.warns(ConvergenceWarning) as caught:
        BayesianGMM(2, em_max_iter=2, max_iter=3, device="cpu", random_state=0).fit(blobs)
    said = _message(caught[0].message)
    assert said.endswith("raise --max-iter; the parameters are where it stopped"), said
    assert "--max-iter=3 steps" in said and "tol" not in said.split("):")[-1]


def test_a_failed_run_leaves_no_output_folder_it_created(tmp_path, capsys):
    """--out folders the run created (with their missing parents) are
    removed again when it fails; a folder that existed before stays, and
    so does one the failure left a file in."""
    (tmp_path / "text.csv").write_text("a,b\nx,y\n")
    assert main(["fit", str(tmp_path / "text.csv"), "--out", str(tmp_path / "new" / "o")]) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    assert main(["fit", str(tmp_path / "text.csv"), "--out", str(tmp_path / "mine")]) == 2
    assert (tmp_path / "mine").is_dir()
    blobs, _ = _two_blobs(1)
    blobs.to_csv(tmp_path / "b.csv", index=False)
    assert main(["fit", str(tmp_path / "b.csv"), "-k", "2", "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "made" / "o")]) == 0
    assert (tmp_path / "made" / "o" / "params.json").is_file()
    assert "no numeric columns" in capsys.readouterr().err


def test_true_false_columns_are_left_out_by_default_with_a_note(tmp_path, capsys):
    """A True/False column (pandas reads it as bool) is a flag, not a
    measurement: left out of the default columns with a note, used when
    named; a file of flags only is refused, naming --columns."""
    blobs, truth = _two_blobs(1)
    blobs.assign(member=np.arange(len(blobs)) % 3 == 0).to_csv(tmp_path / "f.csv", index=False)
    assert main(["fit", str(tmp_path / "f.csv"), "-k", "2", "--n-init", "1", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    params = json.loads((tmp_path / "o" / "params.json").read_text())
    assert params["features"] == ["x", "y"]
    _assert_means(params, truth)
    assert "left out column(s) ['member']" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "f.csv"), "-k", "2", "--n-init", "1", "--device", "cpu",
                 "--columns", "x", "member", "--out", str(tmp_path / "o2")]) == 0
    assert json.loads((tmp_path / "o2" / "params.json").read_text())["features"] == ["x", "member"]
    blobs.assign(member=True)[["member"]].to_csv(tmp_path / "only.csv", index=False)
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "only.csv"), "--out", str(tmp_path / "o3")]) == 2
    assert "look like true/false flags, not features: name the columns to fit with --columns" \
        in capsys.readouterr().err


def test_vi_with_a_mostly_missing_column_is_warned_in_the_command_lines_words(tmp_path, capsys):
    """--inference vi --missing marginalize: with --covariance-type full a
    column mostly empty gets one warning line naming --inference nuts and
    --covariance-type diag (whose variational fit is exact there, and says
    nothing)."""
    blobs, _ = _two_blobs(1)
    rng = np.random.default_rng(0)
    # (Not x + 1 exactly: a column dependent on another is a warning of its own.)
    blobs = blobs.assign(z=blobs["x"] + 1.0 + rng.normal(0, 0.5, len(blobs)))
    blobs.loc[rng.random(len(blobs)) < 0.9, "z"] = np.nan
    blobs.to_csv(tmp_path / "m.csv", index=False)
    run = ["fit", str(tmp_path / "m.csv"), "-k", "2", "--inference", "vi", "--missing",
           "marginalize", "--n-samples", "20", "--device", "cpu"]
    assert main([*run, "--covariance-type", "full", "--out", str(tmp_path / "f")]) == 0
    err = capsys.readouterr().err
    # The column by its name (it said "feature(s) 2").
    assert err.startswith("bayesgmm: warning: --inference vi: feature(s) 'z' (missing in ") and \
        err.count("\n") == 1, err
    assert "use --inference nuts" in err and "or --covariance-type diag" in err
    assert "covariance_type" not in err and "inference=" not in err
    assert main([*run, "--covariance-type", "diag", "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err == ""


def test_outputs_saves_and_cells_are_guarded(tmp_path):
    # From a second audit of the command line: each of these gave exit 0
    # with misread numbers, replaced a user's file or the run's own output,
    # or changed the user's cells in assignments.csv.
    from bayesgmm import BayesianGMM

    df, _ = _two_blobs(4)
    t = tmp_path
    n = len(df)
    np.save(t / "x.npy", df.to_numpy())
    ids = pd.DataFrame({"country": (["NA", "null", "FR", "None", "N/A", "DE"] * n)[:n],
                        "zip": [f"{i:05d}" for i in range(n)],
                        "id": [str(12345678901234567 + i) for i in range(n)]})
    pd.concat([ids, df], axis=1).to_csv(t / "ids.csv", index=False)
    df.assign(notes=np.nan).to_csv(t / "notes.csv", index=False)
    (t / "spaced.csv").write_text(df.to_csv(index=False).replace(",", ", "))
    df.to_csv(t / "plain.csv", index=False)
    for name in ("ex", "ex2"):
        (t / name).mkdir()
        (t / name / "assignments.csv").write_text("USER FILE\n")
        (t / name / "params.json").write_text("USER PARAMS\n")
    os.mkfifo(t / "fifo.bgmm")
    os.symlink(t / "target.bgmm", t / "link.bgmm")               # dangling: save creates it
    fast = ["-k", "2", "--n-init", "1", "--max-iter", "0"]
    runs = _run_side_by_side({
        "dots": (["fit", t / "plain.csv", *fast, "--thousands", ".", "--out", t / "o1"], False),
        "ids": (["fit", t / "ids.csv", *fast, "--columns", "x", "y", "--out", t / "o2",
                 "--save", t / "o2" / "model.bgmm"], False),     # --out made for the model
        "fifo": (["fit", t / "plain.csv", *fast, "--out", t / "ex", "--save", t / "fifo.bgmm"],
                 False),
        "own": (["fit", t / "plain.csv", *fast, "--out", t / "ex2", "--save",
                 t / "ex2" / "params.json"], False),
        "link": (["fit", t / "plain.csv", *fast, "--out", t / "o3", "--save", t / "link.bgmm"],
                 False),
        "empty": (["fit", t / "plain.csv", *fast, "--out", t / "o4", "--save", ""], False),
        "notes": (["fit", t / "notes.csv", *fast, "--out", t / "o5"], False),
        "spaced": (["fit", t / "spaced.csv", *fast, "--columns", "x", "y", "--out", t / "o6"],
                   False),
        "plain": (["fit", t / "plain.csv", *fast, "--out", t / "o8"], False),
    })
    err = _one_error_line(runs["dots"])
    assert "--thousands '.' is also the decimal mark (--decimal '.')" in err
    # The user's cells come back as the file has them; the fit is that of x, y.
    assert runs["ids"].returncode == 0, runs["ids"].stderr
    back = pd.read_csv(t / "o2" / "assignments.csv", dtype=str, keep_default_na=False)
    for c in ids.columns:
        assert back[c].tolist() == ids[c].tolist()
    assert back["x"].tolist() == pd.read_csv(t / "ids.csv", dtype=str)["x"].tolist()
    model = BayesianGMM.load(t / "o2" / "model.bgmm")
    np.testing.assert_array_equal(back["cluster"].astype(int), model.predict(df[["x", "y"]]))
    # A --save that cannot be written, or that is one of the run's outputs,
    # is refused before the fit: the user's files stay as they were.
    assert "it is not a regular file" in _one_error_line(runs["fifo"])
    assert "is also this run's output" in _one_error_line(runs["own"])
    for name in ("ex", "ex2"):
        assert (t / name / "assignments.csv").read_text() == "USER FILE\n"
        assert (t / name / "params.json").read_text() == "USER PARAMS\n"
    assert runs["link"].returncode == 0, runs["link"].stderr
    assert (t / "link.bgmm").is_symlink() and BayesianGMM.load(t / "target.bgmm").n_components == 2
    assert "argument --save: an empty path" in runs["empty"].stderr and \
        runs["empty"].returncode == 2 and not (t / "o4").exists()
    # An empty column is left out by default (it refused every row before).
    assert runs["notes"].returncode == 0, runs["notes"].stderr
    assert "left out column(s) ['notes']" in runs["notes"].stderr
    # "x, y": spaces after the separator are not part of the names.
    assert runs["spaced"].returncode == 0, runs["spaced"].stderr
    assert json.loads((t / "o6" / "params.json").read_text())["means"] == \
        json.loads((t / "o8" / "params.json").read_text())["means"]
    # predict: the model is not its own output, and model words are the CLI's.
    shutil.copy(t / "o2" / "model.bgmm", t / "o2" / "assignments.csv")
    (t / "dup.csv").write_text("x,x,y\n1,2,3\n4,5,6\n7,8,9\n")    # pandas read x, x.1, y
    (t / "numbers.csv").write_text("1.5,1.5,2.0\n1,2,3\n4,5,6\n")      # no header: said so
    runs = _run_side_by_side({
        "self": (["predict", t / "o2" / "assignments.csv", t / "plain.csv", "--out", t / "o2"],
                 False),
        "bad": (["predict", t / "fifo.bgmm", t / "plain.csv", "--out", t / "o7"], False),
        "npy": (["predict", t / "o2" / "model.bgmm", t / "x.npy", "--thousands", ","], False),
        "dup": (["fit", t / "dup.csv", "-k", "1", "--out", t / "o9"], False),
        "device": (["fit", "/dev/null", "-k", "1", "--out", t / "o10"], False),
        "numbers": (["fit", t / "numbers.csv", "-k", "1", "--out", t / "o11"], False),
    })
    assert "--out would overwrite the input file" in _one_error_line(runs["self"])
    assert BayesianGMM.load(t / "o2" / "assignments.csv").n_components == 2
    assert "is not a regular file" in _one_error_line(runs["bad"])
    assert "--thousands does not apply" in _one_error_line(runs["npy"])
    assert "names column(s) ['x'] more than once" in _one_error_line(runs["dup"])
    assert "the file needs a header row" in _one_error_line(runs["numbers"])
    assert "is not a regular file (a pipe or device)" in _one_error_line(runs["device"])
    assert "save it to a file first" in runs["device"].stderr


def test_library_advice_the_command_line_cannot_follow_is_reworded(tmp_path, capsys):
    # The unused-components warning named Priors(...) and n_effective_components_,
    # which the command line has neither of; --device mps named device='cpu'.
    rows = "\n".join(f"{2 * i},{2 * i + 1}" for i in range(10))
    (tmp_path / "line.csv").write_text("x,y\n" + rows + "\n")
    assert main(["fit", str(tmp_path / "line.csv"), "-k", "2", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "ended with weight below" in err and "give a smaller -k" in err, err
    assert "n_effective_components_" not in err and "Priors(scale_rate" not in err
    assert main(["fit", str(tmp_path / "line.csv"), "-k", "1", "--device", "mps",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "use --device cpu or cuda" in err and "device='" not in err, err


def test_script_reads_and_writes_the_files_encoding(tmp_path, capsys):
    """--encoding reads a Latin-1 (or UTF-16) file and writes assignments.csv
    in the same encoding, its text cells as they were; a UTF-8 byte-order
    mark is kept; a file that is not UTF-8 names --encoding; the console
    script takes the option as main() does."""
    blobs, truth = _two_blobs(5)
    data = blobs.rename(columns={"x": "größe", "y": "höhe"}).assign(ort="Köln")
    data.to_csv(tmp_path / "latin.csv", index=False, sep=";", decimal=",", encoding="latin-1")
    data.to_csv(tmp_path / "bom.csv", index=False, encoding="utf-8-sig")
    data.to_csv(tmp_path / "wide.csv", index=False, encoding="utf-16")
    fit = ["fit", "-k", "2", "--n-init", "1", "--device", "cpu", "--seed", "1"]
    assert main([*fit, str(tmp_path / "latin.csv"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "it is not utf-8 text" in err and "--encoding latin-1" in err
    # The offset named is the file's (pandas' counts from its read buffer:
    # it said "at byte 1" of this one).
    body = b"x,y\n" + b"".join(b"%d.5,%d.25\n" % (i, i) for i in range(2000))
    (tmp_path / "late.csv").write_bytes(body + b"3.5,caf\xe9\n")
    assert main([*fit, str(tmp_path / "late.csv"), "--out", str(tmp_path / "x")]) == 2
    assert (f"it is not utf-8 text (invalid continuation byte at byte {len(body) + 7} of the "
            f"file)") in capsys.readouterr().err
    run = _run_script([*fit, tmp_path / "latin.csv", "--encoding", "latin-1", "--decimal", ",",
                       "--out", tmp_path / "o"])
    assert run.returncode == 0, run.stderr
    raw = (tmp_path / "o" / "assignments.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")                              # written as Latin-1, as read
    back = pd.read_csv(tmp_path / "o" / "assignments.csv", sep=";", decimal=",",
                       encoding="latin-1")
    assert list(back.columns[:3]) == ["größe", "höhe", "ort"] and (back["ort"] == "Köln").all()
    np.testing.assert_array_equal(back[["größe", "höhe"]], data[["größe", "höhe"]])
    params = json.loads((tmp_path / "o" / "params.json").read_text())
    assert params["features"] == ["größe", "höhe"]
    _assert_means(params, truth)
    assert main([*fit, str(tmp_path / "bom.csv"), "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "assignments.csv").read_bytes().startswith(b"\xef\xbb\xbfgr")
    # Naming the file's encoding keeps its mark too (it was dropped).
    for named in ("utf-8", "UTF8"):
        assert main([*fit, str(tmp_path / "bom.csv"), "--encoding", named,
                     "--out", str(tmp_path / "b8")]) == 0
        assert (tmp_path / "b8" / "assignments.csv").read_bytes().startswith(
            b"\xef\xbb\xbfgr")
    assert main([*fit, str(tmp_path / "wide.csv"), "--out", str(tmp_path / "w")]) == 2
    assert "for UTF-16 text pass --encoding utf-16" in capsys.readouterr().err
    assert main([*fit, str(tmp_path / "wide.csv"), "--encoding", "utf-16",
                 "--out", str(tmp_path / "w")]) == 0
    wide = pd.read_csv(tmp_path / "w" / "assignments.csv", encoding="utf-16")
    assert list(wide.columns[:3]) == ["größe", "höhe", "ort"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*fit, str(tmp_path / "bom.csv"), "--encoding", "klingon"])
    assert "unknown encoding 'klingon'" in capsys.readouterr().err
    np.save(tmp_path / "a.npy", blobs.to_numpy())
    assert main([*fit, str(tmp_path / "a.npy"), "--encoding", "latin-1",
                 "--out", str(tmp_path / "n")]) == 2
    assert "--encoding does not apply to" in capsys.readouterr().err


def test_files_an_independent_audit_found_misread_are_read_or_named(tmp_path):
    """(From an independent audit of the command line, run through the real
    console script.)  A no-break space between thousands, or a separator
    such as '¦', was ignored by pandas' C parser (no numeric columns; the
    separator blamed for 'more fields'); digits grouped with spaces got
    'no numeric columns' without naming --thousands; row names without a
    header cell (R's write.table) were blamed on the separator; a to_csv
    index repeated after pd.concat was fitted as a feature; an empty column
    named in --columns got remedies that cannot work; --dropna --impute
    filled the cells of rows left unassigned."""
    t = tmp_path
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(1000, 30, 40), rng.normal(3000, 30, 40)]
    y = np.r_[rng.normal(1500, 30, 40), rng.normal(4000, 30, 40)]

    def grouped(v, mark):          # 1 012,6 with the given group mark
        whole = f"{int(v):,}".replace(",", mark)
        return f"{whole},{int(round(v * 10)) % 10}"

    for name, mark in (("nbsp", "\u00a0"), ("space", " ")):
        (t / f"{name}.csv").write_text("x;y\n" + "".join(
            f"{grouped(a, mark)};{grouped(b, mark)}\n" for a, b in zip(x, y)), encoding="utf-8")
    (t / "bar.csv").write_text("x¦y\n" + "".join(f"{a:.1f}¦{b:.1f}\n" for a, b in zip(x, y)),
                               encoding="utf-8")
    (t / "plain.csv").write_text("x,y\n" + "".join(f"{a:.1f},{b:.1f}\n" for a, b in zip(x, y)))
    (t / "rnames.csv").write_text("x,y\n" + "".join(f"{i + 1},{a:.1f},{b:.1f}\n"
                                                    for i, (a, b) in enumerate(zip(x, y))))
    import pandas as pd
    halves = [pd.DataFrame({"x": x[:40], "y": y[:40]}), pd.DataFrame({"x": x[40:], "y": y[40:]})]
    pd.concat(halves).round(1).to_csv(t / "concat.csv")          # index 0..39 twice
    (t / "empty.csv").write_text("x,y,z\n" + "".join(f"{a:.1f},{b:.1f},\n" for a, b in zip(x, y)))
    missing = ["x,y\n"] + [f"{a:.1f},{'' if i % 10 == 3 else f'{b:.1f}'}\n"
                           for i, (a, b) in enumerate(zip(x, y))]
    (t / "miss.csv").write_text("".join(missing))
    # (From the review.) Identifiers written in groups of three digits are
    # text left out by the default rule, not numbers to refuse; and in a
    # space-separated file a no-break space between thousands reads as
    # one number, not two fields.
    ids = rng.choice(10 ** 9, size=len(x), replace=False)
    (t / "ids.csv").write_text("sin,x,y\n" + "".join(
        f"{f'{i:,}'.replace(',', ' ')},{a:.1f},{b:.1f}\n" for i, a, b in zip(ids, x, y)))
    (t / "ws.txt").write_text("x y\n" + "".join(
        f"{grouped(a, chr(0xa0))} {grouped(b, chr(0xa0))}\n" for a, b in zip(x, y)),
        encoding="utf-8")
    (t / "empty2.csv").write_text("x,y,z\n" + "".join(f"{a:.1f},{b:.1f},\n"
                                                      for a, b in zip(x, y)))
    # (From a new-user walkthrough.) R's default write.table: spaces, a
    # quoted header, quoted row names; read as one column ("--sep space")
    # before the row names were said.
    (t / "r.txt").write_text('"x" "y"\n' + "".join(f'"{i + 1}" {a:.1f} {b:.1f}\n'
                                                   for i, (a, b) in enumerate(zip(x, y))))
    # (From the review.) One column grouped by plain spaces: every row splits
    # into one field more than its header, yet it holds no row names.
    (t / "one.csv").write_text("x\n" + "".join(f"{grouped(a, ' ')}\n" for a in x))
    fast = ["-k", "2", "--n-init", "1", "--device", "cpu"]
    runs = _run_side_by_side({
        "nbsp": (["fit", t / "nbsp.csv", "--decimal", ",", "--thousands", "\u00a0", *fast,
                  "--out", t / "o1"], False),
        "bar": (["fit", t / "bar.csv", "--sep", "¦", *fast, "--out", t / "o2"], False),
        "plain": (["fit", t / "plain.csv", *fast, "--out", t / "o3"], False),
        "space": (["fit", t / "space.csv", "--decimal", ",", *fast, "--out", t / "o4"], False),
        "nbsp_unsaid": (["fit", t / "nbsp.csv", "--decimal", ",", *fast, "--out", t / "o5"],
                        False),
        "rnames": (["fit", t / "rnames.csv", *fast, "--out", t / "o6"], False),
        "concat": (["fit", t / "concat.csv", *fast, "--out", t / "o7"], False),
        "empty": (["fit", t / "empty.csv", "--columns", "x", "z", *fast, "--out", t / "o8"],
                  False),
        "dropna": (["fit", t / "miss.csv", "--dropna", "--impute", *fast, "--out", t / "o9"],
                   False),
        "ids": (["fit", t / "ids.csv", *fast, "--out", t / "o10"], False),
        "ws": (["fit", t / "ws.txt", "--sep", "space", "--decimal", ",", "--thousands",
                "\u00a0", *fast, "--out", t / "o11"], False),
        "empty2": (["fit", t / "empty2.csv", *fast, "--out", t / "o12"], False),
        "rtable": (["fit", t / "r.txt", *fast, "--out", t / "o13"], False),
        "one": (["fit", t / "one.csv", "--decimal", ",", "--thousands", " ", *fast,
                 "--out", t / "o14"], False)})
    means = {k: np.sort(np.asarray(json.loads((t / o / "params.json").read_text())["means"]),
                        axis=0)
             for k, o in (("plain", "o3"), ("nbsp", "o1"), ("bar", "o2"), ("concat", "o7"),
                          ("ids", "o10"), ("ws", "o11"))
             if runs[k].returncode == 0}
    assert set(means) == {"plain", "nbsp", "bar", "concat", "ids", "ws"}, \
        {k: r.stderr for k, r in runs.items()}
    np.testing.assert_allclose(means["ids"], means["plain"], rtol=1e-9)
    np.testing.assert_allclose(means["ws"], means["plain"], rtol=1e-4)
    # An empty column left out by the default rule is not offered back.
    assert "which look like empty columns\n" in runs["empty2"].stderr
    assert "name them with --columns" not in runs["empty2"].stderr
    # 1 012,6 read as 1012.6 (the plain file has the values to 0.1).
    np.testing.assert_allclose(means["nbsp"], means["plain"], rtol=1e-4)
    np.testing.assert_allclose(means["bar"], means["plain"], rtol=1e-9)
    # The concat index (0..39 twice) is left out: the fit is the plain one.
    assert "left out column(s) ['Unnamed: 0']" in runs["concat"].stderr
    np.testing.assert_allclose(means["concat"], means["plain"], rtol=1e-9)
    assert json.loads((t / "o7" / "params.json").read_text())["features"] == ["x", "y"]
    err = _one_error_line(runs["space"])
    assert "grouped with spaces (x: '1 0" in err and "add --thousands ' '" in err
    err = _one_error_line(runs["nbsp_unsaid"])
    assert "grouped with no-break spaces" in err and "add --thousands $'\\u00a0'" in err
    err = _one_error_line(runs["rnames"])
    assert "every row of" in err and "has one field more than its header" in err
    assert "give it one (e.g. a header id,x,y)" in err
    assert runs["one"].returncode == 0, runs["one"].stderr
    np.testing.assert_allclose(
        np.sort(np.ravel(json.loads((t / "o14" / "params.json").read_text())["means"])),
        np.sort(means["plain"][:, 0]), rtol=1e-3)
    err = _one_error_line(runs["rtable"])
    assert "every row of" in err and "has one field more than its header (read with " \
        "separator whitespace)" in err and "give it one (e.g. a header id x y)" in err
    err = _one_error_line(runs["empty"])
    assert "column(s) ['z'] of" in err and "have no value in any row: leave them out of " \
        "--columns" in err
    assert runs["dropna"].returncode == 0, runs["dropna"].stderr
    assert "--impute found no empty cell to fill in the chosen columns of the rows assigned " \
        "(--dropna left out those with one)" in runs["dropna"].stderr
    out = (t / "o9" / "assignments.csv").read_text().splitlines()
    left = [line for line in out[1:] if line.endswith(",,,")]
    assert len(left) == 8 and all(line.split(",")[1] == "" for line in left)


@pytest.fixture(scope="module")
def second_audit_runs(tmp_path_factory):
    """The runs of a second audit of the command line, through the real
    console script: the independent ones side by side, then those that use
    an earlier run's files."""
    t = tmp_path_factory.mktemp("audit2")
    blobs, _ = _two_blobs(7)
    data = blobs.rename(columns={"x": "a", "y": "b"})
    data.to_csv(t / "d.csv", index=False)
    data.to_csv(t / "d.tsv", sep="\t", index=False)
    np.save(t / "d.npy", data.to_numpy())
    # Decimal commas make the measurements text: only the 0/1 target is numeric.
    data.assign(target=[0] * 120 + [1] * 60).to_csv(t / "semi.csv", sep=";", decimal=",",
                                                    index=False)
    data.assign(c=1).to_csv(t / "const.csv", index=False)
    big = data.copy()
    big.loc[3, "b"] = 1e308
    big.to_csv(t / "big.csv", index=False)
    pd.DataFrame({"n": ["x", "y", "z"], "m": ["p", "q", "r"]}).to_csv(t / "txt.csv", index=False)
    (t / "empty.csv").write_text("")
    (t / "o_stale").mkdir()
    (t / "o_stale" / "notes.txt").write_text("mine")      # not the command line's: kept
    fast = ["-k", "2", "--n-init", "1", "--device", "cpu"]
    runs = _run_side_by_side({
        "demo_piped": (["demo", "--device", "cpu", "--out", t / "dm"], True),
        "k110": (["fit", t / "d.csv", "-k", "110", "--n-init", "1", "--device", "cpu",
                  "--save", t / "k110.bgmm", "--out", t / "k110"], False),
        "semi": (["fit", t / "semi.csv", *fast, "--out", t / "o_semi"], False),
        "concentration": (["fit", t / "d.csv", *fast, "--concentration", "0.5",
                           "--out", t / "o_conc"], False),
        "big": (["fit", t / "big.csv", *fast, "--out", t / "o_big"], False),
        "const": (["fit", t / "const.csv", *fast, "--columns", "a", "b", "c",
                   "--out", t / "o_const"], False),
        "stale_csv": (["fit", t / "d.csv", *fast, "--out", t / "o_stale"], False),
        # --save may take the other kind's name: the model is kept.
        "save_named": (["fit", t / "d.csv", *fast, "--save", t / "o_save" / "assignments.npy",
                        "--out", t / "o_save"], False),
        "txt": (["fit", t / "txt.csv", "--out", t / "o_txt"], False),
        "empty": (["fit", t / "empty.csv", "--out", t / "o_empty"], False),
        "predict_extra": (["predict", t / "m.bgmm", t / "d.csv", "--save", "x"], False),
        "fit_extra": (["fit", t / "d.csv", t / "d.tsv"], False),
        "top_extra": (["--foo", "fit", t / "d.csv"], False)})
    runs["stdin"] = subprocess.run([_console_script(), "fit", "-", "--out", str(t / "o_in")],
                                   stdin=open(t / "d.csv"), capture_output=True, text=True,
                                   timeout=300)
    runs.update(_run_side_by_side({
        "predict_k110": (["predict", t / "k110.bgmm", t / "d.csv", "--out", t / "pk"], False),
        "stale_npy": (["fit", t / "d.npy", *fast, "--out", t / "o_stale"], False)}))
    return t, runs


def test_demo_writes_its_files_before_a_closed_pipe_ends_it(second_audit_runs):
    # The demo printed first: `demo | head -2` ended it before any file.
    t, runs = second_audit_runs
    run = runs["demo_piped"]
    assert run.returncode == 141 and run.stderr == "", run.stderr
    for name in ("loss.png", "clusters.png", "params.json"):
        assert (t / "dm" / name).stat().st_size > 0


def test_many_components_write_their_probabilities_without_a_pandas_warning(second_audit_runs):
    # A column at a time, -k 110 made pandas warn that the frame was fragmented.
    t, runs = second_audit_runs
    for name, out in (("k110", "k110"), ("predict_k110", "pk")):
        run = runs[name]
        assert run.returncode == 0, run.stderr
        assert "PerformanceWarning" not in run.stderr and "fragmented" not in run.stderr
        result = pd.read_csv(t / out / "assignments.csv")
        assert list(result.columns) == ["a", "b", "cluster"] + [f"p_cluster_{k}"
                                                                for k in range(110)]
        np.testing.assert_allclose(result.filter(like="p_cluster_").sum(axis=1), 1.0,
                                   atol=1e-6)


def test_decimal_commas_are_named_before_label_columns(second_audit_runs):
    # The 0/1 target was the only numeric column: "name the columns with
    # --columns" came first, and --decimal , only after following it.
    err = _one_error_line(second_audit_runs[1]["semi"])
    assert "decimal commas" in err and "add --decimal ," in err
    assert "look like labels" not in err


def test_library_messages_are_in_the_command_lines_words(second_audit_runs):
    t, runs = second_audit_runs
    err = _one_error_line(runs["concentration"])
    assert "--concentration must be >= 1, got 0.5:" in err and "[0.5" not in err
    err = _one_error_line(runs["big"])
    assert f"{str(t / 'big.csv')!r} has values too large" in err
    assert "in column(s) ['b']" in err and "X" not in err.split("error: ")[1]
    run = runs["const"]
    assert run.returncode == 0, run.stderr
    assert f"bayesgmm: warning: column(s) 'c' (= 1) of {str(t / 'const.csv')!r} hold one value " \
        "in every row" in run.stderr and run.stderr.rstrip().endswith(
            "; leave it out of --columns"), run.stderr
    assert "BayesianGMM:" not in run.stderr and "drop it" not in run.stderr


def test_the_other_kinds_assignments_file_in_out_is_named_not_removed(second_audit_runs):
    # fit d.csv then fit d.npy into one folder left the CSV fit's
    # assignments.csv beside the .npy fit's params.json without a word; it
    # is said, and kept (it may be the user's own file of that name).
    t, runs = second_audit_runs
    assert runs["stale_csv"].returncode == 0, runs["stale_csv"].stderr
    run = runs["stale_npy"]
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in (t / "o_stale").iterdir()) == [
        "assignments.csv", "assignments.npy", "notes.txt", "params.json"]
    assert (f"note: {str(t / 'o_stale')!r} also holds assignments.csv, which this run did not "
            f"write (it wrote assignments.npy)") in run.stderr
    assert json.loads((t / "o_stale" / "params.json").read_text())["features"] == ["x0", "x1"]
    # A model saved under the other kind's name is the run's own: not said.
    assert runs["save_named"].returncode == 0, runs["save_named"].stderr
    assert "also holds" not in runs["save_named"].stderr
    from bayesgmm import BayesianGMM
    assert BayesianGMM.load(t / "o_save" / "assignments.npy").n_components == 2


def test_files_with_nothing_to_fit_and_standard_input_are_named(second_audit_runs):
    t, runs = second_audit_runs
    err = _one_error_line(runs["txt"])
    assert "has no numeric columns: its 2 column(s) ['n', 'm'] hold text (n: 'x')" in err
    assert "--sep" in err and "--decimal" in err and "name them with --columns" not in err
    err = _one_error_line(runs["stdin"])
    assert "standard input ('-') is not supported" in err and "give the path of a file" in err
    err = _one_error_line(runs["empty"])
    assert f"{str(t / 'empty.csv')!r} is empty" in err and "No columns to parse" not in err


def test_a_subcommands_unknown_arguments_show_its_usage(second_audit_runs):
    runs = second_audit_runs[1]
    for name, command, words in (("predict_extra", "predict", "--save x"),
                                 ("fit_extra", "fit", "d.tsv")):
        run = runs[name]
        assert run.returncode == 2
        assert run.stderr.startswith(f"usage: bayesgmm {command} [-h]"), run.stderr
        assert f"bayesgmm {command}: error: unrecognized arguments: " in run.stderr
        assert run.stderr.rstrip().endswith(words)
    # An unknown word before the command is the top level's.
    run = runs["top_extra"]
    assert run.returncode == 2 and run.stderr.startswith("usage: bayesgmm [-h] [--version]")


def test_ctrl_c_during_a_fit_is_one_line_and_exit_code_130(tmp_path):
    """SIGINT while NUTS runs printed a Python traceback (a RuntimeError
    from TorchScript, or KeyboardInterrupt): one line and 130 instead, the
    --out folder's earlier files as they were."""
    import select
    import signal
    import time

    _two_blobs(0)[0].to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "params.json").write_text("{}")     # an earlier run's output
    cmd = [_console_script(), "fit", str(tmp_path / "d.csv"), "-k", "2", "--n-init", "1",
           "--device", "cpu", "--inference", "nuts", "--n-chains", "1", "--n-warmup", "100000",
           "--n-samples", "10", "--progress", "--out", str(tmp_path / "o")]
    # The bar is how this test knows the sampler is running (the library's
    # own since stop 49; Pyro's, which it replaced, hid itself under "CI").
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_XDIST_WORKER")}
    # SIGINT as a terminal sends it, even where this test's runner ignores it.
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(env, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        err, deadline = b"", time.monotonic() + 120
        while b"NUTS chain" not in err:       # NUTS's progress bar: the fit is running
            ready = select.select([proc.stderr], [], [], max(deadline - time.monotonic(), 0))[0]
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"no NUTS progress bar within 120 s: {err.decode()}"
            err += chunk
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[1].decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "Error" not in rest, rest
    assert rest.rstrip().splitlines()[-1] == "bayesgmm: interrupted"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["params.json"]
    assert (tmp_path / "o" / "params.json").read_text() == "{}"


def test_components_on_one_value_of_a_rating_column_are_said_in_the_clis_words(tmp_path):
    """(From an audit.) Whole-number ratings from two clusters: the fit's
    components on one value are said naming the file's column and a remedy
    for a file (a CSV's --columns, a .npy saved without the column); the
    .npy, fitted out of core, is checked on the rows its first pass drew."""
    rng = np.random.default_rng(0)
    r = np.r_[np.round(rng.normal(3, 1, 500)), np.round(rng.normal(7, 1, 500))]
    pd.DataFrame({"rating": r, "score": rng.normal(size=1000)}).to_csv(tmp_path / "r.csv",
                                                                       index=False)
    np.save(tmp_path / "r.npy", r[:, None])
    runs = _run_side_by_side({
        "csv": (["fit", tmp_path / "r.csv", "-k", "8", "--seed", "0", "--out", tmp_path / "a"],
                False),
        "npy": (["fit", tmp_path / "r.npy", "-k", "4", "--seed", "0", "--out", tmp_path / "b"],
                False)})
    for name, tail in (("csv", "or leave it out of --columns"),
                       ("npy", "or save the array without it")):
        run = runs[name]
        assert run.returncode == 0, run.stderr
        said = [line for line in run.stderr.splitlines() if "single value" in line]
        assert len(said) == 1, run.stderr
        assert said[0].startswith("bayesgmm: warning: component") and said[0].endswith(tail)
        column = "'rating'" if name == "csv" else "0"
        assert f"single value of column(s) {column} (" in said[0] and "gap 1)" in said[0]
        assert "(each value plus a random number between -gap/2 and gap/2)" in said[0]
        assert "X[:, j]" not in said[0] and "BayesianGMM" not in said[0]


@pytest.fixture(scope="module")
def third_audit_runs(tmp_path_factory):
    """The runs of a third audit of the command line (messages and the
    parameter table), through the real console script: the independent
    ones side by side, then those that use the model a first run saved."""
    import pickle
    t = tmp_path_factory.mktemp("audit3")
    blobs, _ = _two_blobs(3)
    blobs.to_csv(t / "d.csv", index=False)
    rng = np.random.default_rng(1)
    w = np.where(rng.random(len(blobs)) < 0.5, 1.0, 1e-300)     # beyond float32's range
    blobs.assign(n=w).to_csv(t / "w.csv", index=False)
    (blobs + 1e12).to_csv(t / "offset.csv", index=False)        # clusters ~5 apart at 1e12
    (t / "excel.csv").write_text("sep=;\n" + blobs.to_csv(index=False, sep=";"))
    (t / "bom.csv").write_bytes(b"\xef\xbb\xbf" + blobs.to_csv(index=False).encode())
    (t / "excel_tab.csv").write_text("sep=\t\n" + blobs.to_csv(index=False, sep="\t"))
    (t / "excel_pad.csv").write_text("sep=;;\n" + blobs.to_csv(index=False, sep=";"))
    (t / "blank_huge.csv").write_text("x,\n0.1,0.2\n1.0,1e400\n0.3,0.1\n5,5\n")  # unnamed
    import unicodedata
    for form in ("NFC", "NFD"):       # the same name, its accent composed or combined
        blobs.rename(columns={"x": unicodedata.normalize(form, "größe")}).to_csv(
            t / f"{form}.csv", index=False)
    with open(t / "pickled.bgmm", "wb") as fh:
        pickle.dump([1], fh)
    np.save(t / "whole.npy", blobs.to_numpy())
    (t / "cut.npy").write_bytes((t / "whole.npy").read_bytes()[:500])     # a copy cut short
    text = blobs.to_csv(index=False).splitlines()
    text[3] = text[3].split(",")[0] + ",-1.5e400"                        # past float64: inf
    (t / "huge.csv").write_text("\n".join(text) + "\n")
    fast = ["-k", "2", "--n-init", "1", "--device", "cpu"]
    runs = _run_side_by_side({
        "model": (["fit", t / "d.csv", *fast, "--save", t / "m.bgmm", "--out", t / "o_m"], False),
        "nfc_model": (["fit", t / "NFC.csv", *fast, "--save", t / "nfc.bgmm", "--out", t / "o_nfc"],
                      False),
        "span": (["fit", t / "w.csv", "--weights", "n", *fast, "--out", t / "o_span"], False),
        "span64": (["fit", t / "w.csv", "--weights", "n", *fast, "--dtype", "float64",
                    "--out", t / "o_span64"], False),
        "offset": (["fit", t / "offset.csv", *fast, "--out", t / "o_offset"], False),
        "excel": (["fit", t / "excel.csv", *fast, "--out", t / "o_excel"], False),
        "conc": (["fit", t / "d.csv", "--concentration", "1e300", *fast, "--out", t / "o_c"],
                 False),
        "conc64": (["fit", t / "d.csv", "--concentration", "1e300", "--dtype", "float64", *fast,
                    "--out", t / "o_c64"], False),
        "excel_tab": (["fit", t / "excel_tab.csv", *fast, "--out", t / "o_et"], False),
        "excel_pad": (["fit", t / "excel_pad.csv", *fast, "--out", t / "o_ep"], False),
        "blank_huge": (["fit", t / "blank_huge.csv", "-k", "1", "--device", "cpu",
                        "--out", t / "o_bh"], False),
        "sig": (["fit", t / "d.csv", "--encoding", "utf-8-sig", *fast, "--out", t / "o_sig"],
                False),
        "bom_latin1": (["fit", t / "bom.csv", "--encoding", "latin-1", *fast,
                        "--out", t / "o_bom"], False),
        "pickled": (["predict", t / "pickled.bgmm", t / "d.csv", "--out", t / "o_p"], False),
        "dashdash": (["fit", *fast, "--out", t / "o_dash", "--columns", "x", "y", "--",
                      t / "d.csv"], False)})
    runs.update(_run_side_by_side({
        "swapped": (["predict", t / "d.csv", t / "m.bgmm", "--out", t / "o_sw"], False),
        "nfd_predict": (["predict", t / "nfc.bgmm", t / "NFD.csv", "--out", t / "o_nfd"], False),
        "cut": (["fit", t / "cut.npy", *fast, "--out", t / "o_cut"], False),
        "huge": (["fit", t / "huge.csv", *fast, "--out", t / "o_huge"], False),
        "huge_predict": (["predict", t / "m.bgmm", t / "huge.csv", "--out", t / "o_hp"], False)}))
    return t, runs, blobs, w


def test_weights_beyond_float32_name_the_column_and_dtype_float64_fits_them(third_audit_runs):
    """(From an audit.) The weights' range error named the library's
    sample_weight and a dtype the command line had no option for: it names
    the --weights column, and --dtype float64 fits them, as the library's
    dtype='float64' does."""
    from bayesgmm import BayesianGMM
    t, runs, blobs, w = third_audit_runs
    run = runs["span"]
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.startswith(f"bayesgmm: error: --weights column 'n' of '{t / 'w.csv'}' "
                                 f"spans 1e-300 to 1, beyond what the fit's float32")
    assert run.stderr.rstrip().endswith("or fit with --dtype float64")
    assert "sample_weight" not in run.stderr and "dtype='" not in run.stderr
    run = runs["span64"]
    assert run.returncode == 0, run.stderr
    params = json.loads((t / "o_span64" / "params.json").read_text())
    gmm = BayesianGMM(2, n_init=1, random_state=0, device="cpu", dtype="float64").fit(
        blobs, sample_weight=w)
    np.testing.assert_allclose(params["means"], gmm.means_, rtol=1e-12)


def test_the_parameter_table_shows_means_to_their_scale_far_from_zero(third_audit_runs):
    """(From an audit.) Four significant digits printed two clusters ~5
    apart at 1e12 as 1e+12 each: each feature's means are shown to ~1/1000
    of its smallest scale, in full where they have more integer digits."""
    t, runs, blobs, _ = third_audit_runs
    run = runs["offset"]
    assert run.returncode == 0, run.stderr
    params = json.loads((t / "o_offset" / "params.json").read_text())
    means = np.asarray(params["means"])
    lines = run.stdout.splitlines()
    rows = [line.split() for line in lines[lines.index(next(x for x in lines
                                                                if x.split()[:1] == ["cluster"])) + 1:]
            if len(line.split()) == 5]
    shown = {(int(r[0]), r[2]): float(r[3]) for r in rows}
    assert len(shown) == 4
    for (k, name), value in shown.items():
        j = ["x", "y"].index(name)
        assert abs(value - means[k, j]) < 1e-3 * min(params["scales"][0][j], params["scales"][1][j])
    assert shown[(0, "x")] != shown[(1, "x")] and "e+12" not in run.stdout


def test_excel_separator_line_and_swapped_predict_arguments_are_named(third_audit_runs):
    """(From an audit.) An Excel 'sep=;' first line was read as the header
    and the error blamed --sep and --decimal; 'predict DATA MODEL' called
    the data a damaged model; a pickle's remedy was the library's."""
    t, runs, _, _ = third_audit_runs
    run = runs["excel"]
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "begins with Excel's separator line ('sep=;') before its header" in run.stderr
    assert "remove that line" in run.stderr
    for name, line, mark in (("excel_tab", "'sep=\\t'", "'\\t'"), ("excel_pad", "'sep=;;'", "';'")):
        run = runs[name]
        assert run.returncode == 2 and f"Excel's separator line ({line})" in run.stderr and \
            f"the separator {mark} is detected" in run.stderr, run.stderr
    # --encoding utf-8-sig asks for the mark in assignments.csv, file or not.
    assert runs["sig"].returncode == 0, runs["sig"].stderr
    assert (t / "o_sig" / "assignments.csv").read_bytes().startswith(b"\xef\xbb\xbfx,y")
    # A UTF-8 byte-order mark read as latin-1 became 'ï»¿' in the first
    # column's name (kept by a saved model, which then failed on the file).
    run = runs["bom_latin1"]
    assert run.returncode == 2 and run.stderr.strip() == (
        f"bayesgmm: error: '{t / 'bom.csv'}' begins with UTF-8's byte-order mark: it is UTF-8 "
        f"text, not iso8859-1; leave out --encoding (or give --encoding utf-8)")
    run = runs["swapped"]
    assert runs["model"].returncode == 0, runs["model"].stderr
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.strip() == (
        f"bayesgmm: error: '{t / 'd.csv'}' is not a model but '{t / 'm.bgmm'}' is: the model "
        f"comes first, 'bayesgmm predict {t / 'm.bgmm'} {t / 'd.csv'}'")
    run = runs["pickled"]
    assert run.returncode == 2, run.stderr
    assert run.stderr.rstrip().endswith(
        "then re-save it with estimator.save(path) in Python, or make it again with "
        "'bayesgmm fit FILE.csv --save MODEL'")


def test_columns_ended_by_a_double_dash_take_the_file_after_it(third_audit_runs):
    """The remedy the --columns error gives (names ended by '--', FILE last,
    after every option) works."""
    t, runs, _, _ = third_audit_runs
    run = runs["dashdash"]
    assert run.returncode == 0, run.stderr
    assert json.loads((t / "o_dash" / "params.json").read_text())["features"] == ["x", "y"]


def test_a_truncated_array_and_a_number_past_float64_are_named_as_such(third_audit_runs):
    """(From an audit.) A .npy cut short gave numpy's "mmap length is
    greater than file size"; a CSV cell 1e400 (read as inf) was called
    inf, which the file does not hold; predict's remedy is not fit's."""
    t, runs, _, _ = third_audit_runs
    run = runs["cut"]
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.strip() == (
        f"bayesgmm: error: '{t / 'cut.npy'}' ends before the array its .npy header describes "
        f"(500 bytes): it was truncated (a copy or download cut short, a disk that filled up); "
        f"save the array again")
    said = f"bayesgmm: error: column 'y' of '{t / 'huge.csv'}' holds -1.5e400 in data row 3, " \
           f"beyond float64's range (~1.8e308): "
    if pd.read_csv(t / "huge.csv")["y"].dtype.kind != "f":
        # pandas < 2 (CI's oldest environment) reads 1e400 as text: the
        # column is refused as numbers that do not read, in one line.
        for name, csv, column in (("huge", "huge.csv", "y"), ("huge_predict", "huge.csv", "y"),
                                  ("blank_huge", "blank_huge.csv", "Unnamed: 1")):
            run = runs[name]
            assert run.returncode == 2 and run.stderr.startswith(
                f"bayesgmm: error: column(s) [{column!r}] of '{t / csv}' hold numbers that do "
                f"not read") and run.stderr.count("\n") == 1, run.stderr
        return
    run = runs["huge"]
    assert run.returncode == 2 and run.stderr.strip() == said + (
        "rescale the column (e.g. divide it by a power of ten) or leave it out of --columns")
    run = runs["huge_predict"]
    assert run.returncode == 2 and run.stderr.strip() == said + (
        "the model takes the column in the units it was fitted on")
    # A column with an empty header cell (the review: a KeyError traceback).
    run = runs["blank_huge"]
    assert run.returncode == 2 and run.stderr.strip().startswith(
        f"bayesgmm: error: column 'Unnamed: 1' of '{t / 'blank_huge.csv'}' holds 1e400 in "
        f"data row 2, beyond float64's range"), run.stderr


def test_a_concentration_beyond_float32_is_said_as_typed_and_fits_in_float64(third_audit_runs):
    """(From an audit.) The error showed the prior's per-component vector,
    "None for the default" and the data's units, none of which fit a
    concentration; --dtype float64 fits it, and its loss of ~1e286 prints
    in 7 significant digits, not 287 digits and 4 decimals."""
    t, runs, _, _ = third_audit_runs
    run = runs["conc"]
    assert run.returncode == 2 and run.stderr.strip() == (
        "bayesgmm: error: --concentration 1e+300 is beyond what the fit's float32 arithmetic "
        "holds (it becomes inf there): give a smaller value (the fit's sums need room inside "
        "float32's range, ~3e+38), or fit with --dtype float64")
    run = runs["conc64"]
    assert run.returncode == 0, run.stderr
    loss = json.loads((t / "o_c64" / "params.json").read_text())["loss"]
    assert loss > 1e200
    line = run.stdout.splitlines()[0]
    assert f"loss {loss:.7g}, converged" in line and len(line) < 200


def test_names_differing_only_in_unicode_form_are_said_to(third_audit_runs):
    """(From an audit.) A model fitted on 'größe' (NFC) and a file naming
    it in NFD (as macOS tools may write it): the error listed the missing
    name among the available ones, looking the same; it says why."""
    t, runs, _, _ = third_audit_runs
    assert runs["nfc_model"].returncode == 0, runs["nfc_model"].stderr
    run = runs["nfd_predict"]
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert run.stderr.rstrip().endswith(
        "differ only in how their accented letters are encoded (Unicode normal forms NFC and "
        "NFD): re-save the file's header in form NFC, as the names asked for)")

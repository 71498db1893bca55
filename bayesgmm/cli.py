"""The ``bayesgmm`` command line.

``bayesgmm demo`` fits the Pyro iris study (K=2 on ``petal_length``) on the
shipped data; ``bayesgmm fit FILE.csv`` fits any CSV (its separator detected,
or given with ``--sep``), with ``--weights COLUMN`` for per-row frequency
weights and ``--missing marginalize`` for empty cells (missing values handled
inside the model); ``-k auto`` chooses K by BIC among 1..``--max-components``
and prints the BIC of every K tried; ``bayesgmm predict MODEL FILE.csv`` assigns new rows with a
model saved by ``fit --save``.  A ``FILE.npy`` (a 2-D array saved by
``np.save``) is fitted or assigned out of core instead: memory-mapped, read in
row chunks by the estimator, its clusters written block by block as
``assignments.npy``; ``fit FILE.npy --distributed``, started by ``torchrun``,
fits it over several processes, each reading its own rows.  Errors in the
user's input or output folder end with a one-line message and exit code 2; a
closed stdout (``| head``) ends the run quietly.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import itertools
import json
import math
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ._options import (COVARIANCE_TYPES, INFERENCE_OPTIONS, MISSING_OPTIONS as _MISSING,
                       WEIGHT_PRIORS, is_number_column)


class CLIError(Exception):
    """A problem with the user's input: reported in one line, exit code 2."""


# Names of columns that hold labels rather than features: left out of the
# default columns of ``fit``.
_LABEL_NAMES = {"target", "label", "labels", "class", "species"}
# Separators tried when the file's is not given, in order of preference.
_SEPARATORS = ",\t;|"
# Columns aligned by runs of spaces or tabs (pandas' regular expression).
_WHITESPACE = r"\s+"
_DEMO_FILES = ("loss.png", "clusters.png", "params.json")
# The estimators' ``missing`` options (checked by _validation.allows_missing);
# here rather than imported from there so that --help does not load torch.
_FIT_FILES = ("assignments.csv", "params.json")
# A run's clusters of the rows: of a CSV, or of a .npy array.  A run writes
# one; the other, in its --out, is not this run's (:func:`_note_stale`).
_ASSIGNMENTS = ("assignments.csv", "assignments.npy")


def _separator(value: str) -> str:
    """``--sep``: one character; ``tab`` and a typed ``\\t`` mean a tab;
    a space, ``space`` or ``whitespace`` mean runs of spaces and tabs (columns
    aligned by padding)."""
    if value.lower() in ("tab", "\\t"):
        return "\t"
    if value == " " or value.lower() in ("space", "whitespace"):
        return _WHITESPACE
    if len(value) != 1:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not one character: give the separator itself, e.g. ';', 'tab', "
            f"or 'space' for columns aligned by spaces")
    return value


def _sep_name(sep: str) -> str:
    """The separator as messages name it."""
    return "whitespace" if sep == _WHITESPACE else repr(sep)


def _number(kind: Callable[[str], Any], what: str, give: str,
            ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse type: ``kind(value)`` where ``ok`` accepts it, refused
    in the command line's words (argparse names the option), not the
    library's: "'0' is not <what>: give <give>"."""
    def parse(value: str):
        try:
            v = kind(value)
        except ValueError:
            v = None
        if v is None or not ok(v):
            raise argparse.ArgumentTypeError(f"{value!r} is not {what}: give {give}")
        return v
    return parse


def _count(what: str, example: str) -> Callable[[str], int]:
    """An integer >= 1 (restarts, components, draws, chains)."""
    return _number(int, what, f"an integer >= 1, e.g. {example}", lambda n: n >= 1)


_k = _number(int, "a number of components",
             "an integer K >= 1, e.g. 3, or 'auto' to choose K by BIC", lambda n: n >= 1)
#: ``--seed``: what numpy's seeding takes.
_seed = _number(int, "a seed", "an integer from 0 to 2**32 - 1, e.g. 0",
                lambda n: 0 <= n < 2 ** 32)
#: ``--concentration``: a positive finite number.
_concentration = _number(float, "a concentration", "a number > 0, e.g. 0.1",
                         lambda a: math.isfinite(a) and a > 0)


def _n_components(value: str):
    """``-k``: an integer K >= 1 (its upper bound, the number of rows, is
    the estimator's to check) or "auto"."""
    return "auto" if value.strip().lower() == "auto" else _k(value)


def _path(value: str) -> str:
    """A file or folder name: not empty (an unset shell variable would
    otherwise write to the current folder, or save nothing, silently)."""
    if not value.strip():
        raise argparse.ArgumentTypeError(f"an empty path ({value!r}; an unset shell variable?): "
                                         f"give a file or folder name")
    return value


def _decimal_mark(value: str) -> str:
    if len(value) != 1 or value.isalnum():
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a decimal mark: give one character, e.g. ',' or '.'")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose "required: FILE" error also says when
    ``--columns`` (which takes every word up to the next option) took the
    data file as a column name: ``bayesgmm fit --columns a b data.csv``."""

    #: The words being parsed (set by :func:`_run`).
    argv: Sequence[str] = ()

    def error(self, message: str):
        if message.startswith("argument --columns: expected at least one argument"):
            i = len(self.argv) - 1 - list(reversed(self.argv)).index("--columns") \
                if "--columns" in self.argv else len(self.argv)
            after = self.argv[i + 1] if i + 1 < len(self.argv) else None
            if after is not None and after.startswith("-") and after != "--":
                # A column named "-a" is read as an option.
                message += (f" (the word after it, {after!r}, starts with '-' and so reads as an "
                            f"option: for a column of that name write --columns={after}, and "
                            f"repeat --columns for the others, e.g. --columns={after} --columns b)")
        if "FILE" in message and "--columns" in self.argv:
            i = len(self.argv) - 1 - list(reversed(self.argv)).index("--columns")
            names = list(itertools.takewhile(lambda w: not w.startswith("-"), self.argv[i + 1:]))
            # Said when the last name taken looks like the file (it exists,
            # or ends in an extension), not when FILE was simply left out.
            if names and (os.path.exists(names[-1]) or re.search(r"\.\w{1,5}$", names[-1])):
                message += (f" (--columns takes every word up to the next option, so it read "
                            f"{names[-1]!r} as a column name: give FILE before --columns, "
                            f"e.g. 'bayesgmm fit {names[-1]} --columns {' '.join(names[:-1]) or 'COL'}', "
                            f"or end the names with '--' and give FILE last, after every "
                            f"option: 'bayesgmm fit --columns {' '.join(names[:-1]) or 'COL'} -- "
                            f"{names[-1]}')")
        super().error(message)


#: Options that apply to some runs only: (option, its default, whether it
#: applies to a run of that K and inference, the runs it applies to).
#: Given where it does not apply, it is said to be ignored (it changes
#: nothing).
_CONDITIONAL = (
    ("max_components", 10, lambda k, inference: k == "auto", "-k auto"),
    ("n_samples", 1000, lambda k, inference: inference != "map", "--inference vi or nuts"),
    ("n_chains", 4, lambda k, inference: inference == "nuts", "--inference nuts"),
    ("n_warmup", 300, lambda k, inference: inference == "nuts", "--inference nuts"),
)


_ENCODING_HELP = ("text encoding of the CSV file, e.g. latin-1 or cp1252 (default: UTF-8, "
                  "with or without a byte-order mark); assignments.csv is written in the "
                  "same encoding; CSV only")


def _encoding_name(value: str) -> str:
    import codecs
    try:
        return codecs.lookup(value).name
    except LookupError:
        raise argparse.ArgumentTypeError(
            f"unknown encoding {value!r}: give a Python codec name, e.g. utf-8, latin-1, "
            f"cp1252 or utf-16") from None


def _file_encoding(path: str, given: Optional[str]) -> str:
    """The encoding to read ``path`` with (and write assignments.csv in):
    ``--encoding``, else UTF-8, with its byte-order mark kept when the file
    has one (also under ``--encoding utf-8``, which named the text's
    encoding, not a wish to drop the mark from assignments.csv)."""
    try:
        with open(path, "rb") as f:
            bom = f.read(3) == b"\xef\xbb\xbf"
    except OSError:
        bom = False      # named by the reader
    if given == "utf-8-sig":      # asked for: the mark written to assignments.csv too
        return given
    if given is not None and given != "utf-8":
        if bom:
            # Read as latin-1 or cp1252 the mark became 'ï»¿' in the first
            # column's name, which the saved model then kept.
            raise CLIError(f"{path!r} begins with UTF-8's byte-order mark: it is UTF-8 text, "
                           f"not {given}; leave out --encoding (or give --encoding utf-8)")
        return given
    return "utf-8-sig" if bom else "utf-8"


_IMPUTE_HELP = ("fill the empty cells of the chosen columns in assignments.csv with their "
                "expected values given the row's other columns under the fitted mixture "
                "(E[x_missing | x_observed]; the posterior predictive's after vi or nuts), "
                "their number said in a note; a row left unassigned (every chosen column "
                "empty, or left out by --dropna) stays empty; CSV only")


def _fill_defaults(args) -> None:
    """The defaults of the options that apply to some runs only, after a
    one-line warning for each such option given where it changes nothing
    (``-k 3 --max-components 5``: the user may have meant ``-k auto``).
    The demo has no --inference: it fits the MAP."""
    inference = getattr(args, "inference", "map")
    for dest, default, applies, where in _CONDITIONAL:
        if not hasattr(args, dest):
            continue
        if getattr(args, dest) is None:
            setattr(args, dest, default)
        elif not applies(args.n_components, inference):
            print(f"bayesgmm: warning: --{dest.replace('_', '-')} applies to {where} only; "
                  f"ignored here", file=sys.stderr)
            setattr(args, dest, default)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="bayesgmm",
        description="Bayesian Gaussian mixture models on Pyro and PyTorch: the MAP (closed-form "
                    "EM, SVI where EM stops short), or a posterior by variational Bayes or NUTS.")
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    parser.commands = sub.choices      # each subcommand's parser, by name (see _run)

    def threads(p: argparse.ArgumentParser, what: str) -> None:
        p.add_argument("--threads", type=_count("a number of threads", "1"), metavar="N",
                       help=f"CPU threads of {what}; 1 is often fastest for small data on a "
                            f"busy machine (default: torch's)")

    def common(p: argparse.ArgumentParser, default_out: str) -> None:
        p.add_argument("-k", "--n-components", type=_n_components, default=2, metavar="K",
                       help="number of mixture components, or 'auto' to choose it by BIC "
                            "(Bayesian information criterion) among 1 to --max-components; the "
                            "output shows the BIC of every K tried (default: %(default)s)")
        p.add_argument("--max-components", type=_count("a number of components", "10"), metavar="M",
                       help="largest K tried by '-k auto' (default: 10)")
        p.add_argument("--covariance-type", default="full", choices=COVARIANCE_TYPES,
                       help="covariance of each component, as in scikit-learn: its own full "
                            "matrix, one matrix shared by all (tied), diagonal, or one variance "
                            "(spherical); with one feature full is diagonal "
                            "(default: %(default)s)")
        p.add_argument("--out", default=default_out, metavar="DIR", type=_path,
                       help="output folder, created if missing (default: %(default)s)")
        p.add_argument("--seed", type=_seed, default=0,
                       help="random seed; the same seed gives the same fit (default: %(default)s)")
        p.add_argument("--n-init", type=_count("a number of restarts", "4"), default=4,
                       help="restarts, the best by final loss is kept (default: %(default)s)")
        p.add_argument("--device", default="auto",
                       help="'auto' (CUDA when available), 'cpu' or 'cuda' (default: %(default)s)")
        threads(p, "the run (the fit's are saved with the model as its n_threads)")
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
        "fit", help="fit a mixture to columns of a CSV file or to a .npy array",
        description="Fit a Bayesian GMM to numeric columns of a CSV file; write params.json "
                    "(weights, means, covariance type, covariances in scikit-learn's shapes, "
                    "per-feature scales, priors, loss) and assignments.csv (the input rows "
                    "with the most probable cluster and each cluster's probability (under "
                    "--inference vi or nuts, averaged over the posterior), in the input's "
                    "separator and decimal mark) into the output folder.  A FILE ending in "
                    ".npy is a 2-D array (rows x features, saved by np.save) fitted out of "
                    "core: it is memory-mapped and read in row chunks (into memory for "
                    "--inference vi or nuts, which read every row at every step), its features "
                    "are named x0, x1, ... in params.json, and the most probable cluster of each "
                    "row (the posterior predictive's after vi or nuts) is written as "
                    "assignments.npy (int64) instead of assignments.csv; the CSV options "
                    "--columns, --sep, --decimal, --thousands, --weights and --dropna do not apply to it.  "
                    "With --distributed, under torchrun, the processes fit the array's rows "
                    "together: 'torchrun --nproc-per-node N -m bayesgmm.cli fit FILE.npy "
                    "--distributed'.")
    fit.add_argument("file", metavar="FILE",
                     help="input CSV with a header row, or a 2-D .npy array (np.save)")
    fit.add_argument("--columns", nargs="+", action="extend", metavar="COL",
                     help="columns to use (default: every numeric column but those named like "
                          "labels (target, label, class, species), row indexes and identifiers, "
                          "constant, empty and true/false columns, each said in a note); "
                          "may be repeated, and a name that starts with '-' is written "
                          "joined by '=': --columns=-a --columns b; CSV only")
    fit.add_argument("--sep", type=_separator, metavar="CHAR",
                     help="field separator, e.g. ';'; 'tab' or '\\t' for a tab; 'space' for "
                          "columns aligned by spaces (default: detected from the first lines: "
                          "',', tab, ';', '|' or aligning spaces); CSV only")
    fit.add_argument("--encoding", type=_encoding_name, metavar="NAME", help=_ENCODING_HELP)
    fit.add_argument("--decimal", type=_decimal_mark, metavar="CHAR",
                     help="decimal mark of the numbers in the file, ',' for 1,5 "
                          "(default: .); CSV only")
    fit.add_argument("--thousands", type=_decimal_mark, metavar="CHAR",
                     help="thousands separator of the numbers in the file, ',' for 1,817 or "
                          "'.' for 1.817,5 (default: none); CSV only")
    fit.add_argument("--weights", metavar="COLUMN",
                     help="column holding each row's weight, how many times the row counts "
                          "(numbers >= 0, not all 0; 0 leaves the row out of the fit, though it "
                          "is still assigned); not a feature: left out of the default columns; "
                          "CSV only")
    fit.add_argument("--missing", choices=_MISSING, default="error",
                     help="empty cells (NaN) in the chosen columns: 'error' refuses them, "
                          "'marginalize' fits and assigns each such row from its other columns "
                          "(missing values handled inside the model, not filled in); the saved "
                          "model keeps the setting (default: %(default)s)")
    fit.add_argument("--impute", action="store_true", help=_IMPUTE_HELP)
    fit.add_argument("--dropna", action="store_true",
                     help="fit on the rows without missing values in the chosen columns, nor an "
                          "empty --weights value (the other rows get empty cluster columns, NaN in a "
                          "space-separated file); "
                          "with --missing marginalize only the rows with every chosen column "
                          "empty are left out; default: refuse such rows; CSV only")
    fit.add_argument("--inference", choices=INFERENCE_OPTIONS, default="map",
                     help="'map': the posterior's mode; 'vi': a variational posterior (fast); "
                          "'nuts': NUTS draws (slow; R-hat is checked). With 'vi' or 'nuts' "
                          "the clusters' probabilities are the posterior predictive's and "
                          "params.json adds 90%% credible intervals (default: %(default)s)")
    fit.add_argument("--weight-prior", choices=WEIGHT_PRIORS, default="dirichlet",
                     help="prior of the cluster weights; 'dirichlet_process' lets the fit "
                          "choose how many of the -k clusters the data use (-k is the "
                          "truncation; needs --inference vi or nuts) (default: %(default)s)")
    fit.add_argument("--concentration", type=_concentration, metavar="A",
                     help="concentration of the weights' prior: the Dirichlet's (>= 1 for "
                          "--inference map; below 1, with vi or nuts, it switches surplus "
                          "clusters off) or the Dirichlet process's alpha (default: 1)")
    fit.add_argument("--max-iter", type=_number(int, "a number of iterations",
                                                "an integer >= 0, e.g. 1000", lambda n: n >= 0),
                     default=1000, metavar="N",
                     help="iterations of the variational fit (--inference vi), or of the SVI "
                          "polish after EM (--inference map; 0 skips it) (default: %(default)s)")
    fit.add_argument("--n-samples", type=_count("a number of draws", "1000"),
                     metavar="S", help="posterior draws kept, for --inference vi or nuts "
                                       "(default: 1000)")
    fit.add_argument("--n-chains", type=_count("a number of chains", "4"),
                     metavar="C", help="NUTS chains, for --inference nuts (default: 4)")
    fit.add_argument("--n-warmup", type=_number(int, "a number of warmup steps",
                                                "an integer >= 0, e.g. 300", lambda n: n >= 0),
                     metavar="W", help="NUTS warmup steps per chain, for --inference nuts "
                                       "(default: 300)")
    fit.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="the fit's arithmetic: float64 for data whose values differ only "
                          "far below their size (timestamps, coordinates in metres), weights "
                          "spanning many orders of magnitude, or a fit that diverges in float32; "
                          "about twice the memory and time (default: %(default)s)")
    fit.add_argument("--save", metavar="MODEL", type=_path,
                     help="also save the fitted model to this file, for 'bayesgmm predict'")
    fit.add_argument("--distributed", action="store_true",
                     help=".npy input only: fit over the processes torchrun starts, each "
                          "reading its own range of rows (torch.distributed: gloo on the CPU, "
                          "NCCL on CUDA); launch as 'torchrun --nproc-per-node N -m "
                          "bayesgmm.cli fit FILE.npy --distributed'; the first process writes "
                          "the outputs and prints the summary")
    common(fit, "bayesgmm-out")

    pred = sub.add_parser(
        "predict", help="assign the rows of a CSV file or .npy array with a model saved by "
                        "'fit --save'",
        description="Load a model saved by 'bayesgmm fit --save MODEL' and write "
                    "assignments.csv (the input rows with the most probable cluster and each "
                    "cluster's probability) into the output folder; the file needs the columns the "
                    "model was fitted on.  A FILE ending in .npy is a 2-D array with the "
                    "model's features as columns, in the order it was fitted on; it is read "
                    "in row blocks and the most probable cluster of each row (the posterior "
                    "predictive's for a vi or nuts model) is written as assignments.npy (int64).")
    pred.add_argument("model", metavar="MODEL", help="model file from 'bayesgmm fit --save'")
    pred.add_argument("file", metavar="FILE",
                      help="input CSV with a header row, or a 2-D .npy array (np.save)")
    pred.add_argument("--sep", type=_separator, metavar="CHAR",
                      help="field separator (default: detected, as for fit); CSV only")
    pred.add_argument("--encoding", type=_encoding_name, metavar="NAME", help=_ENCODING_HELP)
    pred.add_argument("--decimal", type=_decimal_mark, metavar="CHAR",
                      help="decimal mark of the numbers in the file (default: .); CSV only")
    pred.add_argument("--thousands", type=_decimal_mark, metavar="CHAR",
                      help="thousands separator of the numbers in the file (default: none); "
                           "CSV only")
    pred.add_argument("--missing", choices=_MISSING,
                      help="empty cells (NaN) in the model's columns: 'marginalize' assigns "
                           "such rows from their other columns, 'error' refuses them "
                           "(default: the setting of 'fit --missing' the model was saved with)")
    pred.add_argument("--impute", action="store_true", help=_IMPUTE_HELP)
    pred.add_argument("--dropna", action="store_true",
                      help="leave rows with missing values unassigned instead of refusing them "
                           "(with --missing marginalize: the rows with every column empty); "
                           "CSV only")
    pred.add_argument("--out", default="bayesgmm-out", metavar="DIR", type=_path,
                      help="output folder, created if missing (default: %(default)s)")
    pred.add_argument("--device",
                      help="where to predict: 'auto' (CUDA when available), 'cpu' or 'cuda' "
                           "(default: the device the model was fitted on, or the CPU when "
                           "this machine has no such GPU)")
    threads(pred, "the run")
    return parser


def _version() -> str:
    from . import __version__
    return __version__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line and return its exit code (a torchrun worker
    of ``fit --distributed`` ends here instead: :func:`_end`)."""
    return _end(_main(argv))


def _end(code: int) -> int:
    """``code``; a process that joined torchrun's process group ends with
    it through :func:`bayesgmm.distributed.exit_process`, which keeps gloo's
    C++ teardown from aborting the process after its work is done."""
    if _Processes.started:
        from .distributed import exit_process
        exit_process(code)
    return code


def _main(argv: Optional[Sequence[str]]) -> int:
    try:
        code = _run(argv)
        # Output to a pipe is buffered: a reader that went away shows up here.
        if sys.stdout is not None:          # None when the shell closed it (>&-)
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python's "Note on SIGPIPE": the interpreter flushes stdout once more at
        # exit, which would fail again; send what is left to devnull instead.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 128 + 13  # what a shell reports for a process ended by SIGPIPE
    except KeyboardInterrupt:
        return _interrupted()
    except RuntimeError as exc:
        # Ctrl-C inside TorchScript (NUTS's compiled potential) comes back as
        # a RuntimeError that names it.
        if "KeyboardInterrupt" not in str(exc):
            raise
        return _interrupted()
    except OSError as exc:
        # Standard output that cannot be written (a full disk): said in one
        # line, as every other error is.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            print(f"bayesgmm: error: cannot write the output: {_reason(exc)}", file=sys.stderr)
        return 2


def _interrupted() -> int:
    """Ctrl-C: one line, not the traceback of wherever the fit was; the
    outputs already written stay (each is written whole: _write_atomic)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        print("bayesgmm: interrupted", file=sys.stderr)
    return 128 + 2   # what a shell reports for a process ended by SIGINT


def _run(argv: Optional[Sequence[str]]) -> int:
    parser = _build_parser()
    _Parser.argv = list(sys.argv[1:] if argv is None else argv)
    # parse_args would report a subcommand's unknown words with the top
    # level's usage ("bayesgmm [-h] [--version] COMMAND ..."): the
    # subcommand's parser reports them, with its own (the top level those
    # before the command, its own options' place).
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        before = _Parser.argv[:_Parser.argv.index(args.command)]
        (parser if set(unknown) & set(before) else parser.commands[args.command]).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    _fill_defaults(args)
    _CREATED.clear()
    code = 1
    try:
        code = _command(args)
        return code
    finally:
        if code != 0:     # a failed run leaves no empty output folder it created
            _remove_created()


def _command(args) -> int:
    # --threads holds for the whole run (the fit, its assignments, predict),
    # the caller's setting restored after it (main() may run in-process).
    threads = contextlib.nullcontext()
    if args.threads is not None:
        from ._base import check_threads, fit_threads
        try:
            threads = fit_threads(check_threads(args.threads))
        except ValueError as exc:
            _say_error(args, exc)
            return 2
    with threads:
        return _dispatch(args)


def _dispatch(args) -> int:
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "predict":
            return _predict(args)
        return _fit(args)
    except (CLIError, ValueError) as exc:  # ValueError: the estimator's checks of user input
        _say_error(args, exc)
        return 2


def _say_error(args, exc: BaseException) -> None:
    """The one line of a run's error, said once.  Under torchrun every
    process meets the same error (those of one process are exchanged first:
    _Processes.together): the first says it, before its process group
    closes (see :func:`_fit_npy`)."""
    if getattr(exc, "_bayesgmm_said", False):
        return
    if not (getattr(args, "distributed", False) and os.environ.get("RANK", "0") != "0"):
        print(f"bayesgmm: error: {_message(exc, args)}", file=sys.stderr)
    with contextlib.suppress(AttributeError):
        exc._bayesgmm_said = True


#: Output folders this run created (deepest first), removed again if the
#: run fails and they are still empty.
_CREATED: list = []


def _remove_created() -> None:
    for folder in _CREATED:
        with contextlib.suppress(OSError):     # not empty, or gone: left as it is
            folder.rmdir()
    _CREATED.clear()


def _make_estimator(args):
    from .mixture import BayesianGMM
    from .priors import Priors
    concentration = getattr(args, "concentration", None)
    return BayesianGMM(n_components=args.n_components, max_components=args.max_components,
                       covariance_type=args.covariance_type, n_init=args.n_init,
                       device=args.device, random_state=args.seed, progress=args.progress,
                       n_threads=args.threads, missing=getattr(args, "missing", "error"),
                       inference=getattr(args, "inference", "map"),
                       weight_prior=getattr(args, "weight_prior", "dirichlet"),
                       max_iter=getattr(args, "max_iter", 1000),
                       n_samples=getattr(args, "n_samples", 1000),
                       n_chains=getattr(args, "n_chains", 4),
                       n_warmup=getattr(args, "n_warmup", 300),
                       dtype=getattr(args, "dtype", "float32"),
                       priors=None if concentration is None else
                       Priors(weight_concentration=concentration))


#: Where the estimators' own warnings point (their stacklevel names the
#: caller of ``fit``: this module).
_FIT_CALLER = __file__


def _fit_estimator(args, X, **kwargs):
    """The estimator of the arguments fitted to ``X``.  '-k auto' stopping
    at --max-components is said in the command line's words afterwards
    (:func:`_note_at_cap`), not as the library's warning."""
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            # Deprecation notices are for the developers of the code that
            # raised them (Python hides them outside __main__ too).
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
            warnings.filterwarnings("ignore", message="n_components='auto' chose the largest K")
            # K capped by the parameters: said by the fit line and the BIC
            # table's note ("K > 1 not tried: more free parameters than points").
            warnings.filterwarnings("ignore", message=r"n_components='auto' chose K=\d+, the "
                                                      r"largest K the data allow")
            return _make_estimator(args).fit(X, **kwargs)
    except ValueError as exc:
        # In the file's words (its name and columns for the library's X).
        raise CLIError(_message(exc, args)) from None
    finally:
        # The fit's own warnings (NUTS's convergence, a variational fit
        # stopped short) in the command line's words, one line each; any
        # other (a stage that fell back, from torch or Pyro) as Python shows
        # it.  Said also when the fit then fails.  Shown once the recording
        # has ended: inside it, showwarning records (the loop would append
        # to the list it reads, without end).
        for w in caught:
            if issubclass(w.category, UserWarning) and w.filename == _FIT_CALLER:
                print(f"bayesgmm: warning: {_message(w.message, args)}", file=sys.stderr)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _note_at_cap(gmm, args) -> None:
    if args.n_components == "auto" and len(gmm.weights_) == args.max_components:
        print(f"bayesgmm: note: -k auto chose the largest K tried (--max-components "
              f"{args.max_components}): BIC may fall further beyond it; raise --max-components",
              file=sys.stderr)


def _chosen(gmm, args) -> str:
    """The fitted K, with '-k auto' how it was chosen, and where the prior
    switches clusters off how many carry the data."""
    K = len(gmm.weights_)
    if args.n_components == "auto":
        # The K actually tried: those the data can estimate (finite BIC).
        bic = getattr(gmm, "bic_", None)
        top = args.max_components if bic is None else int(np.flatnonzero(np.isfinite(bic))[-1]) + 1
        if top < args.max_components:
            among = (f"{'K=1 alone' if top == 1 else f'K=1..{top}'}: larger K have more free "
                     f"parameters than points")
            return f"K={K} (chosen by BIC among {among})"
        return f"K={K} (chosen by BIC among K=1..{top})"
    inference = getattr(args, "inference", "map")
    if inference != "map" and gmm.n_effective_components_ < K:
        return f"K={K} ({gmm.n_effective_components_} carrying the data)"
    return f"K={K}"


def _posterior_summary(gmm) -> str:
    """'; ELBO ...' after a variational fit, '; NUTS: largest R-hat ...'
    after NUTS, '' after a MAP fit (for the summary line)."""
    if getattr(gmm, "elbo_", None) is not None and gmm.inference == "vi":
        return f"; variational posterior, ELBO {_figure(gmm.elbo_)}"
    if gmm.inference == "nuts":
        rhat = np.concatenate([np.ravel(r) for r in gmm.rhat_.values()])
        rhat = rhat[np.isfinite(rhat)]
        worst = (f"largest R-hat {rhat.max():.3f}" if rhat.size else
                 "R-hat not computable (fewer than 4 draws per chain, or draws that "
                 "never moved)")
        return f"; NUTS, {worst}, {gmm.n_divergent_} divergent transition(s)"
    return ""


def _columns_named(columns: Sequence[str], width: int = 60) -> str:
    """``n column(s) [...]`` for a summary line; a list too long for the
    line names its first and last columns (the parameter table below names
    every one)."""
    listed = repr(list(columns))
    if len(listed) > width and len(columns) > 2:
        listed = f"[{columns[0]!r} ... {columns[-1]!r}]"
    return f"{len(columns)} column(s) {listed}"


def _print_tables(gmm, names) -> None:
    """The fit's tables after its summary line: BIC by K (an "auto" fit
    only), then the parameters."""
    bic = _format_bic(gmm)
    if bic is not None:
        print(bic)
    print(_format_params(gmm, names))


def _format_bic(gmm) -> Optional[str]:
    """The BIC of every K tried by '-k auto' (None for a given K), one row
    per K, the chosen one marked; K beyond what the data can estimate (more
    free parameters than rows) were not tried and are left out."""
    bic = getattr(gmm, "bic_", None)
    if bic is None:
        return None
    tried = np.flatnonzero(np.isfinite(bic))
    K = len(gmm.weights_)
    rows = [(str(k + 1), f"{bic[k]:.2f}", "  <- chosen" if k + 1 == K else "") for k in tried]
    wk = max(len("K"), *(len(r[0]) for r in rows))
    wb = max(len("BIC"), *(len(r[1]) for r in rows))
    text = "\n".join([f"{'K':>{wk}}  {'BIC':>{wb}}"]
                     + [f"{k:>{wk}}  {b:>{wb}}{mark}" for k, b, mark in rows])
    skipped = bic.size - tried.size
    note = (f"\n(K > {tried[-1] + 1} not tried: more free parameters than points)"
            if skipped else "")
    return "BIC by K (lower is better):\n" + text + note


def _undecodable(path: str, encoding: str) -> Optional[tuple[int, str]]:
    """The offset in the file of the first byte ``encoding`` cannot decode,
    and why (None if it decodes, or cannot be read again).  pandas' own
    ``UnicodeDecodeError`` counts from the start of its read buffer, not of
    the file.  Read in blocks: the file may be large."""
    import codecs

    try:
        decoder = codecs.getincrementaldecoder(encoding)()
        pos = 0
        with open(path, "rb") as f:
            while True:
                block = f.read(1 << 16)
                held = len(decoder.getstate()[0])     # bytes carried from the last block
                try:
                    decoder.decode(block, final=not block)
                except UnicodeDecodeError as exc:
                    return pos - held + exc.start, exc.reason
                if not block:
                    return None
                pos += len(block)
    except (OSError, LookupError):
        return None


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _prepare_out(path: str, names: Sequence[str]) -> Path:
    """Create the output folder and check that ``names`` can be written in it,
    before any fit: a bad ``--out`` must not cost a fit."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {path!r} is a file, not a folder: choose a folder "
                       f"(it is created if missing)")
    new = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output folder {path!r}: {_reason(exc)}; "
                       f"choose another --out") from None
    _CREATED.extend(new)
    for name in names:
        if (out / name).is_dir():
            raise CLIError(f"cannot write {str(out / name)!r}: a folder of that name is in "
                           f"the way; remove it or choose another --out")
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".bayesgmm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"cannot write to output folder {path!r}: {_reason(exc)}; "
                       f"choose another --out") from None
    return out


def _note_stale(out: Path, written: str, args) -> None:
    """Once this run's outputs are written: a note when ``out`` also holds
    the other of ``_ASSIGNMENTS`` (assignments.csv after a .npy run, or the
    other way round), which this run did not write and which would
    otherwise pass for its own.  Only said, never removed: it may be an
    earlier run's, or the user's own file of that name.  Not said of the
    input, the model or --save."""
    stale = out / next(name for name in _ASSIGNMENTS if name != written)
    if not stale.is_file():
        return
    for key in ("file", "model", "save"):
        given = getattr(args, key, None)
        try:
            if given is not None and os.path.samefile(given, stale):
                return
        except OSError:          # that path is gone or unreadable: the others still count
            continue
    print(f"bayesgmm: note: {str(out)!r} also holds {stale.name}, which this run did not write "
          f"(it wrote {written}): remove it if it is an earlier run's", file=sys.stderr)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` through a temporary in the same folder and ``os.replace``,
    so a failed write leaves neither a half-written file nor the temporary."""
    # Named after this process so two runs into one folder do not share it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CLIError(f"cannot write {str(path)!r}: {_reason(exc)}; "
                           f"choose another --out") from None
        raise


def _figure(value: float) -> str:
    """A loss or ELBO for the summary line: 4 decimals, or 7 significant
    digits where it is too large for decimals to mean anything (a prior
    concentration of 1e300 gave a 300-digit loss)."""
    return f"{value:.4f}" if abs(value) < 1e12 or not np.isfinite(value) else f"{value:.7g}"


def _digits(value: float, n: int) -> str:
    """``value`` to ``n`` significant digits; beyond the default 4, written
    out in full where it has more integer digits than that (1700604920, not
    1.70060492e+09)."""
    if n > 4 and np.isfinite(value) and value != 0:
        n = min(17, max(n, int(np.floor(np.log10(abs(value)))) + 1))
    return f"{value:.{n}g}"


def _format_params(gmm, names: Sequence[str]) -> str:
    """The fitted parameters in long format, one row per (cluster, feature),
    so that the table stays narrow whatever the number of features.  The
    clusters carrying less than one row's share (those left out of
    ``n_effective_components_``: a Dirichlet-process fit's surplus) are not
    listed among those that carry the data, but named below the table."""
    import pandas as pd
    K, D = gmm.means_.shape
    n_eff = int(getattr(gmm, "n_effective_components_", K))
    shown = np.arange(K) if not 0 < n_eff < K else \
        np.sort(np.argsort(-gmm.weights_, kind="stable")[:n_eff])
    means, scales = gmm.means_[shown], gmm.scales_[shown]
    # Each feature's means to ~1/1000 of its smallest scale: 4 significant
    # digits hid clusters a few units apart on values far from 0 (all
    # printed 1e+12; timestamps a day apart as one).
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(means).max(0) / scales.min(0)
    digits = np.clip(3 + np.ceil(np.log10(np.where(np.isfinite(ratio) & (ratio > 1), ratio, 1))),
                     4, 17).astype(int)
    table = pd.DataFrame({
        "cluster": np.repeat(shown, D),
        "weight": np.repeat(gmm.weights_[shown], D),
        "feature": np.tile(np.asarray(names, dtype=object), shown.size),
        "mean": [_digits(v, n) for v, n in zip(means.ravel(), np.tile(digits, shown.size))],
        "scale": scales.ravel(),
    })
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    hidden = np.setdiff1d(np.arange(K), shown)
    if hidden.size:
        text += (f"\n({hidden.size} cluster(s) with less than one row's share of the data not "
                 f"shown: {hidden.tolist()}; params.json lists every cluster)")
    return text


def _demo(args) -> int:
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    from .datasets import load_iris

    out = _prepare_out(args.out, _DEMO_FILES)
    iris = load_iris()
    X = iris[[args.column]]
    gmm = _fit_estimator(args, X)
    _note_at_cap(gmm, args)
    labels = gmm.predict(X)
    setosa = (iris["species"] == "setosa").astype(int)
    ari_setosa = adjusted_rand_score(setosa, labels)
    ari_species = adjusted_rand_score(iris["species"], labels)
    # The files first, as fit writes its: a reader that leaves early
    # (| head) ends the run at a print (quietly, _main), the files written.
    _plot_demo(gmm, X[args.column].to_numpy(), labels, iris["species"], out, args.column)
    _write_params(gmm, [args.column], out / "params.json")

    print(f"Bayesian GMM, {_chosen(gmm, args)}, covariance_type={gmm.covariance_type_}, "
          f"on iris {args.column} (150 points, seed {args.seed}, device {gmm.device_})")
    print(f"converged: {gmm.converged_} after {gmm.n_iter_} iterations; "
          f"final loss (negative log joint) {_figure(gmm.loss_)}")
    bic = _format_bic(gmm)
    if bic is not None:
        print()
        print(bic)
    print()
    print(_format_params(gmm, [args.column]))
    print()
    print("clusters by species:")
    print(pd.crosstab(pd.Series(labels, name="cluster"), iris["species"]).to_string())
    print()
    print(f"adjusted Rand index vs setosa / not setosa: {ari_setosa:.4f}")
    print(f"adjusted Rand index vs species:             {ari_species:.4f}")
    print()
    print(f"wrote {out / 'loss.png'}, {out / 'clusters.png'}, {out / 'params.json'}")
    return 0


def _plot_demo(gmm, x: np.ndarray, labels: np.ndarray, species, out: Path, column: str) -> None:
    # Figures of their own (no pyplot figure, no backend chosen: files
    # only, and main() called from a notebook leaves its backend as it was;
    # matplotlib.use("Agg") here switched the caller's for good).
    from matplotlib.figure import Figure

    from . import plotting

    def save(fig, name: str) -> None:
        # format given: the temporary's name does not end in .png
        _write_atomic(out / name, lambda p: fig.savefig(p, dpi=100, format="png"))

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    plotting.plot_loss_history(gmm, ax=ax)
    fig.tight_layout()
    save(fig, "loss.png")

    fig = Figure(figsize=(11, 3.8))
    axes = fig.subplots(1, 2)
    plotting.plot_density_1d(gmm, x, ax=axes[0])
    axes[0].set_xlabel(column)
    plotting.plot_assignments(x, labels, ax=axes[1], hue=np.asarray(species))
    axes[1].set_ylabel(column)
    fig.tight_layout()
    save(fig, "clusters.png")


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
    bic = getattr(gmm, "bic_", None)
    if bic is not None:   # '-k auto': BIC of K = 1, 2, ... (null: not tried)
        doc["bic"] = [float(v) if np.isfinite(v) else None for v in bic]
    inference = getattr(gmm, "inference", "map")
    doc["inference"] = inference
    doc["weight_prior"] = getattr(gmm, "weight_prior", "dirichlet")
    doc["n_effective_components"] = int(gmm.n_effective_components_)
    if inference != "map":
        # Central 90% intervals of the posterior draws, each [lower, upper]
        # in the shape of its point estimate.
        doc["credible_intervals_90"] = {
            name: [bound.tolist() for bound in gmm.credible_interval(name, 0.9)]
            for name in ("weights", "means", "covariances")}
        if inference == "vi":
            doc["elbo"] = gmm.elbo_
        else:
            # JSON has no NaN: R-hat not computable (too few draws) is null.
            doc["rhat"] = {k: np.where(np.isfinite(v), v, None).tolist()
                           for k, v in gmm.rhat_.items()}
            doc["n_divergent"] = int(gmm.n_divergent_)
    _write_atomic(path, lambda p: p.write_text(json.dumps(doc, indent=2)))


def _refuse_comments(path: str, encoding: str, sep: Optional[str]) -> None:
    """Refuse comment lines before the header (``# exported ...``), and
    Excel's separator line (``sep=;``): read as
    the header, they made the rows' fields seem wrong, and the messages
    blamed the separator, the decimal mark, a stray value or R's row
    names.  Refused where the file begins with several '#' lines, or with
    one whose fields do not match the next line's (a header written as
    ``#id,x,y``, or ``# x,y`` by ``numpy.savetxt(header=...)``, matches,
    and is read as the header)."""
    try:
        with open(path, encoding=encoding, errors="replace") as fh:
            raw = [fh.readline().lstrip("\ufeff") for _ in range(3)]
    except OSError:
        return
    lines = [line.strip() for line in raw]
    # Excel's separator line (its separator may be a tab, and the line
    # padded with the file's separator: sep=;;).
    excel = re.fullmatch(r'"?sep=([^\r\n])"?(?:\1|,)*', raw[0].rstrip("\r\n"))
    if excel:
        mark = _sep_name(excel[1])
        raise CLIError(f"{path!r} begins with Excel's separator line ({excel[0]!r}) before its "
                       f"header, which would be read as the header: remove that line (the "
                       f"separator {mark} is detected without it, or give --sep)")
    if not lines[0].startswith("#"):
        return
    count = 1
    while count < len(lines) and lines[count].startswith("#"):
        count += 1
    if count == 1:
        nxt = lines[1]
        if not nxt:
            return
        if sep is None or sep == _WHITESPACE:
            # The separator the next line uses most (whitespace if none).
            sep = max((",", ";", "\t", "|"), key=nxt.count)
            sep = sep if nxt.count(sep) else None
        fields = (lambda line: len(line.split(sep))) if sep else (lambda line: len(line.split()))
        if fields(lines[0]) == fields(nxt):
            return
    lines_said = "line" if count == 1 else "lines"
    raise CLIError(f"{path!r} begins with {'a ' if count == 1 else ''}comment {lines_said} "
                   f"before its header ({lines[0][:40]!r}), which would be read as the header: "
                   f"remove the {lines_said} before the header")


def _refuse_nul_bytes(path: str, encoding: str = "utf-8") -> None:
    # pandas reads NUL bytes into names and values without a word (a column
    # can vanish into its neighbour's name); text CSVs never hold them.
    with open(path, "rb") as f:
        head = f.read(4)
        wide = encoding.startswith(("utf-16", "utf-32"))    # NUL bytes in every character
        kinds = {b"\x1f\x8b": "a gzip-compressed file: decompress it first (gunzip)",
                 b"PK\x03\x04": ("a zip archive (.zip, .npz, .xlsx): extract the CSV, or save "
                                 "an array with np.save as .npy")}
        for magic, kind in kinds.items():
            if head.startswith(magic):
                raise CLIError(f"{path!r} is {kind}; bayesgmm reads CSV text or a .npy array")
        f.seek(0)
        while not wide and (chunk := f.read(1 << 20)):
            if b"\0" in chunk:
                raise CLIError(f"{path!r} contains NUL bytes: it is a binary file or UTF-16 "
                               f"text, not a CSV; for UTF-16 text pass --encoding utf-16, "
                               f"else re-save it as UTF-8 text")


def _sniff_separator(path: str, decimal: str, encoding: str = "utf-8",
                     thousands: Optional[str] = None) -> str:
    """The separator of the file's first lines: csv.Sniffer's choice among
    ``_SEPARATORS`` when the header holds it, else the first one the header
    holds; a header with none is whitespace-separated where it and the first
    lines split at runs of spaces into the same number (> 1) of fields, or
    every line into one more than the header (R's ``write.table``, row
    names without a header cell; a header of two names or more, and no
    ``thousands`` mark that is whitespace, which also splits a one-column
    file's numbers in two), else one column."""
    size = 1 << 16
    with open(path, "rb") as f:
        head = f.read(size)
    lines = head.decode("utf-8-sig" if encoding == "utf-8" else encoding,
                        errors="replace").splitlines()
    if len(head) == size and len(lines) > 1:
        lines = lines[:-1]  # cut by the read
    lines = [line for line in lines if line.strip()][:50]
    # For one column any separator the data does not hold will do.
    fallback = ";" if decimal == "," else ","
    if not lines:
        return fallback
    in_header = [c for c in _SEPARATORS if c in lines[0]]
    try:
        sniffed = csv.Sniffer().sniff("\n".join(lines), delimiters=_SEPARATORS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed in in_header:
        return sniffed
    if in_header:
        return in_header[0]
    fields = [len(line.split()) for line in lines]
    same = len(set(fields)) == 1 and fields[0] > 1
    # R's write.table: every row one field (its row name) longer than the
    # header, which the reading then names (:func:`_unnamed_first_column`).
    row_names = len(fields) > 1 and fields[0] > 1 and all(n == fields[0] + 1 for n in fields[1:]) \
        and not (thousands is not None and thousands.isspace())
    return _WHITESPACE if same or row_names else fallback


def _unnamed_first_column(path: str, sep: str, encoding: str,
                          lines: int = 200) -> Optional[list]:
    """The header's names when every data row among the file's first
    ``lines`` has exactly one field more than its header (an unnamed column
    of row names: R's ``write.table``, a frame's ``to_string``), else None;
    by the csv module's reading with ``sep`` (whitespace: split on runs of
    it)."""
    import csv
    import itertools
    try:
        with open(path, encoding=encoding, newline="") as fh:
            head = [ln for ln in itertools.islice(fh, lines + 1) if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    if sep == _WHITESPACE:      # ASCII spaces and tabs, as the reading splits
        rows = [next(csv.reader([" ".join(re.split(r"[ \t]+", ln.strip(" \t\r\n")))],
                                delimiter=" ")) for ln in head]
    else:
        rows = list(csv.reader(head, delimiter=sep))
    counts = [len(row) for row in rows]
    if len(counts) > 1 and all(c == counts[0] + 1 for c in counts[1:]):
        return [name.strip() for name in rows[0]]
    return None


def _csv_options(sep: str, decimal: str, thousands: Optional[str],
                 encoding: str = "utf-8") -> dict:
    """How pandas reads the file: as numbers where they are, and (with a
    separator other than whitespace) spaces after each separator skipped,
    so that a header "x, y" names its columns x and y."""
    options = dict(sep=sep, decimal=decimal, thousands=thousands, index_col=False,
                   skipinitialspace=sep != _WHITESPACE, encoding=encoding)
    if any(m is not None and not m.isascii() for m in (sep, decimal, thousands)):
        # pandas' C parser ignores a mark of more than one byte in UTF-8
        # (a no-break space between thousands, a separator such as ¦), and
        # warns before falling back for a separator: its Python parser reads
        # them.  Its whitespace is a regular expression, whose \s would also
        # split at a no-break space: ASCII spaces and tabs only, as the C
        # parser's.
        options["engine"] = "python"
        if sep == _WHITESPACE:
            options["sep"] = r"[ \t]+"
    return options


def _read_csv(path: str, sep: Optional[str], decimal: str, thousands: Optional[str] = None,
              encoding: str = "utf-8"):
    """The file as a DataFrame, and the separator it was read with."""
    import pandas as pd
    if thousands is not None and thousands == decimal:
        raise CLIError(f"--thousands {thousands!r} is also the decimal mark (--decimal "
                       f"{decimal!r}): every number would be misread; give two different "
                       f"marks, e.g. --decimal , --thousands . for 1.817,5")
    if path == "-" and not os.path.exists(path):
        raise CLIError("reading standard input ('-') is not supported (the file is read more "
                       "than once): give the path of a file, e.g. save the data to data.csv "
                       "and fit that")
    if not os.path.exists(path):
        raise CLIError(f"file not found: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a folder, not a CSV file")
    if not os.path.isfile(path):
        # A pipe (cat x.csv | bayesgmm fit /dev/stdin, or <(...)): the file
        # is read more than once (checks, the separator, the cells as text).
        raise CLIError(f"{path!r} is not a regular file (a pipe or device): bayesgmm reads "
                       f"the file more than once; save it to a file first and fit that")
    try:
        _refuse_nul_bytes(path, encoding)
        _refuse_comments(path, encoding, sep)
        if sep is None:
            sep = _sniff_separator(path, decimal, encoding, thousands)
        with warnings.catch_warnings():
            # Rows with one field more than the header: by default pandas takes
            # the first field as a row label and shifts every column; with
            # index_col=False it warns and drops the last field.  Both lose data.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(path, **_csv_options(sep, decimal, thousands, encoding))
    except pd.errors.ParserWarning:
        header = _unnamed_first_column(path, sep, encoding)
        # One name and two fields a row is a decimal comma as often: the
        # general message below names both options.
        if header is not None and len(header) > 1:
            named = (" " if sep == _WHITESPACE else sep).join(["id"] + header[:2]) + \
                ("..." if len(header) > 2 else "")
            raise CLIError(
                f"every row of {path!r} has one field more than its header (read with "
                f"separator {_sep_name(sep)}): its first column (row names or an index, as R's "
                f"write.table writes them) has no name in the header; give it one (e.g. a "
                f"header {named}), and it is left out of the fit as an identifier"
                + (" (if a comma is also the decimal mark, check --sep and --decimal instead)"
                   if sep == "," else "")) from None
        raise CLIError(f"the rows of {path!r} have more fields than its header (read with "
                       f"separator {_sep_name(sep)}); check the separator (--sep) and the "
                       f"decimal mark (--decimal)") from None
    except OSError as exc:
        raise CLIError(f"cannot read {path!r}: {_reason(exc)}") from None
    except UnicodeDecodeError as exc:
        if encoding.startswith("utf-8"):
            remedy = ("give its encoding, e.g. --encoding latin-1 (or cp1252), or re-save it "
                      "as UTF-8")
        else:
            remedy = "give the file's own encoding with --encoding"
        where = _undecodable(path, encoding)
        where = (f"{where[1]} at byte {where[0]} of the file" if where is not None
                 else exc.reason)
        raise CLIError(f"cannot read {path!r}: it is not {encoding} text ({where}); {remedy}"
                       ) from None
    except pd.errors.EmptyDataError:
        # pandas' "No columns to parse from file": nothing but blank lines.
        what = "empty (0 bytes)" if os.path.getsize(path) == 0 else "blank (no text but spaces " \
            "and line breaks)"
        raise CLIError(f"{path!r} is {what}: a CSV file needs a header row and data rows"
                       ) from None
    except pd.errors.ParserError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "fields" in msg:
            hint = (f" (read with separator {_sep_name(sep)}); check the separator (--sep) and the "
                    f"decimal mark (--decimal)")
        raise CLIError(f"cannot read {path!r} as CSV: {msg}{hint}") from None
    if df.shape[0] == 0:
        raise CLIError(f"{path!r} has a header but no data rows")
    # A separator at the end of every line (some spreadsheet exports) makes
    # an unnamed, empty last column: nothing to fit, dropped.
    phantom = [c for c in df.columns[1:] if re.fullmatch(r"Unnamed: \d+", str(c))
               and df[c].isna().all()]
    df = df.drop(columns=phantom)
    names = [str(c).strip() for c in df.columns]
    if all(re.fullmatch(_NUMBER, n) for n in names) and \
            any(re.search(r"[.,eE]", n) for n in names):
        raise CLIError(f"the first line of {path!r} holds numbers ({', '.join(names[:3])}"
                       f"{', ...' if len(names) > 3 else ''}), not column names: the file "
                       f"needs a header row (without one its first data row would be taken as "
                       f"the names); add one, e.g. {','.join(f'x{j}' for j in range(min(3, len(names))))}"
                       f"{',...' if len(names) > 3 else ''}")
    if all(re.fullmatch(r"[+-]?\d+", n) for n in names):
        # Whole numbers may be names (years, wavelengths) or a first data
        # row of a file without a header: said, not refused.
        print(f"bayesgmm: note: the first line of {path!r} holds whole numbers "
              f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}), read as the column "
              f"names; if the file has no header row, add one (else its first row is not "
              f"read as data)", file=sys.stderr)
    # pandas renames a repeated name ("x", "x.1") and would fit the copy as
    # another feature without a word.
    head = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                       **_csv_options(sep, decimal, thousands, encoding))
    given = [str(v).strip() for v in head.iloc[0]]
    twice = sorted({n for n in given if n and given.count(n) > 1})
    if twice:
        raise CLIError(f"the header of {path!r} names column(s) {twice} more than once: give "
                       f"every column its own name")
    return df, sep


# A number as written in any common format (decimal point or comma,
# thousands separators, an exponent).
_NUMBER = r"[+-]?(?=[\d.,]*\d)[\d.,]+([eE][+-]?\d+)?"
# Every comma a thousands separator: 1,817 or 12,345,678.5.
_THOUSANDS_COMMA = r"[+-]?\d{1,3}(,\d{3})+(\.\d*)?"
# Digit groups set apart by a space, a no-break space (French, Nordic
# exports) or an apostrophe (Swiss): 1 012,6, 1'012.6.
_GROUP_MARKS = {" ": ("spaces", "' '"), "\u00a0": ("no-break spaces", "$'\\u00a0'"),
                "\u202f": ("narrow no-break spaces", "$'\\u202f'"),
                "'": ("apostrophes", "\"'\""), "\u2019": ("apostrophes", "$'\\u2019'")}
# Strictly thousands: 1 to 3 digits, then groups of 3 (a phone number such
# as 555 1234 is not one), a decimal part after either mark.
_GROUP_CLASS = "[" + "".join(_GROUP_MARKS) + "]"
_GROUPED_NUMBER = "|".join(rf"[+-]?\d{{1,3}}({re.escape(m)}\d{{3}})+([.,]\d*)?([eE][+-]?\d+)?"
                           for m in _GROUP_MARKS)
# A number written with a currency symbol or a unit of measurement
# ($10.12, -$3, 10 \u20ac, 12.5%, 1.234 kg, 20\u00b0C, 3.5 mg/dL): only these
# units, so that codes, identifiers, addresses and dates written with
# letters (100A, 4th, 12 High St, 5 Jan, 9am) stay text.
_CURRENCY = "$\u20ac\u00a3\u00a5"
_MICRO = "u\u00b5\u03bc"
# Units written right after the number or after a space ...
_UNITS = (rf"%|\u2030|\u00b0[CF]?|[kmn{_MICRO}]g|mcg|lbs?|oz|[kcmn{_MICRO}]m|[kc]?m[2\u00b2]|"
          rf"km/h|m/s|mph|kph|ft|mi|[md{_MICRO}][lL]|ms|secs?|mins?|hrs?|hours?|days?|weeks?|"
          rf"months?|years?|yrs?|[kMG]Hz|[kM]Wh?|mV|mA|kJ|k?cal|[kMh]?Pa|bar|psi|mmHg|bpm|"
          rf"[KMGT]B|[mn{_MICRO}]?mol/[lL]|[m{_MICRO}]?g/d?[lL]|kg/m[2\u00b2]|USD|EUR|GBP|JPY|"
          rf"[{_CURRENCY}]")
# ... and one-letter units, taken only after a space (4g, 100m, 2m are
# more often names or codes than grams, metres or millions).
_SPACED_UNITS = "g|m|s|h|[lL]|in"
_UNIT_NUMBER = (rf"(?P<sign>[+\-\u2212]?)(?P<pre>[{_CURRENCY}]?)\s*(?P<sign2>[+\-\u2212]?)"
                r"(?P<num>(\d+([.,]\d+)?|[.,]\d+|\d{1,3}([,.' \u00a0]\d{3})+([.,]\d+)?)"
                r"([eE][+-]?\d+)?)"
                rf"(?:\s*(?P<post>{_UNITS})|\s+(?P<spaced>{_SPACED_UNITS}))?")


def _other_format_example(s, named: bool = True) -> Optional[str]:
    """A value of text column ``s`` when every value is a number as written
    in some format (so the column is numbers that the reading's decimal mark
    and thousands separator did not take), else None.  Digits in groups
    (1 012,6) count only in a column the user ``named``, or with a decimal
    part somewhere: identifiers are written so too (541 977 722, 2'528),
    and a text column of them is left out, not refused."""
    values = s.dropna().astype(str).str.strip()
    if values.empty or not (values.str.fullmatch(_NUMBER)
                            | values.str.fullmatch(_GROUPED_NUMBER)).all():
        return None
    grouped = values.str.contains(_GROUP_CLASS)
    if grouped.any():
        if not (named or values.str.contains(r"\d[.,]\d*$").any()):
            return None
        return values[grouped].iloc[0]
    marked = values.str.contains(r"[.,]")
    return values[marked].iloc[0] if marked.any() else values.iloc[0]


def _unit_example(s) -> Optional[tuple[str, str]]:
    """(a value, its unit) of text column ``s`` when every value is a
    number written with one currency symbol or one unit of measurement
    (``$10.12``, ``10 \u20ac``, ``12.5%``, ``1.234 kg``, ``20\u00b0C``; a plural
    counts as its singular, ``1 day``, ``2 days``), at least two of them
    marked and the rest plain numbers; else None.  Letters that are not
    such units (``100A``, ``4th``, ``12 High St``, ``5 Jan``) are text."""
    values = s.dropna().astype(str).str.strip()
    if values.size < 2:
        return None
    parts = values.str.extract("^" + _UNIT_NUMBER + "$")
    if parts["num"].isna().any():
        return None
    pre = parts["pre"].fillna("")
    post = parts["post"].fillna("") + parts["spaced"].fillna("")
    if ((pre != "") & (post != "")).any():
        return None
    units = (pre + post).str.replace(r"(?<=[a-z]{2})s$", "", regex=True)
    marked = units != ""
    if marked.sum() < 2 or units[marked].nunique() != 1:
        return None
    return values[marked].iloc[0], (pre + post)[marked].iloc[0]


def _decimal_comma_example(s) -> Optional[str]:
    """A value of text column ``s`` when every value reads as a number with a
    decimal comma (some with the comma), else None."""
    values = s.dropna().astype(str).str.strip()
    if values.empty:
        return None
    number = values.str.fullmatch(r"[+-]?(\d+,\d*|,\d+|\d+)([eE][+-]?\d+)?")
    comma = values.str.contains(",", regex=False)
    if not (number.all() and comma.any()):
        return None
    return values[comma].iloc[0]


def _first_text(s, decimal: str) -> Optional[tuple[int, str, bool]]:
    """The first value of text column ``s`` that does not read as a number:
    (its position, the value, whether most of the column's values do read
    as numbers, i.e. a number column with stray text such as '?' or 'n/a'),
    or None when every value reads as a number."""
    import pandas as pd
    values = s.dropna().astype(str).str.strip()
    if values.empty:
        return None
    numbers = values.str.replace(",", ".", regex=False) if decimal == "," else values
    parsed = pd.to_numeric(numbers, errors="coerce")
    text = parsed.isna().to_numpy()
    if not text.any():
        return None
    i = int(np.flatnonzero(text)[0])
    return s.index.get_loc(values.index[i]), values.iloc[i], bool(text.mean() < 0.5)


def _stray_text_error(path, name, found, predicting: bool) -> "CLIError":
    """The error for a column of numbers holding a stray text value."""
    row, value, _ = found
    remedy = ("" if predicting else
              ", or leave the column out with --columns")
    if row == 0 and name.lstrip().startswith("#"):
        # A comment line with as many fields as the rows, read as the
        # header: the real header is the first data row.
        return CLIError(f"the first line of {path!r} looks like a comment ({name!r}), read as "
                        f"the header, and the next one like the header (its {value!r} is "
                        f"not a number): remove the comment line")
    return CLIError(f"column {name!r} of {path!r} holds numbers but also {value!r} (data row "
                    f"{row + 1}), so it cannot be read as numbers: correct that cell, or empty "
                    f"it (empty cells are missing values: --missing marginalize or "
                    f"--dropna){remedy}")


def _not_in_file_hint(df, sep: str) -> str:
    """A hint that the separator was wrong: the file was read as one column
    whose header holds another separator (a file of one column has none)."""
    if df.shape[1] != 1:
        return ""
    header = str(df.columns[0])
    others = [c for c in _SEPARATORS if c != sep and c in header]
    if others:
        held, option = repr(others[0]), "tab" if others[0] == "\t" else repr(others[0])
    elif sep != _WHITESPACE and len(header.split()) > 1:
        held, option = "spaces between names", "space"
    else:
        return ""
    return (f" (the file was read as one column with separator {_sep_name(sep)}, but its "
            f"header holds {held}: give its separator with --sep {option})")


def _unicode_form_hint(missing: Sequence[str], columns) -> str:
    """A hint where a name asked for and one in the file look the same but
    differ in their Unicode form (NFC 'größe' against NFD 'größe', as macOS
    tools may write it)."""
    import unicodedata
    nfc = lambda name: unicodedata.normalize("NFC", str(name))
    found = {nfc(c): str(c) for c in columns}
    pairs = [(m, found[nfc(m)]) for m in missing if nfc(m) in found]
    if not pairs:
        return ""
    m, c = pairs[0]
    return (f" ({m!r} and the file's {c!r} differ only in how their accented letters are "
            f"encoded (Unicode normal forms {_form(m)} and {_form(c)}): re-save the file's "
            f"header in form {_form(m)}, as the names asked for)")


def _form(name: str) -> str:
    import unicodedata
    return "NFC" if unicodedata.is_normalized("NFC", name) else \
        "NFD" if unicodedata.is_normalized("NFD", name) else "mixed"


def _integers(column) -> bool:
    """Whether a numeric column of two or more rows holds an integer in
    every row."""
    import pandas as pd
    if column.size < 2 or column.isna().any():
        return False
    if pd.api.types.is_integer_dtype(column):
        return True
    try:
        v = column.to_numpy(dtype=np.float64)
    except OverflowError:       # Python ints past float64's range (10**400) among them
        return all(isinstance(x, (int, np.integer)) or float(x).is_integer()
                   for x in column.tolist())
    return bool(np.isfinite(v).all() and (v == np.round(v)).all())


def _distinct_integers(column) -> bool:
    """Whether a numeric column holds distinct integers in every row (a row
    index or identifiers, not a measurement); integer columns compared as
    integers (ids beyond 2**53 collide as floats)."""
    return _integers(column) and bool(column.is_unique)


def _written_index(column) -> bool:
    """Whether a numeric column reads as the row index ``to_csv`` writes:
    distinct integers (0..n-1, or any order after filtering or shuffling),
    or integers in a few increasing runs (after ``pd.concat``: one run per
    frame, at most max(2, n / 50) of them; a count 0, 1, 2, 0, 1, 2, ... is
    not one)."""
    if not _integers(column):
        return False
    if column.is_unique:
        return True
    runs = 1 + int(np.sum(np.diff(column.to_numpy(dtype=np.float64)) <= 0))
    return runs <= max(2, column.size // 50)


def _select_columns(df, args, sep: str, allow_nan: bool = False) -> list:
    """The columns to fit (``--columns`` or every numeric one but the
    ``--weights`` column), checked here so that errors name the CLI's
    options, not the library's: each named once, present, numbers (decimal
    commas named as such) and finite (NaN too unless ``allow_nan``)."""
    import pandas as pd
    path = args.file
    weights = getattr(args, "weights", None)
    if weights is not None and weights not in df.columns:
        raise CLIError(f"--weights column {weights!r} not in {path!r}; available: "
                       f"{list(map(str, df.columns))}{_not_in_file_hint(df, sep)}")
    numeric = [str(c) for c in df.columns if is_number_column(df[c]) and c != weights]
    only_labels = None
    if args.columns:
        twice = sorted({c for c in args.columns if args.columns.count(c) > 1})
        if twice:
            raise CLIError(f"--columns names {twice} more than once: give each column once")
        missing = [c for c in args.columns if c not in df.columns]
        if missing:
            raise CLIError(f"column(s) {missing} not in {path!r}; available: "
                           f"{list(map(str, df.columns))}{_not_in_file_hint(df, sep)}"
                           f"{_unicode_form_hint(missing, df.columns)}")
        if weights in args.columns:
            raise CLIError(f"--weights column {weights!r} is also named in --columns: the "
                           f"weights are not a feature; leave it out of --columns")
        columns = list(args.columns)
        candidates = columns + ([weights] if weights is not None else [])
    else:
        # A numeric column named like a label (scikit-learn's datasets call
        # it "target") is an answer, not a feature: clustering on it would
        # put the answer into the clusters.  Left out, and said.  The
        # --weights column is left out silently: the user named it.
        labels = [c for c in numeric if c.strip().lower() in _LABEL_NAMES]
        # A row index written by DataFrame.to_csv (an unnamed first column of
        # integers: 0..n-1, any order after filtering or shuffling, repeated
        # after pd.concat), identifiers (distinct integers in a column named id,
        # index or *_id) and the columns a previous fit wrote (cluster,
        # p_cluster_k) are not features either: fitted, they drive the
        # clusters by row order, by numbering or by an earlier answer (a
        # shuffled iris index took the ARI against the species from 0.90 to
        # 0.53).
        first = str(df.columns[0])
        index = [c for c in numeric if (
            (c == first and re.fullmatch(r"Unnamed: 0|\s*", c) and _written_index(df[c]))
            or (re.fullmatch(r"(?i)\s*(id|index|.*[_ ]id)\s*", c) and _distinct_integers(df[c])))]
        earlier = [c for c in numeric if re.fullmatch(r"(p_)?cluster(_\d+)*", c.strip())]
        # A True/False column (pandas reads it as bool) is a flag, not a
        # measurement: as 0/1 under a Gaussian, each cluster's flag variance
        # collapses to the prior's floor and the flag alone drives the split.
        flags = [c for c in numeric if pd.api.types.is_bool_dtype(df[c])]
        # A column with no value at all (e.g. an empty "notes") reads as
        # numbers (all NaN): nothing to fit, and it would refuse every row.
        empty = [c for c in numeric if df[c].isna().all()]
        # A column of one value carries nothing to cluster on, and fitted its
        # variance collapses to the prior's floor: the scores are its.
        constant = [c for c in numeric if c not in empty and c not in flags
                    and df.shape[0] > 1 and df[c].min() == df[c].max()]
        labels = [c for c in numeric if c in labels or c in index or c in earlier or c in flags
                  or c in empty or c in constant]
        columns = [c for c in numeric if c not in labels]
        kinds = ", ".join(k for k, v in (
            ("labels", set(labels) - set(index) - set(earlier) - set(flags) - set(empty)
             - set(constant)),
            ("a row index or identifiers", index), ("an earlier fit's output", earlier),
            ("true/false flags", flags), ("empty columns", empty),
            ("constant columns", constant)) if v)
        if labels and columns:
            # An empty column has nothing to fit (--columns refuses it).
            use = ("" if set(labels) <= set(empty) else
                   "; name them with --columns to use them" + (
                       " (not the empty ones, which have no value)" if empty else ""))
            print(f"bayesgmm: note: left out column(s) {labels} of {path!r}, which look like "
                  f"{kinds}{use}", file=sys.stderr)
        elif labels:
            # Said below, when no other reading of the file explains it (a
            # decimal comma makes every measurement text, leaving the labels).
            only_labels = (f"the only numeric column(s) of {path!r}, {labels}, look like "
                           f"{kinds}, not features: name the columns to fit with --columns")
        candidates = [str(c) for c in df.columns]
    if args.decimal != ",":
        commas = {c: e for c in candidates if not is_number_column(df[c])
                  and (e := _decimal_comma_example(df[c])) is not None}
        if commas:
            name, example = next(iter(commas.items()))
            rest = "" if args.columns else " (or leave them out with --columns)"
            values = df[name].dropna().astype(str).str.strip()
            commas_only = values[values.str.contains(",", regex=False)]
            if commas_only.str.fullmatch(_THOUSANDS_COMMA).all():
                # 1,817 reads either way: say both, not the one that may be wrong.
                raise CLIError(
                    f"column(s) {list(commas)} of {path!r} hold numbers with commas ({name}: "
                    f"{example!r}): add --decimal , if the comma is the decimal mark (1,5 = "
                    f"1.5), or --thousands , if it separates thousands (1,817 = 1817){rest}")
            raise CLIError(f"column(s) {list(commas)} of {path!r} hold numbers with decimal "
                           f"commas ({name}: {example!r}): add --decimal ,{rest}")
    # Numbers in another format than the reading's (dot decimals under
    # --decimal ,; thousands separators) read as text: left out by the
    # default rule, the column would silently be missing from the fit.
    formats = {c: e for c in (columns if args.columns else candidates)
               if c != weights and not is_number_column(df[c])
               and (e := _other_format_example(df[c], bool(args.columns))) is not None}
    if not formats and not columns:
        # Nothing else to fit: grouped whole numbers are the likely reason.
        formats = {c: e for c in candidates if c != weights and not is_number_column(df[c])
                   and (e := _other_format_example(df[c])) is not None}
    if formats:
        name, example = next(iter(formats.items()))
        read = f"decimal mark {args.decimal or '.'!r}" + (
            f" and thousands separator {args.thousands!r}" if getattr(args, "thousands", None)
            else " and no thousands separator")
        rest = "" if args.columns else "; or leave them out with --columns"
        mark = next((m for m in _GROUP_MARKS if m in example), None)
        if mark is not None:
            said, option = _GROUP_MARKS[mark]
            raise CLIError(f"column(s) {list(formats)} of {path!r} hold numbers whose digits are "
                           f"grouped with {said} ({name}: {example!r}), which do not read with "
                           f"{read}: add --thousands {option}" + (
                               " (and --decimal , if the comma is the decimal mark)"
                               if "," in example and (args.decimal or ".") != "," else "")
                           + rest)
        raise CLIError(f"column(s) {list(formats)} of {path!r} hold numbers that do not read "
                       f"with {read} ({name}: {example!r}): give the file's format with "
                       f"--decimal and --thousands (--decimal , for 1,5; --thousands , for "
                       f"1,817; --decimal , --thousands . for 1.817,5){rest}")
    # Numbers written with a unit or currency symbol (12.5%, 1.2 kg, $10)
    # read as text: left out by the default rule, the column would
    # silently be missing from the fit.
    units = {c: e for c in (columns if args.columns else candidates)
             if c != weights and not is_number_column(df[c])
             and (e := _unit_example(df[c])) is not None}
    if units:
        name, (example, unit) = next(iter(units.items()))
        rest = "" if args.columns else "; or leave them out with --columns"
        raise CLIError(f"column(s) {list(units)} of {path!r} hold numbers written with a unit "
                       f"or symbol ({name}: {example!r}), which do not read as numbers: remove "
                       f"{unit!r} from the values (the model takes plain numbers){rest}")
    # A column of numbers with a stray text value (e.g. '?') reads as text:
    # left out by the default rule, it would silently be missing from the
    # fit.  Refused, naming the cell, whether named or by default.
    predicting = hasattr(args, "model")
    decimal = args.decimal or "."
    for c in (columns if args.columns else candidates):
        if c == weights or is_number_column(df[c]):
            continue
        found = _first_text(df[c], decimal)
        if found is not None and found[2]:
            raise _stray_text_error(path, str(c), found, predicting)
    bad = [c for c in columns if not is_number_column(df[c])]
    if bad:
        found = _first_text(df[bad[0]], decimal)
        example = f" ({bad[0]}: {found[1]!r})" if found is not None else ""
        remedy = ("the model was fitted on these columns: they must hold numbers" if predicting
                  else f"choose numeric columns with --columns (numeric here: {numeric})")
        raise CLIError(f"non-numeric column(s) {bad} in {path!r}{example}: {remedy}")
    if not columns:
        if only_labels is not None:
            raise CLIError(only_labels)
        besides = " besides the --weights column" if weights is not None else ""
        hint = _not_in_file_hint(df, sep)
        if hint:
            raise CLIError(f"{path!r} has no numeric columns{besides}{hint}")
        # Naming columns cannot help: none reads as numbers.  The columns and
        # a value show what was read, and the reading is what to check.
        text = [str(c) for c in df.columns if c != weights]
        value = next((f" ({c}: {v!r})" for c in text for v in df[c].dropna().astype(str)[:1]),
                     "")
        held = f": its {_columns_named(text)} hold text{value}" if text else ""
        raise CLIError(f"{path!r} has no numeric columns{besides}{held}; check that it was read "
                       f"right: the separator (--sep; read with {_sep_name(sep)}) and the "
                       f"decimal mark (--decimal)")
    if not predicting:
        # Named in --columns (the default rule leaves such columns out):
        # no remedy for missing values can fit a column with no value.
        empty = [c for c in columns if df[c].isna().all()]
        if empty:
            raise CLIError(f"column(s) {empty} of {path!r} have no value in any row: leave "
                           f"them out of --columns")
    try:
        # A value past float64's range: in the model's units for predict.
        rescale = ("rescale the column (e.g. divide it by a power of ten) or leave it out of "
                   "--columns" if getattr(args, "command", "fit") != "predict" else
                   "the model takes the column in the units it was fitted on")
        values = df[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    except OverflowError:            # an integer past float64's range (10**400)
        from ._validation import big_int_text, first_overflow
        (i, j), v = first_overflow(df[columns].to_numpy(dtype=object))
        raise CLIError(f"column {str(columns[j])!r} of {path!r} holds {big_int_text(v)} in data "
                       f"row {i + 1}, beyond float64's range: {rescale}") from None
    finite = np.isfinite(values) | (np.isnan(values) if allow_nan else False)
    if not finite.all():
        j = int(np.flatnonzero(~finite.all(axis=0))[0])
        i = int(np.flatnonzero(~finite[:, j])[0])
        if np.isnan(values[i, j]):
            raise CLIError(f"{path!r} contains NaN in column {columns[j]!r}, data row "
                           f"{i + 1}: pass --missing marginalize to use such rows' other "
                           f"columns, or --dropna to leave them out (or fill in the values)")
        # By position: the text's column of an empty header cell is named "".
        text = str(_input_text(path, sep, args.decimal or ".", df, args.encoding or "utf-8")
                   .iloc[i, list(df.columns).index(columns[j])]).strip()
        if not re.fullmatch(r"[+-]?(inf|infinity)", text, flags=re.IGNORECASE) and \
                re.search(r"\d", text):     # a number past float64's range, read as inf
            raise CLIError(f"column {str(columns[j])!r} of {path!r} holds {text[:40]} in data "
                           f"row {i + 1}, beyond float64's range (~1.8e308): {rescale}")
        raise CLIError(f"{path!r} contains inf in column {columns[j]!r}, data row "
                       f"{i + 1}: remove such rows or replace the value")
    return columns


def _data_rows(index: np.ndarray) -> str:
    """Rows named as the messages do (1-based data rows, header not counted),
    the first five of them."""
    rows = [int(i) + 1 for i in index[:5]]
    return f"{rows}{'...' if len(index) > 5 else ''}"


def _read_weights(df, args) -> Optional[np.ndarray]:
    """The ``--weights`` column as float64 (NaN where empty), or None; its
    values are checked by :func:`_check_weights` on the rows used."""
    name = args.weights
    if name is None:
        return None
    s = df[name]
    if not is_number_column(s):
        found = _first_text(s, args.decimal or ".")
        example = f" ({found[1]!r}, data row {found[0] + 1})" if found is not None else ""
        hint = " (add --decimal , for decimal commas)" if (
            args.decimal != "," and _decimal_comma_example(s) is not None) else ""
        raise CLIError(f"--weights column {name!r} of {args.file!r} is not numeric{example}: "
                       f"it needs one number >= 0 per row{hint}")
    try:
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    except OverflowError:            # an integer past float64's range (10**400)
        from ._validation import big_int_text, first_overflow
        i, v = first_overflow(s.to_numpy(dtype=object))
        raise CLIError(f"--weights column {name!r} of {args.file!r} holds "
                       f"{big_int_text(v)} in data row {i[0] + 1}, beyond float64's range: "
                       f"weights count how often a row was seen, finite numbers >= 0") from None


def _check_weights(weight: np.ndarray, keep: np.ndarray, args) -> np.ndarray:
    """The weights of the rows used, checked so that the error names the
    column and the data row: finite, >= 0, not all 0 (the library's own
    checks, in the CLI's words).  Empty ones are refused (or their rows
    left out by ``--dropna``) in :func:`_rows_to_use`."""
    name, path = args.weights, args.file
    w = weight[keep]
    bad = np.isinf(weight) | (weight < 0)
    bad &= keep
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = "inf" if np.isinf(weight[i]) and weight[i] > 0 else f"{weight[i]:g}"
        raise CLIError(f"--weights column {name!r} of {path!r} holds {value} in data row "
                       f"{i + 1}: weights count how often a row was seen, finite numbers >= 0 "
                       f"(0 leaves the row out of the fit)")
    if not (w > 0).any():
        rows = "every row" if keep.all() else "every row used"
        raise CLIError(f"--weights column {name!r} of {path!r} is 0 in {rows}: at least one "
                       f"row needs a positive weight")
    return w


def _added_names(df, n_components: int) -> list:
    """Names for the cluster and probability columns that none of the input's
    columns already has: one suffix for all, so they stay recognisable."""
    taken = {str(c) for c in df.columns}
    # Ends when a suffix is free: each input column takes at most one suffix.
    for n in itertools.count():
        suffix = f"_{n}" if n else ""
        names = [f"cluster{suffix}"] + [f"p_cluster_{k}{suffix}" for k in range(n_components)]
        if taken.isdisjoint(names):
            return names


def _rows_to_use(df, columns: Sequence[str], args, marginalize: bool,
                 weight: Optional[np.ndarray] = None) -> np.ndarray:
    """Mask of the rows to fit or assign.  A row is unusable when it has a
    missing value in ``columns`` (with ``marginalize``: when every one of
    them is missing, as nothing is left to assign it by) or an empty
    ``--weights`` value; ``--dropna`` leaves such rows out (said on stderr),
    otherwise they are refused.  (Without ``marginalize`` and ``--dropna``,
    :func:`_select_columns` has refused missing features already.)"""
    path = args.file
    nan = df[list(columns)].isna().to_numpy()
    unusable = nan.all(axis=1) if marginalize else nan.any(axis=1)
    no_weight = np.isnan(weight) if weight is not None else np.zeros(len(df), dtype=bool)
    if not args.dropna:
        if unusable.any():
            rows = np.flatnonzero(unusable)
            raise CLIError(f"{path!r} has {len(rows)} row(s) with every chosen column empty "
                           f"(data row(s) {_data_rows(rows)}): there is nothing to assign them "
                           f"by; remove them or pass --dropna to leave them out")
        if no_weight.any():
            rows = np.flatnonzero(no_weight)
            raise CLIError(f"--weights column {args.weights!r} of {path!r} is empty in "
                           f"{len(rows)} row(s) (data row(s) {_data_rows(rows)}): give every "
                           f"row a weight, or pass --dropna to leave such rows out")
    keep = ~(unusable | no_weight)
    if not keep.all():
        if not keep.any():
            what = (f"all of {list(columns)} empty" if marginalize
                    else f"a missing value in {list(columns)}")
            weights = " or an empty --weights value" if no_weight.any() else ""
            raise CLIError(f"every row of {path!r} has {what}{weights}: nothing is left to fit")
        reason = "every chosen column empty" if marginalize else "missing values"
        if no_weight.any():
            reason += " or an empty --weights value"
        print(f"bayesgmm: note: --dropna left out {int((~keep).sum())} of {len(keep)} rows with "
              f"{reason}", file=sys.stderr)
    return keep


def _check_observed(df, columns: Sequence[str], rows: np.ndarray, path: str) -> None:
    """With missing values marginalised, every column needs a value in the
    rows fitted (``rows``: a mask; a feature never seen cannot be modelled);
    named here, as the library can only give its index."""
    seen = df[list(columns)].notna().to_numpy()[rows].any(axis=0)
    never = [c for c, s in zip(columns, seen) if not s]
    if never:
        raise CLIError(f"column(s) {never} of {path!r} have no value in the rows fitted: "
                       f"leave them out with --columns")


def _write_assignments(df, model, columns, keep, sep: str, args, path: Path) -> None:
    """The input rows with the MAP cluster and each cluster's probability
    (empty for rows left out; NaN where the output is space-separated), under names that none of the input's
    columns has, written as the input was (separator, decimal mark).  The
    input's cells are copied as the file has them (read as text: codes
    with leading zeros, 'NA' country codes and long identifiers come back
    unchanged, not as numbers or empty cells)."""
    import pandas as pd
    X = df.loc[keep, list(columns)]
    K = len(model.weights_)
    names = _added_names(df, K)
    result = _input_text(args.file, sep, args.decimal, df, args.encoding)
    labels = pd.array(np.full(len(df), pd.NA), dtype="Int64")
    labels[keep] = model.predict(X)
    proba = np.full((len(df), K), np.nan)
    proba[keep] = model.predict_proba(X)
    # The added columns in one frame, joined once: a column at a time
    # fragments the frame (pandas warns from about 100 columns, -k 110).
    added = pd.DataFrame(proba, columns=names[1:], index=result.index)
    added.insert(0, names[0], labels)
    result = pd.concat([result, added], axis=1)
    if getattr(args, "impute", False):
        _fill_cells(df, model, columns, result, args, keep)
    out_sep = " " if sep == _WHITESPACE else sep       # one space reads back as whitespace
    # An empty cell (a row left unassigned) cannot be written between single
    # spaces: NaN, as such tables write a missing value.
    _write_atomic(path, lambda p: result.to_csv(p, index=False, sep=out_sep,
                                                encoding=args.encoding,
                                                decimal=args.decimal,
                                                na_rep="NaN" if out_sep == " " else ""))
    if names[0] != "cluster":
        clash = [c for c in ["cluster"] + [f"p_cluster_{k}" for k in range(K)]
                 if c in {str(c) for c in df.columns}]
        print(f"bayesgmm: note: {args.file!r} already has column(s) {clash}; "
              f"assignments.csv names the added columns {', '.join(names)}", file=sys.stderr)


def _fill_cells(df, model, columns, result, args, keep) -> None:
    """``--impute``: the empty cells of the chosen columns, in the rows
    assigned (``keep``: not left out by --dropna) with an observed one among
    them, written into ``result`` (the file's text) as the model's
    conditional means, in the file's decimal mark."""
    X = df[list(columns)].astype(np.float64)
    miss = X.isna().to_numpy()
    kept = np.zeros(len(df), dtype=bool)
    kept[keep] = True
    rows = miss.any(1) & ~miss.all(1) & kept
    if not rows.any():
        left = " of the rows assigned (--dropna left out those with one)" \
            if (miss.any(1) & ~kept).any() else ""
        print(f"bayesgmm: note: --impute found no empty cell to fill in the chosen "
              f"columns{left}", file=sys.stderr)
        return
    filled = np.asarray(model.impute(X[rows]), dtype=np.float64)
    header = list(result.columns)
    for j, col in enumerate(columns):
        m = miss[rows, j]
        if not m.any():
            continue
        text = filled[m, j].astype(str)          # the shortest text that reads back exactly
        if args.decimal != ".":
            text = np.char.replace(text, ".", args.decimal)
        text = text.astype(object)
        target = header[df.columns.get_loc(col)]
        result.loc[result.index[np.flatnonzero(rows)[m]], target] = text
    print(f"bayesgmm: note: --impute filled {int(miss[rows].sum())} empty cell(s) in "
          f"{int(rows.sum())} row(s) of assignments.csv with their expected values given the "
          f"row's other columns", file=sys.stderr)


def _input_text(path: str, sep: str, decimal: str, df, encoding: str = "utf-8"):
    """The cells of the CSV file ``path`` as text, for the rows and columns
    of its reading ``df``, under the header's own names (pandas calls an
    empty one 'Unnamed: 0'; it stays empty); ``df`` itself should the two
    readings not line up."""
    import pandas as pd
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False,
                          **_csv_options(sep, decimal, None, encoding))
        head = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False,
                           na_filter=False, **_csv_options(sep, decimal, None, encoding)).iloc[0]
    except (OSError, ValueError, pd.errors.ParserError, IndexError):
        return df.copy()
    columns = list(df.columns)
    if raw.shape[0] != df.shape[0] or not set(columns) <= set(raw.columns):
        return df.copy()
    blank = {name for name, cell in zip(raw.columns, head)
             if re.fullmatch(r"Unnamed: \d+", str(name)) and not str(cell).strip()}
    raw = raw[columns]
    raw.index = df.index
    return raw.rename(columns={name: "" for name in blank})


def _check_model_path(path: str, data: Optional[str] = None, outputs: Sequence = ()) -> None:
    """Refuse a ``--save`` target that cannot be written, that is the input
    file ``data`` or one of this run's ``outputs``, before fitting (after
    ``--out`` is created: the model may go in it).  As ``save`` does, a
    symlink is followed to its file; the target must be a regular file (or
    new), and its folder writable (a save writes a new file there and
    renames it over the target); a file that does not exist yet is created
    and removed again, so that a name the system refuses (too long, a
    read-only place) is said now, not after the fit."""
    if os.path.isdir(path) or path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        # A name ending in a separator is a folder too, existing or not
        # (realpath below would drop the separator).
        raise CLIError(f"--save {path!r} is a folder: give a file name, e.g. "
                       f"{os.path.join(path, 'model.bgmm')!r}")
    target = os.path.realpath(path)
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise CLIError(f"cannot save the model to {path!r}: the folder {folder!r} does not "
                       f"exist; create it or choose another --save")
    _refuse_input_as_output(data, path, "--save")
    for name in outputs:
        if os.path.realpath(name) == target:
            raise CLIError(f"--save {path!r} is also this run's output {str(name)!r}, which "
                           f"the model would replace: choose another --save, e.g. model.bgmm")
    exists = os.path.lexists(target)
    if exists and not os.path.isfile(target):
        raise CLIError(f"cannot save the model to {path!r}: it is not a regular file (a "
                       f"device, pipe or socket); choose another --save")
    try:
        if exists:
            if not os.access(target, os.W_OK):
                raise PermissionError(13, "Permission denied")
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            os.unlink(target)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".bayesgmm-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise CLIError(f"cannot save the model to {path!r}: {_reason(exc)} (in the folder "
                       f"{folder!r}); choose another --save") from None


def _refuse_input_as_output(data: Optional[str], target, option: str) -> None:
    """Refuse writing ``target`` (an output of ``option``) where it is the
    input file ``data``."""
    same = False
    with contextlib.suppress(OSError):
        same = data is not None and os.path.exists(target) and os.path.samefile(data, target)
    if same:
        raise CLIError(f"{option} would overwrite the input file {data!r} (as {str(target)!r}), "
                       f"destroying the data: choose another {option}")


def _fit(args) -> int:
    if _is_npy(args.file):
        return _fit_npy(args)
    if args.distributed:
        raise CLIError(f"--distributed needs .npy input (each process reads its own rows of "
                       f"the array), and {args.file!r} is read as CSV: save the data with "
                       f"np.save('data.npy', x) and fit that")
    args.decimal = args.decimal or "."
    args.encoding = _file_encoding(args.file, args.encoding)
    df, sep = _read_csv(args.file, args.sep, args.decimal, args.thousands, args.encoding)
    marginalize = args.missing == "marginalize"
    columns = _select_columns(df, args, sep, allow_nan=marginalize or args.dropna)
    weight = _read_weights(df, args)
    keep = _rows_to_use(df, columns, args, marginalize, weight)
    w = None if weight is None else _check_weights(weight, keep, args)
    if marginalize:
        fitted = keep.copy()
        if w is not None:
            fitted[keep] = w > 0   # weight 0: left out of the fit
        _check_observed(df, columns, fitted, args.file)
    for name in _FIT_FILES:
        _refuse_input_as_output(args.file, Path(args.out) / name, "--out")
    out = _prepare_out(args.out, _FIT_FILES)
    if args.save:
        _check_model_path(args.save, args.file, [out / name for name in _FIT_FILES])
    # Every kept row is predicted below, weight 0 included: such rows are
    # left out of the fit only.
    gmm = _fit_estimator(args, df.loc[keep, columns], sample_weight=w)
    _note_at_cap(gmm, args)
    # The model first: it is what a refit would cost (a failed write of the
    # outputs then still leaves it saved, and a failed save leaves --out as
    # it was rather than holding this fit's outputs beside the old model).
    _save_model(gmm, args)
    try:
        _write_assignments(df, gmm, columns, keep, sep, args, out / "assignments.csv")
        _write_params(gmm, columns, out / "params.json")
    except CLIError as exc:
        if args.save:
            raise CLIError(f"{exc} (the model was saved to {args.save!r}: 'bayesgmm predict "
                           f"{args.save} FILE' writes the assignments without refitting)"
                           ) from None
        raise
    _note_stale(out, "assignments.csv", args)
    extra = []
    if w is not None:
        extra.append(f"total weight {w.sum():g}")
    if marginalize:
        extra.append(f"{int(df.loc[keep, columns].isna().any(axis=1).sum())} rows with "
                     f"missing values marginalised")
    extra = f" ({', '.join(extra)})" if extra else ""
    print(f"fitted {_chosen(gmm, args)} ({gmm.covariance_type_} covariances) on "
          f"{int(keep.sum())} rows x {_columns_named(columns)}{extra}; "
          f"loss {_figure(gmm.loss_)}, converged {gmm.converged_}{_posterior_summary(gmm)}")
    _print_tables(gmm, columns)
    saved = f" and the model to {args.save}" if args.save else ""
    print(f"wrote {out / 'params.json'} and {out / 'assignments.csv'}{saved}")
    return 0


def _predict(args) -> int:
    from .mixture import BayesianGMM
    if os.path.isdir(args.model):
        raise CLIError(f"model {args.model!r} is a folder, not a model file (make one with "
                       f"'bayesgmm fit FILE.csv --save MODEL')")
    if os.path.exists(args.model) and not os.path.isfile(args.model):
        raise CLIError(f"model {args.model!r} is not a regular file (a device, pipe or socket): "
                       f"give a model file (make one with 'bayesgmm fit FILE.csv --save MODEL')")
    try:
        os.stat(args.model)
    except FileNotFoundError:
        raise CLIError(f"model file not found: {args.model!r} (make one with "
                       f"'bayesgmm fit FILE.csv --save MODEL')") from None
    except OSError as exc:      # a folder on the way that cannot be entered, a symlink loop
        raise CLIError(f"cannot read the model {args.model!r}: {_reason(exc)}") from None
    # A clear ValueError for anything else (and for a bad --device).
    try:
        model = BayesianGMM.load(args.model, device=args.device)
    except OSError as exc:       # unreadable (permissions), or gone since the checks above
        raise CLIError(f"cannot read the model {args.model!r}: {_reason(exc)}") from None
    except ValueError:
        _refuse_swapped(args)
        raise
    if args.missing is not None:
        model.missing = args.missing   # checked by the model when it predicts
    if _is_npy(args.file):
        return _predict_npy(args, model)
    columns = [str(c) for c in getattr(model, "feature_names_in_", [])]
    if not columns:
        raise CLIError(f"{args.model!r} was fitted without column names (on an array, e.g. "
                       f"by 'bayesgmm fit FILE.npy'): give 'bayesgmm predict' a .npy array of "
                       f"its {model.n_features_in_} feature(s) instead of a CSV file")
    marginalize = getattr(model, "missing", "error") == "marginalize"
    args.decimal = args.decimal or "."
    args.encoding = _file_encoding(args.file, args.encoding)
    df, sep = _read_csv(args.file, args.sep, args.decimal, args.thousands, args.encoding)
    args.columns = columns
    _select_columns(df, args, sep, allow_nan=marginalize or args.dropna)
    keep = _rows_to_use(df, columns, args, marginalize)
    for source in (args.file, args.model):
        _refuse_input_as_output(source, Path(args.out) / "assignments.csv", "--out")
    out = _prepare_out(args.out, ("assignments.csv",))
    _write_assignments(df, model, columns, keep, sep, args, out / "assignments.csv")
    _note_stale(out, "assignments.csv", args)
    print(f"assigned {int(keep.sum())} rows of {args.file!r} with the K={len(model.weights_)} "
          f"model {args.model!r} ({_columns_named(columns)}); wrote {out / 'assignments.csv'}")
    return 0


# --- .npy input: out of core, in one process or several --------------------------------

#: Rows predicted and written at a time: their labels (8 bytes a row) and
#: the library's own bounded prediction blocks are all that a run holds.
_LABEL_BLOCK_ROWS = 2 ** 20
_NPY_FILES = ("assignments.npy", "params.json")
# Why each CSV option has no meaning for a .npy array, and what to do instead.
_CSV_ONLY = {
    "columns": ("a .npy array has no column names and every column is fitted; save the columns "
                "to fit, e.g. np.save('part.npy', x[:, [0, 2]])"),
    "sep": "a .npy array is binary and has no separator; leave --sep out",
    "decimal": "a .npy array is binary and has no decimal mark; leave --decimal out",
    "thousands": "a .npy array is binary and has no thousands separator; leave --thousands out",
    "weights": ("it names a CSV column, and a .npy array has none; leave --weights out "
                "(weighted fits of arrays: BayesianGMM.fit(X, sample_weight=w) in Python)"),
    "dropna": ("for NaN in a .npy array pass --missing marginalize (rows fitted and assigned "
               "from their other columns), or remove those rows"),
    "encoding": "a .npy array is binary and has no text encoding; leave --encoding out",
    "impute": ("a .npy array's output is assignments.npy (one cluster per row); to fill the "
               "NaN of an array, load the model in Python and call impute(X)"),
}
# The library's words for remedies that the command line spells as options.
# The estimator's words for its parameters, and the options that set them
# (regular expressions and their replacements).
_LIBRARY_WORDS = ((r"set missing='marginalize'", "pass --missing marginalize"),
                  (r"\bdtype='float64'", "--dtype float64"),
                  # A pickle: Python can open it (if trusted); the CLI cannot.
                  (r"then re-save it with estimator\.save\(path\)",
                   "then re-save it with estimator.save(path) in Python, or make it again with "
                   "'bayesgmm fit FILE.csv --save MODEL'"),
                  # Model files: made and read here by fit --save and predict.
                  (r"re-save the estimator with estimator\.save\(path\)",
                   "make it again with 'bayesgmm fit FILE.csv --save MODEL'"),
                  (r"a model file saved by estimator\.save\(path\)",
                   "a model file saved by 'bayesgmm fit --save MODEL'"),
                  (r"load it with GMMClassifier\.load\(path\) or bayesgmm\.load\(path\)",
                   "'bayesgmm predict' takes the models 'bayesgmm fit --save' makes (load a "
                   "GMMClassifier in Python, with bayesgmm.load(path))"),
                  (r" \(e\.g\. df\.dropna\(\)\)", ""), (r", e\.g\. df\.dropna\(how='all'\)", ""),
                  (r"\bn_components=(\d+)", r"-k \1"),
                  (r"^device must be", "--device must be"),
                  (r"^device='([\w:]+)'", r"--device \1"),
                  (r"use device='(\w+)' \(?or '(\w+)'\)?", r"use --device \1 or \2"),
                  (r"\binference='(\w+)'", r"--inference \1"),
                  (r"\bcovariance_type='(\w+)'", r"--covariance-type \1"),
                  (r"\bweight_prior='(\w+)'", r"--weight-prior \1"),
                  (r"\bPriors\.weight_concentration\b", "--concentration"),
                  # The prior holds one value per component; --concentration
                  # gives one for all: the value typed, not the vector.
                  (r"(--concentration must be [^,]*), got \[([^,\]]+)(?:, \2)*\]", r"\1, got \2"),
                  (r"(--concentration)=\[([^,\]]+)(?:, \2)*\]", r"\1 \2"),
                  # The estimator names itself; the command line's lines say bayesgmm.
                  (r"^BayesianGMM: ", ""),
                  (r"BayesianGMM with (--inference)", r"\1"),
                  (r"\bn_warmup\b", "--n-warmup"), (r"\bn_samples\b", "--n-samples"),
                  (r"\bn_chains\b", "--n-chains"),
                  (r" \(or None, torch's setting\)", ""), (r"\bn_threads\b", "--threads"),
                  # A MAP fit at its budget: EM's is not an option here.
                  (r"raise em_max_iter \(EM is the faster stage\) or max_iter, or loosen tol",
                   "raise max_iter"),
                  (r" and converged_ is False$", ""),
                  (r"\bmax_iter\b", "--max-iter"),
                  # The unused-components warning: no prior option here.
                  (r" \(see n_effective_components_\)", ""),
                  (r": give a smaller Priors\(covariance_scale=\.\.\.\) \(full, tied\) or "
                   r"Priors\(scale_rate=\.\.\.\) \(diag, spherical\), or ask for fewer components",
                   "; give a smaller -k, or fit the data with the Python library, whose "
                   "Priors(covariance_scale=...) sets that prior"),
                  (r"\bn_components\b", "-k"))


def _refuse_swapped(args) -> None:
    """When MODEL is no model but FILE is one: the two given the wrong way
    round (the load's own error would call the data file a damaged model)."""
    from .mixture import BayesianGMM
    if os.path.realpath(args.file) == os.path.realpath(args.model) or \
            not os.path.isfile(args.file):
        return
    try:
        BayesianGMM.load(args.file, device="cpu")
    except (OSError, ValueError):
        return
    raise CLIError(f"{args.model!r} is not a model but {args.file!r} is: the model comes first, "
                   f"'bayesgmm predict {args.file} {args.model}'")


def _write_outputs(gmm, columns, out: Path, args) -> None:
    """The model when ``--save`` asks for it, then params.json."""
    _save_model(gmm, args)
    _write_params(gmm, columns, out / "params.json")


def _save_model(gmm, args) -> None:
    """``--save``: the model, or a one-line error naming the file."""
    if args.save:
        try:
            gmm.save(args.save)
        except OSError as exc:
            reason = _reason(exc)       # the library's own words name the file already
            raise CLIError(reason if reason.startswith("cannot save") else
                           f"cannot save the model to {args.save!r}: {reason}") from None


def _is_npy(path: str) -> bool:
    return path.lower().endswith(".npy")


def _message(exc: Exception, args=None) -> str:
    """An error's (or a fit's warning's) one line; the estimator's in the
    CLI's words: its options for the library's parameters and, given the
    run's ``args``, the input file for the library's "X" and the file's
    columns for the features it names."""
    text = str(exc)
    if isinstance(exc, CLIError):
        return text
    for library, cli in _LIBRARY_WORDS:
        text = re.sub(library, cli, text)
    path = getattr(args, "file", None)
    if path is None:
        return text
    weights = getattr(args, "weights", None)
    if weights is not None:       # the fit's weights are that column's
        text = re.sub(r"^sample_weight (spans|sums)",
                      lambda m: f"--weights column {weights!r} of {path!r} {m[1]}", text)
    # A feature is a column of the file; one to leave out is left out of
    # --columns (a CSV) or of the array saved.
    text = re.sub(r"^feature\(s\) (.*?) hold one value",
                  lambda m: f"column(s) {m[1]} of {path!r} hold one value", text)
    text = re.sub(r"; drop it$", "; leave it out of --columns" if not _is_npy(path)
                  else "; save the array without it", text)
    # Components on one value of a discrete feature: the remedy for a file.
    text = re.sub(r"single value of feature\(s\) ", "single value of column(s) ", text)
    text = re.sub(r"(?<=single value of column\(s\) )(.*)$",
                  lambda m: m[1].replace("a feature of many values", "a column of many values")
                  .replace("the feature's variance", "the column's variance")
                  .replace("for a feature of few distinct values", "for a column of few "
                           "distinct values"), text)
    text = re.sub(r" \((?:df\[col\]|X\[:, j\]) \+ rng\.uniform\(-gap / 2, gap / 2, "
                  r"len\((?:df|X)\)\)\), or leave it out",
                  " (each value plus a random number between -gap/2 and gap/2), or "
                  + ("leave it out of --columns" if not _is_npy(path)
                     else "save the array without it"), text)
    # Linearly dependent features: the columns, -k, and a remedy for a file.
    text = re.sub(r"^feature\(s\) that are linear combinations",
                  "column(s) that are linear combinations", text)
    text = re.sub(r"(?:n_components|-k)='auto'", "-k auto", text)
    text = re.sub(r" \(for features only nearly dependent, a covariance prior scale .*?also "
                  r"resolves it\)", "", text)     # no such option here
    text = re.sub(r"; leave out (\[.*\]) \(--covariance-type diag has no such floor",
                  r"; leave \1 out of --columns (--covariance-type diag has no such floor"
                  if not _is_npy(path) else
                  r"; save the array without \1 (--covariance-type diag has no such floor",
                  text)
    # The library names the features (the file's columns) a message is about.
    if text.startswith("X has"):
        text = re.sub(r"\bfeature(\(s\))? (?=['\[\d])", r"column\1 ", text)
    text = re.sub(r"rescale X(, e\.g\. (?:divide|multiply) )it", r"rescale the values\1them", text)
    return re.sub(r"^X has", lambda m: f"{path!r} has", text)


def _refuse_csv_options(args, names: Sequence[str]) -> None:
    for name in names:
        if getattr(args, name, None):
            raise CLIError(f"--{name} does not apply to {args.file!r}: {_CSV_ONLY[name]}")


def _open_npy(path: str) -> np.ndarray:
    """The array of ``path`` memory-mapped read-only (nothing read yet),
    checked to be what a fit takes: 2-D, numbers, a row and a column."""
    if not os.path.exists(path):
        raise CLIError(f"file not found: {path!r}")
    if os.path.isdir(path):
        raise CLIError(f"{path!r} is a folder, not a .npy file")
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            raise CLIError(f"{path!r} is not a .npy file (np.save writes them): name a CSV file "
                           f"otherwise than *.npy")
        # allow_pickle stays False: the file cannot run code, and an array of
        # Python objects is refused (it cannot be memory-mapped either).
        X = np.load(path, mmap_mode="r")
    except OSError as exc:
        raise CLIError(f"cannot read {path!r}: {_reason(exc)}") from None
    except (ValueError, EOFError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Python objects" in msg:
            # np.load(mmap_mode="r") of dtype object: pickled objects.
            raise CLIError(f"{path!r} holds Python objects (dtype object), not numbers: save "
                           f"the features as floats, e.g. np.save(path, x.astype(np.float64))"
                           ) from None
        if "mmap length is greater than file size" in msg or msg.startswith("EOF") or \
                isinstance(exc, EOFError):
            raise CLIError(f"{path!r} ends before the array its .npy header describes "
                           f"({os.path.getsize(path)} bytes): it was truncated (a copy or download cut short, a disk "
                           f"that filled up); save the array again") from None
        raise CLIError(f"cannot read {path!r} as a .npy array: {msg}") from None
    if X.dtype.names is not None:
        raise CLIError(f"{path!r} holds a structured array (fields {list(X.dtype.names)}), not "
                       f"a 2-D array of numbers: save numpy.lib.recfunctions."
                       f"structured_to_unstructured(x) (one column per field)")
    if X.dtype.kind == "c":
        raise CLIError(f"{path!r} holds complex values (dtype {X.dtype}): save their real part "
                       f"or magnitude (x.real, np.abs(x))")
    if X.ndim != 2:
        raise CLIError(f"{path!r} holds an array of shape {X.shape}: a 2-D array is needed, "
                       f"one row per point and one column per feature (one feature: save "
                       f"x.reshape(-1, 1))")
    if X.dtype.kind not in "fiub":   # the estimator's rule: real numbers, bool included
        raise CLIError(f"{path!r} holds values of dtype {X.dtype}, not numbers: save the "
                       f"features as floats, e.g. x.astype(np.float64)")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CLIError(f"{path!r} holds an array of shape {X.shape}: at least one row and one "
                       f"column are needed")
    return X


class _Processes:
    """The processes of a run: this one alone, or those torchrun started
    (``fit --distributed``).  Each step that can fail on some process only
    runs through :meth:`together`, which exchanges the outcomes: an error
    anywhere then stops every process at the same point (none is left
    waiting in a collective the others never reach), and the first process
    reports it (:func:`_run`)."""

    #: Whether this process joined a process group (see :func:`_end`).
    started = False

    def __init__(self, dist=None) -> None:
        if dist is not None:
            _Processes.started = True
        self.dist = dist
        self.rank = dist.get_rank() if dist is not None else 0
        self.world = dist.get_world_size() if dist is not None else 1

    def together(self, step: Callable, gather: bool = False):
        """``step()`` here; with ``gather`` every process's result (small,
        picklable), in rank order, else this one's."""
        if self.dist is None:
            result = step()
            return [result] if gather else result
        error = result = None
        try:
            result = step()
        except (CLIError, ValueError) as exc:
            error = _message(exc)
        outcomes: list = [None] * self.world
        self.dist.all_gather_object(outcomes, (error, result if gather else None))
        failed = {r: e for r, (e, _) in enumerate(outcomes) if e is not None}
        if len(set(failed.values())) == 1:
            raise CLIError(next(iter(failed.values())))
        if failed:   # each process's own: say which said what
            raise CLIError(" | ".join(f"process {r}: {e}" for r, e in failed.items()))
        return [r for _, r in outcomes] if gather else result

    def close(self) -> None:
        if self.dist is not None and self.dist.is_initialized():
            self.dist.destroy_process_group()


def _start_processes(args) -> _Processes:
    """Join the process group torchrun set up: gloo when the fit runs on
    the CPU, NCCL on CUDA (one GPU per process: LOCAL_RANK's)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise CLIError("--distributed runs under torchrun, which sets RANK and WORLD_SIZE (unset "
                       "here): launch as 'torchrun --nproc-per-node N -m bayesgmm.cli fit "
                       "FILE.npy --distributed'")
    import torch
    import torch.distributed as dist

    from ._validation import resolve_device

    device = resolve_device(args.device)   # a ValueError (one line) for a bad --device
    if device.type == "cuda":
        if device.index is None:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise CLIError(f"process LOCAL_RANK={local} has no GPU of its own (this machine "
                               f"has {torch.cuda.device_count()}): start at most that many "
                               f"processes per machine, or pass --device cpu")
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    args.device = str(device)
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    except (RuntimeError, ValueError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"cannot join torchrun's process group: {msg}") from None
    return _Processes(dist)


def _create_labels(path: Path, n: int, target: Path) -> int:
    """Create ``path`` as a .npy file of ``n`` int64 labels (the header
    written by numpy, the data left as a sparse hole) and return the byte
    offset of its data."""
    try:
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype("<i8"), shape=(n,))
    except OSError as exc:
        raise CLIError(f"cannot write {str(target)!r}: {_reason(exc)}; "
                       f"choose another --out") from None
    offset = int(mm.offset)
    del mm
    return offset


def _write_labels(model, X, lo: int, hi: int, path: Path, offset: int, target: Path
                  ) -> np.ndarray:
    """The MAP clusters of rows lo:hi of ``X``, predicted in blocks of rows
    and written into their place in the labels file ``path``; returns the
    number of rows per cluster.  Written by positional writes rather than
    through a writable mapping: the file's pages then do not pile up in
    this process's memory, and processes writing neighbouring ranges of a
    file on a network file system cannot overwrite each other's rows
    (mapped pages are written back whole)."""
    counts = np.zeros(len(model.weights_), dtype=np.int64)
    try:
        with open(path, "r+b") as f:
            for a in range(lo, hi, _LABEL_BLOCK_ROWS):
                b = min(a + _LABEL_BLOCK_ROWS, hi)
                labels = np.asarray(model.predict(X[a:b]), dtype=np.dtype("<i8"))
                f.seek(offset + a * labels.itemsize)
                f.write(labels.tobytes())
                counts += np.bincount(labels, minlength=counts.size)
    except OSError as exc:
        raise CLIError(f"cannot write {str(target)!r}: {_reason(exc)}; "
                       f"choose another --out") from None
    return counts


def _assign_npy(model, X, target: Optional[Path], procs: _Processes) -> np.ndarray:
    """Write ``target``, the .npy file of one int64 MAP cluster per row of
    ``X``, each process its own rows (``target``: the first process's; it
    creates the file, under a temporary name replaced at the end as
    :func:`_write_atomic` does); returns the rows per cluster, summed."""
    n = int(X.shape[0])
    lo, hi = _rows_of(procs, n)
    tmp = None if target is None else target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # (temporary, data offset, target) of the first process, for every one
    created = procs.together(lambda: None if tmp is None else (
        str(tmp), _create_labels(tmp, n, target), str(target)), gather=True)[0]
    try:
        counts = procs.together(lambda: _write_labels(
            model, X, lo, hi, Path(created[0]), created[1], Path(created[2])), gather=True)
        if tmp is not None:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise CLIError(f"cannot write {str(target)!r}: {_reason(exc)}; "
                               f"choose another --out") from None
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise
    return np.sum(counts, axis=0)


def _check_values(X, lo: int, hi: int, allow_nan: bool, path: str) -> None:
    """Refuse NaN (with ``allow_nan``: rows with every value NaN) and inf in
    rows lo:hi of ``X``, read a chunk at a time, in the file's words (its
    name, the row in the whole file).  Run before every .npy fit, by every
    process of a ``--distributed`` one on its rows (the estimator checks
    each process's rows itself, but a process that refuses its rows there
    leaves the others waiting in the fit's first collective), and before a
    .npy predict."""
    if np.dtype(X.dtype).kind != "f":
        return
    from .fitting import read_rows

    for a in range(lo, hi, _LABEL_BLOCK_ROWS):
        block = read_rows(X, a, min(hi, a + _LABEL_BLOCK_ROWS))
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(block.sum()):   # finite sum: every value finite, no temporaries
                continue
        nan = np.isnan(block)
        bad = np.isinf(block) | (nan if not allow_nan else False)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            if nan[i, j]:
                raise CLIError(f"{path!r} contains NaN at x[{a + i}, {j}]: pass --missing "
                               f"marginalize to use such rows' other columns, or remove them")
            raise CLIError(f"{path!r} contains {block[i, j]} at x[{a + i}, {j}]: remove such "
                           f"rows or replace the value")
        empty = nan.all(axis=1)
        if empty.any():
            i = a + int(np.argmax(empty))
            raise CLIError(f"{path!r} has a row with every value NaN (x[{i}]): there is nothing "
                           f"to assign it by; remove such rows")


def _rows_of(procs: _Processes, n: int) -> tuple[int, int]:
    """This process's rows of ``n``: one contiguous range each, in rank order."""
    return procs.rank * n // procs.world, (procs.rank + 1) * n // procs.world


def _fit_npy(args) -> int:
    _refuse_csv_options(args, ("columns", "sep", "decimal", "thousands", "weights", "dropna",
                               "impute", "encoding"))
    if args.distributed and args.inference != "map":
        raise CLIError(f"--inference {args.inference} runs on all the rows in one process, but "
                       f"--distributed splits them over processes: fit with --inference map "
                       f"over the processes, or without --distributed (the array is then read "
                       f"into memory)")
    procs = _start_processes(args) if args.distributed else _Processes()
    try:
        return _fit_npy_in(args, procs)
    except (CLIError, ValueError) as exc:
        # Said before the group closes: the other processes may end first,
        # and torchrun then ends this one (with torch 2.2, while gloo's
        # teardown waited for them, before the line was written).
        _say_error(args, exc)
        raise
    finally:
        procs.close()


def _fit_npy_in(args, procs: _Processes) -> int:
    path = args.file
    args.progress = args.progress and procs.rank == 0   # one bar, not one per process
    X = procs.together(lambda: _open_npy(path))
    n, D = (int(v) for v in X.shape)
    if n < procs.world:   # the same on every process: no exchange needed
        raise CLIError(f"{path!r} has {n} row(s), fewer than the {procs.world} processes: "
                       f"start at most {n}")

    def prepare() -> Optional[Path]:
        if procs.rank != 0:
            return None
        for name in _NPY_FILES:
            _refuse_input_as_output(args.file, Path(args.out) / name, "--out")
        out = _prepare_out(args.out, _NPY_FILES)
        if args.save:
            _check_model_path(args.save, args.file, [out / name for name in _NPY_FILES])
        return out

    out = procs.together(prepare)
    lo, hi = _rows_of(procs, n)
    allow_nan = args.missing == "marginalize"
    if args.inference == "map":
        # Every process's rows, one read before the fit: a bad value is said
        # of the file at its row (the estimator would say "X"), and no
        # process refuses its rows inside the fit's collectives alone.
        procs.together(lambda: _check_values(X, lo, hi, allow_nan, path))
    shard = X if procs.world == 1 else X[lo:hi]    # a memmap still: read in row chunks
    if args.inference != "map":
        # The posterior reads every row at every step: the array in memory
        # (read once, then checked there).
        shard = np.array(X)
        _check_values(shard, 0, n, allow_nan, path)
    group = None if procs.dist is None else procs.dist.group.WORLD
    gmm = procs.together(lambda: _fit_estimator(args, shard, process_group=group))
    counts = _assign_npy(gmm, X, None if out is None else out / "assignments.npy", procs)
    if procs.rank != 0:
        return 0
    _note_at_cap(gmm, args)
    names = [f"x{j}" for j in range(D)]
    _write_outputs(gmm, names, out, args)
    _note_stale(out, "assignments.npy", args)
    how = f"by {procs.world} processes" if procs.world > 1 else \
        "into memory" if args.inference != "map" else "in row chunks"
    columns = "x0" if D == 1 else f"x0..x{D - 1}"
    print(f"fitted {_chosen(gmm, args)} ({gmm.covariance_type_} covariances) on {n} rows x "
          f"{D} column(s) ({columns}) of {path!r}, read {how}; loss {_figure(gmm.loss_)}, "
          f"converged {gmm.converged_}{_posterior_summary(gmm)}")
    _print_tables(gmm, names)
    print("rows per cluster: " + ", ".join(f"{k}: {c}" for k, c in enumerate(counts)))
    saved = f" and the model to {args.save}" if args.save else ""
    print(f"wrote {out / 'params.json'} and {out / 'assignments.npy'} (one int64 cluster per "
          f"row){saved}")
    return 0


def _predict_npy(args, model) -> int:
    _refuse_csv_options(args, ("sep", "decimal", "thousands", "dropna", "impute", "encoding"))
    X = _open_npy(args.file)
    D = int(model.n_features_in_)
    if X.shape[1] != D:
        names = getattr(model, "feature_names_in_", None)
        names = f" ({[str(c) for c in names]})" if names is not None else ""
        raise CLIError(f"{args.file!r} has {X.shape[1]} column(s) but the model {args.model!r} "
                       f"was fitted on {D} feature(s){names}: give them as the columns, in "
                       f"that order")
    for source in (args.file, args.model):
        _refuse_input_as_output(source, Path(args.out) / "assignments.npy", "--out")
    out = _prepare_out(args.out, ("assignments.npy",))
    _check_values(X, 0, int(X.shape[0]), getattr(model, "missing", "error") == "marginalize",
                  args.file)
    with warnings.catch_warnings():
        # A model fitted on a CSV has column names and the array none: the
        # columns are the model's in order, as the help says (checked above).
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        counts = _assign_npy(model, X, out / "assignments.npy", _Processes())
    _note_stale(out, "assignments.npy", args)
    print(f"assigned {int(X.shape[0])} rows of {args.file!r} with the K={len(model.weights_)} "
          f"model {args.model!r}; rows per cluster: "
          + ", ".join(f"{k}: {c}" for k, c in enumerate(counts)))
    print(f"wrote {out / 'assignments.npy'} (one int64 cluster per row)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

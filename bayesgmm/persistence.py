"""Saving and loading estimators without pickle.

A saved model is one file: an uncompressed zip archive with two members,

``meta.json``
    ``{"format": "bayesgmm-model", "format_version": 2, "kind": "BayesianGMM",
    "bayesgmm_version": ..., "params": ..., "state": ...}``: the estimator's
    kind, its hyperparameters (``get_params()``) and its fitted attributes, in
    a small tagged JSON encoding (below).  Version-1 files (bayesgmm 0.1,
    diagonal covariances only) still load, as ``covariance_type="diag"``.
``arrays.safetensors``
    Every numeric numpy array, in the `safetensors <https://huggingface.co/docs/safetensors>`_
    format, referenced from the JSON by key.

Loading parses JSON and safetensors only; it never unpickles and never
imports or calls anything named in the file (the kind is looked up in a fixed
table of this package's estimators), so a file from an untrusted source
cannot run code.  The zip CRC-32 of each member catches truncation and bit
rot; every problem is reported as a ``ValueError`` that names it and the
remedy.  Pickling (``pickle``/``joblib``) also works, as scikit-learn users
expect, but **unpickling runs code from the file**: use it only for files
you made yourself.

The JSON encoding is exact for what estimators hold: ``None``, ``bool``,
``int``, ``str`` and finite ``float`` are plain JSON; every JSON object is a
tag: ``{"__float__": "nan"}`` (non-finite floats), ``{"__scalar__": dtype,
"value": v}`` (numpy scalars keep their dtype, e.g. ``np.int32`` class
labels), ``{"__array__": key}`` (numeric arrays, dtype and shape kept by
safetensors), ``{"__strarray__": dtype, ...}`` (``<U`` arrays), ``{"__objarray__":
...}`` (object arrays such as ``feature_names_in_``, elements encoded one by
one), ``{"__tuple__": [...]}``, ``{"__dict__": [[key, value], ...]}`` (keys of
any supported type), ``{"__priors__": {...}}``, ``{"__device__": "cuda:0"}``,
``{"__randomstate__": ...}``, ``{"__tensor__": ...}`` (restored on the CPU),
``{"__bytes__": hex}`` and ``{"__estimator__": kind, ...}`` (nested
estimators).  Anything else is refused at save time, before the file is
touched.

Writes are atomic: the archive goes to a new file in the target's folder,
is flushed and fsynced, then renamed over the target, so a failed or
interrupted save leaves the previous file intact.  On Linux the new file is
anonymous (``O_TMPFILE``) until it is complete, so a killed process leaves
no temporary file behind (but for a kill in the instant between its last
two system calls, which name it and rename it over the target); elsewhere an
exception removes it, but a killed process may leave a hidden
``.bgmm-*.tmp`` file.  A save refuses a
target that exists and is not a regular file (a symlink is followed to its
file).

Loading is bounded: anything but a regular file starting with the zip
signature is refused before it is read, the values decoded from the
metadata may take at most ``_ALLOC_FACTOR`` times the file's size (checked
before each is built; string arrays, padded to their longest value, may
take ``_TEXT_ALLOWANCE`` bytes beyond that), and a fitted state is refused unless a fit could have
produced it (consistent shapes, finite values, probabilities, positive
definite covariances with normal float64 variances within 1e18 of the
mixture's spread, resolved priors of the covariance type; and for a fit with
``inference="vi"`` or ``"nuts"`` the posterior draws, kept in the state as
``_posterior``, checked the same way draw by draw).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import stat
import struct
import tempfile
import warnings
import zipfile
import zlib
from dataclasses import fields
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError

from . import covariance as cov_module
from ._options import (DTYPES, INFERENCE_OPTIONS, MISSING_OPTIONS, STREAM_KEYS,
                       STREAM_STATS, WEIGHT_PRIORS)
from .priors import Priors

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

#: Identifies the file type in ``meta.json``.
FORMAT = "bayesgmm-model"
#: Version of the file layout written by this release (and the newest it reads).
FORMAT_VERSION = 2
# Version 1 (bayesgmm 0.1): diagonal mixtures only, no covariance_type; such
# files load as covariance_type="diag" with covariances_ = scales_ ** 2.

_META = "meta.json"
_ARRAYS = "arrays.safetensors"
# A fixed timestamp makes the same model give byte-identical files.
_EPOCH = (1980, 1, 1, 0, 0, 0)
# Numeric dtypes safetensors stores exactly; strings and objects go to JSON.
_NUMERIC_KINDS = "biuf"
_DTYPE_RE = re.compile(r"^[<>|=]?[biufUS]\d{1,12}$")
# What loading may allocate beyond the file itself, as a multiple of the
# file's size: every array, string and scalar the metadata declares is
# charged against this budget before it is built, so a small hostile file
# cannot make ``load`` allocate gigabytes.  A saved model decodes to about its
# own size (each array is stored once; string arrays take 4 bytes a character).
_ALLOC_FACTOR = 8
#: Bytes of fixed-width string arrays a load may build beyond that budget
#: (charged here first, whole): numpy pads every label of a classifier's
#: ``classes_`` to the longest one, so a real fit's labels (3 classes, one of
#: 10,000 characters: 120 kB from a file of 15 kB) could take more than the
#: budget.
_TEXT_ALLOWANCE = 16 * 2 ** 20
_ZIP_MAGIC = b"PK\x03\x04"

# Everything a damaged or hostile file can make the standard parsers raise;
# turned into one clear ValueError.  (Our own decoder raises _Corrupt.)
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, TypeError,
                 struct.error, EOFError, UnicodeDecodeError, NotImplementedError, OverflowError,
                 IndexError, RecursionError, zlib.error, MemoryError)


class _Corrupt(Exception):
    """Internal: the file's content is inconsistent (message says how)."""


class _Refused(Exception):
    """Internal: a sound file this call cannot load (wrong kind, newer format);
    the message is complete."""


_REGISTRY: dict = {}


def register(cls: type) -> type:
    """Class decorator: make an estimator class savable and loadable under
    its name.  The estimators register themselves, so this module (at the
    bottom of the import graph) never imports them."""
    _REGISTRY[cls.__name__] = cls
    return cls


def _kinds() -> dict:
    """The estimators a file may hold, by the name stored in the file.

    A fixed table: the file only ever selects one of these classes, nothing
    is imported or called by name.  The package's two estimator modules
    register their classes when imported; with the package's lazy imports
    they may not be yet, so they are imported here (at call time: this
    module stays at the bottom of the import graph)."""
    from . import classifier, mixture  # noqa: F401  (fills the registry)
    return dict(_REGISTRY)


def _kind_of(estimator) -> str:
    for name, cls in _kinds().items():
        if type(estimator) is cls:
            return name
    raise ValueError(
        f"cannot save a {type(estimator).__name__}: bayesgmm files hold "
        f"{' or '.join(_kinds())} instances only (subclasses are not registered); "
        f"save an instance of one of those, or use joblib for your own, trusted files")


# ----------------------------------------------------------------------------
# Encoding
# ----------------------------------------------------------------------------
class _Encoder:
    """Python/numpy values -> tagged JSON, collecting numeric arrays."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _array_ref(self, arr: np.ndarray) -> dict:
        key = f"a{len(self.arrays)}"
        # safetensors writes little-endian; a native-order contiguous copy
        # keeps values and dtype kind/size exact.
        # (np.ascontiguousarray would turn 0-d arrays into 1-d ones.)
        self.arrays[key] = arr.astype(arr.dtype.newbyteorder("="), order="C", copy=False)
        return {"__array__": key}

    def __call__(self, value: Any, where: str) -> Any:
        # numpy scalars first: np.float64 and np.str_ subclass float and str,
        # and must keep their dtype.
        if isinstance(value, np.generic):
            return self._scalar(value, where)
        if value is None or isinstance(value, (bool, str, int)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, bytes):
            return {"__bytes__": value.hex()}
        if isinstance(value, np.ndarray):
            return self._ndarray(value, where)
        if isinstance(value, torch.Tensor):
            if value.dtype == torch.bfloat16 or value.is_complex():
                raise ValueError(f"cannot save {where}: a {value.dtype} tensor has no exact "
                                 f"numpy form; convert it to float32/float64 first")
            return {"__tensor__": self._ndarray(value.detach().cpu().numpy(), where)}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, Priors):
            return {"__priors__": {f.name: self(getattr(value, f.name), f"{where}.{f.name}")
                                   for f in fields(value)}}
        if isinstance(value, np.random.RandomState):
            name, keys, pos, has_gauss, cached = value.get_state()
            return {"__randomstate__": {"keys": self._array_ref(np.asarray(keys)), "pos": int(pos),
                                        "has_gauss": int(has_gauss),
                                        "cached_gaussian": self(float(cached), where)}}
        if isinstance(value, tuple):
            return {"__tuple__": [self(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [self(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {"__dict__": [[self(k, f"{where} key {k!r}"), self(v, f"{where}[{k!r}]")]
                                 for k, v in value.items()]}
        kinds = _kinds()
        if type(value) in kinds.values():
            return {"__estimator__": _kind_of(value), **self.estimator(value, where)}
        if type(value).__name__ == "Series" and hasattr(value, "to_dict"):
            # The estimators read a label-keyed Series as the dict it holds.
            raise ValueError(
                f"cannot save {where}: a pandas Series is not supported by the bayesgmm file "
                f"format; set it to series.to_dict(), which the estimator reads the same way")
        if type(value).__name__ == "DataFrame" and hasattr(value, "to_numpy"):
            # init: the estimators read a frame of centres as its array.
            raise ValueError(
                f"cannot save {where}: a pandas DataFrame is not supported by the bayesgmm file "
                f"format; set it to frame.to_numpy(), which the estimator reads the same way")
        raise ValueError(
            f"cannot save {where}: values of type {type(value).__name__} ({value!r:.60}) are not "
            f"supported by the bayesgmm file format (numbers, strings, arrays, lists, tuples, "
            f"dicts, Priors, devices, RandomState and bayesgmm estimators are): set it to one "
            f"of those, or use joblib for your own, trusted files")

    def _scalar(self, value: np.generic, where: str) -> dict:
        kind = value.dtype.kind
        if kind == "b":
            v: Any = bool(value)
        elif kind in "iu":
            v = int(value)
        elif kind == "f":
            v = self(float(value), where)
        elif kind == "U":
            v = str(value)
        elif kind == "S":
            v = bytes(value).hex()
        else:
            raise ValueError(f"cannot save {where}: numpy scalars of dtype {value.dtype} are not "
                             f"supported; convert it to a number or a string")
        return {"__scalar__": value.dtype.str, "value": v}

    def _ndarray(self, arr: np.ndarray, where: str) -> dict:
        kind = arr.dtype.kind
        if kind in _NUMERIC_KINDS:
            return self._array_ref(arr)
        if kind == "U":
            return {"__strarray__": arr.dtype.str, "shape": list(arr.shape),
                    "values": [str(v) for v in arr.ravel().tolist()]}
        if kind == "O":
            return {"__objarray__": list(arr.shape),
                    "values": [self(v, f"{where}[{i}]") for i, v in enumerate(arr.ravel())]}
        raise ValueError(f"cannot save {where}: arrays of dtype {arr.dtype} are not supported; "
                         f"convert it to a numeric, string or object array")

    def estimator(self, est, where: str) -> dict:
        params = est.get_params(deep=False)
        exclude = set(getattr(type(est), "_persist_exclude", ()))
        # Everything that is not a constructor argument is fitted state
        # (trailing-underscore attributes, plus any private ones the estimator
        # keeps); caches an estimator can rebuild are listed in _persist_exclude.
        # Sorted: the arrays are numbered in this order, so a model saved,
        # loaded and saved again gives the same bytes (a loaded estimator's
        # attributes come back in the file's order, not the fit's).
        state = {k: v for k, v in sorted(vars(est).items())
                 if k not in params and k not in exclude}
        return {"params": {k: self(v, f"{where} hyperparameter {k!r}") for k, v in params.items()},
                "state": {k: self(v, f"{where} attribute {k!r}") for k, v in state.items()}}


# ----------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------
def _newer(written_by: Any) -> str:
    """The end of a message for a file naming what this release lacks,
    after the bayesgmm version the file names (``written_by``): a newer
    release's (upgrade), an older one's (load it with that release, or
    refit), or this version's own (hyperparameters were added while the
    version stayed): else the file is damaged."""
    from . import __version__

    def parse(v):
        # A final release's numbers only: a pre-release, development or
        # local version (0.2.0rc1, 0.2.0.dev1, 0.2.0+g1) is not ordered here.
        m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", v.strip()) if isinstance(v, str) else None
        return None if m is None else tuple(int(g or 0) for g in m.groups())

    damaged = "; if not, the file is damaged: re-save the estimator with estimator.save(path)"
    theirs, ours = parse(written_by), parse(__version__)
    if theirs is None or ours is None:
        if isinstance(written_by, str) and written_by.strip():
            return (f": it was written by bayesgmm {written_by!s:.20} (this is bayesgmm "
                    f"{__version__}): load it with the release that wrote it, or refit the "
                    f"model with this one{damaged}")
        return (f": it may have been written by another bayesgmm release: load it with the one "
                f"that wrote it, or upgrade bayesgmm{damaged}")
    said = f"the file names bayesgmm {written_by!s:.20}; this is bayesgmm {__version__}"
    if theirs > ours:
        return f": it was written by a newer release ({said}): upgrade bayesgmm to load it{damaged}"
    if theirs < ours:
        return (f": it was written by an older release ({said}) that had it: load it with that "
                f"release, or refit the model with this one{damaged}")
    return (f": it may have been written by a later development version of this release ("
            f"{said}): upgrade bayesgmm to the latest, or refit the model with this one{damaged}")


class _Decoder:
    """Tagged JSON -> values; any inconsistency raises _Corrupt."""

    def __init__(self, arrays: dict, device: Optional[torch.device], file_size: int) -> None:
        self.arrays = arrays
        self.device = device          # override for restored devices (None: keep/fall back)
        self.in_state = False
        self.budget = _ALLOC_FACTOR * file_size   # bytes the decoded values may still take
        self.text_budget = _TEXT_ALLOWANCE         # string arrays' padding, charged first

    def _allocate(self, nbytes: int, what: str) -> None:
        """Charge ``nbytes`` of a value about to be built against the budget."""
        if nbytes > self.budget:
            raise _Corrupt(f"it declares {what} of {nbytes} bytes, more than a file of its size "
                           f"can hold")
        self.budget -= nbytes

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str, int, float)):
            return value
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict) or len(value) == 0:
            raise _Corrupt(f"unexpected JSON value {value!r:.60}")
        tag = next(iter(value))
        handler = getattr(self, "_" + tag.strip("_"), None) if tag.startswith("__") else None
        if handler is None:
            raise _Corrupt(f"unknown tag {tag!r:.60}")
        return handler(value)

    @staticmethod
    def _keys(value: dict, *keys: str) -> None:
        if set(value) != set(keys):
            raise _Corrupt(f"malformed {next(iter(value))} entry with keys {sorted(value)}")

    @staticmethod
    def _dtype(s: Any) -> np.dtype:
        if not isinstance(s, str) or not _DTYPE_RE.match(s):
            raise _Corrupt(f"unsupported dtype {s!r:.60}")
        return np.dtype(s)

    def _float(self, value: dict) -> float:
        self._keys(value, "__float__")
        if value["__float__"] not in ("nan", "inf", "-inf"):
            raise _Corrupt(f"bad float {value['__float__']!r:.60}")
        return float(value["__float__"])

    def _bytes(self, value: dict) -> bytes:
        self._keys(value, "__bytes__")
        if not isinstance(value["__bytes__"], str):
            raise _Corrupt("malformed bytes entry")
        self._allocate(len(value["__bytes__"]) // 2, "a bytes value")
        return bytes.fromhex(value["__bytes__"])

    def _scalar(self, value: dict) -> np.generic:
        self._keys(value, "__scalar__", "value")
        dtype = self._dtype(value["__scalar__"])
        v = value["value"]
        expected = {"b": bool, "i": int, "u": int, "U": str, "S": str}.get(dtype.kind)
        if dtype.kind == "f":
            v = self(v) if isinstance(v, dict) else v
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        else:
            ok = isinstance(v, expected) and (expected is bool or not isinstance(v, bool))
        if not ok:
            raise _Corrupt(f"scalar of dtype {dtype} holds {v!r:.60}")
        self._allocate(dtype.itemsize, f"a {dtype} scalar")
        if dtype.kind == "S":
            v = bytes.fromhex(v)
        return np.array(v, dtype=dtype)[()]

    def _array(self, value: dict) -> np.ndarray:
        self._keys(value, "__array__")
        key = value["__array__"]
        if not isinstance(key, str) or key not in self.arrays:
            raise _Corrupt(f"array {key!r:.60} is missing from {_ARRAYS}")
        # A writeable copy, detached from the file's buffer (charged: the
        # metadata could name one array many times).
        self._allocate(self.arrays[key].nbytes, f"array {key!r}")
        return np.array(self.arrays[key], copy=True)

    def _strarray(self, value: dict) -> np.ndarray:
        self._keys(value, "__strarray__", "shape", "values")
        dtype = self._dtype(value["__strarray__"])
        vals = value["values"]
        if (dtype.kind != "U" or not isinstance(vals, list)
                or not all(isinstance(v, str) for v in vals)):
            raise _Corrupt("malformed string array")
        shape = self._shape(value["shape"], len(vals))
        nbytes = dtype.itemsize * max(len(vals), 1)
        padding = min(nbytes, self.text_budget)
        if nbytes - padding > self.budget:
            self._allocate(nbytes, f"a {dtype} string array")      # raises, naming its size
        self.text_budget -= padding
        self._allocate(nbytes - padding, f"a {dtype} string array")
        return np.array(vals, dtype=dtype).reshape(shape)

    def _objarray(self, value: dict) -> np.ndarray:
        self._keys(value, "__objarray__", "values")
        if not isinstance(value["values"], list):
            raise _Corrupt("malformed object array")
        shape = self._shape(value["__objarray__"], len(value["values"]))
        self._allocate(8 * len(value["values"]), "an object array")
        vals = [self(v) for v in value["values"]]
        out = np.empty(len(vals), dtype=object)
        for i, v in enumerate(vals):  # element-wise: a slice assignment would broadcast lists
            out[i] = v
        return out.reshape(shape)

    @staticmethod
    def _shape(shape: Any, size: int) -> tuple:
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or math.prod(shape) != size):
            raise _Corrupt(f"bad array shape {shape!r:.60} for {size} values")
        return tuple(shape)

    def _tuple(self, value: dict) -> tuple:
        self._keys(value, "__tuple__")
        if not isinstance(value["__tuple__"], list):
            raise _Corrupt("malformed tuple")
        return tuple(self(v) for v in value["__tuple__"])

    def _dict(self, value: dict) -> dict:
        self._keys(value, "__dict__")
        items = value["__dict__"]
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 for i in items):
            raise _Corrupt("malformed dict")
        return {self(k): self(v) for k, v in items}

    def _priors(self, value: dict) -> Priors:
        self._keys(value, "__priors__")
        body = value["__priors__"]
        names = {f.name for f in fields(Priors)}
        # Version-1 files have the first five fields only; the rest default.
        if not isinstance(body, dict) or not (set(_PRIORS_V1) <= set(body) <= names):
            raise _Corrupt(f"Priors entry has fields {sorted(body) if isinstance(body, dict) else body!r:.60}")
        return Priors(**{k: self(v) for k, v in body.items()})

    def _device(self, value: dict) -> torch.device:
        self._keys(value, "__device__")
        name = value["__device__"]
        if not isinstance(name, str) or not re.match(r"^(cpu|cuda)(:\d+)?$", name):
            raise _Corrupt(f"bad device {name!r:.60}")
        try:
            saved = torch.device(name)
        except (RuntimeError, ValueError, OverflowError):   # an index torch cannot hold
            raise _Corrupt(f"bad device {name!r:.60}") from None
        if not self.in_state:
            return saved          # a hyperparameter stays as the user gave it
        if self.device is not None:
            return self.device
        if saved.type == "cuda" and (not torch.cuda.is_available()
                                     or (saved.index or 0) >= torch.cuda.device_count()):
            # Fitted on a GPU this machine lacks: predict on the CPU.
            return torch.device("cpu")
        return saved

    def _randomstate(self, value: dict) -> np.random.RandomState:
        self._keys(value, "__randomstate__")
        body = value["__randomstate__"]
        if not isinstance(body, dict) or set(body) != {"keys", "pos", "has_gauss", "cached_gaussian"}:
            raise _Corrupt("malformed RandomState entry")
        keys = self(body["keys"])
        if not isinstance(keys, np.ndarray) or keys.dtype != np.uint32 or keys.shape != (624,):
            raise _Corrupt("malformed RandomState keys")
        pos, has_gauss, cached = body["pos"], body["has_gauss"], self(body["cached_gaussian"])
        # The generator indexes its keys by pos: one out of [0, 624] reads
        # outside them.
        if (not _is_int(pos) or not 0 <= pos <= 624 or has_gauss not in (0, 1)
                or isinstance(has_gauss, bool) or not isinstance(cached, float)):
            raise _Corrupt("malformed RandomState position or cached value")
        rs = np.random.RandomState()
        rs.set_state(("MT19937", keys, pos, has_gauss, cached))
        return rs

    def _tensor(self, value: dict) -> torch.Tensor:
        self._keys(value, "__tensor__")
        arr = self(value["__tensor__"])
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in _NUMERIC_KINDS:
            raise _Corrupt("malformed tensor entry")
        return torch.from_numpy(arr)

    def _estimator(self, value: dict):
        self._keys(value, "__estimator__", "params", "state")
        return self.estimator(value["__estimator__"], value["params"], value["state"], None)

    def estimator(self, kind: Any, params: Any, state: Any, expect: Optional[type],
                  version: int = FORMAT_VERSION, written_by: Any = None):
        kinds = _kinds()
        if not _one_of(kind, kinds):
            raise _Refused(f"it holds an estimator kind this release does not know, "
                           f"{kind!r:.60} (it knows {sorted(kinds)}){_newer(written_by)}")
        cls = kinds[kind]
        if expect is not None and cls is not expect:
            raise _Refused(
                f"the file holds a {kind}, not a {expect.__name__}: load it with "
                f"{kind}.load(path) or bayesgmm.load(path)")
        if not isinstance(params, dict) or not isinstance(state, dict):
            raise _Corrupt("params and state must be JSON objects")
        outer = self.in_state
        self.in_state = False
        kwargs = {k: self(v) for k, v in params.items()}
        self.in_state = True
        attrs = {k: self(v) for k, v in state.items()}
        self.in_state = outer
        if version == 1:
            _upgrade_v1(kwargs, attrs)
        for name in attrs:
            # Never shadow a method or property of the class.
            if (not isinstance(name, str) or not name.isidentifier() or name.startswith("__")
                    or name in kwargs or hasattr(cls, name)):
                raise _Corrupt(f"bad attribute name {name!r:.60}")
        if attrs and kind in _REQUIRED:
            _check_state(kind, attrs, kwargs)
        unknown = sorted(set(kwargs) - set(cls._get_param_names()))
        if unknown:
            # A newer release's hyperparameter (or a damaged file): the
            # format version alone does not tell them apart.
            raise _Refused(f"it sets hyperparameter(s) {unknown!s:.200} that this release's "
                           f"{kind} does not have{_newer(written_by)}")
        try:
            est = cls(**kwargs)
        except TypeError as exc:
            raise _Corrupt(f"its hyperparameters do not fit this release's {kind}: {exc}") from None
        for name, v in attrs.items():
            setattr(est, name, v)
        try:
            # Settings a fit accepts, as save writes them (a hand-edited
            # tol=-1 loaded, predicted, and then refused to save or refit).
            est._check_hyperparameters()
        except ValueError as exc:
            raise _Corrupt(f"its hyperparameters are not ones a fit accepts ({exc})") from None
        return est


# ----------------------------------------------------------------------------
# Consistency checks of a loaded, fitted estimator
# ----------------------------------------------------------------------------
_PRIORS_V1 = ("weight_concentration", "mean_loc", "mean_scale", "scale_shape", "scale_rate")
# Covariances live in squared data units (each variance a normal float64
# number: ``Covariance.check_covariances``).  Fits and predictions run in float32 in a frame standardised by the
# mixture's (the data's) per-feature spread: component spreads and mean
# offsets beyond these multiples of it have no float32 precision matrix
# (1 / 1e-18^2 = 1e36 is near float32's largest number), so no fit gives them.
_MIN_RELATIVE, _MAX_RELATIVE = 1e-18, 1e18
_REQUIRED = {
    "BayesianGMM": ("weights_", "means_", "covariances_", "precisions_cholesky_", "scales_",
                    "priors_", "n_features_in_", "device_", "covariance_type_"),
    "GMMClassifier": ("classes_", "n_components_", "weights_", "means_", "covariances_",
                      "precisions_cholesky_", "scales_", "class_prior_", "priors_",
                      "n_features_in_", "device_", "covariance_type_"),
}


def _upgrade_v1(kwargs: dict, attrs: dict) -> None:
    """A version-1 (diagonal-only) estimator in this release's terms."""
    kwargs["covariance_type"] = "diag"
    scales = attrs.get("scales_")
    if isinstance(scales, np.ndarray) and scales.dtype.kind == "f":
        attrs["covariance_type_"] = "diag"
        with np.errstate(all="ignore"):   # out-of-range scales are refused by the checks
            attrs["covariances_"] = scales ** 2
            attrs["precisions_cholesky_"] = 1.0 / scales


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _float_array(name: str, a: Any, shape: tuple) -> np.ndarray:
    """``a`` as float64 after checking it is a float array of ``shape``."""
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != shape:
        got = f"shape {a.shape}, dtype {a.dtype}" if isinstance(a, np.ndarray) else type(a).__name__
        raise _Corrupt(f"{name} is not a float array of shape {shape} ({got})")
    return a.astype(np.float64)


def _one_of(value: Any, options) -> bool:
    """Whether a loaded ``value`` is one of the string ``options`` (an
    array or other unhashable value is not: no numpy truth-value or hashing
    error on the way)."""
    return isinstance(value, str) and value in options


def _check_state(kind: str, a: dict, params: dict) -> None:
    """Refuse the fitted state ``a`` of a loaded ``kind`` unless a fit could
    have produced it: every array the estimator's methods read is of the
    shape its companions imply and finite where a fit leaves it finite,
    weights are probabilities, covariances are positive definite with normal
    float64 variances (what a fit of accepted data gives), and ``priors_``
    holds the resolved priors of this covariance type.  Runs before the
    estimator is built, so a damaged file fails at load, not at predict."""
    missing = [n for n in _REQUIRED[kind] if n not in a]
    if missing:
        raise _Corrupt(f"the fitted {kind} lacks {missing}")
    D = a["n_features_in_"]
    if not _is_int(D) or D < 1:
        raise _Corrupt(f"n_features_in_ {D!r:.60} is not a positive integer")
    ct = a["covariance_type_"]
    if not _one_of(ct, cov_module.COVARIANCE_TYPES):
        raise _Corrupt(f"covariance_type_ {ct!r:.60} is not one of {list(cov_module.COVARIANCE_TYPES)}")
    family = cov_module.get(ct, D)
    if not isinstance(a["device_"], torch.device):
        raise _Corrupt("device_ is not a device")
    names = a.get("feature_names_in_")
    if names is not None and not (isinstance(names, np.ndarray) and names.shape == (D,)
                                  and all(isinstance(n, str) for n in names.tolist())):
        raise _Corrupt("feature_names_in_ is not an array of n_features_in_ strings")
    # Settings the predictions read (absent in files written before them).
    for name, options in (("dtype", DTYPES), ("missing", MISSING_OPTIONS),
                          ("inference", INFERENCE_OPTIONS), ("weight_prior", WEIGHT_PRIORS)):
        if name in params and not _one_of(params[name], options):
            raise _Corrupt(f"{name} {params[name]!r:.60} is not one of {list(options)}")
    rs = params.get("random_state")   # predictions draw from it
    if not (rs is None or isinstance(rs, np.random.RandomState)
            or (_is_int(rs) and 0 <= rs < 2 ** 32)):
        raise _Corrupt(f"random_state {rs!r:.60} cannot seed a generator")

    # One layout for both kinds: a batch of C mixtures of up to K components
    # (a BayesianGMM is one), ``k`` the real components of each, ``lead`` the
    # batch dimensions of the attributes.
    layout = _classifier_layout if kind == "GMMClassifier" else _mixture_layout
    w, m, k, class_prior, priors, lead = layout(a, D)
    C, K = w.shape
    real = np.arange(K)[None, :] < k[:, None]
    shape = lead + family.covariance_shape(K, D)
    cov = _float_array("covariances_", a["covariances_"], shape).reshape((C,) + shape[len(lead):])
    pc = _float_array("precisions_cholesky_", a["precisions_cholesky_"], shape)
    pc = pc.reshape(cov.shape)
    scales = _float_array("scales_", a["scales_"], lead + (K, D)).reshape(C, K, D)

    # Padded component slots (classes with fewer components) are ignored by
    # the methods, but take part in the frame's sums: finite, weight >= 0.
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise _Corrupt("weights_ are not finite and non-negative")
    with np.errstate(over="ignore", invalid="ignore"):   # 1e308 + 1e308: refused, not warned
        total = np.where(real, w, 0.0).sum(1)
    if not np.all(np.abs(total - 1) <= 1e-6):
        raise _Corrupt("weights_ do not sum to 1")
    if not np.all(np.isfinite(m[real])):
        raise _Corrupt("means_ hold non-finite values")
    with np.errstate(over="ignore", invalid="ignore"):
        spread = np.ptp(m[real], axis=0)
    if not np.all(np.isfinite(spread)):
        raise _Corrupt("means_ are too far apart for float64 arithmetic")
    sd = np.ones((C, K, D))
    for c in range(C):
        kc = int(k[c])
        cc = cov[c][:kc] if family.per_component else cov[c]
        problem = family.check_covariances(
            cc, kc, D, np.float64 if params.get("dtype") == "float64" else np.float32)
        if problem:
            raise _Corrupt(f"class {c}: {problem}" if lead else problem)
        sd[c, :kc] = family.marginal_scales(cc, kc, D)
        # The derived attributes are the fit's functions of covariances_.
        pcc = pc[c][:kc] if family.per_component else pc[c]
        expected = family.precisions_cholesky(
            family.from_covariances(torch.from_numpy(np.asarray(cc)))).numpy()
        if not _close(pcc, expected):
            raise _Corrupt("precisions_cholesky_ do not match covariances_")
        if not _close(scales[c][:kc], sd[c, :kc]):
            raise _Corrupt("scales_ do not match covariances_")
        _check_priors(priors[c], family, kc, D, f"priors_[{c}]" if lead else "priors_",
                      params.get("weight_prior", "dirichlet") == "dirichlet_process",
                      # A posterior fit: its draws, whatever set_params did to
                      # inference since (the fitted state is what is saved).
                      params.get("inference", "map") != "map"
                      or a.get("_posterior") is not None)
    if not (np.all(np.isfinite(class_prior)) and np.all(class_prior > 0)
            and abs(class_prior.sum() - 1) <= 1e-6):
        raise _Corrupt("class_prior_ is not a probability vector")
    problem = _frame_problem(class_prior[:, None] * w, m, sd, real, family.isotropic)
    if problem:
        raise _Corrupt(problem)
    _check_posterior(a, family, K, D,
                     np.float64 if params.get("dtype") == "float64" else np.float32,
                     None if kind == "BayesianGMM" else C, class_prior, real)
    _check_diagnostics(a, k, None if kind == "BayesianGMM" else C)
    _check_stream(a, family, K, D, None if kind == "BayesianGMM" else C)
    fit_mass = a.get("_fit_mass")
    if fit_mass is not None and not (isinstance(fit_mass, float) and math.isfinite(fit_mass)
                                     and fit_mass > 0):
        raise _Corrupt(f"_fit_mass {fit_mass!r:.60} is not a positive number")
    rows = a.get("_rows_seen")
    if rows is not None and not (isinstance(rows, int) and not isinstance(rows, bool)
                                 and rows > 0):
        raise _Corrupt(f"_rows_seen {rows!r:.60} is not a positive whole number")
    if kind != "BayesianGMM" and a.get("_class_rows") is not None:
        counted = np.asarray(a["_class_rows"])
        if counted.shape != (C,) or counted.dtype.kind not in "iu" or np.any(counted < 1):
            raise _Corrupt("_class_rows is not a positive whole number of rows per class")
    if kind != "BayesianGMM" and a.get("class_count_") is not None:
        count = _float_array("class_count_", a["class_count_"], (C,))
        if not (np.all(np.isfinite(count)) and np.all(count > 0)):
            raise _Corrupt("class_count_ holds a class weight that is not a positive number")


def _check_posterior(a: dict, family, K: int, D: int, dtype, C: Optional[int] = None,
                     class_prior: Optional[np.ndarray] = None,
                     real: Optional[np.ndarray] = None) -> None:
    """The posterior draws of a fit with ``inference="vi"`` or "nuts"
    (``_posterior``), when the file has them: draws of weights (S, K) on
    the simplex, means (S, K, D) and covariances (S, ...) of the fitted
    type that pass the fitted covariances' checks, all finite, S >= 1; for
    the classifier (``C`` classes) each with a leading class dimension.
    The predictive pools every draw's components into one mixture, scored
    in its own frame: that mixture (weighted by ``class_prior`` (C,), its
    real components ``real`` (C, K)) must pass :func:`_frame_problem` as
    the fitted one does (one draw moved by 1e200 loaded and predicted NaN)."""
    draws = a.get("_posterior")
    if draws is None:
        # A posterior fit's summaries without its draws: its predictions
        # would silently become the plug-in point's.
        summaries = [n for n in ("elbo_", "rhat_", "ess_", "n_divergent_") if n in a]
        if summaries:
            raise _Corrupt(f"it holds the summaries of a posterior fit ({summaries}) but not "
                           f"its draws (_posterior)")
        return
    names = ("weights", "means", "covariances")
    if not isinstance(draws, dict) or set(draws) != set(names):
        raise _Corrupt("_posterior is not a dict of weights, means and covariances draws")
    lead = () if C is None else (C,)
    w = draws["weights"]
    if not isinstance(w, np.ndarray) or w.ndim != 2 + len(lead) or w.shape[len(lead)] < 1:
        raise _Corrupt(f"posterior weights are not a float array of shape {lead + ('S', 'K')}")
    S = w.shape[len(lead)]
    w = _float_array("posterior weights", w, lead + (S, K))
    m = _float_array("posterior means", draws["means"], lead + (S, K, D))
    c = _float_array("posterior covariances", draws["covariances"],
                     lead + (S,) + family.covariance_shape(K, D))
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(m))):
        raise _Corrupt("posterior draws hold non-finite values")
    if np.any(w < 0) or np.any(np.abs(w.sum(-1) - 1) > 1e-6):
        raise _Corrupt("posterior weights are not probability vectors")
    sd = np.empty(lead + (S, K, D))
    for index in np.ndindex(lead + (S,)):
        problem = family.check_covariances(c[index], K, D, dtype)
        if problem:
            raise _Corrupt(f"posterior draw {index}: {problem}")
        sd[index] = family.marginal_scales(c[index], K, D)
    prior = np.ones(1) if C is None else class_prior
    joint = (prior.reshape(prior.shape + (1, 1)) * w.reshape((-1, S, K)) / S).reshape(1, -1)
    used = (np.ones((1, K), dtype=bool) if real is None else real.reshape(-1, K))
    used = np.broadcast_to(used[:, None, :], (used.shape[0], S, K)).reshape(1, -1)
    problem = _frame_problem(joint, m.reshape(1, -1, D), sd.reshape(1, -1, D), used,
                             family.isotropic)
    if problem:
        raise _Corrupt(f"posterior draws: {problem}")


def _check_diagnostics(a: dict, k: np.ndarray, C: Optional[int] = None) -> None:
    """The summaries a fit reports, when the file has them (a hand-edited
    file could say anything): ``rhat_``/``ess_`` dicts of the draws' names,
    each a float array shaped as the fitted attribute (R-hat >= 0, +inf for
    a stuck chain beside a moving one; ESS > 0 and finite; or NaN where too
    few draws give none); ``n_divergent_`` a count >= 0
    and ``n_effective_components_`` one in [0, K] (per class for the
    classifier, ``k`` (C,) the real components); ``elbo_`` finite."""
    fitted = {"weights": a.get("weights_"), "means": a.get("means_"),
              "covariances": a.get("covariances_")}
    for name, least in (("rhat_", 0.0), ("ess_", 0.0)):
        value = a.get(name)
        if value is None:
            continue
        if not isinstance(value, dict) or set(value) != set(fitted):
            raise _Corrupt(f"{name} is not a dict of weights, means and covariances")
        for site, v in value.items():
            shape = np.shape(fitted[site])
            v = _float_array(f"{name}[{site!r}]", v, shape)
            # R-hat is +inf where every half-chain stands still but the
            # halves differ (a stuck chain beside a moving one: no
            # within-chain spread); an ESS is finite.
            bad = ~np.isnan(v) & ~((v > least) & np.isfinite(v) if name == "ess_"
                                   else (v >= least))
            if np.any(bad):
                raise _Corrupt(f"{name}[{site!r}] holds {float(v[bad][0]):g}, "
                               f"which no chain gives")
    converged = a.get("converged_")
    if converged is not None and not isinstance(converged, (bool, np.bool_)):
        raise _Corrupt(f"converged_ {converged!r:.60} is not True or False")
    n_iter = a.get("n_iter_")
    if n_iter is not None and not (_is_int(n_iter) and n_iter >= 0):
        raise _Corrupt(f"n_iter_ {n_iter!r:.60} is not a count >= 0")
    for name, top in (("n_divergent_", None), ("n_effective_components_", k)):
        value = a.get(name)
        if value is None:
            continue
        if C is None:
            ok = _is_int(value) and 0 <= value and (top is None or value <= int(top[0]))
        else:
            ok = (isinstance(value, np.ndarray) and value.shape == (C,)
                  and value.dtype.kind in "iu" and bool(np.all(value >= 0))
                  and (top is None or bool(np.all(value <= top))))
        if not ok:
            what = "a count >= 0" if top is None else "a count of components in [0, K]"
            raise _Corrupt(f"{name} {value!r:.60} is not {what}"
                           + ("" if C is None else f" per class ({C},)"))
    elbo = a.get("elbo_")
    if elbo is not None and not (isinstance(elbo, (float, np.ndarray)) and bool(
            np.all(np.isfinite(np.asarray(elbo, dtype=np.float64))))):
        raise _Corrupt(f"elbo_ {elbo!r:.60} is not a finite number")
    _check_records(a, C)


def _float_record(value: Any, ndim: int) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.ndim == ndim


def _check_records(a: dict, C: Optional[int] = None) -> None:
    """The fit's records, where the file has them, of the types a fit leaves
    (they were loaded as they came, and ``n_partial_fits_="x"`` then failed
    in ``partial_fit`` with a bare TypeError): ``loss_`` a number (NaN after
    ``partial_fit``), ``losses_``/``discriminative_losses_`` float vectors,
    ``class_losses_`` one number per class, ``bic_`` one per K tried (per
    class for the classifier), ``restart_losses_`` a list of float vectors
    with ``best_restart_`` one of their indices, ``n_partial_fits_`` a count
    >= 1."""
    def refuse(name: str, what: str):
        raise _Corrupt(f"{name} {a[name]!r:.60} is not {what}")

    if "loss_" in a and not isinstance(a["loss_"], float):
        refuse("loss_", "a number")
    for name in ("losses_", "discriminative_losses_"):
        if name in a and not _float_record(a[name], 1):
            refuse(name, "a float vector")
    if "class_losses_" in a and not (_float_record(a["class_losses_"], 1)
                                     and a["class_losses_"].shape == (C,)):
        refuse("class_losses_", f"a float vector of one loss per class ({C})")
    if "bic_" in a and not (_float_record(a["bic_"], 1 if C is None else 2)
                            and (C is None or a["bic_"].shape[0] == C)):
        refuse("bic_", "a float vector of one BIC per K tried"
               + ("" if C is None else f", per class ({C}, M)"))
    runs = a.get("restart_losses_")
    if runs is not None and not (isinstance(runs, list) and all(_float_record(r, 1)
                                                                for r in runs)):
        refuse("restart_losses_", "a list of float vectors")
    if "best_restart_" in a:
        best = a["best_restart_"]
        if not (_is_int(best) and 0 <= best < (len(runs) if runs is not None else 1)):
            refuse("best_restart_", f"a restart's index (of {len(runs or [0])})")
    if "n_partial_fits_" in a and not (_is_int(a["n_partial_fits_"])
                                       and a["n_partial_fits_"] >= 1):
        refuse("n_partial_fits_", "a count >= 1")


def _check_stream(a: dict, family, K: int, D: int, C: Optional[int] = None) -> None:
    """``partial_fit``'s running state (``_stream``), when the file has one:
    the standardising frame (finite centres, positive scales, (D,)), the
    number of chunks averaged (a positive integer, with ``n_partial_fits_``
    beside it), their total weight (positive) and the average per unit of
    weight of the E-step's statistics, of the fit's shapes: a finite
    log-likelihood, responsibilities N_k >= 0 summing to 1, finite first
    moments and reference means, and second moments with non-negative
    diagonals (positive semi-definite for full moments), as any E-step
    leaves them.  For the classifier (``C`` classes) the counts and
    weights are per class, (C,): a class not yet in the stream has count
    0, weight 0 and statistics 0; at least one class has a count."""
    state = a.get("_stream")
    if state is None:
        return
    if not isinstance(state, dict) or set(state) != set(STREAM_KEYS):
        raise _Corrupt(f"_stream is not a dict of {list(STREAM_KEYS)}")
    center = _float_array("_stream center", state["center"], (D,))
    scale = _float_array("_stream scale", state["scale"], (D,))
    if not (np.all(np.isfinite(center)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise _Corrupt("_stream's frame is not finite with positive scales")
    t, mass, count = state["t"], state["mass"], a.get("n_partial_fits_")
    if not (_is_int(count) and count >= 1):
        raise _Corrupt("_stream needs positive integer counts t and n_partial_fits_")
    if C is None:
        if not (_is_int(t) and t >= 1):
            raise _Corrupt("_stream needs positive integer counts t and n_partial_fits_")
        if not (isinstance(mass, float) and math.isfinite(mass) and mass > 0):
            raise _Corrupt(f"_stream mass {mass!r:.60} is not a positive number")
        seen = np.ones(1, dtype=bool)
    else:
        if not (isinstance(t, np.ndarray) and t.dtype.kind in "iu" and t.shape == (C,)
                and np.all(t >= 0) and np.any(t >= 1)):
            raise _Corrupt(f"_stream t is not {C} counts >= 0 (one per class), one of them >= 1")
        mass = _float_array("_stream mass", mass, (C,))
        seen = t >= 1
        if not (np.all(np.isfinite(mass)) and np.all((mass > 0) == seen)):
            raise _Corrupt("_stream mass is not a positive weight for each class it counted "
                           "(and 0 for the others)")
    G = seen.size
    avg = state["avg"]
    if not isinstance(avg, dict) or set(avg) != set(STREAM_STATS):
        raise _Corrupt(f"_stream avg is not a dict of {list(STREAM_STATS)}")
    second = (G, K, D, D) if family.full_moments else (G, K, D)
    v = {name: _float_array(f"_stream {name}", avg[name], shape) for name, shape in
         zip(STREAM_STATS, ((G,), (G, K), (G, K, D), second, (G, K, D)))}
    if not all(np.all(np.isfinite(x)) for x in v.values()):
        raise _Corrupt("_stream statistics hold non-finite values")
    if np.any(v["Nk"] < 0) or np.any(np.abs(v["Nk"].sum(-1) - seen) > 1e-4):
        raise _Corrupt("_stream responsibilities are not a distribution over the components")
    for g in range(G):
        S2 = v["S2"][g]
        # Up to rounding, relative to the largest moment of the whole mixture
        # (float32 re-centring leaves -1e-22 where a component's rows coincide).
        tol = 1e-5 * max(float(np.abs(S2).max()), np.finfo(np.float64).tiny)
        diag = np.diagonal(S2, axis1=-2, axis2=-1) if family.full_moments else S2
        ok = np.all(diag >= -tol)
        if ok and family.full_moments:
            ok = np.all(np.linalg.eigvalsh((S2 + np.swapaxes(S2, -1, -2)) / 2).min(-1) >= -tol)
        if not ok:
            raise _Corrupt("_stream second moments are not positive semi-definite")


def _frame_problem(w: np.ndarray, m: np.ndarray, sd: np.ndarray, real: np.ndarray,
                   isotropic: bool) -> Optional[str]:
    """What keeps the real components (``real`` (C, K)) of mixtures with
    joint weights ``w`` (C, K), means ``m`` and marginal standard deviations
    ``sd`` (C, K, D) from the float32 frame they are fitted and predicted in
    (the mixture's own centre and per-feature spread, as
    ``MixtureBase._frame``), or None."""
    w, m, sd = w[real], m[real], sd[real]
    with np.errstate(all="ignore"):
        center = np.einsum("k,kd->d", w, m)
        dev = m - center
        # Scaled by the largest term before squaring, so that nothing
        # overflows or underflows (spreads range over 1e-154 .. 1e154).
        ref = np.maximum(sd.max(0), np.abs(dev).max(0))
        spread = ref * np.sqrt(np.einsum("k,kd->d", w, (sd / ref) ** 2 + (dev / ref) ** 2))
        if isotropic:
            top = spread.max()
            spread = np.full_like(spread, top * np.sqrt(np.mean((spread / top) ** 2)))
        rel_sd, rel_dev = sd / spread, np.abs(dev) / spread
    if not (np.all(np.isfinite(rel_sd)) and np.all(np.isfinite(rel_dev))
            and np.all(rel_sd >= _MIN_RELATIVE) and np.all(rel_sd <= _MAX_RELATIVE)
            and np.all(rel_dev <= _MAX_RELATIVE)):
        return (f"a component's spread or mean offset is outside [{_MIN_RELATIVE:.0e}, "
                f"{_MAX_RELATIVE:.0e}] times the mixture's spread, which no fit gives")
    return None


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    """``a`` equals ``b`` up to rounding: within 1e-6 of the largest
    magnitude in the same leading row (one component's block, whatever its
    scale; a Cholesky factor has entries of ~0 beside large ones)."""
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return False
    rows = np.abs(b).reshape(b.shape[0], -1).max(1) if b.ndim else np.abs(b)
    tol = 1e-6 * rows.reshape(rows.shape + (1,) * max(b.ndim - 1, 0))
    return bool(np.all(np.abs(a - b) <= tol))


def _mixture_layout(a: dict, D: int):
    """A BayesianGMM's state as a batch of one mixture (see
    :func:`_classifier_layout`)."""
    w = a["weights_"]
    if not isinstance(w, np.ndarray) or w.ndim != 1 or w.size < 1:
        raise _Corrupt("weights_ is not a float array with 1 dimension")
    K = w.shape[0]
    w = _float_array("weights_", w, (K,))
    m = _float_array("means_", a["means_"], (K, D))
    k = a.get("n_components_", K)
    if not _is_int(k) or k != K:
        raise _Corrupt(f"n_components_ {k!r:.60} is not the {K} components of weights_")
    return w[None], m[None], np.array([K]), np.ones(1), [a["priors_"]], ()


def _classifier_layout(a: dict, D: int):
    """The classifier's weights (C, K), means (C, K, D), n_components_ and
    class_prior_ (C,) in float64/int64 after checking their shapes agree with
    ``classes_``, its per-class priors_, and the batch dimensions (C,)."""
    classes, k = a["classes_"], a["n_components_"]
    if (not isinstance(classes, np.ndarray) or classes.ndim != 1 or classes.size < 2
            or classes.dtype.kind not in "biufUO"):
        raise _Corrupt("classes_ is not a 1-D array of at least 2 labels")
    # A fit's classes are np.unique's: distinct, sorted, no NaN (the order
    # is what predict's column indices mean: a reordered file would
    # swap every label silently).
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ordered = np.unique(classes)
            nan = classes.dtype.kind == "f" and bool(np.isnan(classes).any())
        sorted_ok = ordered.shape == classes.shape and bool(np.all(ordered == classes))
    except (TypeError, ValueError):
        sorted_ok, nan = False, False
    if nan or not sorted_ok:
        raise _Corrupt("classes_ is not a sorted array of distinct labels (as a fit leaves "
                       "it)")
    C = classes.size
    if not isinstance(k, np.ndarray) or k.dtype.kind not in "iu" or k.shape != (C,):
        raise _Corrupt("n_components_ is not one integer per class")
    w = a["weights_"]
    if not isinstance(w, np.ndarray) or w.ndim != 2 or w.shape[0] != C:
        raise _Corrupt("the per-class arrays' shapes disagree with classes_")
    K = w.shape[1]
    w = _float_array("weights_", w, (C, K))
    m = _float_array("means_", a["means_"], (C, K, D))
    cp = _float_array("class_prior_", a["class_prior_"], (C,))
    if np.any(k < 1) or np.any(k > K):
        raise _Corrupt("n_components_ out of range")
    priors = a["priors_"]
    if not isinstance(priors, list) or len(priors) != C:
        raise _Corrupt(f"priors_ is not a list of {C} Priors (one per class)")
    return w, m, k.astype(np.int64), cp, priors, (C,)


def _check_priors(p: Any, family, K: int, D: int, name: str, process: bool = False,
                  posterior: bool = False) -> None:
    """``p`` holds the resolved priors of a K-component mixture of this
    covariance family in D features (see :func:`bayesgmm.priors.resolve_priors`):
    float arrays of the fit's shapes and positive floats, finite and in
    range, and None for the fields the family does not use.  ``process``:
    the weights' prior is the Dirichlet process, whose concentration is
    one positive number (repeated K times).  ``posterior``: the fit's
    inference is "vi" or "nuts", whose Dirichlet concentration may be below
    1 (a MAP's is at least 1)."""
    if not isinstance(p, Priors):
        raise _Corrupt(f"{name} is not a Priors")

    def vector(field: str, shape: tuple, low: Optional[float] = None, strict: bool = True):
        v = getattr(p, field)
        ok = (isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.shape == shape
              and np.all(np.isfinite(v)))
        v = np.asarray(v, dtype=np.float64) if ok else v
        if ok and low is not None:
            ok = bool(np.all(v > low) if strict else np.all(v >= low))
        if not ok:
            raise _Corrupt(f"{name}.{field} is not a finite float array of shape {shape}"
                           + ("" if low is None else f" {'>' if strict else '>='} {low:g}"))
        return v

    def number(field: str, low: float) -> None:
        v = getattr(p, field)
        if not (isinstance(v, (float, np.floating)) or _is_int(v)) or not (math.isfinite(v)
                                                                             and v > low):
            raise _Corrupt(f"{name}.{field} is not a finite float > {low:g}")

    if process:
        conc = vector("weight_concentration", (K,), 0.0)
        if np.ptp(conc) != 0:
            raise _Corrupt(f"{name}.weight_concentration is not one Dirichlet-process "
                           f"concentration repeated {K} times")
    else:
        vector("weight_concentration", (K,), 0.0 if posterior else 1.0, strict=posterior)
    vector("mean_loc", (D,))
    vector("mean_scale", (D,), 0.0)
    used = ("scale_shape", "scale_rate") if "scale_rate" in family.prior_fields \
        else ("covariance_dof", "covariance_scale")
    unused = [f for f in ("scale_shape", "scale_rate", "covariance_dof", "covariance_scale")
              if f not in used and getattr(p, f) is not None]
    if unused:
        raise _Corrupt(f"{name} sets {unused}, which covariance_type {family.name!r} does not use")
    if "scale_rate" in used:
        number("scale_shape", 0.0)
        if family.isotropic:
            number("scale_rate", 0.0)
        else:
            vector("scale_rate", (D,), 0.0)
    else:
        number("covariance_dof", D + 1.0)
        psi = vector("covariance_scale", (D, D))
        if cov_module.get("tied", D).check_covariances(psi, 1, D):
            raise _Corrupt(f"{name}.covariance_scale is not a symmetric positive definite matrix "
                           f"with normal float64 variances")


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------
def _file_kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _as_str(path: Any) -> str:
    """``path`` (str, bytes or os.PathLike) as a str, as ``open`` takes it."""
    try:
        name = os.fsdecode(os.fspath(path))
    except TypeError:
        raise ValueError(f"path must be a file path (a str, bytes or os.PathLike such as "
                         f"pathlib.Path), got {type(path).__name__} {path!r:.60}") from None
    if "\0" in name:       # the system refuses it; said of the path, not of a file
        raise ValueError(f"path {name!r:.80} contains a NUL character, which no file name can "
                         f"hold: check how the path was built")
    return name


def _save_target(name: str) -> tuple[str, int]:
    """The file a save of ``name`` writes and the permission bits it gets,
    checked before anything is written.

    Symlinks are followed, so that a link to a model file stays a link; an
    existing target must be a regular file (renaming over a device, pipe or
    folder would replace it), and one the user may write, as a plain
    ``open`` requires; its folder must exist.  A replaced file keeps its
    permissions; a new one gets what a plain ``open`` gives it, rw-rw-rw-
    less the process's umask (rw-r--r-- under the usual 022, rw------- under
    077)."""
    if not name:
        raise ValueError("cannot save to an empty path: give a file name such as 'model.bgmm'")
    if name.endswith(os.sep) or (os.altsep and name.endswith(os.altsep)):
        raise ValueError(f"cannot save to {name!r}: it names a folder; give a file in it, "
                         f"e.g. {os.path.join(name, 'model.bgmm')!r}")
    target = os.path.realpath(name)
    try:
        st: Optional[os.stat_result] = os.stat(target)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    except OSError as exc:   # e.g. a symlink loop, or a folder on the way we may not enter
        raise OSError(exc.errno, f"cannot save to {name!r}: {exc.strerror}") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(
            f"cannot save to {name!r}: it is {_file_kind(st.st_mode)}, not a regular file, and "
            f"saving would replace it; give the path of a model file (a new one or one to "
            f"overwrite)")
    if st is not None and not os.access(target, os.W_OK):
        # The rename would replace it (it needs the folder's permission
        # only), but a file the user may not write is one they protected,
        # and a plain open() refuses it too.
        raise PermissionError(errno.EACCES, f"cannot save to {name!r}: the file is read-only "
                                            f"for you (Permission denied), and saving would "
                                            f"replace it; make it writable (chmod u+w) or save "
                                            f"elsewhere")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        # FileNotFoundError, or NotADirectoryError where a file is in the way.
        code, what = ((errno.ENOTDIR, "is a file, not a folder") if os.path.exists(folder)
                      else (errno.ENOENT, "does not exist"))
        raise OSError(code, f"cannot save to {name!r}: the folder {folder!r} {what}; create "
                            f"the folder first (os.makedirs) or save elsewhere")
    return target, (st.st_mode & 0o777 if st is not None else 0o666 & ~_umask())


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` where Linux has it
    (reading it there changes nothing), else by setting it and restoring it
    at once (the only portable way)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(target: str, mode: int, members: tuple[bytes, bytes]) -> None:
    """Write the archive to ``target`` atomically: readers see the old file
    or the new one, never a mix.  The archive goes to a fsynced file in the
    target's folder that is renamed over the target (atomic on POSIX and
    Windows), then the folder is fsynced to make the rename durable.

    On Linux the file is anonymous (``O_TMPFILE``) until it is complete, so a
    process killed while writing leaves nothing behind; it gets a (short,
    random) name only for the rename, the next system call (a kill between
    the two leaves that name).  Elsewhere, or on filesystems without
    ``O_TMPFILE``, it is a named temporary file, removed on any exception but
    left behind by a killed process."""
    folder = os.path.dirname(target)
    if not _write_anonymous(folder, target, mode, members):
        _write_named(folder, target, mode, members)


def _write_anonymous(folder: str, target: str, mode: int, members: tuple[bytes, bytes]) -> bool:
    """The O_TMPFILE write; False (nothing written) where it is unavailable."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return False
    dfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fd = os.open(".", flag | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        except OSError:     # the filesystem or kernel refuses it: use a named file
            return False
        tmp = None
        try:
            with os.fdopen(fd, "wb") as f:
                _write_archive(f, members)
                f.flush()
                os.fchmod(fd, mode)
                os.fsync(fd)
                # Named through its /proc link: a dir_fd makes os.link call
                # linkat(AT_SYMLINK_FOLLOW) (plain link() would try to link
                # the symlink itself).
                # The name lives only between these two system calls (a
                # kill in that instant is the one way to leave it behind).
                for _ in range(100):
                    candidate = f".bgmm-{secrets.token_hex(6)}.tmp"
                    try:
                        os.link(f"/proc/self/fd/{fd}", candidate, dst_dir_fd=dfd)
                    except FileExistsError:
                        continue
                    tmp = candidate
                    os.replace(tmp, os.path.basename(target), src_dir_fd=dfd, dst_dir_fd=dfd)
                    break
                else:
                    raise FileExistsError(errno.EEXIST, "no free temporary name", folder)
        except BaseException:  # KeyboardInterrupt included: never leave the temporary behind
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dfd)
            raise
        with contextlib.suppress(OSError):   # make the rename durable
            os.fsync(dfd)
    finally:
        os.close(dfd)
    return True


def _write_named(folder: str, target: str, mode: int, members: tuple[bytes, bytes]) -> None:
    """The portable write: a named temporary file, renamed over the target."""
    # A short name of its own: one derived from the target's would exceed
    # the filesystem's name limit for long target names.
    fd, tmp = tempfile.mkstemp(prefix=".bgmm-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (not possible on every platform).
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_archive(f, members: tuple[bytes, bytes]) -> None:
    meta, arrays = members
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, payload in ((_META, meta), (_ARRAYS, arrays)):
            zf.writestr(zipfile.ZipInfo(name, date_time=_EPOCH), payload)


def save(estimator, path) -> None:
    """Save a fitted :class:`~bayesgmm.BayesianGMM` or
    :class:`~bayesgmm.GMMClassifier` to ``path``.

    Everything is encoded and the target checked before the file is touched,
    so a value the format cannot hold, or a target that is not a file, raises
    ``ValueError`` and leaves any existing file as it was.  The write is
    atomic: readers, and a save that fails or is interrupted, see the old
    file or the new one, never a mix.  On Linux a process killed while
    saving leaves no temporary file behind (the new file is anonymous until
    complete, then named for one system call before its rename); on other
    systems it may leave a hidden ``.bgmm-*.tmp`` file in
    the target's folder, which can be deleted.

    Parameters
    ----------
    estimator : BayesianGMM or GMMClassifier
    path : str, bytes or os.PathLike
        Target file; it is replaced if it exists (a symlink is followed, and
        stays a link).  Any name works; ``.bgmm`` is a good suffix.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The estimator is not fitted (nothing is written).
    ValueError
        The estimator holds a value the format cannot store or a
        hyperparameter ``fit`` would refuse (e.g. ``set_params(tol=-1)``
        after the fit), ``path`` is empty, or it exists and is not a
        regular file (a folder, a device, a pipe).
    FileNotFoundError, PermissionError, OSError
        The target's folder does not exist or cannot be written, or the
        write failed (e.g. the disk is full); the message names ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesgmm import BayesianGMM, persistence
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bgmm")
    >>> persistence.save(BayesianGMM(2, n_init=1, device="cpu").fit([[0.0], [0.1], [5.0], [5.2]]),
    ...                  path)
    >>> persistence.load(path).n_components
    2
    """
    import safetensors.numpy
    from . import __version__

    name = _as_str(path)
    kind = _kind_of(estimator)
    enc = _Encoder()
    body = enc.estimator(estimator, kind)
    if not any(k.endswith("_") and not k.startswith("__") for k in vars(estimator)):
        from sklearn.exceptions import NotFittedError
        raise NotFittedError(
            f"this {kind} is not fitted yet, so there is nothing to save: call fit before save "
            f"(its hyperparameters alone are get_params())")
    try:
        # A file holds settings a fit accepts (set_params after the fit
        # changes them unchecked, as scikit-learn's do, until the next fit).
        estimator._check_hyperparameters()
    except ValueError as exc:
        raise ValueError(f"cannot save to {name!r}: {exc}; nothing was written: set it right "
                         f"(set_params), then save again") from None
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "bayesgmm_version": __version__, **body}
    meta_bytes = json.dumps(meta, allow_nan=False, sort_keys=True, indent=1).encode("utf-8")
    arrays_bytes = safetensors.numpy.save(enc.arrays)
    _check_loadable(meta_bytes, arrays_bytes, len(meta_bytes) + len(arrays_bytes), name)
    target, mode = _save_target(name)
    try:
        _atomic_write(target, mode, (meta_bytes, arrays_bytes))
    except OSError as exc:
        if exc.errno is None:
            raise
        # Name the user's file, not the temporary or the folder the OS names.
        remedy = ("; save to a folder you can write to, or change its permissions"
                  if isinstance(exc, PermissionError) else "")
        raise OSError(exc.errno, f"cannot save to {name!r}: {exc.strerror}{remedy}") from exc


def _check_loadable(meta_bytes: bytes, arrays_bytes: bytes, size: int, name: str) -> None:
    """Refuse to write what :func:`load` would refuse: the encoded estimator
    is decoded and checked in memory, exactly as a load of the file would,
    so that a hyperparameter set to a value no fit accepts (e.g.
    ``set_params(missing="Marginalize")`` after the fit) cannot replace a
    good file with one that no longer loads."""
    import safetensors.numpy

    meta = json.loads(meta_bytes.decode("utf-8"))
    try:
        _Decoder(safetensors.numpy.load(arrays_bytes), torch.device("cpu"), size).estimator(
            meta["kind"], meta["params"], meta["state"], None)
    except (_Corrupt, _Refused) as exc:
        raise ValueError(
            f"cannot save to {name!r}: the estimator holds a value a load would refuse ({exc}); "
            f"nothing was written: set it right (set_params) or refit, then save again") from None


def _describe_foreign(head: bytes) -> str:
    if head[:1] == b"\x80" or head[:2] in (b"(d", b"(l", b"}q", b"]q"):
        return ("it looks like a pickle (e.g. from joblib.dump or pickle.dump); bayesgmm never "
                "unpickles files: open it with joblib.load only if you trust its source, then "
                "re-save it with estimator.save(path)")
    if not head:
        return "the file is empty"
    return "it is not a zip archive (truncated, corrupted or not a bayesgmm model)"


def _read_file(path: str) -> bytes:
    """The bytes of the model file at ``path``, refused before reading
    unless it is a regular file, and after four bytes unless it starts as a
    zip archive (so that neither ``/dev/zero`` nor a large foreign file is
    read into memory)."""
    def refuse_special(st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            raise _Refused(f"it is {_file_kind(st.st_mode)}, not a regular file; give the path "
                           f"of a model file saved by estimator.save(path)")

    refuse_special(os.stat(path))
    # Non-blocking: opening a FIFO that replaced the file since the stat
    # would wait for a writer.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        refuse_special(os.fstat(fd))
        head = f.read(len(_ZIP_MAGIC))
        if head != _ZIP_MAGIC:
            said = _describe_foreign(head)
            # A pickle is a sound file of another kind: no "damaged" remedy.
            raise (_Refused if said.startswith("it looks like a pickle") else _Corrupt)(said)
        return head + f.read()


def _read_members(data: bytes) -> tuple[dict, dict]:
    import io

    import safetensors.numpy

    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        if "data.pkl" in {n.rsplit("/", 1)[-1] for n in names}:
            raise _Refused("it is a torch.save/pickle archive, not a bayesgmm model; bayesgmm "
                           "never unpickles files: open it with torch.load or joblib.load only "
                           "if you trust its source, then re-save the estimator with "
                           "estimator.save(path)")
        missing = {_META, _ARRAYS} - names
        if missing:
            raise _Corrupt(f"the archive lacks {sorted(missing)} (members: {sorted(names)[:5]})")
        infos = [zf.getinfo(n) for n in (_META, _ARRAYS)]
        # Stored members only: no decompression, so a hostile file cannot
        # expand into more memory than its own size.
        if any(i.compress_type != zipfile.ZIP_STORED or i.file_size > len(data) for i in infos):
            raise _Corrupt("a member is compressed or larger than the file")
        if any(i.flag_bits & 0x1 for i in infos):     # zipfile would raise RuntimeError
            raise _Corrupt("a member is marked encrypted, which bayesgmm never writes")
        meta_bytes = zf.read(_META)      # zipfile checks each member's CRC-32 here
        arrays_bytes = zf.read(_ARRAYS)
    meta = json.loads(meta_bytes.decode("utf-8"), parse_constant=_reject_constant)
    arrays = safetensors.numpy.load(arrays_bytes)
    if not isinstance(meta, dict):
        raise _Corrupt(f"{_META} is not a JSON object")
    return meta, arrays


def _reject_constant(name: str):
    raise _Corrupt(f"{_META} holds the non-standard JSON constant {name}")


def load(path, *, device=None, expect: Optional[type] = None):
    """Load an estimator saved by :func:`save` (or ``estimator.save``).

    Only JSON and safetensors are parsed: nothing in the file is unpickled,
    imported or called, so files from untrusted sources are safe to load
    (unlike pickle/joblib files).  A hostile file cannot make loading
    allocate much more memory than the file's own size (16 MiB aside for
    labels padded to the longest), and the loaded
    state is checked to be one a fit could have produced (shapes, finite
    values, probabilities, positive definite covariances with normal float64
    variances, resolved priors) before the estimator is built.

    Parameters
    ----------
    path : str, bytes or os.PathLike
    device : {"cpu", "cuda", "cuda:N"} or torch.device, optional
        Where the loaded estimator predicts (its ``device_``).  Default: the
        device it was fitted on, or the CPU when that is a GPU this machine
        does not have.  The ``device`` hyperparameter (used by a refit) is
        restored as saved.
    expect : type, optional
        Require this estimator class (``BayesianGMM.load`` passes itself);
        a file holding another kind raises ``ValueError``.

    Returns
    -------
    BayesianGMM or GMMClassifier
        Whichever kind the file holds.

    Raises
    ------
    ValueError
        ``path`` is not a regular file (a folder, a device, a pipe), the
        file is not a bayesgmm model (e.g. a pickle), is truncated,
        corrupted or inconsistent, was written by a newer format version, or
        holds another kind than ``expect``.  The message says which, and
        what to do.
    FileNotFoundError
        No file at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import bayesgmm
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bgmm")
    >>> bayesgmm.BayesianGMM(2, n_init=1, device="cpu").fit([[0.0], [0.1], [5.0], [5.2]]).save(path)
    >>> type(bayesgmm.load(path)).__name__
    'BayesianGMM'
    """
    from . import _validation as V

    path = _as_str(path)
    override = V.resolve_device(device) if device is not None else None
    remedy = "re-save the estimator with estimator.save(path)"
    try:
        data = _read_file(path)
        meta, arrays = _read_members(data)
        if meta.get("format") != FORMAT:
            raise _Corrupt(f"its metadata does not identify a {FORMAT} file")
        version = meta.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise _Corrupt(f"bad format_version {version!r:.60}")
        if version > FORMAT_VERSION:
            raise _Refused(
                f"it was written by bayesgmm {meta.get('bayesgmm_version')!s:.20} in file "
                f"format version {version}, but this release reads format versions up to "
                f"{FORMAT_VERSION}: upgrade bayesgmm to load it")
        expected_keys = {"format", "format_version", "kind", "bayesgmm_version", "params", "state"}
        if set(meta) != expected_keys:
            raise _Corrupt(f"unexpected metadata keys {sorted(set(meta) ^ expected_keys)}")
        return _Decoder(arrays, override, len(data)).estimator(
            meta["kind"], meta["params"], meta["state"], expect, version,
            meta["bayesgmm_version"])
    except _Refused as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    except _Corrupt as exc:
        raise ValueError(f"cannot load {path!r}: {exc}; if it is a bayesgmm model it is "
                         f"damaged: {remedy}") from None
    except (*_PARSE_ERRORS, SafetensorError) as exc:
        raise ValueError(f"cannot load {path!r}: the file is truncated or corrupted "
                         f"({type(exc).__name__}: {str(exc)[:200]}); {remedy}") from exc

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

Writes are atomic: the archive goes to a temporary file in the target's
directory, is flushed and fsynced, then renamed over the target, so an
interrupted save leaves the previous file intact and no temporary behind.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import tempfile
import zipfile
import zlib
from dataclasses import fields
from typing import Any, Optional

import numpy as np
import torch
from safetensors import SafetensorError

from . import covariance as cov_module
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
_DTYPE_RE = re.compile(r"^[<>|=]?[biufUS]\d+$")

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
    is imported or called by name."""
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
        state = {k: v for k, v in vars(est).items() if k not in params and k not in exclude}
        return {"params": {k: self(v, f"{where} hyperparameter {k!r}") for k, v in params.items()},
                "state": {k: self(v, f"{where} attribute {k!r}") for k, v in state.items()}}


# ----------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------
class _Decoder:
    """Tagged JSON -> values; any inconsistency raises _Corrupt."""

    def __init__(self, arrays: dict, device: Optional[torch.device]) -> None:
        self.arrays = arrays
        self.device = device          # override for restored devices (None: keep/fall back)
        self.in_state = False

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
        if dtype.kind == "S":
            v = bytes.fromhex(v)
        return np.array(v, dtype=dtype)[()]

    def _array(self, value: dict) -> np.ndarray:
        self._keys(value, "__array__")
        key = value["__array__"]
        if not isinstance(key, str) or key not in self.arrays:
            raise _Corrupt(f"array {key!r:.60} is missing from {_ARRAYS}")
        # A writeable copy, detached from the file's buffer.
        return np.array(self.arrays[key], copy=True)

    def _strarray(self, value: dict) -> np.ndarray:
        self._keys(value, "__strarray__", "shape", "values")
        dtype = self._dtype(value["__strarray__"])
        vals = value["values"]
        if dtype.kind != "U" or not all(isinstance(v, str) for v in vals):
            raise _Corrupt("malformed string array")
        return np.array(vals, dtype=dtype).reshape(self._shape(value["shape"], len(vals)))

    def _objarray(self, value: dict) -> np.ndarray:
        self._keys(value, "__objarray__", "values")
        vals = [self(v) for v in value["values"]]
        out = np.empty(len(vals), dtype=object)
        for i, v in enumerate(vals):  # element-wise: a slice assignment would broadcast lists
            out[i] = v
        return out.reshape(self._shape(value["__objarray__"], len(vals)))

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
        saved = torch.device(name)
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
        rs = np.random.RandomState()
        rs.set_state(("MT19937", keys, int(body["pos"]), int(body["has_gauss"]),
                      float(self(body["cached_gaussian"]))))
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
                  version: int = FORMAT_VERSION):
        kinds = _kinds()
        if kind not in kinds:
            raise _Corrupt(f"unknown estimator kind {kind!r:.60} (this bayesgmm knows "
                           f"{sorted(kinds)}; a newer release may know more)")
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
        try:
            est = cls(**kwargs)
        except TypeError as exc:
            raise _Corrupt(f"its hyperparameters do not fit this release's {kind}: {exc}") from None
        for name, v in attrs.items():
            # Never shadow a method or property of the class.
            if (not name.isidentifier() or name.startswith("__") or name in kwargs
                    or hasattr(cls, name)):
                raise _Corrupt(f"bad attribute name {name!r:.60}")
            setattr(est, name, v)
        check = _CHECKS.get(kind)
        if check is not None and attrs:
            check(est)
        return est


# ----------------------------------------------------------------------------
# Consistency checks of a loaded, fitted estimator
# ----------------------------------------------------------------------------
_PRIORS_V1 = ("weight_concentration", "mean_loc", "mean_scale", "scale_shape", "scale_rate")


def _upgrade_v1(kwargs: dict, attrs: dict) -> None:
    """A version-1 (diagonal-only) estimator in this release's terms."""
    kwargs["covariance_type"] = "diag"
    scales = attrs.get("scales_")
    if isinstance(scales, np.ndarray) and scales.dtype.kind == "f":
        attrs["covariance_type_"] = "diag"
        attrs["covariances_"] = scales ** 2
        attrs["precisions_cholesky_"] = 1.0 / scales


def _float_array(where: str, name: str, a, ndim: int) -> None:
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.ndim != ndim:
        raise _Corrupt(f"{where}{name} is not a float array with {ndim} dimension(s)")


def _family_of(est, D: int):
    ct = getattr(est, "covariance_type_", None)
    if ct not in cov_module.COVARIANCE_TYPES:
        raise _Corrupt(f"covariance_type_ {ct!r:.60} is not one of {list(cov_module.COVARIANCE_TYPES)}")
    return cov_module.get(ct, D)


def _check_derived(est, real: Optional[np.ndarray] = None) -> None:
    """``precisions_cholesky_`` in the shape of ``covariances_`` and ``scales_``
    in that of ``means_``, float arrays; the scales of the real components
    (``real``: mask of the leading dims of ``means_``, default all) finite
    and positive."""
    for name, shape in (("precisions_cholesky_", np.shape(est.covariances_)),
                        ("scales_", est.means_.shape)):
        a = getattr(est, name)
        if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != shape:
            raise _Corrupt(f"{name} is not a float array of shape {shape}")
    scales = est.scales_ if real is None else est.scales_[real]
    if not (np.all(np.isfinite(scales)) and np.all(scales > 0)):
        raise _Corrupt("scales_ are not positive and finite")


def _check_bayesian_gmm(est) -> None:
    required = ("weights_", "means_", "covariances_", "precisions_cholesky_", "scales_", "priors_",
                "n_features_in_", "device_", "covariance_type_")
    missing = [a for a in required if not hasattr(est, a)]
    if missing:
        raise _Corrupt(f"the fitted BayesianGMM lacks {missing}")
    if not isinstance(est.priors_, Priors):
        raise _Corrupt("priors_ is not a Priors")
    if not isinstance(est.n_features_in_, int) or isinstance(est.n_features_in_, bool):
        raise _Corrupt("n_features_in_ is not an integer")
    w, m = est.weights_, est.means_
    _float_array("", "weights_", w, 1)
    _float_array("", "means_", m, 2)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(m))):
        raise _Corrupt("weights_ or means_ hold non-finite values")
    K = w.shape[0]
    if m.shape[0] != K:
        raise _Corrupt(f"weights_/means_ shapes {w.shape}, {m.shape} disagree")
    if m.shape[1] != est.n_features_in_:
        raise _Corrupt(f"means_ has {m.shape[1]} features, n_features_in_ is {est.n_features_in_}")
    if np.any(w < 0) or abs(w.sum() - 1) > 1e-6:
        raise _Corrupt("weights_ are not on the simplex")
    problem = _family_of(est, m.shape[1]).check_covariances(est.covariances_, K, m.shape[1])
    if problem:
        raise _Corrupt(problem)
    _check_derived(est)
    names = getattr(est, "feature_names_in_", None)
    if names is not None and (not isinstance(names, np.ndarray) or names.shape != (est.n_features_in_,)):
        raise _Corrupt("feature_names_in_ does not match n_features_in_")


def _check_gmm_classifier(est) -> None:
    required = ("classes_", "n_components_", "weights_", "means_", "covariances_",
                "precisions_cholesky_", "scales_", "class_prior_", "n_features_in_", "device_",
                "covariance_type_")
    missing = [a for a in required if not hasattr(est, a)]
    if missing:
        raise _Corrupt(f"the fitted GMMClassifier lacks {missing}")
    classes, k = est.classes_, est.n_components_
    if not isinstance(classes, np.ndarray) or classes.ndim != 1 or classes.size < 2:
        raise _Corrupt("classes_ is not a 1-D array of at least 2 labels")
    C = classes.size
    w, m, cp = est.weights_, est.means_, est.class_prior_
    arrays_ok = all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in (w, m, cp))
    if (not arrays_ok or not isinstance(k, np.ndarray) or k.dtype.kind not in "iu"
            or k.shape != (C,) or w.ndim != 2 or w.shape[0] != C or m.ndim != 3
            or m.shape[:2] != w.shape or cp.shape != (C,)):
        raise _Corrupt("the per-class arrays' shapes disagree with classes_")
    if m.shape[2] != est.n_features_in_:
        raise _Corrupt(f"means_ has {m.shape[2]} features, n_features_in_ is {est.n_features_in_}")
    if np.any(k < 1) or np.any(k > w.shape[1]):
        raise _Corrupt("n_components_ out of range")
    # Classes with fewer components than the widest are padded; only the real
    # components must be finite mixtures.
    real = np.arange(w.shape[1])[None, :] < k[:, None]
    wr = np.where(real, w, 0.0)
    if (not np.all(np.isfinite(w[real])) or np.any(wr < 0)
            or np.any(np.abs(wr.sum(1) - 1) > 1e-6) or not np.all(np.isfinite(m[real]))):
        raise _Corrupt("a class's weights_/means_ are not a valid mixture")
    family = _family_of(est, m.shape[2])
    cov = est.covariances_
    # One entry per class, and per component slot (padded ones included) for
    # the families with a component dimension.
    lead = w.shape if family.per_component else (C,)
    if not isinstance(cov, np.ndarray) or cov.shape[:len(lead)] != lead:
        raise _Corrupt(f"covariances_ does not have one entry per class"
                       f"{' and component' if family.per_component else ''}")
    for c in range(C):
        kc = int(k[c])
        cc = cov[c][:kc] if family.per_component else cov[c]
        problem = family.check_covariances(cc, kc, m.shape[2]) if cc.shape[:1] == (kc,) or \
            not family.per_component else "covariances_ shape disagrees with n_components_"
        if problem:
            raise _Corrupt(f"class {c}: {problem}")
    _check_derived(est, real)
    if not np.all(np.isfinite(cp)) or np.any(cp <= 0) or abs(cp.sum() - 1) > 1e-6:
        raise _Corrupt("class_prior_ is not a probability vector")


#: Per-kind checks run after loading a fitted estimator.
_CHECKS = {"BayesianGMM": _check_bayesian_gmm, "GMMClassifier": _check_gmm_classifier}


# ----------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------
def _atomic_write(path: str, members: tuple[bytes, bytes]) -> None:
    """Write the archive to ``path`` via a fsynced temporary file in the same
    directory and ``os.replace`` (atomic on POSIX and Windows), so readers
    see the old file or the new one, never a mix."""
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    # Keep the permissions of the file being replaced; new files get rw-r--r--
    # rather than mkstemp's owner-only mode, like a plain open() would.
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_archive(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:  # KeyboardInterrupt included: never leave the temporary behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # Make the rename itself durable (not possible on every platform).
    with contextlib.suppress(OSError):
        dfd = os.open(directory, os.O_RDONLY)
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
    """Save a :class:`~bayesgmm.BayesianGMM` or :class:`~bayesgmm.GMMClassifier`
    (fitted or not) to ``path``.

    Everything is encoded before the file is touched, so a value the format
    cannot hold raises ``ValueError`` and leaves any existing file as it was;
    the write itself is atomic (temporary file, fsync, rename).

    Parameters
    ----------
    estimator : BayesianGMM or GMMClassifier
    path : str or os.PathLike
        Target file; it is replaced if it exists.  Any name works; ``.bgmm``
        is a good suffix.

    Examples
    --------
    >>> import os, tempfile
    >>> from bayesgmm import BayesianGMM, persistence
    >>> path = os.path.join(tempfile.mkdtemp(), "unfitted.bgmm")
    >>> persistence.save(BayesianGMM(3), path)
    >>> persistence.load(path).n_components
    3
    """
    import safetensors.numpy
    from . import __version__

    kind = _kind_of(estimator)
    enc = _Encoder()
    body = enc.estimator(estimator, kind)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "bayesgmm_version": __version__, **body}
    meta_bytes = json.dumps(meta, allow_nan=False, sort_keys=True, indent=1).encode("utf-8")
    arrays_bytes = safetensors.numpy.save(enc.arrays)
    _atomic_write(os.fspath(path), (meta_bytes, arrays_bytes))


def _describe_foreign(data: bytes) -> str:
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q"):
        return ("it looks like a pickle (e.g. from joblib.dump or pickle.dump); bayesgmm never "
                "unpickles files: open it with joblib.load only if you trust its source, then "
                "re-save it with estimator.save(path)")
    if not data:
        return "the file is empty"
    return "it is not a zip archive (truncated, corrupted or not a bayesgmm model)"


def _read_members(data: bytes, path: str) -> tuple[dict, dict]:
    import io

    import safetensors.numpy

    if data[:4] != b"PK\x03\x04":
        raise _Corrupt(_describe_foreign(data))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = set(zf.namelist())
        if "data.pkl" in {n.rsplit("/", 1)[-1] for n in names}:
            raise _Corrupt("it is a torch.save/pickle archive, not a bayesgmm model; bayesgmm "
                           "never unpickles files")
        missing = {_META, _ARRAYS} - names
        if missing:
            raise _Corrupt(f"the archive lacks {sorted(missing)} (members: {sorted(names)[:5]})")
        infos = [zf.getinfo(n) for n in (_META, _ARRAYS)]
        # Stored members only: no decompression, so a hostile file cannot
        # expand into more memory than its own size.
        if any(i.compress_type != zipfile.ZIP_STORED or i.file_size > len(data) for i in infos):
            raise _Corrupt("a member is compressed or larger than the file")
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
    (unlike pickle/joblib files).

    Parameters
    ----------
    path : str or os.PathLike
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
        The file is not a bayesgmm model (e.g. a pickle), is truncated or
        corrupted, was written by a newer format version, or holds another
        kind than ``expect``.  The message says which, and what to do.
    FileNotFoundError
        No file at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import bayesgmm
    >>> path = os.path.join(tempfile.mkdtemp(), "model.bgmm")
    >>> bayesgmm.BayesianGMM(2, n_init=1).save(path)
    >>> type(bayesgmm.load(path)).__name__
    'BayesianGMM'
    """
    from . import _validation as V

    path = os.fspath(path)
    override = V.resolve_device(device) if device is not None else None
    with open(path, "rb") as f:
        data = f.read()
    remedy = "re-save the estimator with estimator.save(path)"
    try:
        meta, arrays = _read_members(data, path)
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
        return _Decoder(arrays, override).estimator(meta["kind"], meta["params"], meta["state"],
                                                    expect, version)
    except _Refused as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    except _Corrupt as exc:
        raise ValueError(f"cannot load {path!r}: {exc}; if it is a bayesgmm model it is "
                         f"damaged: {remedy}") from None
    except (*_PARSE_ERRORS, SafetensorError) as exc:
        raise ValueError(f"cannot load {path!r}: the file is truncated or corrupted "
                         f"({type(exc).__name__}: {str(exc)[:200]}); {remedy}") from exc

"""Fuzzing the model file format from real saved files.

Every mutated file (JSON values replaced anywhere in ``meta.json``, arrays in
``arrays.safetensors`` replaced or pushed to extreme values, members
truncated or bit-flipped, always re-zipped with valid CRCs so that the damage
reaches the parsers) must either be refused by ``load`` with a
``ValueError``, or load as a model whose prediction methods run and give
finite probabilities near its components; and ``load`` must never allocate
more than a small multiple of the file's size."""

from __future__ import annotations

import copy
import json
import math
import tracemalloc
import warnings
import zipfile

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bayesgmm import BayesianGMM, persistence
from bayesgmm.classifier import GMMClassifier

# load may allocate this multiple of the file's size, plus a fixed allowance
# for the parsers' and numpy's small objects (a saved model is ~10 KB).
PEAK_FACTOR = 32
PEAK_SLACK = 64 * 1024

# No "explain" phase: its line tracer would allocate inside the traced load.
FUZZ = dict(deadline=None, derandomize=True,
            phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------
# The real files mutated
# ----------------------------------------------------------------------------
def _members(est, tmp) -> tuple[dict, dict]:
    path = tmp / "base.bgmm"
    persistence.save(est, path)
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("meta.json"))
        arrays = dict(safetensors.numpy.load(zf.read("arrays.safetensors")))
    return meta, arrays


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> list[tuple[dict, dict]]:
    """(meta, arrays) of a fitted BayesianGMM and a fitted GMMClassifier
    (one class padded), full and diag, fitted once on small data."""
    tmp = tmp_path_factory.mktemp("bases")
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal([0, 0], 1, (40, 2)), rng.normal([4, -3], 0.5, (40, 2))]
    y = np.repeat(np.array(["a", "b"]), 40)
    kw = dict(n_init=1, em_max_iter=10, max_iter=0, device="cpu", random_state=0)
    out = []
    for ct in ("full", "diag"):
        out.append(_members(BayesianGMM(2, covariance_type=ct, **kw).fit(X), tmp))
        out.append(_members(GMMClassifier([2, 1], covariance_type=ct, **kw).fit(X, y), tmp))
    return out


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "mutated.bgmm"


# ----------------------------------------------------------------------------
# Strategies
# ----------------------------------------------------------------------------
EXTREME_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 3.0, 1e-30, 1e30, 1e-300, -1e-300, 5e-324, 1e300,
                  -1e300, 1e308, 1.7e308, -1.7e308, math.nan, math.inf, -math.inf]
EXTREME_INTS = [0, 1, -1, 2, 3, 624, 625, 10 ** 9, -10 ** 9, 2 ** 31, 2 ** 63, -2 ** 63, 2 ** 64,
                10 ** 30]
ARRAY_KEYS = [f"a{i}" for i in range(12)]

TAGS = [
    {"__strarray__": "<U100000000", "shape": [1], "values": ["x"]},
    {"__strarray__": "<U1", "shape": [0, 10 ** 18], "values": []},
    {"__strarray__": "<U3", "shape": [2], "values": ["a", "b"]},
    {"__scalar__": "|S1000000000", "value": "00"},
    {"__scalar__": "<U100000000", "value": "x"},
    {"__scalar__": "<f8", "value": 1e308}, {"__scalar__": "<i8", "value": 2 ** 70},
    {"__scalar__": "<f16", "value": 1.0},
    {"__device__": "cuda:99999999999999999999"}, {"__device__": "cuda:0"},
    {"__device__": "cpu"},
    {"__float__": "nan"}, {"__float__": "inf"}, {"__float__": "-inf"},
    {"__objarray__": [2], "values": [1, "a"]}, {"__objarray__": [10 ** 12, 0], "values": []},
    {"__objarray__": [1000000000], "values": [1]},
    {"__tuple__": [1, 2]}, {"__dict__": [[1, 2]]}, {"__dict__": [[[1], 2]]},
    {"__bytes__": "zz"}, {"__bytes__": "00ff"},
    {"__randomstate__": {"keys": {"__array__": "a0"}, "pos": 10 ** 9, "has_gauss": 0,
                         "cached_gaussian": 0.0}},
    {"__tensor__": {"__array__": "a0"}},
    {"__estimator__": "BayesianGMM", "params": {}, "state": {}},
    {"__estimator__": "GMMClassifier", "params": {}, "state": {"weights_": 1}},
    {"__priors__": {}},
]

leaves = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from(EXTREME_INTS), st.integers(-2 ** 70, 2 ** 70),
    st.sampled_from(EXTREME_FLOATS), st.floats(),
    st.text(max_size=6),
    st.sampled_from(["cpu", "full", "tied", "diag", "spherical", "BayesianGMM", "GMMClassifier",
                     "nan", *ARRAY_KEYS]),
    st.sampled_from(TAGS),
    st.sampled_from(ARRAY_KEYS).map(lambda k: {"__array__": k}),
    st.sampled_from(EXTREME_FLOATS).map(lambda v: [v, v]),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(max_size=4), inner, max_size=2),
        st.fixed_dictionaries({"__priors__": st.fixed_dictionaries(
            {f: inner for f in ("weight_concentration", "mean_loc", "mean_scale", "scale_shape",
                                "scale_rate", "covariance_dof", "covariance_scale")})}),
    ),
    max_leaves=6)
# The tags a third of the time: they reach the decoder's allocations.  Each
# draw is a fresh copy: later mutations edit it in place.
json_values = st.one_of(st.sampled_from(TAGS), values, values).map(copy.deepcopy)

SAFETENSORS_DTYPES = ["bool", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64",
                      "uint64", "float16", "float32", "float64"]


def _paths(value, path=()):
    """Every node of a JSON document, as a path of keys and indices."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))


def _replace(doc, path, value):
    if not path:
        return value
    node = doc
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return doc


def _cast(values: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(values).astype(dtype)   # 0-d arithmetic gives numpy scalars


@st.composite
def new_array(draw, original: np.ndarray) -> np.ndarray:
    """A replacement for ``original``: a random array of any shape and
    dtype, the original scaled by an extreme factor, or the original with
    one element made extreme."""
    how = draw(st.sampled_from(["random", "scaled", "element"]))
    if how == "random" or original.size == 0:
        shape = draw(st.lists(st.integers(0, 4), max_size=3).map(tuple))
        if draw(st.booleans()):
            shape = original.shape
        values = draw(st.lists(st.sampled_from(EXTREME_FLOATS), min_size=1, max_size=4))
        flat = np.resize(np.array(values), int(np.prod(shape)))
        return _cast(flat.reshape(shape), draw(st.sampled_from(SAFETENSORS_DTYPES)))
    out = original.astype(np.float64)     # any value fits; cast back below
    if how == "scaled":
        factor = draw(st.sampled_from([0.0, -1.0, 1e-300, 1e300, math.inf])
                      | st.integers(-320, 308).map(lambda e: 10.0 ** e))
        with np.errstate(all="ignore"):
            out = out * factor
    else:
        i = draw(st.integers(0, out.size - 1))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.reshape(-1)[i] = draw(st.sampled_from(EXTREME_FLOATS + [0, -5]))
    return _cast(out, original.dtype.str)


# ----------------------------------------------------------------------------
# The property
# ----------------------------------------------------------------------------
def _zip(path, meta_bytes: bytes, arrays_bytes: bytes) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("meta.json", meta_bytes)
        zf.writestr("arrays.safetensors", arrays_bytes)


def _load_traced(path):
    """load(path) (None when refused with a ValueError) and its peak
    traced allocation (numpy's included).  Any warning is an error: a
    damaged file is refused, not reported through numpy's overflow warnings."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return persistence.load(path), tracemalloc.get_traced_memory()[1]
    except ValueError as exc:
        assert "cannot load" in str(exc)
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _test_points(est) -> np.ndarray:
    """Points a tenth of a standard deviation from each real component's mean."""
    if isinstance(est, GMMClassifier):
        real = np.arange(est.means_.shape[1])[None, :] < est.n_components_[:, None]
        means, scales = est.means_[real], est.scales_[real]
    else:
        means, scales = est.means_, est.scales_
    with np.errstate(all="ignore"):
        return np.r_[means, means + 0.1 * scales]


def _check(path) -> None:
    size = path.stat().st_size
    est, peak = _load_traced(path)
    assert peak <= PEAK_FACTOR * size + PEAK_SLACK, (peak, size)
    if est is None or not hasattr(est, "weights_"):
        return
    X = _test_points(est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.predict(X)
        proba = est.predict_proba(X)
        assert np.all(np.isfinite(proba)) and np.allclose(proba.sum(1), 1), proba
        if isinstance(est, GMMClassifier):
            assert np.all(np.isfinite(est.predict_log_proba(X)))
        else:
            assert np.all(np.isfinite(est.score_samples(X)))


def _write(path, meta: dict, arrays: dict) -> None:
    _zip(path, json.dumps(meta).encode(), safetensors.numpy.save(arrays))


def _base(bases, data):
    meta, arrays = data.draw(st.sampled_from(bases))
    return json.loads(json.dumps(meta)), dict(arrays)


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_json_mutations_fail_cleanly_or_predict(bases, target, data):
    meta, arrays = _base(bases, data)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(list(_paths(meta))))
        node = meta
        for p in path:
            node = node[p]
        if isinstance(node, dict) and data.draw(st.booleans()):
            # A new entry (an attribute, a tag's extra key) rather than a new value.
            key = data.draw(st.sampled_from(["extra_", "predict", "__array__", "values", "x"]))
            node[key] = data.draw(json_values)
        else:
            meta = _replace(meta, path, data.draw(json_values))
    _write(target, meta, arrays)
    _check(target)


@settings(max_examples=400, **FUZZ)
@given(data=st.data())
def test_array_mutations_fail_cleanly_or_predict(bases, target, data):
    meta, arrays = _base(bases, data)
    for _ in range(data.draw(st.integers(1, 2))):
        key = data.draw(st.sampled_from(sorted(arrays)))
        arrays[key] = data.draw(new_array(arrays[key]))
    _write(target, meta, arrays)
    _check(target)


@settings(max_examples=200, **FUZZ)
@given(data=st.data())
def test_truncated_and_flipped_members_fail_cleanly_or_predict(bases, target, data):
    meta, arrays = _base(bases, data)
    members = [json.dumps(meta).encode(), safetensors.numpy.save(arrays)]
    i = data.draw(st.integers(0, 1))
    payload = bytearray(members[i])
    pos = data.draw(st.integers(0, len(payload) - 1))
    if data.draw(st.booleans()):
        del payload[pos:]
    else:
        payload[pos] ^= data.draw(st.integers(1, 255))
    members[i] = bytes(payload)
    _zip(target, *members)
    _check(target)


def test_unmutated_files_load_and_allocate_little(bases, target):
    """The property's baseline: the real files load, within the bound."""
    for meta, arrays in bases:
        _write(target, meta, arrays)
        est, peak = _load_traced(target)
        assert est is not None and hasattr(est, "weights_")
        assert peak <= PEAK_FACTOR * target.stat().st_size + PEAK_SLACK
        _check(target)

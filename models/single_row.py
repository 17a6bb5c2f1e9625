"""One feature vector through a LightGBM booster in microseconds: the C API's fast path.

``Booster.predict`` rebuilds a predictor, parses its parameters and converts its input on
every call: for one row that setup is ~100 us of a ~110 us call. LightGBM's C API keeps
that work in a *FastConfig* (``LGBM_BoosterPredictForMatSingleRowFastInit``) and then
scores a row with ``LGBM_BoosterPredictForMatSingleRowFast`` alone. The trees, the
missing-value handling (NaN) and the output transform are LightGBM's own: the result is
the one ``Booster.predict`` returns, bit for bit (the tests hold it to 1e-12).

:class:`SingleRowBooster` holds two FastConfigs per booster -- the normal prediction
(the binary objective's probability, what ``Booster.predict`` returns) and the SHAP
contributions (``pred_contrib``) -- and frees them with ``LGBM_FastConfigFree`` when
closed or garbage-collected. It keeps the booster alive as long as the FastConfigs
exist (they point into it). The C side scores on the calling thread (no OpenMP region)
and locks each FastConfig, so concurrent calls are safe, merely serialised.

``_LIB`` and ``Booster._handle`` are private to LightGBM: pyproject pins the tested
lightgbm range, and where either is missing every method falls back to
``Booster.predict(..., num_threads=1)`` (the same numbers, slower), with one
``RuntimeWarning`` a process.
"""

from __future__ import annotations

import ctypes
import warnings
import weakref
from typing import Any

import lightgbm as lgb
import numpy as np
from lightgbm.basic import LightGBMError

__all__ = ["SingleRowBooster"]

# constants of LightGBM's c_api.h
_PREDICT_NORMAL = 0
_PREDICT_CONTRIB = 3
_DTYPE_FLOAT64 = 1

FALLBACK_WARNING = (
    "lightgbm {version} does not expose the private C entry points the single-row fast "
    "path uses (lightgbm.basic._LIB, Booster._handle); scoring with "
    "Booster.predict(..., num_threads=1) instead (the same numbers, ~100 us slower a call)"
)


def _load_library() -> ctypes.CDLL | None:
    """LightGBM's loaded C library, opened again for our own function objects; ``None``
    when this lightgbm does not expose it (``_LIB`` is private and may go)."""
    name = getattr(getattr(lgb.basic, "_LIB", None), "_name", None)
    if not isinstance(name, str):
        return None
    lib = ctypes.CDLL(name)
    needed = (
        "LGBM_BoosterPredictForMatSingleRowFastInit",
        "LGBM_BoosterPredictForMatSingleRowFast",
        "LGBM_FastConfigFree",
        "LGBM_GetLastError",
    )
    return lib if all(hasattr(lib, symbol) for symbol in needed) else None


# our own function objects on the same loaded library (lightgbm's ``_LIB`` attributes are
# shared with the package, so their argtypes are left alone); None without it
_lib = _load_library()
_init: Any = None
_fast: Any = None
_free: Any = None
_last_error: Any = None
if _lib is not None:
    _init = _lib.LGBM_BoosterPredictForMatSingleRowFastInit
    _init.argtypes = [
        ctypes.c_void_p,  # BoosterHandle
        ctypes.c_int,  # predict_type
        ctypes.c_int,  # start_iteration
        ctypes.c_int,  # num_iteration (<= 0: all)
        ctypes.c_int,  # data_type
        ctypes.c_int32,  # ncol
        ctypes.c_char_p,  # parameter
        ctypes.POINTER(ctypes.c_void_p),  # out FastConfigHandle
    ]
    _init.restype = ctypes.c_int
    _fast = _lib.LGBM_BoosterPredictForMatSingleRowFast
    _fast.argtypes = [
        ctypes.c_void_p,  # FastConfigHandle
        ctypes.c_void_p,  # data (one row, float64)
        ctypes.POINTER(ctypes.c_int64),  # out_len
        ctypes.c_void_p,  # out_result (float64)
    ]
    _fast.restype = ctypes.c_int
    _free = _lib.LGBM_FastConfigFree
    _free.argtypes = [ctypes.c_void_p]
    _free.restype = ctypes.c_int
    _last_error = _lib.LGBM_GetLastError
    _last_error.argtypes = []
    _last_error.restype = ctypes.c_char_p

#: the fallback is announced once a process
_warned = False


def _fast_path(booster: lgb.Booster) -> bool:
    """Whether the C fast path can score ``booster``; warns once when it cannot."""
    global _warned
    if _init is not None and isinstance(getattr(booster, "_handle", None), ctypes.c_void_p):
        return True
    if not _warned:
        _warned = True
        warnings.warn(
            FALLBACK_WARNING.format(version=lgb.__version__), RuntimeWarning, stacklevel=3
        )
    return False


def _check(code: int) -> None:
    if code != 0:
        raise LightGBMError(_last_error().decode("utf-8"))


def _free_all(handles: list[ctypes.c_void_p], booster: lgb.Booster) -> None:
    """Free the FastConfigs (``booster``: kept alive by this finalizer until then)."""
    while handles:
        handle = handles.pop()
        if handle.value:
            _check(_free(handle))
    del booster


class SingleRowBooster:
    """``booster``'s predictions and contributions for one row at a time (see the module
    docstring). Binary and regression boosters (one output per row) only.

    ``predict(x)`` equals ``booster.predict(x.reshape(1, -1))[0]`` and ``contributions(x)``
    equals ``booster.predict(x.reshape(1, -1), pred_contrib=True)[0]``: ``n_features``
    SHAP values in log-odds, then the bias; they sum to the raw score.
    """

    def __init__(self, booster: lgb.Booster) -> None:
        if not isinstance(booster, lgb.Booster):
            raise TypeError(f"booster must be a lightgbm.Booster, got {type(booster).__name__}")
        if booster.num_model_per_iteration() != 1:
            raise ValueError(
                "single-row prediction supports one output per row, got "
                f"{booster.num_model_per_iteration()} models per iteration"
            )
        self.booster = booster
        self.n_features = booster.num_feature()
        # as Booster.predict: the best iteration when early stopping set one, else all
        num_iteration = booster.best_iteration
        handles: list[ctypes.c_void_p] = []
        # registered first: a failing second init still frees the first handle
        self._finalizer = weakref.finalize(self, _free_all, handles, booster)
        self._normal: ctypes.c_void_p | None = None
        self._contrib: ctypes.c_void_p | None = None
        if not _fast_path(booster):
            return
        for kind in (_PREDICT_NORMAL, _PREDICT_CONTRIB):
            handle = ctypes.c_void_p()
            _check(
                _init(
                    booster._handle,
                    kind,
                    0,
                    num_iteration,
                    _DTYPE_FLOAT64,
                    self.n_features,
                    b"",
                    ctypes.byref(handle),
                )
            )
            handles.append(handle)
        self._normal, self._contrib = handles[0], handles[1]

    def _row(self, x: Any) -> np.ndarray:
        if not self._finalizer.alive:
            raise RuntimeError("SingleRowBooster is closed")
        row = np.ascontiguousarray(x, dtype=np.float64)
        if row.shape != (self.n_features,):
            raise ValueError(
                f"x must be one row of {self.n_features} features, got shape {row.shape}"
            )
        return row

    def _rows(self, X: Any) -> np.ndarray:
        if not self._finalizer.alive:
            raise RuntimeError("SingleRowBooster is closed")
        rows = np.ascontiguousarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features:
            raise ValueError(
                f"X must be rows of {self.n_features} features, got shape {rows.shape}"
            )
        return rows

    def _predict(self, rows: np.ndarray, *, contrib: bool = False) -> np.ndarray:
        """The fallback: ``Booster.predict`` on the calling thread."""
        out = self.booster.predict(rows, pred_contrib=contrib, num_threads=1)
        return np.asarray(out, dtype=np.float64)

    def predict(self, x: Any) -> float:
        """The booster's prediction for one row (NaN: a missing feature)."""
        row = self._row(x)
        if self._normal is None:
            return float(self._predict(row.reshape(1, -1))[0])
        out = np.empty(1, dtype=np.float64)
        n = ctypes.c_int64()
        _check(_fast(self._normal, row.ctypes.data, ctypes.byref(n), out.ctypes.data))
        return float(out[0])

    def predict_rows(self, X: Any) -> np.ndarray:
        """:meth:`predict` of each row of the 2-D ``X`` (rows, ``n_features``), one fast
        call per row with no per-row conversion (a bar's symbols at once)."""
        rows = self._rows(X)
        if self._normal is None:
            return self._predict(rows)
        out = np.empty(rows.shape[0], dtype=np.float64)
        n = ctypes.c_int64()
        n_ref, handle = ctypes.byref(n), self._normal
        src, dst, stride = rows.ctypes.data, out.ctypes.data, rows.strides[0]
        for i in range(rows.shape[0]):
            _check(_fast(handle, src + i * stride, n_ref, dst + 8 * i))
        return out

    def contributions(self, x: Any) -> np.ndarray:
        """SHAP contributions of one row: one per feature, then the bias (log-odds)."""
        row = self._row(x)
        if self._contrib is None:
            return self._predict(row.reshape(1, -1), contrib=True)[0]
        out = np.empty(self.n_features + 1, dtype=np.float64)
        n = ctypes.c_int64()
        _check(_fast(self._contrib, row.ctypes.data, ctypes.byref(n), out.ctypes.data))
        return out

    def contributions_rows(self, X: Any) -> np.ndarray:
        """:meth:`contributions` of each row of the 2-D ``X`` in one call on the calling
        thread (``Booster.predict(..., pred_contrib=True)`` with one thread): one C call
        for many rows, so a worker thread takes the GIL once for all of them rather than
        once per row."""
        rows = self._rows(X)
        out = self._predict(rows, contrib=True)
        return out.reshape(rows.shape[0], self.n_features + 1)

    def close(self) -> None:
        """Free the FastConfigs now (also done when the object is garbage-collected)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __reduce__(self) -> tuple[type[SingleRowBooster], tuple[lgb.Booster]]:
        # the C handles cannot be pickled: rebuilt from the (picklable) booster
        return (type(self), (self.booster,))

"""LightGBM's C API (``c_api.h``) for one row at a time.

The package's ``Booster.predict`` validates and converts its input and builds a predictor on
every call, far more Python than predicting one row takes; ``LGBM_BoosterPredictForMatSingleRow
Fast`` skips that, with its configuration set up once. The C API is LightGBM's public interface,
the Python wrapper's handles and helpers are not: this module loads the library the package
installed, makes its own booster from the model's text, checks return codes and encodes strings
itself.
"""

from __future__ import annotations

import ctypes
import threading
import weakref
from importlib.metadata import PackageNotFoundError, distribution

import lightgbm as lgb
import numpy as np

# c_api.h's constants.
_PREDICT_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
_PREDICT_CONTRIB = 3  # C_API_PREDICT_CONTRIB
_DTYPE_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_ALL_ITERATIONS = -1
_LIBRARY_NAMES = frozenset({"lib_lightgbm.so", "lib_lightgbm.dylib", "lib_lightgbm.dll"})


class LightGBMCallError(RuntimeError):
    """A LightGBM C API call failed; the message is ``LGBM_GetLastError``'s."""


def library_path() -> str:
    """The LightGBM library the ``lightgbm`` distribution installed (its recorded files), the
    one the package itself loads: loading it again gives the same library, not a second copy."""
    try:
        files = distribution("lightgbm").files or []
    except PackageNotFoundError as error:  # pragma: no cover - lightgbm is a dependency
        raise ImportError("the lightgbm distribution is not installed") from error
    for file in files:
        if file.name in _LIBRARY_NAMES:
            return str(file.locate())
    raise ImportError("the lightgbm distribution records no LightGBM library")


_PATH = library_path()
# Two handles on the one library, with their own declarations. A PyDLL call keeps the GIL: a
# score is shorter than handing the GIL over and back, and holding it also means no two threads
# use a score's configuration at once. A CDLL call releases the GIL, for the calls that take
# far longer (contributions, loading a model) and let other threads run meanwhile.
_HOLDING = ctypes.PyDLL(_PATH)
_RELEASING = ctypes.CDLL(_PATH)
_VOID_P = ctypes.c_void_p
_INT = ctypes.c_int

_RELEASING.LGBM_GetLastError.argtypes = ()
_RELEASING.LGBM_GetLastError.restype = ctypes.c_char_p
_RELEASING.LGBM_BoosterLoadModelFromString.argtypes = (
    ctypes.c_char_p,
    ctypes.POINTER(_INT),
    ctypes.POINTER(_VOID_P),
)
_RELEASING.LGBM_BoosterGetNumFeature.argtypes = (_VOID_P, ctypes.POINTER(_INT))
_RELEASING.LGBM_BoosterFree.argtypes = (_VOID_P,)
_RELEASING.LGBM_FastConfigFree.argtypes = (_VOID_P,)
_RELEASING.LGBM_BoosterPredictForMatSingleRowFastInit.argtypes = (
    _VOID_P,  # booster
    _INT,  # predict_type
    _INT,  # start_iteration
    _INT,  # num_iteration
    _INT,  # data_type
    ctypes.c_int32,  # ncol
    ctypes.c_char_p,  # parameters
    ctypes.POINTER(_VOID_P),  # out: the configuration
)
_score_fast = _HOLDING.LGBM_BoosterPredictForMatSingleRowFast
_contrib_fast = _RELEASING.LGBM_BoosterPredictForMatSingleRowFast
for _function in (
    _RELEASING.LGBM_BoosterLoadModelFromString,
    _RELEASING.LGBM_BoosterGetNumFeature,
    _RELEASING.LGBM_BoosterFree,
    _RELEASING.LGBM_FastConfigFree,
    _RELEASING.LGBM_BoosterPredictForMatSingleRowFastInit,
):
    _function.restype = _INT
for _function in (_score_fast, _contrib_fast):
    _function.argtypes = (_VOID_P, _VOID_P, ctypes.POINTER(ctypes.c_int64), _VOID_P)
    _function.restype = _INT


def _check(code: int) -> None:
    """Raise LightGBM's message when a call returned non-zero (the message is kept per thread,
    so a call on another thread in between does not replace it)."""
    if code != 0:
        message: bytes = _RELEASING.LGBM_GetLastError()
        raise LightGBMCallError(message.decode("utf-8", "replace"))


class RowBooster:
    """A booster of its own, loaded from a model's text, for predicting one row at a time."""

    def __init__(self, model: str) -> None:
        handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        _check(
            _RELEASING.LGBM_BoosterLoadModelFromString(
                model.encode("utf-8"), ctypes.byref(iterations), ctypes.byref(handle)
            )
        )
        self.handle = handle
        weakref.finalize(self, _RELEASING.LGBM_BoosterFree, handle)
        width = ctypes.c_int()
        _check(_RELEASING.LGBM_BoosterGetNumFeature(handle, ctypes.byref(width)))
        self.width: int = width.value

    @classmethod
    def of(cls, booster: lgb.Booster) -> RowBooster:
        """The trees ``booster.predict`` uses by default: up to its best iteration if it has
        one, else all."""
        return cls(booster.model_to_string())

    def scores(self) -> SingleRow:
        """Raw scores (the margin), one row at a time."""
        return SingleRow(self, _PREDICT_RAW_SCORE)

    def contributions(self) -> SingleRow:
        """Each feature's contribution to the margin then the bias (SHAP values)."""
        return SingleRow(self, _PREDICT_CONTRIB)


class SingleRow:
    """One kind of prediction for one row at a time, its configuration set up once. A
    configuration holds buffers and must not be used by two threads at once (LightGBM's own
    tests give each thread its own): a score's call holds the GIL, a contribution's takes a
    lock."""

    def __init__(self, booster: RowBooster, kind: int) -> None:
        self._booster = booster  # the configuration must not outlive its booster
        self.width = booster.width
        handle = ctypes.c_void_p()
        _check(
            _RELEASING.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster.handle,
                kind,
                0,
                _ALL_ITERATIONS,
                _DTYPE_FLOAT64,
                self.width,
                b"num_threads=1",
                ctypes.byref(handle),
            )
        )
        self._handle = handle
        weakref.finalize(self, _RELEASING.LGBM_FastConfigFree, handle)
        contributions = kind == _PREDICT_CONTRIB
        self._out = np.zeros(self.width + 1 if contributions else 1)
        self._out_pointer = self._out.ctypes.data
        self._written = ctypes.c_int64()
        self._function = _contrib_fast if contributions else _score_fast
        self._lock = threading.Lock() if contributions else None

    def __call__(self, row: np.ndarray) -> np.ndarray:
        """``row``: C-contiguous float64 of the booster's width (NaN for missing)."""
        if row.shape != (self.width,) or row.dtype != np.float64 or not row.flags.c_contiguous:
            raise ValueError(f"expected a contiguous float64 row of {self.width} features")
        if self._lock is None:
            return self._predict(row)
        with self._lock:
            return self._predict(row)

    def _predict(self, row: np.ndarray) -> np.ndarray:
        _check(
            self._function(
                self._handle, row.ctypes.data, ctypes.byref(self._written), self._out_pointer
            )
        )
        return self._out.copy()

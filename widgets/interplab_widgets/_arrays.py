"""Turn array-likes from any framework into checked numpy arrays and wire bytes.

Views never import torch: a tensor is recognised by its ``detach`` method, so a
pattern straight out of a TransformerLens cache (even one that requires grad)
works, and so do JAX/CuPy arrays that numpy can read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

WIRE_DTYPES = ("float32", "float16")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as a float numpy array, detaching torch tensors by duck typing."""
    if hasattr(x, "detach"):
        x = x.detach()
        if hasattr(x, "cpu"):
            x = x.cpu()
        if hasattr(x, "float") and str(getattr(x, "dtype", "")) == "torch.bfloat16":
            x = x.float()  # numpy has no bfloat16
        x = x.numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: could not convert to an array ({err}); pass a numpy array or tensor.") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected numbers, got dtype {arr.dtype}; pass a numeric array or tensor.")
    if np.iscomplexobj(arr):
        # Casting would silently drop the imaginary part.
        raise ValueError(
            f"{name}: expected real numbers, got complex dtype {arr.dtype}; pass the part you mean to show, "
            f"e.g. np.abs({name}) or {name}.real."
        )
    return arr.astype(np.float64, copy=False) if arr.dtype == bool else arr


def to_int_array(x: Any, name: str) -> np.ndarray:
    """Return ``x`` as int64, refusing fractional values instead of truncating them."""
    raw = getattr(x, "dtype", None)
    is_bool = "bool" in str(raw) if raw is not None else isinstance(x, (list, tuple)) and np.asarray(x).dtype == bool
    arr = to_numpy(x, name)
    if is_bool:
        raise ValueError(f"{name}: expected integer ids, got booleans; pass token ids, e.g. tokens[0, 1:].")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.size and not (np.isfinite(arr).all() and np.array_equal(arr, np.round(arr))):
            bad = np.argwhere(~(np.isfinite(arr) & (arr == np.round(arr))))[0]
            raise ValueError(
                f"{name}: expected integer ids, got {arr[tuple(bad)].item()!r} at index {tuple(int(i) for i in bad)}; "
                f"ids are never rounded, so pass integers, e.g. np.asarray(ids, dtype=np.int64)."
            )
    return arr.astype(np.int64)


def check_int(value: Any, name: str) -> int:
    """Return ``value`` as int if it is an integer (numpy ints included), else raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name}: expected an int, got {value!r} ({type(value).__name__}).")
    return int(value)


def check_rank(arr: np.ndarray, name: str, ranks: Sequence[int], layout: str) -> None:
    """Raise if ``arr`` has a rank outside ``ranks``; ``layout`` names the expected axes."""
    if arr.ndim not in ranks:
        hint = ""
        if arr.ndim == max(ranks) + 1 and arr.shape[0] == 1:
            hint = f" It looks batched: drop the batch axis, e.g. {name}[0]."
        raise ValueError(f"{name}: expected shape {layout}, got {arr.ndim}-D array of shape {tuple(arr.shape)}.{hint}")


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise with the position of the first NaN/Inf, because colour scales break on them."""
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        value = arr[tuple(bad)]
        count = int((~np.isfinite(arr)).sum())
        raise ValueError(
            f"{name}: contains {count} non-finite value(s) (first {value} at index {tuple(int(i) for i in bad)}); "
            "replace NaN/Inf first, e.g. np.nan_to_num(x)."
        )


def check_axis(arr: np.ndarray, name: str, axis: int, expected: int, what: str) -> None:
    """Raise if ``arr.shape[axis]`` differs from ``expected`` (the length of ``what``)."""
    if arr.shape[axis] != expected:
        raise ValueError(
            f"{name}: axis {axis % arr.ndim} has length {arr.shape[axis]} but there are {expected} {what}; "
            f"they must match (shape is {tuple(arr.shape)})."
        )


def check_cap(value: int, cap: int, what: str, how: str) -> None:
    """Raise if a size is past a cap; ``how`` tells the user how to slice down."""
    if value > cap:
        raise ValueError(f"too many {what}: {value} > cap {cap}. {how}")


def check_dtype(dtype: str) -> str:
    """Return ``dtype`` if it is one the browser side decodes."""
    if dtype not in WIRE_DTYPES:
        raise ValueError(f"dtype must be one of {WIRE_DTYPES}, got {dtype!r}.")
    return dtype


def to_wire(arr: np.ndarray, dtype: str = "float32") -> bytes:
    """Little-endian raw bytes for a ``traitlets.Bytes`` trait (a DataView in JS)."""
    return np.ascontiguousarray(arr, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()


def from_wire(data: bytes, dtype: str, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`to_wire`, for tests and for reading state back in Python."""
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(tuple(shape))


def check_tokens(tokens: Any, name: str = "tokens") -> list[str]:
    """Return tokens as a list of str; a single string is almost always a mistake."""
    if isinstance(tokens, str):
        raise ValueError(f"{name}: expected a list of token strings, got one str; e.g. model.to_str_tokens(text).")
    try:
        out = list(tokens)
    except TypeError as err:
        raise ValueError(f"{name}: expected a list of token strings, got {type(tokens).__name__}.") from err
    bad = [i for i, t in enumerate(out) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{name}: item {bad[0]} is {type(out[bad[0]]).__name__}, expected str; convert token ids with model.to_str_tokens.")
    return out

"""Numpy <-> Arrow columns for LeRobot features, and parquet reading with clear errors.

A feature of shape (1,) is a plain column, (n,) a fixed-size list (as LeRobot writes them),
higher ranks nested lists (what Hugging Face `datasets` reads as Array2D/3D).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embodied.data.format import DatasetError

ARROW_TYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
               "int16": pa.int16(), "int8": pa.int8(), "uint8": pa.uint8(), "uint16": pa.uint16(),
               "bool": pa.bool_(), "string": pa.string()}


def to_column(values: Any, feature: dict[str, Any], name: str) -> pa.Array:
    dtype, shape = feature["dtype"], tuple(feature["shape"])
    if dtype not in ARROW_TYPES:
        raise DatasetError(f"feature {name!r}: dtype {dtype!r} not supported (accepted: {sorted(ARROW_TYPES)})")
    if dtype == "string":
        return pa.array([str(v) for v in values], type=pa.string())
    arr = np.asarray(values, dtype=np.dtype(dtype))
    t = len(arr)
    if shape == (1,):
        return pa.array(arr.reshape(t), type=ARROW_TYPES[dtype])
    if arr.shape[1:] != shape:
        raise DatasetError(f"feature {name!r}: frames of shape {arr.shape[1:]}, expected {shape}")
    column: pa.Array = pa.array(arr.reshape(-1), type=ARROW_TYPES[dtype])
    if len(shape) == 1:
        return pa.FixedSizeListArray.from_arrays(column, shape[0])
    for size in reversed(shape):
        n = len(column) // size
        column = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * size), column)
    return column


def from_column(column: pa.ChunkedArray | pa.Array, feature: dict[str, Any], name: str, where: Path) -> np.ndarray:
    """The column as a numpy array [T, *shape] (strings: an object array of str)."""
    dtype, shape = feature["dtype"], tuple(feature["shape"])
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    t = len(column)
    if dtype == "string":
        return np.array(column.to_pylist(), dtype=object)
    depth = 0 if shape == (1,) else len(shape)
    flat = column
    for _ in range(depth):
        if not pa.types.is_list(flat.type) and not pa.types.is_fixed_size_list(flat.type) \
                and not pa.types.is_large_list(flat.type):
            raise DatasetError(f"{where}: column {name!r} has type {column.type}, expected shape {shape}")
        flat = flat.flatten()
    values = flat.to_numpy(zero_copy_only=False)
    want = t * int(np.prod(shape))
    if values.size != want:
        raise DatasetError(f"{where}: column {name!r} holds {values.size} values for {t} frames of shape {shape}")
    values = values.astype(np.dtype(dtype), copy=False)
    return values.reshape((t,) if shape == (1,) else (t, *shape))


def read_table(path: Path, columns: list[str] | None = None) -> pa.Table:
    if not path.exists():
        raise DatasetError(f"{path}: missing")
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: not a readable parquet file ({e})") from e


def write_table(path: Path, table: pa.Table) -> None:
    """Write through a temp file, then rename (never a half-written parquet file)."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def tasks_table(tasks: list[str]) -> pa.Table:
    """meta/tasks.parquet as pandas would write a frame indexed by task (what LeRobot reads)."""
    import json

    meta = {"index_columns": ["__index_level_0__"],
            "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                                "metadata": {"encoding": "UTF-8"}}],
            "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                         "numpy_type": "int64", "metadata": None},
                        {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                         "numpy_type": "object", "metadata": None}],
            "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0"}
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    return table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})


def read_tasks(path: Path) -> list[str]:
    table = read_table(path)
    names = [c for c in ("task", "__index_level_0__") if c in table.column_names]
    if "task_index" not in table.column_names or not names:
        raise DatasetError(f"{path}: needs columns 'task_index' and the task string; has {table.column_names}")
    index = table.column("task_index").to_pylist()
    text = table.column(names[0]).to_pylist()
    out = [""] * len(index)
    for i, s in zip(index, text):
        if not 0 <= i < len(index):
            raise DatasetError(f"{path}: task_index {i} out of range [0, {len(index) - 1}]")
        out[i] = s
    return out

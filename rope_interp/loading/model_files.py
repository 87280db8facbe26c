"""Model files checked against themselves before a library reads them, so that a truncated,
garbage or lying file is one line naming the file and what is wrong, never a traceback, a hang
or gigabytes allocated for a count the file cannot hold.

- `check_gguf(path)`: the whole GGUF header (version, counts, every key/value and tensor
  record) walked within the file's bytes, every tensor's data inside the file, and the model
  fields of the metadata in range; returns the scalar metadata.
- `check_safetensors(path)`: the header length, JSON, dtypes, shapes and data offsets
  against the file's size; returns the header.
- `check_checkpoint_dir(path)`: a Hugging Face checkpoint folder: no FIFO, device or broken
  link in it, config.json a JSON object whose fields have the right types and ranges
  (`rope_interp.loading.model_config`), safetensors weights (pickles refused) that pass
  `check_safetensors` and are large enough for the model the config describes; returns the config.
- `library_errors(what)`: the last line of defence around the libraries' own loaders.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rope_interp.errors import RopeInterpError
from rope_interp.loading.model_config import check_config, minimum_parameters
from rope_interp.utils.files import check_regular_file, special_kind

_GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (2, 3)
# GGUF value types: id -> struct format of a scalar (8: string, 9: array).
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q"}
_GGUF_SCALARS[12] = "d"
_GGUF_MAX_DIMS = 4
_MAX_STRING = 1 << 24  # 16 MB: no key, value or tensor name is longer
_MAX_HEADER = 100 * 2**20  # safetensors' own limit
_MAX_CONFIG = 16 * 2**20
_SAFETENSORS_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1}
_SAFETENSORS_SIZES |= {"I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4}
_SAFETENSORS_SIZES |= {"I64": 8, "U64": 8, "F64": 8}
_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
_INDEX = "model.safetensors.index.json"


# ---- GGUF ------------------------------------------------------------------------------------
class _Damaged(Exception):
    """A GGUF header that does not fit its file (internal: becomes a `RopeInterpError`)."""


class _GGUFReader:
    """Bounded reads over a GGUF file's bytes: any read past the end raises `_Damaged`."""

    def __init__(self, data: mmap.mmap | bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise _Damaged(f"it ends at byte {len(self.data)}, inside its header (truncated?)")
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return value

    def skip(self, n: int, what: str) -> None:
        if n > len(self.data) - self.pos:
            raise _Damaged(
                f"{what} at byte {self.pos} claims {n} bytes, more than the {len(self.data)} "
                "bytes of the file hold"
            )
        self.pos += n

    def string(self, what: str) -> str:
        length = self.take("Q")
        if length > _MAX_STRING:
            raise _Damaged(f"{what} at byte {self.pos - 8} claims a length of {length} bytes")
        start = self.pos
        self.skip(length, what)
        return bytes(self.data[start : self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int, what: str, depth: int = 0) -> Any:
        if kind in _GGUF_SCALARS:
            return self.take(_GGUF_SCALARS[kind])
        if kind == 8:
            return self.string(what)
        if kind != 9 or depth > 1:
            raise _Damaged(f"{what} has value type {kind}, which GGUF does not define")
        item, count = self.take("I"), self.take("Q")
        if item in _GGUF_SCALARS:  # fixed-size items: skipped, not read
            self.skip(count * struct.calcsize("<" + _GGUF_SCALARS[item]), what)
            return None
        if count > len(self.data) - self.pos:  # every item takes at least one byte
            raise _Damaged(f"{what} claims {count} items, more than the file's bytes can hold")
        for _ in range(count):
            self.value(item, what, depth + 1)
        return None


def check_gguf(path: str | Path) -> dict[str, Any]:
    """The scalar metadata (key -> value) of a GGUF file whose header fits the file and whose
    model fields are in range; else a `RopeInterpError` saying what is wrong. Reads the
    header only (mapped, not loaded): ~0.2 s for the built-in model's 49k-token vocabulary."""
    path = check_regular_file(path, "GGUF file")
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size < 24:
                return _gguf_damaged(path, handle.read(4), "it is shorter than a GGUF header")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _check_gguf_bytes(path, data)
    except OSError as error:
        raise RopeInterpError(f"Cannot read GGUF file {path}: {error.strerror}.") from None


def _gguf_damaged(path: Path, magic: bytes, reason: str) -> dict:
    if magic != _GGUF_MAGIC:
        what = "empty" if not magic else "not a GGUF file (it does not start with b'GGUF')"
        raise RopeInterpError(f"{path} is {what}; give a GGUF model file.")
    raise RopeInterpError(f"GGUF file {path} is damaged: {reason}.")


def _check_gguf_bytes(path: Path, data: mmap.mmap) -> dict[str, Any]:
    if data[:4] != _GGUF_MAGIC:
        _gguf_damaged(path, bytes(data[:4]), "")
    reader = _GGUFReader(data)
    reader.pos = 4
    try:
        version = reader.take("I")
        if version not in _GGUF_VERSIONS:
            raise _Damaged(f"it says GGUF version {version}; rope-interp reads versions 2 and 3")
        n_tensors, n_kv = reader.take("Q"), reader.take("Q")
        for count, what, least in ((n_tensors, "tensors", 24), (n_kv, "metadata keys", 13)):
            if count > len(data) // least:
                raise _Damaged(f"it claims {count} {what}, more than its {len(data)} bytes hold")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = reader.string("a metadata key")
            metadata[key] = reader.value(reader.take("I"), f"metadata {key!r}")
        tensors = [_gguf_tensor(reader) for _ in range(n_tensors)]
    except _Damaged as damage:
        raise RopeInterpError(f"GGUF file {path} is damaged: {damage}.") from None
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1:
        raise RopeInterpError(f"GGUF file {path}: general.alignment {alignment!r} is invalid.")
    start = -(-reader.pos // alignment) * alignment
    for name, offset, size in tensors:
        if start + offset + size > len(data):
            raise RopeInterpError(
                f"GGUF file {path} is truncated or damaged: tensor {name!r} ends at byte "
                f"{start + offset + size}, past the end of the file ({len(data)} bytes)."
            )
    if not tensors:
        raise RopeInterpError(f"GGUF file {path} holds no tensors; give a model file.")
    _check_gguf_fields(path, metadata)
    return metadata


def _gguf_tensor(reader: _GGUFReader) -> tuple[str, int, int]:
    """One tensor record: (name, data offset, data bytes)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    name = reader.string("a tensor name")
    n_dims = reader.take("I")
    if not 1 <= n_dims <= _GGUF_MAX_DIMS:
        raise _Damaged(f"tensor {name!r} has {n_dims} dimensions")
    dims = [reader.take("Q") for _ in range(n_dims)]
    kind, offset = reader.take("I"), reader.take("Q")
    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        raise _Damaged(f"tensor {name!r} has data type {kind}, unknown to GGUF") from None
    if dims[0] % block:
        raise _Damaged(f"tensor {name!r}: {dims[0]} values per row do not fill blocks of {block}")
    return name, offset, math.prod(dims) // block * block_bytes


def _check_gguf_fields(path: Path, metadata: dict[str, Any]) -> None:
    """The model fields transformers reads from the metadata, in range."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise RopeInterpError(f"GGUF file {path} names no model (general.architecture).")
    positive: tuple[str, ...] = ("block_count", "embedding_length", "attention.head_count")
    positive += ("context_length",)
    positive += ("feed_forward_length", "attention.head_count_kv", "rope.dimension_count")
    for field in positive:
        value = metadata.get(f"{arch}.{field}")
        if value is not None and (isinstance(value, bool | float) or value < 1):
            raise RopeInterpError(
                f"GGUF file {path}: field {arch}.{field} = {value!r} is invalid; it must be a "
                "positive integer."
            )
    for field in ("rope.freq_base", "rope.scaling.factor"):
        value = metadata.get(f"{arch}.{field}")
        if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
            raise RopeInterpError(
                f"GGUF file {path}: field {arch}.{field} = {value!r} is invalid; it must be a "
                "finite number > 0."
            )


# ---- safetensors -----------------------------------------------------------------------------
def check_safetensors(path: str | Path, what: str = "Weights file") -> dict[str, Any]:
    """The header of a safetensors file whose every tensor lies inside the file with the
    bytes its dtype and shape need, covering the data exactly; else a `RopeInterpError`."""
    path = check_regular_file(path, what)
    size = path.stat().st_size
    damaged = f"{what} {path} is not a valid safetensors file"
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise RopeInterpError(f"{damaged}: it has {size} bytes, fewer than a header.")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER, size - 8):
                raise RopeInterpError(
                    f"{damaged}: its header claims {length} bytes, but the file has "
                    f"{size} (truncated or damaged)."
                )
            raw = handle.read(length)
    except OSError as error:
        raise RopeInterpError(f"Cannot read {what.lower()} {path}: {error.strerror}.") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RopeInterpError(f"{damaged}: its header is not JSON (damaged).") from None
    if not isinstance(header, dict):
        raise RopeInterpError(f"{damaged}: its header is not a JSON object.")
    _check_tensor_layout(f"{what} {path}", header, size - 8 - length)
    return header


def _check_tensor_layout(where: str, header: dict, data_bytes: int) -> None:
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise RopeInterpError(f"{where}: __metadata__ must map names to strings.")
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        info = info if isinstance(info, dict) else {}
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in _SAFETENSORS_SIZES:
            raise RopeInterpError(f"{where}: tensor {name!r} has unknown dtype {dtype!r}.")
        if not isinstance(shape, list) or not isinstance(offsets, list):
            raise RopeInterpError(f"{where}: tensor {name!r} has an invalid shape or offsets.")
        if not _ints(shape, 0) or not _ints(offsets, 0) or len(offsets) != 2:
            raise RopeInterpError(f"{where}: tensor {name!r} has an invalid shape or offsets.")
        begin, end = offsets
        if end > data_bytes:
            raise RopeInterpError(
                f"{where} is truncated or its header is wrong: tensor {name!r} ends at data "
                f"byte {end}, past the {data_bytes} bytes of data in the file."
            )
        if end - begin != math.prod(shape) * _SAFETENSORS_SIZES[dtype]:
            raise RopeInterpError(
                f"{where}: tensor {name!r} has {end - begin} bytes for shape {shape} of "
                f"{dtype} (damaged header)."
            )
        spans.append((begin, end))
    covered = 0
    for begin, end in sorted(spans):
        if begin != covered:
            raise RopeInterpError(f"{where}: its tensors overlap or leave gaps (damaged header).")
        covered = end
    if covered != data_bytes:
        raise RopeInterpError(
            f"{where}: its tensors hold {covered} bytes but the file has {data_bytes} bytes of "
            "data (truncated, extended or damaged)."
        )


def _ints(value: Any, minimum: int) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value
    )


# ---- checkpoint folders ----------------------------------------------------------------------
def check_checkpoint_dir(path: str | Path) -> dict[str, Any]:
    """The config (a dict) of a Hugging Face checkpoint folder that rope-interp can load:
    nothing in it that would block a read, config.json valid, safetensors weights whose
    headers fit their files and are large enough for the model the config describes."""
    path = Path(path).expanduser()
    for entry in sorted(path.iterdir()):
        if kind := special_kind(entry):
            raise RopeInterpError(
                f"{entry} in checkpoint folder {path} is {kind}, not a file; a checkpoint "
                "folder holds regular files only."
            )
        if entry.is_symlink() and not entry.exists():
            raise RopeInterpError(
                f"{entry} in checkpoint folder {path} is a broken symbolic link (or a loop)."
            )
    config = read_config(path / "config.json")
    check_config(config, f"{path / 'config.json'}")
    weight_bytes = sum(f.stat().st_size for f in weight_files(path) if check_safetensors(f))
    needed = minimum_parameters(config)
    if needed > 8 * weight_bytes:  # not even one bit per parameter
        raise RopeInterpError(
            f"{path / 'config.json'} describes a model of at least {needed} parameters, more "
            f"than the {weight_bytes} bytes of weights in {path} can hold: the config does not "
            "belong to these weights (check vocab_size, hidden_size and the layer counts)."
        )
    return config


def read_config(config_file: Path) -> dict[str, Any]:
    """config.json as a dict; a `RopeInterpError` unless it is a readable JSON object."""
    check_regular_file(config_file, "Checkpoint config")
    if config_file.stat().st_size > _MAX_CONFIG:
        raise RopeInterpError(f"{config_file} is larger than 16 MB: not a model config.")
    try:
        config = json.loads(config_file.read_bytes().decode("utf-8"))
    except OSError as error:
        raise RopeInterpError(f"Cannot read {config_file}: {error.strerror}.") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else error
        raise RopeInterpError(f"{config_file} is not valid JSON ({reason}); fix it.") from None
    if not isinstance(config, dict):
        raise RopeInterpError(
            f"{config_file} holds a JSON {type(config).__name__}, not an object of model fields."
        )
    return config


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder (its index's files if it has one); a
    `RopeInterpError` when there are none, saying to convert a pickled checkpoint."""
    index = path / _INDEX
    if index.exists():
        weight_map = read_config(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(
            isinstance(v, str) and "/" not in v for v in weight_map.values()
        ):
            raise RopeInterpError(f"{index} has no valid weight_map (name -> file in the folder).")
        return [path / name for name in sorted(set(weight_map.values()))]
    files = sorted(path.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for pattern in _PICKLES for p in path.glob(pattern))
    if pickles:
        raise RopeInterpError(
            f"{path} holds pickled weights only ({', '.join(pickles[:3])}), which rope-interp "
            "never loads (a pickle can run code); convert the checkpoint to safetensors, e.g. "
            "model.save_pretrained(folder, safe_serialization=True)."
        )
    raise RopeInterpError(f"{path} has no weights (*.safetensors); give a complete checkpoint.")


# ---- the libraries' own errors ---------------------------------------------------------------
@contextlib.contextmanager
def library_errors(what: str) -> Iterator[None]:
    """Turn a library's failure to load a model that passed the checks above into one
    `RopeInterpError` naming `what` and the library's reason (no traceback)."""
    from safetensors import SafetensorError

    try:
        yield
    except RopeInterpError:
        raise
    except (
        SafetensorError,
        RuntimeError,
        ValueError,
        KeyError,
        TypeError,
        IndexError,
        ZeroDivisionError,
        struct.error,
    ) as error:
        reason = " ".join(str(error).split())[:300]
        raise RopeInterpError(
            f"{what} could not be loaded ({type(error).__name__}: {reason}); the file is damaged "
            "or describes a model rope-interp does not support."
        ) from None

"""Tensors of the Open Inference Protocol (KServe V2) over HTTP, with the binary-data
extension: parsing an inference request and writing an inference response.

A request body is JSON, or (binary-data extension) a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors in input order. Raw
BYTES tensors are, per element, a 4-byte little-endian length and the bytes; numeric
tensors are little-endian arrays. In the JSON form BYTES elements of this service's
inputs are base64 strings, since images and bitstreams are not text.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from services.common.errors import ErrorCode, ServiceError
from services.common.http_limits import length_value

HEADER_LENGTH = "Inference-Header-Content-Length"
# BYTES data nests as its shape does; this service's input is [N], Triton's clients send
# at most a few levels. Deeper is no tensor.
_MAX_DATA_DEPTH = 8
_NUMPY_TYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "UINT8": "u1"}


def _invalid(message: str) -> ServiceError:
    return ServiceError(ErrorCode.INVALID_ARGUMENT, message)


def load_json(data: bytes, what: str) -> Any:
    """``data`` parsed as JSON; INVALID_ARGUMENT for anything else, deep nesting included
    (the parser recurses per level, so 1,000 nested brackets would raise RecursionError)."""
    try:
        return json.loads(data)
    except RecursionError:
        raise _invalid(f"{what} is JSON nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"{what} is not JSON: {exc}") from None


@dataclass
class InferRequest:
    id: str
    inputs: dict[str, list[bytes]]
    parameters: dict[str, Any]
    # Requested outputs: name -> wants binary; empty means every output, as JSON unless
    # the request asks binary_data_output.
    outputs: dict[str, bool] = field(default_factory=dict)

    @property
    def binary_by_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request's BYTES inputs (other datatypes are refused: no model here takes them)."""
    if header_length is not None:
        split = length_value(header_length)
        if split is None or split > len(body):
            raise _invalid(f"{HEADER_LENGTH} must be ASCII digits, a length within the body")
        header_bytes, binary = body[:split], body[split:]
    else:
        header_bytes, binary = body, b""
    header = load_json(header_bytes, "the inference request")
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise _invalid("the inference request needs an 'inputs' list")
    inputs: dict[str, list[bytes]] = {}
    offset = 0
    for spec in header["inputs"]:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise _invalid("each input needs a name")
        if spec.get("datatype") != "BYTES":
            raise _invalid(f"input {spec['name']!r}: datatype must be BYTES")
        params = spec.get("parameters") or {}
        size = params.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise _invalid(f"input {spec['name']!r}: binary_data_size beyond the body")
            elements = _split_bytes(binary[offset : offset + size], spec["name"])
            offset += size
        else:
            elements = _json_bytes(spec.get("data"), spec["name"])
        if _count(spec.get("shape")) != len(elements):
            raise _invalid(f"input {spec['name']!r}: shape does not match its data")
        inputs[spec["name"]] = elements
    outputs = {
        str(o.get("name")): bool((o.get("parameters") or {}).get("binary_data", False))
        for o in header.get("outputs") or []
        if isinstance(o, dict)
    }
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _invalid("'parameters' must be an object")
    return InferRequest(str(header.get("id", "")), inputs, parameters, outputs)


def _count(shape: Any) -> int:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _invalid("shape must be a list of non-negative integers")
    return int(np.prod(shape)) if shape else 1


def _split_bytes(raw: bytes, name: str) -> list[bytes]:
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _invalid(f"input {name!r}: truncated BYTES element length")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise _invalid(f"input {name!r}: BYTES element runs past the data")
        elements.append(raw[offset : offset + length])
        offset += length
    return elements


def _json_bytes(data: Any, name: str) -> list[bytes]:
    flat = _flatten(data)
    try:
        return [base64.b64decode(item, validate=True) for item in flat]
    except (binascii.Error, TypeError, ValueError):
        raise _invalid(f"input {name!r}: JSON BYTES data must be base64 strings") from None


def _flatten(data: Any) -> list[str]:
    """The strings of (nested lists of) strings, in order; iterative, with a depth bound."""
    flat: list[str] = []
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            flat.append(item)
        elif isinstance(item, list) and depth < _MAX_DATA_DEPTH:
            stack.extend((child, depth + 1) for child in reversed(item))
        elif isinstance(item, list):
            raise _invalid(f"JSON BYTES data nests deeper than {_MAX_DATA_DEPTH} levels")
        else:
            raise _invalid("JSON BYTES data must be (nested lists of) strings")
    return flat


@dataclass
class OutputTensor:
    name: str
    datatype: str  # "BYTES" or a key of _NUMPY_TYPES
    shape: list[int]
    values: list[Any]  # flat, row-major

    def raw(self) -> bytes:
        if self.datatype == "BYTES":
            parts = []
            for value in self.values:
                data = value if isinstance(value, bytes) else str(value).encode()
                parts.append(struct.pack("<I", len(data)) + data)
            return b"".join(parts)
        return np.asarray(self.values, dtype=_NUMPY_TYPES[self.datatype]).tobytes()

    def json_data(self) -> list[Any]:
        if self.datatype == "BYTES":
            return [v.decode() if isinstance(v, bytes) else str(v) for v in self.values]
        return [float(v) if self.datatype.startswith("FP") else int(v) for v in self.values]


def write_response(
    model: str, version: str, request: InferRequest, tensors: list[OutputTensor]
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON header's length."""
    wanted = request.outputs
    chosen = [t for t in tensors if not wanted or t.name in wanted]
    unknown = set(wanted) - {t.name for t in tensors}
    if unknown:
        raise _invalid(f"model {model!r} has no output(s) {sorted(unknown)}")
    outputs, binary = [], []
    for tensor in chosen:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if wanted.get(tensor.name, request.binary_by_default if not wanted else False):
            raw = tensor.raw()
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary.append(raw)
        else:
            entry["data"] = tensor.json_data()
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request.id:
        header["id"] = request.id
    encoded = json.dumps(header).encode()
    if not binary:
        return encoded, None
    return encoded + b"".join(binary), len(encoded)

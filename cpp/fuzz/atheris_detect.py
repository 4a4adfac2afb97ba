"""atheris fuzz target for the Python entry, ``Model.detect(body, content_type)``.

    python cpp/fuzz/atheris_detect.py [libFuzzer flags] [corpus dirs]    (scripts/fuzz.sh runs it)

Input: byte 0 picks the content type family (bit 0: PNG or JPEG), the body's Python type (bits
1-2: bytes, bytearray, memoryview, binary file) and how the content type is spelled (bits 3-5:
exact, upper case with parameters, with whitespace before the parameters, the other format, empty,
arbitrary text taken from the input, ...). The rest is the body. The same selector bit 0 as
fuzz_pipeline's, so its corpus seeds this target.

What must hold: detect() returns a DetectAnomalyResult dict shaped like boto3's (types, keys,
areas summing to 1, a PNG mask of the image's size) or raises ValidationException; any other
exception is a finding. The openlookout Python package is instrumented for coverage; the native
core is not (it is fuzzed by the libFuzzer targets), so atheris steers by the Python layer.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import make_fuzz_model  # noqa: E402

import openlookout  # noqa: E402

# openlookout's modules (an editable install loads them through a custom finder, which
# instrument_imports() handles poorly): instrument every Python function loaded so far.
atheris.instrument_all()

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _load_model() -> openlookout.Model:
    directory = tempfile.mkdtemp(prefix="openlookout-atheris-")
    make_fuzz_model.write_package(directory)
    return openlookout.load_model(
        directory, min_side=1, max_side=1024, intra_op_threads=1, inter_op_threads=1
    )


MODEL = _load_model()


def _content_type(selector: int, fmt: str, tail: bytes) -> str:
    other = "image/jpeg" if fmt == "image/png" else "image/png"
    spelling = (selector >> 3) & 7
    return [
        fmt,
        fmt.upper() + "; charset=binary",
        fmt + " \t; q=1",
        other,
        "",
        tail[:40].decode("latin-1"),
        "image/" + tail[:8].decode("latin-1"),
        fmt + "\x00",
    ][spelling]


class Finding(Exception):
    """A broken promise of detect(): atheris reports it with the input."""


def _require(condition: bool, what: object) -> None:
    if not condition:
        raise Finding(what)


def _check_result(result: dict) -> None:
    keys = {"Source", "IsAnomalous", "Confidence", "Anomalies", "AnomalyMask"}
    _require(set(result) == keys, result)
    _require(result["Source"] == {"Type": "direct"}, result)
    _require(isinstance(result["IsAnomalous"], bool), result)
    confidence = result["Confidence"]
    _require(isinstance(confidence, float), confidence)
    _require(0.5 <= confidence <= 1.0, confidence)
    anomalies = result["Anomalies"]
    _require(anomalies[0]["Name"] == "background", anomalies)
    total = sum(a["PixelAnomaly"]["TotalPercentageArea"] for a in anomalies)
    _require(math.isclose(total, 1.0, abs_tol=1e-5), anomalies)
    mask = result["AnomalyMask"]
    _require(isinstance(mask, bytes), type(mask))
    _require(mask.startswith(PNG_SIGNATURE), mask[:16])
    json.dumps({k: v for k, v in result.items() if k != "AnomalyMask"})


def TestOneInput(data: bytes) -> None:
    if not data:
        return
    selector, body = data[0], data[1:]
    fmt = "image/jpeg" if selector & 1 else "image/png"
    content_type = _content_type(selector, fmt, body)
    wrapper = (selector >> 1) & 3
    payload = [bytes, bytearray, memoryview, io.BytesIO][wrapper](body)
    try:
        result = MODEL.detect(payload, content_type)
    except openlookout.ValidationException as e:
        _require(bool(str(e)), "ValidationException without a message")
        return
    _check_result(result)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

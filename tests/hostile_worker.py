"""Runs hostile-input cases in a child process, for tests/test_hostile_inputs.py and
tests/test_fuzz_crashers.py: a crash or a hang then fails the test that started it (naming the
case) instead of taking pytest down or blocking CI.

    python tests/hostile_worker.py CASES.pickle

CASES.pickle holds {"packages": {key: package dir}, "case_timeout": seconds,
"cases": [(name, body, content_type, package key, min_side[, original body]), ...]}. For every
case the worker
prints a JSON line {"start": i} before running it and {"case": i, "outcome": ..., "detail": ...}
after, where outcome is

  decoded         detect() answered and detect_array() of Pillow's decode of the same bytes gave
                  the same answer (the decode is correct as far as the package's model can see)
  mismatch        detect() answered, Pillow decoded the bytes, the answers differ
  pillow_refused  detect() answered but Pillow cannot decode the bytes
  decoded_as_original
                  Pillow cannot decode the bytes, and detect() answered exactly as for the case's
                  original body (given for mutated files: the mutation left the pixels alone,
                  e.g. it hit an ancillary PNG chunk that Pillow checks and libspng skips)
  validation      ValidationException (detail: the message)
  error           any other exception (detail: its repr)

A case that runs longer than case_timeout makes the worker dump its stack and exit (faulthandler).
"""

from __future__ import annotations

import faulthandler
import json
import os
import pickle
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import openlookout  # noqa: E402
import reference  # noqa: E402


def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


def run_case(model, body: bytes, content_type: str, original: bytes | None) -> tuple[str, str]:
    try:
        native = model.detect(body, content_type)
    except openlookout.ValidationException as e:
        return "validation", str(e)
    except Exception as e:
        return "error", repr(e)
    try:
        rgb = reference.decode(body)
    except Exception as e:
        if original is not None and model.detect_array(reference.decode(original)) == native:
            return "decoded_as_original", f"Pillow refuses the bytes: {e!r}"[:300]
        return "pillow_refused", repr(e)[:300]
    try:
        expected = model.detect_array(rgb)
    except Exception as e:
        return "mismatch", f"detect_array of Pillow's decode failed: {e!r}"[:300]
    if expected != native:
        return "mismatch", f"Pillow decodes {rgb.shape[1]}x{rgb.shape[0]}"
    return "decoded", f"{rgb.shape[1]}x{rgb.shape[0]}"


def main(path: str) -> None:
    with open(path, "rb") as f:
        spec = pickle.load(f)
    models: dict = {}
    for i, (_, body, content_type, key, min_side, *rest) in enumerate(spec["cases"]):
        if (key, min_side) not in models:
            models[(key, min_side)] = openlookout.load_model(
                spec["packages"][key], min_side=min_side, intra_op_threads=1, inter_op_threads=1
            )
        _emit({"start": i})
        faulthandler.dump_traceback_later(spec["case_timeout"], exit=True)
        original = rest[0] if rest else None
        outcome, detail = run_case(models[(key, min_side)], body, content_type, original)
        faulthandler.cancel_dump_traceback_later()
        _emit({"case": i, "outcome": outcome, "detail": detail})


if __name__ == "__main__":
    main(sys.argv[1])

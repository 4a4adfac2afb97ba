"""``openlookout detect``: DetectAnomalies on image files, printed as a table or as the JSON that
``aws lookoutvision detect-anomalies`` printed, optionally writing masks and overlays."""

from __future__ import annotations

import argparse
import base64
import collections
import glob
import json
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import demo
from ..errors import OpenLookoutError
from ..model import Model, load_model
from .model_options import add_model_options, model_options

__all__ = ["register", "sniff_content_type"]

# Files taken from a directory argument; a file named explicitly is read whatever its name.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GLOB_CHARACTERS = frozenset("*?[")

DESCRIPTION = """\
Runs DetectAnomalies on each image and prints the results: by default a table (file, verdict,
confidence and, for segmentation models, each anomaly type with its share of the image); with
--json one {"DetectAnomalyResult": {...}} object per line, exactly what
`aws lookoutvision detect-anomalies` printed (AnomalyMask as base64).

IMAGE is a PNG or JPEG file, a directory (its *.png, *.jpg and *.jpeg files, sorted; with
--recursive also those of its subdirectories) or a glob pattern (quoted, so that openlookout expands
it; ** matches any depth). The content type comes from the file's bytes, never its name: a file that
is neither PNG nor JPEG is reported as an error. With no IMAGE, the bundled sample images are used.
"""

EPILOG = """\
output:
  The table or the JSON lines go to stdout, in the order of the images given (also with --jobs).
  With --json an image that fails prints no line: its error goes to stderr with the file name.
  A summary line (images, anomalous, errors, images/s) and the progress bar go to stderr; the bar
  is shown when stderr is a terminal (see --progress).
  --mask-dir and --overlay-dir write DIR/NAME.png for the image NAME.png or NAME.jpg (NAME-2.png and
  so on when two images share a name), creating DIR if needed.

exit status:
  0 when every image was processed (anomalous or not), 1 when any image failed (unreadable, not a
  PNG or JPEG, corrupt, too small or too large), 2 for bad arguments or a model that does not load.

examples:
  openlookout detect                                  # the bundled samples, bundled model
  openlookout detect part.jpg --model ./my-package
  openlookout detect images/ --jobs 4 --overlay-dir overlays/
  openlookout detect 'line3/**/*.png' --json > results.jsonl
  openlookout detect part.png --model surface-cls     # a bundled model, by name
"""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="detect anomalies in images (table, or L4V's JSON with --json)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="*",
        metavar="IMAGE",
        help="image file, directory or quoted glob pattern (default: the bundled samples)",
    )
    parser.add_argument(
        "-m",
        "--model",
        metavar="PACKAGE",
        default=demo.DEFAULT_MODEL,
        help="model package directory (manifest.json + ONNX file), or the name of a bundled model "
        f"(see `openlookout models`; default: {demo.DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print {"DetectAnomalyResult": {...}} per image, one per line, instead of the table',
    )
    parser.add_argument(
        "--mask-dir", metavar="DIR", type=Path, help="write each anomaly mask PNG into DIR"
    )
    parser.add_argument(
        "--overlay-dir",
        metavar="DIR",
        type=Path,
        help="write each image with its anomalies painted over it and a legend into DIR (PNG; "
        "needs Pillow)",
    )
    parser.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="take images from subdirectories of directory arguments too",
    )
    parser.add_argument(
        "-j",
        "--jobs",
        type=_non_negative_int,
        default=1,
        metavar="N",
        help="images processed in parallel threads (default 1; 0: one per CPU)",
    )
    parser.add_argument(
        "--threads",
        "--intra-op-threads",
        dest="threads",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="ONNX Runtime threads per image (default: ORT's choice, one per core, with --jobs 1; "
        "1 with more jobs)",
    )
    parser.add_argument(
        "--provider",
        action="append",
        dest="providers",
        metavar="NAME",
        help="ONNX Runtime execution provider, in order of preference; repeatable "
        "(default: CPUExecutionProvider)",
    )
    add_model_options(parser)
    parser.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="progress bar on stderr (default auto: when stderr is a terminal)",
    )
    parser.set_defaults(handler=run)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def sniff_content_type(head: bytes) -> str | None:
    """``image/png`` or ``image/jpeg`` from a file's first bytes, or None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Input:
    """One image to process; ``problem`` is set when the argument itself could not be used."""

    name: str  # as shown to the user
    path: Path | None
    problem: str | None = None


def _directory_images(directory: Path, recursive: bool) -> list[Path]:
    found: list[Path] = []
    walker: Iterator[tuple[str, list[str], list[str]]] = os.walk(directory)
    for root, dirs, files in walker:
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if recursive else []
        found.extend(
            Path(root) / f
            for f in sorted(files)
            if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)
        )
    return found


def expand_inputs(arguments: Sequence[str], recursive: bool) -> list[Input]:
    """Files, directories and glob patterns to the images they name, in order; an image named
    twice is processed once."""
    inputs: list[Input] = []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in seen:
            seen.add(key)
            inputs.append(Input(str(path), path))

    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            images = _directory_images(path, recursive)
            if not images:
                inputs.append(Input(argument, None, "directory holds no .png, .jpg or .jpeg file"))
            for image in images:
                add(image)
        elif not path.exists() and _GLOB_CHARACTERS & set(argument):
            matches = sorted(glob.glob(argument, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                inputs.append(Input(argument, None, "no file matches this pattern"))
            for file in files:
                add(file)
        else:
            add(path)  # a missing file is reported when it is read, like any unreadable one
    return inputs


def output_names(inputs: Sequence[Input]) -> list[str]:
    """A distinct ``NAME.png`` per input for masks and overlays: the image's own name, numbered
    when several images share it."""
    used: set[str] = set()
    names = []
    for item in inputs:
        stem = item.path.stem if item.path is not None else "image"
        name, n = f"{stem}.png", 1
        while name in used:
            n += 1
            name = f"{stem}-{n}.png"
        used.add(name)
        names.append(name)
    return names


# --------------------------------------------------------------------------------------------
# Work
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    item: Input
    result: dict[str, Any] | None
    error: str | None


@dataclass(frozen=True)
class Writers:
    mask_dir: Path | None
    overlay_dir: Path | None
    input_files: frozenset[str]  # real paths of the inputs, never to be overwritten


def _write(directory: Path, name: str, data: bytes, writers: Writers) -> None:
    target = directory / name
    if os.path.realpath(target) in writers.input_files:
        raise OSError(f"{target} is one of the input images; not overwriting it")
    target.write_bytes(data)


def _error_text(error: BaseException) -> str:
    if isinstance(error, OpenLookoutError):
        return f"{error.code}: {error.message}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror}: {error.filename}" if error.filename else error.strerror
    return f"{type(error).__name__}: {error}"


def process(model: Model, item: Input, out_name: str, writers: Writers) -> Outcome:
    """Reads, detects and writes the outputs of one image; never raises for the image's fault."""
    if item.problem is not None or item.path is None:
        return Outcome(item, None, item.problem or "nothing to read")
    try:
        with open(item.path, "rb") as f:
            # One byte past the limit, so an oversized file is reported as such, not truncated.
            body = f.read(model.max_body_bytes + 1)
        content_type = sniff_content_type(body[:8])
        if content_type is None:
            what = "an empty file" if not body else "not a PNG or JPEG"
            return Outcome(item, None, f"ValidationException: {what}")
        result = model.detect(body, content_type)
        if writers.mask_dir is not None and result.get("AnomalyMask") is not None:
            _write(writers.mask_dir, out_name, result["AnomalyMask"], writers)
        if writers.overlay_dir is not None:
            from ..overlay import overlay_png

            _write(writers.overlay_dir, out_name, overlay_png(body, result), writers)
        return Outcome(item, result, None)
    except (OpenLookoutError, OSError, ValueError) as e:
        return Outcome(item, None, _error_text(e))


def _ordered(
    pool: ThreadPoolExecutor | None,
    model: Model,
    inputs: Sequence[Input],
    names: Sequence[str],
    writers: Writers,
    window: int,
) -> Iterator[Outcome]:
    """Outcomes in input order; with a pool at most ``window`` images are in flight, so memory
    stays bounded however many images there are."""
    if pool is None:
        for item, name in zip(inputs, names, strict=True):
            yield process(model, item, name, writers)
        return
    pending: collections.deque[Future[Outcome]] = collections.deque()
    work = iter(zip(inputs, names, strict=True))

    def submit_next() -> None:
        job = next(work, None)
        if job is not None:
            pending.append(pool.submit(process, model, job[0], job[1], writers))

    for _ in range(window):
        submit_next()
    while pending:
        outcome = pending.popleft().result()
        submit_next()
        yield outcome


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def json_line(result: dict[str, Any]) -> str:
    """The result as ``aws lookoutvision detect-anomalies`` printed it: blobs as base64."""
    printable = dict(result)
    if printable.get("AnomalyMask") is not None:
        printable["AnomalyMask"] = base64.b64encode(printable["AnomalyMask"]).decode("ascii")
    return json.dumps({"DetectAnomalyResult": printable})


def anomaly_summary(result: dict[str, Any]) -> str:
    """``scratch 1.23%, hole 0.40%``: each anomaly type and its share of the image."""
    return ", ".join(
        f"{a['Name']} {a['PixelAnomaly']['TotalPercentageArea'] * 100:.2f}%"
        for a in result.get("Anomalies", [])[1:]
    )


class Table:
    """Rows printed as results arrive; the file column is as wide as the longest name."""

    def __init__(self, names: Sequence[str], segmentation: bool, out: TextIO):
        self.width = max([len("FILE"), *(len(n) for n in names)])
        self.segmentation = segmentation
        self.out = out

    def _row(self, *cells: str) -> str:
        name, verdict, confidence, *rest = cells
        return f"{name:<{self.width}}  {verdict:<9}  {confidence:<10}  {' '.join(rest)}".rstrip()

    def header(self) -> str:
        return self._row("FILE", "VERDICT", "CONFIDENCE", "ANOMALIES" if self.segmentation else "")

    def row(self, outcome: Outcome) -> str:
        if outcome.result is None:
            return self._row(outcome.item.name, "error", "-", outcome.error or "")
        r = outcome.result
        verdict = "anomalous" if r["IsAnomalous"] else "normal"
        return self._row(outcome.item.name, verdict, f"{r['Confidence']:.3f}", anomaly_summary(r))


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar:
    """``  37/120 [######......]  31%  12.3 images/s  ETA 0:07`` redrawn in place on ``stream``,
    at most ten times a second. ``clear`` before printing other lines to the same terminal."""

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO, enabled: bool):
        self.total = total
        self.stream = stream
        self.enabled = enabled and total > 0
        self.done = 0
        self.started = time.perf_counter()
        self._drawn_at = 0.0
        self._visible = False
        self._lock = threading.Lock()

    def text(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        filled = self.WIDTH * self.done // self.total
        eta = _clock((self.total - self.done) / rate) if self.done else "?"
        width = len(str(self.total))
        return (
            f"{self.done:>{width}}/{self.total} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
            f"{100 * self.done // self.total:3d}%  {rate:.1f} images/s  ETA {eta}"
        )

    def advance(self) -> None:
        with self._lock:
            self.done += 1
            now = time.perf_counter()
            if self.enabled and (now - self._drawn_at >= 0.1 or self.done == self.total):
                self._draw(now)

    def _draw(self, now: float) -> None:
        self.stream.write("\r\x1b[K" + self.text(now))
        self.stream.flush()
        self._drawn_at = now
        self._visible = True

    def clear(self) -> None:
        with self._lock:
            if self._visible:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._visible = False

    def redraw(self) -> None:
        with self._lock:
            if self.enabled and self.done:
                self._draw(time.perf_counter())


# --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    stdout, stderr = sys.stdout, sys.stderr
    if args.images:
        inputs = expand_inputs(args.images, args.recursive)
    else:
        samples = demo.sample_images()
        print(
            f"no IMAGE given: the {len(samples)} bundled samples ({demo.SAMPLES_DIR})", file=stderr
        )
        inputs = [Input(p.name, p) for p in samples]
    jobs = args.jobs or os.cpu_count() or 1
    threads = args.threads if args.threads is not None else (0 if jobs == 1 else 1)
    try:
        model = load_model(
            demo.resolve_package(args.model),
            intra_op_threads=threads,
            providers=args.providers,
            **model_options(args),
        )
        for directory in (args.mask_dir, args.overlay_dir):
            if directory is not None:
                directory.mkdir(parents=True, exist_ok=True)
    except (OpenLookoutError, OSError) as e:
        print(f"openlookout detect: error: {_error_text(e)}", file=stderr)
        return 2
    if args.mask_dir is not None and model.task != "segmentation":
        print("note: a classification model makes no masks; --mask-dir stays empty", file=stderr)
    writers = Writers(
        args.mask_dir,
        args.overlay_dir,
        frozenset(os.path.realpath(i.path) for i in inputs if i.path is not None),
    )
    show_progress = args.progress == "always" or (args.progress == "auto" and stderr.isatty())
    progress = ProgressBar(len(inputs), stderr, show_progress)
    table = (
        None if args.json else Table([i.name for i in inputs], model.task == "segmentation", stdout)
    )

    def emit(line: str, stream: TextIO) -> None:
        # Only a line bound for the terminal would land in the middle of the bar.
        on_terminal = stream.isatty()
        if on_terminal:
            progress.clear()
        print(line, file=stream, flush=True)
        if on_terminal:
            progress.redraw()

    if table is not None:
        emit(table.header(), stdout)
    anomalous = errors = 0
    names = output_names(inputs)
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        for outcome in _ordered(pool, model, inputs, names, writers, window=2 * jobs):
            progress.advance()
            if outcome.result is None:
                errors += 1
            elif outcome.result["IsAnomalous"]:
                anomalous += 1
            if table is not None:
                emit(table.row(outcome), stdout)
            elif outcome.result is not None:
                emit(json_line(outcome.result), stdout)
            else:
                emit(f"openlookout detect: {outcome.item.name}: {outcome.error}", stderr)
    except KeyboardInterrupt:
        progress.clear()
        print("interrupted", file=stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`openlookout detect ... | head`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        return 1
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    elapsed = time.perf_counter() - started
    progress.clear()
    count = len(inputs)
    done = count - errors
    summary = (
        f"{count} image{'s' if count != 1 else ''}: {anomalous} anomalous, "
        f"{done - anomalous} normal, {errors} error{'s' if errors != 1 else ''} "
        f"in {elapsed:.2f} s ({count / max(elapsed, 1e-9):.1f} images/s)"
    )
    print(summary, file=stderr)
    for label, directory in (("masks", args.mask_dir), ("overlays", args.overlay_dir)):
        if directory is not None and done:
            print(f"{label} written to {directory}", file=stderr)
    return 1 if errors else 0

"""Runs the whole benchmark and renders its report.

    python benchmarks/run.py [--quick] [--skip-run]

1. builds the C++ stage micro-benchmark (cpp/bench/stage_bench.cpp) with CMake;
2. runs benchmarks/bench_pipeline.py, bench_threads.py and bench_jpeg_scaling.py with
   pytest-benchmark, every implementation of every workload in the same run (bench_pipeline also
   on each workload's replay model, for the time outside the model measured directly);
3. runs the stage micro-benchmark on the same workloads (stage floors, heap allocations per call);
4. writes the raw results to benchmarks/results/ and renders benchmarks/RESULTS.md and
   benchmarks/breakdown.png (benchmarks/render.py).

--skip-run re-renders from the saved results.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BUILD = ROOT / "build" / "stage-bench"


def machine() -> dict[str, str]:
    import cv2
    import numpy
    import onnxruntime
    import PIL

    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in lscpu.splitlines()
            if line.startswith("Model name")
        ),
        platform.processor(),
    )
    mem_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    compiler = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.split(
        "\n"
    )[0]
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": f"{mem_kb / 1048576:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "compiler": compiler,
        "onnxruntime": onnxruntime.__version__,
        "numpy": numpy.__version__,
        "opencv": cv2.__version__,
        "pillow": PIL.__version__,
        "libjpeg-turbo": subprocess.run(
            ["pkg-config", "--modversion", "libturbojpeg"], capture_output=True, text=True
        ).stdout.strip(),
        "libspng": subprocess.run(
            ["pkg-config", "--modversion", "spng"], capture_output=True, text=True
        ).stdout.strip(),
        "threads": "one ORT intra-op thread per call everywhere; OpenCV limited to one thread",
    }


def build_stage_bench() -> Path:
    subprocess.run(
        [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(BUILD),
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
            "-DOPENLOOKOUT_BUILD_BENCH=ON",
            "-DOPENLOOKOUT_BUILD_PYTHON=OFF",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(["cmake", "--build", str(BUILD)], check=True, stdout=subprocess.DEVNULL)
    return BUILD / "stage_bench"


def run_stage_bench(binary: Path, quick: bool) -> list[dict[str, object]]:
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT / "python"))
    from openlookout._runtime import find_onnxruntime_library
    from workloads import workloads

    rows = []
    for w in workloads():
        manifest = json.loads((w.package / "manifest.json").read_text())
        command = [
            str(binary),
            "--ort",
            find_onnxruntime_library(),
            "--model",
            str(w.package / "model.onnx"),
            "--task",
            w.task,
            "--input",
            f"{manifest['input']['width']}x{manifest['input']['height']}",
            "--resize",
            manifest["input"].get("resize", "bilinear"),
            "--mean",
            ",".join(str(v) for v in manifest["input"].get("mean", [0, 0, 0])),
            "--std",
            ",".join(str(v) for v in manifest["input"].get("std", [1, 1, 1])),
            "--iterations",
            "5" if quick else "21",
        ]
        if w.task == "segmentation":
            command += [
                "--labels",
                str(len(manifest["segmentation"]["labels"])),
                "--upsample",
                manifest["segmentation"]["upsample"],
            ]
        out = subprocess.run([*command, str(w.image)], check=True, capture_output=True, text=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["workload"] = w.name
        rows.append(row)
        print(f"stage_bench {w.name}: stages {row['stages_ms']:.2f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds per benchmark (a smoke run, not timings)"
    )
    parser.add_argument("--skip-run", action="store_true", help="only re-render saved results")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    if not args.skip_run:
        binary = build_stage_bench()
        # workloads.rounds() reads this: 2 rounds per benchmark in a smoke run.
        bench_env = {**os.environ, "OPENLOOKOUT_BENCH_QUICK": "1" if args.quick else "0"}
        for name in ("bench_pipeline", "bench_threads", "bench_jpeg_scaling"):
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    str(HERE / f"{name}.py"),
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--benchmark-json={RESULTS / name}.json",
                    "--benchmark-columns=median,min,rounds",
                ],
                check=True,
                cwd=ROOT,
                env=bench_env,
            )
        stages = run_stage_bench(binary, args.quick)
        (RESULTS / "stage_bench.json").write_text(json.dumps(stages, indent=1))
        (RESULTS / "machine.json").write_text(json.dumps(machine(), indent=1))
    subprocess.run([sys.executable, str(HERE / "render.py")], check=True)


if __name__ == "__main__":
    main()

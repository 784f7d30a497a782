"""How long each DAG file takes to import (goal: under 0.5 s), as Airflow's DAG processor sees it.

Each measurement is a fresh interpreter that has already imported ``airflow.sdk`` (the DAG
processor has it loaded) and then times ``runpy.run_path`` of the DAG file: that is the cost the
file itself adds to every parse. Run: ``make bench`` or ``.venv/bin/python bench/dag_parse.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
PROBE = (
    "import time, runpy, airflow.sdk\n"
    "t = time.perf_counter()\n"
    "runpy.run_path({path!r})\n"
    "print(time.perf_counter() - t)\n"
)


def time_file(path: Path, home: str) -> list[float]:
    env = {
        **os.environ,
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HUITOUKE_HOME": str(ROOT),
    }
    out = []
    for _ in range(RUNS):
        result = subprocess.run(
            [sys.executable, "-c", PROBE.format(path=str(path))],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(float(result.stdout.strip().splitlines()[-1]))
    return out


def main() -> int:
    print(f"DAG file import time, {RUNS} fresh interpreters each (goal < 0.5 s)")
    worst = 0.0
    with tempfile.TemporaryDirectory() as home:
        for path in sorted((ROOT / "dags").glob("*.py")):
            times = time_file(path, home)
            worst = max(worst, max(times))
            print(
                f"  {path.relative_to(ROOT)}: median {statistics.median(times) * 1000:.0f} ms, "
                f"max {max(times) * 1000:.0f} ms"
            )
    print("OK" if worst < 0.5 else "OVER BUDGET")
    return 0 if worst < 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Every script in benches/ runs: each is run once, in a subprocess, with its
smallest settings. This is a smoke run: the figures it prints are not
checked, only that the script finishes with exit status 0.

The scripts run two at a time (one per core of a 2-core machine), started
by a fixture when the first of these tests runs; each test waits for its own
script and shows the end of its output when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

#: Each script's smallest settings, the longest runs first (they start first).
#: ``{tmp}`` is a folder of the test's own.
SMOKE_ARGS: dict[str, str] = {
    "bench_real_envs.py": "--smoke",
    "bench_compat.py": "--num-envs 2 --ray-envs 2 --workers 1 --repeats 1 --seconds 0.01",
    "bench_learning.py": (
        "--envs CartPole-v1 --seeds 1 --steps-scale 0.001 --results {tmp}/learning.json --run-root {tmp}/runs"
    ),
    "bench_learning_speed.py": "--envs CartPole-v1 --steps 2048 --rounds 1",
    "bench_train.py": "--num-envs 2 --workers 2 --updates 1 --repeats 1",
    "bench_policy.py": "--device cpu --hidden 16 --batch 8 --repeats 1 --repeat-seconds 0.01 --threads 1",
    "bench_multiagent_learning.py": "--smoke",
    "bench_distributed.py": "--quick",
    "bench_flatten.py": "--quick",
    "bench_native.py": "--quick",
    "bench_inplace.py": "--quick",
    "bench_vector.py": "--num-envs 2 --workers 2 --repeats 1 --seconds 0.01",
    "bench_gae.py": "--repeats 1 --seconds 0.01",
    "bench_multiagent.py": "--kaz-envs 2 --rendezvous-envs 2 --repeats 1 --seconds 0.05",
}
#: Seconds one script may take, on a loaded machine, before it is killed.
TIMEOUT = 300


class Result(NamedTuple):
    returncode: int | None  # None: killed at the timeout
    output: str
    seconds: float


def run_script(script: str, tmp: Path) -> Result:
    args = [arg.replace("{tmp}", str(tmp)) for arg in SMOKE_ARGS[script].split()]
    start = time.perf_counter()
    # A session of its own, so that a timeout kills its workers too.
    process = subprocess.Popen(
        [sys.executable, str(BENCHES / script), *args],
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
        returncode: int | None = process.returncode
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        returncode = None
    return Result(returncode, output, time.perf_counter() - start)


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Starts the selected scripts, two at a time, in the order of SMOKE_ARGS."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.module is request.module and hasattr(item, "callspec")
    }
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs: dict[str, Future[Result]] = {
            script: pool.submit(run_script, script, tmp_path_factory.mktemp(script.removesuffix(".py")))
            for script in SMOKE_ARGS
            if script in selected
        }
        yield runs


def test_every_script_has_smoke_settings() -> None:
    assert sorted(SMOKE_ARGS) == sorted(path.name for path in BENCHES.glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", list(SMOKE_ARGS))
def test_bench_script_runs(script: str, smoke_runs: dict[str, Future[Result]]) -> None:
    result = smoke_runs[script].result()
    print(f"{script}: {result.seconds:.1f} s")  # shown by pytest -rP
    tail = "\n".join(result.output.splitlines()[-40:])
    assert result.returncode is not None, f"{script} ran past {TIMEOUT} s:\n{tail}"
    assert result.returncode == 0, f"{script} exited with {result.returncode} after {result.seconds:.0f} s:\n{tail}"

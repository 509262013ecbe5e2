"""The learner on torch.distributed (pufferrs.distributed): two ranks on
CPU with gloo, started as torchrun starts them (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and once by ``torchrun``
itself.

This file is also the ranks' program: ``python tests/test_distributed.py
SCENARIO OUT`` runs one rank of a scenario and writes what it saw to OUT,
which the tests read. Every rank is a real process in a real process group;
nothing is mocked.

Starting a rank costs seconds (importing torch), so the scenarios that can
share a process group do: one pair of ranks checks the weights after every
update, the rank-0-only files, and the update against one process's
update on the same steps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_env(rank: int, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(WORLD),
        "LOCAL_WORLD_SIZE": str(WORLD),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "OMP_NUM_THREADS": "1",
    }


def _start_ranks(args: list[str], cwd: Path) -> list[subprocess.Popen]:
    port = _free_port()
    return [
        subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=_rank_env(rank, port),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(WORLD)
    ]


def _finish(processes: list[subprocess.Popen], timeout: float) -> list[tuple[int | None, str]]:
    """Each process's exit status and output; kills whatever outlives ``timeout``."""
    results = []
    deadline = time.monotonic() + timeout
    for p in processes:
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((p.returncode, out + err))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            results.append((None, out + err))
    return results


def _wait_for(path: Path, processes: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            outputs = []
            for p in processes:
                p.kill()
                out, err = p.communicate()
                outputs.append(out + err)
            pytest.fail(f"{path} was not written in time:\n" + "\n".join(o[-3000:] for o in outputs))
        time.sleep(0.1)


# ---------------------------------------------------------------------------
# the ranks' side


def _flat_state(module: Any) -> Any:
    import torch

    return torch.cat([t.detach().reshape(-1).double() for t in [*module.parameters(), *module.buffers()]])


def _experience(trainer: Any) -> dict[str, Any]:
    exp = trainer.experience
    names = ["obs", "actions", "logprobs", "values", "bootstrap", "final_values", "episode_starts"]
    names += ["rewards", "terminals", "truncations", "masks"]
    if trainer.recurrent:
        names += ["lstm_h", "lstm_c"]
    return {name: getattr(exp, name).clone() for name in names}


def _update_configs(Config: Any) -> dict[str, Any]:
    """The configs of the update-equivalence scenario (totals over both
    ranks): one minibatch per epoch, so that the steps each gradient sees do
    not depend on the shuffle, which differs between 1 and 2 processes."""
    common = dict(device="cpu", torch_threads=1, update_epochs=3, checkpoint_interval=0)
    return {
        "feed-forward": Config.for_env(
            "CartPole-v1",
            num_envs=4,
            batch_size=256,
            minibatch_size=256,
            normalize_observations=True,
            **common,
        ),
        "lstm-multiagent": Config.for_env(
            "pufferrs.multiagent_envs.Rendezvous",
            num_envs=4,
            batch_size=128,
            minibatch_size=128,
            bptt_horizon=8,
            lstm=True,
            **common,
        ),
    }


def rank_train(out: Path) -> None:
    """Several updates of 4 minibatches: the weights (and the observation
    normaliser's statistics) of every rank compared after every update; each
    rank names its own run_dir, and only rank 0's may appear. A config that
    differs between the ranks must be refused. Then one
    update of each config of :func:`_update_configs`, with the steps and
    weights before and after saved for the test to redo in one process."""
    import torch
    import torch.distributed as dist

    from pufferrs import distributed
    from pufferrs.train import Config, ConfigError, Trainer, apply_process_settings

    config = Config.for_env(
        "CartPole-v1",
        num_envs=4,
        env_batch_size=2,  # asynchronous: each rank's two envs step one at a time
        batch_size=256,
        minibatch_size=64,
        update_epochs=2,
        total_steps=4 * 256,
        normalize_observations=True,
        device="cpu",
        torch_threads=1,
        checkpoint_interval=2,
    )
    apply_process_settings(config)
    ranks = distributed.start(config)
    config.run_dir = str(out / f"run-rank{ranks.rank}")
    report: dict[str, Any] = {"rank": ranks.rank, "size": ranks.size, "same_weights": [], "rows": []}
    with Trainer(config) as trainer:
        report["env_seed"] = trainer.env_seed

        def after_update(row: dict[str, Any]) -> None:
            mine = _flat_state(trainer.policy)
            every = [torch.empty_like(mine) for _ in range(ranks.size)]
            dist.all_gather(every, mine)
            report["same_weights"].append(all(torch.equal(every[0], x) for x in every))
            report["rows"].append(row)

        report["summary"] = trainer.train(after_update)

    try:
        Trainer(Config.for_env("CartPole-v1", seed=ranks.rank))
    except ConfigError as exc:
        report["refused"] = str(exc)

    for name, update_config in _update_configs(Config).items():
        with Trainer(update_config) as trainer:
            trainer.rollout()
            before = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
            steps = _experience(trainer)
            trainer.learn()
            after = trainer.policy.state_dict()
            torch.save({"before": before, "steps": steps, "after": after}, out / f"{name}-rank{ranks.rank}.pt")
    (out / f"rank{ranks.rank}.json").write_text(json.dumps(report))
    distributed.stop(ranks)


SCENARIOS = {"train": rank_train}


# ---------------------------------------------------------------------------
# the tests


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ranks")
    results = _finish(_start_ranks([__file__, "train", str(out)], out), timeout=120)
    for rank, (code, output) in enumerate(results):
        assert code == 0, f"rank {rank} ended with {code}:\n{output[-5000:]}"
    return out


def test_two_ranks_hold_identical_weights_after_every_update(two_rank_run: Path) -> None:
    reports = [json.loads((two_rank_run / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for report in reports:
        assert report["size"] == WORLD
        assert report["same_weights"] == [True] * 4  # parameters and normaliser buffers, bit for bit
    # Each rank's envs start where the previous rank's end: no seed twice.
    assert [r["env_seed"] for r in reports] == [0, 2]
    for report in reports:
        assert report["refused"] == "ranks [1] were started with a config other than rank 0's: give every rank the same"
    # Every rank reports the run's metrics: steps of both ranks, episodes
    # and losses reduced across ranks, hence the same on both.
    rows0, rows1 = reports[0]["rows"], reports[1]["rows"]
    assert [row["global_step"] for row in rows0] == [256, 512, 768, 1024]
    for a, b in zip(rows0, rows1):
        shared = [k for k in a if k.startswith(("env/", "losses/", "global_step", "update"))]
        assert {k: a[k] for k in shared} == {k: b[k] for k in shared}
        assert a["env/episodes"] > 0


def test_only_rank_zero_writes_the_run_directory(two_rank_run: Path) -> None:
    run = two_rank_run / "run-rank0"
    assert not (two_rank_run / "run-rank1").exists()
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "metrics.jsonl", "model.pt", "summary.json", "learning_curve.png"} <= names
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["update_000002.pt"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["update"] for row in rows] == [1, 2, 3, 4]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_step"] == 1024


@pytest.mark.parametrize("name", ["feed-forward", "lstm-multiagent"])
def test_two_rank_update_equals_one_process_update_on_the_same_steps(two_rank_run: Path, name: str) -> None:
    """The update two ranks made from their own steps, redone by one
    process holding both ranks' steps (rank 0's rows, then rank 1's, as the
    seeds order them), from the same weights: the same weights come out, to
    float32 rounding (the sums run in another order). The feed-forward
    config normalises observations (the statistics merged across ranks);
    the multi-agent LSTM's masked steps weigh nothing (StepWeights)."""
    import torch

    from pufferrs.train import Config, Trainer

    saved = [torch.load(two_rank_run / f"{name}-rank{r}.pt", weights_only=True) for r in range(WORLD)]
    # The ranks started from one set of weights and ended with one.
    for key in saved[0]["before"]:
        assert torch.equal(saved[0]["before"][key], saved[1]["before"][key]), key
        assert torch.equal(saved[0]["after"][key], saved[1]["after"][key]), key
    if name == "lstm-multiagent":
        masks = torch.cat([s["steps"]["masks"] for s in saved])
        assert not masks.all()  # agents left: some steps are masked

    config = _update_configs(Config)[name]
    torch.manual_seed(0)
    with Trainer(config) as trainer:
        trainer.policy.load_state_dict(saved[0]["before"])
        for key, value in saved[0]["steps"].items():
            both = torch.cat([value, saved[1]["steps"][key]])
            getattr(trainer.experience, key).copy_(both)
        trainer.learn()
        one = trainer.policy.state_dict()
    changed = 0
    for key, two in saved[0]["after"].items():
        torch.testing.assert_close(one[key], two, rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: {m}")
        changed += not torch.equal(two, saved[0]["before"][key])
    assert changed > 0  # the update moved the weights: the comparison compares something


def _train_args(run_dir: Path, *extra: str) -> list[str]:
    return [
        "CartPole-v1",
        "--total-steps",
        "10000000",
        "--num-envs",
        "4",
        "--batch-size",
        "256",
        "--minibatch-size",
        "128",
        "--update-epochs",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        str(run_dir),
        "--plain",
        *extra,
    ]


def test_a_killed_rank_ends_the_other_with_a_clear_error_in_bounded_time(tmp_path: Path) -> None:
    """Rank 1 is killed outright (SIGKILL: no chance to say goodbye) in the
    middle of training; rank 0, with no torchrun to stop it, notices at its
    next collective and ends with one line naming the failure."""
    run_dir = tmp_path / "run"
    processes = _start_ranks(
        ["-m", "pufferrs", "train", *_train_args(run_dir, "--dist-timeout", "20")],
        tmp_path,
    )
    _wait_for(run_dir / "metrics.jsonl", processes, timeout=60)
    processes[1].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    (code, output), _ = _finish(processes, timeout=40)
    waited = time.monotonic() - killed
    assert code == 1, output[-3000:]
    assert waited < 30
    assert "pufferrs train: error: DistributedError: rank 0 of 2:" in output
    assert "another rank has stopped" in output


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid: int) -> int | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    for item in environ:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the ranks' processes in /proc")
def _torchrun(args: list[str], cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(WORLD)]
    command += ["--master-port", str(_free_port()), "-m", "pufferrs", "train", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_to_one_rank_under_torchrun_stops_every_rank_with_a_checkpoint_and_the_run_resumes(
    tmp_path: Path,
) -> None:
    """torchrun starts two ranks; SIGTERM reaches rank 1 only. Both stop at
    the same update, rank 0 saves model.pt and the summary, and every rank
    exits as a terminated run does. Then two ranks resume the run from
    model.pt (each rank loads it) for two more updates, appending to the
    same files."""
    run_dir = tmp_path / "run"
    torchrun = _torchrun(_train_args(run_dir), tmp_path)
    _wait_for(run_dir / "metrics.jsonl", [torchrun], timeout=60)
    ranks = {_rank_of(pid): pid for pid in _children(torchrun.pid)}
    os.kill(ranks[1], signal.SIGTERM)
    [(code, output)] = _finish([torchrun], timeout=60)
    assert code is not None and code != 0, output[-3000:]  # the ranks exit 143, which torchrun reports
    assert output.count("pufferrs train: terminated") == WORLD, output[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert summary["updates"] == rows[-1]["update"] >= 1
    assert summary["global_step"] == rows[-1]["global_step"] == 256 * rows[-1]["update"]
    assert (run_dir / "model.pt").exists()
    assert (run_dir / "learning_curve.png").exists()

    stopped = rows[-1]["update"]
    resumed = _torchrun(["--resume", str(run_dir), "--total-steps", str(256 * (stopped + 2)), "--plain"], tmp_path)
    [(code, output)] = _finish([resumed], timeout=90)
    assert code == 0, output[-3000:]
    assert output.count(f"resuming {run_dir / 'model.pt'} after update {stopped}") == 1  # rank 0 speaks
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["update"] for row in rows] == list(range(1, stopped + 3))
    assert [row["global_step"] for row in rows] == [256 * (k + 1) for k in range(stopped + 2)]
    assert json.loads((run_dir / "summary.json").read_text())["updates"] == stopped + 2


if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](Path(sys.argv[2]))

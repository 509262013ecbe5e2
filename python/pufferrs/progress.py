"""What ``pufferrs train`` shows while it runs: a live panel on a terminal,
one log line every few seconds in logs and pipes, and the summary at the
end. Each display is called with every update's metrics row.

Both show the update's mean episode return ("return -": no episode ended
in that update) and a few of the env's other metrics, the family's choice
(:func:`pufferrs.episodes.shown_metrics`); ``metrics.jsonl`` has them all."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from pufferrs.episodes import family_of, shown_metrics

if TYPE_CHECKING:
    from pufferrs.config import Config

__all__ = ["PlainProgress", "RichProgress", "print_summary", "progress_display"]


def progress_display(config: Config, plain: bool = False) -> PlainProgress | RichProgress:
    """:class:`RichProgress` on a terminal, else (or when ``plain``)
    :class:`PlainProgress`."""
    if sys.stdout.isatty() and not plain:
        from rich.console import Console

        return RichProgress(config, Console())
    return PlainProgress(config.num_updates, env=config.env)


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


class PlainProgress:
    """Log lines, at most one per ``interval`` seconds (and the last), for
    logs and pipes; ``env`` (its id) picks the metrics shown."""

    def __init__(self, num_updates: int, interval: float = 2.0, env: str = ""):
        self.num_updates, self.interval = num_updates, interval
        self.family = family_of(env)
        self.last = -float("inf")

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, m: dict[str, Any]) -> None:
        if "warning" in m:  # said once (pufferrs.diagnostics), never skipped
            print(f"warning: {m['warning']}", flush=True)
        now = time.monotonic()
        if now - self.last < self.interval and m["update"] < self.num_updates:
            return
        self.last = now
        extra = "".join(f" {k[4:]} {_fmt(m[k])}" for k in shown_metrics(self.family, m))
        print(
            f"update {m['update']}/{self.num_updates} steps {m['global_step']:,} sps {m['sps']:,.0f} "
            f"return {_fmt(m.get('env/episode_return'))}{extra} "
            f"policy_loss {_fmt(m['losses/policy_loss'])} value_loss {_fmt(m['losses/value_loss'])} "
            f"entropy {_fmt(m['losses/entropy'])}",
            flush=True,
        )


class RichProgress:
    """A live panel: a progress bar and the latest update's numbers."""

    def __init__(self, config: Config, console: Any):
        from rich.live import Live

        self.config, self.console = config, console
        self.family = family_of(config.env)
        self.latest: dict[str, Any] = {}
        self.best: float | None = None
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def _render(self) -> Any:
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        m, config = self.latest, self.config
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column(justify="right", style="cyan")
            table.add_column()
        steps = m.get("global_step", 0)
        total = config.num_updates * config.batch_size
        env_keys = shown_metrics(self.family, m, most=4)
        rows = [
            (
                "steps",
                f"{steps:,} / {total:,}",
                "update",
                f"{m.get('update', 0)} / {config.num_updates}",
                "sps",
                _fmt(m.get("sps"), ",.0f"),
                "time",
                f"{m.get('time', 0):.0f} s",
            ),
            (
                "return",
                _fmt(m.get("env/episode_return")),
                "best",
                _fmt(self.best),
                "length",
                _fmt(m.get("env/episode_length")),
                "episodes",
                str(m.get("env/episodes", 0)),
            ),
            (
                "policy",
                _fmt(m.get("losses/policy_loss")),
                "value",
                _fmt(m.get("losses/value_loss")),
                "entropy",
                _fmt(m.get("losses/entropy")),
                "kl",
                _fmt(m.get("losses/approx_kl")),
            ),
        ]
        if env_keys:
            cells: list[str] = []
            for k in env_keys:
                cells += [k[4:], _fmt(m[k])]
            rows.append(tuple(cells + [""] * (8 - len(cells))))
        for row in rows:
            table.add_row(*row)
        grid = Table.grid()
        grid.add_row(ProgressBar(total=max(total, 1), completed=steps, width=60))
        grid.add_row(table)
        return Panel(grid, title=f"pufferrs train {config.env}", subtitle=str(config.run_dir), expand=False)

    def __enter__(self) -> RichProgress:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(*exc)

    def __call__(self, m: dict[str, Any]) -> None:
        self.latest = m
        if "warning" in m:  # printed above the live panel, where it stays
            from rich.markup import escape

            self.console.print(f"[yellow]warning:[/yellow] {escape(m['warning'])}", highlight=False)
        ret = m.get("env/episode_return")
        if ret is not None and (self.best is None or ret > self.best):
            self.best = ret
        self.live.update(self._render())


def print_summary(summary: dict[str, Any]) -> None:
    """The summary :meth:`~pufferrs.ppo.Trainer.train` returns, one line a key."""
    print("\nsummary")
    width = max(map(len, summary))
    for key, value in summary.items():
        if isinstance(value, float):
            shown = f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
        else:
            shown = f"{value:,}" if isinstance(value, int) else str(value)
        print(f"  {key:<{width}}  {shown}")

"""Command line: ``tdaeval quickstart`` and ``tdaeval ls``.

Exit codes: 0 success; 2 bad input (a parameter, an unusable cache
directory, an attributor that returns invalid scores); 3 runtime failure
(e.g. an attributor that crashes).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tdaeval.errors import AttributorError, ConfigError, StoreError, TdaevalError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate training data attribution methods.")

EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _fail(message: str, code: int) -> None:
    _console().print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


class _Progress:
    """rich progress bars on stderr, silent when stderr is not a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.tasks: dict[str, int] = {}
        self.bar = None
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console()
            )

    def __enter__(self) -> "_Progress":
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.bar:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(stage, total=total)
        self.bar.update(self.tasks[stage], completed=done, total=total)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("tdaeval-out"), "--out", help="Directory for results.json and report.md."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Ground-truth store (default: user cache)."),
    subsets: int = typer.Option(100, "--subsets", help="LDS subsets M (>= 2)."),
    seeds: int = typer.Option(1, "--seeds", help="Models per subset R (>= 1)."),
    alpha: float = typer.Option(0.5, "--alpha", help="Subset fraction in (0, 1)."),
    n_train: int = typer.Option(1400, "--n-train", help="Digits training points."),
    n_test: int = typer.Option(100, "--n-test", help="Digits test points."),
    seed: int = typer.Option(0, "--seed", help="Seed of the reference model and of the subsets."),
    attributor: Optional[list[str]] = typer.Option(
        None, "--attributor", "-a", help="Attributor to evaluate (registered name or module:Name); repeatable. Default: all built-ins."
    ),
) -> None:
    """Train a digits MLP, build its LDS ground truth, evaluate every built-in attributor."""
    from tdaeval.metrics import LDS
    from tdaeval.reports import render_markdown
    from tdaeval.suites import evaluate
    from tdaeval.tasks import DigitsTask

    try:
        metric = LDS(n_subsets=subsets, alpha=alpha, n_seeds=seeds, seed=seed)
        task = DigitsTask(n_train=n_train, n_test=n_test)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise ConfigError(f"The output directory {str(out)!r} (--out) is not writable: {err.strerror or err}.") from err
        with _Progress() as progress:
            result = evaluate(
                task, attributors=attributor or None, metrics=[metric], cache_dir=cache_dir, seed=seed, progress=progress
            )
    except (ConfigError, StoreError, AttributorError) as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except TdaevalError as err:
        _fail(str(err), EXIT_RUNTIME)
    result.to_json(out / "results.json")
    (out / "report.md").write_text(render_markdown(result))
    typer.echo(result.table())
    typer.echo(f"\nWrote {out / 'results.json'} and {out / 'report.md'}")


@app.command("ls")
def list_components() -> None:
    """List the registered attributors and metrics."""
    from tdaeval.attributors import get, names
    from tdaeval.metrics import metric_names

    typer.echo("attributors:")
    for name in names():
        doc = (type(get(name)).__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:<12} {doc}")
    typer.echo("metrics:")
    for name in metric_names():
        from tdaeval.metrics import metric_class

        doc = (metric_class(name).__doc__ or "").strip().splitlines()[0]
        typer.echo(f"  {name:<12} {doc}")


def main() -> None:
    """Entry point of the ``tdaeval`` script."""
    app()


if __name__ == "__main__":
    main()

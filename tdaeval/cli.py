"""Command line: ``quickstart``, ``run``, ``report``, ``compare``, ``validate``, ``check``, ``ls``,
``groundtruth run|status`` and ``cache ls|verify|gc``.

Exit codes: 0 success (for ``check``: every threshold holds); 1 a threshold
or a regression failed (``check``, ``compare --fail-on-regression``) or the
store holds damaged artifacts (``cache verify``); 2 bad
usage or input (a parameter, a suite file, an unusable cache directory, an
attributor that returns invalid scores in ``quickstart``; in suites a
failing attributor is recorded, not fatal); 3 runtime failure (e.g. an
attributor that crashes in ``quickstart``, a task whose training raises).

Imports inside the commands are deliberate and break no import cycle: to keep
start-up light, each command loads what only it uses (the reports, rich's console
and progress bars, a command's own suite steps) when it runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from tdaeval.errors import AttributorError, ConfigError, StoreError, TdaevalError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evaluate training data attribution methods.")

EXIT_FAILED_CHECK = 1
EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3


def _console():
    from rich.console import Console

    return Console(stderr=True)


#: Set by the ``--debug`` option (or ``TDAEVAL_DEBUG=1``) of every command.
_DEBUG = {"on": False}


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", envvar="TDAEVAL_DEBUG",
        help="On an error, print the full traceback (and, for run and check, that of every attributor that could not run).",
    ),
) -> None:
    _DEBUG["on"] = debug


def _print_traceback(text: str) -> None:
    """With ``--debug``: ``text`` (a traceback) on standard error, as it is."""
    if _DEBUG["on"]:
        typer.echo(text.rstrip("\n"), err=True)


def _fail(message: str, code: int) -> None:
    failure = sys.exc_info()[1]
    if failure is not None:  # called while handling an exception: its traceback, with --debug
        import traceback

        _print_traceback("".join(traceback.format_exception(type(failure), failure, failure.__traceback__)))
    _console().print(f"[bold red]error:[/] {_escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _escape(text: object) -> str:
    """``text`` for a rich ``print``: its square brackets shown as they are, not read as markup."""
    from rich.markup import escape

    return escape(str(text))


def _warn(message: str) -> None:
    """One ``warning:`` line on standard error (the message is printed as it is, brackets included)."""
    _console().print(f"[yellow]warning:[/] {_escape(message)}", highlight=False, soft_wrap=True)


class _Progress:
    """rich progress bars on stderr on a terminal; elsewhere (CI logs, NO_COLOR) plain progress lines.

    Pass :attr:`target` as ``progress`` to evaluate, run_suite or build_groundtruth:
    the bars' callback on a terminal, else ``"auto"`` with the ``"tdaeval"``
    logger's INFO records printed on stderr for the length of the block.
    """

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        self.tasks: dict[str, int] = {}
        self.bar = None
        self._log = None
        self.target = self if self.enabled else "auto"
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=_console()
            )

    def __enter__(self) -> "_Progress":
        if self.bar:
            self.bar.start()
        else:
            from tdaeval.suites.progress import log_to_stderr

            self._log = log_to_stderr()
            self._log.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()
        if self._log is not None:
            self._log.__exit__(None, None, None)
            self._log = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.bar:
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.bar.add_task(_escape(stage), total=total)  # a metric's name may hold [brackets]
        self.bar.update(self.tasks[stage], completed=done, total=total)


@app.command()
def quickstart(
    out: Path = typer.Option(Path("tdaeval-out"), "--out", help="Directory for results.json, report.md and report.html."),
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
        _writable_dir(out)
        _plugins_importable(attributor or [])
        with _Progress() as progress:
            result = evaluate(
                task, attributors=attributor or None, metrics=[metric], cache_dir=cache_dir, seed=seed, progress=progress.target
            )
    except (ConfigError, StoreError, AttributorError) as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except TdaevalError as err:
        _fail(str(err), EXIT_RUNTIME)
    except Exception as err:  # noqa: BLE001 - e.g. a task's training that raises: exit 3 in one line, as every command
        _fail(f"runtime failure: {type(err).__name__}: {err}", EXIT_RUNTIME)
    from tdaeval.reports import render_html

    result.to_json(out / "results.json")
    (out / "report.md").write_text(render_markdown(result))
    (out / "report.html").write_text(render_html(result))
    typer.echo(result.table())
    typer.echo(f"\nWrote {out / 'results.json'}, {out / 'report.md'} and {out / 'report.html'}")


@app.command("ls")
def list_components() -> None:
    """List the registered attributors and metrics."""
    from tdaeval._text import summary
    from tdaeval.attributors.base import ATTRIBUTORS, names
    from tdaeval.metrics import metric_class, metric_names

    # plain text (the docstrings' reStructuredText markup removed), one column width for both lists
    sections = {
        "attributors": [(name, summary(ATTRIBUTORS.get_class(name).__doc__)) for name in names()],
        "metrics": [(name, summary(metric_class(name).__doc__)) for name in metric_names()],
    }
    width = max((len(name) for rows in sections.values() for name, _ in rows), default=0) + 2
    for title, rows in sections.items():
        typer.echo(f"{title}:")
        for name, doc in rows:
            typer.echo(f"  {name:<{width}}{doc}".rstrip())


def _guarded(action):
    """Run ``action()``; map tdaeval's errors to exit codes with a one-line message (no traceback)."""
    try:
        return action()
    except (ConfigError, StoreError, AttributorError) as err:
        _fail(str(err), EXIT_BAD_INPUT)
    except TdaevalError as err:
        _fail(str(err), EXIT_RUNTIME)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001 - a user's task or attributor code may fail in any way
        _fail(f"runtime failure: {type(err).__name__}: {err}", EXIT_RUNTIME)


def _plugins_importable(specs: list[str]) -> None:
    """Put the working directory on the import path (if absent) when an attributor is given as ``module:Name``.

    A suite's folder is put there for its ``module:Name`` entries
    (:func:`tdaeval.suites.load_suite`); on the command line, that folder is the working directory.
    """
    cwd = os.getcwd()
    if any(":" in spec for spec in specs) and cwd not in sys.path:
        sys.path.append(cwd)


def _writable_dir(out: Path, option: str = "--out") -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"The output directory {str(out)!r} ({option}) is not writable: {err.strerror or err}.") from err
    return out


def _step_summary(markdown: str) -> None:
    """Append the Markdown report to ``$GITHUB_STEP_SUMMARY`` when GitHub Actions sets it."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(markdown + "\n")
        except OSError as err:
            _warn(f"cannot write $GITHUB_STEP_SUMMARY ({path}): {err}")


def _write_outputs(result, out: Path) -> list[Path]:
    from tdaeval.reports import render_html, render_junit, render_markdown

    written = [out / "results.json", out / "report.md", out / "report.html", out / "junit.xml"]
    result.to_json(written[0])
    markdown = render_markdown(result)
    written[1].write_text(markdown)
    written[2].write_text(render_html(result))
    written[3].write_text(render_junit(result))
    _step_summary(markdown)
    return written


def _run_suite(built, cache_dir: Optional[Path], executor: Optional[str] = None):
    """Run a BuiltSuite (built once by the command) with progress on stderr."""
    from tdaeval.suites.runner import run_suite

    with _Progress() as progress:
        result = run_suite(built, cache_dir=cache_dir, executor=executor, progress=progress.target)
    shown = set()
    for entry in result.failures():  # with --debug: why each attributor could not run, in full, once
        if entry.traceback and (entry.attributor, entry.traceback) not in shown:
            shown.add((entry.attributor, entry.traceback))
            _print_traceback(f"{entry.attributor} on {entry.metric} could not run:\n{entry.traceback}")
    return result


def _report_thresholds(built, result) -> None:
    """Evaluate the suite's thresholds into ``result.checks`` for the reports (``run`` reports, ``check`` enforces)."""
    from tdaeval.suites.checks import baseline_note, evaluate_checks
    from tdaeval.suites.result import SuiteResult

    config, path = built.config, built.baseline
    baseline = SuiteResult.from_json(path) if path is not None and path.exists() else None
    thresholds = config.thresholds
    if thresholds.max_regression is not None and baseline is None:
        thresholds = thresholds.model_copy(update={"max_regression": None})  # no baseline yet: floors only
    result.checks = [o.to_dict() for o in evaluate_checks(result, thresholds, baseline, alpha=config.ranking.alpha)]
    _note_baseline(result, baseline_note(config.thresholds, path))


def _note_baseline(result, note: Optional[str]) -> None:
    """Warn about what a missing baseline leaves unchecked, and keep it for the reports (``provenance["check_notes"]``)."""
    if note is None:
        result.provenance.pop("check_notes", None)  # a results file read again must not keep an older run's note
        return
    _warn(note)
    result.provenance["check_notes"] = [note]


def _builtin_suite_names() -> str:
    """The built-in suites' names, from the folder (the suite modules are imported only when a command needs them)."""
    from importlib import resources

    folder = resources.files("tdaeval.suites") / "builtin"
    return ", ".join(sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")))


SUITE_ARG = typer.Argument(..., help="Suite file (.yaml, .yml, .toml) or a built-in suite: " + _builtin_suite_names() + ".")
OUT_OPT = typer.Option(Path("tdaeval-out"), "--out", help="Directory for results.json, report.md, report.html, junit.xml.")
CACHE_OPT = typer.Option(None, "--cache-dir", help="Ground-truth store (overrides the suite's 'store').")
EXECUTOR_OPT = typer.Option(None, "--executor", help="local, process:N, ray or ray:ADDRESS (overrides the suite's 'executor').")


@app.command()
def run(suite: str = SUITE_ARG, out: Path = OUT_OPT, cache_dir: Optional[Path] = CACHE_OPT, executor: Optional[str] = EXECUTOR_OPT) -> None:
    """Run a suite: every attributor x metric; failures are recorded, the suite goes on.

    The suite's thresholds are evaluated into the reports (and junit.xml) but never fail the
    run: use ``check`` for that.
    """

    from tdaeval.suites.build import build_suite

    def action():
        _writable_dir(out)
        built = build_suite(suite)  # read, checked and built once; the run uses what was built
        result = _run_suite(built, cache_dir, executor)
        _report_thresholds(built, result)
        written = _write_outputs(result, out)
        typer.echo(result.table())
        failed = result.failures()
        if failed:
            typer.echo(f"\n{len({e.attributor for e in failed})} attributor(s) could not run on some metric; see the report.")
        typer.echo(f"\nWrote {', '.join(str(p) for p in written)}")

    _guarded(action)


@app.command()
def validate(
    suite: str = SUITE_ARG,
    build: bool = typer.Option(
        True, "--build/--schema-only",
        help="--build (the default): also build the suite, resolving every name and parameter. "
        "--schema-only: check only the document's structure and ranges: import nothing beyond tdaeval, run no code from the suite.",
    ),
) -> None:
    """Check a suite file without running it: keys, types, names and parameters.

    Two steps: the schema (keys, types, ranges), then, with ``--build`` (the default), the build
    check: the task, attributors, metrics and executor are built once, as a run builds them. A suite
    is code: building imports the task factory and every ``module:Name`` (a module beside the suite
    runs its top-level code). ``--schema-only`` does the first step only, imports nothing named in
    the suite and leaves ``sys.path`` alone, so it is safe on a suite from an untrusted source.
    """
    from tdaeval.suites.build import build_suite
    from tdaeval.suites.checks import baseline_note
    from tdaeval.suites.schema import read_suite, suite_path

    def action():
        config, folder, source = read_suite(suite)  # the schema: structure and ranges, nothing imported
        if build:
            build_suite(config, source, folder)  # the build check, asked for explicitly
        typer.echo(
            f"{suite}: valid suite {config.name!r}: task {config.task.name or config.task.factory}, "
            f"{len(config.attributors)} attributor(s), {len(config.metrics)} metric(s), "
            f"{len(config.thresholds.floors)} floor(s)."
        )
        if not build:
            typer.echo("schema only: structure and ranges checked; names were not resolved and no suite code was imported or run.")
        note = baseline_note(config.thresholds, suite_path(config.baseline, folder))
        if note is not None:  # valid, but run would leave the regression check out and check would refuse
            typer.echo(f"note: {note}")

    _guarded(action)


@app.command()
def report(
    results: Path = typer.Argument(..., help="A results.json written by run, check or quickstart."),
    format: str = typer.Option("md", "--format", "-f", help="html, md, json or junit."),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o",
        help="Write here ('-': standard output). Default: standard output, except html: report.html next to RESULTS.",
    ),
) -> None:
    """Render a results file as HTML, Markdown, JSON or JUnit XML.

    Markdown, JSON and JUnit go to standard output unless ``--out`` names a file. HTML (a whole page
    with embedded images) goes to ``report.html`` in the folder of RESULTS, and the path is printed;
    ``--out -`` sends it to standard output.
    """
    from tdaeval.reports import render_html, render_junit, render_markdown
    from tdaeval.suites.result import SuiteResult

    renderers = {"html": render_html, "md": render_markdown, "json": lambda r: r.to_json(), "junit": render_junit}

    def action():
        if format not in renderers:
            raise ConfigError(f"The '--format' option of report must be one of {', '.join(renderers)}. Got {format!r} instead.")
        text = renderers[format](SuiteResult.from_json(results))
        target = results.parent / "report.html" if out is None and format == "html" else out  # no page dumped on a terminal
        if target is None or str(target) == "-":
            typer.echo(text, nl=False)
        else:
            try:
                target.write_text(text)
            except OSError as err:
                raise ConfigError(f"Cannot write {str(target)!r} (--out): {err.strerror or err}.") from err
            typer.echo(f"Wrote {target}")

    _guarded(action)


@app.command()
def compare(
    base: Path = typer.Argument(..., help="Baseline results.json."),
    new: Path = typer.Argument(..., help="New results.json."),
    alpha: float = typer.Option(0.05, "--alpha", help="Level at which a change counts as significant."),
    format: str = typer.Option("text", "--format", "-f", help="text, md or json."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when any change is a significant regression."),
) -> None:
    """Per attributor x metric change from BASE to NEW, with a bootstrap CI and significance."""
    from tdaeval.reports.compare import render_comparison
    from tdaeval.suites.compare import compare_results
    from tdaeval.suites.result import SuiteResult

    def action():
        if format not in ("text", "md", "json"):
            raise ConfigError(f"The '--format' option of compare must be text, md or json. Got {format!r} instead.")
        differences = compare_results(SuiteResult.from_json(base), SuiteResult.from_json(new), alpha=alpha)
        typer.echo(render_comparison(differences, format, alpha))
        return any(d.status == "regressed" for d in differences)

    if _guarded(action) and fail_on_regression:
        raise typer.Exit(EXIT_FAILED_CHECK)


@app.command()
def check(
    suite: str = SUITE_ARG,
    out: Path = OUT_OPT,
    cache_dir: Optional[Path] = CACHE_OPT,
    executor: Optional[str] = EXECUTOR_OPT,
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="Baseline results.json (overrides the suite's 'baseline')."),
    results: Optional[Path] = typer.Option(None, "--results", help="Check an existing results.json instead of running the suite."),
) -> None:
    """Run a suite (or read --results) and enforce its thresholds: exit 0 all hold, 1 one failed."""
    from tdaeval.suites.build import build_suite
    from tdaeval.suites.checks import baseline_note, evaluate_checks
    from tdaeval.suites.result import SuiteResult

    def action():
        built = build_suite(suite)  # read, checked and built once; the run uses what was built
        config = built.config
        base_path = baseline if baseline is not None else built.baseline
        if config.thresholds.max_regression is not None and base_path is None:
            raise ConfigError(f"{suite}: thresholds.max_regression needs a baseline: set 'baseline' in the suite or pass --baseline.")
        note = baseline_note(config.thresholds, base_path)
        if note is not None and config.thresholds.max_regression is not None:  # a CI gate must not pass without it
            raise ConfigError(f"{suite}: thresholds.max_regression needs the baseline file {str(base_path)!r}, which does not exist "
                              "(record one by copying the results.json of a run there, or pass --baseline).")
        base = SuiteResult.from_json(base_path) if base_path is not None and note is None else None
        _writable_dir(out)
        result = SuiteResult.from_json(results) if results is not None else _run_suite(built, cache_dir, executor)
        if results is not None:  # the reports carry the checked suite, not the one that produced the file
            result.provenance["checked_suite"] = config.model_dump(mode="json")
        _note_baseline(result, note)  # a baseline that is named, missing and unused: a warning
        outcomes = evaluate_checks(result, config.thresholds, base, alpha=config.ranking.alpha)
        result.checks = [o.to_dict() for o in outcomes]
        _write_outputs(result, out)
        for o in outcomes:
            typer.echo(f"{'PASS' if o.passed else 'FAIL'}  {o.name}: {o.message}")
        failed = [o for o in outcomes if not o.passed]
        if not outcomes:
            typer.echo("No thresholds in this suite: nothing to enforce.")
        typer.echo(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} thresholds hold. Wrote {out}/results.json, junit.xml, report.md, report.html")
        return bool(failed)

    if _guarded(action):
        raise typer.Exit(EXIT_FAILED_CHECK)


groundtruth_app = typer.Typer(no_args_is_help=True, help="Build a suite's ground truth ahead of time, sharded over machines.")
cache_app = typer.Typer(no_args_is_help=True, help="Inspect, verify and prune the ground-truth store.")
app.add_typer(groundtruth_app, name="groundtruth")
app.add_typer(cache_app, name="cache")


def _status_table(rows: list[dict]) -> str:
    lines = [f"{'metric':<28}{'jobs':>7}{'stored':>8}{'trained':>9}{'missing':>9}  state"]
    for r in rows:
        lines.append(f"{r['metric']:<28}{r['jobs']:>7}{r['stored']:>8}{r['trained']:>9}{r['missing']:>9}  {r['state']}"
                     + (f" ({r['note']})" if r["note"] else ""))
    return "\n".join(lines)


@groundtruth_app.command("run")
def groundtruth_run(
    suite: str = SUITE_ARG,
    shard: Optional[str] = typer.Option(None, "--shard", help="Run only shard i of N ('i/N', 0 <= i < N) into the shared store."),
    cache_dir: Optional[Path] = CACHE_OPT,
    executor: Optional[str] = EXECUTOR_OPT,
) -> None:
    """Train the suite's ground truth (all of it, or one shard) into the store; no attributor runs."""
    from tdaeval.suites.runner import build_groundtruth

    def action():
        with _Progress() as progress:
            rows = build_groundtruth(suite, shard=shard, cache_dir=cache_dir, executor=executor, progress=progress.target)
        typer.echo(_status_table(rows))
        if shard is not None and any(r["state"] == "incomplete" for r in rows):
            typer.echo(f"\nShard {shard} is done; the jobs still missing belong to other shards.")

    _guarded(action)


@groundtruth_app.command("status")
def groundtruth_status(suite: str = SUITE_ARG, cache_dir: Optional[Path] = CACHE_OPT) -> None:
    """Show, per gold standard, how many jobs are stored and how many are missing (trains nothing)."""
    from tdaeval.suites.runner import build_groundtruth

    def action():
        typer.echo(_status_table(build_groundtruth(suite, plan_only=True, cache_dir=cache_dir)))

    _guarded(action)


def _store(cache_dir: Optional[Path], suite: Optional[str], read_only: bool = False):
    from tdaeval.groundtruth.store import ArtifactStore

    if cache_dir is None and suite is not None:
        from tdaeval.suites.schema import load_suite, suite_path

        config, folder = load_suite(suite)  # only its 'store' is needed: the schema alone, no suite code imported or run
        cache_dir = suite_path(config.store, folder)
    return ArtifactStore(cache_dir, read_only=read_only)  # read-only: another account's store can be inspected


STORE_OPT = typer.Option(None, "--cache-dir", help="The store (default: $TDAEVAL_CACHE_DIR or the user cache).")
STORE_SUITE_OPT = typer.Option(None, "--suite", help="Use this suite's 'store'.")


@cache_app.command("ls")
def cache_ls(cache_dir: Optional[Path] = STORE_OPT, suite: Optional[str] = STORE_SUITE_OPT) -> None:
    """Artifacts in the store, counted per kind and task, with their size."""

    def action():
        store = _store(cache_dir, suite, read_only=True)
        groups: dict[tuple[str, str], list[int]] = {}
        for row in store.entries():
            count_bytes = groups.setdefault((row["kind"], row["task"]), [0, 0])
            count_bytes[0] += 1
            count_bytes[1] += row["bytes"]
        typer.echo(f"store {store.root}")
        typer.echo(f"{'kind':<26}{'task':<14}{'artifacts':>10}{'MiB':>10}")
        for (kind, task), (count, size) in sorted(groups.items()):
            typer.echo(f"{kind:<26}{task:<14}{count:>10}{size / 2**20:>10.2f}")
        total = sum(c for c, _ in groups.values()), sum(b for _, b in groups.values())
        typer.echo(f"{'total':<40}{total[0]:>10}{total[1] / 2**20:>10.2f}")

    _guarded(action)


@cache_app.command("verify")
def cache_verify(
    cache_dir: Optional[Path] = STORE_OPT,
    suite: Optional[str] = STORE_SUITE_OPT,
    repair: bool = typer.Option(False, "--repair", help="Remove damaged artifacts so that the next run recomputes them."),
) -> None:
    """Check every artifact as a run does (manifest, spec and tensor file bound to the key, checksum).

    Exit 0 when all are intact, 1 when some are damaged.
    """

    def action():
        store = _store(cache_dir, suite, read_only=not repair)
        problems = store.verify(repair=repair)
        for line in problems:
            typer.echo(f"DAMAGED  {line}")
        n = len(store.entries()) + (len(problems) if repair else 0)
        verdict = "removed; they will be recomputed" if repair else "run with --repair to remove them"
        typer.echo(f"{n - len(problems)} of {n} artifacts intact" + (f"; {len(problems)} damaged ({verdict})." if problems else "."))
        return bool(problems) and not repair

    if _guarded(action):
        raise typer.Exit(EXIT_FAILED_CHECK)


@cache_app.command("gc")
def cache_gc(
    cache_dir: Optional[Path] = STORE_OPT,
    suite: Optional[str] = STORE_SUITE_OPT,
    unused_days: Optional[float] = typer.Option(None, "--unused-days", help="Also remove artifacts no run has used for this many days."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed."),
) -> None:
    """Remove leftovers (temporary files, unreferenced tensor files, stale claims) and, optionally, unused artifacts."""

    def action():
        if unused_days is not None and unused_days < 0:
            raise ConfigError(f"The '--unused-days' option of cache gc must be >= 0. Got {unused_days!r} instead.")
        removed, freed = _store(cache_dir, suite, read_only=dry_run).gc(unused_days=unused_days, dry_run=dry_run)
        for path in removed:
            typer.echo(f"{'would remove' if dry_run else 'removed'}  {path}")
        typer.echo(f"{len(removed)} files, {freed / 2**20:.2f} MiB {'to free' if dry_run else 'freed'}.")

    _guarded(action)


def _plain_help(typer_app: typer.Typer, done: set[int] | None = None) -> None:
    """Make every help text of ``typer_app`` and its sub-apps plain text.

    The commands' docstrings are reStructuredText for the Sphinx docs; ``--help`` shows them
    through :func:`tdaeval._text.rst_to_plain`, with square brackets escaped when typer renders
    help as rich markup. Option help strings get the same. ``done`` holds the ids of the objects
    already converted (options are shared between commands).
    """
    import inspect

    from tdaeval._text import rst_to_plain

    done = set() if done is None else done
    rich_markup = getattr(typer_app, "rich_markup_mode", None) == "rich"

    def plain(text: object) -> object:
        if not isinstance(text, str):
            return text
        text = rst_to_plain(text)
        return _escape(text) if rich_markup else text

    commands = list(typer_app.registered_commands)
    infos = [*commands, *typer_app.registered_groups, typer_app.info]
    if typer_app.registered_callback is not None:
        infos.append(typer_app.registered_callback)
        if not isinstance(typer_app.info.help, str):  # the callback's docstring is the app's help
            commands.append(typer_app.registered_callback)
    for info in infos:
        if id(info) in done:
            continue
        done.add(id(info))
        callback = getattr(info, "callback", None)
        callback = callback if callable(callback) else None  # typer's DefaultPlaceholder when unset
        if isinstance(info.help, str):
            info.help = plain(info.help)
        elif info in commands and callback is not None and inspect.getdoc(callback):
            info.help = plain(inspect.getdoc(callback))
        if callback is not None:
            for parameter in inspect.signature(callback).parameters.values():
                option = parameter.default
                if id(option) not in done and isinstance(getattr(option, "help", None), str):
                    done.add(id(option))
                    option.help = plain(option.help)
        if isinstance(getattr(info, "typer_instance", None), typer.Typer):
            _plain_help(info.typer_instance, done)


_plain_help(app)


def main() -> None:
    """Entry point of the ``tdaeval`` script."""
    app()


if __name__ == "__main__":
    main()

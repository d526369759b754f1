"""Command line: ``domain-gap sample | export-onnx | analyze | mitigate | demo``.

Each command is a thin shell around one library function; errors become one clear line on
stderr and a non-zero exit code: 2 for bad input (config, data, paths, checkpoint), 1 for an
I/O failure (disk full, unreadable file), 130 for Ctrl-C in any stage (nothing partial left).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from domain_gap.config import Config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain why a segmentation model drops on another domain.",
    pretty_exceptions_enable=False,
)


EXIT_BAD_INPUT = 2
EXIT_IO = 1


def _one_line(exc: BaseException) -> str:
    """The exception as one line (an OSError as 'path: reason')."""
    if isinstance(exc, OSError) and type(exc).__str__ is OSError.__str__ and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _clear_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures (bad config, bad data, bad checkpoint, I/O) into one-line errors,
    and Ctrl-C in any stage into exit 130 (also when a library swallowed the interrupt)."""
    from domain_gap import interrupt

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        interrupt.install()
        try:
            result = fn(*args, **kwargs)
            interrupt.check()
            return result
        except KeyboardInterrupt:
            # on a line of its own: the terminal's ^C (or a progress bar) is left mid-line
            typer.echo("\nerror: interrupted (Ctrl-C); no output was replaced", err=True)
            raise typer.Exit(interrupt.EXIT_CODE) from None
        except (ValueError, FileNotFoundError, PermissionError, KeyError, RuntimeError) as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except OSError as exc:
            typer.echo(f"error: {_one_line(exc)}", err=True)
            raise typer.Exit(EXIT_IO) from None

    return wrapper


@app.command()
@_clear_errors
def sample(
    out: Annotated[Path, typer.Option(help="Folder to write the synthetic domains into.")],
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 0,
    size: Annotated[str, typer.Option(help="'demo' or 'test' (tiny).")] = "demo",
) -> None:
    """Write the built-in SYNTHETIC sample in the Cityscapes and KITTI on-disk layouts."""
    from domain_gap.data.sample import write_sample

    summary = write_sample(out, seed=seed, size=size)
    for domain, counts in summary.items():
        typer.echo(f"{domain}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@app.command("export-onnx")
@_clear_errors
def export_onnx(
    checkpoint: Annotated[Path, typer.Option(help="VainF-style or domain-gap checkpoint.")],
    out: Annotated[Path, typer.Option(help="Where to write the .onnx file.")],
    arch: Annotated[str | None, typer.Option(help="Architecture (default: from the file).")] = None,
    height: Annotated[
        int | None, typer.Option(help="Traced input height [256; --adabn-config: its image].")
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Traced input width [512; --adabn-config: its image].")
    ] = None,
    num_classes: Annotated[
        int | None, typer.Option(help="Classes of the classifier [the checkpoint's].")
    ] = None,
    output_stride: Annotated[int, typer.Option(help="8 or 16.")] = 16,
    tap: Annotated[
        str | None,
        typer.Option(help="Feature pooled into 'embedding': aspp | decoder [aspp; the config's]."),
    ] = None,
    adabn_config: Annotated[
        Path | None,
        typer.Option(help="Config whose analysis.mitigations adabn entry adapts the model first."),
    ] = None,
    adabn_target: Annotated[
        str | None, typer.Option(help="Domain AdaBN is fitted on (default: first non-source).")
    ] = None,
    cam: Annotated[
        bool, typer.Option(help="Add the closed-form classifier-layer Grad-CAM output 'cam'.")
    ] = False,
) -> None:
    """Export a checkpoint to ONNX (logits + embedding [+ cam] outputs) and check parity."""
    from models.export import export_adabn, export_checkpoint, parity_line

    sizes = {
        "arch": arch,
        "height": height,
        "width": width,
        "num_classes": num_classes,
        "output_stride": output_stride,
    }
    if adabn_config is None:
        if adabn_target is not None:
            raise ValueError("--adabn-target needs --adabn-config")
        size = {"height": height or 256, "width": width or 512}
        report = export_checkpoint(checkpoint, out, **{**sizes, **size}, tap=tap or "aspp", cam=cam)
    else:
        if cam:
            raise ValueError("--cam is not available with --adabn-config yet")
        from domain_gap.config import load_config

        report = export_adabn(
            checkpoint, out, load_config(adabn_config), adabn_target, **sizes, tap=tap
        )
        typer.echo(
            f"adabn ({report['mitigation']}): BatchNorm statistics of {report['n_images']} "
            f"{report['target']} frames"
        )
    typer.echo(parity_line(report))
    typer.echo(f"wrote {out} (embedding: {report['tap']}, {report['embedding_dim']} dims)")


@app.command()
@_clear_errors
def analyze(
    config: Annotated[Path, typer.Option(help="YAML config (see configs/sample.yaml).")],
    out: Annotated[Path, typer.Option(help="Folder for report.html, summary.json, samples.csv.")],
    executor: Annotated[
        str | None,
        typer.Option(help="Where the extraction runs: local | ray [config execution.executor]."),
    ] = None,
) -> None:
    """Measure the domain gap for the domains in CONFIG and write the report."""
    from domain_gap.config import load_config
    from domain_gap.pipeline import run_analysis

    result = run_analysis(with_executor(load_config(config), executor), out)
    typer.echo(f"report: {result['report']}")


def with_executor(config: Config, executor: str | None) -> Config:
    """``config`` with ``execution.executor`` set to ``executor`` (None: as configured),
    validated like the config file's value."""
    if executor is None:
        return config
    from domain_gap.config import ConfigError, ExecutionConfig

    try:
        execution = ExecutionConfig(**{**config.execution.model_dump(), "executor": executor})
    except ValueError:
        raise ConfigError(f"--executor: expected 'local' or 'ray', got {executor!r}") from None
    return config.model_copy(update={"execution": execution})


def only_mitigations(config: Config, only: str | None) -> Config:
    """``config`` with just the mitigations named in ``only`` (comma-separated; None = all).

    ValueError when the config lists none, or on a name that is not a configured label."""
    labels = [m.label for m in config.analysis.mitigations]
    if not labels:
        raise ValueError("analysis.mitigations is empty: nothing to test (list fixes there)")
    if only is None:
        return config
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in labels]
    if unknown or not names:
        raise ValueError(
            f"--only: unknown mitigation {', '.join(unknown) or repr(only)}; "
            f"analysis.mitigations has {', '.join(labels)}"
        )
    kept = [m for m in config.analysis.mitigations if m.label in names]
    analysis = config.analysis.model_copy(update={"mitigations": kept})
    return config.model_copy(update={"analysis": analysis})


@app.command()
@_clear_errors
def mitigate(
    config: Annotated[Path, typer.Option(help="YAML config with analysis.mitigations.")],
    out: Annotated[Path, typer.Option(help="Folder for report.html, summary.json, samples.csv.")],
    only: Annotated[
        str | None, typer.Option(help="Comma-separated mitigation names (default: all).")
    ] = None,
) -> None:
    """Measure the gap, then test the configured fixes (the report's "What if" section)."""
    from domain_gap.config import load_config
    from domain_gap.pipeline import run_analysis

    chosen = only_mitigations(load_config(config), only)
    result = run_analysis(chosen, out)
    typer.echo("mitigations: " + ", ".join(m.label for m in chosen.analysis.mitigations))
    typer.echo(f"report: {result['report']}")


@app.command()
@_clear_errors
def demo(
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("out/demo"),
) -> None:
    """Generate the built-in sample if needed, then analyse it with the demo model."""
    from domain_gap.pipeline import run_demo

    result = run_demo(out)
    typer.echo(f"report: {result['report']}")


def main() -> None:  # pragma: no cover - console entry
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover - ``python -m domain_gap.cli``
    main()

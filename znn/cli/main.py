"""The `znn` command group: version, verbosity, and one-line errors instead of tracebacks."""
from __future__ import annotations

import sys

import click

from znn._version import __version__
from znn.errors import ZnnError


def _version_text():
    try:
        from znn import kernels
        flags = " ".join(f"{k}={int(v)}" for k, v in kernels.build_flags().items())
        return (f"znn {__version__}\nbuild flags: {flags}\nFFT backend: {kernels.fft_backend()}"
                f"\ndefault dtype: {kernels.default_dtype()}\nSIMD clone: {kernels.simd_clone()}")
    except ImportError as exc:  # a broken build must still say what it is
        return f"znn {__version__}\nkernels not importable: {exc}"


def _print_version(ctx, _param, value):
    if value and not ctx.resilient_parsing:
        click.echo(_version_text())
        ctx.exit()


class ZnnGroup(click.Group):
    """Turns every ZnnError (and bad files) into one line on stderr with exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (ZnnError, OSError, ValueError, MemoryError) as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            if isinstance(exc, click.ClickException):
                raise
            name = type(exc).__name__
            label = "error" if isinstance(exc, ZnnError) else f"error ({name})"
            click.echo(f"znn: {label}: {exc}", err=True)
            sys.exit(1)


@click.group(cls=ZnnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and the build flags, then exit.")
@click.option("-v", "--verbose", count=True, help="More output.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, verbose, quiet, debug):
    """znn: train and run dense 2D/3D convolutional networks on CPUs (ZNN-compatible)."""
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=-1 if quiet else verbose, debug=debug)
    if ctx.invoked_subcommand in ("train", "forward", "optimize-conv"):
        # repeated passes reuse mapped pages instead of faulting in fresh ones (~25% per
        # tile); huge pages only for training (first touch vs steady state: znn.process)
        from znn.process import tune_memory
        tune_memory(huge_pages=ctx.invoked_subcommand == "train")


def _register():
    from znn.cli import info

    cli.add_command(info.info)
    for module, name in (("train", "train"), ("forward", "forward"),
                         ("optimize_conv", "optimize_conv")):
        try:
            mod = __import__(f"znn.cli.{module}", fromlist=[name])
        except ImportError:
            continue
        cli.add_command(getattr(mod, name))


_register()

if __name__ == "__main__":  # pragma: no cover
    cli()

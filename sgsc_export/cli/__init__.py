"""The ``sgsc`` command line: the one place that sees all three packages, and its one error handler.

The group loads each command from its own module on first use (``_LAZY``), so ``sgsc --help`` imports neither
torch, onnx nor onnxruntime. Every command is a :class:`Command`, whose ``make_context`` and ``invoke`` end in
``_one_handler``: the only place an exception becomes what the user sees, as a :class:`Failure` (click's
``ClickException``, carrying the exit code):

- an ``SGSCError``: one line ``error: …``, its ``exit_code`` (2); a usage error: one line, exit code 2;
- ``sys.exit`` in a user's model code: the ``ModelError`` of ``sgsc_export.errors.user_code_exit``, exit code
  2 (a model never decides the exit code; the commands end through ``Failure``/``finish``, never
  ``sys.exit``);
- Ctrl-C: exit code 130, SIGTERM (:class:`Terminated`): 143, each one line; every file is written through a
  temp file, so neither leaves a half-written one. A command may say how to continue (:class:`Interrupted`);
- any other exception: one line naming its type, exit code 2 (never a traceback);
- a failed gate: exit code 1, after the command printed its verdict (``finish``).

It sits on the commands as well as the group, so a command invoked on its own (``CliRunner`` on
``validate_cmd``) ends the same way.
"""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
from collections.abc import Iterator
from typing import IO, Any

import click

from sgsc_export import __version__
from sgsc_export.errors import SGSCError, user_code_exit

__all__ = ["Command", "Failure", "Interrupted", "Terminated", "describe", "finish", "main"]

# name → "module:attribute" of a click.Command, imported on first use
_LAZY = {
    "compress": "sgsc_export.cli.compress:compress_cmd",
    "config": "sgsc_export.cli.config:config_cmd",
    "export": "sgsc_export.cli.export:export_cmd",
    "inspect": "sgsc_export.cli.inspect:inspect_cmd",
    "pipeline": "sgsc_export.cli.pipeline.cli:pipeline_cmd",
    "validate": "sgsc_export.cli.validate:validate_cmd",
}


class Failure(click.ClickException):
    """How a command ends when it does not end with 0: one line on stderr (none when the command has printed
    its verdict already) and the exit code."""

    def __init__(self, message: str | None, exit_code: int = 2, *, prefix: str = "error: ") -> None:
        super().__init__(message or "")
        self.exit_code, self.prefix, self.silent = exit_code, prefix, message is None

    def show(self, file: IO[Any] | None = None) -> None:
        if not self.silent:
            click.echo(self.prefix + self.message, err=True)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (exit code 130) with the line to print, when a command can say how to continue."""

    exit_code = 130

    def __init__(self, message: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class Terminated(Interrupted):
    """SIGTERM, raised where the process is, like Ctrl-C: every writer removes its temp file. Exit code
    143."""

    exit_code = 143


def finish(code: int) -> None:
    """End a command with its verdict's exit code (0 returns; the verdict is printed already)."""
    if code:
        raise Failure(None, code)


def describe(exc: BaseException, stage: str) -> str:
    """The one line an error becomes: an ``SGSCError``'s message; a user's ``sys.exit`` as ``user_code_exit``
    names it; any other exception its type and the first line of its message."""
    if isinstance(exc, SystemExit):
        exc = user_code_exit(exc, stage)
    text = " ".join(str(exc).split("\n"))
    if isinstance(exc, SGSCError):
        return text
    text = str(exc).splitlines()[0] if str(exc).strip() else "(no message)"
    return f"{type(exc).__name__}: {text}"


@contextlib.contextmanager
def _one_handler(stage: str) -> Iterator[None]:
    """Every exception of a command → a :class:`Failure` (see the module docstring)."""
    try:
        yield
    except (click.exceptions.Exit, click.exceptions.Abort, Failure):
        raise
    except click.UsageError as exc:  # a bad flag or value: one line too, not click's three
        where = exc.ctx.command_path if exc.ctx is not None else "sgsc"
        raise Failure(f"{' '.join(exc.format_message().split())} (see `{where} --help`)",
                      exc.exit_code) from None
    except click.ClickException:
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C (130) or SIGTERM (143), instead of click's `Aborted!` and 1
        code = getattr(exc, "exit_code", 130)
        what = "terminated (SIGTERM)" if code == 143 else "interrupted (Ctrl-C)"
        message = getattr(exc, "message", None) or f"{what}: stopped; no half-written file is left"
        raise Failure(message, code, prefix="") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - one line, never a traceback
        code = getattr(exc, "exit_code", 2) if isinstance(exc, SGSCError) else 2
        raise Failure(describe(exc, stage), code) from None


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _on_sigint(signum, frame) -> None:
    # ``Interrupted``, not Python's bare KeyboardInterrupt: the interpreter remembers a bare one that passed
    # through code it ran (e.g. through a C extension's evaluation of Python code) and then, after the
    # command's exit code 130, kills itself with SIGINT at shutdown (seen as return code -2); the subclass is
    # caught the same way and is not remembered
    raise Interrupted()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM raises ``Terminated`` and Ctrl-C ``Interrupted`` while a command runs (main thread only; a
    SIGINT that is ignored or handled by someone else stays so), then the previous handlers are back."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(ValueError, OSError):
            previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, _on_sigterm)
            if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Handled:
    """``make_context`` (the arguments) and ``invoke`` (the run) of a command or the group, through the one
    handler."""

    def make_context(self, info_name, args, parent=None, **extra):
        with _one_handler(info_name or "sgsc"):
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: click.Context):
        with _sigterm_raises(), _one_handler(ctx.info_name or "sgsc"):
            return super().invoke(ctx)


class Command(_Handled, click.Command):
    """An ``sgsc`` command: ``@click.command(name, cls=Command)``."""


class _Group(_Handled, click.Group):
    """Loads the commands lazily from their modules."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_LAZY))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in _LAZY:
            return cmd
        module, _, attr = _LAZY[name].partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            return _unavailable(name, f"{module} is not available ({exc})")


def _unavailable(name: str, why: str) -> click.Command:
    @click.command(name, cls=Command, help=f"(unavailable: {why})",
                   context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def cmd(args: tuple[str, ...]) -> None:
        raise Failure(f"`sgsc {name}` is unavailable: {why}")

    return cmd


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="sgsc")
def main() -> None:
    """Safety-Guided Self-Compression: compress PyTorch models, export them to ONNX, validate them in
    onnxruntime."""


if __name__ == "__main__":
    main()

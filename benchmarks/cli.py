"""The benchmarks' commands: click, with the module's docstring as the help, laid out as written.

Each benchmark explains its method in its module docstring, with lists and example commands; click
would rewrap those into running text, so the help shows the docstring line for line instead::

    @command(__doc__)
    @click.option("--rounds", type=click.IntRange(1), default=3, show_default=True, help="Rounds.")
    def main(rounds: int) -> None: ...
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import click

__all__ = ["command"]


class _DocCommand(click.Command):
    """A command whose help text keeps its line breaks and indentation."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if not self.help:
            return
        formatter.write_paragraph()
        with formatter.indentation():
            indent = " " * formatter.current_indent
            for line in inspect.cleandoc(self.help).splitlines():
                formatter.write(f"{indent}{line}\n" if line else "\n")


def command(doc: str | None) -> Callable[[Callable[..., Any]], click.Command]:
    """A decorator making a click command whose ``--help`` shows ``doc`` (a module docstring) as written.

    Args:
        doc: the help text, usually the module's ``__doc__``.
    """
    return click.command(cls=_DocCommand, help=doc)

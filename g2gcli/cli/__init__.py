"""The ``g2g`` command line: a thin Typer layer over library functions.

Each verb (one module here) parses its options into a config, calls one function that tests call too, and renders
the result with rich. Heavy imports happen inside the verbs so ``g2g --version`` and ``--help`` answer at once.
"""

from g2g.cli.common import app
from g2g.cli import prepare, train, export, mix, merge, eval, demo  # noqa: F401  (each registers its verb on app)


def main() -> None:
    """The CLI (the ``g2g`` command is :func:`g2g.__main__.main`: it checks the memory limit first)."""
    app()


if __name__ == "__main__":
    main()

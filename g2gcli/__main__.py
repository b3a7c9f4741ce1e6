"""The ``g2g`` command (``g2g`` and ``python -m g2g``, the module form torchrun needs):

    torchrun --nproc_per_node 2 -m g2g train DATA -o RUN --steps 10000

Before the CLI and its libraries are imported, the address-space limit is checked (:mod:`g2g.limits`): a native
library that cannot map itself fails in ways no handler catches.
"""

import sys


def main() -> None:
    from g2g.limits import too_little_memory

    reason = too_little_memory(sys.argv[1:])
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        raise SystemExit(3)  # g2g.errors.EXIT_INPUT, not imported: nothing but the standard library yet
    from g2g.cli import main as cli

    cli()


if __name__ == "__main__":
    main()

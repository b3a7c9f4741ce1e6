"""``python -m g2g ...`` is the ``g2g`` command; the module form torchrun needs:

    torchrun --nproc_per_node 2 -m g2g train DATA -o RUN --preset small --steps 10000
"""

from g2g.cli import main

if __name__ == "__main__":
    main()

"""``python -m g2g.train DATA -o RUN ...`` = ``g2g train ...``; the module form torchrun needs:

    torchrun --nproc_per_node 2 -m g2g.train DATA -o RUN --preset small --steps 10000
"""

import sys

from g2g.cli import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "train", *sys.argv[1:]]
    main()

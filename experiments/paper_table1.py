"""`ecjax experiment=paper_table1` (conf/experiment/paper_table1.yaml); extra arguments are Hydra overrides.

    python experiments/paper_table1.py sim.S=8
"""

import sys

from ecjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment=paper_table1", *sys.argv[1:]]))

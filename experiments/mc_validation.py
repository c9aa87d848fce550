"""`ecjax experiment=mc_validation` (conf/experiment/mc_validation.yaml); extra arguments are Hydra overrides.

    python experiments/mc_validation.py sim.S=8
"""

import sys

from ecjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment=mc_validation", *sys.argv[1:]]))

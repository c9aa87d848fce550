"""`ecjax experiment=risk_sweep` (conf/experiment/risk_sweep.yaml); extra arguments are Hydra overrides.

    python experiments/risk_sweep.py sim.S=8
"""

import sys

from ecjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment=risk_sweep", *sys.argv[1:]]))

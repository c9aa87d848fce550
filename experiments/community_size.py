"""`ecjax experiment=community_size` (conf/experiment/community_size.yaml); extra arguments are Hydra overrides.

    python experiments/community_size.py sim.S=8
"""

import sys

from ecjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiment=community_size", *sys.argv[1:]]))

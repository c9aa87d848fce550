"""On-chain coordination of FC-MPC (MODEL §6, paper Algorithm 2): contract client, Python mirror,
fixed-point format. See contracts/README.md."""

from ecjax.chain import fixedpoint as fixedpoint
from ecjax.chain.client import Chain as Chain
from ecjax.chain.client import ChainMismatch as ChainMismatch
from ecjax.chain.client import Coordinator as Coordinator
from ecjax.chain.client import CoordinatorError as CoordinatorError
from ecjax.chain.client import History as History
from ecjax.chain.client import RoundState as RoundState
from ecjax.chain.client import UploadResult as UploadResult
from ecjax.chain.client import load_artifact as load_artifact
from ecjax.chain.config import CoordinatorConfig as CoordinatorConfig
from ecjax.chain.mirror import Mirror as Mirror
from ecjax.chain.mirror import ProtocolError as ProtocolError

"""On-chain coordination of FC-MPC (MODEL §6, paper Algorithm 2): contract client, Python mirror,
fixed-point format, and the replay and audit of stored runs (each checked first against the config
it was run with: `ecjax.chain.origin`). See contracts/README.md."""

from ecjax.chain import fixedpoint as fixedpoint
from ecjax.chain.audit import audit_run as audit_run
from ecjax.chain.audit import audit_store as audit_store
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
from ecjax.chain.origin import OriginCheck as OriginCheck
from ecjax.chain.origin import check_origin as check_origin
from ecjax.chain.replay import Replay as Replay
from ecjax.chain.replay import coordinator_config as coordinator_config
from ecjax.chain.replay import open_chain as open_chain
from ecjax.chain.replay import replay as replay
from ecjax.chain.report import AuditReport as AuditReport
from ecjax.chain.report import Difference as Difference
from ecjax.chain.sample import Inputs as Inputs
from ecjax.chain.sample import SampleError as SampleError
from ecjax.chain.sample import StoredSample as StoredSample
from ecjax.chain.sample import stored_sample as stored_sample

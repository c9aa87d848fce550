"""web3 client of the FC-MPC coordinator contract: chains, deployment, uploads, history.

Chains (`Chain`):
- `Chain.tester()`: embedded eth-tester with py-evm, in process (default; no server). Its backend
  finds a transaction by hash through py-evm's index (the stock backend walks back from the head
  block, which makes a day's replay quadratic in its ~5,000 blocks) and keeps the receipt of
  every mined transaction.
- `Chain.anvil()`: starts contracts/node_modules/.bin/anvil on 127.0.0.1 at a free port with
  `--prune-history`, waits until it answers, stops it on `close()` / leaving the `with` block.
- `Chain.rpc(url)`: any JSON-RPC endpoint; the deployer key comes from the environment variable
  `ECJAX_CHAIN_KEY`, or from an encrypted keystore file whose password is in
  `ECJAX_CHAIN_PASSWORD`.

Events are decoded from the receipts of the transactions a `Coordinator` sends (no scan of the
chain per upload); `Coordinator.events` returns those when they are provably complete (every
upload in the contract's hash chain head, every close in its round state) and otherwise reads the
logs of the whole range since deployment.

Agent accounts are made in memory (`Chain.new_accounts`) and funded by the chain's funder. Keys
are never written, logged or printed by this module; `repr` of its objects shows addresses only.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import json
import os
import re
import shutil
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import Web3

from ecjax.chain import fixedpoint as fp
from ecjax.chain.config import CoordinatorConfig
from ecjax.chain.mirror import Mirror, StepNegotiation

ARTIFACT = "FCMPCCoordinator.json"
COMMIT_ARTIFACT = "FCMPCCommitCoordinator.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL = REPO_ROOT / "contracts" / "node_modules" / ".bin" / "anvil"
KEY_ENV = "ECJAX_CHAIN_KEY"
KEYSTORE_PASSWORD_ENV = "ECJAX_CHAIN_PASSWORD"


@functools.cache
def load_artifact(name: str = ARTIFACT) -> dict[str, Any]:
    """The committed compiler output of a coordinator contract (default: the paper's
    `FCMPCCoordinator`; `COMMIT_ARTIFACT`: the commit-and-challenge one): `abi`, `bytecode`,
    `deployedBytecode`, `compiler`."""
    return json.loads(resources.files("ecjax.chain").joinpath("artifacts", name).read_text())


# ------------------------------------------------------------------ errors


class CoordinatorError(Exception):
    """A call the contract rejected; `name` is the custom error, `values` its arguments."""

    def __init__(self, name: str, values: tuple = (), message: str = ""):
        self.name, self.values = name, tuple(values)
        super().__init__(message or f"{name}{self.values}")


class ChainMismatch(RuntimeError):
    """The events do not rebuild to what the contract stores (hash chain, iterates or θ²)."""


@functools.cache
def _error_table() -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for item in load_artifact()["abi"] + load_artifact(COMMIT_ARTIFACT)["abi"]:
        if item["type"] == "error":
            types = [x["type"] for x in item["inputs"]]
            sig = f"{item['name']}({','.join(types)})"
            table[keccak(text=sig)[:4]] = (item["name"], types)
    return table


def _revert_data(exc: BaseException) -> bytes | None:
    data = getattr(exc, "data", None)
    if isinstance(data, dict):  # some providers nest it
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    for arg in getattr(exc, "args", ()):  # eth-tester: TransactionFailed("execution reverted: b'...'")
        if isinstance(arg, (bytes, bytearray)):
            return bytes(arg)
        m = re.search(r"b['\"]", arg) if isinstance(arg, str) else None
        if m is not None:
            try:
                value = ast.literal_eval(arg[m.start() :])
            except (ValueError, SyntaxError):
                return None
            return value if isinstance(value, bytes) else None
    return None


def decode_error(exc: BaseException) -> CoordinatorError | None:
    """The custom error of either coordinator contract in an exception raised by a call, or None."""
    data = _revert_data(exc)
    if data is None or len(data) < 4 or data[:4] not in _error_table():
        return None
    name, types = _error_table()[data[:4]]
    values = abi_decode(types, data[4:])
    values = tuple(to_checksum_address(v) if ty == "address" else v for ty, v in zip(types, values))
    return CoordinatorError(name, values)


# ------------------------------------------------------------------ chains


def _hex(h) -> str:
    """A transaction hash as a 0x-prefixed hex string (web3 returns HexBytes)."""
    x = bytes(h).hex()
    return "0x" + x


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tester_backend():
    """eth-tester's py-evm backend with transaction and receipt look-ups by hash through
    py-evm's transaction index, and the receipts of mined transactions kept (checked against
    the canonical block hash, so a reverted snapshot never serves a stale one). Falls back to
    the stock backend if this eth-tester lacks the pieces it builds on."""
    from eth_tester import PyEVMBackend

    try:
        from eth.exceptions import TransactionNotFound as EVMTransactionNotFound
        from eth_tester.backends.pyevm.serializers import serialize_transaction, serialize_transaction_receipt
        from eth_tester.exceptions import TransactionNotFound
    except ImportError:  # pragma: no cover - other eth-tester layouts
        return PyEVMBackend()

    class IndexedPyEVMBackend(PyEVMBackend):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._receipts: dict[bytes, tuple[bytes, dict]] = {}  # hash -> (block hash, receipt)

        def _index(self, h):
            try:
                return self.chain.chaindb.get_transaction_index(h)
            except EVMTransactionNotFound:
                return None

        def _locate(self, h):
            pending = self.chain.get_block()
            for index, tx in enumerate(pending.transactions):
                if tx.hash == h:
                    return pending, tx, index, True
            found = self._index(h)
            if found is None:
                raise TransactionNotFound(f"No transaction found for transaction hash: 0x{bytes(h).hex()}")
            number, index = found
            block = self.chain.get_canonical_block_by_number(number)
            return block, block.transactions[index], index, False

        def get_transaction_by_hash(self, transaction_hash):
            block, tx, index, pending = self._locate(transaction_hash)
            return serialize_transaction(block, tx, index, pending)

        def get_transaction_receipt(self, transaction_hash):
            h = bytes(transaction_hash)
            kept = self._receipts.get(h)
            if kept is not None:
                found = self._index(h)
                if found is not None and self.chain.chaindb.get_canonical_block_hash(found[0]) == kept[0]:
                    return kept[1]
                del self._receipts[h]
            block, tx, index, pending = self._locate(h)
            receipts = block.get_receipts(self.chain.chaindb)
            receipt = serialize_transaction_receipt(block, receipts, tx, index, pending, self.chain.get_vm())
            if not pending:
                self._receipts[h] = (block.hash, receipt)
            return receipt

    return IndexedPyEVMBackend()


class Chain:
    """A connection to an EVM chain with a funder account and (local chains) time control."""

    def __init__(self, w3: Web3, kind: str, *, funder, gas: int | None = 5_000_000, process=None):
        self.w3, self.kind = w3, kind
        # web3's validation middleware asks for the chain id before every call: answer it once
        w3.provider.cache_allowed_requests = True
        w3.provider.cacheable_requests = ("eth_chainId",)
        self._funder = funder  # unlocked address (str) or LocalAccount
        self.gas = gas  # fixed gas limit per transaction; None: estimate (and preflight) each one
        self._process = process
        self._chain_id: int | None = None
        self._nonces: dict[str, int] = {}  # local chains: next nonce of each account this client signs for
        self._fee: tuple[int, int] | None = None  # local chains: fees of the last accepted transaction

    def __repr__(self) -> str:
        return f"Chain(kind={self.kind!r}, chain_id={self.w3.eth.chain_id})"

    # ---------------------------------------------------------- constructors
    @classmethod
    def tester(cls) -> "Chain":
        """Embedded eth-tester (py-evm, Prague rules), in process."""
        from eth_tester import EthereumTester
        from web3 import EthereumTesterProvider

        tester = EthereumTester(_tester_backend())
        w3 = Web3(EthereumTesterProvider(tester))
        chain = cls(w3, "tester", funder=w3.eth.accounts[0])
        chain._tester = tester
        return chain

    @classmethod
    def anvil(cls, *, binary: str | os.PathLike | None = None, timeout_s: float = 30.0) -> "Chain":
        """Start a local anvil (127.0.0.1, free port, `--prune-history`, Prague) and connect to it."""
        exe = Path(binary) if binary else ANVIL
        if not exe.exists():
            found = shutil.which("anvil")
            if found is None:
                raise FileNotFoundError(f"anvil not found at {exe} (run `npm ci` in contracts/).")
            exe = Path(found)
        port = _free_port()
        args = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--prune-history", "--hardfork", "prague", "--silent"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"anvil exited with code {proc.returncode} before answering.")
            try:
                if w3.is_connected() and w3.eth.block_number >= 0:
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                proc.terminate()
                proc.wait(5)
                raise TimeoutError(f"anvil did not answer within {timeout_s} s.")
            time.sleep(0.1)
        return cls(w3, "anvil", funder=w3.eth.accounts[0], process=proc)

    @classmethod
    def rpc(
        cls,
        url: str,
        *,
        key_env: str = KEY_ENV,
        keystore: str | os.PathLike | None = None,
        password_env: str = KEYSTORE_PASSWORD_ENV,
        require_key: bool = True,
    ) -> "Chain":
        """Connect to a JSON-RPC URL; the funder/deployer key comes from `key_env` or `keystore`.
        Without `require_key`, a connection without a key (neither set) can read but not send."""
        w3 = Web3(Web3.HTTPProvider(url))
        if keystore is None and not require_key and not os.environ.get(key_env):
            return cls(w3, "rpc", funder=None, gas=None)
        if keystore is not None:
            password = os.environ.get(password_env)
            if password is None:
                raise KeyError(f"set {password_env} to the password of the keystore file.")
            key = Account.decrypt(json.loads(Path(keystore).read_text()), password)
        else:
            key = os.environ.get(key_env)
            if not key:
                raise KeyError(f"set {key_env} to the deployer's private key (or pass `keystore`).")
        return cls(w3, "rpc", funder=Account.from_key(key), gas=None)

    # ---------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Stop the anvil process this chain started (no-op otherwise)."""
        proc, self._process = self._process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> "Chain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------- time
    def timestamp(self) -> int:
        """Timestamp of the latest block."""
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def increase_time(self, seconds: int) -> int:
        """Mine a block `seconds` later than now (local chains); returns its timestamp."""
        seconds = int(seconds)
        if self.kind == "tester":
            pending = int(self._tester.get_block_by_number("pending")["timestamp"])
            self._tester.time_travel(pending + seconds)
        elif self.kind == "anvil":
            self.w3.provider.make_request("evm_increaseTime", [seconds])
            self.w3.provider.make_request("evm_mine", [])
        else:
            raise NotImplementedError("time control needs a local chain (tester or anvil).")
        return self.timestamp()

    # ---------------------------------------------------------- accounts and transactions
    @property
    def funder_address(self) -> str:
        return self._funder if isinstance(self._funder, str) else self._funder.address

    def new_accounts(self, k: int, fund_wei: int = 10**19) -> list[LocalAccount]:
        """`k` fresh accounts (keys in memory only), each funded with `fund_wei`."""
        accounts = [Account.create() for _ in range(k)]
        for a in accounts:
            if fund_wei:
                self.send_value(a.address, fund_wei)
        return accounts

    def send_value(self, to: str, wei: int):
        tx = {"to": to_checksum_address(to), "value": int(wei)}
        return self._send(tx, self._funder)

    @property
    def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def _nonce(self, address: str) -> int:
        """The next nonce of `address`: read from the chain on public chains, and once per account
        on local chains, where only this client signs for the accounts it made."""
        if self.kind == "rpc" or address not in self._nonces:
            return int(self.w3.eth.get_transaction_count(address, "pending"))
        return self._nonces[address]

    def _fees(self) -> tuple[int, int]:
        """(max priority fee, max fee) per gas: twice the latest base fee plus the tip. A local
        chain keeps the fees of its last accepted transaction (its blocks hold one transaction
        each, far below the gas target, so the base fee only falls); a refused send reads them
        again."""
        if self.kind != "rpc" and self._fee is not None:
            return self._fee
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
        tip = int(self.w3.eth.max_priority_fee) if self.kind == "rpc" else 10**9
        return tip, 2 * base + tip

    def _send(self, tx: dict, sender, gas: int | None = None):
        w3 = self.w3
        if isinstance(sender, str):  # unlocked node account
            tx = {**tx, "from": sender}
            if gas is not None:
                tx["gas"] = gas
            h = w3.eth.send_transaction(tx)
        else:
            address = sender.address
            tx = {**tx, "from": address, "chainId": self.chain_id}
            tx["nonce"] = self._nonce(address)
            tx["gas"] = gas if gas is not None else w3.eth.estimate_gas(tx)
            if "maxFeePerGas" not in tx and "gasPrice" not in tx:
                tx["maxPriorityFeePerGas"], tx["maxFeePerGas"] = self._fees()
            self._nonces.pop(address, None)  # read again after a failed send
            self._fee = None
            h = w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
            if self.kind != "rpc":
                self._nonces[address] = tx["nonce"] + 1
                self._fee = (tx["maxPriorityFeePerGas"], tx["maxFeePerGas"]) if "maxFeePerGas" in tx else None
        return w3.eth.wait_for_transaction_receipt(h, poll_latency=0.01 if self.kind != "rpc" else 0.1)

    def transact(self, fn, sender, *, gas: int | None = None, value: int = 0):
        """Send a contract call from `sender` (LocalAccount or unlocked address), with `value` wei;
        returns the receipt.

        With `gas=None` on a chain without a fixed gas limit the call is estimated first, so a
        revert raises `CoordinatorError` without spending gas. With a fixed limit (local chains)
        the transaction is sent directly and a failed one is replayed as a call for its error.
        """
        address = sender if isinstance(sender, str) else sender.address
        gas = gas if gas is not None else self.gas
        if gas is None:
            try:
                gas = int(fn.estimate_gas({"from": address, "value": int(value)}) * 1.2) + 10_000
            except Exception as e:
                raise decode_error(e) or e
        tx = {"to": fn.address, "data": fn._encode_transaction_data(), "value": int(value)}
        try:
            receipt = self._send(tx, sender, gas)
        except Exception as e:  # some backends raise instead of mining a failed transaction
            raise decode_error(e) or e
        if receipt["status"] != 1:
            try:
                fn.call({"from": address, "value": int(value)})
            except Exception as e:
                err = decode_error(e)
                if err is not None:
                    raise err from None
            raise CoordinatorError("Reverted", (receipt["transactionHash"].hex(),))
        return receipt


# ------------------------------------------------------------------ coordinator


@dataclasses.dataclass(frozen=True)
class RoundState:
    t: int
    p: int
    deadline: int
    mask: int
    count: int
    max_theta2: int
    head: bytes


@dataclasses.dataclass(frozen=True)
class UploadResult:
    t: int
    p: int
    agent: int
    theta2: int  # 0 at p = 0
    committed_hash: bytes
    head: bytes
    gas_used: int
    closed: bool  # this upload closed the iteration
    terminated: bool  # ... and terminated the step
    tx_hash: str = ""  # 0x-prefixed transaction hash
    block: int = -1  # block number of the transaction
    events: tuple = ()  # the coordinator events of the transaction, decoded from its receipt


@dataclasses.dataclass
class History:
    """The negotiation rebuilt from events, checked against the contract (see `Coordinator.history`)."""

    steps: list[StepNegotiation]
    head: bytes
    events: list


class DeployedCoordinator:
    """A deployed coordinator contract (either mode) and the accounts of its prosumers (by
    prosumer index): deployment, the parameters it was deployed with, a `Mirror` of them."""

    ARTIFACT = ARTIFACT

    def __init__(self, chain: Chain, address: str, agents: Sequence[LocalAccount] | None = None, *, from_block: int = 0):
        self.chain = chain
        abi = load_artifact(self.ARTIFACT)["abi"]
        self.contract = chain.w3.eth.contract(address=to_checksum_address(address), abi=abi)
        self.agents = list(agents) if agents is not None else []
        self.from_block = from_block

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self.address}, chain={self.chain!r}, agents={len(self.agents)})"

    @property
    def address(self) -> str:
        return self.contract.address

    @classmethod
    def deploy(
        cls,
        chain: Chain,
        config: CoordinatorConfig,
        agents: Sequence[LocalAccount] | None = None,
        *,
        fund_wei: int = 10**19,
        extra_args: tuple = (),
    ):
        """Deploy for `config`; make and fund one account per prosumer unless `agents` is given.
        `extra_args` follow the common constructor arguments (commit mode: the bonds)."""
        if agents is None:
            agents = chain.new_accounts(config.n_prosumers, fund_wei)
        art = load_artifact(cls.ARTIFACT)
        factory = chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
        args = config.constructor_args([a.address for a in agents]) + tuple(extra_args)
        data = factory.constructor(*args).data_in_transaction
        gas = None if chain.gas is None else max(chain.gas, 8_000_000)
        try:
            receipt = chain._send({"data": data, "value": 0}, chain._funder, gas)
        except Exception as e:
            raise decode_error(e) or e
        if receipt["status"] != 1:
            raise CoordinatorError("DeployFailed", (receipt["transactionHash"].hex(),))
        coord = cls(chain, receipt["contractAddress"], agents, from_block=receipt["blockNumber"])
        coord.deploy_receipt = receipt
        return coord

    # ---------------------------------------------------------- reads
    @property
    def functions(self):
        return self.contract.functions

    @functools.cached_property
    def params(self) -> dict[str, Any]:
        """Immutable parameters read from the contract."""
        f = self.functions
        n_p = f.nProsumers().call()
        return dict(
            config_hash=bytes(f.configHash().call()),
            n=f.nAgents().call(),
            N=f.horizon().call(),
            nu=f.nu().call(),
            n_prosumers=n_p,
            w_num=f.wNum().call(),
            w_den=f.wDen().call(),
            kappa2=f.kappa2().call(),
            p_max=f.pMax().call(),
            period=f.period().call(),
            agents=[f.agents(i).call() for i in range(n_p)],
            ids=[f.agentIds(i).call() for i in range(n_p)],
            bounds=[tuple(f.bounds(i).call()) for i in range(n_p)],
            **self._more_params(),
        )

    def _more_params(self) -> dict[str, Any]:
        return {}

    def mirror(self) -> Mirror:
        """A fresh `Mirror` with this contract's parameters (state at deployment)."""
        q = self.params
        return Mirror(
            q["n_prosumers"], q["nu"], q["w_num"], q["w_den"], q["kappa2"], q["p_max"],
            N=q["N"], bounds=q["bounds"], addresses=q["agents"],
        )  # fmt: skip

    def _sender(self, i: int) -> LocalAccount:
        if not 0 <= i < len(self.agents):
            raise IndexError(f"no local account for prosumer {i}.")
        return self.agents[i]


class Coordinator(DeployedCoordinator):
    """A deployed `FCMPCCoordinator` (the paper's mode: every upload on chain) and the accounts
    of its prosumers (by prosumer index)."""

    def __init__(self, chain: Chain, address: str, agents: Sequence[LocalAccount] | None = None, *, from_block: int = 0):
        super().__init__(chain, address, agents, from_block=from_block)
        self._committed: dict[int, np.ndarray] = {}
        self._own: list = []  # events of the transactions sent through this object, in chain order
        self._submitted: dict[tuple[int, int, int], np.ndarray] = {}  # (t, p, i) -> submitted optimum

    def _more_params(self) -> dict[str, Any]:
        return dict(zero_hash=bytes(self.functions.zeroHash().call()))

    def round(self) -> RoundState:
        return RoundState(*self.functions.roundState().call())

    def head(self) -> bytes:
        return bytes(self.functions.head().call())

    def committed_hash(self, i: int) -> bytes:
        return bytes(self.functions.committedHash(i).call())

    # ---------------------------------------------------------- uploads
    @functools.cached_property
    def _topics(self) -> dict[bytes, Any]:
        """Event topic -> event class of the coordinator's events."""
        ev = self.contract.events
        kinds = (ev.InitialUploaded(), ev.Uploaded(), ev.Submitted(), ev.WeightsApplied(), ev.IterationClosed())
        return {bytes.fromhex(e.topic[2:]): e for e in kinds}

    def decode_logs(self, logs) -> list:
        """The coordinator events among raw `logs` (of this contract's address), in their order."""
        out = []
        for log in logs:
            if str(log["address"]).lower() != self.address.lower() or not log["topics"]:
                continue
            e = self._topics.get(bytes(log["topics"][0]))
            if e is not None:
                out.append(e.process_log(log))
        return out

    def receipt_events(self, receipt) -> list:
        """The coordinator events of one transaction, decoded from its receipt (no chain scan);
        recorded for `events` when this object sent the transaction."""
        return self.decode_logs(receipt["logs"])

    def _record(self, receipt) -> list:
        evs = self.receipt_events(receipt)
        self._own.extend(evs)
        return evs

    def _result(self, receipt, i: int) -> UploadResult:
        evs = self._record(receipt)
        ups = [e for e in evs if e["event"] != "IterationClosed"]
        closed = [e for e in evs if e["event"] == "IterationClosed"]
        a = ups[0]["args"]
        return UploadResult(
            t=a["t"], p=a.get("p", 0), agent=i, theta2=a.get("theta2", 0),
            committed_hash=bytes(a["committedHash"]), head=bytes(a["head"]), gas_used=receipt["gasUsed"],
            closed=bool(closed), terminated=bool(closed and closed[0]["args"]["terminated"]),
            tx_hash=_hex(receipt["transactionHash"]), block=int(receipt["blockNumber"]), events=tuple(evs),
        )  # fmt: skip

    def upload_state(self, i: int, t: int, eb: int, eev: int, u0, *, sender=None) -> UploadResult:
        """Iteration p = 0 of step t: prosumer i's state (eb, eev) and islanded plan u0 (fixed point)."""
        u0 = np.asarray(u0)
        fn = self.functions.uploadInitial(int(t), int(eb), int(eev), fp.pack(u0))
        receipt = self.chain.transact(fn, sender or self._sender(i))
        res = self._result(receipt, i)
        self._committed[i] = u0.astype(np.int64)
        return res

    def upload(self, i: int, t: int, p: int, u_star, u_prev=None, *, sender=None) -> UploadResult:
        """Iteration p >= 1: prosumer i's subproblem optimum (fixed point). `u_prev` defaults to the
        committed iterate this client knows (rebuilt from events if needed)."""
        u_star = np.asarray(u_star)
        if u_prev is None:
            u_prev = self.committed_iterate(i)
        u_prev = np.asarray(u_prev)
        fn = self.functions.upload(int(t), int(p), fp.pack(u_star), fp.pack(u_prev))
        receipt = self.chain.transact(fn, sender or self._sender(i))
        res = self._result(receipt, i)
        self._committed[i] = fp.combine(u_star, u_prev, self.params["w_num"], self.params["w_den"])
        return res

    def submit(self, i: int, t: int, p: int, u_star, *, sender=None) -> UploadResult:
        """Weighted iteration p >= 1: prosumer i's subproblem optimum (fixed point), checked and
        hashed on chain, combined when the weights are proposed (`propose_weights`).
        `committed_hash` of the result is empty (nothing is committed yet)."""
        u_star = np.asarray(u_star)
        fn = self.functions.submit(int(t), int(p), fp.pack(u_star))
        receipt = self.chain.transact(fn, sender or self._sender(i))
        evs = self._record(receipt)
        a = evs[0]["args"]
        self._submitted[(int(t), int(p), i)] = u_star.astype(np.int64)
        return UploadResult(
            t=a["t"], p=a["p"], agent=i, theta2=0, committed_hash=b"", head=bytes(a["head"]),
            gas_used=receipt["gasUsed"], closed=False, terminated=False, tx_hash=_hex(receipt["transactionHash"]),
            block=int(receipt["blockNumber"]), events=tuple(evs),
        )  # fmt: skip

    def propose_weights(self, k: int, t: int, p: int, q, u_stars=None, u_prevs=None, *, sender=None) -> UploadResult:
        """Prosumer k proposes the weights q [P] (fixed point, λ_i = q_i / WEIGHT_ONE) of the open
        weighted iteration (t, p), with every prosumer's submitted optimum and committed iterate
        (defaults: those this client sent and knows; an empty vector for a prosumer that did not
        submit). The contract combines them and closes the iteration; the result's `theta2` is
        the largest θ_i², `committed_hash` empty (one per prosumer in its events)."""
        P = self.params["n_prosumers"]
        if u_stars is None:
            u_stars = [self._submitted.get((int(t), int(p), i)) for i in range(P)]
        if u_prevs is None:
            u_prevs = [self.committed_iterate(i) if u_stars[i] is not None else None for i in range(P)]
        pk = lambda v: b"" if v is None else fp.pack(np.asarray(v))  # noqa: E731
        fn = self.functions.proposeWeights(
            int(t), int(p), fp.pack(np.asarray(q)), [pk(v) for v in u_stars], [pk(v) for v in u_prevs]
        )
        receipt = self.chain.transact(fn, sender or self._sender(k))
        evs = self._record(receipt)
        a = next(e for e in evs if e["event"] == "WeightsApplied")["args"]
        closed = [e for e in evs if e["event"] == "IterationClosed"]
        qq = fp.unpack(a["lam"])
        for i in range(P):
            if u_stars[i] is not None:
                self._committed[i] = fp.combine_weight(u_stars[i], u_prevs[i], int(qq[i]))
        return UploadResult(
            t=a["t"], p=a["p"], agent=k, theta2=max(a["theta2"]), committed_hash=b"", head=bytes(a["head"]),
            gas_used=receipt["gasUsed"], closed=bool(closed), terminated=bool(closed and closed[0]["args"]["terminated"]),
            tx_hash=_hex(receipt["transactionHash"]), block=int(receipt["blockNumber"]), events=tuple(evs),
        )  # fmt: skip

    def close_iteration(self, sender=None):
        """Close the open iteration after its deadline (any account; default: the funder)."""
        receipt = self.chain.transact(self.functions.closeIteration(), sender or self.chain._funder)
        self._record(receipt)
        return receipt

    def committed_iterate(self, i: int) -> np.ndarray:
        """Prosumer i's committed iterate (fixed point), checked against the stored hash."""
        h = self.committed_hash(i)
        cached = self._committed.get(i)
        if cached is not None and keccak(fp.pack(cached)) == h:
            return cached
        if h == self.params["zero_hash"]:
            return np.zeros(self.params["nu"], dtype=np.int64)
        rebuilt = self.history().steps[-1].iterations[-1].committed[i]
        if keccak(fp.pack(rebuilt)) != h:
            raise ChainMismatch(f"rebuilt iterate of prosumer {i} does not match the stored hash.")
        self._committed[i] = rebuilt
        return rebuilt

    # ---------------------------------------------------------- events
    def events(self) -> list:
        """All coordinator events since deployment, in chain order: those decoded from the
        receipts of the transactions sent through this object when they are all there is
        (`own_events_complete`), else the logs of every block since deployment (`scan_events`)."""
        own = sorted(self._own, key=lambda x: (x["blockNumber"], x["logIndex"]))
        return own if self.own_events_complete(own) else self.scan_events()

    def scan_events(self) -> list:
        """All coordinator events since deployment, read from the chain's logs (one query)."""
        logs = self.chain.w3.eth.get_logs({"fromBlock": self.from_block, "toBlock": "latest", "address": self.address})
        return sorted(self.decode_logs(logs), key=lambda x: (x["blockNumber"], x["logIndex"]))

    def own_events_complete(self, own: list) -> bool:
        """Whether `own` (events in chain order, from this object's transactions) are every event
        of the contract: they follow one another as the contract's rounds do (each upload in the
        open round; each close of the open round, opening the next), the last upload's head is
        the contract's hash chain head (no upload by anyone else), and the round they leave open
        is the contract's (no close by anyone else)."""
        t = p = 0
        head = None
        for e in own:
            a = e["args"]
            if (a["t"], a.get("p", 0)) != (t, p):
                return False
            if e["event"] == "IterationClosed":
                t, p = (t + 1, 0) if a["terminated"] else (t, p + 1)
            else:
                head = bytes(a["head"])
        if head is None:
            return False
        r = self.round()
        return (r.t, r.p) == (t, p) and self.head() == head

    def history(self) -> History:
        """Rebuild every step, iteration, upload and committed iterate from the events, replaying
        them through the Python `Mirror`; raise `ChainMismatch` unless every committed hash, θ²,
        closing decision and the hash chain head agree with the contract."""
        m = self.mirror()
        events = self.events()
        for e in events:
            a = e["args"]
            name = e["event"]
            if name == "InitialUploaded":
                h = m.initial(a["agent"], a["t"], a["eb"], a["eev"], fp.unpack(a["u"]))
                ok = h == bytes(a["committedHash"])
            elif name == "Uploaded":
                th2, h = m.upload(a["agent"], a["t"], a["p"], fp.unpack(a["uStar"]))
                ok = h == bytes(a["committedHash"]) and th2 == a["theta2"]
            elif name == "Submitted":
                m.submit(a["agent"], a["t"], a["p"], fp.unpack(a["uStar"]))
                ok = True
            elif name == "WeightsApplied":
                th2s, hs = m.propose(a["agent"], a["t"], a["p"], fp.unpack(a["lam"]))
                ok = th2s == list(a["theta2"]) and hs == [bytes(x) for x in a["committedHash"]]
            else:
                if (a["t"], a["p"]) == (m.t, m.p):  # closed by closeIteration
                    m.close()
                its = [it for s in m.steps if s.t == a["t"] for it in s.iterations if it.p == a["p"]]
                it = its[-1] if its else None
                ok = it is not None and it.closed and it.max_theta2 == a["maxTheta2"] and it.terminated == a["terminated"]
            if name != "IterationClosed":
                ok = ok and m.head == bytes(a["head"])
            if not ok:
                raise ChainMismatch(f"event {name} at block {e['blockNumber']} does not rebuild: {dict(a)}")
        if m.head != self.head():
            raise ChainMismatch("the rebuilt hash chain head differs from the contract's head.")
        r = self.round()
        if (r.t, r.p) != (m.t, m.p):
            raise ChainMismatch(f"rebuilt round ({m.t}, {m.p}) differs from the contract's ({r.t}, {r.p}).")
        for i in range(m.n_prosumers):
            if m.committed_hash(i) != self.committed_hash(i):
                raise ChainMismatch(f"rebuilt committed iterate of prosumer {i} differs from the stored hash.")
        return History(steps=m.steps, head=m.head, events=events)

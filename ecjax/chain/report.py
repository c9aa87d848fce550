"""The audit report: verdict, first difference, tolerance and its meaning, transactions, gas, time.

Written as JSON (`audit.json`) and Markdown (`audit.md`). Holds addresses and transaction
hashes, never keys.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

MAX_LISTED = 50  # differences listed in the report (all are counted)


@dataclasses.dataclass(frozen=True)
class Difference:
    """One value that differs by more than its tolerance (or a protocol-level disagreement)."""

    quantity: str  # state_eb, u_star, u_iter, theta, iterations, applied_u_bc, eb, ug, E1, chain, ...
    step: int | None = None
    iteration: int | None = None
    agent: int | None = None  # community agent index
    where: str = ""  # lane, e.g. "bc[0]" or "bt[0->2][1]"
    chain: float | None = None
    stored: float | None = None
    tolerance: float | None = None
    note: str = ""
    sides: tuple[str, str] = ("chain", "stored")  # what `chain` and `stored` hold

    def describe(self) -> str:
        loc = [f"{k} {v}" for k, v in (("step", self.step), ("iteration", self.iteration), ("agent", self.agent)) if v is not None]
        what = self.quantity + (f" {self.where}" if self.where else "")
        s = f"{what} ({', '.join(loc)})" if loc else what
        if self.chain is not None or self.stored is not None:
            s += f": {self.sides[0]} {_num(self.chain)}, {self.sides[1]} {_num(self.stored)}"
            if self.tolerance is not None:
                s += f", |difference| {_num(_absdiff(self.chain, self.stored))} > tolerance {_num(self.tolerance)}"
        if self.note:
            s += f" ({self.note})"
        return s


def _absdiff(a, b):
    try:
        return abs(float(a) - float(b))
    except (TypeError, ValueError):
        return None


def _num(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.9g}"


@dataclasses.dataclass
class CheckStats:
    count: int = 0
    max_abs: float = 0.0
    max_ratio: float = 0.0  # max |difference| / tolerance
    failed: int = 0


@dataclasses.dataclass
class AuditReport:
    """Outcome of an on-chain audit of one stored sample (see `ecjax.chain.audit`)."""

    verified: bool
    mode: str
    run: dict[str, Any]
    chain: dict[str, Any]
    tolerance: dict[str, Any]
    meaning: str
    checks: dict[str, CheckStats]
    differences: list[Difference]
    iterations: list[dict[str, int]]
    indices: dict[str, dict[str, float]]
    transactions: list[dict[str, Any]]
    gas: dict[str, Any]
    tx_count: dict[str, Any]
    seconds: dict[str, float]
    notes: list[str]
    replay: Any = dataclasses.field(default=None, repr=False, compare=False)  # in memory only
    origin: dict[str, Any] | None = None  # the sample run again from the stored config (`ecjax.chain.origin`)
    receipt_path: str | None = None  # where the store keeps this audit's receipt, once written
    # weighted iterations (fcmpc.weights = optimal), per step: iterations, the largest |λ_chain − λ_reference|
    weights: list[dict[str, Any]] | None = None

    @property
    def verdict(self) -> str:
        return "verified" if self.verified else "not verified"

    @property
    def first_difference(self) -> Difference | None:
        return self.differences[0] if self.differences else None

    def summary_line(self) -> str:
        if self.verified:
            n = sum(s.count for s in self.checks.values())
            return f"verified: {n} values agree within tolerance ({self.mode} mode, {self.chain.get('kind')})."
        return f"not verified: first difference: {self.first_difference.describe()}"

    def receipt(self) -> dict[str, Any]:
        """The receipt of this audit kept in the store (`ecjax.store.add_audit`): what was audited,
        where on chain, under which configuration hashes, and the verdict. No keys."""
        import datetime as _dt

        ch, r = self.chain, self.run
        blocks = [t["block"] for t in self.transactions if t.get("block") is not None]
        first = self.first_difference
        return _jsonable({
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "verdict": self.verdict,
            "mode": self.mode,
            "sample": r.get("sample"),
            "risk": r.get("risk"),
            "config_hash": (self.origin or {}).get("config_hash"),
            "recorded_config_hash": (self.origin or {}).get("recorded_hash"),
            "chain": {
                "kind": ch.get("kind"), "chain_id": ch.get("chain_id"), "address": ch.get("address"),
                "genesis": ch.get("genesis"), "deploy_block": ch.get("deploy_block"), "last_block": max(blocks, default=ch.get("deploy_block")),
                "config_hash_on_chain": ch.get("config_hash_on_chain"), "head": ch.get("head"),
                "scale": r.get("scale"), "period_s": r.get("period_s"),
            },
            "n_differences": len(self.differences),
            "first_difference": first.describe() if first else None,
        })  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "verdict": self.verdict,
                "verified": self.verified,
                "first_difference": dataclasses.asdict(self.first_difference) if self.differences else None,
                "mode": self.mode,
                "run": self.run,
                "origin": self.origin,
                "chain": self.chain,
                "tolerance": self.tolerance,
                "meaning": self.meaning,
                "checks": {k: dataclasses.asdict(v) for k, v in self.checks.items()},
                "n_differences": len(self.differences),
                "differences": [dataclasses.asdict(d) for d in self.differences[:MAX_LISTED]],
                "iterations": self.iterations,
                "indices": self.indices,
                "weights": self.weights,
                "gas": self.gas,
                "tx_count": self.tx_count,
                "seconds": self.seconds,
                "notes": self.notes,
                "transactions": self.transactions,
            }
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        r, ch = self.run, self.chain
        out = [f"# On-chain audit: {self.verdict}", ""]
        out.append(
            f"Run: cell `{r.get('cell')}`, sample {r.get('sample')}, risk δ = {r.get('risk')}, scenario "
            f"{r.get('scenario')}, n = {r.get('n')} agents ({r.get('prosumers')} prosumers), N = {r.get('N')}, "
            f"T = {r.get('T')}, p_max = {r.get('p_max')}, ϰ = {r.get('kappa')}, w = {r.get('w')}."
        )
        out.append(
            f"Chain: {ch.get('kind')} (chain id {ch.get('chain_id')}), contract `{ch.get('address')}`, "
            f"configHash `{ch.get('config_hash')}`, hash chain head `{ch.get('head')}`. Mode: **{self.mode}**."
        )
        out += ["", "## Verdict", "", self.summary_line(), ""]
        if self.differences:
            out.append(f"{len(self.differences)} difference(s); the first {min(len(self.differences), MAX_LISTED)}:")
            out.append("")
            for d in self.differences[:MAX_LISTED]:
                out.append(f"- {d.describe()}")
            out.append("")
        if self.origin is not None:
            o = self.origin
            out += ["## Origin: the sample run again from the stored config", ""]
            out.append(
                f"Config hash recomputed from the stored config `{o['config_hash']}`, recorded at run time "
                f"`{o['recorded_hash']}`. Every stored array of the sample and its summary row against the re-run: "
                f"floats within {_num(o['tolerance'].get('atol'))}·(1 + |value|), integers "
                f"exactly: **{'same' if o['verified'] else str(o['n_differences']) + ' difference(s)'}**."
            )
            out += ["", "| quantity | values | max abs difference | failed |", "|---|---|---|---|"]
            for k, c in o["checks"].items():
                out.append(f"| {k} | {c['count']} | {_num(c['max_abs'])} | {c['failed']} |")
            out.append("")
        out += ["## Tolerance", "", self.meaning, ""]
        tol = self.tolerance
        out.append(
            f"Fixed point: scale {tol['scale']} (h = {_num(tol['h'])} kW). Solver: ε_pri = {_num(tol['eps_pri'])}, "
            f"ε_dua = {_num(tol['eps_dua'])}, μ = {_num(tol['mu'])}, σ = {_num(tol['sigma'])}."
        )
        out += ["", "| iteration p | tolerance on u_i^p (kW) | on u_i^{p,*} (kW) |", "|---|---|---|"]
        for p, (e, a) in enumerate(zip(tol["u_iter_by_iteration"], tol["u_star_by_iteration"])):
            out.append(f"| {p} | {_num(e)} | {_num(a)} |")
        out += ["", "## Checks", "", "| quantity | values | max abs difference | max difference / tolerance | failed |"]
        out.append("|---|---|---|---|---|")
        for k, s in self.checks.items():
            out.append(f"| {k} | {s.count} | {_num(s.max_abs)} | {_num(s.max_ratio)} | {s.failed} |")
        out += ["", "## Iterations per step", "", "| step | chain | stored |", "|---|---|---|"]
        for it in self.iterations:
            out.append(f"| {it['step']} | {it['chain']} | {it['stored']} |")
        if self.indices:
            out += ["", "## Indices (MODEL §8)", "", "| index | chain | stored | tolerance |", "|---|---|---|---|"]
            for k, v in self.indices.items():
                out.append(f"| {k} | {_num(v['chain'])} | {_num(v['stored'])} | {_num(v['tolerance'])} |")
        if self.weights:
            out += ["", "## Weights proposed on chain (fcmpc.weights = optimal)", "",
                    "| step | weighted iterations | reference | max abs(λ_chain − λ_reference) |", "|---|---|---|---|"]
            for w in self.weights:
                out.append(f"| {w['step']} | {w['iterations']} | {w['reference']} | {_num(w['max_abs'])} |")
        g, tc = self.gas, self.tx_count
        out += ["", "## Gas and transactions", ""]
        out.append(f"Transactions: {tc['total']} ({', '.join(f'{k}: {v}' for k, v in tc['by_kind'].items())}); "
                   f"uploads per MPC step: mean {_num(tc['uploads_per_step_mean'])}.")  # fmt: skip
        out += ["", "| transaction | count | min gas | mean gas | max gas |", "|---|---|---|---|---|"]
        for k, v in g["by_kind"].items():
            out.append(f"| {k} | {v['count']} | {v['min']} | {_num(v['mean'])} | {v['max']} |")
        out.append(f"\nTotal gas: {g['total']}.")
        out += ["", "## Time", ""]
        out.append(", ".join(f"{k}: {v:.2f} s" for k, v in self.seconds.items()) + ".")
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        out += ["", "## Transactions", "", "| kind | step | iteration | prosumer | gas | hash |", "|---|---|---|---|---|---|"]
        for t in self.transactions:
            out.append(
                f"| {t['kind']} | {_opt(t['t'])} | {_opt(t['p'])} | {_opt(t['agent'])} | {t['gas_used']} | `{t['tx_hash']}` |"
            )
        return "\n".join(out) + "\n"

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """Write `audit.json` and `audit.md` into the directory `out` (created)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        pj, pm = out / "audit.json", out / "audit.md"
        pj.write_text(self.to_json())
        pm.write_text(self.to_markdown())
        return pj, pm


def _opt(x) -> str:
    return "" if x is None else str(x)


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if isinstance(x, bytes):
        return "0x" + x.hex()
    return x

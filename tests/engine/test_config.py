"""Config composition and validation: every experiment composes; bad values fail before any
compilation with the key named; the typed cell inputs match the config and the data tables."""

from __future__ import annotations

import dataclasses
import subprocess
from typing import Literal, get_args

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ecjax.data as D
from ecjax import sweep
from ecjax.cli import main
from ecjax.config import ConfigError, cell_inputs, check_config, config_hash
from ecjax.config._fields import Choice, Section, setting, subsection
from ecjax.qp import IPM

from .conftest import CONF, ECJAX, TINY, subprocess_env

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def test_experiment_files_exist():
    assert {"paper_table1", "risk_sweep", "community_size", "mc_validation"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_full_size(name, tmp_path):
    plan = sweep.plan([f"experiment={name}", f"out.dir={tmp_path}"], CONF)
    assert plan.cells
    for c in plan.cells:
        check_config(c.config)
        assert c.config["out"]["store"] == str(tmp_path / "results.zarr")
    assert len({c.id for c in plan.cells}) == len(plan.cells)


def test_default_run_is_the_paper_case_three_scenarios(tmp_path):
    plan = sweep.plan([f"out.dir={tmp_path}"], CONF)
    assert [c.config["scenario"]["name"] for c in plan.cells] == ["islanded", "ccdmpc", "dmpc"]
    for c in plan.cells:
        assert c.config["community"]["kind"] == "paper"
        assert c.config["data"]["kind"] == "real"
        assert c.config["sweep"]["cluster"] == "none"
    inp = cell_inputs(plan.cells[1].config)
    assert isinstance(inp.solver, IPM)
    assert inp.community.n == 15 and len(inp.community.prosumers) == 7
    assert inp.options.scenario == "ccdmpc" and inp.options.T == 24 and inp.N == 24


def test_sweep_expansion_rules(tmp_path):
    base = [f"out.dir={tmp_path}", *TINY]
    # a key given on the command line leaves the configured sweep
    assert [c.id for c in sweep.plan([*base, "scenario=dmpc"], CONF).cells] == ["scenario=dmpc"]
    # command-line sweeps add axes (Hydra multirun syntax), crossed with the configured ones
    p = sweep.plan([*base, "-m", "sim.seed=range(0,2)"], CONF)
    assert len(p.cells) == 6
    assert p.cells[0].params == {"scenario": "islanded", "sim.seed": "0"}
    assert {c.config["sim"]["seed"] for c in p.cells} == {0, 1}
    # every cell of a run shares one resolved output location
    assert len({c.config["out"]["store"] for c in p.cells}) == 1


BAD = [
    (["ccmpc.deltas=[0.05,0.1,0.7]"], "ccmpc.deltas[2] must be in (0, 0.5]"),
    (["ccmpc.deltas=[]"], "ccmpc.deltas"),
    (["ccmpc.tightening=both"], "ccmpc.tightening"),
    (["sim.S=0"], "sim.S"),
    (["sim.T=25"], "sim.T"),
    (["sim.N=0"], "sim.N"),
    (["sim.dtype=float16"], "sim.dtype"),
    (["sim.dtype=float32"], "sim.dtype must be float64"),
    (["sim.keep=3"], "sim.keep"),
    (["sim.block=5"], "sim.block"),
    (["sim.chunk=fast"], "sim.chunk"),
    (["sim.chunk=0"], "sim.chunk"),
    (["sim.agent_batch=0"], "sim.agent_batch"),
    (["sim.agent_batch=fast"], "sim.agent_batch"),
    (["scenario.name=decentral"], "scenario.name"),
    (["fcmpc.p_max=0"], "fcmpc.p_max"),
    (["fcmpc.kappa=-1"], "fcmpc.kappa"),
    (["fcmpc.w=0.9"], "fcmpc.w"),
    (["+solver.alpha=1.5"], "solver.alpha is not a known setting"),
    (["solver.method=admm"], "solver.method"),
    (["solver.refine=2", "solver.refine_max=1"], "solver.refine_max"),
    (["solver.max_iter=0"], "solver.max_iter"),
    (["solver.method=simplex"], "solver.method"),
    (["solver=ipm", "solver.step_fraction=1.5"], "solver.step_fraction"),
    (["solver=ipm", "solver.certify_from=-1"], "solver.certify_from"),
    (["solver=ipm", "+solver.check_every=5"], "solver.check_every is not a known setting"),
    (["weights.gamma=1.5"], "weights.gamma"),
    (["community.n=1"], "community.n"),
    (["community.prosumer_share=0"], "community.prosumer_share"),
    (["+community.params.bt_max=-1"], "community.params.bt_max"),
    (["+community.params.wings=2"], "community.params.wings"),
    (["+sim.SS=3"], "sim.SS"),
    (["data.price.unit=USD"], "data.price.unit"),
    (["data=paper", "data.month=3"], "data.month"),
    (["data=price_csv"], "data.price.path"),
    (["data=omie", "data.price.path=/nonexistent/marginalpdbc_20230910.1"], "data.price.path"),
    (["sweep.scheduler=localhost"], "sweep.scheduler"),
    (["sweep.workers=0"], "sweep.workers"),
    (["chain=rpc"], "chain.url"),
    (["chain=rpc", "chain.url=http://127.0.0.1:8545", "chain.key_env=0x" + "ab" * 32], "chain.key_env"),
    (["community.n=4,1"], "community.n"),
]


@pytest.mark.parametrize("overrides,key", BAD, ids=[b[1] for b in BAD])
def test_bad_value_names_the_key_before_compiling(overrides, key, tmp_path, capsys):
    compiles = []

    def listen(event, duration, **kw):
        if "compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        with pytest.raises(ConfigError) as e:
            sweep.plan([f"out.dir={tmp_path}", *TINY, "scenario=ccdmpc", *overrides], CONF)
        assert key in str(e.value)
        # the command reports it as an error, exit status 2, and computes nothing
        rc = main(["--config-dir", str(CONF), f"out.dir={tmp_path}", *TINY, "scenario=ccdmpc", *overrides])
        assert rc == 2
        assert key in capsys.readouterr().err
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiles == []
    assert not (tmp_path / "results.zarr").exists()


def test_private_key_anywhere_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="title looks like a private key"):
        sweep.plan([f"out.dir={tmp_path}", *TINY, "+title=0x" + "1f" * 32], CONF)


def test_console_script_reports_bad_value(tmp_path):
    r = subprocess.run([*ECJAX, f"out.dir={tmp_path}", "sim.T=0"], capture_output=True, text=True,
                       env=subprocess_env(), timeout=120)
    assert r.returncode == 2
    assert "sim.T must be an integer [1, 24], got 0" in r.stderr
    assert not (tmp_path / "results.zarr").exists()


def _cfg(tmp_path, *extra):
    (c,) = sweep.plan([f"out.dir={tmp_path}", *TINY, "scenario=ccdmpc", *extra], CONF).cells
    return c.config


def test_cell_inputs_match_the_config(tmp_path):
    cfg = _cfg(tmp_path, "ccmpc.deltas=[0.02,0.1]", "ccmpc.tightening=per_step", "solver.eps_abs=1e-5",
               "fcmpc.kappa=0.01", "weights.r_t=0.02", "sim.seed=7")
    inp = cell_inputs(cfg)
    assert inp.community.n == 3 and inp.community.prosumers == (0, 1)
    np.testing.assert_array_equal(inp.deltas, [0.02, 0.1])
    assert inp.options.tightening == "per_step" and inp.options.scenario == "ccdmpc"
    assert inp.solver.eps_abs == 1e-5 and inp.fc.kappa == 0.01 and inp.fc.p_max == 3
    assert inp.weights.r_t == 0.02 and inp.dtype == jnp.float64 and inp.seed == 7
    assert inp.chain["kind"] == "tester"
    ipm = cell_inputs(_cfg(tmp_path, "solver=ipm", "solver.max_iter=40")).solver
    assert isinstance(ipm, IPM) and ipm.max_iter == 40 and ipm.eps_abs == 1e-6
    assert isinstance(inp.solver, IPM) and inp.solver.eps_abs == 1e-5  # the default method
    tight = cell_inputs(_cfg(tmp_path, "solver=tight")).solver
    assert isinstance(tight, IPM) and tight.eps_abs == 1e-9 and tight.max_iter == 80
    assert inp.chunk is None  # `sim.chunk: auto` (default): chosen for the machine by run_batch
    assert cell_inputs(_cfg(tmp_path, "sim.chunk=3")).chunk == 3
    dm = cell_inputs(_cfg(tmp_path, "scenario=dmpc"))
    np.testing.assert_array_equal(dm.deltas, [0.5])  # the standard DMPC: no tightening


def test_typed_config_and_object_defaults(tmp_path):
    """`check_config` returns the typed sections; a setting left out takes the object's default."""
    import equinox as eqx

    from ecjax.community import paper_case
    from ecjax.config import Config
    from ecjax.config.groups import FCMPCConfig, SolverConfig, WeightsConfig
    from ecjax.fcmpc import FCMPCSettings
    from ecjax.weights import CostWeights

    cfg = check_config(_cfg(tmp_path, "sim.seed=7"))
    assert isinstance(cfg, Config) and cfg.sim.seed == 7 and cfg.sim.blocks == 2
    assert cfg.data.price_source == "synthetic" and cfg.community.n == 3
    assert eqx.tree_equal(SolverConfig().ipm(), IPM())
    assert eqx.tree_equal(WeightsConfig().weights(), CostWeights())
    assert eqx.tree_equal(FCMPCConfig().settings(paper_case()), FCMPCSettings())


def test_solver_settings_are_the_fields_of_ipm():
    """Every IPM field is a solver setting (a new one cannot be left out of the config) and
    takes IPM's own default, which the section does not write again."""
    import dataclasses

    from ecjax.config import Config
    from ecjax.config.groups import IPM_DEFAULT, SolverConfig

    ipm = {f.name for f in dataclasses.fields(IPM)}
    solver = {f.name: f for f in dataclasses.fields(SolverConfig) if f.name != "method"}
    assert set(solver) == ipm
    assert all(f.default is IPM_DEFAULT for f in solver.values())
    for name in ipm:
        assert Config.default_of(f"solver.{name}") == getattr(IPM(), name)
    with pytest.raises(ConfigError, match="sim.foo is not a setting with a default"):
        Config.default_of("sim.foo")


def test_conf_solver_takes_the_ipm_defaults(tmp_path):
    """conf/solver/ipm.yaml names its settings and leaves their values to IPM; composed, they
    are the values it used to write out, so stored cells keep their config hash."""
    from omegaconf import OmegaConf

    written = OmegaConf.to_container(OmegaConf.load(CONF / "solver" / "ipm.yaml"), resolve=False)
    assert written.pop("method") == "ipm"
    assert set(written.values()) == {"${ecjax.default:}"}
    solver = _cfg(tmp_path, "solver=ipm")["solver"]
    assert {k: solver[k] for k in written} == {k: getattr(IPM(), k) for k in written}
    # the identity of the solver settings as composed before the yaml stopped writing values
    before = "1651446c04a8947bf41a30592d5cc96ef72b140f82c8dafddf2a53cecb650353"
    assert config_hash({"solver": solver}) == before
    tight = _cfg(tmp_path, "solver=tight")["solver"]
    assert tight["eps_abs"] == tight["eps_rel"] == 1e-9 and tight["max_iter"] == IPM().max_iter


def test_hash_ignores_execution_settings(tmp_path):
    a = _cfg(tmp_path)
    b = _cfg(tmp_path, "sweep.cluster=local", "progress=true", "chain=anvil")
    c = _cfg(tmp_path, "sim.seed=1")
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_real_data_wiring(tmp_path):
    """Profiles of data=paper are the ecjax.data tables; price_csv and omie files are read."""
    cfg = _cfg(tmp_path, "data=paper", "community.n=4", "community.seed=3")
    p = cell_inputs(cfg).profiles
    mu, sd = D.irradiance_stats(month=9)
    lm, ls, _ = D.agent_loads(4, month=9, seed=3)
    np.testing.assert_array_equal(p.irr_mu, mu)
    np.testing.assert_array_equal(p.irr_sd, sd)
    np.testing.assert_array_equal(p.ul_mu, lm)
    np.testing.assert_array_equal(p.ul_sd, ls)
    np.testing.assert_array_equal(p.price, D.price_profile())

    prices = np.round(np.linspace(50.0, 150.0, 24), 2)  # EUR/MWh
    csv = tmp_path / "prices.csv"
    csv.write_text("hour,price\n" + "".join(f"{h},{v}\n" for h, v in enumerate(prices)))
    p = cell_inputs(_cfg(tmp_path, "data=price_csv", f"data.price.path={csv}", "data.price.unit=EUR/MWh")).profiles
    np.testing.assert_allclose(p.price, prices / 1000.0, rtol=0, atol=1e-15)

    omie = tmp_path / "marginalpdbc_20230912.1"
    omie.write_text("MARGINALPDBC;\n" + "".join(
        f"2023;09;12;{h + 1};{v + 1:.2f};{v:.2f};\n" for h, v in enumerate(prices)) + "*\n")
    p = cell_inputs(_cfg(tmp_path, "data=omie", f"data.price.path={omie}")).profiles
    np.testing.assert_allclose(p.price, D.consumer_price(prices / 1000.0), rtol=1e-12)
    p = cell_inputs(_cfg(tmp_path, "data=omie", f"data.price.path={omie}", "data.price.country=PT",
                         "data.price.consumer=false")).profiles
    np.testing.assert_allclose(p.price, (prices + 1) / 1000.0, rtol=1e-12)

    bad = tmp_path / "bad.csv"
    bad.write_text("hour,price\n0,1\n")
    with pytest.raises(ConfigError, match="data.price"):
        _cfg(tmp_path, "data=price_csv", f"data.price.path={bad}")


# ------------------------------------------------------------------ the Hydra schema
SCHEMA_BAD = [
    (["ccmpc.deltaz=[0.1]"], "ccmpc.deltaz is not a known setting (known: deltas, tightening, "
     "tighten_consumers). Did you mean ccmpc.deltas?"),
    (["+ccmpc.deltaz=[0.1]"], "ccmpc.deltaz is not a known setting"),
    (["sim.S=many"], "sim.S must be an integer [1, 100000000], got 'many'."),
    (["sim.gap=maybe"], "sim.gap must be true or false, got 'maybe'."),
    (["ccmpc.deltas=[0.1,low]"], "ccmpc.deltas[1] must be a number, got 'low'."),
    (["ccmpc.tightening=both"], "ccmpc.tightening must be one of ['cumulative', 'per_step'], got 'both'."),
    (["fcmpc.weights=best"], "fcmpc.weights must be one of ['uniform', 'optimal'], got 'best'."),
    (["sweep.params=3"], "sweep.params must be a mapping, got 3."),
]


@pytest.mark.parametrize("overrides,message", SCHEMA_BAD, ids=[b[0][0] for b in SCHEMA_BAD])
def test_hydra_refuses_typos_and_types_while_composing(overrides, message, tmp_path, capsys):
    """A typo key or a wrongly typed value is refused by Hydra itself (the schema), in the
    sections' words, before any cell is planned; the command exits 2 with that message."""
    from ecjax.config import compose

    with pytest.raises(ConfigError) as e:
        compose([*TINY, *overrides], CONF)
    assert message in str(e.value)
    rc = main(["--config-dir", str(CONF), f"out.dir={tmp_path}", *TINY, *overrides])
    assert rc == 2
    assert f"ecjax: error: {message}" in capsys.readouterr().err
    assert not (tmp_path / "results.zarr").exists()


def test_unknown_key_in_a_group_file_is_refused(tmp_path):
    """A group file of one's own (hydra.searchpath) is typed by the same schema."""
    (tmp_path / "mine" / "sim").mkdir(parents=True)
    (tmp_path / "mine" / "sim" / "fast.yaml").write_text(
        "defaults:\n  - default\n  - _self_\nS: 2\nseeed: 3\n")
    (tmp_path / "mine" / "sim" / "default.yaml").write_text((CONF / "sim" / "default.yaml").read_text())
    with pytest.raises(ConfigError, match=r"sim\.seeed is not a known setting \(in sim/fast.yaml\).*"
                       r"Did you mean sim\.seed\?"):
        sweep.plan([f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "sim=fast", f"out.dir={tmp_path}"], CONF)


def test_config_store_holds_a_schema_for_every_group():
    """The schema stored in Hydra's ConfigStore has a typed node for every group of conf/,
    derived from that group's section (no second list of settings)."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from ecjax.config import Config
    from ecjax.config.schema import SCHEMA_NAME, register, schema_of

    register()
    node = ConfigStore.instance().load(f"{SCHEMA_NAME}.yaml").node
    assert OmegaConf.get_type(node) is schema_of(Config)
    sections = {f.name: f.metadata["section"] for f in dataclasses.fields(Config) if "section" in f.metadata}
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and any(p.glob("*.yaml"))} - {"experiment"}
    assert groups <= set(sections)
    for name, section in sections.items():
        assert OmegaConf.get_type(node[name]) is schema_of(section)
        assert set(node[name].keys()) == {f.name for f in dataclasses.fields(section)}
    assert "ecjax_schema" in (CONF / "config.yaml").read_text().split("defaults:")[1].split("\n")[1]


def test_composed_mapping_holds_only_what_the_files_give(tmp_path):
    """Settings no file sets stay out of the resolved mapping (their sections' defaults
    apply), so a config keeps its hash; `+key` of a schema key still works."""
    cfg = _cfg(tmp_path, "solver=ipm")
    assert "weak_p" not in cfg["solver"] and "title" not in cfg and "seed" not in cfg["data"]
    assert check_config(cfg).solver.weak_p == IPM().weak_p
    cfg = _cfg(tmp_path, "+solver.weak_p=0.5", "+title=t")
    assert cfg["solver"]["weak_p"] == 0.5 and cfg["title"] == "t"


_Mode = Literal["cumulative", "per_step", "new_mode"]  # a mode added in code


@dataclasses.dataclass(frozen=True)
class _Demo(Section):
    key = "demo"
    mode: str = setting("cumulative", Choice(get_args(_Mode)))


@dataclasses.dataclass(frozen=True)
class _DemoConfig(Section):
    demo: _Demo = subsection(_Demo)


def test_choices_come_from_the_code():
    """Each choice setting is typed by the code's own names; a name added in code is allowed,
    and listed in the error, without a change to the config."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from ecjax import scenario
    from ecjax.config.groups import CCMPCConfig, FCMPCConfig, ScenarioConfig
    from ecjax.config.schema import config_error, schema_of

    def options(cls, name):
        return next(f for f in dataclasses.fields(cls) if f.name == name).metadata["check"].options

    assert options(ScenarioConfig, "name") == get_args(scenario.Scenario)
    assert options(CCMPCConfig, "tightening") == get_args(scenario.Tightening)
    assert options(FCMPCConfig, "weights") == get_args(scenario.WeightRule)

    cfg = OmegaConf.structured(schema_of(_DemoConfig))
    cfg.demo.mode = "new_mode"  # allowed by Hydra's typing
    with pytest.raises(ValidationError) as e:
        cfg.demo.mode = "both"
    msg = str(config_error(e.value, root=_DemoConfig))
    assert msg == "demo.mode must be one of ['cumulative', 'per_step', 'new_mode'], got 'both'."


def test_choice_lists_in_conf_comments_are_the_codes():
    """A comment listing a choice's options (``tightening: cumulative  # cumulative | per_step``)
    lists exactly the names the code allows, so no second list drifts from the code."""
    import re

    from ecjax.config.schema import locate

    line_re = re.compile(r"^( *)(\w+):(?: *(\S+))? *(?:#\s*(?:\w+:\s*)?([\w/]+(?:\s*\|\s*[\w/]+)+)\b)?")
    checked = 0
    for path in sorted(CONF.glob("*/*.yaml")):
        if path.parent.name == "experiment":
            continue
        stack: list[tuple[int, str]] = []
        for line in path.read_text().splitlines():
            m = line_re.match(line)
            if not m:
                continue
            indent, key, value, listed = len(m.group(1)), m.group(2), m.group(3), m.group(4)
            stack = [(i, k) for i, k in stack if i < indent]
            if value is None:
                stack.append((indent, key))
                continue
            if not listed:
                continue
            full = ".".join([path.parent.name, *(k for _, k in stack), key])
            _, f, _ = locate(full)
            assert f is not None and isinstance(f.metadata.get("check"), Choice), full
            assert {s.strip() for s in listed.split("|")} == set(f.metadata["check"].options), full
            checked += 1
    assert checked >= 6

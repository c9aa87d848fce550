"""A store that knows when it is damaged: a real tiny run's zarr store, then a chunk deleted,
truncated or altered, or the manifest deleted; `ecjax verify`, `cells`, `report`, `audit` name
the cell and the array and exit 2 without a traceback, `resume` removes and recomputes the
damaged cell (equal to the clean one), and writes its report beside the store it resumes,
never into the directories of the run that wrote a copied store."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import xarray as xr

from ecjax import cli, store

from .conftest import TINY

pytestmark = pytest.mark.slow

CELL = "scenario=islanded"
CHUNK = Path("cells") / CELL / "summary" / "E1" / "c" / "0" / "0"


@pytest.fixture(scope="module")
def clean(tmp_path_factory, jax_cache) -> Path:
    """A finished run (one islanded cell, sample 0 kept) with its report, made by `ecjax`."""
    out = tmp_path_factory.mktemp("clean") / "out"
    rc = cli.main([*TINY, "scenario=islanded", "sim.keep=1", "report.figures=false", f"out.dir={out}",
                   f"cache_dir={jax_cache}"])
    assert rc == 0
    assert (out / "report" / "report.md").exists()
    return out / "results.zarr"


def _copy(clean: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy" / "results.zarr"
    shutil.copytree(clean, dst)
    return dst


def _ecjax(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def delete(f: Path) -> None:
    f.unlink()


def truncate(f: Path) -> None:
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def flip(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))


def test_clean_store_verifies(clean, capsys):
    rc, out, err = _ecjax(capsys, "verify", clean)
    assert rc == 0 and f"{CELL}\tverified" in out
    rc, out, _ = _ecjax(capsys, "cells", clean)
    assert rc == 0 and f"{CELL}\tcomplete\t" in out
    meta = json.loads((clean / "cells" / CELL / "summary" / "E1" / "zarr.json").read_text())
    assert [c["name"] for c in meta["codecs"]][-1] == "crc32c"  # every chunk carries its checksum
    manifest = json.loads((clean / "cells" / CELL / store.MANIFEST).read_text())
    assert {"summary/E1", "trajectories/eb"} <= set(manifest["arrays"])
    assert "c/0/0" in manifest["arrays"]["summary/E1"]["files"]


@pytest.mark.parametrize("damage, words", [(delete, "chunk c/0/0 missing"),
                                           (truncate, "chunk c/0/0 has"),
                                           (flip, "chunk c/0/0 unreadable")])
def test_damaged_chunk_is_named_by_every_command(clean, tmp_path, capsys, damage, words):
    path = _copy(clean, tmp_path)
    damage(path / CHUNK)
    msg = f"cell {CELL!r}: summary/E1: {words}"
    for argv in (["verify", path], ["cells", path], ["report", path]):
        rc, out, err = _ecjax(capsys, *argv)
        assert rc == 2, argv
        assert msg in err, (argv, err)
    assert not (path.parent / "report").exists()  # no report from a damaged store
    rc, out, _ = _ecjax(capsys, "cells", path)
    assert f"{CELL}\tDAMAGED" in out
    with pytest.raises(store.DamagedCellError, match="summary/E1"):
        store.open_cell(path, CELL)
    if importlib.util.find_spec("ecjax.chain.audit") is not None:
        rc, out, err = _ecjax(capsys, "audit", path, "--cell", CELL, "--sample", 0, "--risk", 0.05, "--quiet")
        assert rc == 2 and msg in err, err


def test_quick_check_finds_missing_and_truncated_chunks_without_reading(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    truncate(path / CHUNK)
    delete(path / "cells" / CELL / "trajectories" / "eb" / "c" / "0" / "0" / "0" / "0")
    rc, out, err = _ecjax(capsys, "verify", path, "--quick")
    assert rc == 2
    assert "summary/E1: chunk c/0/0 has" in err and "trajectories/eb: chunk c/0/0/0/0 missing" in err


def test_deleted_or_altered_manifest(clean, tmp_path, capsys):
    path = _copy(clean, tmp_path)
    (path / "cells" / CELL / store.MANIFEST).unlink()
    rc, out, err = _ecjax(capsys, "verify", path)
    assert rc == 2 and f"cell {CELL!r}: manifest.json missing" in err
    shutil.rmtree(path)
    path = _copy(clean, tmp_path)
    m = path / "cells" / CELL / store.MANIFEST
    m.write_text(m.read_text().replace('"float64"', '"float32"', 1))
    rc, out, err = _ecjax(capsys, "report", path)
    assert rc == 2 and "manifest.json altered" in err


def test_damaged_metadata(clean, tmp_path, capsys):
    """An array's zarr.json deleted or edited, a cell's zarr.json cut short: named, exit 2."""
    path = _copy(clean, tmp_path)
    cdir = path / "cells" / CELL
    (cdir / "summary" / "E2" / "zarr.json").unlink()
    e3 = cdir / "summary" / "E3" / "zarr.json"
    e3.write_text(e3.read_text().replace('"attributes": {', '"attributes": {"units": "kWh", ', 1))
    rc, out, err = _ecjax(capsys, "verify", path)
    assert rc == 2
    assert "summary/E2: array missing" in err and "summary/E3/zarr.json altered" in err
    truncate(cdir / "zarr.json")
    for cmd in ("verify", "cells", "report"):
        rc, out, err = _ecjax(capsys, cmd, path)
        assert rc == 2 and f"cell {CELL!r}: no readable cell metadata" in err, (cmd, err)
    rc, out, err = _ecjax(capsys, "resume", path)
    assert rc == 0 and "1 computed" in err, err
    assert _ecjax(capsys, "verify", path)[0] == 0


def test_store_written_before_checksums_is_readable_not_verifiable(clean, tmp_path, capsys):
    """A cell finished before manifests existed: no `integrity`, no manifest (crc32c codecs
    kept here; the store of an older ecjax has zstd alone, which reads the same)."""
    path = _copy(clean, tmp_path)
    cdir = path / "cells" / CELL
    (cdir / store.MANIFEST).unlink()
    meta = json.loads((cdir / "zarr.json").read_text())
    for k in ("integrity", "manifest_sha256"):
        del meta["attributes"][k]
    (cdir / "zarr.json").write_text(json.dumps(meta))
    rc, out, err = _ecjax(capsys, "verify", path)
    assert rc == 0 and f"{CELL}\tunverifiable" in out and "cannot be verified" in err
    rc, out, err = _ecjax(capsys, "verify", path, "--strict")
    assert rc == 2
    rc, out, err = _ecjax(capsys, "cells", path)
    assert rc == 0 and "complete (unverified: no manifest)" in out
    rc, out, err = _ecjax(capsys, "report", path, "--out", tmp_path / "rep")
    assert rc == 0 and "cannot be verified" in err
    assert "Not verifiable" in (tmp_path / "rep" / "report.md").read_text()
    assert store.open_cell(path, CELL).summary["E1"].shape[1] == 2
    sealed = _copy(path, tmp_path / "sealed")  # a read-back that finds nothing wrong, then sealed
    rc, out, err = _ecjax(capsys, "verify", sealed, "--seal")
    assert rc == 0 and f"{CELL}\tverified" in out and "sealed cell" in err
    delete(sealed / CHUNK)
    assert _ecjax(capsys, "verify", sealed)[0] == 2
    truncate(path / CHUNK)  # without a manifest, an undecodable chunk is still found
    rc, out, err = _ecjax(capsys, "verify", path, "--seal")
    assert rc == 2 and "summary/E1: chunk c/0/0 unreadable" in err
    assert "integrity" not in store.cell_attrs(path, CELL)  # a damaged cell is not sealed


def test_a_change_made_on_purpose_is_sealed(clean, tmp_path, capsys):
    """A value rewritten through zarr (valid chunks, other numbers) is damage until sealed."""
    import numpy as np
    import zarr

    path = _copy(clean, tmp_path)
    arr = zarr.open_array(store=str(path), path=f"cells/{CELL}/summary/E1", mode="r+", zarr_format=3)
    a = np.asarray(arr[...])
    a[0, 0] += 1.0
    arr[...] = a
    rc, out, err = _ecjax(capsys, "verify", path)
    assert rc == 2 and "summary/E1: chunk c/0/0" in err
    store.seal_cell(path, CELL)
    assert _ecjax(capsys, "verify", path)[0] == 0
    assert float(store.open_cell(path, CELL).summary["E1"][0, 0]) == a[0, 0]


def test_resume_recomputes_a_damaged_cell_of_a_copied_store(clean, tmp_path, capsys):
    """The observed failure: one deleted chunk of a finished cell's E1 read as NaN, `cells` said
    complete and a rerun kept the NaN. Resume now removes the cell and computes it again, equal
    to the clean one; the store is a copy, so its report goes beside the copy and the report of
    the run that wrote the original stays as it was."""
    original_report = clean.parent / "report" / "report.md"
    before = (original_report.read_bytes(), original_report.stat().st_mtime_ns)
    path = _copy(clean, tmp_path)
    delete(path / CHUNK)
    rc, out, err = _ecjax(capsys, "resume", path)
    assert rc == 0, err
    assert f"cell {CELL!r} was damaged (summary/E1: chunk c/0/0 missing): removed and recomputed" in err
    assert "1 computed" in err
    assert (path.parent / "report" / "report.md").exists()
    assert str(path.parent.resolve() / "report" / "index.html") in out
    assert (original_report.read_bytes(), original_report.stat().st_mtime_ns) == before
    rc, out, _ = _ecjax(capsys, "verify", path)
    assert rc == 0
    a, b = store.open_cell(clean, CELL), store.open_cell(path, CELL)
    xr.testing.assert_identical(a.summary.compute(), b.summary.compute())
    xr.testing.assert_identical(a.trajectories.compute(), b.trajectories.compute())


def test_resume_of_a_clean_copy_writes_beside_the_copy(clean, tmp_path, capsys):
    original = clean.parent / "report"
    before = {p.name: p.stat().st_mtime_ns for p in original.iterdir()}
    path = _copy(clean, tmp_path)
    rc, out, err = _ecjax(capsys, "resume", path)
    assert rc == 0 and "0 computed, 1 already finished" in err
    assert (path.parent / "report" / "index.html").exists()
    assert {p.name: p.stat().st_mtime_ns for p in original.iterdir()} == before
    assert store.store_attrs(path)["sweep"]["out"]["store"] == str(path.resolve())

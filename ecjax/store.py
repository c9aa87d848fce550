"""The results store: one zarr v3 directory per run or sweep, one group per cell.

    <store>/                                root group; attrs: format, ecjax version, created, sweep
    <store>/cells/<cell_id>/                cell group; attrs below
    <store>/cells/<cell_id>/summary         xarray Dataset, dims (risk, sample[, time][, agent])
    <store>/cells/<cell_id>/trajectories    xarray Dataset of the kept samples (if any)
    <store>/cells/<cell_id>/open_loop       open-loop validation of the first plan (if asked)

Format `ecjax-store/2` (root attr `format`; a store of another format is refused with its
format named). Every variable and coordinate carries CF attributes (`units`, `long_name`;
`flag_values` / `flag_meanings` on status codes and roles), dimensions follow one order for
every dataset, and the agents' roles are coordinates (`is_prosumer` on `agent`,
`prosumer_agent` on `prosumer`): `ecjax.cf`. The root holds zarr's consolidated metadata,
written at the end of each run (`consolidate`), so that xarray opens any dataset of a finished
store without a warning; ecjax itself lists the store and never reads that copy.
`ecjax.open_results` opens every cell at once, along a `cell` dimension.

A cell is one (scenario, community, tightening, ...) combination; its risk levels and samples
are vectorized inside it (`ecjax.experiment.run_batch`). Samples are written in blocks of
`sim.block` into a summary whose arrays are allocated on the first block (zarr chunks = one
block along `sample`, so block writes never share a chunk). Cell attrs: `config` (JSON string
of the resolved config), `config_hash`, `seed`, `params` (the swept keys), `versions`,
`device`, `S`, `block`, `blocks_done`, `log` (start, block and complete events with pid and
host), timings, and `complete`, written last. A cell without `complete` is unfinished: it is
never listed or opened, and a resumed sweep continues it from its last finished block (or
rewrites it if its config changed). Every metadata write of zarr's local store is atomic
(temporary file, then rename).

Integrity: every array chunk ends with a crc32c checksum (zarr 3's `crc32c` codec, the last
bytes-to-bytes codec, after zstd), and `finish` writes `cells/<cell_id>/manifest.json`
(every array's shape, dtype, chunk grid and, per stored chunk file, its size and the sha256
of its decoded bytes; the sha256 of every group's and array's `zarr.json`) before the
`complete` write, which records the manifest's own sha256. A missing, truncated or altered
chunk, array or manifest is found by `verify_cell` / `verify_store`; `open_cell` refuses a
damaged cell (`DamagedCellError`). Cells finished before manifests existed (no `integrity`
attr) stay readable and are reported as unverifiable: a read of every chunk still finds
undecodable ones, but a deleted chunk cannot be told from one never written.

Audit receipts: every `ecjax audit` of a cell appends a receipt (chain, contract address,
block range, config hashes, verdict, mode, date) to `cells/<cell_id>/audits.json`
(`add_audit`, `audits`). It is written after the cell finished and is no part of its data: the
manifest does not list it (the manifest covers the datasets' chunks and `zarr.json` files
only), so `verify_cell`, `seal_cell` and `ecjax verify` neither need nor check it.

Readers open cells lazily (dask-backed xarray) with `list_cells` and `open_cell`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import os
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
import zarr

from . import cf
from .config import config_hash

FORMAT = "ecjax-store/2"  # 2: CF attributes, one dimension order, agent roles as coordinates
INTEGRITY = "crc32c+manifest/1"  # cell attr `integrity` of cells whose finish writes a manifest
MANIFEST = "manifest.json"
AUDITS = "audits.json"  # audit receipts of a cell, beside its manifest and outside it
DATASETS = ("summary", "trajectories", "open_loop")


class StoreError(RuntimeError):
    """The store cannot be used as asked (unfinished cell, conflicting config, not a store)."""


class DamagedCellError(StoreError):
    """A finished cell's data no longer match its manifest (missing, truncated or altered)."""

    def __init__(self, path, checks: list[CellCheck], limit: int | None = 10):
        self.path = str(path)
        self.checks = [c for c in checks if c.state == "damaged"]
        lines = [f"{len(self.checks)} damaged cell(s) in {self.path}:"]
        for c in self.checks:
            lines += [f"  cell {c.cell!r}: {p}" for p in c.problems[:limit]]
            if limit is not None and len(c.problems) > limit:
                more = len(c.problems) - limit
                lines.append(f"  cell {c.cell!r}: {more} more (`ecjax verify` lists them all)")
        lines.append(f"`ecjax resume {self.path}` removes and recomputes them.")
        super().__init__("\n".join(lines))


@dataclasses.dataclass
class CellCheck:
    """What `verify_cell` found in one cell.

    `state`: 'verified' (every chunk matches the manifest), 'damaged' (`problems` names each
    array and chunk), 'unverifiable' (finished before manifests existed: readable, not
    checkable against anything), 'partial' (unfinished: nothing to verify yet), 'missing'.
    """

    cell: str
    state: str
    problems: list = dataclasses.field(default_factory=list)

    def describe(self) -> str:
        if self.state == "damaged":
            return f"cell {self.cell!r}: " + "; ".join(self.problems)
        if self.state == "unverifiable":
            return f"cell {self.cell!r}: no manifest (written before ecjax stored checksums), not verifiable"
        return f"cell {self.cell!r}: {self.state}"


@dataclasses.dataclass
class Cell:
    """One finished cell, opened lazily."""

    id: str
    summary: xr.Dataset  # dims (risk, sample[, time][, agent]); dask-backed
    trajectories: xr.Dataset | None  # kept samples: (risk, sample, time, agent, ...); dask-backed
    config: dict  # the resolved config of the cell
    attrs: dict  # seed, versions, device, params, timings, log, ...
    open_loop: xr.Dataset | None = None  # open-loop validation of the first plan (validate.open_loop)


# ------------------------------------------------------------------------- metadata
def versions() -> dict:
    """Versions of the packages that shape the numbers and the files."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ecjax", "jax", "jaxlib", "numpy", "xarray", "zarr", "dask", "distributed",
                 "hydra-core", "equinox"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    import platform

    out["python"] = platform.python_version()
    return out


def device() -> str:
    """The JAX device that computes (first device): platform, kind and name."""
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '?')} {d} (x{jax.device_count()})"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _event(kind: str, **kw) -> dict:
    return {"event": kind, "time": _now(), "pid": os.getpid(), "host": socket.gethostname(), **kw}


# ----------------------------------------------------------------------------- root
# ecjax reads and writes its groups without the root's consolidated metadata (`consolidate`):
# that copy is written at the end of a run for other readers and is stale while cells change.
def _open_group(store, mode="r", **kw):
    return zarr.open_group(store=str(store), mode=mode, zarr_format=3, use_consolidated=False, **kw)


def _root(path, mode="r"):
    try:
        return _open_group(path, mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"{path} is not an ecjax store (no zarr group there).") from e


def _check_format(path, attrs: Mapping) -> None:
    fmt = attrs.get("format")
    if fmt == FORMAT:
        return
    if isinstance(fmt, str) and fmt.startswith("ecjax-store/"):
        raise StoreError(
            f"{path} is an ecjax store of format {fmt!r} (written by ecjax "
            f"{attrs.get('ecjax_version', '?')}); this ecjax reads and writes {FORMAT!r}. Open it with "
            "the ecjax that wrote it, or run its sweep again into a new out.dir.")
    raise StoreError(f"{path} is not an ecjax store (root attr format {fmt!r}, not {FORMAT!r}).")


def init_store(path, description: Mapping | None = None) -> None:
    """Create the store (or reopen it) and record the sweep description in its root attrs."""
    root = _open_group(path, "a")
    attrs = dict(root.attrs)
    if attrs and attrs.get("format") is not None:
        _check_format(path, attrs)
    new = {}
    if "format" not in attrs:
        new.update(format=FORMAT, created=_now(), ecjax_version=versions()["ecjax"])
    if description is not None:
        new["sweep"] = json.loads(json.dumps(dict(description), default=str))
    if new:
        root.update_attributes(new)
    if "cells" not in root:
        root.create_group("cells")


def consolidate(path) -> bool:
    """Write the store's consolidated metadata: zarr's inline copy of every group's and array's
    metadata in the root `zarr.json`, so that xarray opens a dataset of the store without listing
    it and without a warning (`xr.open_zarr(store, group="cells/<cell>/summary")`).

    Written at the end of a run (`ecjax.sweep.run`) and when a cell is sealed; it reads every
    `zarr.json` of the store (about 3 ms each). While a run writes cells the copy is stale, so
    ecjax itself never reads it (`_open_group`). zarr-python warns that consolidated metadata is
    its extension of Zarr 3, not part of the specification: a reader without it lists the store
    as usual. One writer at a time (an exclusive lock on the store directory). Where a damaged
    `zarr.json` stops zarr, the root's copy is removed instead (readers list the store) and
    False returned.
    """
    import fcntl

    fd = os.open(str(path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
                warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
                zarr.consolidate_metadata(str(path), zarr_format=3)
            return True
        except Exception:
            root = Path(path) / "zarr.json"
            meta = json.loads(root.read_bytes())
            if meta.pop("consolidated_metadata", None) is not None:
                _write_atomic(root, json.dumps(meta, indent=2).encode())
            return False
    finally:
        os.close(fd)


def store_attrs(path) -> dict:
    """Root attributes (format, created, ecjax_version, sweep)."""
    return dict(_root(path).attrs)


def _cells_group(path):
    root = _root(path)
    _check_format(path, root.attrs)
    if "cells" not in root:
        return None
    return root["cells"]


def cell_attrs(path, cell_id: str) -> dict | None:
    """Attributes of a cell (finished or not), or None if the store has no such cell."""
    cells = _cells_group(path)
    try:
        if cells is None or cell_id not in cells:
            return None
        return dict(cells[cell_id].attrs)
    except Exception:  # a cell directory without readable metadata: not a cell
        return None


def cell_state(path, cell_id: str) -> str:
    """'missing', 'partial' (started, unfinished) or 'complete'."""
    a = cell_attrs(path, cell_id)
    if a is None:
        return "missing"
    return "complete" if a.get("complete") is True else "partial"


def all_cells(path, attempts: int = 20) -> list[str]:
    """Ids of every cell group of the store, finished or not, sorted.

    Safe while another process writes the store: zarr writes metadata atomically through a
    temporary file next to it (`cells/zarr.<hex>.partial`), which a listing may see for an
    instant. Such an entry is not a cell: its warning is silenced, and a listing that loses
    an entry while it reads is taken again (up to `attempts` times).
    """
    cells = _cells_group(path)
    if cells is None:
        return []
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
                return sorted(name for name, _ in cells.groups()
                              if not name.endswith(".partial") and not name.startswith("."))
        except FileNotFoundError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
        except ValueError:  # a cell's zarr.json that no longer parses stops zarr's listing
            return [c for c in _cell_dirs(path) if cell_attrs(path, c) is not None]
    raise AssertionError("unreachable")  # the last attempt returns or raises


def list_cells(path) -> list[str]:
    """Ids of the FINISHED cells of a store, sorted."""
    return [c for c in all_cells(path) if cell_state(path, c) == "complete"]


def _open_ds(path, group: str) -> xr.Dataset:
    return xr.open_zarr(str(path), group=group, consolidated=False, chunks={}, zarr_format=3)


def open_cell(path, cell_id: str, verify: str | bool = "full") -> Cell:
    """Open a finished cell lazily (dask-backed Datasets).

    `verify`: "full" reads every chunk and checks it against the cell's manifest first,
    "quick" checks the manifest, array metadata and chunk file sizes only, False nothing.
    Unfinished cells raise StoreError, damaged ones `DamagedCellError`.
    """
    a = cell_attrs(path, cell_id)
    if a is None:
        raise StoreError(f"{path} has no cell {cell_id!r} (finished cells: {list_cells(path)}).")
    if a.get("complete") is not True:
        raise StoreError(f"cell {cell_id!r} of {path} is not finished; resume the sweep to finish it.")
    if verify:
        check = verify_cell(path, cell_id, full=verify != "quick")
        if check.state == "damaged":
            raise DamagedCellError(path, [check])
    base = f"cells/{cell_id}"
    summary = _open_ds(path, f"{base}/summary")
    traj = _open_ds(path, f"{base}/trajectories") if a.get("trajectories") else None
    ol = _open_ds(path, f"{base}/open_loop") if a.get("open_loop") else None
    config = json.loads(a.pop("config"))
    return Cell(id=cell_id, summary=summary, trajectories=traj, config=config, attrs=a, open_loop=ol)


# ------------------------------------------------------------------------ integrity
def compressors() -> list:
    """The bytes-to-bytes codecs of every array ecjax writes: zstd, then a crc32c checksum."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return [ZstdCodec(), Crc32cCodec()]


def _encoding(ds: xr.Dataset) -> dict:
    return {name: {"compressors": compressors()} for name in ds.variables}


def _digest(data: np.ndarray) -> str:
    data = np.asarray(data)
    if data.dtype.kind in "OTU":  # strings: their text, not pointers
        return hashlib.sha256(json.dumps(data.tolist(), default=str).encode()).hexdigest()
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()


def _cell_dir(path, cell_id: str) -> Path:
    return Path(path) / "cells" / cell_id


def _chunk_files(adir: Path) -> dict[str, int]:
    """Stored chunk files of an array directory (key -> size in bytes)."""
    out = {}
    for f in adir.rglob("*"):
        if f.is_file() and f.name != "zarr.json" and not f.name.endswith(".partial"):
            out[f.relative_to(adir).as_posix()] = f.stat().st_size
    return out


def _arrays(path, cell_id: str, names) -> dict[str, Any]:
    """`dataset/array` -> zarr array, for the arrays of a cell's datasets whose metadata can be
    read (each array opened on its own: one damaged `zarr.json` hides no other array)."""
    out = {}
    for name in names:
        ddir = _cell_dir(path, cell_id) / name
        if not ddir.is_dir():
            continue
        for sub in sorted(p.name for p in ddir.iterdir() if (p / "zarr.json").is_file()):
            try:
                out[f"{name}/{sub}"] = zarr.open_array(store=str(path), path=f"cells/{cell_id}/{name}/{sub}",
                                                       mode="r", zarr_format=3)
            except Exception:  # unreadable metadata: reported by the caller as a missing array
                continue
    return out


def _metadata_files(path, cell_id: str, names) -> dict[str, str]:
    """sha256 of every `zarr.json` of a cell's datasets (groups and arrays: dims, attrs, codecs)."""
    cdir = _cell_dir(path, cell_id)
    out = {}
    for name in names:
        for f in sorted((cdir / name).rglob("zarr.json")) if (cdir / name).is_dir() else []:
            out[f.relative_to(cdir).as_posix()] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def _grid(arr) -> list[tuple[tuple, str]]:
    return [(idx, arr.metadata.encode_chunk_key(idx))
            for idx in itertools.product(*(range(n) for n in arr.cdata_shape))]


def build_manifest(path, cell_id: str, names) -> dict:
    """The manifest of a cell's datasets `names` as they are stored now."""
    arrays = {}
    for key, arr in _arrays(path, cell_id, names).items():
        adir = _cell_dir(path, cell_id) / key
        files = _chunk_files(adir)
        chunks = {}
        for idx, ck in _grid(arr):
            if ck in files:  # a chunk never written (all fill value) has no file
                chunks[ck] = [files[ck], _digest(arr.get_block_selection(idx))]
        arrays[key] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks),
                       "files": chunks}
    return {"format": "ecjax-manifest/1", "cell": cell_id, "datasets": list(names), "arrays": arrays,
            "metadata": _metadata_files(path, cell_id, names)}


def _write_atomic(target: Path, text: bytes) -> None:
    """Write `target` atomically: a temporary file beside it, fsync, rename."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)


def _write_manifest(path, cell_id: str, manifest: dict) -> str:
    """Write the manifest atomically; returns its sha256."""
    text = json.dumps(manifest, sort_keys=True, indent=1).encode()
    _write_atomic(_cell_dir(path, cell_id) / MANIFEST, text)
    return hashlib.sha256(text).hexdigest()


def _read_all(arrays: Mapping[str, Any]) -> list[str]:
    """Decode every stored chunk; the problems met (checksum, decompression, shape)."""
    problems = []
    for key, arr in arrays.items():
        for idx, ck in _grid(arr):
            try:
                arr.get_block_selection(idx)
            except Exception as e:  # any decode failure is damage, reported, never raised
                problems.append(f"{key}: chunk {ck} unreadable ({_short(e)})")
    return problems


def _short(e: Exception) -> str:
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__


def verify_cell(path, cell_id: str, full: bool = True) -> CellCheck:
    """Check one cell against its manifest.

    Quick (`full=False`): the manifest (present, its sha256 as recorded by the `complete`
    write), every array's metadata (shape, dtype, chunks) and every chunk file (present, same
    size, no unexpected file). Full: also decodes every chunk (crc32c) and compares the sha256
    of its bytes. Never raises for damage: the problems are in the returned `CellCheck`.
    """
    a = cell_attrs(path, cell_id)
    if a is None and not _cell_dir(path, cell_id).exists():
        return CellCheck(cell_id, "missing")
    if a is None:
        return CellCheck(cell_id, "damaged", ["no readable cell metadata (cells/"
                                              f"{cell_id}/zarr.json missing or damaged)"])
    if a.get("complete") is not True:
        return CellCheck(cell_id, "partial")
    names = _datasets(a)
    if not a.get("integrity"):
        problems = _read_all(_arrays(path, cell_id, names)) if full else []
        return CellCheck(cell_id, "damaged" if problems else "unverifiable", problems)
    mfile = _cell_dir(path, cell_id) / MANIFEST
    try:
        text = mfile.read_bytes()
    except OSError:
        return CellCheck(cell_id, "damaged", [f"{MANIFEST} missing: the cell's data cannot be verified"])
    if hashlib.sha256(text).hexdigest() != a.get("manifest_sha256"):
        return CellCheck(cell_id, "damaged", [f"{MANIFEST} altered (its sha256 differs from the one "
                                              "recorded when the cell finished)"])
    manifest = json.loads(text)
    arrays = _arrays(path, cell_id, names)
    problems = [f"{key}: array not in the manifest" for key in arrays if key not in manifest["arrays"]]
    meta = _metadata_files(path, cell_id, names)
    for f, sha in manifest.get("metadata", {}).items():
        if f not in meta:
            problems.append(f"{f} missing")
        elif meta[f] != sha:
            problems.append(f"{f} altered (sha256 differs from the manifest)")
    problems += [f"{f} not in the manifest" for f in sorted(set(meta) - set(manifest.get("metadata", {})))]
    for key, m in manifest["arrays"].items():
        arr = arrays.get(key)
        if arr is None:
            problems.append(f"{key}: array missing (no readable {key}/zarr.json)")
            continue
        got = {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks)}
        bad = [f"{k} {got[k]} != {m[k]}" for k in got if got[k] != m[k]]
        if bad:
            problems.append(f"{key}: metadata changed ({', '.join(bad)})")
            continue
        files = _chunk_files(_cell_dir(path, cell_id) / key)
        problems += [f"{key}: unexpected chunk file {ck}" for ck in sorted(set(files) - set(m["files"]))]
        for idx, ck in _grid(arr):
            if ck not in m["files"]:
                continue
            size, sha = m["files"][ck]
            if ck not in files:
                problems.append(f"{key}: chunk {ck} missing")
            elif files[ck] != size:
                problems.append(f"{key}: chunk {ck} has {files[ck]} bytes, the manifest {size} "
                                "(truncated or replaced)")
            elif full:
                try:
                    data = arr.get_block_selection(idx)
                except Exception as e:  # a failed crc32c or decompression is damage, reported
                    problems.append(f"{key}: chunk {ck} unreadable ({_short(e)})")
                    continue
                if _digest(data) != sha:
                    problems.append(f"{key}: chunk {ck} differs from the manifest (sha256)")
    return CellCheck(cell_id, "damaged" if problems else "verified", problems)


def _cell_dirs(path) -> list[str]:
    """Names of the directories under `cells/` that could be cells (not zarr's temporary files)."""
    d = Path(path) / "cells"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and not p.name.endswith(".partial"))


def verify_store(path, full: bool = True) -> list[CellCheck]:
    """`verify_cell` of every cell of a store, including cell directories whose metadata can no
    longer be read (reported damaged). Raises StoreError only if `path` is not an ecjax store."""
    ids = set(all_cells(path)) | set(_cell_dirs(path))
    return [verify_cell(path, cid, full=full) for cid in sorted(ids)]


def check_store(path, full: bool = True) -> list[CellCheck]:
    """`verify_store`, raising `DamagedCellError` (naming every damaged cell and array) if any."""
    checks = verify_store(path, full=full)
    if any(c.state == "damaged" for c in checks):
        raise DamagedCellError(path, checks)
    return checks


def _datasets(attrs: Mapping) -> list[str]:
    return ["summary"] + [n for n in DATASETS[1:] if attrs.get(n)]


def seal_cell(path, cell_id: str) -> str:
    """Write a new manifest of a finished cell from its data as they are now, and record it.

    For cells written before manifests existed (after a full read found nothing wrong) and for
    data changed on purpose (a planted difference, a migration). Sealing records, it does not
    check: a damaged cell sealed is taken as it is. Returns the manifest's sha256.
    """
    a = cell_attrs(path, cell_id)
    if a is None or a.get("complete") is not True:
        raise StoreError(f"cell {cell_id!r} of {path} is not a finished cell.")
    digest = _write_manifest(path, cell_id, build_manifest(path, cell_id, _datasets(a)))
    group = _open_group(path, "r+", path=f"cells/{cell_id}")
    group.update_attributes({"integrity": INTEGRITY, "manifest_sha256": digest})
    consolidate(path)
    return digest


def audits(path, cell_id: str) -> list[dict]:
    """The audit receipts of a cell, oldest first ([] if it was never audited)."""
    f = _cell_dir(path, cell_id) / AUDITS
    try:
        data = json.loads(f.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise StoreError(f"cell {cell_id!r} of {path}: {AUDITS} cannot be read ({_short(e)}).") from e
    if not isinstance(data, dict) or not isinstance(data.get("receipts"), list):
        raise StoreError(f"cell {cell_id!r} of {path}: {AUDITS} holds no list of receipts.")
    return list(data["receipts"])


def add_audit(path, cell_id: str, receipt: Mapping) -> Path:
    """Append an audit receipt to `cells/<cell_id>/audits.json` (temporary file, fsync, rename).

    The file is outside the cell's manifest: writing it changes nothing `verify_cell` checks."""
    a = cell_attrs(path, cell_id)
    if a is None or a.get("complete") is not True:
        raise StoreError(f"cell {cell_id!r} of {path} is not a finished cell.")
    receipts = audits(path, cell_id) + [json.loads(json.dumps(dict(receipt), default=str))]
    text = json.dumps({"format": "ecjax-audits/1", "cell": cell_id, "receipts": receipts}, indent=1).encode()
    target = _cell_dir(path, cell_id) / AUDITS
    _write_atomic(target, text)
    return target


def discard_cell(path, cell_id: str) -> None:
    """Remove a cell's directory: renamed aside first (atomic), so no reader sees half of it."""
    d = _cell_dir(path, cell_id)
    if not d.exists():
        return
    trash = d.with_name(f".discard-{cell_id}-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(d, trash)
    shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- writer
class CellWriter:
    """Writes one cell block by block; `finish` marks it complete.

    On construction: a finished cell with the same config is left alone (`finished` is True);
    an unfinished one with the same config, S and block size is continued (`blocks_done`);
    anything else unfinished is removed and started afresh. A finished cell computed with a
    different config raises StoreError (results are never overwritten silently).
    """

    def __init__(self, path, cell_id: str, config: Mapping, params: Mapping | None = None):
        self.path = str(path)
        self.cell_id = cell_id
        self.config = dict(config)
        self.hash = config_hash(self.config)
        sim = self.config["sim"]
        self.S = int(sim["S"])
        self.block = int(sim.get("block") or self.S)
        self.n_blocks = -(-self.S // self.block)
        self.keep = int(sim.get("keep", 0))
        init_store(self.path)
        root = _open_group(self.path, "a")
        cells = root.require_group("cells")
        a = cell_attrs(self.path, cell_id)
        self.finished = False
        if a is not None and a.get("complete") is True:
            if a.get("config_hash") != self.hash:
                raise StoreError(
                    f"cell {cell_id!r} of {self.path} was computed with another config "
                    f"(hash {a.get('config_hash', '?')[:12]} != {self.hash[:12]}); use another out.dir."
                )
            self.finished = True
            self.group = cells[cell_id]
            return
        same = a is not None and a.get("config_hash") == self.hash and a.get("S") == self.S \
            and a.get("block") == self.block  # fmt: skip
        if same:
            self.group = cells[cell_id]
            self._log("resume", blocks_done=sorted(a.get("blocks_done", [])))
            return
        if _cell_dir(self.path, cell_id).exists() or cell_id in cells:
            discard_cell(self.path, cell_id)
        self.group = cells.create_group(cell_id, overwrite=True)
        self._update(
            config=json.dumps(self.config, sort_keys=True, default=str),
            config_hash=self.hash,
            seed=int(sim["seed"]),
            params=json.loads(json.dumps(dict(params or {}), default=str)),
            S=self.S,
            block=self.block,
            n_blocks=self.n_blocks,
            keep=self.keep,
            versions=versions(),
            device=device(),
            blocks_done=[],
            integrity=INTEGRITY,
            timing={},
            trajectories=False,
            log=[_event("start")],
        )

    # one metadata write per update (zarr.json is replaced atomically); `attrs.update` would
    # write key by key, and a crash between two keys would leave them inconsistent
    def _update(self, **kw) -> None:
        self.group.update_attributes(kw)

    def _log(self, kind: str, **kw) -> None:
        log = list(self.group.attrs.get("log", []))
        log.append(_event(kind, **kw))
        self._update(log=log)

    @property
    def blocks_done(self) -> set[int]:
        return set(int(k) for k in self.group.attrs.get("blocks_done", []))

    def pending_blocks(self) -> list[tuple[int, int, int]]:
        """(block index, first sample, number of samples) of the blocks still to compute."""
        done = self.blocks_done
        return [(k, k * self.block, min(self.block, self.S - k * self.block))
                for k in range(self.n_blocks) if k not in done]

    def write_block(self, k: int, summary: xr.Dataset, trajectories: xr.Dataset | None = None,
                    seconds: float = 0.0, compile_seconds: float = 0.0) -> None:
        """Write block k's summary (and, for the block holding them, the kept trajectories)."""
        base = f"cells/{self.cell_id}"
        summary = cf.describe(summary, "summary")
        lo = k * self.block
        hi = min(lo + self.block, self.S)
        ids = summary["sample"].values
        if len(ids) != hi - lo or ids[0] != lo:
            raise StoreError(f"block {k} must hold samples {lo}..{hi - 1}, got {ids[0]}..{ids[-1]}.")
        if not self.blocks_done:
            template = self._template(summary)
            template.to_zarr(
                self.path, group=f"{base}/summary", mode="w", compute=False, consolidated=False,
                zarr_format=3, encoding=_encoding(template),
            )  # fmt: skip
        region = summary.drop_vars([v for v in summary.variables if "sample" not in summary[v].dims]
                                   + ["sample"])
        region.to_zarr(self.path, group=f"{base}/summary", region={"sample": slice(lo, hi)},
                       consolidated=False, zarr_format=3)
        extra = {}
        if trajectories is not None:
            trajectories = cf.describe(trajectories, "trajectories")
            trajectories.to_zarr(self.path, group=f"{base}/trajectories", mode="w",
                                 consolidated=False, zarr_format=3, encoding=_encoding(trajectories))
            extra["trajectories"] = True
        timing = dict(self.group.attrs.get("timing", {}))
        timing[str(k)] = [float(seconds), float(compile_seconds)]
        log = list(self.group.attrs.get("log", []))
        log.append(_event("block", block=k))
        self._update(blocks_done=sorted(self.blocks_done | {k}), timing=timing, log=log, **extra)

    def write_dataset(self, name: str, ds: xr.Dataset) -> None:
        """Write a further Dataset of the cell (e.g. `open_loop`) and flag it in the attrs."""
        if name in ("summary", "trajectories"):
            raise StoreError(f"{name!r} is written by write_block.")
        ds = cf.describe(ds, name) if name in cf.VARIABLES else ds
        ds.to_zarr(self.path, group=f"cells/{self.cell_id}/{name}", mode="w", consolidated=False,
                   zarr_format=3, encoding=_encoding(ds))
        log = list(self.group.attrs.get("log", []))
        log.append(_event("dataset", name=name))
        self._update(log=log, **{name: True})

    def _template(self, first: xr.Dataset) -> xr.Dataset:
        """The full-size summary (all S samples) with lazy, never-computed data arrays."""
        import dask.array as da

        ids = np.arange(self.S, dtype=np.int64)
        data = {}
        for name, v in first.data_vars.items():
            if "sample" in v.dims:
                shape = tuple(self.S if d == "sample" else first.sizes[d] for d in v.dims)
                chunks = tuple(self.block if d == "sample" else first.sizes[d] for d in v.dims)
                data[name] = xr.Variable(v.dims, da.zeros(shape, dtype=v.dtype, chunks=chunks), v.attrs)
            else:
                data[name] = v.variable
        coords = {k: c.variable for k, c in first.coords.items() if k != "sample"}
        coords["sample"] = xr.Variable("sample", ids, first["sample"].attrs)
        return xr.Dataset(data, coords=coords, attrs=first.attrs)

    def finish(self, **extra: Any) -> None:
        """Write the cell's manifest, then mark the cell complete (the last write of a cell)."""
        missing = set(range(self.n_blocks)) - self.blocks_done
        if missing:
            raise StoreError(f"cell {self.cell_id!r}: blocks {sorted(missing)} are not written.")
        timing = self.group.attrs.get("timing", {})
        log = list(self.group.attrs.get("log", []))
        log.append(_event("complete"))
        self._update(
            log=log,
            seconds=float(sum(t[0] for t in timing.values())),
            compile_seconds=float(sum(t[1] for t in timing.values())),
            **extra,
        )
        names = _datasets(self.group.attrs)
        digest = _write_manifest(self.path, self.cell_id, build_manifest(self.path, self.cell_id, names))
        self._update(complete=True, completed=_now(), integrity=INTEGRITY, manifest_sha256=digest)

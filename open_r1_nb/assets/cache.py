"""The asset cache every builder shares: atomic, locked builds keyed by their arguments; JSONL files.

Every build writes into a temporary folder and renames it into place only when complete, with a marker file
(``open_r1_nb_asset.json``) that records the build arguments, so an interrupted build never looks finished and a
second call with the same arguments returns at once.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ASSET_MARKER = "open_r1_nb_asset.json"
# Bump when the content a builder writes changes, so existing caches are rebuilt rather than silently reused.
FORMAT_VERSION = 1

_LAST_STATUS: dict[str, str] = {}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _normalise(obj: Any) -> Any:
    """The JSON form of ``obj``, so a key read back from disk compares equal to one built in memory."""
    return json.loads(json.dumps(obj, sort_keys=True))


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The build record of an asset folder, or None when the folder is missing or was never finished."""
    marker = Path(folder) / ASSET_MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _is_current(folder: Path, key: dict[str, Any]) -> bool:
    record = read_marker(folder)
    return record is not None and record.get("key") == _normalise(key)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_leftovers(final: Path) -> None:
    """Delete temporary folders that interrupted builds of ``final`` left behind (their process is gone)."""
    for path in final.parent.glob(f".{final.name}.*-*"):
        try:
            pid = int(path.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def _make_readable(folder: Path) -> None:
    """Give every file the usual mode: some savers write through 0600 temporary files, which a shared cache
    (one build, several users) cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~mask)


def _cached_build(
    name: str, final: Path, key: dict[str, Any], force: bool, make: Callable[[Path], dict[str, Any]]
) -> Path:
    """Return ``final`` if it was built with ``key``; otherwise run ``make(tmp)`` and move ``tmp`` into place.

    A file lock serialises concurrent builders (two training ranks, two notebooks): the second waits and then
    finds the asset finished. The marker is written last, inside the temporary folder, so only a complete
    build is ever renamed to ``final``.
    """
    from filelock import FileLock

    if not force and _is_current(final, key):
        _LAST_STATUS[name] = "cached"
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if not force and _is_current(final, key):
            _LAST_STATUS[name] = "cached"
            return final
        _remove_leftovers(final)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            info = make(tmp)
            _make_readable(tmp)
            record = {
                "asset": name,
                "key": _normalise(key),
                "built_at": _now(),
                "build_seconds": round(time.perf_counter() - start, 1),
                **info,
            }
            (tmp / ASSET_MARKER).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
            old = final.parent / f".{final.name}.old-{os.getpid()}"
            if final.exists():
                final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    _LAST_STATUS[name] = "built"
    return final


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a ``.jsonl`` file written by the builders."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]

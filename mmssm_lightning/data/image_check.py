"""Find missing, corrupt and truncated images before training (``data.check_images``).

Every image a split refers to is opened and fully decoded (``PIL.Image.load``: a truncated file
fails there, not at ``open``) on a thread pool; Pillow's decoders release the GIL. Images that
passed are remembered in a json file under ``cache_dir`` keyed by path, size and mtime, so a second
run only ``stat``s them. A failure is reported for the first record (in file order) that uses a bad
image, with the file, the record index and how many other images are bad.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from mmssm_lightning.data.errors import ImageCheckError

#: bump when what "checked" means changes, so that old caches are ignored
_CACHE_VERSION = 1


def _decode(path: Path) -> str | None:
    """None if ``path`` decodes, else why not (one line)."""
    try:
        with Image.open(path) as img:
            img.load()
    except FileNotFoundError:
        return "does not exist"
    except Exception as e:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        return f"cannot be decoded ({type(e).__name__}: {' '.join(str(e).split())})"
    return None


def _stamp(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class CheckedImages:
    """The json cache of images that decoded: ``{"version", "entries": {path: [size, mtime_ns]}}``,
    one file per image folder. Written atomically; concurrent writers at worst re-check images."""

    def __init__(self, cache_dir: str | Path | None, folder: Path) -> None:
        self.path = None
        if cache_dir is not None:
            key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
            self.path = Path(cache_dir) / "image_checks" / f"{key}.json"
        self.entries: dict[str, list[int]] = {}
        if self.path is not None and self.path.is_file():
            try:
                data = json.loads(self.path.read_text())
                if data.get("version") == _CACHE_VERSION:
                    self.entries = data["entries"]
            except (OSError, ValueError, KeyError, AttributeError):
                self.entries = {}  # a damaged cache only costs a re-check

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": _CACHE_VERSION, "entries": self.entries}))
        os.replace(tmp, self.path)


def check_images(
    uses: Iterable[tuple[str, str]],
    folder: Path,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
) -> int:
    """Decode every image of ``uses`` = (relative image path, "<json> record <i>") pairs under
    ``folder``; raise :class:`ImageCheckError` naming the first bad one. Returns how many were
    decoded (not found in the cache)."""
    first_use: dict[str, str] = {}
    for rel, where in uses:
        first_use.setdefault(rel, where)
    cache = CheckedImages(cache_dir, folder)
    stamps = {rel: _stamp(folder / rel) for rel in first_use}
    bad = {rel: "does not exist" for rel, st in stamps.items() if st is None}
    todo = [rel for rel, st in stamps.items() if st is not None and cache.entries.get(rel) != st]
    if len(todo) > 1000:
        print(f"data.check_images: decoding {len(todo)} images under {folder}", file=sys.stderr)
    workers = workers or min(32, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for rel, why in zip(todo, pool.map(lambda r: _decode(folder / r), todo, chunksize=64)):
            if why is None:
                cache.entries[rel] = stamps[rel]
            else:
                bad[rel] = why
    if todo:
        cache.save()
    if bad:
        order = {rel: i for i, rel in enumerate(first_use)}
        rel = min(bad, key=order.__getitem__)
        more = f"; {len(bad) - 1} more bad image(s)" if len(bad) > 1 else ""
        raise ImageCheckError(
            f"{first_use[rel]}: image file {folder / rel} {bad[rel]}{more} (data.check_images=true found it)"
        )
    return len(todo)

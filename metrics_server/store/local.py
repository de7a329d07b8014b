"""The local store backend: a folder of YAML manifests, reloaded when files change.

Multi-document files, `kind`/`apiVersion` dispatch, Secrets with `data` or `stringData`.
A file that does not parse is reported and its previous objects are kept; a document that
fails validation is reported and skipped; everything else keeps working.
Change detection polls modification times (no inotify dependency; one stat per file).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from metrics_server.model import (
    KeptnMetric,
    KeptnMetricsProvider,
    Resource,
    Secret,
    ValidationError,
    parse_resource,
)
from metrics_server.store.base import IndexedStore

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KINDS = (KeptnMetric, KeptnMetricsProvider, Secret)


@dataclass(frozen=True)
class LoadProblem:
    path: str
    message: str


def manifest_files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(MANIFEST_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath) / name


def load_file(path: Path, default_namespace: str = "default") -> tuple[list[Resource], list[LoadProblem]]:
    """Parse one file into resources; raises yaml.YAMLError/OSError if the file is unreadable."""
    objects: list[Resource] = []
    problems: list[LoadProblem] = []
    with path.open("rb") as fh:
        documents = list(yaml.safe_load_all(fh))
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        kind = doc.get("kind") if isinstance(doc, dict) else None
        items = doc.get("items") if isinstance(kind, str) and kind.endswith("List") else [doc]
        for item in items if isinstance(items, list) else []:
            try:
                obj = parse_resource(item, default_namespace)
            except ValidationError as exc:
                problems.append(LoadProblem(f"{path} (document {index + 1})", str(exc)))
                continue
            if obj is not None:
                objects.append(obj)
    return objects, problems


class LocalStore(IndexedStore):
    """Manifests from a folder (or one file); `poll_interval` seconds between change checks."""

    def __init__(
        self,
        root: str | Path,
        *,
        default_namespace: str = "default",
        server_namespace: str = "keptn-system",
        poll_interval: float = 1.0,
    ) -> None:
        super().__init__(server_namespace=server_namespace)
        self.root = Path(root)
        self.default_namespace = default_namespace
        self.poll_interval = poll_interval
        self.problems: dict[str, list[LoadProblem]] = {}
        self._files: dict[Path, tuple[float, int]] = {}
        self._objects_by_file: dict[Path, list[Resource]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"manifest folder {self.root} does not exist")
        self.reload()
        self.mark_synced()
        self._task = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.reload()
            except Exception:  # never let a reload bug stop watching
                log.exception("reloading manifests from %s failed", self.root)

    def reload(self) -> bool:
        """Re-read changed files; returns True if any file changed."""
        seen: dict[Path, tuple[float, int]] = {}
        for path in manifest_files(self.root):
            try:
                st = path.stat()
            except OSError:
                continue
            seen[path] = (st.st_mtime, st.st_size)
        if seen == self._files:
            return False
        for path, stamp in seen.items():
            if self._files.get(path) != stamp:
                self._load(path)
        for path in set(self._objects_by_file) - set(seen):
            self._objects_by_file.pop(path, None)
            self.problems.pop(str(path), None)
        self._files = seen
        everything = [obj for objs in self._objects_by_file.values() for obj in objs]
        self._check_duplicates(everything)
        self.replace_all(everything, KINDS)
        return True

    def _load(self, path: Path) -> None:
        try:
            objects, problems = load_file(path, self.default_namespace)
        except (OSError, yaml.YAMLError) as exc:
            message = " ".join(str(exc).split())
            log.error("skipping %s: %s (keeping its previous objects)", path, message)
            self.problems[str(path)] = [LoadProblem(str(path), message)]
            return
        for problem in problems:
            log.error("skipping %s: %s", problem.path, problem.message)
        if problems:
            self.problems[str(path)] = problems
        else:
            self.problems.pop(str(path), None)
        self._objects_by_file[path] = objects

    def _check_duplicates(self, objects: list[Resource]) -> None:
        seen: set[tuple[type, object]] = set()
        for obj in objects:
            ident = (type(obj), obj.key)
            if ident in seen:
                log.warning(
                    "%s %s is defined more than once; the last definition wins", type(obj).__name__, obj.key
                )
            seen.add(ident)

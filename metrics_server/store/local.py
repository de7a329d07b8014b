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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metrics_server.excerpt import excerpt
from metrics_server.model import (
    PARSERS,
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
PARSER_KINDS = frozenset(PARSERS)
MESSAGE_LIMIT = 500  # a problem message quotes manifest values; keep each one a readable line
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, same rules


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


DEFAULT_MAX_MANIFEST_BYTES = 2 * 1024 * 1024
"""Largest manifest file read (`--max-manifest-bytes`): bigger than any one Kubernetes object
(etcd's 1.5 MiB limit), small enough that parsing it costs well under a second."""


class ManifestRefused(OSError):
    """A manifest file above the size cap or nested too deeply; reported like an unreadable file."""


def read_documents(path: Path, max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES) -> list[Any]:
    """Every YAML document of one file; raises OSError (incl. ManifestRefused) or yaml.YAMLError."""
    with path.open("rb") as fh:
        data = fh.read(max_bytes + 1) if max_bytes > 0 else fh.read()
    if max_bytes > 0 and len(data) > max_bytes:
        raise ManifestRefused(
            f"file is larger than {max_bytes} bytes (the --max-manifest-bytes limit); "
            "split it into smaller files"
        )
    _check_nesting(data)
    return list(yaml.load_all(data, Loader=_SafeLoader))


MAX_NESTING = 100
"""Deepest collection nesting read: Kubernetes objects (CRD schemas included) stay far below;
libyaml's composer recurses in C and crashes the process on a few hundred KB of `[[[[`."""


def _check_nesting(data: bytes) -> None:
    """Refuse documents nested deeper than MAX_NESTING, using libyaml's event parser.

    The parser itself is iterative (no recursion, no crash at any depth) and the walk stops at
    the first level beyond the limit, so a hostile file costs next to nothing.
    """
    depth = 0
    starts = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
    ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
    for event in yaml.parse(data, Loader=_SafeLoader):
        if isinstance(event, starts):
            depth += 1
            if depth > MAX_NESTING:
                raise ManifestRefused(f"collections are nested deeper than {MAX_NESTING} levels")
        elif isinstance(event, ends):
            depth -= 1


def document_items(doc: Any, where: str) -> tuple[list[Any], list[LoadProblem]]:
    """The objects of one document: itself, or the `items` of a `kind: *List` document."""
    if not isinstance(doc, Mapping):
        return [], [LoadProblem(where, f"a manifest must be a mapping, got {type(doc).__name__}")]
    kind = doc.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and kind not in PARSER_KINDS:
        items = doc.get("items")
        if items is None:
            return [], []
        if not isinstance(items, list):
            return [], [LoadProblem(where, f"{kind}: items: must be a list, got {type(items).__name__}")]
        return items, []
    return [doc], []


def load_file(
    path: Path, default_namespace: str = "default", max_bytes: int = DEFAULT_MAX_MANIFEST_BYTES
) -> tuple[list[Resource], list[LoadProblem]]:
    """Parse one file into resources; raises yaml.YAMLError/OSError if the file is unreadable.

    Every document that is not a valid object becomes a LoadProblem naming the file, the
    document index (1-based, and the item index inside a List) and the field; the rest load.
    """
    return parse_documents(path, read_documents(path, max_bytes), default_namespace)


def parse_documents(
    path: Path, documents: list[Any], default_namespace: str = "default"
) -> tuple[list[Resource], list[LoadProblem]]:
    objects: list[Resource] = []
    problems: list[LoadProblem] = []
    for index, doc in enumerate(documents):
        if doc is None:
            continue
        where = f"{path} (document {index + 1})"
        items, item_problems = document_items(doc, where)
        problems.extend(item_problems)
        for position, item in enumerate(items):
            place = where if items == [doc] else f"{path} (document {index + 1}, item {position + 1})"
            try:
                obj = parse_resource(item, default_namespace)
            except ValidationError as exc:
                problems.append(LoadProblem(place, excerpt(str(exc), MESSAGE_LIMIT)))
                continue
            except Exception as exc:  # a parser bug must cost one document, never the whole folder
                log.exception("unexpected error parsing %s", place)
                problems.append(LoadProblem(place, f"cannot be parsed ({type(exc).__name__})"))
                continue
            if obj is not None:
                objects.append(obj)
    return objects, problems


_FileResult = tuple[list[Resource], list[LoadProblem]] | LoadProblem


@dataclass(frozen=True)
class _Scan:
    """What one change check found: every file's stamp, and the parse of each changed file."""

    seen: dict[Path, tuple[float, int]]
    loaded: dict[Path, _FileResult]


class LocalStore(IndexedStore):
    """Manifests from a folder (or one file); `poll_interval` seconds between change checks."""

    def __init__(
        self,
        root: str | Path,
        *,
        default_namespace: str = "default",
        server_namespace: str = "keptn-system",
        poll_interval: float = 1.0,
        max_manifest_bytes: int = DEFAULT_MAX_MANIFEST_BYTES,
    ) -> None:
        super().__init__(server_namespace=server_namespace)
        self.root = Path(root)
        self.default_namespace = default_namespace
        self.poll_interval = poll_interval
        self.max_manifest_bytes = max_manifest_bytes
        self.problems: dict[str, list[LoadProblem]] = {}
        self._files: dict[Path, tuple[float, int]] = {}
        self._objects_by_file: dict[Path, list[Resource]] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.root.exists():
            raise FileNotFoundError(f"manifest folder {self.root} does not exist")
        await self.reload_async()
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
                await self.reload_async()
            except Exception:  # never let a reload bug stop watching
                log.exception("reloading manifests from %s failed", self.root)

    def reload(self) -> bool:
        """Re-read changed files; returns True if any file changed (blocking: CLI and tests)."""
        return self._apply(self._read_changed(dict(self._files)))

    async def reload_async(self) -> bool:
        """`reload` with the file reading and YAML parsing in a worker thread, off the event loop.

        libyaml parses without much Python-level work and the size cap bounds each file, so the
        serving loop keeps answering while a large folder is read (a thread is enough here:
        the parse is short and mostly C; provider expositions use a process pool instead).
        """
        return self._apply(await asyncio.to_thread(self._read_changed, dict(self._files)))

    def _read_changed(self, known: dict[Path, tuple[float, int]]) -> _Scan | None:
        """Stat every file and parse the changed ones; touches no store state (runs in a thread)."""
        seen: dict[Path, tuple[float, int]] = {}
        for path in manifest_files(self.root):
            try:
                st = path.stat()
            except OSError:
                continue
            seen[path] = (st.st_mtime, st.st_size)
        if seen == known:
            return None
        loaded: dict[Path, _FileResult] = {}
        for path, stamp in seen.items():
            if known.get(path) != stamp:
                loaded[path] = self._read_one(path)
        return _Scan(seen, loaded)

    def _read_one(self, path: Path) -> _FileResult:
        try:
            return load_file(path, self.default_namespace, self.max_manifest_bytes)
        except (OSError, yaml.YAMLError) as exc:
            return LoadProblem(str(path), excerpt(" ".join(str(exc).split()), MESSAGE_LIMIT))

    def _apply(self, scan: _Scan | None) -> bool:
        if scan is None:
            return False
        for path, result in scan.loaded.items():
            if isinstance(result, LoadProblem):
                log.error("skipping %s: %s (keeping its previous objects)", path, result.message)
                self.problems[str(path)] = [result]
                continue
            objects, problems = result
            for problem in problems:
                log.error("skipping %s: %s", problem.path, problem.message)
            if problems:
                self.problems[str(path)] = problems
            else:
                self.problems.pop(str(path), None)
            self._objects_by_file[path] = objects
        for path in set(self._objects_by_file) - set(scan.seen):
            self._objects_by_file.pop(path, None)
        for name in set(self.problems) - {str(p) for p in scan.seen}:
            self.problems.pop(name, None)
        self._files = scan.seen
        everything = [obj for objs in self._objects_by_file.values() for obj in objs]
        self._check_duplicates(everything)
        self.replace_all(everything, KINDS)
        return True

    def _check_duplicates(self, objects: list[Resource]) -> None:
        seen: set[tuple[type, object]] = set()
        for obj in objects:
            ident = (type(obj), obj.key)
            if ident in seen:
                log.warning(
                    "%s %s is defined more than once; the last definition wins", type(obj).__name__, obj.key
                )
            seen.add(ident)

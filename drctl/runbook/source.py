"""YAML documents loaded with the position of every key and value.

PyYAML's composer builds node trees recursively and expands aliases without limit,
so a deeply nested file overflows the stack and an alias bomb eats the machine.
This module builds plain Python values straight from the parser's event stream,
iteratively, with hard limits on size, depth and expanded node count, and records
where each value came from so that every later error can name ``file:line:col``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drctl.diagnostics import (
    E_DUPLICATE_KEY,
    E_FILE,
    E_YAML,
    E_YAML_LIMIT,
    Diagnostic,
    Position,
)
from drctl.errors import RunbookInvalid

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 250_000
#: Characters of scalar text once aliases are expanded. Without aliases a document
#: cannot reach it (it is the file size limit), so only alias repetition can.
MAX_EXPANDED_CHARS = MAX_BYTES

Loc = tuple[str | int, ...]


class SourceMap:
    """Where each value (and each mapping key) of a document starts.

    Held as character offsets: the line and column are worked out only for the few
    locations a diagnostic names, not for every value of a document that has none.
    """

    __slots__ = ("_keys", "_lines", "_values", "source")

    def __init__(
        self, source: str, values: Mapping[Loc, int], keys: Mapping[Loc, int], lines: LineIndex
    ) -> None:
        self.source = source
        self._values = values
        self._keys = keys
        self._lines = lines

    def position(self, loc: Loc, *, key: bool = False) -> Position | None:
        """The position of ``loc``, or of its nearest enclosing value that has one."""
        if key and loc in self._keys:
            return self._lines.position(self._keys[loc])
        values = self._values
        for end in range(len(loc), -1, -1):
            prefix = loc[:end]
            if prefix in values:
                return self._lines.position(values[prefix])
        return None

    def diagnostic(
        self, code: str, message: str, loc: Loc, *, key: bool = False, hint: str | None = None
    ) -> Diagnostic:
        return Diagnostic(code, message, self.source, self.position(loc, key=key), hint=hint)


@dataclass(frozen=True)
class SourceDocument:
    """A YAML document as plain values, its source map, and non-fatal problems found."""

    data: Any
    map: SourceMap
    problems: tuple[Diagnostic, ...] = field(default=())


def read_text(path: str) -> str:
    """Read a runbook file as UTF-8 text, or raise RunbookInvalid saying why not."""
    p = Path(path)

    def fail(message: str, hint: str | None = None) -> RunbookInvalid:
        return RunbookInvalid([Diagnostic(E_FILE, message, path, hint=hint)])

    try:
        if p.is_dir():
            raise fail("is a directory, not a runbook file")
        if p.is_fifo():
            raw = _read_pipe(p, fail)
        else:
            with p.open("rb") as fh:
                if p.is_file() and os.fstat(fh.fileno()).st_size > MAX_BYTES:
                    raise fail(
                        f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB; not a runbook"
                    )
                raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) > MAX_BYTES:
        raise fail(f"input is larger than {MAX_BYTES // (1024 * 1024)} MiB; not a runbook")
    if b"\x00" in raw:
        raise fail("binary data (NUL bytes), not a YAML runbook")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 text (invalid byte at offset {exc.start})") from None


PIPE_TIMEOUT = 10.0


def _read_pipe(p: Path, fail: Any) -> bytes:
    """Read a named pipe without blocking forever on one nobody writes to."""
    import select
    import time

    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    chunks: list[bytes] = []
    size = 0
    deadline = time.monotonic() + PIPE_TIMEOUT
    try:
        while size <= MAX_BYTES:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise fail(f"no end of input from the pipe within {PIPE_TIMEOUT:g}s")
            chunk = os.read(fd, 65536)
            if not chunk:
                # No writer yet reads as end-of-file too: wait for one until the deadline.
                if chunks:
                    break
                time.sleep(0.05)
                continue
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


class LineIndex:
    """Character offsets of a text as the 1-based line and column an editor shows.

    Lines end at LF, CRLF or a lone CR, as in editors and Python's universal newlines;
    NEL, U+2028 and U+2029 are characters inside a line (YAML itself counts them as
    breaks, which shifted every later line). A column counts characters, a tab as one.
    An offset at or past the end is the end of the last line, so a position is always
    inside the file.
    """

    def __init__(self, text: str) -> None:
        import re

        self._length = len(text)
        self._starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
        if self._length and text[-1] in "\r\n":
            # The text ends with a break: there is no line after it.
            self._starts.pop()
            tail = 2 if text.endswith("\r\n") else 1
            self._end = self._length - tail
        else:
            self._end = self._length

    def position(self, offset: int) -> Position:
        from bisect import bisect_right

        offset = min(max(offset, 0), self._end)
        line = bisect_right(self._starts, offset) - 1
        return Position(line + 1, offset - self._starts[line] + 1)


def load_yaml(text: str, source: str) -> SourceDocument:
    """Parse one YAML document into plain values with positions.

    Raises RunbookInvalid on syntax errors, limit breaches and multi-document input.
    Duplicate keys are reported as problems on the returned document, so they can be
    reported together with schema errors.
    """
    import yaml

    loader_cls = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    text = text.removeprefix("\ufeff")
    lines = LineIndex(text)
    loader = loader_cls(text)
    try:
        return _Builder(loader, source, lines).build()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        pos = lines.position(mark.index) if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem:
            problem = f"{exc.problem} ({exc.context})"
        if "maximum nesting depth" in problem:  # libyaml's own limit, hit before ours
            message = f"nesting deeper than {MAX_DEPTH} levels"
            raise RunbookInvalid([Diagnostic(E_YAML_LIMIT, message, source, pos)]) from None
        raise RunbookInvalid([Diagnostic(E_YAML, f"YAML syntax: {problem}", source, pos)]) from None
    except yaml.reader.ReaderError as exc:
        # A control character: its str() spans two lines and names "<unicode string>".
        char = exc.character if isinstance(exc.character, int) else None
        at = text.find(chr(char)) if char is not None else -1
        pos = lines.position(at) if at >= 0 else None
        what = f"character U+{char:04X}" if char is not None else "input"
        message = f"YAML: {what}: {exc.reason}"
        raise RunbookInvalid([Diagnostic(E_YAML, message, source, pos)]) from None
    except yaml.YAMLError as exc:
        raise RunbookInvalid([Diagnostic(E_YAML, f"YAML: {exc}", source)]) from None
    finally:
        loader.dispose()


_PLAIN_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"


class _LimitExceeded(Exception):
    def __init__(self, message: str, offset: int, code: str = E_YAML_LIMIT) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.code = code


@dataclass(slots=True)
class _Frame:
    container: dict[Any, Any] | list[Any]
    loc: Loc
    anchor: str | None
    start_nodes: int
    start_chars: int = 0
    key: Any = None
    #: The key's offset (None: no key read yet).
    key_at: int | None = None
    has_key: bool = False
    merges: list[Any] = field(default_factory=list)
    #: Levels of nesting in this container's value, itself included (aliases too).
    height: int = 1


class _Builder:
    def __init__(self, loader: Any, source: str, lines: LineIndex) -> None:
        import yaml
        from yaml.constructor import SafeConstructor

        self._yaml = yaml
        self._loader = loader
        self._source = source
        self._lines = lines
        self._chars = 0
        self._constructor = SafeConstructor()
        self._values: dict[Loc, int] = {}
        self._keys: dict[Loc, int] = {}
        self._anchors: dict[str, tuple[Any, int, int, int]] = {}
        self._nodes = 0
        self._problems: list[Diagnostic] = []
        #: Each distinct scalar's value, by (tag, plain, text): a runbook repeats its
        #: words (keys, step types, durations), and resolving one is a regex search.
        self._resolved: dict[tuple[str | None, bool, str], tuple[Any, bool]] = {}

    def build(self) -> SourceDocument:
        ev = self._yaml.events
        scalar_event, alias_event = ev.ScalarEvent, ev.AliasEvent
        mapping_start, sequence_start = ev.MappingStartEvent, ev.SequenceStartEvent
        mapping_end, sequence_end = ev.MappingEndEvent, ev.SequenceEndEvent
        stream_end, document_start = ev.StreamEndEvent, ev.DocumentStartEvent
        get_event = self._loader.get_event
        values, keys, resolved = self._values, self._keys, self._resolved
        stack: list[_Frame] = []
        root: Any = None
        documents = 0
        try:
            while True:
                event = get_event()
                kind = type(event)
                # Most events of a runbook are scalars: they are tested for first.
                if kind is scalar_event:
                    at = event.start_mark.index
                    text = event.value
                    self._count(1, at)
                    self._count_chars(len(text), at)
                    found = resolved.get((event.tag, bool(event.implicit[0]), text))
                    value, is_merge = found if found is not None else self._scalar(event, at)
                    if event.anchor is not None:
                        self._anchors[event.anchor] = (value, 1, 0, len(text))
                    if stack:
                        top = stack[-1]
                        container = top.container
                        if type(container) is dict:
                            if not top.has_key:
                                # Keys are names: ``on:`` or ``yes:`` must not become
                                # booleans (YAML 1.1), nor ``1:`` an int: plain keys stay text.
                                top.key = (
                                    _MERGE_TAG
                                    if is_merge
                                    else (text if event.tag is None else value)
                                )
                                top.key_at = at
                                top.has_key = True
                                continue
                            key = top.key
                            if type(key) is str and key != _MERGE_TAG and key not in container:
                                # The common case, without _child_loc and _attach's calls.
                                loc = (*top.loc, key)
                                keys.setdefault(loc, top.key_at)  # type: ignore[arg-type]
                                values.setdefault(loc, at)
                                container[key] = value
                                top.has_key = False
                                continue
                        elif type(container) is list:
                            values.setdefault((*top.loc, len(container)), at)
                            container.append(value)
                            continue
                    self._child_loc(stack, at)
                    root = self._attach(stack, value, at, root, merge_ok=False)
                    continue
                if kind is mapping_start or kind is sequence_start:
                    at = event.start_mark.index
                    if len(stack) >= MAX_DEPTH:
                        raise _LimitExceeded(f"nesting deeper than {MAX_DEPTH} levels", at)
                    self._count(1, at)
                    loc = self._child_loc(stack, at)
                    frame = _Frame(
                        {} if kind is mapping_start else [],
                        loc,
                        event.anchor,
                        self._nodes,
                        self._chars,
                    )
                    values.setdefault(loc, at)
                    stack.append(frame)
                    continue
                if kind is mapping_end or kind is sequence_end:
                    at = event.start_mark.index
                    frame = stack.pop()
                    if frame.merges and isinstance(frame.container, dict):
                        merged: dict[Any, Any] = {}
                        for m in frame.merges:
                            merged.update(m)
                        merged.update(frame.container)
                        frame.container = merged
                    if frame.anchor is not None:
                        self._anchors[frame.anchor] = (
                            frame.container,
                            self._nodes - frame.start_nodes + 1,
                            frame.height,
                            self._chars - frame.start_chars,
                        )
                    if stack:
                        stack[-1].height = max(stack[-1].height, frame.height + 1)
                    root = self._attach(stack, frame.container, at, root, merge_ok=True)
                    continue
                if kind is alias_event:
                    at = event.start_mark.index
                    if event.anchor not in self._anchors:
                        raise _LimitExceeded(
                            f"YAML syntax: alias *{event.anchor} names no anchor", at, E_YAML
                        )
                    value, size, height, chars = self._anchors[event.anchor]
                    self._count(size, at)
                    self._count_chars(chars, at)
                    # An alias nests its anchor's whole value here: count its depth too.
                    if len(stack) + height > MAX_DEPTH:
                        raise _LimitExceeded(f"nesting deeper than {MAX_DEPTH} levels", at)
                    if stack:
                        stack[-1].height = max(stack[-1].height, height + 1)
                    self._child_loc(stack, at)
                    root = self._attach(stack, value, at, root, merge_ok=True)
                    continue
                if kind is document_start:
                    documents += 1
                    if documents > 1:
                        raise _LimitExceeded(
                            "more than one YAML document; a runbook is one document",
                            event.start_mark.index,
                        )
                    continue
                if kind is stream_end:
                    break
                # The stream's start and a document's end carry nothing.
        except _LimitExceeded as exc:
            raise RunbookInvalid(
                [Diagnostic(exc.code, exc.message, self._source, self._lines.position(exc.offset))]
            ) from None
        except RecursionError:
            raise RunbookInvalid(
                [Diagnostic(E_YAML_LIMIT, "document is too deeply nested", self._source)]
            ) from None
        return SourceDocument(
            root,
            SourceMap(self._source, self._values, self._keys, self._lines),
            tuple(self._problems),
        )

    def _count_chars(self, n: int, at: int) -> None:
        self._chars += n
        if self._chars > MAX_EXPANDED_CHARS:
            raise _LimitExceeded(
                f"document expands to more than {MAX_EXPANDED_CHARS // (1024 * 1024)} MiB "
                "of text (an alias repeating a large value?)",
                at,
            )

    def _count(self, n: int, at: int) -> None:
        self._nodes += n
        if self._nodes > MAX_NODES:
            raise _LimitExceeded(
                f"document expands to more than {MAX_NODES} values (alias expansion?)", at
            )

    def _child_loc(self, stack: list[_Frame], at: int) -> Loc:
        """The location of the value about to be added to the top frame."""
        if not stack:
            self._values.setdefault((), at)
            return ()
        top = stack[-1]
        if type(top.container) is list:
            loc = (*top.loc, len(top.container))
        else:
            if not top.has_key:
                raise _LimitExceeded("a mapping key must be a plain value, not a collection", at)
            key = top.key
            loc = (*top.loc, key if isinstance(key, str | int) else str(key))
            if top.key_at is not None:
                self._keys.setdefault(loc, top.key_at)
        self._values.setdefault(loc, at)
        return loc

    def _attach(
        self, stack: list[_Frame], value: Any, at: int, root: Any, *, merge_ok: bool
    ) -> Any:
        if not stack:
            return value
        top = stack[-1]
        container = top.container
        if isinstance(container, list):
            container.append(value)
            return root
        key = top.key
        top.has_key = False
        if key == _MERGE_TAG and merge_ok:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(i, dict) for i in items):
                raise _LimitExceeded("'<<' merges only mappings", at)
            top.merges.extend(items)
            return root
        if not isinstance(key, str | int | float | bool) and key is not None:
            raise _LimitExceeded("mapping keys must be scalars", at)
        if key in container:
            loc = (*top.loc, key if isinstance(key, str | int) else str(key))
            where = top.key_at if top.key_at is not None else self._keys.get(loc, at)
            self._problems.append(
                Diagnostic(
                    E_DUPLICATE_KEY,
                    f"duplicate key {key!r} (an earlier value would be silently replaced)",
                    self._source,
                    self._lines.position(where),
                )
            )
        container[key] = value
        return root

    def _scalar(self, event: Any, at: int) -> tuple[Any, bool]:
        plain = bool(event.implicit[0])
        cache_key = (event.tag, plain, event.value)
        found = self._resolved.get(cache_key)
        if found is None:
            found = self._resolve(event, plain, at)
            self._resolved[cache_key] = found
        return found

    def _resolve(self, event: Any, plain: bool, at: int) -> tuple[Any, bool]:
        """A scalar's value (immutable: one is shared by every scalar written alike)."""
        yaml = self._yaml
        tag = event.tag
        if tag is None or tag == "!":
            if plain:
                tag = self._loader.resolve(yaml.ScalarNode, event.value, (True, False))
            else:
                tag = "tag:yaml.org,2002:str"
        if tag == _MERGE_TAG:
            return None, True
        if tag not in _PLAIN_TAGS:
            if tag in {"tag:yaml.org,2002:timestamp"}:
                return event.value, False
            raise _LimitExceeded(f"unsupported YAML tag {tag}", at)
        if tag == _STR_TAG:
            # What SafeConstructor makes of a string, without a node and its dispatch:
            # most of a runbook's distinct scalars (step ids, commands) are strings.
            return event.value, False
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        try:
            return self._constructor.construct_object(node), False
        except (ValueError, KeyError, TypeError, OverflowError):
            # ``!!int x``, ``!!bool maybe``, or an integer past Python's digit limit.
            text = event.value if len(event.value) <= 40 else event.value[:37] + "..."
            kind = tag.rsplit(":", 1)[-1]
            raise _LimitExceeded(
                f"YAML: {text!r} is not a valid {kind}"
                + (" (too many digits)" if kind == "int" and len(event.value) > 4000 else ""),
                at,
                E_YAML,
            ) from None

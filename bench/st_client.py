"""A Streamlit session without a browser: the websocket protocol the frontend speaks, in Python.

    client = StClient("http://127.0.0.1:8501")
    await client.connect()                      # health check, websocket, the first script run
    await client.wait_until(lambda: client.widget("lab_start") is not None, timeout=60)
    await client.set_value("lab_p", 0.25)       # slider / radio / checkbox / text / number
    await client.click("lab_compare")           # a button: one trigger value, like a click
    ...
    await client.close()

What it does the way Streamlit's own frontend (``static/js/index.*.js``, 1.6x) does it, checked
against the messages a real Chromium session exchanges with the same server:

- Connects to ``ws://HOST/_stcore/stream`` with the subprotocols ``["streamlit", token]`` (the
  token is the XSRF cookie, or ``PLACEHOLDER_AUTH_TOKEN`` without one, as here) and an Origin
  header; no client pings (the browser sends none; the server's pings are answered by the
  websocket layer). Before that it GETs ``/_stcore/health`` and ``/_stcore/host-config``.
- Every ``rerun_script`` BackMsg carries the full widget state of the page (each mounted value
  widget's current value, and a button's ``trigger_value`` only in the request of its click),
  the query string, the current page's script hash (from the ``navigation`` message), the ids of
  the messages it caches, and the browser's context info. The first one carries no page hash
  and the URL path as ``page_name`` ("" for the app's root).
- A widget inside a fragment reruns only that fragment (``fragment_id`` of its delta).
- ``auto_rerun`` (a fragment with ``run_every``) starts a ``setInterval``-like timer that sends
  ``rerun_script`` with that ``fragment_id`` and ``is_auto_rerun`` every interval, whether or
  not the previous one is done; ``stop_auto_rerun`` stops it, and every full-app run's
  ``new_session`` clears all of them (the script re-announces the ones it still wants).
- The ForwardMsg cache: messages the server marks ``cacheable`` are kept by hash and listed in
  each rerun request; the server then sends a ``ref_hash`` instead of the element, which is
  resolved here. An entry ages by one per finished script run (only runs of its own fragment,
  for a fragment run) and is dropped past ``max_cached_message_age`` (from ``new_session``).
- The element tree: deltas go to ``metadata.delta_path``; when a run finishes, nodes it did not
  write are dropped (for a fragment run, only that fragment's nodes); widget states of widgets
  no longer on the page are dropped too.

Fragment tick latency: each auto-rerun request is timed from the moment it is sent to the
``script_finished`` of the first run that serves it: a run of that fragment (or a full run)
whose ``new_session`` arrived after the request was sent. Requests sent while a run is in
progress coalesce into the next run (the server merges queued fragment reruns), so each of them
is timed to that next run's end. Runs cut short by a newer request (``FINISHED_EARLY_FOR_RERUN``)
serve nothing. One race is left: a run the server started just before the request arrived,
whose ``new_session`` was still on its way, claims the request although the run after it
serves it (an underestimate by one run). Such a case leaves that later run claiming nothing;
``stats.orphan_runs`` counts fragment runs that served no request, so the race can be seen.

Not emulated: JavaScript (custom components get no state until they set one, as a browser's
that nobody touched), cookies set by scripts (pass ``cookies=`` to send some with the
handshake, e.g. to reopen a page as the same visitor; ``query_string`` likewise follows
``page_info_changed``), reconnection after a dropped socket. ``run_log`` keeps each run's
start and finish as received, for timelines.

Reusable on its own: nothing here knows about the Dropout Lab.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Block_pb2 import Block
from streamlit.proto.ClientState_pb2 import ClientState
from streamlit.proto.Element_pb2 import Element
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState

log = logging.getLogger(__name__)

STREAM_PATH = "_stcore/stream"
FINISHED = ForwardMsg.ScriptFinishedStatus
# Script-run outcomes after which the frontend drops stale elements / serves queued requests.
_CLEARS_STALE = (FINISHED.FINISHED_SUCCESSFULLY, FINISHED.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)
_SERVES_REQUESTS = (*_CLEARS_STALE, FINISHED.FINISHED_WITH_COMPILE_ERROR)
_WIDGET_ID = re.compile(r"^\$\$ID-[0-9a-f]+-(.*)$")
_TEXT_FIELD = {"markdown": "body", "text": "body", "heading": "body", "alert": "body"}
_TYPED_ARRAY_BYTES = {"f8": 8, "f4": 4, "i1": 1, "u1": 1, "i2": 2, "u2": 2, "i4": 4, "u4": 4}


class ProtocolError(RuntimeError):
    """The server sent something the frontend could not have handled either (e.g. a cache miss)."""


# ---------------------------------------------------------------------------- page model
@dataclass
class Node:
    """One element or block of the page, where the last delta for its path put it."""

    path: tuple[int, ...]
    element: Element | None
    block: Block | None
    run_id: str
    fragment_id: str
    received: float  # time.monotonic() of the delta

    @property
    def kind(self) -> str:
        """``"button"``, ``"markdown"``, ``"plotly_chart"``, ... or ``"block:<type>"``."""
        if self.element is not None:
            return self.element.WhichOneof("type") or ""
        return f"block:{self.block.WhichOneof('type') if self.block is not None else ''}"

    @property
    def proto(self) -> Any:
        """The typed element message (``Slider``, ``Markdown``, ...), or the ``Block``."""
        if self.element is None:
            return self.block
        return getattr(self.element, self.kind)

    @property
    def widget_id(self) -> str:
        proto = self.proto
        return getattr(proto, "id", "") if self.element is not None else ""

    @property
    def key(self) -> str | None:
        """The user key a widget (or a keyed chart) was given in Python, e.g. ``"lab_p"``."""
        match = _WIDGET_ID.match(self.widget_id)
        return match.group(1) if match else None

    @property
    def label(self) -> str:
        return getattr(self.proto, "label", "") if self.element is not None else ""

    @property
    def text(self) -> str:
        """What the element shows as text: a markdown/text/heading/alert body, a progress bar's
        text, an exception's type and message, a widget's label; "" for the rest."""
        if self.element is None:
            return ""
        kind, proto = self.kind, self.proto
        if kind in _TEXT_FIELD:
            return getattr(proto, _TEXT_FIELD[kind])
        if kind == "progress":
            return proto.text
        if kind == "exception":
            return f"{proto.type}: {proto.message}"
        return getattr(proto, "label", "")

    def plotly_figure(self) -> dict[str, Any]:
        """The Plotly figure (``{"data": [...], "layout": {...}}``) of a ``plotly_chart``."""
        if self.kind != "plotly_chart" or not self.proto.spec:
            return {}
        return json.loads(self.proto.spec)

    def plotly_points(self) -> list[int]:
        """Number of points of each trace of a ``plotly_chart`` (0 for an empty trace)."""
        return [trace_length(trace) for trace in self.plotly_figure().get("data", [])]


def trace_length(trace: dict[str, Any]) -> int:
    """Points in one Plotly trace: its ``y`` (else ``x``), a list or a typed array."""
    values = trace.get("y", trace.get("x"))
    if values is None:
        return 0
    if isinstance(values, dict):  # plotly.py >= 6 sends numpy data as {"dtype", "bdata"}
        if "shape" in values:
            shape = str(values["shape"]).split(",")
            return int(shape[0]) if shape[0].strip() else 0
        size = _TYPED_ARRAY_BYTES.get(str(values.get("dtype")), 8)
        return len(base64.b64decode(values.get("bdata", ""))) // size
    return len(values)


class Page:
    """The element tree of the page as the frontend holds it, keyed by delta path."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, ...], Node] = {}

    def apply(self, msg: ForwardMsg, run_id: str, now: float) -> Node | None:
        delta = msg.delta
        path = tuple(msg.metadata.delta_path)
        kind = delta.WhichOneof("type")
        if kind == "new_element":
            self._drop_below(path)
            node = Node(path, delta.new_element, None, run_id, delta.fragment_id, now)
        elif kind == "add_block":
            old = self.nodes.get(path)
            same = (
                old is not None
                and old.block is not None
                and old.block.WhichOneof("type") == delta.add_block.WhichOneof("type")
            )
            if not same:
                self._drop_below(path)
            node = Node(path, None, delta.add_block, run_id, delta.fragment_id, now)
        else:  # new_transient (toasts, spinners): not part of the page's content
            return None
        self.nodes[path] = node
        return node

    def _drop_below(self, path: tuple[int, ...]) -> None:
        n = len(path)
        for other in [p for p in self.nodes if len(p) > n and p[:n] == path]:
            del self.nodes[other]

    def clear_stale(self, run_id: str, fragment_ids: Iterable[str]) -> None:
        """Drop what a finished run did not write (only its fragments' nodes for a fragment run)."""
        fragments = set(fragment_ids)
        stale = [
            path
            for path, node in self.nodes.items()
            if node.run_id != run_id and (not fragments or node.fragment_id in fragments)
        ]
        for path in stale:
            self.nodes.pop(path, None)
            self._drop_below(path)

    def clear(self) -> None:
        self.nodes.clear()

    def __iter__(self) -> Iterator[Node]:
        """Nodes in document order."""
        for path in sorted(self.nodes):
            yield self.nodes[path]

    def below(self, path: tuple[int, ...]) -> Iterator[Node]:
        n = len(path)
        for node in self:
            if len(node.path) > n and node.path[:n] == path:
                yield node

    def find(
        self,
        key: str | None = None,
        *,
        label: str | None = None,
        kind: str | None = None,
        text: str | re.Pattern[str] | None = None,
    ) -> list[Node]:
        """Elements matching every given criterion, in document order."""
        found = []
        for node in self:
            if node.element is None:
                continue
            if key is not None and node.key != key:
                continue
            if label is not None and node.label != label:
                continue
            if kind is not None and node.kind != kind:
                continue
            if text is not None:
                body = node.text
                hit = text.search(body) if isinstance(text, re.Pattern) else text == body
                if not hit:
                    continue
            found.append(node)
        return found


# ---------------------------------------------------------------------------- client
@dataclass
class Tick:
    """One auto-rerun request of a fragment and the run that served it."""

    fragment_id: str
    sent: float  # time.monotonic()
    latency: float | None = None  # seconds to script_finished; None while unanswered
    served_by: str = ""  # "fragment" or "full"


@dataclass
class _Cached:
    encoded: bytes
    run_count: int
    fragment_id: str


@dataclass
class _Run:
    run_id: str
    fragment_ids: tuple[str, ...]
    started: float


@dataclass
class Stats:
    messages: int = 0
    bytes: int = 0
    ref_hits: int = 0
    runs_finished: int = 0
    full_runs_finished: int = 0  # runs of the whole page (not of one fragment)
    reruns_sent: int = 0
    auto_reruns_sent: int = 0
    orphan_runs: int = 0  # fragment runs that served no pending auto-rerun request
    statuses: dict[str, int] = field(default_factory=dict)


class StClient:
    """One browser session of a Streamlit app, driven from asyncio.

    ``listeners`` are called as ``fn(client, msg, node)`` after each ForwardMsg is applied
    (``node`` is the element/block a delta wrote, else None); keep them cheap.
    """

    def __init__(
        self,
        base_url: str,
        *,
        path: str = "",
        query_string: str = "",
        name: str = "",
        cookies: dict[str, str] | None = None,
        open_timeout: float = 30.0,
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"loopback servers only, got {base_url!r}")
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        self.path = path.strip("/")
        self.query_string = query_string
        self.name = name
        self.cookies = dict(cookies or {})  # sent with the websocket handshake, as a browser's
        self.open_timeout = open_timeout
        self.page = Page()
        self.widget_states: dict[str, WidgetState] = {}
        self.ticks: list[Tick] = []
        self.stats = Stats()
        self.listeners: list[Callable[[StClient, ForwardMsg, Node | None], None]] = []
        self.session_id = ""
        self.page_script_hash = ""  # current page (from `navigation`); "" before the first run
        self.main_script_hash = ""
        self.script_running = False
        self.closed = False
        self.close_reason = ""
        self.last_finish: tuple[str, int] | None = None  # (run id, status) of the last run
        # (time.monotonic(), "start"|"finish", run id, fragment ids, status name or "")
        self.run_log: list[tuple[float, str, str, tuple[str, ...], str]] = []
        self._ws: Any = None
        self._reader: asyncio.Task | None = None
        self._timers: dict[str, tuple[float, asyncio.Task]] = {}
        self._cache: dict[str, _Cached] = {}
        self._cache_runs = 0
        self._max_cache_age = 2
        self._received_new_session = False
        self._run: _Run | None = None
        self._pending: list[Tick] = []
        self._changed = asyncio.Event()
        self._send_lock = asyncio.Lock()

    # ------------------------------------------------------------------------ connection
    @property
    def url(self) -> str:
        query = f"?{self.query_string}" if self.query_string else ""
        return f"{self.base_url}/{self.path}{query}"

    async def connect(self) -> None:
        """Check the server like the browser, open the websocket, request the first run."""
        await asyncio.to_thread(self._http_checks)
        ws_url = self.base_url.replace("http", "ws", 1) + "/" + STREAM_PATH
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        self._ws = await websockets.connect(
            ws_url,
            additional_headers={"Cookie": cookie} if cookie else None,
            subprotocols=["streamlit", "PLACEHOLDER_AUTH_TOKEN"],
            origin=self.base_url,
            ping_interval=None,  # browsers do not ping; the server's pings get pongs anyway
            max_size=256 * 2**20,
            open_timeout=self.open_timeout,
        )
        self._reader = asyncio.create_task(self._read(), name=f"st-read-{self.name}")
        await self.rerun(first=True)

    def _http_checks(self) -> None:
        for endpoint in ("_stcore/health", "_stcore/host-config"):
            with urllib.request.urlopen(f"{self.base_url}/{endpoint}", timeout=30) as resp:
                resp.read()

    async def close(self) -> None:
        """Close the page: timers stop, the websocket closes (the server sees the tab go)."""
        for _, task in self._timers.values():
            task.cancel()
        self._timers.clear()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 10)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        self._mark_closed("closed by the client")

    def _mark_closed(self, reason: str) -> None:
        if not self.closed:
            self.closed, self.close_reason = True, reason
        self._notify()

    async def __aenter__(self) -> StClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------ sending
    async def rerun(
        self,
        *,
        fragment_id: str = "",
        is_auto_rerun: bool = False,
        triggers: Iterable[WidgetState] = (),
        first: bool = False,
    ) -> None:
        """Send ``rerun_script`` with the full widget state (plus one-shot ``triggers``)."""
        state = ClientState(
            query_string=self.query_string,
            page_script_hash="" if first else self.page_script_hash,
            page_name=self.path if first else "",
            fragment_id=fragment_id,
            is_auto_rerun=is_auto_rerun,
        )
        if not first:
            widgets = {w.id: w for w in self.widget_states.values()}
            widgets.update({t.id: t for t in triggers})
            state.widget_states.widgets.extend(widgets.values())
        state.cached_message_hashes.extend(self._cache)
        info = state.context_info
        info.timezone, info.timezone_offset, info.locale = "UTC", 0, "en-US"
        info.url, info.is_embedded, info.color_scheme = self.url, False, "light"
        msg = BackMsg()
        msg.rerun_script.CopyFrom(state)
        await self._send(msg)
        self._received_new_session = False
        self.stats.reruns_sent += 1

    async def _send(self, msg: BackMsg) -> None:
        if self.closed or self._ws is None:
            raise ConnectionError(f"session {self.name!r} is closed: {self.close_reason}")
        async with self._send_lock:
            await self._ws.send(msg.SerializeToString())

    # ------------------------------------------------------------------------ widgets
    def widget(self, key: str | None = None, *, label: str | None = None) -> Node | None:
        """The first widget with this user key (or label), else None."""
        nodes = self.page.find(key, label=label)
        return nodes[0] if nodes else None

    def _require(self, key: str | None, label: str | None) -> Node:
        node = self.widget(key, label=label)
        if node is None:
            raise LookupError(f"no widget key={key!r} label={label!r} on the page")
        return node

    async def click(self, key: str | None = None, *, label: str | None = None) -> Node:
        """Press a button (``st.button``, a form's submit, ...): one trigger value."""
        node = self._require(key, label)
        trigger = WidgetState(id=node.widget_id, trigger_value=True)
        await self.rerun(fragment_id=node.fragment_id, triggers=[trigger])
        return node

    async def set_value(
        self, key: str | None = None, value: Any = None, *, label: str | None = None
    ):
        """Change a value widget as a person would, which reruns the script (or its fragment).

        slider: a number (or a list for a range slider); radio/selectbox: the option's label;
        checkbox/toggle: a bool; text_input/text_area: a string; number_input: a number.
        """
        node = self._require(key, label)
        state = WidgetState(id=node.widget_id)
        kind = node.kind
        if kind == "slider":
            values = value if isinstance(value, list | tuple) else [value]
            state.double_array_value.data.extend(float(v) for v in values)
        elif kind in ("radio", "selectbox"):
            if str(value) not in list(node.proto.options):
                raise ValueError(f"{value!r} is not an option of {node.key or node.label!r}")
            state.string_value = str(value)
        elif kind == "checkbox":
            state.bool_value = bool(value)
        elif kind in ("text_input", "text_area"):
            state.string_value = str(value)
        elif kind == "number_input":  # ints too: the server reads double_value
            state.double_value = float(value)
        else:
            raise TypeError(f"setting a {kind} is not supported")
        self.widget_states[state.id] = state
        await self.rerun(fragment_id=node.fragment_id)
        return node

    def _mount_widget(self, node: Node) -> None:
        """The value a widget reports on mount (or when Python sets it), like the frontend."""
        proto, kind = node.proto, node.kind
        wid = getattr(proto, "id", "")
        if not wid:
            return
        forced = getattr(proto, "set_value", False)
        if wid in self.widget_states and not forced:
            return
        state = WidgetState(id=wid)
        if kind == "slider":
            state.double_array_value.data.extend(proto.value if forced else proto.default)
        elif kind in ("radio", "selectbox"):
            if forced and proto.HasField("raw_value"):
                state.string_value = proto.raw_value
            elif proto.HasField("default") and proto.options:
                state.string_value = proto.options[proto.default]
            else:
                return
        elif kind == "checkbox":
            state.bool_value = proto.value if forced else proto.default
        elif kind in ("text_input", "text_area"):
            if forced and proto.HasField("value"):
                state.string_value = proto.value
            elif proto.HasField("default"):
                state.string_value = proto.default
            else:
                return
        elif kind == "number_input":
            if forced and proto.HasField("value"):
                state.double_value = proto.value
            elif proto.HasField("default"):
                state.double_value = proto.default
            else:
                return
        else:  # buttons (trigger only), charts, custom components: no state until used
            return
        self.widget_states[wid] = state

    # ------------------------------------------------------------------------ waiting
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], Any], timeout: float) -> bool:
        """Wait until ``predicate()`` is true, re-checked after every message; False on timeout
        or when the connection closes first."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)

    async def wait_page_run(self, after: int, timeout: float) -> bool:
        """Wait until more than ``after`` full-page runs have finished
        (``stats.full_runs_finished``): e.g. the run a main-body widget change asked for."""
        return await self.wait_until(lambda: self.stats.full_runs_finished > after, timeout)

    @property
    def auto_rerun_fragments(self) -> dict[str, float]:
        """Fragments whose auto-rerun timer is running: id -> interval in seconds."""
        return {fid: interval for fid, (interval, _) in self._timers.items()}

    # ------------------------------------------------------------------------ receiving
    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                if isinstance(raw, str):
                    raise ProtocolError("text frame from the server")
                self._handle(raw)
            self._mark_closed("closed by the server")
        except websockets.ConnectionClosed as exc:
            self._mark_closed(f"connection closed: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a protocol surprise: keep it, end this session
            log.exception("session %s: reader failed", self.name)
            self._mark_closed(f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self._ws.close()

    def _handle(self, raw: bytes) -> None:
        now = time.monotonic()
        msg = ForwardMsg()
        msg.ParseFromString(raw)
        self.stats.messages += 1
        self.stats.bytes += len(raw)
        msg = self._through_cache(msg, raw)
        kind = msg.WhichOneof("type")
        node = None
        if kind == "delta":
            node = self.page.apply(msg, msg.metadata.run.script_run_id or self._run_id(), now)
            if node is not None and node.element is not None:
                self._mount_widget(node)
        elif kind == "new_session":
            self._on_new_session(msg, now)
        elif kind == "script_finished":
            self._on_script_finished(msg, now)
        elif kind == "session_status_changed":
            self.script_running = msg.session_status_changed.script_is_running
        elif kind == "auto_rerun":
            self._start_timer(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                self._stop_timer(fid)
        elif kind == "navigation":
            if msg.navigation.page_script_hash:
                self.page_script_hash = msg.navigation.page_script_hash
        elif kind == "page_info_changed":
            self.query_string = msg.page_info_changed.query_string
        for listener in self.listeners:
            listener(self, msg, node)
        self._notify()

    def _run_id(self) -> str:
        return self._run.run_id if self._run else ""

    def _through_cache(self, msg: ForwardMsg, raw: bytes) -> ForwardMsg:
        """Keep cacheable messages; resolve a ``ref_hash`` to the message it names."""
        if msg.WhichOneof("type") == "ref_hash":
            cached = self._cache.get(msg.ref_hash)
            if cached is None:
                raise ProtocolError(f"cached ForwardMsg miss for hash {msg.ref_hash}")
            cached.run_count = self._cache_runs
            full = ForwardMsg()
            full.ParseFromString(cached.encoded)
            full.metadata.CopyFrom(msg.metadata)
            self.stats.ref_hits += 1
            return full
        if msg.metadata.cacheable and msg.hash:
            cached = self._cache.get(msg.hash)
            if cached is None:
                fragment = msg.delta.fragment_id if msg.WhichOneof("type") == "delta" else ""
                self._cache[msg.hash] = _Cached(raw, self._cache_runs, fragment)
            else:
                cached.run_count = self._cache_runs
        return msg

    def _age_cache(self, fragment_ids: tuple[str, ...]) -> None:
        self._cache_runs += 1
        for key, cached in list(self._cache.items()):
            if fragment_ids and cached.fragment_id not in fragment_ids:
                continue
            if self._cache_runs - cached.run_count > self._max_cache_age:
                del self._cache[key]

    def _on_new_session(self, msg: ForwardMsg, now: float) -> None:
        new = msg.new_session
        self._received_new_session = True
        if new.HasField("initialize") and new.initialize.session_id:
            self.session_id = new.initialize.session_id
        self._max_cache_age = new.config.max_cached_message_age or self._max_cache_age
        self.main_script_hash = new.main_script_hash or self.main_script_hash
        if new.page_script_hash and new.page_script_hash != self.main_script_hash:
            self.page_script_hash = new.page_script_hash
        run = msg.metadata.run
        self._run = _Run(run.script_run_id, tuple(run.fragment_ids), now)
        self.run_log.append((now, "start", run.script_run_id, tuple(run.fragment_ids), ""))
        if not run.fragment_ids:  # a full-app run: the frontend drops every auto-rerun timer
            for fid in list(self._timers):
                self._stop_timer(fid)

    def _on_script_finished(self, msg: ForwardMsg, now: float) -> None:
        status = msg.script_finished
        run = msg.metadata.run
        run_id = run.script_run_id or self._run_id()
        fragment_ids = tuple(run.fragment_ids)
        self.last_finish = (run_id, status)
        self.stats.runs_finished += 1
        if not fragment_ids and status != FINISHED.FINISHED_EARLY_FOR_RERUN:
            self.stats.full_runs_finished += 1
        name = FINISHED.Name(status)
        self.run_log.append((now, "finish", run_id, fragment_ids, name))
        self.stats.statuses[name] = self.stats.statuses.get(name, 0) + 1
        if status in _CLEARS_STALE:
            self.page.clear_stale(run_id, fragment_ids)
            active = {node.widget_id for node in self.page if node.element is not None}
            for wid in [w for w in self.widget_states if w not in active]:
                del self.widget_states[wid]
        if status != FINISHED.FINISHED_EARLY_FOR_RERUN and self._received_new_session:
            self._age_cache(fragment_ids)
        if status in _SERVES_REQUESTS and self._run is not None and self._run.run_id == run_id:
            started = self._run.started
            served_by = "fragment" if fragment_ids else "full"
            still = []
            for tick in self._pending:
                if tick.sent < started and (not fragment_ids or tick.fragment_id in fragment_ids):
                    tick.latency, tick.served_by = now - tick.sent, served_by
                else:
                    still.append(tick)
            if fragment_ids and len(still) == len(self._pending):
                self.stats.orphan_runs += 1
            self._pending = still

    # ------------------------------------------------------------------------ timers
    def _start_timer(self, fragment_id: str, interval: float) -> None:
        if not fragment_id:
            return
        current = self._timers.get(fragment_id)
        if current is not None and current[0] == interval:
            return
        self._stop_timer(fragment_id)
        task = asyncio.get_running_loop().create_task(
            self._tick_loop(fragment_id, interval), name=f"st-tick-{self.name}"
        )
        self._timers[fragment_id] = (interval, task)

    def _stop_timer(self, fragment_id: str) -> None:
        entry = self._timers.pop(fragment_id, None)
        if entry is not None:
            entry[1].cancel()

    async def _tick_loop(self, fragment_id: str, interval: float) -> None:
        """``setInterval``: fire every ``interval`` s from now, late ticks are not stacked."""
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while not self.closed:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = max(due + interval, loop.time() + interval / 2)
            try:
                await self.rerun(fragment_id=fragment_id, is_auto_rerun=True)
            except (ConnectionError, websockets.ConnectionClosed):
                return
            # Stamped once sent: a run whose new_session was handled meanwhile cannot claim it.
            tick = Tick(fragment_id, time.monotonic())
            self.ticks.append(tick)
            self._pending.append(tick)
            self.stats.auto_reruns_sent += 1

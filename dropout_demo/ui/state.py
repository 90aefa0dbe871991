"""Process-wide services and the browser's identity, shared by every view.

A visitor's identity (the owner of their runs) lives in a cookie, so a reload or reopening the
link keeps their runs; a shared link carries no identity. Each Streamlit session of that owner
holds a lease: the owner's runs stop only after its last session has closed and a grace period
has passed.
"""

from __future__ import annotations

import os
import re
import uuid

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from ..jobs import JobManager, get_manager
from ..runs import RunStore

_OWNER_KEY = "dropout_lab_owner"
_COOKIE_SET_KEY = "dropout_lab_cookie_set"
_LEASED_KEY = "dropout_lab_leased"
COOKIE = "dropout_lab_id"
COOKIE_DAYS = 30
TRUST_PROXY_ENV = "DROPOUT_DEMO_TRUST_PROXY"  # "1": take the client address from X-Forwarded-For
_OWNER_ID = re.compile(r"[0-9a-f]{32}")

_COOKIE_JS = """
export default function ({ data }) {
  if (!data || !data.name || !data.value) return;
  const secure = window.location.protocol === "https:" ? "; Secure" : "";
  const attributes = `Max-Age=${data.maxAge}; Path=/; SameSite=Lax${secure}`;
  document.cookie = `${data.name}=${data.value}; ${attributes}`;
}
"""
_cookie_writer = st.components.v2.component("dropout_demo.identity_cookie", js=_COOKIE_JS)


@st.cache_resource(show_spinner=False)
def _manager() -> JobManager:
    return get_manager()


def manager() -> JobManager:
    """The one job manager of this server process, shared by every browser session.

    When it cannot be made (``DROPOUT_DEMO_RAY`` names a cluster that cannot be reached, or
    Ray is not installed), the page says so and stops: a host's message, not a traceback.
    """
    try:
        return _manager()
    except Exception as exc:
        st.error(f"Training is not available on this server: {exc}", icon=":material/error:")
        st.stop()
        raise  # not reached: st.stop() ends the script run


@st.cache_resource(show_spinner=False)
def store() -> RunStore:
    return RunStore()


def _release_owner(lease: tuple[str, str]) -> None:
    # Called by Streamlit when the session's cache entry is dropped (the browser went away).
    # The manager waits out a grace period, so an owner that reconnects keeps its runs.
    owner, session = lease
    manager().release(owner, session)


@st.cache_resource(scope="session", on_release=_release_owner, show_spinner=False)
def _session_lease(owner: str, session: str) -> tuple[str, str]:
    return owner, session


def _streamlit_session() -> str:
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def _cookie_owner() -> str | None:
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # no browser request behind this run (e.g. a test harness)
        return None
    return value if isinstance(value, str) and _OWNER_ID.fullmatch(value) else None


def session_id() -> str:
    """This visitor's owner id (from the cookie, or new); call it at page level, not in a
    fragment: the first page run of a new visitor writes the cookie."""
    owner = st.session_state.get(_OWNER_KEY)
    if owner is None:
        owner = _cookie_owner() or uuid.uuid4().hex
        st.session_state[_OWNER_KEY] = owner
    write = not st.session_state.get(_COOKIE_SET_KEY) and _cookie_owner() != owner
    # On the page in every run, with nothing to write after the first: were it there in the
    # first run only, everything after it would move up once the visitor first touched the page
    # (a Draw canvas would be remounted, the first stroke wiped off it).
    _cookie_writer(
        key="dropout_lab_identity",
        data={"name": COOKIE, "value": owner, "maxAge": COOKIE_DAYS * 86_400} if write else None,
    )
    if write:
        st.session_state[_COOKIE_SET_KEY] = True
    touch(owner)
    return owner


def touch(owner: str) -> None:
    """This session is alive (the live panel calls it every tick): keep the owner's lease."""
    session = _streamlit_session()
    if st.session_state.get(_LEASED_KEY) != (owner, session):
        _session_lease(owner, session)  # once per session: its release comes when it closes
        st.session_state[_LEASED_KEY] = (owner, session)
    manager().touch(owner, session)


def client_address() -> str | None:
    """The visitor's network address, for per-client limits (a proxy's header when trusted)."""
    try:
        if os.environ.get(TRUST_PROXY_ENV) == "1":
            forwarded = st.context.headers.get("X-Forwarded-For")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return st.context.ip_address
    except Exception:
        return None

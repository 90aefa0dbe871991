"""Process-wide services and the browser session's identity, shared by every view."""

from __future__ import annotations

import uuid

import streamlit as st

from ..jobs import JobManager, get_manager
from ..runs import RunStore

_OWNER_KEY = "dropout_lab_owner"


@st.cache_resource(show_spinner=False)
def manager() -> JobManager:
    """The one job manager of this server process, shared by every browser session."""
    return get_manager()


@st.cache_resource(show_spinner=False)
def store() -> RunStore:
    return RunStore()


def _release_owner(owner: str) -> None:
    # Called by Streamlit when the session's cache entry is dropped (the browser went away).
    # The manager waits out a grace period, so a session that reconnects keeps its runs.
    manager().release(owner)


@st.cache_resource(scope="session", on_release=_release_owner, show_spinner=False)
def _session_lease(owner: str) -> str:
    return owner


def session_id() -> str:
    """This browser session's owner id; runs belong to it and only it sees them."""
    owner = st.session_state.get(_OWNER_KEY)
    if owner is None:
        owner = st.session_state[_OWNER_KEY] = uuid.uuid4().hex
    _session_lease(owner)
    manager().touch(owner)
    return owner

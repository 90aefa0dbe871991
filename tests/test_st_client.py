"""bench/st_client.py against a real `streamlit run` of a throwaway app: a click reruns the
script, the fragment's run_every timer reruns the fragment, cached messages come back as
references. Waits are bounded and generous; nothing here asserts on a duration."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.st_client import StClient  # noqa: E402

APP = """
import streamlit as st

st.session_state.setdefault("clicks", 0)
if st.button("Press me", key="press"):
    st.session_state.clicks += 1
st.text(f"clicks: {st.session_state.clicks}")
level = st.slider("Level", 0, 10, 3, key="level")
st.text(f"level: {level}")

@st.fragment(run_every=0.5)
def ticker():
    st.session_state.ticks = st.session_state.get("ticks", 0) + 1
    st.markdown(f"tick {st.session_state.ticks}")
    st.markdown("x" * 20_000)  # over minCachedMessageSize: resent as a cache reference

ticker()
"""
WAIT = 60.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(app_dir: Path) -> Iterator[str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]
    log = (app_dir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=app_dir, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"streamlit exited: {(app_dir / 'server.log').read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp,
            ):
                if resp.status == 200:
                    break
            assert time.monotonic() < deadline, "streamlit did not become healthy"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


def texts(client: StClient, pattern: str) -> list[str]:
    return [n.text for n in client.page.find(text=re.compile(pattern))]


async def session(url: str) -> None:
    client = StClient(url, name="smoke")
    await client.connect()
    try:
        assert await client.wait_until(lambda: client.stats.runs_finished >= 1, WAIT)
        assert texts(client, r"^clicks: 0$")
        assert client.widget("press") is not None
        assert client.widget(label="Level").key == "level"

        await client.click("press")
        assert await client.wait_until(lambda: texts(client, r"^clicks: 1$"), WAIT)
        await client.set_value("level", 7)
        assert await client.wait_until(lambda: texts(client, r"^level: 7$"), WAIT)
        assert texts(client, r"^clicks: ")[0] == "clicks: 1"  # a slider is not a click

        def tick() -> int:
            found = texts(client, r"^tick \d+$")
            return int(found[0].split()[1]) if found else 0

        first = tick()
        assert first >= 1
        assert await client.wait_until(lambda: tick() >= first + 2, WAIT)
        assert client.auto_rerun_fragments  # the timer the script asked for is running
        assert await client.wait_until(lambda: client.stats.ref_hits >= 1, WAIT)
        assert await client.wait_until(lambda: any(t.latency for t in client.ticks), WAIT)
        served = [t for t in client.ticks if t.latency is not None]
        assert all(t.served_by in ("fragment", "full") for t in served)
        assert len(texts(client, r"^x+$")) == 1  # the referenced element is on the page once
        assert not client.closed, client.close_reason
    finally:
        await client.close()


def test_client_clicks_sets_and_follows_the_fragment_timer(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    with serve(tmp_path) as url:
        asyncio.run(asyncio.wait_for(session(url), 4 * WAIT))

"""Keep Plotly zoom and legend choices through live redraws.

``st.plotly_chart`` mounts a fresh plot whenever the figure changes, so Plotly's ``uirevision``
never sees the previous one and a user's zoom snaps back at every new epoch. This invisible
component listens to the zoom (``plotly_relayout``) and legend (``plotly_restyle``) events of
the keyed charts on the page and reports the view to Python, which re-applies it to the next
figure (:func:`dropout_demo.charts.apply_view`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

_JS = """
export default function ({ data, setStateValue }) {
  // One record per page: chart nodes outlive a component re-render, so their listeners read
  // the latest setter and views from here rather than from a stale closure.
  const lab = (window.__dropoutLabViews = window.__dropoutLabViews || { views: {} });
  lab.set = setStateValue;
  const keys = (data && data.keys) || [];
  const range = (ev, axis, current) => {
    if (ev[axis + ".autorange"]) return "auto"; // the whole curve, not the default view
    const a = ev[axis + ".range[0]"], b = ev[axis + ".range[1]"];
    if (a !== undefined && b !== undefined) return [a, b];
    if (Array.isArray(ev[axis + ".range"])) return ev[axis + ".range"];
    return current;
  };
  const bind = () => {
    for (const key of keys) {
      const gd = document.querySelector(".st-key-" + key + " .js-plotly-plot");
      if (!gd || gd.__dropoutLabView || typeof gd.on !== "function") continue;
      gd.__dropoutLabView = true;
      const report = (ev) => {
        const old = lab.views[key] || { x: null, y: null, hidden: [] };
        const next = {
          x: ev ? range(ev, "xaxis", old.x) : old.x,
          y: ev ? range(ev, "yaxis", old.y) : old.y,
          hidden: (gd.data || []).filter((t) => t.visible === "legendonly").map((t) => t.name),
        };
        if (JSON.stringify(next) === JSON.stringify(old)) return;
        lab.views = Object.assign({}, lab.views, { [key]: next });
        lab.set("views", lab.views);
      };
      gd.on("plotly_relayout", (ev) => report(ev || {}));
      gd.on("plotly_restyle", () => report(null));
    }
  };
  bind();
  const observer = new MutationObserver(bind);
  observer.observe(document.body, { childList: true, subtree: true });
  return () => observer.disconnect();
}
"""

_component = st.components.v2.component("dropout_demo.plot_view", js=_JS)


def plot_views(chart_keys: Sequence[str], key: str) -> dict[str, Any]:
    """Mount the listener for the charts with these ``st.plotly_chart`` keys; returns
    {chart key: {"x": range|"auto"|None, "y": range|"auto"|None, "hidden": [names]}}
    (None: the figure's default view; "auto": the whole curve, asked for by a double-click)."""
    result = _component(
        key=key,
        data={"keys": list(chart_keys)},
        default={"views": {}},
        on_views_change=lambda: None,
    )
    return dict(result.views or {})

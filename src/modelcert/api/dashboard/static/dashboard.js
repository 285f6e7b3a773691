// modelcert dashboard: live pages, live job progress (Server-Sent Events), trend charts,
// confirmations. No framework, no build step, nothing fetched from another host.
"use strict";

// The job's test log. The stream's events have ids: when the connection drops, the
// browser reconnects by itself with Last-Event-ID and the server goes on after it, so
// nothing is listed twice.
function followJob(progress) {
  const list = document.getElementById("live-events");
  const done = document.getElementById("tests-done");
  const total = document.getElementById("tests-total");
  const state = document.getElementById("live-state");
  const fill = progress.querySelector(".fill");
  const source = new EventSource(progress.dataset.events);
  source.onopen = () => { state.textContent = "live"; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "progress") {
      const waiting = document.getElementById("live-waiting");
      if (waiting) waiting.remove();
      const item = document.createElement("li");
      item.className = "outcome-" + String(event.status).toLowerCase();
      item.dataset.test = event.runId + "/" + event.testName;
      const error = event.errorCategory ? " — " + event.errorCategory : "";
      const latency = event.latencyMs != null ? " (" + Math.round(event.latencyMs) + " ms)" : "";
      item.textContent = event.deployment + " in " + event.region + ": " + event.title + " "
        + event.status + latency + error;
      list.appendChild(item);
      list.scrollTop = list.scrollHeight;
      // One unit, tests, for the bar and the counter (certifications are counted beside).
      fill.style.width = Math.min(100, (100 * event.current) / Math.max(event.total, 1)) + "%";
      done.textContent = event.current;
      total.textContent = event.total;
      state.textContent = "live";
    } else if (event.type === "complete" || event.type === "error") {
      source.close();
      state.textContent = event.type === "complete" ? "finished, loading results…" : event.message;
      // The finished job's page holds every result: show it.
      if (event.type === "complete") setTimeout(() => window.location.reload(), 500);
    }
  };
  source.onerror = () => { state.textContent = "reconnecting…"; };
}

// Pages with a live stamp fetch themselves again every few seconds while the tab is shown
// and swap in the parts marked data-live (same id); the stamp says how old they are. A
// page that is slow to build is asked for less often (never more than a fifth of the
// time busy), so that many open tabs on a big job cannot keep the server busy.
function refreshPage(stamp) {
  const every = Number(stamp.dataset.refresh) * 1000;
  const updated = document.getElementById("updated");
  let last = Date.now();
  let wait = every;
  let failed = false;
  let stopped = false;
  let busy = false;
  let timer = null;

  function age() {
    if (stopped) return;
    const seconds = Math.round((Date.now() - last) / 1000);
    const when = seconds < 2 ? "just now" : seconds + " s ago";
    updated.textContent = (failed ? "update failed; last updated " : "updated ") + when
      + (document.hidden ? " (paused while the tab is hidden)" : "");
  }

  async function fetchAgain() {
    timer = null;
    if (busy) return;
    busy = true;
    const started = Date.now();
    stamp.dataset.state = "fetching";
    try {
      const response = await fetch(window.location.href, {
        headers: { Accept: "text/html" }, credentials: "same-origin", redirect: "manual",
      });
      if (response.type === "opaqueredirect" || response.status === 303) {
        stopped = true;
        stamp.dataset.state = "stopped";
        updated.textContent = "logged out: reload the page to log in again";
        return;
      }
      if (!response.ok) throw new Error(String(response.status));
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const open = new Set([...document.querySelectorAll("details[open][id]")].map((d) => d.id));
      const closed = new Set([...document.querySelectorAll("details[id]:not([open])")].map((d) => d.id));
      for (const part of document.querySelectorAll("[data-live][id]")) {
        const next = fresh.getElementById(part.id);
        if (next) part.replaceWith(document.importNode(next, true));
      }
      // Keep what the reader opened or closed.
      for (const details of document.querySelectorAll("details[id]")) {
        if (open.has(details.id)) details.open = true;
        else if (closed.has(details.id)) details.open = false;
      }
      const progress = fresh.getElementById("progress");
      if (progress && progress.dataset.live === "false") {
        stopped = true;
        window.location.reload(); // the job finished: the whole page changes
        return;
      }
      last = Date.now();
      failed = false;
    } catch (e) {
      failed = true;
    } finally {
      busy = false;
    }
    wait = Math.max(every, 5 * (Date.now() - started));
    age();
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = null;
    if (!stopped && !document.hidden) timer = setTimeout(fetchAgain, wait);
    // What the refresh is doing, for whoever looks (the browser tests do).
    stamp.dataset.state = stopped ? "stopped" : document.hidden ? "paused" : "scheduled";
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && Date.now() - last >= every) {
      clearTimeout(timer);
      fetchAgain();
    } else {
      schedule();
    }
    age();
  });
  setInterval(age, 1000);
  schedule();
}

// The certification page's trend charts, drawn by uPlot (vendored: static/uplot.min.js)
// from the series the page carries (#trend-data, the same document as GET /api/trends).
// Without script the summary table and the verdict strip above them say the same.
function drawTrends(holder) {
  const trend = JSON.parse(holder.textContent);
  const half = trend.bucketSeconds / 2;
  const xs = trend.buckets.map((b) => Date.parse(b.start) / 1000 + half);
  const range = [Date.parse(trend.since) / 1000, Date.parse(trend.until) / 1000];
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  const ink = getComputedStyle(document.body).color;
  const axis = { stroke: ink, grid: { stroke: colour("--line"), width: 1 }, ticks: { stroke: colour("--line"), width: 1 } };
  const column = (key) => trend.buckets.map((b) => b[key]);
  const shown = (unit) => (u, v) => (v == null ? "—" : Math.round(v * 10) / 10 + unit);
  const line = (label, key, stroke, dashed, unit, scale) => ({
    label, stroke, width: 2, dash: dashed ? [6, 4] : undefined, spanGaps: true, scale,
    points: { show: true, size: 5, fill: stroke }, value: shown(unit), key,
  });
  const charts = [];
  function chart(id, series, yAxis, scales) {
    const box = document.getElementById(id);
    const data = [xs, ...series.map((s) => column(s.key))];
    if (!data.slice(1).some((values) => values.some((v) => v != null))) {
      const none = document.createElement("p");
      none.className = "none";
      none.textContent = box.dataset.empty;
      box.appendChild(none);
      box.dataset.drawn = "empty";
      return;
    }
    const options = {
      width: Math.max(box.clientWidth - 14, 200), height: 180, series: [{}, ...series],
      scales: { x: { time: true, range: () => range }, ...scales },
      axes: [axis, { ...axis, ...yAxis }], legend: { live: true },
    };
    charts.push([new uPlot(options, data, box), box]);
    box.dataset.drawn = "true";
  }
  chart("chart-latency", [
    line("latency p50", "latencyP50Ms", colour("--info"), false, " ms", "ms"),
    line("latency p95", "latencyP95Ms", colour("--info"), true, " ms", "ms"),
    line("TTFT p50", "ttftP50Ms", colour("--sim"), false, " ms", "ms"),
    line("TTFT p95", "ttftP95Ms", colour("--sim"), true, " ms", "ms"),
  ], { scale: "ms", size: 60 }, { ms: { range: (u, min, max) => [0, Math.max(max * 1.1, 1)] } });
  chart("chart-pass", [line("pass rate", "passRate", colour("--ok"), false, " %", "%")],
    { scale: "%", size: 44 }, { "%": { range: [0, 100] } });
  window.addEventListener("resize", () => {
    for (const [plot, box] of charts) plot.setSize({ width: Math.max(box.clientWidth - 14, 200), height: 180 });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const progress = document.getElementById("progress");
  if (progress && progress.dataset.live === "true" && window.EventSource) followJob(progress);
  const stamp = document.getElementById("live-stamp");
  if (stamp && window.fetch && window.DOMParser) refreshPage(stamp);
  const trend = document.getElementById("trend-data");
  if (trend && window.uPlot) drawTrends(trend);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  }
});

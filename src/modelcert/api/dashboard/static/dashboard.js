// modelcert dashboard: live job progress (Server-Sent Events) and confirmations.
// No framework, no build step, nothing fetched from another host.
"use strict";

function followJob(progress) {
  const list = document.getElementById("live-events");
  const text = document.getElementById("progress-text");
  const state = document.getElementById("live-state");
  const fill = progress.querySelector(".fill");
  const source = new EventSource(progress.dataset.events);
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "progress") {
      const waiting = document.getElementById("live-waiting");
      if (waiting) waiting.remove();
      const item = document.createElement("li");
      item.className = "outcome-" + String(event.status).toLowerCase();
      const error = event.errorCategory ? " — " + event.errorCategory : "";
      const latency = event.latencyMs != null ? " (" + Math.round(event.latencyMs) + " ms)" : "";
      item.textContent = event.deployment + " in " + event.region + ": " + event.title + " "
        + event.status + latency + error;
      list.appendChild(item);
      list.scrollTop = list.scrollHeight;
      fill.style.width = Math.min(100, (100 * event.current) / Math.max(event.total, 1)) + "%";
      text.textContent = event.current + "/" + event.total + " tests done";
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

document.addEventListener("DOMContentLoaded", () => {
  const progress = document.getElementById("progress");
  if (progress && progress.dataset.live === "true" && window.EventSource) followJob(progress);
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  }
});

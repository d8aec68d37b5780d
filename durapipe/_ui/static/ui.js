// durapipe ui: live updates of the page the server rendered. No framework, no build step.
"use strict";

// The runs list: its table is fetched again every 2 s (first page only).
function liveRuns(box) {
  if (box.dataset.live !== "1") return;
  const tick = async () => {
    try {
      const url = new URL(location.href);
      url.searchParams.set("partial", "1");
      const res = await fetch(url, { credentials: "same-origin" });
      if (res.ok) box.innerHTML = await res.text();
    } catch (e) { /* the server restarts: try again next tick */ }
  };
  setInterval(tick, 2000);
}

// A run page: its parts are fetched again while it is not finished; a part whose HTML did not
// change is left alone (so an answer being typed in a form stays).
function liveRun(box) {
  let live = box.dataset.live === "1";
  const tick = async () => {
    if (!live) return;
    try {
      const url = new URL(location.href);
      url.searchParams.delete("done");
      url.searchParams.set("partial", "1");
      url.searchParams.set("key", box.dataset.key);
      const res = await fetch(url, { credentials: "same-origin" });
      if (!res.ok) return;
      const doc = await res.json();
      live = doc.live;
      box.dataset.key = doc.key;
      if (doc.same) return;
      for (const [name, got] of Object.entries(doc.parts)) {
        const part = box.querySelector(`[data-part="${name}"]`);
        if (part && part.dataset.sig !== got.sig) {
          const active = document.activeElement;
          if (part.contains(active) && (active.tagName === "INPUT" || active.tagName === "TEXTAREA") && active.value) continue;
          part.innerHTML = got.html;  // rendered by the server with autoescape
          part.dataset.sig = got.sig;
        }
      }
    } catch (e) { /* try again next tick */ }
  };
  setInterval(tick, 1000);
}

// The log of the run tree, streamed (server-sent events). Text goes in as text, never as HTML.
function liveLog(log) {
  const state = document.getElementById("log-state");
  const source = new EventSource(log.dataset.src);
  const span = (cls, text) => {
    const s = document.createElement("span");
    if (cls) s.className = cls;
    s.textContent = text;
    return s;
  };
  source.onopen = () => { state.textContent = "live"; };
  source.onmessage = (ev) => {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const frag = document.createDocumentFragment();
    for (const l of JSON.parse(ev.data)) {
      const line = document.createElement("div");
      line.className = "line " + l.s;
      line.append(span("ts", l.t + " "), span("c" + l.c, l.h), span(l.s, l.l));
      frag.append(line);
    }
    log.append(frag);
    if (atEnd) log.scrollTop = log.scrollHeight;
  };
  source.addEventListener("end", () => { state.textContent = "ended"; source.close(); });
  source.onerror = () => { state.textContent = "reconnecting…"; };
}

// The counts by status under the filters: a scan of every run, so apart and every 10 s.
function liveCounts(box) {
  const tick = async () => {
    try {
      const res = await fetch(box.dataset.src, { credentials: "same-origin" });
      if (res.ok) box.innerHTML = await res.text();
    } catch (e) { /* try again next tick */ }
  };
  tick();
  setInterval(tick, 10000);
}

document.addEventListener("DOMContentLoaded", () => {
  const counts = document.getElementById("counts");
  if (counts) liveCounts(counts);
  const runs = document.getElementById("runs");
  if (runs) liveRuns(runs);
  const run = document.getElementById("run");
  if (run) liveRun(run);
  const log = document.getElementById("log");
  if (log) liveLog(log);
});

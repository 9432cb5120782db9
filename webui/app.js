// Tandem console: talks only to the REST API (/api/v1) with the admin token, which stays in
// this tab's sessionStorage. A "#token=..." fragment signs in directly (handy from scripts).
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("tandem-token") || "";

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  token = fragment.get("token");
  sessionStorage.setItem("tandem-token", token);
  history.replaceState(null, "", location.pathname);
}

function showError(message) {
  const e = $("#error");
  e.textContent = message;
  e.hidden = !message;
}

async function api(method, path, body) {
  const res = await fetch("/api/v1" + path, {
    method,
    headers: Object.assign({ Authorization: "Bearer " + token },
                           body ? { "Content-Type": "application/json" } : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    throw new Error((data.error && data.error.message) || res.statusText + " (" + res.status + ")");
  }
  return data;
}

function sizeText(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i++; }
  return (Number.isInteger(bytes) ? bytes : bytes.toFixed(1)) + units[i];
}

// Fills a table body from rows of cell values; cells are text, never HTML.
function fill(table, rows) {
  const body = $(table + " tbody");
  body.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of row) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.appendChild(cell);
      else td.textContent = cell;
      if (typeof cell === "string" && /^(healthy|degraded|read-only|halted|offline|online)$/.test(cell)) {
        td.className = "state-" + cell;
      }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}

// "2: n2 in-sync, n3 syncing 40%": where a volume's replicas are and how far along.
function replicaSummary(v) {
  const parts = (v.copies || []).filter((c) => c.role === "replica").map((c) => {
    let text = c.node + " " + c.state;
    if (c.state === "syncing" && c.sync_total_bytes > 0) {
      text += " " + Math.min(100, Math.floor(100 * c.sync_done_bytes / c.sync_total_bytes)) + "%";
    }
    return text;
  });
  return String(v.replicas) + (parts.length ? ": " + parts.join(", ") : "");
}

async function refresh() {
  if (!token) { showError("Sign in with the admin token (DATA_DIR/admin.token)."); return; }
  try {
    const [cluster, volumes, nodes, events] = await Promise.all([
      api("GET", "/cluster"), api("GET", "/volumes"), api("GET", "/nodes"),
      api("GET", "/events?limit=1000"),
    ]);
    showError("");
    $("#cluster-line").textContent = "v" + cluster.version + " · " + cluster.nodes_online + "/" +
        cluster.nodes + " nodes online · " + cluster.volumes + " volumes · " + cluster.health.status;
    fill("#volumes", volumes.volumes.map((v) => {
      const del = document.createElement("button");
      del.textContent = "Delete";
      del.onclick = async () => {
        if (!confirm("Delete volume " + v.name + " and its data?")) return;
        try { await api("DELETE", "/volumes/" + v.name); refresh(); } catch (e) { showError(e.message); }
      };
      return [v.name, sizeText(v.size_bytes), replicaSummary(v), v.failure_mode, v.state,
              v.master, v.iqn, del];
    }));
    fill("#nodes", nodes.nodes.map((n) => [n.name, n.address, n.state, sizeText(n.free_bytes),
                                            String(n.copies), n.last_heartbeat]));
    fill("#events", events.events.slice(-50).reverse().map((e) => [String(e.seq), e.time, e.kind,
                                                                   e.volume, e.node, e.message]));
  } catch (e) {
    showError(e.message);
  }
}

$("#token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("#token").value.trim();
  sessionStorage.setItem("tandem-token", token);
  refresh();
});

$("#create-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await api("POST", "/volumes", { name: f.get("name"), size: f.get("size"),
                                    failure_mode: f.get("failure_mode") });
    ev.target.reset();
    refresh();
  } catch (e) {
    showError(e.message);
  }
});

refresh();
setInterval(refresh, 5000);

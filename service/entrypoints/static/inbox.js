// The RM inbox: the signed-in RM's open alerts, refreshed every few seconds; a disposition
// per alert. Alerts withdrawn since they reached the RM (they no longer pass the bank's rules)
// are listed apart, with the notice only, until they would have expired. Plain DOM, no build
// step. Text from the API is set with textContent only.
"use strict";

const POLL_MS = 2000;
const KEY = "nextbest.rm.key";
const shown = new Map(); // alert_id -> list item
const withdrawn = new Map(); // alert_id -> list item
let timer = null;

function $(id) { return document.getElementById(id); }

function headers() {
  return { "X-API-Key": sessionStorage.getItem(KEY) || "", "Content-Type": "application/json" };
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (body.error && body.error.message) || `HTTP ${response.status}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function text(node, selector, value) { node.querySelector(selector).textContent = value; }

function render(alert) {
  const item = $("alert-template").content.firstElementChild.cloneNode(true);
  item.dataset.alertId = alert.alert_id;
  text(item, ".customer", alert.customer_id);
  text(item, ".title", alert.title);
  text(item, ".need", alert.need ? `Need: ${alert.need.replaceAll("_", " ")}` : `Service: ${alert.kind}`);
  text(item, ".score", alert.score === null ? "" : `score ${alert.score.toFixed(2)}`);
  text(item, ".priority", `priority ${alert.priority.toFixed(1)}`);
  text(item, ".expires", `expires ${new Date(alert.expires_at).toLocaleString()}`);
  const points = item.querySelector(".points");
  for (const point of alert.talking_points) {
    const li = document.createElement("li");
    li.textContent = point;
    points.appendChild(li);
  }
  const form = item.querySelector("form");
  const title = `${alert.customer_id}: ${alert.title}`;
  form.setAttribute("aria-label", `Outcome for ${title}`);
  const buttons = form.querySelectorAll("button");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const outcome = event.submitter && event.submitter.value;
    if (!outcome) return;
    const note = new FormData(form).get("note");
    buttons.forEach((b) => { b.disabled = true; });
    try {
      await api(`/v1/alerts/${encodeURIComponent(alert.alert_id)}/disposition`, {
        method: "POST",
        body: JSON.stringify({ outcome, note: note ? note : null }),
      });
      item.remove();
      shown.delete(alert.alert_id);
      $("status").textContent = `Recorded "${outcome.replaceAll("_", " ")}" for ${title}.`;
      counts();
    } catch (error) {
      text(item, ".error", `Not recorded: ${error.message}`);
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
  return item;
}

function renderWithdrawn(alert) {
  const item = $("withdrawn-template").content.firstElementChild.cloneNode(true);
  item.dataset.alertId = alert.alert_id;
  text(item, ".customer", alert.customer_id);
  text(item, ".title", alert.title);
  text(item, ".notice", `withdrawn: ${alert.withdrawal.text}`);
  return item;
}

function counts() {
  $("count").textContent = `(${shown.size})`;
  $("empty").hidden = shown.size > 0;
  $("withdrawn-section").hidden = withdrawn.size === 0;
}

// Withdrawn alerts the RM had, until they would have expired: the open list has dropped them.
async function refreshWithdrawn() {
  const body = await api("/v1/alerts?status=withdrawn&limit=50");
  const now = Date.now();
  const current = body.alerts.filter((a) => new Date(a.expires_at).getTime() > now);
  const ids = new Set(current.map((a) => a.alert_id));
  for (const [id, item] of withdrawn) {
    if (!ids.has(id)) { item.remove(); withdrawn.delete(id); }
  }
  const news = [];
  for (const alert of current) {
    if (withdrawn.has(alert.alert_id)) continue;
    const item = renderWithdrawn(alert);
    withdrawn.set(alert.alert_id, item);
    $("withdrawn").appendChild(item);
    news.push(`${alert.customer_id}: ${alert.title} was withdrawn (${alert.withdrawal.text}).`);
  }
  return news;
}

async function refresh() {
  let body, gone;
  try {
    body = await api("/v1/alerts?status=open&limit=200");
    gone = await refreshWithdrawn(); // after the open list: listing asks the gate again
  } catch (error) {
    if (error.status === 401 || error.status === 403) { signOut(error.message); return; }
    $("status").textContent = `Could not refresh: ${error.message}`;
    return;
  }
  const open = new Set(body.alerts.map((a) => a.alert_id));
  for (const [id, item] of shown) {
    if (!open.has(id)) { item.remove(); shown.delete(id); }
  }
  const fresh = body.alerts.filter((a) => !shown.has(a.alert_id));
  const list = $("alerts");
  for (const alert of body.alerts) {
    let item = shown.get(alert.alert_id);
    if (!item) { item = render(alert); shown.set(alert.alert_id, item); }
    list.appendChild(item); // keeps the API's order: highest priority first
  }
  if (body.alerts.length) { $("who").textContent = `RM ${body.alerts[0].rm_id}`; $("who").hidden = false; }
  if (fresh.length && list.dataset.loaded) {
    $("status").textContent = `${fresh.length} new alert${fresh.length > 1 ? "s" : ""}.`;
  }
  if (gone.length && list.dataset.loaded) $("status").textContent = gone.join(" ");
  $("unchecked").textContent = body.unchecked
    ? `${body.unchecked} alert${body.unchecked > 1 ? "s" : ""} not shown: the customer's consent could not be checked right now.`
    : "";
  list.dataset.loaded = "yes";
  counts();
}

function signedIn() {
  $("sign-in").hidden = true;
  $("inbox").hidden = false;
  $("sign-out").hidden = false;
  refresh();
  timer = setInterval(refresh, POLL_MS);
}

function signOut(message = "") {
  sessionStorage.removeItem(KEY);
  clearInterval(timer);
  for (const item of [...shown.values(), ...withdrawn.values()]) item.remove();
  shown.clear();
  withdrawn.clear();
  delete $("alerts").dataset.loaded;
  $("inbox").hidden = true;
  $("withdrawn-section").hidden = true;
  $("sign-out").hidden = true;
  $("who").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("api-key").value.trim());
    try {
      await api("/v1/alerts?status=open&limit=1");
      $("sign-in-error").textContent = "";
      $("api-key").value = "";
      signedIn();
    } catch (error) {
      signOut(`Sign-in failed: ${error.message}`);
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  if (sessionStorage.getItem(KEY)) signedIn();
});

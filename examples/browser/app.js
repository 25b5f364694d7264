// The shell: reads the settings (API URL, session mode), restores the session, and routes
// #/name to the views in views.js.

import { ApiError, SupaguardClient } from "./client.js";
import { errorBox, h } from "./ui.js";
import { views } from "./views.js";

const params = new URLSearchParams(location.search);
const api =
  params.get("api") ||
  localStorage.getItem("supaguard.api") ||
  `${location.protocol}//${location.hostname}:8000`;
const mode = params.get("mode") || localStorage.getItem("supaguard.mode") || "cookie";
// localauth's URL in development, for links to its mailbox (optional).
const mailbox = params.get("mailbox") || localStorage.getItem("supaguard.mailbox") || "";
if (mailbox) localStorage.setItem("supaguard.mailbox", mailbox);
localStorage.setItem("supaguard.api", api);
localStorage.setItem("supaguard.mode", mode);

const client = new SupaguardClient({ api, mode });
// For the console (and the browser tests). An injected script could reach the in-memory
// access token anyway; what it can never reach in cookie mode is the refresh token.
window.supaguard = client;
const main = document.getElementById("view");
const nav = document.getElementById("nav");
let leaving = [];
let notice = null;

const ctx = {
  client,
  mailbox,
  go(name) {
    if (location.hash === `#/${name}`) render();
    else location.hash = `#/${name}`;
  },
  onLeave(fn) {
    leaving.push(fn);
  },
};

client.addEventListener("signedout", (event) => {
  const reasons = {
    signed_out: "You are signed out.",
    expired: "Your session ended. Please sign in again.",
    revoked: "This session was ended elsewhere. Please sign in again.",
  };
  notice = reasons[event.detail] || null;
  ctx.go("signin");
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") client.refreshIfDue().catch(() => {});
});

function render() {
  for (const fn of leaving) fn();
  leaving = [];
  // Signed out: the pages with auth false; signed in: auth true; auth "any": both.
  const fits = (v) => v.auth === "any" || v.auth === client.signedIn;
  let name = location.hash.replace(/^#\//, "");
  if (!views[name] || !fits(views[name])) {
    name = client.signedIn ? "account" : "signin";
  }
  const view = views[name];
  document.title = `${view.title} · supaguard example`;
  document.body.dataset.view = name;
  nav.replaceChildren(
    ...Object.entries(views)
      .filter(([, v]) => fits(v))
      .map(([key, v]) => h("a", { href: `#/${key}`, class: key === name ? "active" : "" }, v.title)),
    h("span", { id: "who" }, client.signedIn ? client.session.user?.email || "" : "not signed in"),
  );
  const children = [];
  if (notice) children.push(h("p", { class: "notice", id: "notice" }, notice));
  notice = null;
  children.push(view.render(ctx));
  main.replaceChildren(...children);
}

async function start() {
  const apiInput = document.getElementById("api");
  const modeSelect = document.getElementById("mode");
  apiInput.value = api;
  modeSelect.value = mode;
  const reload = () => {
    localStorage.setItem("supaguard.api", apiInput.value);
    localStorage.setItem("supaguard.mode", modeSelect.value);
    location.replace(location.pathname);
  };
  apiInput.addEventListener("change", reload);
  modeSelect.addEventListener("change", reload);
  window.addEventListener("hashchange", render);
  try {
    await client.resume();
  } catch (error) {
    main.replaceChildren(errorBox(error instanceof ApiError ? error : new ApiError(0, { detail: String(error) })));
  }
  render();
  document.body.dataset.ready = "true";
}

start();

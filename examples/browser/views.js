// The pages. Each view is {title, auth, render(ctx) -> Node}; app.js routes #/name to it.
// auth: true (signed in only), false (signed out only) or "any".
// Adding a page (password reset, MFA enrolment...) is one entry here and, if it needs the
// API, one method in client.js.

import { errorBox, field, formValues, h, when } from "./ui.js";

function form(id, submitLabel, fields, onSubmit) {
  const status = h("div", { class: "status", id: `${id}-status` });
  const node = h(
    "form",
    {
      id,
      onsubmit: async (event) => {
        event.preventDefault();
        const button = node.querySelector("button[type=submit]");
        button.disabled = true;
        status.replaceChildren();
        try {
          await onSubmit(formValues(node));
        } catch (error) {
          status.replaceChildren(errorBox(error));
        } finally {
          button.disabled = false;
        }
      },
    },
    fields,
    h("button", { type: "submit", id: `${id}-submit` }, submitLabel),
    status,
  );
  return node;
}

export const signin = {
  title: "Sign in",
  auth: false,
  render(ctx) {
    return h(
      "section",
      { class: "card" },
      h("h2", {}, "Sign in"),
      form(
        "signin",
        "Sign in",
        [
          field("Email", { name: "email", id: "signin-email", type: "email", required: true, autocomplete: "username" }),
          field("Password", { name: "password", id: "signin-password", type: "password", required: true, autocomplete: "current-password" }),
        ],
        async ({ email, password }) => {
          await ctx.client.signIn(email, password);
          ctx.go("account");
        },
      ),
      h("p", {}, "No account yet? ", h("a", { href: "#/register", id: "to-register" }, "Register")),
    );
  },
};

export const register = {
  title: "Register",
  auth: false,
  render(ctx) {
    const done = h("div", { id: "register-done" });
    return h(
      "section",
      { class: "card" },
      h("h2", {}, "Create an account"),
      form(
        "register",
        "Register",
        [
          field("Name", { name: "name", id: "register-name", autocomplete: "name" }),
          field("Email", { name: "email", id: "register-email", type: "email", required: true, autocomplete: "username" }),
          field("Password", { name: "password", id: "register-password", type: "password", required: true, autocomplete: "new-password" }),
        ],
        async ({ name, email, password }) => {
          const result = await ctx.client.register(email, password, name ? { name } : {});
          if (result.session) ctx.go("account");
          else done.replaceChildren(h("p", { class: "ok" }, "Check your email to confirm the address, then sign in."));
        },
      ),
      done,
      h("p", {}, "Have an account? ", h("a", { href: "#/signin" }, "Sign in")),
    );
  },
};

function row(label, value, id) {
  return h("tr", {}, h("th", {}, label), h("td", { id }, value ?? "–"));
}

export const account = {
  title: "Account",
  auth: true,
  render(ctx) {
    const client = ctx.client;
    const status = h("div", { class: "status", id: "account-status" });
    const identity = h("tbody", { id: "me" });
    const tokens = h("tbody", { id: "tokens" });
    const sessions = h("tbody", { id: "sessions" });

    async function guarded(action) {
      status.replaceChildren();
      try {
        await action();
      } catch (error) {
        status.replaceChildren(errorBox(error));
      }
    }

    function showTokens() {
      const s = client.session;
      if (!s) return;
      const visible = client.visibleRefreshToken;
      tokens.replaceChildren(
        row("Mode", client.mode === "cookie" ? "cookie (HttpOnly refresh cookie)" : "bearer (tokens in JSON)", "mode"),
        row("Access token", `…${s.access_token.slice(-12)} (memory only)`, "access-token"),
        row("Expires", when(client.expiresAt), "expires-at"),
        row("Refreshes at", when(client.refreshAt), "refresh-at"),
        row(
          "Refresh token",
          visible ? `…${visible.slice(-8)} in sessionStorage (readable by page scripts)` : "in an HttpOnly cookie: not readable by this page",
          "refresh-token",
        ),
        row("document.cookie", JSON.stringify(document.cookie), "document-cookie"),
        row("Refreshes so far", String(client.refreshes), "refresh-count"),
      );
    }

    async function load() {
      const me = await client.me();
      identity.replaceChildren(
        row("Email", me.email, "me-email"),
        row("User id", me.id, "me-id"),
        row("Roles", me.roles.join(", ") || "none", "me-roles"),
        row("Assurance", me.aal, "me-aal"),
        row("Session", me.session_id, "me-session"),
      );
      const list = await client.sessions();
      sessions.replaceChildren(
        ...list.map((s) =>
          h(
            "tr",
            { "data-session": s.id, class: s.current ? "current" : "" },
            h("td", {}, s.current ? "this browser" : s.user_agent.slice(0, 40) || "unknown"),
            h("td", {}, s.ip || "–"),
            h("td", {}, new Date(s.last_seen_at).toLocaleString()),
            h(
              "td",
              {},
              h(
                "button",
                {
                  class: "small",
                  "data-revoke": s.id,
                  onclick: () =>
                    guarded(async () => {
                      if (s.current) {
                        await client.signOut("local");
                        return;
                      }
                      await client.revokeSession(s.id);
                      await load();
                    }),
                },
                s.current ? "Sign out" : "Revoke",
              ),
            ),
          ),
        ),
      );
      showTokens();
    }

    client.addEventListener("session", showTokens);
    ctx.onLeave(() => client.removeEventListener("session", showTokens));
    guarded(load);

    return h(
      "section",
      { class: "card wide" },
      h("h2", {}, "Your account"),
      status,
      h("h3", {}, "Identity (GET /me)"),
      h("table", {}, identity),
      h("h3", {}, "Tokens"),
      h("table", {}, tokens),
      h(
        "div",
        { class: "actions" },
        h("button", { id: "refresh-now", onclick: () => guarded(async () => { await client.refresh(); showTokens(); }) }, "Refresh now"),
        h("button", { id: "reload-data", onclick: () => guarded(load) }, "Reload"),
        h("button", { id: "signout-others", onclick: () => guarded(async () => { await client.signOut("others"); await load(); }) }, "Sign out other sessions"),
        h("button", { id: "signout", class: "primary", onclick: () => guarded(() => client.signOut("local")) }, "Sign out"),
        h("button", { id: "signout-global", onclick: () => guarded(() => client.signOut("global")) }, "Sign out everywhere"),
      ),
      h("h3", {}, "Sessions (GET /sessions)"),
      h("table", { class: "sessions" }, h("thead", {}, h("tr", {}, h("th", {}, "Device"), h("th", {}, "IP"), h("th", {}, "Last seen"), h("th", {}, ""))), sessions),
    );
  },
};

export const views = { signin, register, account };

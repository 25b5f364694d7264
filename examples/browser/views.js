// The pages. Each view is {title, auth, render(ctx) -> Node}; app.js routes #/name to it.
// auth: true (signed in only), false (signed out only) or "any".
// Adding a page (password reset, MFA enrolment...) is one entry here and, if it needs the
// API, one method in client.js.

import { errorBox, field, fill, formValues, h, mailboxLink, when } from "./ui.js";

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
          await afterSignIn(ctx);
        },
      ),
      h("p", {}, "No account yet? ", h("a", { href: "#/register", id: "to-register" }, "Register")),
      h(
        "p",
        {},
        h("a", { href: "#/reset", id: "to-reset" }, "Forgot your password?"),
        " · ",
        h("a", { href: "#/code", id: "to-code" }, "Sign in with an emailed code"),
      ),
    );
  },
};

// A sign-in is aal1. An account with a verified authenticator goes on to the MFA page,
// which asks for a code to reach aal2 (needed to remove a factor, or by ADMIN_REQUIRE_AAL2).
async function afterSignIn(ctx) {
  let factors = [];
  try {
    factors = await ctx.client.factors();
  } catch {
    // The account page works without it.
  }
  ctx.go(factors.some((f) => f.status === "verified") ? "mfa" : "account");
}

function codeField(id) {
  return field("Code from the email", {
    name: "code",
    id: `${id}-code`,
    required: true,
    inputmode: "numeric",
    pattern: "[0-9]{6}",
    maxlength: 6,
    autocomplete: "one-time-code",
  });
}

// The second step: the mailed code (and more fields), then on to the signed-in pages.
function codeStep(ctx, into, { id, email, sent, fields, finishLabel, finish }) {
  fill(
    into,
    h("p", { class: "ok", id: `${id}-sent` }, sent),
    mailboxLink(ctx.mailbox, email),
    form(id, finishLabel, [codeField(id), ...fields], async (values) => {
      await finish(email, values);
      await afterSignIn(ctx);
    }),
  );
  into.querySelector("input")?.focus();
}

// Two steps: mail a code to an address, then finish with the code (and more fields).
function emailCode(ctx, { id, heading, intro, send, fields, finishLabel, finish }) {
  const next = h("div", { id: `${id}-next` });
  return h(
    "section",
    { class: "card" },
    h("h2", {}, heading),
    h("p", {}, intro),
    form(
      `${id}-request`,
      "Email me a code",
      [field("Email", { name: "email", id: `${id}-email`, type: "email", required: true, autocomplete: "username" })],
      async ({ email }) => {
        await send(email);
        // The same answer for every address: the page cannot tell who has an account.
        codeStep(ctx, next, { id, email, sent: `If ${email} has an account, a code is on its way.`, fields, finishLabel, finish });
      },
    ),
    next,
    h("p", {}, h("a", { href: "#/signin" }, "Back to sign in")),
  );
}

export const reset = {
  title: "Reset password",
  auth: false,
  render(ctx) {
    return emailCode(ctx, {
      id: "reset",
      heading: "Reset your password",
      intro: "We email you a code; with it you choose a new password and are signed in. Every other session ends.",
      send: (email) => ctx.client.requestPasswordReset(email),
      fields: [field("New password", { name: "password", id: "reset-password", type: "password", required: true, autocomplete: "new-password" })],
      finishLabel: "Set the new password",
      finish: (email, { code, password }) => ctx.client.resetPassword(email, code, password),
    });
  },
};

// For a user who comes back later (or whose code expired): mail the confirmation again.
export const confirm = {
  title: "Confirm email",
  auth: false,
  render(ctx) {
    return emailCode(ctx, {
      id: "confirm",
      heading: "Confirm your email address",
      intro: "We email the confirmation code again; enter it to confirm the address and sign in.",
      send: (email) => ctx.client.resendConfirmation(email),
      fields: [],
      finishLabel: "Confirm",
      finish: (email, { code }) => ctx.client.confirmEmail(email, code),
    });
  },
};

export const code = {
  title: "Email code",
  auth: false,
  render(ctx) {
    return emailCode(ctx, {
      id: "otp",
      heading: "Sign in with an emailed code",
      intro: "No password needed: we email a one-time code to your account's address.",
      send: (email) => ctx.client.sendSignInCode(email),
      fields: [],
      finishLabel: "Sign in",
      finish: (email, { code }) => ctx.client.signInWithCode(email, code),
    });
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
          if (result.session) {
            ctx.go("account");
            return;
          }
          // REGISTER_EMAIL_CONFIRM=false: confirm the address with the mailed code.
          codeStep(ctx, done, {
            id: "confirm",
            email,
            sent: `We sent a code to ${email}: enter it to confirm the address and sign in.`,
            fields: [],
            finishLabel: "Confirm",
            finish: (address, { code }) => ctx.client.confirmEmail(address, code),
          });
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

async function guardedIn(status, action) {
  status.replaceChildren();
  try {
    await action();
  } catch (error) {
    status.replaceChildren(errorBox(error));
  }
}

export const mfa = {
  title: "MFA",
  auth: true,
  render(ctx) {
    const client = ctx.client;
    const status = h("div", { class: "status", id: "mfa-status" });
    const aal = h("strong", { id: "mfa-aal" }, "…");
    const factors = h("tbody", { id: "factors" });
    const enrolment = h("div", { id: "mfa-enrolment" });
    const stepUp = h("div", { id: "mfa-stepup-box" });
    const guarded = (action) => guardedIn(status, action);

    async function load() {
      const [me, list] = await Promise.all([client.me(), client.factors()]);
      aal.textContent = me.aal;
      // Signed in at aal1 with a verified factor: answer a challenge to reach aal2.
      const verified = list.find((f) => f.status === "verified");
      fill(
        stepUp,
        me.aal === "aal1" && verified
          ? h(
              "div",
              { class: "notice" },
              h("p", {}, `Enter the code from “${verified.friendly_name || "your authenticator"}” to verify this session (aal2).`),
              form(
                "mfa-stepup",
                "Verify this session",
                [field("Code from the app", { name: "code", id: "mfa-stepup-code", required: true, inputmode: "numeric", pattern: "[0-9]{6}", maxlength: 6, autocomplete: "one-time-code" })],
                async ({ code }) => {
                  await client.verifyFactor(verified.id, code);
                  await load();
                },
              ),
            )
          : null,
      );
      factors.replaceChildren(
        ...list.map((f) =>
          h(
            "tr",
            { "data-factor": f.id, "data-status": f.status },
            h("td", {}, f.friendly_name || "(unnamed)"),
            h("td", {}, f.factor_type),
            h("td", { class: "factor-status" }, f.status),
            h("td", {}, new Date(f.created_at).toLocaleString()),
            h(
              "td",
              {},
              h(
                "button",
                {
                  class: "small",
                  "data-unenroll": f.id,
                  onclick: () =>
                    guarded(async () => {
                      await client.unenrollFactor(f.id);
                      enrolment.replaceChildren();
                      await load();
                    }),
                },
                "Remove",
              ),
            ),
          ),
        ),
      );
      if (!list.length) factors.replaceChildren(h("tr", {}, h("td", { colspan: 5 }, "No authenticator yet.")));
    }

    function showEnrolment(factor) {
      const qr = String(factor.totp?.qr_code || "");
      fill(
        enrolment,
        h("p", {}, "Scan the QR code with an authenticator app (or type the secret), then enter the 6-digit code it shows."),
        // An SVG in an <img> runs no script; anything but an image data: URI is not shown.
        qr.startsWith("data:image/") ? h("img", { src: qr, alt: "QR code of the authenticator secret", id: "mfa-qr", class: "qr" }) : null,
        h("p", {}, "Secret: ", h("code", { id: "mfa-secret" }, factor.totp?.secret || "")),
        form(
          "mfa-verify",
          "Verify",
          [field("Code from the app", { name: "code", id: "mfa-code", required: true, inputmode: "numeric", pattern: "[0-9]{6}", maxlength: 6, autocomplete: "one-time-code" })],
          async ({ code }) => {
            await client.verifyFactor(factor.id, code);
            enrolment.replaceChildren(h("p", { class: "ok", id: "mfa-verified" }, "Verified: this session is now at aal2."));
            await load();
          },
        ),
      );
    }

    guarded(load);
    return h(
      "section",
      { class: "card wide" },
      h("h2", {}, "Two-factor authentication (TOTP)"),
      h("p", {}, "This session's assurance level: ", aal, " (aal2 after an authenticator code)."),
      stepUp,
      status,
      h("h3", {}, "Your authenticators (GET /mfa/factors)"),
      h("table", { class: "sessions" }, h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Type"), h("th", {}, "Status"), h("th", {}, "Added"), h("th", {}, ""))), factors),
      h("h3", {}, "Add one (POST /mfa/factors)"),
      form(
        "mfa-enrol",
        "Add an authenticator",
        [field("Name", { name: "name", id: "mfa-name", value: "Authenticator app", maxlength: 64 })],
        async ({ name }) => {
          showEnrolment(await client.enrollTotp(name));
          await load();
        },
      ),
      enrolment,
    );
  },
};

export const views = { signin, register, confirm, reset, code, account, mfa };

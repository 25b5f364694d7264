// Tiny DOM helpers: everything is built with textContent, so no server data is ever parsed
// as HTML (an auth page is the last place for an XSS).

export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// node.replaceChildren(), skipping null/false children (the DOM would show them as text).
export function fill(node, ...children) {
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined && c !== false));
}

// What to tell a person for an ApiError; field errors are listed under the message.
export function describe(error) {
  if (!error || !error.code) return { message: String(error), fields: [] };
  const messages = {
    invalid_credentials: "Wrong email or password.",
    email_not_confirmed: "Confirm your email address first (Confirm email above; the local mailbox in dev).",
    user_banned: "This account is suspended.",
    email_exists: "An account with this email already exists. Sign in instead.",
    validation_failed: "Please check the form.",
    locked_out: "Too many failed attempts. Try again later.",
    rate_limited: "Too many requests. Try again in a moment.",
    transport_not_allowed:
      "The service does not offer this session mode (SESSION_TRANSPORT). Switch mode above.",
    csrf_rejected: "This page's origin is not allowed by the service (CORS_ORIGINS).",
    network_error: "The service cannot be reached.",
    invalid_code: "Wrong or expired code. Check the newest mail, or ask for a new code.",
    invalid_mfa_code: "Wrong authenticator code. Check the device's clock and type the current code.",
    insufficient_aal: "This needs a session verified with your authenticator (MFA) first.",
    factor_exists: "You already have an authenticator with this name: pick another name.",
    mfa_challenge_invalid: "The challenge expired. Type the current code again.",
  };
  let message = messages[error.code] || error.message;
  if (error.retryAfter) message += ` (retry in ${error.retryAfter} s)`;
  // weak_password: the detail names the policy; errors[].reasons say what is missing.
  const fields = (error.problem?.errors || []).map(
    (e) => `${e.field}: ${e.message || "missing " + (e.reasons || []).join(", ")}`,
  );
  return { message, fields };
}

export function errorBox(error) {
  const { message, fields } = describe(error);
  return h(
    "div",
    { class: "error", role: "alert", "data-code": error?.code || "" },
    h("strong", {}, message),
    fields.length ? h("ul", {}, fields.map((f) => h("li", {}, f))) : null,
    error?.requestId ? h("small", {}, `code ${error.code} · request ${error.requestId}`) : null,
  );
}

export function field(label, attrs) {
  return h("label", {}, h("span", {}, label), h("input", attrs));
}

export function formValues(form) {
  return Object.fromEntries(new FormData(form).entries());
}

export function when(ms) {
  return new Date(ms).toLocaleTimeString();
}

// A link to the local mailbox (localauth, dev only) when the page was given its URL
// (?mailbox=http://localhost:9999, as scripts/dev prints).
export function mailboxLink(mailbox, email) {
  if (!mailbox) return null;
  const url = `${mailbox.replace(/\/+$/, "")}/mailbox/messages?to=${encodeURIComponent(email)}`;
  return h("p", { class: "hint" }, "Dev: the code is in the ", h("a", { href: url, target: "_blank", rel: "noopener", id: "mailbox-link" }, "local mailbox"), ".");
}

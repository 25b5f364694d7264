// A small client for the supaguard REST API, for both session transports.
//
// - "cookie": the refresh token lives only in an HttpOnly cookie that this script can never
//   read; the access token lives in memory (this object). A reload restores the session by
//   calling /refresh, which the browser authenticates with the cookie.
// - "bearer": both tokens come in JSON bodies. The refresh token is kept in sessionStorage
//   (this tab only, survives a reload) - readable by any script on the page, which is the
//   price of that mode.
//
// Every failure is an ApiError carrying the problem's stable `code` (docs/frontend.md).

const REFRESH_KEY = "supaguard.refresh_token";
// Refresh this long before the access token expires (capped at half its lifetime).
const REFRESH_MARGIN_MS = 60_000;
// Never refresh more often than this, whatever the token lifetime says.
const MIN_DELAY_MS = 5_000;
// Codes that mean "try again later": the session is still good.
const TRANSIENT = new Set([
  "rate_limited", "upstream_rate_limited", "upstream_unavailable", "upstream_circuit_open",
  "upstream_busy", "session_store_unavailable", "upstream_timeout",
]);
// Codes on an authenticated call that a refresh can cure.
const STALE_ACCESS = new Set(["token_expired"]);

export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code || "http_" + status;
    this.problem = problem;
    this.requestId = problem.request_id || null;
    this.retryAfter = retryAfter;
  }
  get transient() {
    return TRANSIENT.has(this.code) || this.status === 0 || this.status >= 500;
  }
  // A refresh that failed like this means the session is over: sign in again.
  get sessionOver() {
    return !this.transient && this.status >= 400 && this.status < 500;
  }
}

export class SupaguardClient extends EventTarget {
  constructor({ api, mode }) {
    super();
    this.api = api.replace(/\/+$/, "");
    this.mode = mode; // "cookie" | "bearer"
    this.session = null; // {access_token, expires_at, expires_in, user}
    this._refreshing = null;
    this._timer = null;
    this._receivedAt = 0;
    this.refreshes = 0; // successful refreshes by this tab, for the page to show
  }

  get signedIn() {
    return this.session !== null;
  }

  // The refresh token, where this page can see it. Always null in cookie mode.
  get visibleRefreshToken() {
    return this.mode === "bearer" ? sessionStorage.getItem(REFRESH_KEY) : null;
  }

  async register(email, password, data = {}) {
    const result = await this._call("POST", "/api/v1/auth/register", { email, password, data });
    if (result.session) this._accept(result.session);
    return result;
  }

  async signIn(email, password) {
    this._accept(await this._call("POST", "/api/v1/auth/login", { email, password }));
    return this.session;
  }

  // Restore a session after a reload; false when there is none to restore.
  async resume() {
    if (this.mode === "bearer" && !this.visibleRefreshToken) return false;
    try {
      await this.refresh();
      return true;
    } catch (error) {
      if (error instanceof ApiError && error.sessionOver) return false;
      throw error;
    }
  }

  // One refresh at a time per tab; concurrent callers share it. Across tabs the server's
  // grace window makes simultaneous refreshes of one token safe.
  refresh() {
    if (!this._refreshing) {
      this._refreshing = this._refresh().finally(() => {
        this._refreshing = null;
      });
    }
    return this._refreshing;
  }

  async _refresh() {
    const body = this.mode === "bearer" ? { refresh_token: this.visibleRefreshToken } : undefined;
    try {
      const session = await this._call("POST", "/api/v1/auth/refresh", body);
      this.refreshes += 1;
      this._accept(session);
    } catch (error) {
      if (error instanceof ApiError && error.sessionOver) this._drop("expired");
      throw error;
    }
    return this.session;
  }

  async me() {
    return this._authed("GET", "/api/v1/auth/me");
  }

  async sessions() {
    return (await this._authed("GET", "/api/v1/auth/sessions")).sessions;
  }

  async revokeSession(id) {
    await this._authed("DELETE", `/api/v1/auth/sessions/${encodeURIComponent(id)}`);
  }

  // scope: "local" (this session), "others" (keep this one) or "global" (all of them).
  async signOut(scope = "local") {
    try {
      await this._authed("POST", "/api/v1/auth/logout", { scope });
    } finally {
      if (scope !== "others") this._drop("signed_out");
    }
  }

  // Forgotten password: mail a code (the answer is the same 202 for every address), then
  // set a new password with it. The reset signs in and ends every other session.
  async requestPasswordReset(email) {
    await this._call("POST", "/api/v1/auth/password/recover", { email });
  }

  async resetPassword(email, code, password) {
    this._accept(await this._call("POST", "/api/v1/auth/password/reset", { email, code, password }));
    return this.session;
  }

  // Address confirmation (REGISTER_EMAIL_CONFIRM=false): the code signs in.
  async resendConfirmation(email) {
    await this._call("POST", "/api/v1/auth/email/confirm/resend", { email });
  }

  async confirmEmail(email, code) {
    this._accept(await this._call("POST", "/api/v1/auth/email/confirm", { email, code }));
    return this.session;
  }

  // Passwordless sign-in: mail a code to an existing account, then sign in with it.
  async sendSignInCode(email) {
    await this._call("POST", "/api/v1/auth/otp", { email });
  }

  async signInWithCode(email, code) {
    this._accept(await this._call("POST", "/api/v1/auth/otp/verify", { email, code }));
    return this.session;
  }

  // MFA (TOTP). enrollTotp answers {id, totp: {secret, uri, qr_code}}; qr_code is an SVG
  // data: URI for an <img>. The factor stays "unverified" until verifyFactor succeeds.
  async factors() {
    return (await this._authed("GET", "/api/v1/auth/mfa/factors")).factors;
  }

  async enrollTotp(friendlyName) {
    return this._authed("POST", "/api/v1/auth/mfa/factors", { friendly_name: friendlyName });
  }

  // The answer is this session at aal2 with new tokens (a new cookie in cookie mode).
  async verifyFactor(id, code) {
    const path = `/api/v1/auth/mfa/factors/${encodeURIComponent(id)}/verify`;
    this._accept(await this._authed("POST", path, { code }));
    return this.session;
  }

  // A verified factor needs an aal2 session. The session drops to aal1 on the server at
  // once; the refresh brings a token that says so.
  async unenrollFactor(id) {
    await this._authed("DELETE", `/api/v1/auth/mfa/factors/${encodeURIComponent(id)}`);
    await this.refresh();
  }

  // Forget the session here without telling the server (e.g. it ended elsewhere).
  forget() {
    this._drop("signed_out");
  }

  async _authed(method, path, body) {
    if (!this.session) throw new ApiError(401, { code: "missing_token", detail: "Not signed in." });
    try {
      return await this._call(method, path, body, this.session.access_token);
    } catch (error) {
      if (!(error instanceof ApiError) || !STALE_ACCESS.has(error.code)) {
        if (error instanceof ApiError && error.code === "session_revoked") this._drop("revoked");
        throw error;
      }
      await this.refresh();
      return this._call(method, path, body, this.session.access_token);
    }
  }

  async _call(method, path, body, accessToken) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (accessToken) headers["Authorization"] = "Bearer " + accessToken;
    if (this.mode === "cookie") headers["X-Session-Transport"] = "cookie";
    let response;
    try {
      response = await fetch(this.api + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        // The cookie is sent (and accepted) only with credentials; bearer mode needs none.
        credentials: this.mode === "cookie" ? "include" : "omit",
      });
    } catch (networkError) {
      throw new ApiError(0, { code: "network_error", detail: "The service cannot be reached." });
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // Not JSON (a proxy's error page): keep the status, there is no code to read.
      data = { detail: `HTTP ${response.status} from ${path}` };
    }
    if (!response.ok) {
      const retryAfter = Number(response.headers.get("Retry-After")) || null;
      throw new ApiError(response.status, data || {}, retryAfter);
    }
    return data;
  }

  _accept(session) {
    const { refresh_token: refreshToken, ...rest } = session;
    if (this.mode === "bearer" && refreshToken) sessionStorage.setItem(REFRESH_KEY, refreshToken);
    this.session = rest;
    this._receivedAt = Date.now();
    this._schedule();
    this.dispatchEvent(new Event("session"));
  }

  _drop(reason) {
    clearTimeout(this._timer);
    const had = this.session !== null;
    this.session = null;
    sessionStorage.removeItem(REFRESH_KEY);
    // Only a session that existed can end (a first visit's resume() has none).
    if (had) this.dispatchEvent(new CustomEvent("signedout", { detail: reason }));
  }

  // When the access token expires, by this browser's clock (ms since the epoch). Counted
  // from `expires_in` at arrival, not from `expires_at`: a client clock that is off by
  // minutes would otherwise refresh in a loop, or too late.
  get expiresAt() {
    return this.session ? this._receivedAt + this.session.expires_in * 1000 : null;
  }

  // When the access token should be refreshed (ms since the epoch).
  get refreshAt() {
    if (!this.session) return null;
    const margin = Math.min(REFRESH_MARGIN_MS, (this.session.expires_in * 1000) / 2);
    return this.expiresAt - margin;
  }

  _schedule(delay) {
    clearTimeout(this._timer);
    const wait = delay ?? Math.max(MIN_DELAY_MS, this.refreshAt - Date.now());
    this._timer = setTimeout(() => this._scheduledRefresh(), wait);
  }

  async _scheduledRefresh() {
    try {
      await this.refresh();
    } catch (error) {
      // Transient (429, 503, 504, network): the token is still good, try again soon.
      if (error instanceof ApiError && error.transient && this.session) {
        this._schedule(Math.min(30_000, (error.retryAfter || 5) * 1000));
      }
    }
  }

  // Background tabs throttle timers: check again whenever the page becomes visible.
  refreshIfDue() {
    if (this.session && Date.now() >= this.refreshAt) return this.refresh();
    return Promise.resolve(this.session);
  }
}

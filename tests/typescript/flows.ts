// The documented flows, written against the client generated from /openapi.json
// (openapi-typescript → ./api.d.ts, called through openapi-fetch). `tsc --noEmit` must
// accept every call below and reject each line marked @ts-expect-error: a wrong path,
// body, query parameter, header or error code in the document breaks this file.
// Run by tests/integration/test_typescript_client.py.
import createClient from "openapi-fetch";
import type { components, paths } from "./api";

type Schemas = components["schemas"];
export type ErrorCode = Schemas["ErrorCode"];
type Problem = Schemas["Problem"];

const api = createClient<paths>({ baseUrl: "https://auth.example.com" });

function bearer(token: string): { Authorization: string } {
  return { Authorization: `Bearer ${token}` };
}

// What a frontend does with a refusal: switch on the stable code.
export function advice(problem: Problem): string {
  const code: ErrorCode = problem.code;
  switch (code) {
    case "token_expired":
      return "refresh";
    case "invalid_credentials":
    case "locked_out":
    case "rate_limited":
      return `retry later (${problem.request_id ?? "no request id"})`;
    case "weak_password":
      return (problem.errors ?? []).flatMap((e) => e.reasons ?? []).join(", ");
    default:
      return problem.detail;
  }
}

export async function userFlow(email: string, password: string): Promise<string[]> {
  const seen: string[] = [];

  const registered = await api.POST("/api/v1/auth/register", {
    body: { email, password, data: { display_name: "Ada" } },
  });
  if (registered.error) {
    return [advice(registered.error)];
  }
  // With REGISTER_CONCEAL_EXISTING the answer may hold only the address.
  const registeredUser = registered.data.user;
  if (!("id" in registeredUser)) {
    return [registeredUser.email];
  }
  const user: Schemas["User"] = registeredUser;
  seen.push(user.id, user.created_at);
  const maybeSession: Schemas["Session"] | null = registered.data.session;
  if (maybeSession !== null) seen.push(maybeSession.token_type);

  const login = await api.POST("/api/v1/auth/login", { body: { email, password } });
  if (login.error) {
    return [advice(login.error)];
  }
  let tokens: Schemas["Session"] = login.data;
  const expiresAt: number = tokens.expires_at;
  seen.push(String(expiresAt));

  // In the bearer transport the refresh token is in the body (the cookie transport keeps it
  // in an HttpOnly cookie instead).
  const refreshed = await api.POST("/api/v1/auth/refresh", {
    body: { refresh_token: tokens.refresh_token ?? "" },
    headers: { "X-Session-Transport": "bearer" },
  });
  if (refreshed.data) tokens = refreshed.data;
  if (refreshed.error?.code === "refresh_token_reused") return ["signed out: token reused"];

  const me = await api.GET("/api/v1/auth/me", { headers: bearer(tokens.access_token) });
  if (me.data) {
    const roles: string[] = me.data.roles;
    seen.push(me.data.id, me.data.session_id, ...roles);
  }

  const sessions = await api.GET("/api/v1/auth/sessions", {
    headers: bearer(tokens.access_token),
  });
  const others = (sessions.data?.sessions ?? []).filter((s) => !s.current);
  for (const session of others) {
    const ended = await api.DELETE("/api/v1/auth/sessions/{session_id}", {
      params: { path: { session_id: session.id } },
      headers: bearer(tokens.access_token),
    });
    seen.push(String(ended.response.status));
  }

  const mine = await api.GET("/api/v1/users/{user_id}/sessions", {
    params: { path: { user_id: user.id } },
    headers: bearer(tokens.access_token),
  });
  seen.push(String(mine.data?.sessions.length ?? 0));

  const out = await api.POST("/api/v1/auth/logout", {
    body: { scope: "global" },
    headers: bearer(tokens.access_token),
  });
  seen.push(String(out.response.status));
  return seen;
}

export async function adminFlow(adminToken: string, userId: string): Promise<number> {
  const headers = bearer(adminToken);
  const page = await api.GET("/api/v1/admin/users", {
    params: { query: { page: 1, per_page: 50 } },
    headers,
  });
  if (page.error) {
    return page.error.status;
  }
  const listed: Schemas["User"][] = page.data.users;
  const perPage: number = page.data.per_page;
  const first = listed[0]?.app_metadata.roles ?? [];

  const one = await api.GET("/api/v1/admin/users/{user_id}", {
    params: { path: { user_id: userId } },
    headers,
  });
  const bannedUntil: string | null | undefined = one.data?.banned_until;

  await api.PUT("/api/v1/admin/users/{user_id}/roles", {
    params: { path: { user_id: userId } },
    body: { roles: [...first, "support"] },
    headers,
  });
  await api.POST("/api/v1/admin/users/{user_id}/ban", { params: { path: { user_id: userId } }, headers });
  await api.POST("/api/v1/admin/users/{user_id}/unban", { params: { path: { user_id: userId } }, headers });
  await api.POST("/api/v1/admin/users/{user_id}/unlock", { params: { path: { user_id: userId } }, headers });
  const revoked = await api.POST("/api/v1/admin/users/{user_id}/sessions/revoke", {
    params: { path: { user_id: userId } },
    headers,
  });
  const count: number = revoked.data?.revoked ?? 0;
  return perPage + count + (bannedUntil ? 1 : 0);
}

export async function serviceFlow(userId: string, secret: string): Promise<boolean> {
  const status = await api.GET("/api/v1/internal/users/{user_id}/status", {
    params: { path: { user_id: userId } },
    headers: { "X-Service-ID": "billing", "X-Service-Secret": secret },
  });
  if (status.error) {
    const code: ErrorCode = status.error.code;
    return code !== "invalid_service_credentials";
  }
  const notBefore: number = status.data.not_before;
  return status.data.banned || notBefore > 0;
}

export async function live(): Promise<string> {
  const answer = await api.GET("/health/live");
  return answer.data?.version ?? "unknown";
}

// What the document must refuse.
export async function refused(token: string): Promise<void> {
  // @ts-expect-error: no such route
  await api.GET("/api/v1/auth/whoami");
  // @ts-expect-error: login needs a password
  await api.POST("/api/v1/auth/login", { body: { email: "a@example.com" } });
  // @ts-expect-error: a refresh token is a string
  await api.POST("/api/v1/auth/refresh", { body: { refresh_token: 42 } });
  // @ts-expect-error: logout scopes are local, others and global
  await api.POST("/api/v1/auth/logout", { body: { scope: "everywhere" }, headers: bearer(token) });
  await api.GET("/api/v1/admin/users", {
    // @ts-expect-error: per_page is an integer
    params: { query: { per_page: "fifty" } },
    headers: bearer(token),
  });
  // @ts-expect-error: the user id is a path parameter the call must give
  await api.POST("/api/v1/admin/users/{user_id}/ban", { headers: bearer(token) });
  // @ts-expect-error: roles is a list of strings
  await api.PUT("/api/v1/admin/users/{user_id}/roles", { params: { path: { user_id: "u" } }, body: { roles: "admin" } });
  // @ts-expect-error: not an error code of this API
  const code: ErrorCode = "no_such_code";
  void code;
  const me = await api.GET("/api/v1/auth/me", { headers: bearer(token) });
  // @ts-expect-error: /me has no password member
  void me.data?.password;
}

// A small typed client over the generated contract: it must compile under `tsc --strict`
// (scripts/check-typescript-client.sh). It is never run; what matters is that the types
// generated from openapi.json let a frontend write this without casts or `any`.
import createClient from "openapi-fetch";
import type { components, paths } from "./openapi";

type Problem = components["schemas"]["Problem"];
type EventOut = components["schemas"]["EventOut"];
type ActivityExport = components["schemas"]["ActivityExport"];

const api = createClient<paths>({ baseUrl: "http://127.0.0.1:8000" });

// Errors are typed: every 4xx/5xx is a Problem, so `error` is one (not `unknown`).
function describe(problem: Problem): string {
  const fields = (problem.errors ?? []).map((e) => `${e.loc.join(".")}: ${e.msg}`);
  return [`${problem.status} ${problem.title}`, problem.detail ?? "", ...fields].join("\n");
}

export async function login(username: string, password: string): Promise<string> {
  const { data, error } = await api.POST("/login", { body: { username, password } });
  if (error) {
    throw new Error(describe(error));
  }
  return data.access_token;
}

export async function recentFailures(token: string): Promise<EventOut[]> {
  const { data, error, response } = await api.GET("/admin/activity", {
    headers: { Authorization: `Bearer ${token}` },
    params: { query: { outcome: "failure", page_size: 50, since: "2026-01-01T00:00:00Z" } },
  });
  if (error) {
    const status: number = error.status;
    const requestId: string | null = response.headers.get("X-Request-ID");
    throw new Error(`${describe(error)} (${status}, request ${requestId ?? "?"})`);
  }
  const next: string | null = data.next_cursor;
  void next;
  return data.items;
}

export async function oneEvent(token: string, eventId: string): Promise<EventOut | Problem> {
  const { data, error } = await api.GET("/admin/activity/{event_id}", {
    headers: { Authorization: `Bearer ${token}` },
    params: { path: { event_id: eventId } },
  });
  return error ?? data;
}

export async function exportJson(token: string): Promise<ActivityExport> {
  const { data, error } = await api.GET("/admin/activity/export", {
    headers: { Authorization: `Bearer ${token}` },
    params: { query: { format: "json" } },
  });
  if (error) {
    throw new Error(describe(error));
  }
  // One operation, several media types: the JSON one is the typed document.
  if (typeof data === "string") {
    throw new Error("expected format=json");
  }
  const rows: number = data.export.row_count;
  if (rows !== data.events.length) {
    throw new Error("export is not one snapshot");
  }
  return data;
}

// Binary exports (XLSX, gzip) are read as bytes, never decoded as text.
export async function exportXlsx(token: string): Promise<Blob> {
  const { data, error, response } = await api.GET("/admin/activity/export", {
    headers: { Authorization: `Bearer ${token}` },
    params: { query: { format: "xlsx", action: ["auth.login", "auth.logout"] } },
    parseAs: "blob",
  });
  if (error) {
    throw new Error(describe(error));
  }
  const count = Number(response.headers.get("X-Export-Row-Count"));
  void count;
  return data;
}

// The proof API: JSON proofs are typed, the checkpoint is text, tiles are bytes.
type InclusionProof = components["schemas"]["InclusionProof"];

export async function proveEvent(
  token: string,
  eventId: string,
  size?: number,
): Promise<InclusionProof> {
  const { data, error } = await api.GET("/admin/integrity/events/{event_id}/proof", {
    headers: { Authorization: `Bearer ${token}` },
    params: { path: { event_id: eventId }, query: size === undefined ? {} : { size } },
  });
  if (error) {
    throw new Error(describe(error));
  }
  const position: number = data.position;
  const path: string[] = data.hashes;
  void position;
  void path;
  return data;
}

export async function checkpointAndTile(token: string): Promise<[string, Blob]> {
  const headers = { Authorization: `Bearer ${token}` };
  const checkpoint = await api.GET("/admin/integrity/checkpoint", { headers, parseAs: "text" });
  if (checkpoint.error) {
    throw new Error(describe(checkpoint.error));
  }
  const tile = await api.GET("/admin/integrity/tile/{tile_path}", {
    headers,
    params: { path: { tile_path: "0/000" } },
    parseAs: "blob",
  });
  if (tile.error) {
    throw new Error(describe(tile.error));
  }
  return [checkpoint.data, tile.data];
}

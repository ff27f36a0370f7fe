// A Baton client for Node (18 or newer), with no dependencies: enqueue a build over `baton serve`,
// follow it live (server-sent events), and verify the signed webhook of its end.
//
// Use the three functions in your backend; run this file to see them work end to end:
//
//   BATON_API_URL=http://127.0.0.1:8080 BATON_API_TOKEN=... BATON_WEBHOOK_SECRET=whsec_... \
//   WEBHOOK_PORT=9000 node examples/node/baton-client.mjs
//
// (the workers need BATON_WEBHOOK_URL=http://<this host>:9000/webhook and the same secret).

import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

/** Enqueues a build; the idempotency key makes a retry return the same build. */
export async function enqueueBuild(api, token, job, idempotencyKey) {
  const res = await fetch(`${api}/v1/builds`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      ...(idempotencyKey ? { "idempotency-key": idempotencyKey } : {}),
    },
    body: JSON.stringify(job),
  });
  const body = await res.json();
  if (!res.ok) throw new Error(`enqueue: ${res.status} ${body.error?.code}: ${body.error?.message}`);
  return body; // {build_id, stream_id, status}
}

/**
 * Yields the build's events until its final one (job_completed, job_failed, job_cancelled).
 * Reconnects after a dropped connection with Last-Event-ID, so nothing is missed or repeated.
 */
export async function* followBuild(api, token, buildId) {
  let lastId = null;
  for (;;) {
    const res = await fetch(`${api}/v1/builds/${encodeURIComponent(buildId)}/events`, {
      headers: { authorization: `Bearer ${token}`, ...(lastId ? { "last-event-id": lastId } : {}) },
    });
    if (!res.ok) throw new Error(`events: ${res.status} ${await res.text()}`);
    const decoder = new TextDecoder();
    let buffer = "";
    let frame = { id: null, event: null, data: "" };
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline).replace(/\r$/, "");
          buffer = buffer.slice(newline + 1);
          if (line === "") {
            if (frame.data) {
              const event = JSON.parse(frame.data);
              if (frame.id) lastId = frame.id;
              yield event;
              if (["job_completed", "job_failed", "job_cancelled"].includes(event.event)) return;
            }
            frame = { id: null, event: null, data: "" };
          } else if (line.startsWith("id:")) frame.id = line.slice(3).trim();
          else if (line.startsWith("event:")) frame.event = line.slice(6).trim();
          else if (line.startsWith("data:")) frame.data += line.slice(5).trimStart();
          // Lines starting with ":" are keep-alives.
        }
      }
    } catch (e) {
      // The connection dropped: reconnect after a moment, from the last event seen.
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    // The server ended the stream without a final event (it restarted): reconnect.
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/**
 * Verifies a webhook as Standard Webhooks says: the HMAC-SHA256 of "<id>.<timestamp>.<body>" with
 * any of the secrets (comma-separated `whsec_<base64>`), and a timestamp within five minutes.
 * Returns the parsed payload, or throws.
 */
export function verifyWebhook(secrets, headers, rawBody) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = (headers["webhook-signature"] || "").split(" ");
  if (!id || !timestamp) throw new Error("missing webhook headers");
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > 300) throw new Error("stale timestamp");
  for (const secret of secrets.split(",").map((s) => s.trim()).filter(Boolean)) {
    const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
    const expected = createHmac("sha256", key).update(`${id}.${timestamp}.${rawBody}`).digest();
    for (const signature of signatures) {
      const [version, value] = signature.split(",");
      const given = Buffer.from(value || "", "base64");
      if (version === "v1" && given.length === expected.length && timingSafeEqual(given, expected)) {
        return JSON.parse(rawBody);
      }
    }
  }
  throw new Error("no valid signature");
}

/** Receives webhooks on `port`; calls `onWebhook(payload)` for each verified one. */
export function receiveWebhooks(port, secrets, onWebhook) {
  const server = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      try {
        const payload = verifyWebhook(secrets, req.headers, body);
        res.writeHead(204).end(); // Answer 2xx fast; Baton retries anything else.
        onWebhook(payload, req.headers["webhook-id"]);
      } catch (e) {
        res.writeHead(400).end(String(e.message));
      }
    });
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

async function main() {
  const api = process.env.BATON_API_URL || "http://127.0.0.1:8080";
  const token = process.env.BATON_API_TOKEN || "";
  const secrets = process.env.BATON_WEBHOOK_SECRET || "";
  const port = Number(process.env.WEBHOOK_PORT || 9000);
  const project = process.env.PROJECT || "node-example";

  let webhook;
  const arrived = new Promise((resolve) => (webhook = resolve));
  const server = await receiveWebhooks(port, secrets, (payload, id) => webhook({ payload, id }));

  const build = await enqueueBuild(
    api,
    token,
    { kind: "create", project_id: project, version_id: `${project}-v1`, prompt: "Create a hello-world page" },
    `${project}-v1`,
  );
  const events = [];
  for await (const event of followBuild(api, token, build.build_id)) {
    events.push(event.event);
    console.error(`${event.event}${event.step ? ` ${event.step}` : ""}${event.session_id ? ` ${event.session_id}` : ""}`);
  }
  const { payload, id } = await Promise.race([
    arrived,
    new Promise((_, reject) => setTimeout(() => reject(new Error("no webhook within 60 s")), 60000)),
  ]);
  server.close();
  console.log(
    JSON.stringify({
      build_id: build.build_id,
      events,
      webhook_id: id,
      webhook_type: payload.type,
      status: payload.data.status,
      session_id: payload.data.session_id,
      verified: true,
    }),
  );
  process.exit(payload.data.status === "completed" ? 0 : 1);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((e) => {
    console.error(`error: ${e.message}`);
    process.exit(1);
  });
}

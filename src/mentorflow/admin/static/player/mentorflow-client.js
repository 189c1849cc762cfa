// A small typed client of the mentorflow learner API (/v1), one method per operation.
//
// An ES module with no build step and no dependencies: a page imports it as it is (the player
// does), and so does Node 20 or later. The types are JSDoc, checked by `tsc --checkJs` in
// tests/test_clients.py; an editor shows them as it would a .d.ts.
//
//   import { MentorflowClient } from "/play/_static/mentorflow-client.js";
//   const api = new MentorflowClient({ org: "demo", key: "pk_…" });
//   const started = await api.startSession("rafael-tats", { name: "Ada" });
//   if (started.ok) {
//     const { session, step, token } = started.data;
//     await api.submitStep(session.id, { step_id: step.id, answer: "…" },
//       { token, ifMatch: session.version });
//   }
//
// Every method resolves, never rejects: to {ok: true, data} for the documented success, to
// {ok: false, problem} for an RFC 9457 problem (a 409's problem also carries the session and
// step to re-render), or to {ok: false, network: true} when no response came.

/** @typedef {"active" | "completed" | "abandoned"} SessionStatus */

/**
 * @typedef {object} Progress
 * @property {number} completed steps answered on the session's path
 * @property {number} total steps on the path as far as it is known
 * @property {number} percent 0 to 100
 */

/** @typedef {{name: string | null, email: string | null, phone: string | null}} Contact */

/**
 * What a step's answer is: a choice's value, several values, text, a number, yes or no, a
 * contact's fields, or null for an optional step left empty.
 * @typedef {string | string[] | number | boolean | Partial<Contact> | null} Answer
 */

/**
 * @typedef {object} Session
 * @property {string} id
 * @property {string} org
 * @property {string} flow
 * @property {number} flow_version
 * @property {SessionStatus} status
 * @property {string | null} current_step_id
 * @property {Record<string, Answer>} answers by step key
 * @property {string[]} completed_step_ids in the order they were completed
 * @property {Progress} progress
 * @property {string | null} name
 * @property {string | null} email
 * @property {string | null} phone
 * @property {string | null} external_user_id
 * @property {string} memory_container
 * @property {number} version what If-Match names
 * @property {string} created_at
 * @property {string} updated_at
 * @property {string | null} completed_at
 */

/**
 * @typedef {object} StepBase
 * @property {string} id
 * @property {string} [key] where the answer is kept in `session.answers`
 * @property {string} [prompt]
 * @property {string} [body]
 * @property {boolean} required
 * @property {string} phase_id
 * @property {string} phase_title
 */

/** @typedef {{value: string, label: string}} ChoiceOption */
/** @typedef {"name" | "email" | "phone"} ContactField */

/** @typedef {StepBase & {type: "info"}} InfoStep */
/** @typedef {StepBase & {type: "video", video_url: string}} VideoStep */
/** @typedef {StepBase & {type: "single_choice", options: ChoiceOption[]}} SingleChoiceStep */
/**
 * @typedef {StepBase & {type: "multi_choice", options: ChoiceOption[], min_selected?: number,
 *   max_selected?: number}} MultiChoiceStep
 */
/** @typedef {StepBase & {type: "text" | "long_text", max_length?: number}} TextStep */
/** @typedef {StepBase & {type: "number" | "scale", min?: number | null, max?: number | null, min_label?: string, max_label?: string}} NumberStep */
/** @typedef {StepBase & {type: "boolean" | "email" | "phone"}} PlainStep */
/** @typedef {StepBase & {type: "contact", fields?: ContactField[]}} ContactStep */

/**
 * A step, told apart by its `type`.
 * @typedef {InfoStep | VideoStep | SingleChoiceStep | MultiChoiceStep | TextStep | NumberStep
 *   | PlainStep | ContactStep} Step
 */

/**
 * Where a session stands: `step` is null once it is completed.
 * @typedef {{session: Session, step: Step | null}} SessionState
 */

/** @typedef {SessionState & {token: string}} SessionCreated */

/**
 * One queued answer of an offline batch: the submission and the key its own POST would send.
 * @typedef {{step_id: string, answer?: Answer, idempotency_key: string}} BatchItem
 */

/**
 * What became of one item: `skipped` items came after the first `conflict` or `invalid` one.
 * @typedef {object} BatchItemResult
 * @property {number} index
 * @property {"applied" | "replayed" | "conflict" | "invalid" | "skipped"} outcome
 * @property {number} status what the single POST would have answered (424 when skipped)
 * @property {Record<string, string[]>} [errors]
 */

/** @typedef {SessionState & {results: BatchItemResult[]}} BatchOutcome */

/**
 * @typedef {object} PublishedFlow
 * @property {string} org
 * @property {string} slug
 * @property {string} title
 * @property {number} version
 * @property {string} checksum
 * @property {string} published_at
 * @property {{slug?: string, title?: string, description?: string, phases: Array<{id: string,
 *   title: string, steps: Step[]}>}} definition
 */

/**
 * @typedef {object} SessionContext
 * @property {Record<string, Answer>} answers
 * @property {string[]} completed_step_ids
 * @property {string[]} completed_phases
 * @property {string | null} current_phase
 * @property {Progress} progress
 * @property {Contact} contact
 */

/**
 * @typedef {object} Job
 * @property {number} id
 * @property {string} kind
 * @property {"pending" | "running" | "completed" | "failed"} status
 * @property {number} progress 0 to 100
 * @property {string | null} download_url
 * @property {string | null} raw_download_url
 * @property {string | null} error
 */

/**
 * An RFC 9457 problem. A 422 names the fields in `errors` (`answer`, `answer.email`); a 409
 * carries the `session` and `step` a stale tab re-renders from.
 * @typedef {object} Problem
 * @property {string} type a URN such as urn:mentorflow:problem:step-conflict
 * @property {string} title
 * @property {number} status
 * @property {string} [detail]
 * @property {Record<string, string[]>} [errors]
 * @property {Session} [session]
 * @property {Step | null} [step]
 */

/**
 * @template T
 * @typedef {{ok: true, network: false, status: number, data: T, headers: Headers}
 *   | {ok: false, network: false, status: number, problem: Problem, headers: Headers}
 *   | {ok: false, network: true, status: 0}} Result
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} org the org's slug
 * @property {string} [key] a publishable (pk_…) or secret (sk_…) key
 * @property {string} [baseUrl] where the server is; "" (the default) is this page's origin
 * @property {number} [timeoutMs] give up on a request after this long (default 20 s)
 * @property {typeof fetch} [fetch]
 */

/**
 * @typedef {object} WriteOptions
 * @property {string} [token] the session's token (st_…); the client's key when omitted
 * @property {string} [idempotencyKey] the same key for every retry of one attempt
 * @property {number} [ifMatch] the session version the caller saw
 */

const DEFAULT_TIMEOUT_MS = 20000;

/** Return a fresh Idempotency-Key (a random UUID). */
export function newIdempotencyKey() {
  if (typeof globalThis.crypto.randomUUID === "function") return globalThis.crypto.randomUUID();
  // randomUUID needs a secure context; getRandomValues does not.
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export class MentorflowClient {
  /** @param {ClientOptions} options */
  constructor({ org, key = "", baseUrl = "", timeoutMs = DEFAULT_TIMEOUT_MS, fetch: fetchImpl }) {
    this.orgUrl = `${baseUrl.replace(/\/+$/, "")}/v1/orgs/${encodeURIComponent(org)}`;
    this.key = key;
    this.timeoutMs = timeoutMs;
    this.fetch = fetchImpl ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * Read a flow's published definition (publishable or secret key).
   * @param {string} flow
   * @returns {Promise<Result<PublishedFlow>>}
   */
  getPublishedFlow(flow) {
    return this.#call("GET", `/flows/${encodeURIComponent(flow)}`, { token: this.key });
  }

  /**
   * Start a session on the flow's published version; the token in the answer is shown once.
   * With a learner token (``token``, lt_…) it starts as that learner; with ``resume: true``
   * it answers 200 with their active session of the flow, if any (and no new token).
   * @param {string} flow
   * @param {{name?: string, email?: string, phone?: string, external_user_id?: string,
   *   resume?: boolean}} [contact]
   * @param {{idempotencyKey?: string, token?: string}} [options]
   * @returns {Promise<Result<SessionCreated>>}
   */
  startSession(flow, contact = {}, { idempotencyKey, token } = {}) {
    return this.#call("POST", `/flows/${encodeURIComponent(flow)}/sessions`, {
      token: token ?? this.key,
      body: contact,
      idempotencyKey,
    });
  }

  /**
   * Make an anonymous session the signed-in learner's (claimSession): ``token`` is the
   * learner's token (lt_…), ``sessionToken`` the session's own (st_…). 200 {session} also
   * when the learner owned it already; 409 when it is another learner's.
   * @param {string} sessionId
   * @param {{token: string, sessionToken: string}} options
   * @returns {Promise<Result<{session: Session}>>}
   */
  claimSession(sessionId, { token, sessionToken }) {
    return this.#call("POST", sessionPath(sessionId, "/claim"), {
      token,
      headers: { "X-Session-Token": sessionToken },
    });
  }

  /**
   * Read a learner's own state (getLearnerState): {state, version}.
   * @param {string} ext the org's user id
   * @param {{token?: string, ifNoneMatch?: number}} [options]
   * @returns {Promise<Result<{state: object, version: number}>>}
   */
  getLearnerState(ext, { token, ifNoneMatch } = {}) {
    return this.#call("GET", `/learners/${encodeURIComponent(ext)}/state`, {
      token: token ?? this.key,
      ifNoneMatch,
    });
  }

  /**
   * Merge-patch a learner's state (patchLearnerState, RFC 7396: null removes a member), if
   * it is still at version ``ifMatch``; a 412's problem carries the current state and version.
   * @param {string} ext
   * @param {object} patch
   * @param {{token?: string, ifMatch: number}} options
   * @returns {Promise<Result<{state: object, version: number}>>}
   */
  patchLearnerState(ext, patch, { token, ifMatch }) {
    return this.#call("PATCH", `/learners/${encodeURIComponent(ext)}/state`, {
      token: token ?? this.key,
      body: patch,
      ifMatch,
      contentType: "application/merge-patch+json",
    });
  }

  /**
   * Read a session and its current step (what a page refresh shows). With ``ifNoneMatch``
   * (the version the caller holds), a 304 (``data`` null) when it is still current.
   * @param {string} sessionId
   * @param {{token?: string, ifNoneMatch?: number}} [options]
   * @returns {Promise<Result<SessionState>>}
   */
  getSession(sessionId, { token, ifNoneMatch } = {}) {
    return this.#call("GET", sessionPath(sessionId), { token: token ?? this.key, ifNoneMatch });
  }

  /**
   * Mint a short-lived ticket that opens the session's stream (EventSource sends no headers).
   * @param {string} sessionId
   * @param {{token?: string}} [options]
   * @returns {Promise<Result<{ticket: string, expires_at: string}>>}
   */
  mintStreamTicket(sessionId, { token } = {}) {
    return this.#call("POST", sessionPath(sessionId, "/stream-tickets"), { token: token ?? this.key });
  }

  /**
   * The URL of the session's stream (streamSession) opened with a ticket, for EventSource.
   * @param {string} sessionId
   * @param {string} ticket from mintStreamTicket
   */
  streamSessionUrl(sessionId, ticket) {
    return `${this.orgUrl}${sessionPath(sessionId, "/stream")}?ticket=${encodeURIComponent(ticket)}`;
  }

  /**
   * Follow a session live: ``onState`` gets each newer {session, step}. Uses the session's
   * stream (server-sent events); when streams are unavailable (503, no EventSource, the
   * network), polls getSession with If-None-Match every ``pollMs`` instead, and tries the
   * stream again later. Returns a handle whose ``close()`` stops following.
   * @param {string} sessionId
   * @param {{token?: string, version?: number, pollMs?: number,
   *   onState: (state: SessionState) => void, onGone?: (status: number) => void}} options
   * @returns {{close: () => void, readonly mode: string}}
   */
  followSession(sessionId, { token, version = 0, pollMs = 3000, onState, onGone }) {
    let closed = false;
    /** @type {EventSource | null} */
    let source = null;
    /** @type {ReturnType<typeof setTimeout> | null} */
    let timer = null;
    let seen = version;
    let mode = "starting";
    /** @param {SessionState | null | undefined} state */
    const deliver = (state) => {
      if (closed || !state || !state.session || state.session.version <= seen) return;
      seen = state.session.version;
      onState(state);
    };
    /**
     * @param {() => void} next
     * @param {number} ms
     */
    const later = (next, ms) => {
      if (!closed) timer = setTimeout(next, ms);
    };
    /**
     * @param {number} rounds
     * @returns {Promise<void>}
     */
    const poll = async (rounds) => {
      mode = "polling";
      const result = await this.getSession(sessionId, { token, ifNoneMatch: seen });
      if (closed) return;
      if (result.ok && result.status === 200) deliver(result.data);
      if (!result.ok && !result.network && (result.status === 401 || result.status === 404)) {
        onGone?.(result.status);
        return;
      }
      // Every tenth round, see whether the stream is back.
      later(() => (rounds % 10 === 9 ? stream() : poll(rounds + 1)), pollMs);
    };
    /** @returns {Promise<void>} */
    const stream = async () => {
      if (typeof globalThis.EventSource !== "function") return poll(0);
      const minted = await this.mintStreamTicket(sessionId, { token });
      if (closed) return;
      if (!minted.ok) {
        if (!minted.network && (minted.status === 401 || minted.status === 404)) {
          onGone?.(minted.status);
          return;
        }
        return poll(0);
      }
      mode = "streaming";
      const opened = new globalThis.EventSource(this.streamSessionUrl(sessionId, minted.data.ticket));
      source = opened;
      opened.addEventListener("state", (event) => deliver(JSON.parse(event.data)));
      source.addEventListener("error", () => {
        // EventSource retries by itself; once it gives up (a used-up ticket is a 401), a fresh
        // ticket, after a catch-up read in case something was missed meanwhile.
        if (source === opened && opened.readyState === globalThis.EventSource.CLOSED) {
          source = null;
          later(async () => {
            const result = await this.getSession(sessionId, { token, ifNoneMatch: seen });
            if (result.ok && result.status === 200) deliver(result.data);
            stream();
          }, 1000);
        }
      });
    };
    stream();
    return {
      close() {
        closed = true;
        if (timer) clearTimeout(timer);
        if (source) source.close();
      },
      get mode() {
        return mode;
      },
    };
  }

  /**
   * Answer the current step. A 409 problem carries where the session really is.
   * @param {string} sessionId
   * @param {{step_id: string, answer?: Answer}} submission
   * @param {WriteOptions} [options]
   * @returns {Promise<Result<SessionState>>}
   */
  submitStep(sessionId, submission, { token, idempotencyKey, ifMatch } = {}) {
    return this.#call("POST", sessionPath(sessionId, "/steps"), {
      token: token ?? this.key,
      body: submission,
      idempotencyKey,
      ifMatch,
    });
  }

  /**
   * Answer several steps in order (answers given offline): each item is taken exactly as
   * submitStep with its idempotency_key would take it, up to the first conflict or invalid
   * item. Safe to retry whole: taken items come back "replayed".
   * @param {string} sessionId
   * @param {BatchItem[]} items 1 to 100
   * @param {{token?: string}} [options]
   * @returns {Promise<Result<BatchOutcome>>}
   */
  submitStepBatch(sessionId, items, { token } = {}) {
    return this.#call("POST", sessionPath(sessionId, "/steps/batch"), {
      token: token ?? this.key,
      body: { items },
    });
  }

  /**
   * Go back to a step the session already completed; answers are kept.
   * @param {string} sessionId
   * @param {{step_id: string}} target
   * @param {WriteOptions} [options]
   * @returns {Promise<Result<SessionState>>}
   */
  goBack(sessionId, target, { token, idempotencyKey, ifMatch } = {}) {
    return this.#call("POST", sessionPath(sessionId, "/back"), {
      token: token ?? this.key,
      body: target,
      idempotencyKey,
      ifMatch,
    });
  }

  /**
   * Read the session's answers and position, for chat or AI callers.
   * @param {string} sessionId
   * @param {{token?: string}} [options]
   * @returns {Promise<Result<SessionContext>>}
   */
  getSessionContext(sessionId, { token } = {}) {
    return this.#call("GET", sessionPath(sessionId, "/context"), { token: token ?? this.key });
  }

  /**
   * Add a message to the session's conversation (about a step: the current one by default).
   * @param {string} sessionId
   * @param {{role: "user"|"assistant"|"system"|"tool", content: string, step_id?: string|null, metadata?: object}} message
   * @param {{token?: string, idempotencyKey?: string}} [options]
   * @returns {Promise<Result<{message: Message}>>}
   */
  postSessionMessage(sessionId, message, { token, idempotencyKey } = {}) {
    return this.#call("POST", sessionPath(sessionId, "/messages"), {
      token: token ?? this.key,
      body: message,
      idempotencyKey,
    });
  }

  /**
   * Read a page of the session's conversation, oldest message first.
   * @param {string} sessionId
   * @param {{token?: string, after?: string|number, limit?: number}} [options]
   * @returns {Promise<Result<{items: Message[], next_cursor: string|null}>>}
   */
  listSessionMessages(sessionId, { token, after, limit } = {}) {
    const query = new URLSearchParams();
    if (after !== undefined && after !== null) query.set("after", String(after));
    if (limit) query.set("limit", String(limit));
    const suffix = query.toString() ? `/messages?${query}` : "/messages";
    return this.#call("GET", sessionPath(sessionId, suffix), { token: token ?? this.key });
  }

  /**
   * Read a background job's status (secret key).
   * @param {number} jobId
   * @returns {Promise<Result<Job>>}
   */
  getJob(jobId) {
    return this.#call("GET", `/jobs/${encodeURIComponent(String(jobId))}`, { token: this.key });
  }

  /**
   * @template T
   * @param {string} method
   * @param {string} path below the org's URL
   * @param {{token: string, body?: object, idempotencyKey?: string, ifMatch?: number,
   *   ifNoneMatch?: number, headers?: Record<string, string>, contentType?: string}} request
   * @returns {Promise<Result<T>>}
   */
  async #call(
    method,
    path,
    { token, body, idempotencyKey, ifMatch, ifNoneMatch, headers: extra, contentType },
  ) {
    /** @type {Record<string, string>} */
    const headers = { Accept: "application/json, application/problem+json", ...(extra ?? {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    if (ifMatch !== undefined) headers["If-Match"] = `"${ifMatch}"`;
    if (ifNoneMatch) headers["If-None-Match"] = `"${ifNoneMatch}"`;
    if (body !== undefined) headers["Content-Type"] = contentType ?? "application/json";
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    try {
      const response = await this.fetch(this.orgUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        signal: controller.signal,
      });
      const data = await response.json().catch(() => null);
      if (response.ok || response.status === 304) {
        return { ok: true, network: false, status: response.status, data, headers: response.headers };
      }
      return {
        ok: false,
        network: false,
        status: response.status,
        problem: asProblem(data, response.status),
        headers: response.headers,
      };
    } catch {
      return { ok: false, network: true, status: 0 };
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * @param {string} sessionId
 * @param {string} [suffix]
 */
function sessionPath(sessionId, suffix = "") {
  return `/sessions/${encodeURIComponent(sessionId)}${suffix}`;
}

/**
 * Return the body as a problem, or a bare one when a proxy answered with something else.
 * @param {unknown} data
 * @param {number} status
 * @returns {Problem}
 */
function asProblem(data, status) {
  if (data && typeof data === "object" && "status" in data && "title" in data) {
    return /** @type {Problem} */ (data);
  }
  return { type: "about:blank", title: `HTTP ${status}`, status };
}

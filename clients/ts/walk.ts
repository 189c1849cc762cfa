// Walk a published flow in TypeScript, typed only by what openapi-typescript generates from
// /v1/openapi.json: no hand-written API type and no `any`.
//
//   npm ci && npm run generate              # writes generated/mentorflow.d.ts
//   npx tsc -p tsconfig.json                # type-checks, and emits build/clients/ts/walk.js
//   node build/clients/ts/walk.js http://127.0.0.1:5000 demo rafael-tats pk_…
//
// It shows a bad answer's 422 (the field named, nothing changed), walks to the end, and on
// the way answers a step a second time as a stale tab would: the 409 carries the session and
// step to re-render from. It prints one JSON line that tests/test_clients.py reads.
import type { components, operations } from "mentorflow-api";

type Schemas = components["schemas"];
type PublishedFlow = operations["getPublishedFlow"]["responses"][200]["content"]["application/json"];
type StartBody = NonNullable<operations["startSession"]["requestBody"]>["content"]["application/json"];
type StartHeaders = NonNullable<operations["startSession"]["parameters"]["header"]>;
type SessionCreated = operations["startSession"]["responses"][201]["content"]["application/json"];
type SessionState = operations["submitStep"]["responses"][200]["content"]["application/json"];
type Submission = operations["submitStep"]["requestBody"]["content"]["application/json"];
type SubmitHeaders = NonNullable<operations["submitStep"]["parameters"]["header"]>;
type Conflict = operations["submitStep"]["responses"][409]["content"]["application/problem+json"];
type Invalid = operations["submitStep"]["responses"][422]["content"]["application/problem+json"];
type Step = NonNullable<SessionState["step"]>;
type Answer = Submission["answer"];

// Each entry fails to compile if the document leaves that field untyped (any or unknown).
type Loose<T> = 0 extends 1 & T ? true : unknown extends T ? true : false;
type Typed<T extends false> = T;
export type TypedFields = [
  Typed<Loose<SessionCreated["token"]>>,
  Typed<Loose<SessionState["session"]["version"]>>,
  Typed<Loose<SessionState["session"]["answers"]>>,
  Typed<Loose<Step>>,
  Typed<Loose<Answer>>,
  Typed<Loose<Conflict["session"]>>,
  Typed<Loose<Conflict["step"]>>,
  Typed<Loose<Invalid["errors"]>>,
  Typed<Loose<Invalid["detail"]>>,
  Typed<Loose<PublishedFlow["definition"]>>,
  Typed<Loose<Schemas["Session"]["status"]>>,
];

const CONTACT = { name: "Ada", email: "ada@example.com", phone: "+1 555 010 0199" } as const;

/** Return an answer that fits the step; `switch` on the union's tag types each branch. */
function exampleAnswer(step: Step): Answer {
  switch (step.type) {
    case "info":
    case "video":
      return null;
    case "single_choice":
      return step.options[0]?.value ?? null;
    case "multi_choice":
      return step.options.slice(0, Math.max(1, step.min_selected)).map((option) => option.value);
    case "text":
    case "long_text":
      return "Still figuring that out.";
    case "number":
    case "scale":
      return step.min ?? 1;
    case "boolean":
      return true;
    case "email":
      return CONTACT.email;
    case "phone":
      return CONTACT.phone;
    case "contact": {
      const answer: Schemas["ContactAnswer"] = {};
      for (const field of step.fields) answer[field] = CONTACT[field];
      return answer;
    }
  }
}

class Api {
  constructor(
    readonly orgUrl: string,
    readonly token: string,
  ) {}

  async call(
    method: "GET" | "POST",
    path: string,
    body?: StartBody | Submission,
    headers: Partial<StartHeaders & SubmitHeaders> = {},
  ): Promise<{ status: number; body: unknown }> {
    const sent: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    for (const [name, value] of Object.entries(headers)) if (value !== undefined) sent[name] = String(value);
    if (body !== undefined) sent["Content-Type"] = "application/json";
    const response = await fetch(this.orgUrl + path, {
      method,
      headers: sent,
      body: body === undefined ? null : JSON.stringify(body),
    });
    return { status: response.status, body: await response.json() };
  }
}

function expectStatus<T>(answer: { status: number; body: unknown }, status: number): T {
  if (answer.status !== status) {
    throw new Error(`expected ${status}, got ${answer.status}: ${JSON.stringify(answer.body)}`);
  }
  return answer.body as T;
}

async function submit(api: Api, state: SessionState, answer: Answer, version?: number) {
  if (state.step === null) throw new Error("the session is already completed");
  const headers: SubmitHeaders = {
    "Idempotency-Key": crypto.randomUUID(),
    "If-Match": `"${version ?? state.session.version}"`,
  };
  const submission: Submission = { step_id: state.step.id, answer };
  return api.call("POST", `/sessions/${encodeURIComponent(state.session.id)}/steps`, submission, headers);
}

async function main([baseUrl, org, flow, key]: string[]): Promise<void> {
  if (!baseUrl || !org || !flow || !key) throw new Error("usage: walk.js BASE_URL ORG FLOW PUBLISHABLE_KEY");
  const orgUrl = `${baseUrl}/v1/orgs/${encodeURIComponent(org)}`;
  const publishable = new Api(orgUrl, key);
  const published = expectStatus<PublishedFlow>(await publishable.call("GET", `/flows/${flow}`), 200);
  const start: StartBody = { name: "Ada" };
  const startHeaders: StartHeaders = { "Idempotency-Key": crypto.randomUUID() };
  const created = expectStatus<SessionCreated>(
    await publishable.call("POST", `/flows/${flow}/sessions`, start, startHeaders),
    201,
  );
  const learner = new Api(orgUrl, created.token);
  let state: SessionState = { session: created.session, step: created.step };

  // A list of values that are no option of any step: a 422 naming `answer`, nothing saved.
  const invalid = expectStatus<Invalid>(await submit(learner, state, ["no-such-option"]), 422);
  const first = state;
  state = expectStatus<SessionState>(await submit(learner, state, first.step && exampleAnswer(first.step)), 200);
  // Another tab still shows the first step: the 409 says where the session really is.
  const conflict = expectStatus<Conflict>(await submit(learner, first, exampleAnswer(first.step!)), 409);
  if (conflict.session.version !== state.session.version || conflict.step?.id !== state.step?.id) {
    throw new Error("the 409 does not carry the session's current state");
  }
  state = { session: conflict.session, step: conflict.step };

  while (state.step !== null) {
    state = expectStatus<SessionState>(await submit(learner, state, exampleAnswer(state.step)), 200);
  }
  const { status, progress } = state.session;
  console.log(
    JSON.stringify({
      flow: published.title,
      invalid: { status: invalid.status, fields: Object.keys(invalid.errors ?? {}) },
      conflict: { status: conflict.status, type: conflict.type, step: first.step?.id },
      session: { status, completed: progress.completed, total: progress.total },
    }),
  );
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});

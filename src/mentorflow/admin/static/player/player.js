// The mentorflow player: walks a published flow through the public learner API.
//
// The server is the only source of truth. The page keeps nothing but {session_id, token} in
// localStorage; every render comes from the {session, step} the API just returned, and a
// reload is a GET of the session. Every call goes through mentorflow-client.js, the same
// typed client any other page can import.
//
// Offline (the browser says so), answers go into a queue kept with the id and token
// ({step_id, answer, idempotency_key} each, nothing else) and the next step is worked out here
// from the published definition and its jump rules; back online, the queue is sent as one
// batch (submitStepBatch) and the page shows what was taken, then renders the server's state.
import { MentorflowClient, newIdempotencyKey } from "./mentorflow-client.js";

(() => {
  const root = document.getElementById("player");
  if (!root) return;

  const config = {
    org: root.dataset.org,
    flow: root.dataset.flow,
    key: root.dataset.key,
    baseUrl: root.dataset.baseUrl,
    // Origins (besides this page's own) whose pages may hand the player a learner token.
    allowedOrigins: (root.dataset.allowedOrigins || "").split(" ").filter(Boolean),
    // "Try the draft": the console started a preview session and hands its id and token.
    preview: root.dataset.previewSession
      ? { session_id: root.dataset.previewSession, token: root.dataset.previewToken }
      : null,
  };
  const STORAGE_KEY = config.preview
    ? `mentorflow.preview:${config.preview.session_id}`
    : `mentorflow.player:${config.org}:${config.flow}`;
  const REQUEST_TIMEOUT_MS = 20000;
  const NO_ANSWER_TYPES = new Set(["info", "video"]);
  const SCALE_BUTTONS_MAX = 11;
  const CONTACT_LABELS = { name: "Name", email: "Email", phone: "Phone" };
  const CONTACT_INPUTS = {
    name: { type: "text", autocomplete: "name" },
    email: { type: "email", autocomplete: "email", inputmode: "email" },
    phone: { type: "tel", autocomplete: "tel", inputmode: "tel" },
  };

  const el = {
    screen: document.getElementById("screen"),
    status: document.getElementById("status"),
    alert: document.getElementById("alert"),
    phase: document.getElementById("phase-title"),
    progress: document.getElementById("progress"),
    progressBar: document.getElementById("progress-bar"),
    progressFill: document.getElementById("progress-fill"),
    progressLabel: document.getElementById("progress-label"),
    footer: document.getElementById("footer"),
    startOver: document.getElementById("start-over"),
    startOverPrompt: document.getElementById("start-over-prompt"),
    startOverConfirm: document.getElementById("start-over-confirm"),
    startOverCancel: document.getElementById("start-over-cancel"),
  };

  let credentials = null; // {session_id, token}
  let queue = []; // answers given offline, in order: [{step_id, answer?, idempotency_key}]
  let flushing = false;
  let published = null; // the published flow (getPublishedFlow), to walk it offline
  let attempt = null; // the step submission in flight or waiting for a retry
  let busy = false;
  let follower = null; // the session followed live (its stream, else polling)
  let shownVersion = 0; // the server version of the state on screen
  let learnerToken = null; // lt_… handed over by the embedding page once the user signs in

  // ---- storage: only the session id and its token ----

  const memoryStore = new Map(); // when the browser refuses storage (some third-party iframes)

  function loadCredentials() {
    let raw = null;
    try {
      raw = window.localStorage.getItem(STORAGE_KEY);
    } catch {
      raw = memoryStore.get(STORAGE_KEY) ?? null;
    }
    if (!raw) return null;
    try {
      const saved = JSON.parse(raw);
      if (typeof saved.session_id === "string" && typeof saved.token === "string") {
        queue = Array.isArray(saved.queue) ? saved.queue : [];
        return { session_id: saved.session_id, token: saved.token };
      }
    } catch {
      // Unreadable: treat as absent.
    }
    return null;
  }

  function saveCredentials(value) {
    const saved = { session_id: value.session_id, token: value.token };
    if (queue.length) saved.queue = queue;
    const raw = JSON.stringify(saved);
    try {
      window.localStorage.setItem(STORAGE_KEY, raw);
    } catch {
      memoryStore.set(STORAGE_KEY, raw);
    }
  }

  function forgetCredentials() {
    try {
      window.localStorage.removeItem(STORAGE_KEY);
    } catch {
      // Nothing stored there.
    }
    memoryStore.delete(STORAGE_KEY);
    credentials = null;
    unfollow();
    queue = [];
  }

  // ---- the API ----

  const client = new MentorflowClient({
    org: config.org,
    key: config.key,
    baseUrl: config.baseUrl,
    timeoutMs: REQUEST_TIMEOUT_MS,
  });
  let pendingStart = null; // {key, body} of a start whose answer never came

  // ---- small DOM helpers (text only: nothing from the server is parsed as HTML) ----

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Blank lines separate paragraphs; single newlines stay line breaks.
  function paragraphs(text, attrs = {}) {
    const box = h("div", { class: "body", ...attrs });
    for (const block of String(text).split(/\n\s*\n/)) {
      const p = h("p");
      block.split("\n").forEach((line, index) => {
        if (index > 0) p.append(h("br"));
        p.append(line);
      });
      box.append(p);
    }
    return box;
  }

  let uid = 0;
  const nextId = (prefix) => `${prefix}-${++uid}`;

  // ---- notices ----

  function showStatus(message) {
    el.status.textContent = message || "";
    el.status.hidden = !message;
  }

  function clearAlert() {
    el.alert.replaceChildren();
    el.alert.hidden = true;
  }

  function showAlert(message, retry) {
    el.alert.replaceChildren(h("p", { text: message }));
    if (retry) {
      el.alert.append(
        h("button", {
          type: "button",
          class: "button button--small",
          text: "Try again",
          onclick: () => {
            clearAlert();
            retry();
          },
        }),
      );
    }
    el.alert.hidden = false;
  }

  function retryAfterMessage(result) {
    const seconds = Number.parseInt(result.headers?.get("Retry-After") ?? "", 10);
    return Number.isFinite(seconds)
      ? `Too many requests right now. Please try again in ${seconds} s.`
      : "Too many requests right now. Please try again in a moment.";
  }

  function problemDetail(result, fallback) {
    const problem = result.problem;
    return (problem && (problem.detail || problem.title)) || fallback;
  }

  // ---- chrome: phase, progress, footer ----

  function setProgress(session, step) {
    const progress = session && session.progress;
    if (!progress) {
      el.progress.hidden = true;
      return;
    }
    const percent = Math.max(0, Math.min(100, progress.percent));
    el.progress.hidden = false;
    el.progressFill.style.width = `${percent}%`;
    el.progressBar.setAttribute("aria-valuenow", String(percent));
    const where = step
      ? `Step ${Math.min(progress.completed + 1, progress.total)} of ${progress.total}`
      : `${progress.completed} of ${progress.total} steps`;
    el.progressLabel.textContent = `${where} · ${percent}% complete`;
    el.progressBar.setAttribute("aria-valuetext", `${percent}% complete`);
  }

  function setChrome({ phase = "", session = null, step = null, footer = false } = {}) {
    el.phase.textContent = phase;
    el.phase.hidden = !phase;
    setProgress(session, step);
    el.footer.hidden = !footer;
    el.startOverPrompt.hidden = true;
    el.startOver.hidden = false;
  }

  function setScreen(...children) {
    el.screen.replaceChildren(...children);
    root.setAttribute("aria-busy", "false");
  }

  function focusHeading(focus) {
    if (!focus) return;
    const heading = el.screen.querySelector("[data-focus]");
    if (heading) heading.focus({ preventScroll: false });
  }

  function renderLoading() {
    root.setAttribute("aria-busy", "true");
    el.screen.replaceChildren(h("p", { class: "loading", text: "Loading…" }));
  }

  function renderFatal(title, message, retry) {
    setChrome({ footer: Boolean(credentials) });
    setScreen(
      h("h2", { class: "prompt", tabindex: "-1", "data-focus": true, text: title }),
      h("p", { text: message }),
      retry
        ? h("div", { class: "actions" },
            h("button", { type: "button", class: "button", text: "Try again", onclick: retry }))
        : null,
    );
  }

  // ---- field errors ----

  // A form's error slots by API field name ("answer", "answer.email", "name", …).
  class ErrorSlots {
    constructor() {
      this.slots = new Map();
      this.general = h("p", { class: "field-error", "aria-live": "polite", hidden: true });
    }

    // noun: how a message about this field starts ("Your answer must be at least 0").
    add(name, inputs, noun = "Your answer") {
      const node = h("p", { class: "field-error", id: nextId("error"), "aria-live": "polite", hidden: true });
      this.slots.set(name, { node, inputs, noun });
      return node;
    }

    clear() {
      for (const { node, inputs } of this.slots.values()) {
        node.textContent = "";
        node.hidden = true;
        inputs().forEach((input) => input.removeAttribute("aria-invalid"));
      }
      this.general.textContent = "";
      this.general.hidden = true;
    }

    show(errors) {
      this.clear();
      let first = null;
      for (const [name, messages] of Object.entries(errors || {})) {
        const slot = this.slots.get(name) || this.slots.get(name.split(".")[0]);
        const text = (Array.isArray(messages) ? messages : [String(messages)])
          .map((message) => sentence(message, slot && slot.noun))
          .join(" ");
        const target = slot ? slot.node : this.general;
        target.textContent = target.textContent ? `${target.textContent} ${text}` : text;
        target.hidden = false;
        if (slot) {
          const inputs = slot.inputs();
          inputs.forEach((input) => input.setAttribute("aria-invalid", "true"));
          first = first || inputs[0];
        }
      }
      if (first) first.focus();
    }
  }

  // The API says "must be at least 0" about a named field; people read "Your answer must be
  // at least 0."
  function sentence(message, noun) {
    let text = String(message).trim();
    if (noun && /^(is|must|was|should)\b/.test(text)) text = `${noun} ${text}`;
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(text) ? text : `${text}.`;
  }

  // ---- the start screen ----

  async function showStart(message) {
    renderLoading();
    setChrome();
    const result = await client.getPublishedFlow(config.flow);
    if (result.network) {
      renderFatal("We can't reach the server", "Check your connection and try again.", () => showStart(message));
      return;
    }
    if (result.status === 404) {
      renderFatal("This flow is not available", problemDetail(result, "It may have been unpublished."));
      return;
    }
    if (result.status === 401 || result.status === 403) {
      renderFatal(
        "This page's key is not accepted",
        "The publishable key of this page is unknown or revoked. Ask the flow's owner for a new embed snippet.",
      );
      return;
    }
    if (!result.ok) {
      renderFatal("Something went wrong", problemDetail(result, "Please try again."), () => showStart(message));
      return;
    }
    published = result.data;
    renderStart(result.data, message);
  }

  function renderStart(flow, message) {
    const slots = new ErrorSlots();
    const nameInput = h("input", { type: "text", id: "start-name", name: "name", autocomplete: "name", maxlength: 200 });
    const emailInput = h("input", { type: "email", id: "start-email", name: "email", autocomplete: "email", inputmode: "email" });
    const nameError = slots.add("name", () => [nameInput], "Your name");
    const emailError = slots.add("email", () => [emailInput], "Your email");
    nameInput.setAttribute("aria-describedby", nameError.id);
    emailInput.setAttribute("aria-describedby", emailError.id);
    const submit = h("button", { type: "submit", class: "button", text: "Start" });

    const form = h("form", { class: "step step--start", novalidate: true },
      h("h2", { class: "prompt", tabindex: "-1", "data-focus": true, text: "Before we start" }),
      flow.definition && flow.definition.description ? paragraphs(flow.definition.description) : null,
      h("p", { class: "hint", text: "Your answers are saved as you go: you can close this page and pick up where you left off." }),
      h("div", { class: "field" },
        h("label", { for: "start-name" }, "Your name ", h("span", { class: "optional", text: "(optional)" })),
        nameInput, nameError),
      h("div", { class: "field" },
        h("label", { for: "start-email" }, "Your email ", h("span", { class: "optional", text: "(optional)" })),
        emailInput, emailError),
      slots.general,
      h("div", { class: "actions actions--end" }, submit),
    );

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (busy) return;
      const body = {};
      if (nameInput.value.trim()) body.name = nameInput.value.trim();
      if (emailInput.value.trim()) body.email = emailInput.value.trim();
      // One key per start. "Try again", or Start with the same details after a failure,
      // resends that very start, so a lost response never leaves a second session behind.
      const unchanged = pendingStart && JSON.stringify(pendingStart.body) === JSON.stringify(body);
      if (!unchanged) pendingStart = { key: newIdempotencyKey(), body };
      await startSession(pendingStart, form, slots, submit);
    });

    setChrome();
    showStatus(message);
    setScreen(form);
  }

  async function startSession(start, form, slots, submit) {
    setBusy(form, submit, true, "Starting…");
    clearAlert();
    // Signed in: start as the learner, or land on their active session of this flow.
    const asLearner = learnerToken !== null;
    const body = asLearner ? { ...start.body, resume: true } : start.body;
    const result = await client.startSession(config.flow, body, {
      idempotencyKey: start.key,
      token: learnerToken ?? undefined,
    });
    setBusy(form, submit, false);
    if (result.network) {
      showAlert("We couldn't reach the server. Check your connection and try again.", () =>
        startSession(start, form, slots, submit));
      return;
    }
    if (result.ok) {
      pendingStart = null;
      // A learner's token reads and advances all their sessions: it stands in for the
      // session token, which a resumed session does not hand out again.
      credentials = {
        session_id: result.data.session.id,
        token: asLearner ? learnerToken : result.data.token,
      };
      saveCredentials(credentials);
      render(result.data, { focus: true });
      return;
    }
    if (result.status === 422) {
      pendingStart = null;
      slots.show(result.problem.errors || { _schema: [problemDetail(result, "Check the form.")] });
      return;
    }
    if (result.status === 429) {
      showAlert(retryAfterMessage(result), () => startSession(start, form, slots, submit));
      return;
    }
    showAlert(problemDetail(result, "Something went wrong."), () => startSession(start, form, slots, submit));
  }

  // ---- resuming ----

  async function resume(message, { focus = false } = {}) {
    renderLoading();
    if (queue.length && navigator.onLine && (await flushQueue())) return;
    const result = await client.getSession(credentials.session_id, { token: credentials.token });
    if (result.network) {
      renderFatal("We can't reach the server", "Your progress is safe. Check your connection and try again.",
        () => resume(message, { focus }));
      return;
    }
    if (result.ok) {
      render(result.data, { message, focus });
      return;
    }
    if (result.status === 401 || result.status === 404) {
      forgetCredentials();
      showStart("We couldn't find your earlier session, so this is a fresh start.");
      return;
    }
    renderFatal("Something went wrong", problemDetail(result, "Please try again."), () => resume(message, { focus }));
  }

  // ---- rendering a state ----

  // ---- following the session live: another tab or device moves it, this page follows ----

  function follow() {
    if (follower || !credentials) return;
    follower = client.followSession(credentials.session_id, {
      token: credentials.token,
      version: shownVersion,
      onState(state) {
        // Never under the learner's hands: an answer in flight or queued offline decides.
        if (attempt || busy || flushing || queue.length) return;
        if (state.session.version <= shownVersion) return;
        render(state, { message: "Updated from another window or device." });
      },
    });
  }

  function unfollow() {
    if (follower) follower.close();
    follower = null;
    shownVersion = 0;
  }

  function render(state, { message = "", focus = false } = {}) {
    shownVersion = state.session.version;
    follow();
    attempt = null;
    loadDefinition(state.session);
    clearAlert();
    showStatus(message);
    if (!state.step) renderDone(state.session);
    else renderStep(state.session, state.step);
    focusHeading(focus);
  }

  function renderDone(session) {
    setChrome({ session, step: null, footer: true });
    const thanks = session.name ? `Thank you, ${session.name}!` : "Thank you!";
    setScreen(
      h("div", { class: "done" },
        h("div", { class: "done-mark", "aria-hidden": "true", text: "✓" }),
        h("h2", { class: "prompt", tabindex: "-1", "data-focus": true, text: "You're all done" }),
        h("p", {
          text: queue.length
            ? `${thanks} Your last answers are kept on this device and sent when you're back online.`
            : `${thanks} Your answers are saved.`,
        }),
      ),
    );
  }

  function renderStep(session, step) {
    setChrome({ phase: step.phase_title || "", session, step, footer: true });
    const slots = new ErrorSlots();
    const answers = session.answers || {};
    const saved = step.key && Object.prototype.hasOwnProperty.call(answers, step.key) ? answers[step.key] : undefined;
    const control = buildControl(step, saved, session, slots);

    const completed = session.completed_step_ids || [];
    // Going back needs the server: not while answers given offline wait to be sent.
    const previous = completed.length && !queue.length ? completed[completed.length - 1] : null;
    const isLast = session.progress && session.progress.completed + 1 >= session.progress.total;
    const submit = h("button", { type: "submit", class: "button", text: isLast ? "Finish" : "Continue" });
    const back = previous
      ? h("button", { type: "button", class: "button button--quiet", text: "Back" })
      : null;

    const form = h("form", { class: `step step--${step.type}`, novalidate: true, "data-step-id": step.id },
      control.node,
      slots.general,
      h("div", { class: back ? "actions" : "actions actions--end" }, back, submit),
    );

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (busy) return;
      const value = control.value();
      if (value && value.localError) {
        slots.show({ [value.field || "answer"]: [value.localError] });
        return;
      }
      const body = { step_id: step.id };
      if (!NO_ANSWER_TYPES.has(step.type)) body.answer = value;
      if (queue.length || !navigator.onLine) {
        answerOffline(session, step, body, newIdempotencyKey(), slots);
        return;
      }
      // One key per attempt. "Try again", or Continue with the same answer after a failure,
      // resends that very attempt, so a lost response can never apply the answer twice.
      const unchanged = attempt && attempt.failed && JSON.stringify(attempt.body) === JSON.stringify(body);
      if (!unchanged) {
        attempt = { key: newIdempotencyKey(), body, version: session.version, form, slots, submit, back, session, step };
      }
      sendAttempt(attempt);
    });
    if (back) {
      back.addEventListener("click", () =>
        goBack(previous, { form, submit, version: session.version, key: newIdempotencyKey() }));
    }

    if (step.chat) setScreen(form, buildChat(session, step));
    else setScreen(form);
  }

  // ---- a step's conversation box (steps with chat: true) ----

  const CHAT_PAGE = 200;

  function chatItem(message) {
    const who = message.role === "user" ? "You" : message.role === "assistant" ? "Mentor" : "Note";
    return h("li", { class: `chat-message chat-message--${message.role}`, "data-seq": String(message.seq) },
      h("span", { class: "chat-who", text: who }),
      h("span", { class: "chat-text", text: message.content }),
    );
  }

  async function loadChat(sessionId, stepId, log, empty) {
    let after;
    const mine = [];
    for (;;) {
      const result = await client.listSessionMessages(sessionId, { token: credentials.token, after, limit: CHAT_PAGE });
      if (!result.ok) return;
      mine.push(...result.data.items.filter((message) => message.step_id === stepId));
      if (!result.data.next_cursor) break;
      after = result.data.next_cursor;
    }
    for (const message of mine) log.append(chatItem(message));
    empty.hidden = mine.length > 0;
  }

  function buildChat(session, step) {
    const inputId = nextId("chat-input");
    const log = h("ol", { class: "chat-log", id: "chat-log", "aria-live": "polite" });
    const empty = h("p", { class: "chat-empty", text: "No notes yet. Ask a question or jot something down for your mentor." });
    const input = h("textarea", { id: inputId, class: "chat-input", rows: "3", maxlength: "32000" });
    const error = h("p", { class: "field-error", id: nextId("chat-error"), hidden: true });
    const send = h("button", { type: "submit", class: "button button--small", text: "Send" });
    const form = h("form", { class: "chat-form", novalidate: true },
      h("label", { for: inputId, class: "chat-label", text: "Your note or question" }),
      input, error, h("div", { class: "actions actions--end" }, send));
    let pending = null; // {key, content}: one Idempotency-Key per message, kept for retries
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const content = input.value;
      if (!content.trim()) {
        error.textContent = "Write something first.";
        error.hidden = false;
        return;
      }
      if (!pending || pending.content !== content) pending = { key: newIdempotencyKey(), content };
      send.disabled = true;
      error.hidden = true;
      const result = await client.postSessionMessage(credentials.session_id,
        { role: "user", content, step_id: step.id },
        { token: credentials.token, idempotencyKey: pending.key });
      send.disabled = false;
      if (result.ok) {
        pending = null;
        input.value = "";
        log.append(chatItem(result.data.message));
        empty.hidden = true;
        return;
      }
      const fields = (!result.network && result.problem.errors) || null;
      error.textContent = result.network
        ? "We couldn't send your note: the server did not respond. Try again."
        : fields
          ? Object.values(fields).flat().join(" ")
          : problemDetail(result, "We couldn't send your note.");
      error.hidden = false;
    });
    loadChat(session.id, step.id, log, empty);
    return h("section", { class: "chat", id: "chat", "aria-label": "Notes and questions for this step" },
      h("h3", { class: "chat-title", text: "Notes and questions" }), empty, log, form);
  }

  function setBusy(form, submit, on, label) {
    busy = on;
    form.setAttribute("aria-busy", on ? "true" : "false");
    for (const button of form.querySelectorAll("button")) button.disabled = on;
    if (on) {
      submit.dataset.label = submit.textContent;
      submit.textContent = label;
    } else if (submit.dataset.label) {
      submit.textContent = submit.dataset.label;
    }
  }

  async function sendAttempt(sent) {
    const { form, slots, submit } = sent;
    setBusy(form, submit, true, "Saving…");
    clearAlert();
    const result = await client.submitStep(credentials.session_id, sent.body, {
      token: credentials.token,
      idempotencyKey: sent.key,
      ifMatch: sent.version,
    });
    setBusy(form, submit, false);
    if (attempt !== sent) return; // superseded while in flight
    sent.failed = Boolean(result.network) || result.status === 429 || result.status >= 500;
    if (result.network && !navigator.onLine) {
      // Gone offline on the way: queued under the same key, so it is taken once either way.
      answerOffline(sent.session, sent.step, sent.body, sent.key, slots);
      return;
    }
    if (result.network) {
      showAlert("We couldn't save your answer: the server did not respond. Your answer is still here.",
        () => sendAttempt(sent));
      return;
    }
    if (result.ok) {
      render(result.data, { focus: true });
      return;
    }
    switch (result.status) {
      case 409:
        // A stale tab: the problem carries where the session really is.
        render(result.problem, {
          message: "This session moved on in another window, so here is where it stands now.",
          focus: true,
        });
        return;
      case 412:
        attempt = null;
        await resume("This session changed in another window, so here is where it stands now.", { focus: true });
        return;
      case 422:
        attempt = null;
        slots.show(result.problem.errors || { answer: [problemDetail(result, "This answer is not valid.")] });
        return;
      case 401:
      case 404:
        forgetCredentials();
        showStart("We couldn't find your session any more, so this is a fresh start.");
        return;
      case 429:
        showAlert(retryAfterMessage(result), () => sendAttempt(sent));
        return;
      default:
        showAlert(problemDetail(result, "Something went wrong while saving."), () => sendAttempt(sent));
    }
  }

  async function goBack(stepId, sent) {
    const { form, submit } = sent;
    if (busy) return;
    attempt = null;
    setBusy(form, submit, true, submit.textContent);
    clearAlert();
    // A retry resends the same key: a lost answer is replayed, not applied twice.
    const result = await client.goBack(credentials.session_id, { step_id: stepId }, {
      token: credentials.token,
      idempotencyKey: sent.key,
      ifMatch: sent.version,
    });
    setBusy(form, submit, false);
    if (result.network) {
      showAlert("We couldn't reach the server. Check your connection and try again.",
        () => goBack(stepId, sent));
      return;
    }
    if (result.ok) {
      render(result.data, { focus: true });
    } else if (result.status === 409 && result.problem.session) {
      render(result.problem, {
        message: "This session moved on in another window, so here is where it stands now.",
        focus: true,
      });
    } else if (result.status === 412) {
      await resume("This session changed in another window, so here is where it stands now.", { focus: true });
    } else if (result.status === 401 || result.status === 404) {
      forgetCredentials();
      showStart("We couldn't find your session any more, so this is a fresh start.");
    } else if (result.status === 429) {
      showAlert(retryAfterMessage(result), () => goBack(stepId, sent));
    } else {
      showAlert(problemDetail(result, "Something went wrong."), () => goBack(stepId, sent));
    }
  }

  // ---- offline: a queue of answers, the next step worked out from the definition ----

  async function loadDefinition(session) {
    if (config.preview) return; // a draft has no published definition to walk offline
    if (!session || (published && published.version === session.flow_version)) return;
    if (!navigator.onLine) return;
    const result = await client.getPublishedFlow(config.flow);
    if (result.ok) published = result.data;
  }

  // The steps of the session's flow version in order, with their phase; null when this page
  // does not hold that version (a newer one was published since the session started).
  function flowSteps(session) {
    if (!published || published.version !== session.flow_version) return null;
    const steps = [];
    for (const phase of published.definition.phases || []) {
      for (const step of phase.steps || []) {
        steps.push({ ...step, phase_id: phase.id, phase_title: phase.title });
      }
    }
    return steps;
  }

  const isAnswered = (value) =>
    !(value === undefined || value === null || ((typeof value === "string" || Array.isArray(value)) && value.length === 0));
  const includes = (value, expected) => (Array.isArray(value) ? value.includes(expected) : value === expected);
  const COMPARE = { gt: (a, b) => a > b, gte: (a, b) => a >= b, lt: (a, b) => a < b, lte: (a, b) => a <= b };

  // The engine's conditions (flows/engine.py): true, false, or undefined for one it can't tell.
  function conditionHolds(when, answers) {
    const entry = Object.entries(when).find(([name]) => name !== "key");
    if (!entry) return undefined;
    const [name, expected] = entry;
    const value = answers[when.key];
    if (name === "answered") return isAnswered(value) === expected;
    if (value === undefined || value === null) return false;
    if (COMPARE[name]) {
      return typeof value === "number" && typeof expected === "number" && COMPARE[name](value, expected);
    }
    if (name === "equals") return includes(value, expected);
    if (name === "not_equals") return !includes(value, expected);
    if (name === "in") return Array.isArray(expected) && expected.some((item) => includes(value, item));
    return undefined;
  }

  // The next step's id (null at the end), or undefined when a rule can't be decided here.
  function nextStepId(steps, stepId, answers) {
    const index = steps.findIndex((step) => step.id === stepId);
    if (index < 0) return undefined;
    for (const rule of steps[index].next || []) {
      const holds = rule.when ? conditionHolds(rule.when, answers) : true;
      if (holds === undefined) return undefined;
      if (holds) return rule.goto;
    }
    return index + 1 < steps.length ? steps[index + 1].id : null;
  }

  // What the server stores for an answer, as far as the jump rules look at it.
  function normalized(step, answer) {
    if (typeof answer === "string") return answer.trim() || null;
    if (step.type === "multi_choice" && Array.isArray(answer)) {
      return (step.options || []).map((option) => option.value).filter((value) => answer.includes(value));
    }
    return answer === undefined ? null : answer;
  }

  // The state the server will answer with once it takes this answer; null if it can't be told.
  function stateAfter(session, step, body) {
    const steps = flowSteps(session);
    if (!steps) return null;
    const answers = { ...(session.answers || {}) };
    if (step.key && !NO_ANSWER_TYPES.has(step.type)) answers[step.key] = normalized(step, body.answer);
    const next = nextStepId(steps, step.id, answers);
    if (next === undefined) return null;
    const completed = [...(session.completed_step_ids || []), step.id];
    let remaining = 0;
    for (let id = next; id; id = nextStepId(steps, id, answers)) remaining += 1;
    const total = completed.length + remaining;
    const nextSession = {
      ...session,
      answers,
      current_step_id: next,
      status: next ? "active" : "completed",
      completed_step_ids: completed,
      progress: { completed: completed.length, total, percent: next ? Math.floor((100 * completed.length) / total) : 100 },
    };
    return { session: nextSession, step: next ? steps.find((candidate) => candidate.id === next) : null };
  }

  function waitingMessage() {
    const count = queue.length === 1 ? "1 answer" : `${queue.length} answers`;
    return `You're offline: ${count} kept on this device, sent when you're back online.`;
  }

  function answerOffline(session, step, body, key, slots) {
    if (step.required && !NO_ANSWER_TYPES.has(step.type) && !isAnswered(normalized(step, body.answer))) {
      slots.show({ answer: ["is required"] });
      return;
    }
    queue.push({ ...body, idempotency_key: key });
    saveCredentials(credentials);
    const next = stateAfter(session, step, body);
    if (next) {
      render(next, { message: waitingMessage(), focus: true });
    } else {
      // A jump rule this page can't decide, or another version of the flow: wait for the server.
      attempt = null;
      setChrome({ session, step: null, footer: true });
      setScreen(
        h("h2", { class: "prompt", tabindex: "-1", "data-focus": true, text: "Your answer is kept" }),
        h("p", { text: "The next step needs the server. We'll go on as soon as you're back online." }),
      );
      showStatus(waitingMessage());
    }
    if (navigator.onLine) flushQueue();
  }

  // Send the queue as one batch; true when it rendered the server's answer.
  async function flushQueue() {
    if (!queue.length || flushing || !credentials) return false;
    flushing = true;
    const sent = queue.slice();
    const result = await client.submitStepBatch(credentials.session_id, sent, { token: credentials.token });
    flushing = false;
    if (result.network) return false; // still queued: the next "online" sends it
    if (result.status === 401 || result.status === 404) {
      forgetCredentials();
      showStart("We couldn't find your session any more, so this is a fresh start.");
      return true;
    }
    if (!result.ok) {
      showAlert(problemDetail(result, "We couldn't send the answers you gave offline."), () => flushQueue());
      return false;
    }
    const results = result.data.results;
    const taken = results.filter((item) => item.outcome === "applied" || item.outcome === "replayed").length;
    const later = queue.slice(sent.length);
    // Answers given while the batch was on its way follow it, unless the server stopped early.
    queue = taken === sent.length ? later : [];
    saveCredentials(credentials);
    const plural = (n) => (n === 1 ? "1 answer" : `${n} answers`);
    let message = `Back online: ${plural(taken)} given offline ${taken === 1 ? "was" : "were"} saved.`;
    if (taken < sent.length) {
      const stopped = results.find((item) => item.outcome === "conflict" || item.outcome === "invalid");
      const why = stopped && stopped.errors ? Object.values(stopped.errors).flat().join(" ") : "";
      message = `Back online: ${taken} of ${plural(sent.length)} given offline were saved; please answer again from here.${why ? ` (${why})` : ""}`;
    }
    if (queue.length) {
      showStatus(`${message} ${waitingMessage()}`);
      if (navigator.onLine) flushQueue();
      return true;
    }
    render({ session: result.data.session, step: result.data.step }, { message, focus: true });
    return true;
  }

  window.addEventListener("online", () => {
    if (queue.length) flushQueue();
  });
  window.addEventListener("offline", () => {
    if (credentials) showStatus("You're offline: keep going, your answers are kept on this device.");
  });

  // ---- one control per step type ----
  //
  // Each builder returns {node, value()}; value() is the answer to send, or
  // {localError, field} for input the browser already knows is not an answer.

  function buildControl(step, saved, session, slots) {
    const builder = BUILDERS[step.type] || buildUnknown;
    return builder(step, saved, session, slots);
  }

  function heading(step, inner) {
    return h("h2", { class: "prompt", tabindex: "-1", "data-focus": true }, inner ?? step.prompt ?? step.phase_title ?? "");
  }

  function bodyOf(step) {
    return step.body ? paragraphs(step.body, { id: nextId("body") }) : null;
  }

  const describedBy = (...nodes) => nodes.filter(Boolean).map((node) => node.id).join(" ") || undefined;

  const textOrNull = (value) => (value.trim() ? value : null);

  function buildMessage(step) {
    const node = h("div", { class: "message" }, heading(step), bodyOf(step));
    return { node, value: () => null };
  }

  function buildVideo(step) {
    const video = h("video", {
      class: "video",
      src: step.video_url,
      controls: true,
      preload: "metadata",
      playsinline: true,
    });
    video.append(h("a", { href: step.video_url, target: "_blank", rel: "noopener", text: "Open the video" }));
    const fallback = h("p", { class: "hint" },
      "Video not playing? ",
      h("a", { href: step.video_url, target: "_blank", rel: "noopener", text: "Open it in a new tab" }),
      ".");
    const node = h("div", { class: "message" }, heading(step), h("div", { class: "video-frame" }, video), bodyOf(step), fallback);
    return { node, value: () => null };
  }

  // A question answered by one input: the prompt is its label.
  function singleInput(step, input, slots, { hint } = {}) {
    input.id = nextId("answer");
    input.name = "answer";
    const body = bodyOf(step);
    const hintNode = hint ? h("p", { class: "hint", id: nextId("hint"), text: hint }) : null;
    const error = slots.add("answer", () => [input]);
    input.setAttribute("aria-describedby", describedBy(body, hintNode, error));
    if (step.required) input.setAttribute("aria-required", "true");
    const node = h("div", { class: "question" },
      heading(step, h("label", { for: input.id, text: step.prompt })),
      body, input, hintNode, error);
    return node;
  }

  // A question answered by a group of inputs: the prompt is the fieldset's legend.
  function fieldset(step, slots, controls, inputs, { hint, extra } = {}) {
    const body = bodyOf(step);
    const hintNode = hint ? h("p", { class: "hint", id: nextId("hint"), text: hint }) : null;
    const error = slots.add("answer", inputs);
    const set = h("fieldset", { class: "question", "aria-describedby": describedBy(body, hintNode, error) },
      h("legend", {}, heading(step)),
      body, hintNode, controls, extra, error);
    return set;
  }

  function optionalHint(step) {
    return step.required ? undefined : "Optional: you can leave this empty.";
  }

  function buildChoice(step, saved, session, slots) {
    const multiple = step.type === "multi_choice";
    const chosen = new Set(multiple ? (Array.isArray(saved) ? saved : []) : saved != null ? [saved] : []);
    const name = nextId("choice");
    const inputs = [];
    const list = h("div", { class: "options" });
    for (const option of step.options || []) {
      const input = h("input", { type: multiple ? "checkbox" : "radio", name, value: option.value });
      input.checked = chosen.has(option.value);
      inputs.push(input);
      list.append(h("label", { class: "option" }, input, h("span", { text: option.label })));
    }
    let hint = optionalHint(step);
    if (multiple) {
      hint = selectionHint(step.min_selected ?? 0, step.max_selected ?? inputs.length, inputs.length);
      const honourMax = () => {
        const count = inputs.filter((input) => input.checked).length;
        const full = count >= (step.max_selected ?? inputs.length);
        for (const input of inputs) {
          input.disabled = full && !input.checked;
          input.closest(".option").classList.toggle("option--disabled", input.disabled);
        }
      };
      inputs.forEach((input) => input.addEventListener("change", honourMax));
      honourMax();
    }
    const node = fieldset(step, slots, list, () => inputs, { hint });
    return {
      node,
      value: () => {
        const picked = inputs.filter((input) => input.checked).map((input) => input.value);
        if (multiple) return picked.length || step.required ? picked : null;
        return picked.length ? picked[0] : null;
      },
    };
  }

  function selectionHint(low, high, count) {
    if (low === high) return `Choose ${low}.`;
    if (low <= 0 && high >= count) return "Choose any that apply.";
    if (low <= 0) return `Choose up to ${high}.`;
    if (high >= count) return `Choose at least ${low}.`;
    return `Choose ${low} to ${high}.`;
  }

  function buildText(step, saved, session, slots) {
    const long = step.type === "long_text";
    const input = long
      ? h("textarea", { rows: 5, maxlength: step.max_length })
      : h("input", { type: "text", maxlength: step.max_length, autocomplete: "off" });
    input.value = typeof saved === "string" ? saved : "";
    let counter = null;
    if (long) {
      counter = h("p", { class: "counter", "aria-hidden": "true" });
      const update = () => {
        counter.textContent = `${input.value.length} / ${step.max_length}`;
      };
      input.addEventListener("input", update);
      update();
    }
    const node = singleInput(step, input, slots, { hint: optionalHint(step) });
    if (counter) input.after(counter);
    return { node, value: () => textOrNull(input.value) };
  }

  function buildNumber(step, saved, session, slots) {
    const input = h("input", { type: "number", inputmode: "decimal", step: "any", min: step.min, max: step.max });
    input.value = typeof saved === "number" ? String(saved) : "";
    let hint = optionalHint(step);
    if (step.min != null && step.max != null) hint = `A number from ${step.min} to ${step.max}.`;
    else if (step.min != null) hint = `A number of at least ${step.min}.`;
    else if (step.max != null) hint = `A number of at most ${step.max}.`;
    const node = singleInput(step, input, slots, { hint });
    return {
      node,
      value: () => {
        if (input.validity.badInput) return { localError: "must be a number" };
        return input.value.trim() === "" ? null : Number(input.value);
      },
    };
  }

  function buildScale(step, saved, session, slots) {
    const low = step.min ?? 1;
    const high = step.max ?? 10;
    if (high - low + 1 > SCALE_BUTTONS_MAX) return buildScaleRange(step, saved, slots, low, high);
    const name = nextId("scale");
    const inputs = [];
    const row = h("div", { class: "scale" });
    for (let value = low; value <= high; value += 1) {
      const input = h("input", { type: "radio", name, value: String(value) });
      input.checked = saved === value;
      inputs.push(input);
      row.append(h("label", { class: "scale-option" }, input, h("span", { text: String(value) })));
    }
    const ends = h("div", { class: "scale-ends", "aria-hidden": "true" },
      h("span", { text: `${low} · ${step.min_label ?? "least"}` }),
      h("span", { text: `${step.max_label ?? "most"} · ${high}` }));
    const node = fieldset(step, slots, row, () => inputs, { hint: optionalHint(step), extra: ends });
    return {
      node,
      value: () => {
        const picked = inputs.find((input) => input.checked);
        return picked ? Number(picked.value) : null;
      },
    };
  }

  function buildScaleRange(step, saved, slots, low, high) {
    const input = h("input", { type: "range", min: low, max: high, step: 1 });
    const touched = { value: typeof saved === "number" };
    input.value = String(typeof saved === "number" ? saved : Math.round((low + high) / 2));
    const output = h("output", { class: "range-value" });
    const update = () => {
      output.textContent = touched.value ? input.value : "Move the slider";
    };
    input.addEventListener("input", () => {
      touched.value = true;
      update();
    });
    update();
    const node = singleInput(step, input, slots, { hint: `From ${low} to ${high}.` });
    output.htmlFor = input.id;
    input.after(output);
    return { node, value: () => (touched.value ? Number(input.value) : null) };
  }

  function buildBoolean(step, saved, session, slots) {
    const name = nextId("boolean");
    const inputs = [];
    const row = h("div", { class: "options options--row" });
    for (const [value, label] of [[true, "Yes"], [false, "No"]]) {
      const input = h("input", { type: "radio", name, value: String(value) });
      input.checked = saved === value;
      inputs.push(input);
      row.append(h("label", { class: "option" }, input, h("span", { text: label })));
    }
    const node = fieldset(step, slots, row, () => inputs, { hint: optionalHint(step) });
    return {
      node,
      value: () => {
        const picked = inputs.find((input) => input.checked);
        return picked ? picked.value === "true" : null;
      },
    };
  }

  function buildEmail(step, saved, session, slots) {
    const input = h("input", { type: "email", autocomplete: "email", inputmode: "email", spellcheck: "false" });
    input.value = typeof saved === "string" ? saved : "";
    const node = singleInput(step, input, slots, { hint: optionalHint(step) });
    return { node, value: () => textOrNull(input.value) };
  }

  function buildPhone(step, saved, session, slots) {
    const input = h("input", { type: "tel", autocomplete: "tel", inputmode: "tel" });
    input.value = typeof saved === "string" ? saved : "";
    const node = singleInput(step, input, slots, { hint: optionalHint(step) });
    return { node, value: () => textOrNull(input.value) };
  }

  function buildContact(step, saved, session, slots) {
    const fields = step.fields || ["name", "email"];
    const inputs = {};
    const rows = [];
    for (const field of fields) {
      const spec = CONTACT_INPUTS[field];
      const input = h("input", { id: nextId(`contact-${field}`), name: field, ...spec });
      const known = saved && typeof saved === "object" ? saved[field] : undefined;
      input.value = known ?? session[field] ?? "";
      const error = slots.add(`answer.${field}`, () => [input], CONTACT_LABELS[field]);
      input.setAttribute("aria-describedby", error.id);
      inputs[field] = input;
      rows.push(h("div", { class: "field" }, h("label", { for: input.id, text: CONTACT_LABELS[field] }), input, error));
    }
    const node = fieldset(step, slots, rows, () => Object.values(inputs), { hint: optionalHint(step) });
    return {
      node,
      value: () => {
        const answer = {};
        for (const [field, input] of Object.entries(inputs)) answer[field] = textOrNull(input.value);
        if (!step.required && Object.values(answer).every((value) => value === null)) return null;
        return answer;
      },
    };
  }

  function buildUnknown(step) {
    const node = h("div", { class: "message" }, heading(step),
      h("p", { text: "This page cannot show this kind of step yet. Please reload the page later." }));
    return { node, value: () => null };
  }

  const BUILDERS = {
    info: buildMessage,
    video: buildVideo,
    single_choice: buildChoice,
    multi_choice: buildChoice,
    text: buildText,
    long_text: buildText,
    number: buildNumber,
    scale: buildScale,
    boolean: buildBoolean,
    email: buildEmail,
    phone: buildPhone,
    contact: buildContact,
  };

  // ---- signing in: the embedding page hands over a learner token ----

  // The page's anonymous session becomes the learner's (claimSession), so nothing answered
  // before signing in is lost; from then on the learner token reads and advances it.
  async function signIn(token) {
    if (typeof token !== "string" || !token.startsWith("lt_")) return;
    learnerToken = token;
    if (!credentials || credentials.token.startsWith("lt_")) return;
    const result = await client.claimSession(credentials.session_id, {
      token,
      sessionToken: credentials.token,
    });
    if (result.ok) {
      credentials = { session_id: credentials.session_id, token };
      saveCredentials(credentials);
      unfollow();
      resume("Signed in: your answers are saved to your account.");
      return;
    }
    if (result.status === 409) {
      showStatus("This session belongs to another account; it stays on this device only.");
      return;
    }
    if (result.network) showAlert("We couldn't reach the server to save your answers to your account.", () => signIn(token));
  }

  function trustedSender(event) {
    if (event.source !== window.parent && event.source !== window) return false;
    return event.origin === window.location.origin || config.allowedOrigins.includes(event.origin);
  }

  // From the embedding page: iframe.contentWindow.postMessage(
  //   {type: "mentorflow:learner-token", token: "lt_…"}, playerOrigin)
  window.addEventListener("message", (event) => {
    const data = event.data;
    if (!data || data.type !== "mentorflow:learner-token" || !trustedSender(event)) return;
    signIn(data.token);
  });

  // ---- start over: forgets this page's session, nothing on the server ----

  el.startOver.addEventListener("click", () => {
    el.startOverPrompt.hidden = false;
    el.startOver.hidden = true;
    el.startOverConfirm.focus();
  });
  el.startOverCancel.addEventListener("click", () => {
    el.startOverPrompt.hidden = true;
    el.startOver.hidden = false;
    el.startOver.focus();
  });
  el.startOverConfirm.addEventListener("click", () => {
    forgetCredentials();
    attempt = null;
    clearAlert();
    showStart("");
  });

  // ---- boot ----

  credentials = loadCredentials() || config.preview;
  if (config.preview) el.startOver.remove(); // the banner starts a preview again
  if (credentials) resume("");
  else showStart("");
})();

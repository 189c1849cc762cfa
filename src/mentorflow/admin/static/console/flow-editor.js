// The structured flow editor: phases and steps as lists, a form per step, branching rules
// picked from lists, errors from the server's own validator next to each field, and an
// autosave under the draft-revision rule (a stale save is a 409: the mentor sees what the
// other person changed and chooses to reload theirs or to overwrite knowingly).
// No build step and no library: the console's Content-Security-Policy allows only its own
// scripts, so every handler is attached here.
(function () {
  "use strict";

  var root = document.getElementById("flow-editor");
  if (!root) return;
  var settings = JSON.parse(document.getElementById("editor-data").textContent);
  var canEdit = root.dataset.canEdit === "true";
  var csrfInput = document.querySelector("input[name=csrf_token]");
  var csrf = csrfInput ? csrfInput.value : "";

  var NO_ANSWER = { info: true, video: true };
  var CHOICE = { single_choice: true, multi_choice: true };
  var COMMON = ["id", "type", "key", "legacy_key", "prompt", "body", "required", "next", "chat"];
  var TYPE_FIELDS = {
    info: [], video: ["video_url"], single_choice: ["options"],
    multi_choice: ["options", "min_selected", "max_selected"], text: ["max_length"],
    long_text: ["max_length"], number: ["min", "max"], scale: ["min", "max"], boolean: [],
    email: [], phone: [], contact: ["fields"],
  };
  var TYPE_LABELS = {
    info: "Information", video: "Video", single_choice: "Single choice",
    multi_choice: "Multiple choice", text: "Short text", long_text: "Long text",
    number: "Number", scale: "Scale", boolean: "Yes / no", email: "Email", phone: "Phone",
    contact: "Contact details",
  };
  var OPERATOR_LABELS = {
    equals: "is", not_equals: "is not", "in": "is one of", gt: "is more than",
    gte: "is at least", lt: "is less than", lte: "is at most", answered: "was answered",
  };
  var SAVE_DELAY_MS = 600;

  var draft = settings.draft;
  var doc = clone(draft.document);
  var revision = draft.revision;
  var savedText = JSON.stringify(doc);
  var selected = { phase: 0, step: 0 };
  var errors = [];
  var timer = null;
  var syncing = false;
  var again = false;
  var conflict = null;
  var autoKeys = new WeakSet();
  var dragging = null;

  function clone(value) { return JSON.parse(JSON.stringify(value)); }

  // ---- small DOM helpers (text only: nothing is parsed as HTML) ----

  function h(tag, attrs) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      var value = attrs[name];
      if (value === undefined || value === null || value === false) return;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.slice(0, 2) === "on") node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else node.setAttribute(name, String(value));
    });
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      if (Array.isArray(child)) child.forEach(function (c) { if (c) node.appendChild(c); });
      else node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  var uid = 0;
  function fieldId() { uid += 1; return "mf-field-" + uid; }

  function group(label, control, hint) {
    var id = control.id || (control.id = fieldId());
    return h("div", { class: "form-group mb-2" },
      h("label", { for: id, class: "mb-0 small font-weight-bold", text: label }),
      control,
      hint ? h("small", { class: "form-text mf-muted", text: hint }) : null);
  }

  function input(path, value, onInput, attrs) {
    var node = h("input", Object.assign({
      class: "form-control form-control-sm", type: "text", "data-path": path,
      disabled: !canEdit,
    }, attrs || {}));
    node.value = value === undefined || value === null ? "" : String(value);
    node.addEventListener("input", function () { onInput(node.value); changed(); });
    return node;
  }

  function numberInput(path, value, onValue, attrs) {
    return input(path, value, function (raw) {
      var text = raw.trim();
      if (text === "") onValue(undefined);
      else if (/^-?\d+(\.\d+)?$/.test(text)) onValue(Number(text));
      else onValue(text); // the validator says what is wrong with it
    }, Object.assign({ inputmode: "decimal" }, attrs || {}));
  }

  function select(path, choices, value, onChange, attrs) {
    var node = h("select", Object.assign({
      class: "form-control form-control-sm", "data-path": path, disabled: !canEdit,
    }, attrs || {}));
    choices.forEach(function (choice) {
      var option = h("option", { value: choice[0], text: choice[1] });
      if (String(choice[0]) === String(value)) option.selected = true;
      node.appendChild(option);
    });
    node.addEventListener("change", function () { onChange(node.value); changed(); });
    return node;
  }

  function button(text, onClick, attrs) {
    return h("button", Object.assign({
      type: "button", class: "btn btn-sm btn-outline-secondary", text: text,
      onclick: function (event) { event.preventDefault(); onClick(); },
    }, attrs || {}));
  }

  // ---- the document: ids, keys, moves ----

  function phases() { return Array.isArray(doc.phases) ? doc.phases : (doc.phases = []); }
  function stepsOf(phase) { return Array.isArray(phase.steps) ? phase.steps : (phase.steps = []); }
  function allSteps() {
    var list = [];
    phases().forEach(function (phase, p) {
      stepsOf(phase).forEach(function (step, s) { list.push({ step: step, phase: p, index: s }); });
    });
    return list;
  }
  function currentStep() {
    var phase = phases()[selected.phase];
    return phase ? stepsOf(phase)[selected.step] : undefined;
  }
  function stepPath(p, s) { return "phases[" + p + "].steps[" + s + "]"; }

  function slugify(text, fallback) {
    var slug = String(text || "").toLowerCase().replace(/[^a-z0-9]+/g, "-")
      .replace(/^-+|-+$/g, "").slice(0, 40).replace(/-+$/, "");
    return slug || fallback;
  }

  function unique(base, taken) {
    if (!taken[base]) return base;
    for (var n = 2; ; n++) if (!taken[base + "-" + n]) return base + "-" + n;
  }

  function takenKeys(except) {
    var taken = {};
    allSteps().forEach(function (entry) {
      if (entry.step !== except && entry.step.key) taken[entry.step.key] = true;
    });
    return taken;
  }

  function newStepId(phase) {
    var taken = {};
    allSteps().forEach(function (entry) { taken[entry.step.id] = true; });
    for (var n = stepsOf(phase).length + 1; ; n++) {
      var id = (phase.id || "phase") + "-step-" + n;
      if (!taken[id]) return id;
    }
  }

  function newStep(phase) {
    var step = {
      id: newStepId(phase), type: "text", key: unique("answer", takenKeys()),
      prompt: "New question", required: true,
    };
    autoKeys.add(step);
    return step;
  }

  function addPhase() {
    var taken = {};
    phases().forEach(function (phase) { taken[phase.id] = true; });
    var n = phases().length + 1;
    while (taken["phase-" + n]) n++;
    var phase = { id: "phase-" + n, title: "New phase", steps: [] };
    phase.steps.push(newStep(phase));
    phases().push(phase);
    select_(phases().length - 1, 0);
    changed(true);
  }

  function addStep(p) {
    var phase = phases()[p];
    stepsOf(phase).push(newStep(phase));
    select_(p, stepsOf(phase).length - 1);
    changed(true);
  }

  function duplicateStep(p, s) {
    var phase = phases()[p];
    var copy = clone(stepsOf(phase)[s]);
    copy.id = newStepId(phase);
    if (copy.key) copy.key = unique(copy.key + "-copy", takenKeys());
    delete copy.legacy_key;
    stepsOf(phase).splice(s + 1, 0, copy);
    select_(p, s + 1);
    changed(true);
  }

  function deleteStep(p, s) {
    var phase = phases()[p];
    var step = stepsOf(phase)[s];
    if (!window.confirm("Delete the step “" + (step.prompt || step.id) + "”?")) return;
    stepsOf(phase).splice(s, 1);
    select_(p, Math.max(0, s - 1));
    changed(true);
  }

  function deletePhase(p) {
    var phase = phases()[p];
    if (!window.confirm("Delete the phase “" + (phase.title || phase.id) + "” and its steps?")) return;
    phases().splice(p, 1);
    select_(Math.max(0, p - 1), 0);
    changed(true);
  }

  function movePhase(p, delta) {
    var to = p + delta;
    if (to < 0 || to >= phases().length) return;
    var moved = phases().splice(p, 1)[0];
    phases().splice(to, 0, moved);
    select_(to, 0);
    changed(true);
  }

  // Move a step to (phase, index); across phases at the ends of a list.
  function moveStep(from, to) {
    var source = stepsOf(phases()[from.phase]);
    var step = source.splice(from.step, 1)[0];
    var target = stepsOf(phases()[to.phase]);
    var index = Math.max(0, Math.min(to.step, target.length));
    target.splice(index, 0, step);
    select_(to.phase, index);
    changed(true);
    var item = root.querySelector('li.mf-step[data-step-id="' + CSS.escape(step.id) + '"]');
    if (item) item.focus();
  }

  function nudgeStep(p, s, delta) {
    var list = stepsOf(phases()[p]);
    if (delta < 0 && s > 0) return moveStep({ phase: p, step: s }, { phase: p, step: s - 1 });
    if (delta > 0 && s < list.length - 1) {
      return moveStep({ phase: p, step: s }, { phase: p, step: s + 1 });
    }
    if (delta < 0 && p > 0) {
      return moveStep({ phase: p, step: s }, { phase: p - 1, step: stepsOf(phases()[p - 1]).length });
    }
    if (delta > 0 && p < phases().length - 1) {
      return moveStep({ phase: p, step: s }, { phase: p + 1, step: 0 });
    }
  }

  function changeType(step, type) {
    var allowed = {};
    COMMON.concat(TYPE_FIELDS[type] || []).forEach(function (name) { allowed[name] = true; });
    Object.keys(step).forEach(function (name) { if (!allowed[name]) delete step[name]; });
    step.type = type;
    if (NO_ANSWER[type]) {
      delete step.key;
      delete step.required;
    } else {
      if (!step.key) { step.key = unique(slugify(step.prompt, "answer"), takenKeys(step)); autoKeys.add(step); }
      if (step.required === undefined) step.required = true;
    }
    if (CHOICE[type] && !Array.isArray(step.options)) {
      step.options = [{ value: "option-1", label: "Option 1" }, { value: "option-2", label: "Option 2" }];
    }
    if (type === "contact" && !Array.isArray(step.fields)) step.fields = ["name", "email"];
    if (type === "scale") { if (step.min === undefined) step.min = 1; if (step.max === undefined) step.max = 10; }
    if (type === "video" && step.video_url === undefined) step.video_url = "https://";
  }

  // ---- rendering ----

  var el = {};

  function build() {
    root.textContent = "";
    el.status = h("span", { id: "editor-status", role: "status", class: "mf-muted" });
    el.conflict = h("div", { id: "editor-conflict", class: "alert alert-warning", role: "alert", hidden: true });
    el.summary = h("div", { id: "editor-errors", class: "alert alert-danger py-2", hidden: true });
    el.outline = h("div", { id: "editor-outline", "aria-label": "Phases and steps" });
    el.form = h("div", { id: "step-form", class: "card" });
    el.title = input("title", doc.title, function (value) { doc.title = value; }, { id: "flow-title-input" });
    el.description = h("textarea", {
      class: "form-control form-control-sm", rows: 2, "data-path": "description",
      id: "flow-description-input", disabled: !canEdit,
    });
    el.description.value = doc.description || "";
    el.description.addEventListener("input", function () {
      if (el.description.value) doc.description = el.description.value;
      else delete doc.description;
      changed();
    });
    root.appendChild(h("div", { class: "d-flex justify-content-between align-items-center mb-2" },
      h("div", {}, el.status),
      canEdit ? h("small", { class: "mf-muted", text: "Changes save by themselves as you go." }) : null));
    root.appendChild(el.conflict);
    root.appendChild(el.summary);
    root.appendChild(h("div", { class: "form-row" },
      h("div", { class: "col-md-5" }, group("Flow title", el.title)),
      h("div", { class: "col-md-7" }, group("Description (optional)", el.description))));
    root.appendChild(h("div", { class: "row" },
      h("div", { class: "col-lg-5 mb-3" }, el.outline),
      h("div", { class: "col-lg-7" }, el.form)));
    renderAll();
    setStatus(canEdit ? "All changes saved (revision " + revision + ")." : "Read only: your role cannot edit flows.");
  }

  function renderAll() {
    renderOutline();
    renderForm();
    showErrors();
  }

  function select_(p, s) { selected = { phase: p, step: s }; }

  function renderOutline() {
    el.outline.textContent = "";
    phases().forEach(function (phase, p) {
      var list = h("ol", { class: "mf-steps list-unstyled mb-1", "data-path": "phases[" + p + "].steps", "data-phase": p });
      stepsOf(phase).forEach(function (step, s) { list.appendChild(stepItem(step, p, s)); });
      list.addEventListener("dragover", function (event) { if (dragging) event.preventDefault(); });
      list.addEventListener("drop", function (event) {
        if (!dragging || event.target !== list) return;
        event.preventDefault();
        moveStep(dragging, { phase: p, step: stepsOf(phase).length });
      });
      var titleInput = input("phases[" + p + "].title", phase.title, function (value) { phase.title = value; },
        { "aria-label": "Title of phase " + (p + 1), class: "form-control form-control-sm mf-phase-title" });
      el.outline.appendChild(h("section", { class: "card mb-2 mf-phase", "data-phase-id": phase.id || "" },
        h("div", { class: "card-header py-1 px-2 d-flex align-items-center" },
          h("span", { class: "mf-muted small mr-2", text: "Phase " + (p + 1) }),
          titleInput,
          canEdit ? h("div", { class: "btn-group ml-1" },
            button("↑", function () { movePhase(p, -1); }, { "aria-label": "Move phase " + (p + 1) + " up", title: "Move phase up" }),
            button("↓", function () { movePhase(p, 1); }, { "aria-label": "Move phase " + (p + 1) + " down", title: "Move phase down" }),
            button("✕", function () { deletePhase(p); }, { "aria-label": "Delete phase " + (p + 1), title: "Delete phase", class: "btn btn-sm btn-outline-danger" })) : null),
        h("div", { class: "card-body p-1" }, list,
          canEdit ? button("+ Add step", function () { addStep(p); }, { class: "btn btn-sm btn-link mf-add-step", "data-phase": p }) : null)));
    });
    if (canEdit) el.outline.appendChild(button("+ Add phase", addPhase, { id: "add-phase", class: "btn btn-sm btn-outline-primary" }));
  }

  function stepItem(step, p, s) {
    var isSelected = p === selected.phase && s === selected.step;
    var item = h("li", {
      class: "mf-step d-flex align-items-center" + (isSelected ? " mf-step--selected" : ""),
      tabindex: 0, draggable: canEdit ? "true" : "false", "data-step-id": step.id || "",
      "data-path": stepPath(p, s), "aria-current": isSelected ? "true" : null,
      "aria-label": (step.prompt || step.id || "step") + ", " + (TYPE_LABELS[step.type] || step.type) +
        (canEdit ? ". Alt+Up or Alt+Down moves it." : ""),
    },
      canEdit ? h("span", { class: "mf-handle", "aria-hidden": "true", text: "⠿" }) : null,
      h("span", { class: "mf-step-text flex-grow-1", text: step.prompt || step.id || "(no prompt)" }),
      h("span", { class: "badge badge-light mr-1", text: TYPE_LABELS[step.type] || step.type || "?" }),
      h("span", { class: "badge badge-danger mf-step-errors mr-1", hidden: true }),
      canEdit ? h("span", { class: "btn-group mf-step-actions" },
        button("↑", function () { nudgeStep(p, s, -1); }, { "aria-label": "Move up", title: "Move up", tabindex: -1 }),
        button("↓", function () { nudgeStep(p, s, 1); }, { "aria-label": "Move down", title: "Move down", tabindex: -1 }),
        button("Copy", function () { duplicateStep(p, s); }, { "aria-label": "Duplicate", title: "Duplicate" }),
        button("✕", function () { deleteStep(p, s); }, { "aria-label": "Delete", title: "Delete", class: "btn btn-sm btn-outline-danger" })) : null);
    item.addEventListener("click", function (event) {
      if (event.target.closest("button")) return;
      select_(p, s);
      renderOutline();
      renderForm();
      showErrors();
      var again_ = root.querySelector('li.mf-step[data-path="' + stepPath(p, s) + '"]');
      if (again_) again_.focus();
    });
    item.addEventListener("keydown", function (event) {
      if (event.target !== item) return;
      if (canEdit && event.altKey && (event.key === "ArrowUp" || event.key === "ArrowDown")) {
        event.preventDefault();
        nudgeStep(p, s, event.key === "ArrowUp" ? -1 : 1);
      } else if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        item.click();
      }
    });
    if (canEdit) {
      item.addEventListener("dragstart", function (event) {
        dragging = { phase: p, step: s };
        event.dataTransfer.effectAllowed = "move";
        event.dataTransfer.setData("text/plain", step.id || "");
        item.classList.add("mf-dragging");
      });
      item.addEventListener("dragend", function () { dragging = null; item.classList.remove("mf-dragging"); });
      item.addEventListener("dragover", function (event) { if (dragging) event.preventDefault(); });
      item.addEventListener("drop", function (event) {
        if (!dragging) return;
        event.preventDefault();
        event.stopPropagation();
        var box = item.getBoundingClientRect();
        var after = event.clientY > box.top + box.height / 2;
        var to = { phase: p, step: s + (after ? 1 : 0) };
        var from = dragging;
        dragging = null;
        if (from.phase === to.phase && from.step < to.step) to.step -= 1;
        moveStep(from, to);
      });
    }
    return item;
  }

  function renderForm() {
    el.form.textContent = "";
    var step = currentStep();
    if (!step) {
      el.form.appendChild(h("div", { class: "card-body mf-muted", text: "Add a step to edit it here." }));
      return;
    }
    var p = selected.phase;
    var path = stepPath(p, selected.step);
    var body = h("div", { class: "card-body" });
    el.form.appendChild(h("div", { class: "card-header py-2 d-flex justify-content-between" },
      h("strong", { text: "Step" }), h("span", { class: "mf-mono mf-muted", text: step.id || "" })));
    el.form.appendChild(body);

    var typeChoices = settings.step_types.map(function (t) { return [t, TYPE_LABELS[t] || t]; });
    body.appendChild(group("Type", select(path + ".type", typeChoices, step.type, function (value) {
      changeType(step, value);
      renderOutline();
      renderForm();
    }, { id: "step-type" })));
    var answers = !NO_ANSWER[step.type];
    body.appendChild(group(answers ? "Question" : "Title", input(path + ".prompt", step.prompt, function (value) {
      if (value) step.prompt = value; else delete step.prompt;
      if (autoKeys.has(step) && answers) {
        step.key = unique(slugify(value, "answer"), takenKeys(step));
        var keyInput = body.querySelector('[data-path="' + path + '.key"]');
        if (keyInput) keyInput.value = step.key;
      }
      var text = root.querySelector('li.mf-step[data-path="' + path + '"] .mf-step-text');
      if (text) text.textContent = value || step.id;
    }, { id: "step-prompt" })));
    var help = h("textarea", { class: "form-control form-control-sm", rows: 2, "data-path": path + ".body", id: "step-body", disabled: !canEdit });
    help.value = step.body || "";
    help.addEventListener("input", function () { if (help.value) step.body = help.value; else delete step.body; changed(); });
    body.appendChild(group(step.type === "info" ? "Text" : "Help text (optional)", help));
    if (answers) {
      body.appendChild(group("Answer name (key)", input(path + ".key", step.key, function (value) {
        autoKeys.delete(step);
        if (value) step.key = value; else delete step.key;
      }, { id: "step-key", class: "form-control form-control-sm mf-mono" }),
      "How this answer is named in exports and branching rules."));
      var required = h("input", { type: "checkbox", class: "form-check-input", id: "step-required", "data-path": path + ".required", disabled: !canEdit });
      required.checked = step.required !== false;
      required.addEventListener("change", function () { step.required = required.checked; changed(); });
      body.appendChild(h("div", { class: "form-check mb-2" }, required,
        h("label", { class: "form-check-label", for: "step-required", text: "An answer is required" })));
    }
    typeFields(step, path).forEach(function (node) { body.appendChild(node); });
    body.appendChild(branching(step, path));
  }

  function typeFields(step, path) {
    var nodes = [];
    if (step.type === "video") {
      nodes.push(group("Video address", input(path + ".video_url", step.video_url, function (value) { step.video_url = value; }, { id: "step-video-url", type: "url" })));
    }
    if (CHOICE[step.type]) nodes.push(optionsEditor(step, path));
    if (step.type === "multi_choice") {
      nodes.push(h("div", { class: "form-row" },
        h("div", { class: "col" }, group("At least", numberInput(path + ".min_selected", step.min_selected, function (v) { setOrDelete(step, "min_selected", v); }, { id: "step-min-selected" }))),
        h("div", { class: "col" }, group("At most", numberInput(path + ".max_selected", step.max_selected, function (v) { setOrDelete(step, "max_selected", v); }, { id: "step-max-selected" })))));
    }
    if (step.type === "text" || step.type === "long_text") {
      nodes.push(group("Longest answer (characters)", numberInput(path + ".max_length", step.max_length, function (v) { setOrDelete(step, "max_length", v); }, { id: "step-max-length" })));
    }
    if (step.type === "number" || step.type === "scale") {
      var low = step.type === "scale" ? "Lowest point of the scale" : "Smallest allowed (optional)";
      var high = step.type === "scale" ? "Highest point of the scale" : "Largest allowed (optional)";
      nodes.push(h("div", { class: "form-row" },
        h("div", { class: "col" }, group(low, numberInput(path + ".min", step.min, function (v) { setOrDelete(step, "min", v); }, { id: "step-min" }))),
        h("div", { class: "col" }, group(high, numberInput(path + ".max", step.max, function (v) { setOrDelete(step, "max", v); }, { id: "step-max" })))));
    }
    if (step.type === "scale") {
      nodes.push(h("div", { class: "form-row" },
        h("div", { class: "col" }, group("Label of the lowest point (optional)", input(path + ".min_label", step.min_label, function (v) { setOrDelete(step, "min_label", v || undefined); }, { id: "step-min-label", placeholder: "e.g. Not at all" }))),
        h("div", { class: "col" }, group("Label of the highest point (optional)", input(path + ".max_label", step.max_label, function (v) { setOrDelete(step, "max_label", v || undefined); }, { id: "step-max-label", placeholder: "e.g. Completely" })))));
    }
    if (step.type === "contact") {
      var box = h("fieldset", { class: "mb-2", "data-path": path + ".fields" }, h("legend", { class: "small font-weight-bold mb-0", text: "Ask for" }));
      settings.contact_fields.forEach(function (name) {
        var id = fieldId();
        var check = h("input", { type: "checkbox", class: "form-check-input", id: id, disabled: !canEdit });
        check.checked = (step.fields || []).indexOf(name) >= 0;
        check.addEventListener("change", function () {
          var fields = settings.contact_fields.filter(function (f) {
            return f === name ? check.checked : (step.fields || []).indexOf(f) >= 0;
          });
          step.fields = fields;
          changed();
        });
        box.appendChild(h("div", { class: "form-check form-check-inline" }, check,
          h("label", { class: "form-check-label", for: id, text: name })));
      });
      nodes.push(box);
    }
    return nodes;
  }

  function setOrDelete(object, name, value) {
    if (value === undefined) delete object[name]; else object[name] = value;
  }

  function optionsEditor(step, path) {
    var box = h("fieldset", { class: "mb-2", "data-path": path + ".options" },
      h("legend", { class: "small font-weight-bold mb-1", text: "Options (label shown, value stored)" }));
    var options = Array.isArray(step.options) ? step.options : (step.options = []);
    options.forEach(function (option, i) {
      var optionPath = path + ".options[" + i + "]";
      box.appendChild(h("div", { class: "input-group input-group-sm mb-1", "data-path": optionPath },
        input(optionPath + ".label", option.label, function (value) { option.label = value; }, { "aria-label": "Label of option " + (i + 1), placeholder: "Label" }),
        input(optionPath + ".value", option.value, function (value) { option.value = value; }, { "aria-label": "Value of option " + (i + 1), placeholder: "value", class: "form-control form-control-sm mf-mono" }),
        canEdit ? h("div", { class: "input-group-append" }, button("✕", function () {
          options.splice(i, 1); renderForm(); showErrors(); changed();
        }, { "aria-label": "Remove option " + (i + 1) })) : null));
    });
    if (canEdit) {
      box.appendChild(button("+ Add option", function () {
        var taken = {};
        options.forEach(function (o) { taken[o.value] = true; });
        var n = options.length + 1;
        while (taken["option-" + n]) n++;
        options.push({ value: "option-" + n, label: "Option " + n });
        renderForm(); showErrors(); changed();
      }, { class: "btn btn-sm btn-link", id: "add-option" }));
    }
    return box;
  }

  // ---- branching: rules built from the flow's keys, operators and later steps ----

  function keyedSteps() {
    return allSteps().filter(function (entry) { return entry.step.key && !NO_ANSWER[entry.step.type]; });
  }

  function stepForKey(key) {
    var found = keyedSteps().filter(function (entry) { return entry.step.key === key; })[0];
    return found ? found.step : null;
  }

  function operatorOf(when) {
    return settings.operators.filter(function (op) { return op in when; })[0] || "equals";
  }

  function branching(step, path) {
    var box = h("fieldset", { class: "mt-3 border-top pt-2", id: "branching", "data-path": path + ".next" },
      h("legend", { class: "small font-weight-bold mb-1", text: "After this step" }));
    var rules = Array.isArray(step.next) ? step.next : [];
    var order = allSteps();
    var here = order.findIndex(function (entry) { return entry.step === step; });
    var later = order.slice(here + 1).map(function (entry) {
      return [entry.step.id, (entry.step.prompt || entry.step.id) + " (" + entry.step.id + ")"];
    });
    rules.forEach(function (rule, r) { box.appendChild(ruleRow(step, path, rule, r, later)); });
    var next = order[here + 1];
    box.appendChild(h("p", { class: "small mf-muted mb-1", text: (rules.length ? "Otherwise: " : "Go to: ") +
      (next ? "the next step, “" + (next.step.prompt || next.step.id) + "”" : "the end of the flow") }));
    if (canEdit) {
      box.appendChild(button("+ Add a branch", function () {
        var keys = keyedSteps();
        var own = step.key && !NO_ANSWER[step.type] ? step.key : (keys[0] && keys[0].step.key);
        var rule = { when: { key: own || "", equals: "" }, goto: later.length ? later[0][0] : "" };
        var keyStep = stepForKey(rule.when.key);
        if (keyStep && CHOICE[keyStep.type] && keyStep.options && keyStep.options[0]) rule.when.equals = keyStep.options[0].value;
        if (keyStep && keyStep.type === "boolean") rule.when.equals = true;
        step.next = rules.concat([rule]);
        renderForm(); showErrors(); changed();
      }, { class: "btn btn-sm btn-outline-primary", id: "add-rule" }));
    }
    return box;
  }

  function ruleRow(step, path, rule, r, later) {
    var rulePath = path + ".next[" + r + "]";
    var when = rule.when;
    var always = !when || typeof when !== "object";
    var keyChoices = [["", "(always)"]].concat(keyedSteps().map(function (entry) {
      return [entry.step.key, (entry.step.prompt || entry.step.key) + " [" + entry.step.key + "]"];
    }));
    var row = h("div", { class: "mf-rule border rounded p-2 mb-2", "data-path": rulePath, "data-rule": r });
    var keySelect = select(rulePath + ".when.key", keyChoices, always ? "" : when.key, function (value) {
      if (!value) { delete rule.when; }
      else {
        var op = always ? "equals" : operatorOf(when);
        rule.when = { key: value };
        rule.when[op] = defaultValue(stepForKey(value), op);
      }
      renderForm(); showErrors();
    }, { "aria-label": "If the answer to", class: "form-control form-control-sm mf-rule-key" });
    row.appendChild(h("div", { class: "form-row align-items-center" },
      h("div", { class: "col-auto small", text: "If" }),
      h("div", { class: "col" }, keySelect)));
    if (!always) {
      var op = operatorOf(when);
      var opSelect = select(rulePath + ".when." + op, settings.operators.map(function (o) { return [o, OPERATOR_LABELS[o] || o]; }), op, function (value) {
        var old = operatorOf(when);
        var keep = when[old];
        delete when[old];
        when[value] = value === "answered" ? true : (value === "in" ? [].concat(keep === "" || keep === undefined ? [] : keep) : (Array.isArray(keep) ? keep[0] : keep));
        if (when[value] === undefined) when[value] = defaultValue(stepForKey(when.key), value);
        renderForm(); showErrors();
      }, { "aria-label": "Condition", class: "form-control form-control-sm mf-rule-operator" });
      row.appendChild(h("div", { class: "form-row align-items-center mt-1" },
        h("div", { class: "col-5" }, opSelect),
        h("div", { class: "col-7" }, valueControl(rulePath, when, op))));
    }
    var targets = later.slice();
    if (rule.goto && !targets.some(function (t) { return t[0] === rule.goto; })) targets.unshift([rule.goto, rule.goto + " (not a later step)"]);
    if (!rule.goto) targets.unshift(["", "(choose a step)"]);
    row.appendChild(h("div", { class: "form-row align-items-center mt-1" },
      h("div", { class: "col-auto small", text: "go to" }),
      h("div", { class: "col" }, select(rulePath + ".goto", targets, rule.goto || "", function (value) { rule.goto = value; }, { "aria-label": "Go to step", class: "form-control form-control-sm mf-rule-goto" })),
      canEdit ? h("div", { class: "col-auto" }, button("✕", function () {
        step.next.splice(r, 1);
        if (!step.next.length) delete step.next;
        renderForm(); showErrors(); changed();
      }, { "aria-label": "Remove branch " + (r + 1), class: "btn btn-sm btn-outline-danger" })) : null));
    return row;
  }

  function defaultValue(keyStep, op) {
    if (op === "answered") return true;
    if (op === "in") return [];
    if (!keyStep) return "";
    if (CHOICE[keyStep.type] && keyStep.options && keyStep.options[0]) return keyStep.options[0].value;
    if (keyStep.type === "boolean") return true;
    if (keyStep.type === "number" || keyStep.type === "scale") return keyStep.min !== undefined ? keyStep.min : 0;
    return "";
  }

  function valueControl(rulePath, when, op) {
    var path = rulePath + ".when." + op;
    var keyStep = stepForKey(when.key);
    var label = { "aria-label": "Value", class: "form-control form-control-sm mf-rule-value" };
    if (op === "answered") {
      return select(path, [["true", "yes"], ["false", "no"]], String(when[op]), function (v) { when[op] = v === "true"; }, label);
    }
    if (keyStep && keyStep.type === "boolean" && op !== "in") {
      return select(path, [["true", "Yes"], ["false", "No"]], String(when[op]), function (v) { when[op] = v === "true"; }, label);
    }
    if (keyStep && CHOICE[keyStep.type] && op !== "in" && keyStep.options) {
      var choices = keyStep.options.map(function (o) { return [o.value, o.label || o.value]; });
      if (!choices.some(function (c) { return c[0] === when[op]; })) choices.unshift([when[op] === undefined ? "" : when[op], String(when[op] === undefined ? "" : when[op])]);
      return select(path, choices, when[op], function (v) { when[op] = v; }, label);
    }
    var numeric = keyStep && (keyStep.type === "number" || keyStep.type === "scale");
    if (op === "in") {
      return input(path, (when[op] || []).join(", "), function (raw) {
        when[op] = raw.split(",").map(function (v) { return v.trim(); }).filter(Boolean).map(function (v) {
          return numeric && /^-?\d+(\.\d+)?$/.test(v) ? Number(v) : v;
        });
      }, Object.assign({ placeholder: "values, separated by commas" }, label));
    }
    if (numeric || op === "gt" || op === "gte" || op === "lt" || op === "lte") {
      return numberInput(path, when[op], function (v) { when[op] = v === undefined ? "" : v; }, label);
    }
    return input(path, when[op], function (v) { when[op] = v; }, label);
  }

  // ---- errors next to the fields ----

  function showErrors() {
    root.querySelectorAll(".mf-error").forEach(function (node) { node.remove(); });
    root.querySelectorAll(".is-invalid").forEach(function (node) { node.classList.remove("is-invalid"); });
    root.querySelectorAll(".mf-step-errors").forEach(function (node) { node.hidden = true; node.textContent = ""; });
    var unplaced = [];
    var perStep = {};
    errors.forEach(function (error) {
      var match = /^phases\[(\d+)\]\.steps\[(\d+)\]/.exec(error.path);
      if (match) {
        var key = stepPath(Number(match[1]), Number(match[2]));
        perStep[key] = (perStep[key] || 0) + 1;
      }
      var target = placeFor(error.path);
      if (!target) { unplaced.push(error); return; }
      if (target.matches("input, select, textarea")) target.classList.add("is-invalid");
      var note = h("div", { class: "invalid-feedback d-block mf-error", role: "alert", "data-error-path": error.path, text: error.message });
      var anchor = target.closest(".input-group") || target;
      anchor.insertAdjacentElement("afterend", note);
    });
    Object.keys(perStep).forEach(function (path) {
      var badge = root.querySelector('li.mf-step[data-path="' + path + '"] .mf-step-errors');
      if (badge) { badge.hidden = false; badge.textContent = String(perStep[path]); badge.title = perStep[path] + " problem(s)"; }
    });
    el.summary.textContent = "";
    el.summary.hidden = !unplaced.length;
    if (unplaced.length) {
      el.summary.appendChild(h("strong", { text: "Fix these to save:" }));
      el.summary.appendChild(h("ul", { class: "mb-0 small" }, unplaced.map(function (error) {
        var match = /^phases\[(\d+)\](?:\.steps\[(\d+)\])?/.exec(error.path);
        var item = h("li", { class: "mf-summary-error" }, h("span", { class: "mf-mono", text: error.path ? error.path + ": " : "" }), error.message);
        if (match && match[2] !== undefined) {
          item.appendChild(document.createTextNode(" "));
          item.appendChild(button("Show", function () {
            select_(Number(match[1]), Number(match[2])); renderOutline(); renderForm(); showErrors();
          }, { class: "btn btn-link btn-sm p-0" }));
        }
        return item;
      })));
    }
  }

  function placeFor(path) {
    if (path === "" || path === undefined) return null;
    var candidate = path;
    while (candidate) {
      var node = root.querySelector('[data-path="' + CSS.escape(candidate) + '"]');
      if (node) {
        // A step's own item in the outline is not a field: keep such errors in the form or the list.
        if (node.matches("li.mf-step") && node.getAttribute("aria-current") !== "true") return null;
        if (node.matches("li.mf-step")) {
          node = el.form.querySelector(".card-body") || node;
        }
        return node;
      }
      var cut = Math.max(candidate.lastIndexOf("."), candidate.lastIndexOf("["));
      if (cut <= 0) return null;
      candidate = candidate.slice(0, cut);
      if (/^phases\[\d+\]\.steps\[\d+\]$/.test(candidate)) {
        var m = /^phases\[(\d+)\]\.steps\[(\d+)\]$/.exec(candidate);
        if (Number(m[1]) !== selected.phase || Number(m[2]) !== selected.step) return null;
      }
    }
    return null;
  }

  // ---- saving: validate, then save the revision this page last saw ----

  function setStatus(text, kind) {
    el.status.textContent = text;
    el.status.className = kind === "error" ? "text-danger" : kind === "busy" ? "text-info" : "mf-muted";
  }

  function changed(structural) {
    if (structural) { renderOutline(); renderForm(); showErrors(); }
    if (!canEdit) return;
    if (conflict) return;
    setStatus("Unsaved changes…", "busy");
    clearTimeout(timer);
    timer = setTimeout(sync, SAVE_DELAY_MS);
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf, Accept: "application/json" },
      body: JSON.stringify(body),
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        return { status: response.status, data: data };
      });
    });
  }

  function isDirty() { return JSON.stringify(doc) !== savedText; }

  function sync() {
    clearTimeout(timer);
    if (syncing) { again = true; return Promise.resolve(); }
    if (conflict) return Promise.resolve();
    syncing = true;
    var sent = JSON.stringify(doc);
    var document_ = JSON.parse(sent);
    setStatus("Checking…", "busy");
    return post(root.dataset.validateUrl, { document: document_ }).then(function (result) {
      if (result.status !== 200) throw new Error(result.data.detail || "HTTP " + result.status);
      errors = result.data.errors || [];
      showErrors();
      if (!result.data.valid) {
        setStatus("Not saved: " + errors.length + (errors.length === 1 ? " problem to fix." : " problems to fix."), "error");
        return null;
      }
      if (sent === savedText) { setStatus("All changes saved (revision " + revision + ")."); return null; }
      setStatus("Saving…", "busy");
      return post(root.dataset.saveUrl, { document: document_, revision: revision }).then(function (saved) {
        if (saved.status === 200) {
          revision = saved.data.revision;
          savedText = sent;
          setStatus("All changes saved (revision " + revision + ").");
          var label = document.getElementById("draft-revision");
          if (label) label.textContent = String(revision);
          var hidden = document.querySelector("input[name=draft_revision]");
          if (hidden) hidden.value = String(revision);
          var yaml = document.getElementById("document");
          if (yaml && saved.data.yaml) yaml.value = saved.data.yaml;
        } else if (saved.status === 409) {
          showConflict(saved.data);
        } else if (saved.status === 422) {
          errors = saved.data.errors || [];
          showErrors();
          setStatus("Not saved: " + (saved.data.detail || "the draft is not valid."), "error");
        } else {
          setStatus("Not saved: " + (saved.data.detail || "the server answered " + saved.status) + ". Retrying…", "error");
          timer = setTimeout(sync, 5000);
        }
      });
    }).catch(function (error) {
      setStatus("Not saved: the server could not be reached (" + error.message + "). Retrying…", "error");
      timer = setTimeout(sync, 5000);
    }).then(function () {
      syncing = false;
      if (again) { again = false; if (isDirty()) return sync(); }
    });
  }

  function showConflict(data) {
    conflict = data;
    var theirs = data.theirs || {};
    var changes = data.changes || {};
    function list(label, ids) {
      return ids && ids.length ? h("li", {}, label + ": ", h("span", { class: "mf-mono", text: ids.join(", ") })) : null;
    }
    el.conflict.textContent = "";
    el.conflict.appendChild(h("strong", { text: "Someone else saved this draft while you were editing (now revision " + theirs.revision + ")." }));
    el.conflict.appendChild(h("p", { class: "mb-1", text: "Your changes are not saved yet. Compared with yours, their draft has:" }));
    var items = [list("steps added", changes.added), list("steps removed", changes.removed), list("steps changed", changes.changed)].filter(Boolean);
    if (theirs.title && theirs.title !== doc.title) items.push(h("li", {}, "the title “" + theirs.title + "”"));
    if (!items.length) items.push(h("li", { text: "changes outside the steps (titles, descriptions, order)" }));
    el.conflict.appendChild(h("ul", { class: "mb-2", id: "conflict-changes" }, items));
    el.conflict.appendChild(h("div", {},
      button("Reload their version (discard mine)", reloadTheirs, { id: "conflict-reload", class: "btn btn-sm btn-light mr-2" }),
      button("Overwrite with mine", overwrite, { id: "conflict-overwrite", class: "btn btn-sm btn-danger" })));
    el.conflict.hidden = false;
    setStatus("Not saved: the draft changed elsewhere; choose below.", "error");
    el.conflict.scrollIntoView({ block: "nearest" });
  }

  function reloadTheirs() {
    var theirs = conflict.theirs;
    conflict = null;
    el.conflict.hidden = true;
    doc = clone(theirs.document);
    revision = theirs.revision;
    savedText = JSON.stringify(doc);
    errors = [];
    el.title.value = doc.title || "";
    el.description.value = doc.description || "";
    select_(0, 0);
    renderAll();
    setStatus("Reloaded their version (revision " + revision + ").");
  }

  function overwrite() {
    revision = conflict.theirs.revision;
    conflict = null;
    el.conflict.hidden = true;
    sync();
  }

  // ---- leaving: never silently ----

  window.addEventListener("beforeunload", function (event) {
    if (canEdit && isDirty()) { event.preventDefault(); event.returnValue = ""; }
  });

  document.querySelectorAll("#editor-tabs a[data-view], a[data-flush-draft]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (!canEdit || !isDirty() || conflict) return;
      event.preventDefault();
      sync().then(function () {
        if (isDirty() && !window.confirm("Your latest changes are not valid yet and are not saved. Leave anyway?")) return;
        savedText = JSON.stringify(doc);
        window.location.href = link.href;
      });
    });
  });

  var tryForm = document.getElementById("try-draft");
  if (tryForm) {
    tryForm.addEventListener("submit", function (event) {
      if (!canEdit || !isDirty() || conflict) return;
      event.preventDefault();
      sync().then(function () {
        if (isDirty() && !window.confirm("Your latest changes are not valid yet, so the preview shows the last saved draft. Go on?")) return;
        savedText = JSON.stringify(doc);
        tryForm.submit();
      });
    });
  }

  window.mentorflowEditor = { flush: sync, isDirty: isDirty };
  build();
})();

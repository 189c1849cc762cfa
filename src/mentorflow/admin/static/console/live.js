// Live console pages: they follow the learner API's push through a server-sent events stream
// opened with the console's own cookie. The room moves each learner to the step they are on;
// a session page re-reads itself when its session changes. EventSource reconnects by itself.
(function () {
  "use strict";

  function learnerLink(learner) {
    var link = document.createElement("a");
    link.className = "badge badge-pill badge-primary mf-room-learner";
    link.href = learner.url;
    link.dataset.sessionId = learner.id;
    link.textContent = learner.label;
    return link;
  }

  function placeLearner(room, learner) {
    var old = room.querySelector('[data-session-id="' + CSS.escape(learner.id) + '"]');
    if (old && Number(old.dataset.version || 0) > learner.version) return;
    if (old) old.remove();
    if (learner.status === "abandoned") return;
    var section = room.querySelector('[data-step-id="' + CSS.escape(learner.step_id || "") + '"]');
    if (!section) return; // a step of another version of the flow
    var link = learnerLink(learner);
    link.dataset.version = String(learner.version);
    if (!learner.step_id) link.className = "badge badge-pill badge-success mf-room-learner";
    section.querySelector(".mf-room-learners").appendChild(link);
  }

  function followRoom(room) {
    var status = document.getElementById("live-status");
    var initial = document.getElementById("room-learners");
    JSON.parse(initial.textContent).forEach(function (learner) { placeLearner(room, learner); });
    var source = new EventSource(room.dataset.liveStream);
    source.addEventListener("open", function () { status.textContent = "Live."; });
    source.addEventListener("error", function () { status.textContent = "Reconnecting…"; });
    source.addEventListener("learner", function (event) {
      placeLearner(room, JSON.parse(event.data));
    });
  }

  function followSession(region) {
    var shown = Number(region.dataset.version);
    var source = new EventSource(region.dataset.liveStream);
    var reading = false;
    source.addEventListener("state", function (event) {
      var version = JSON.parse(event.data).version;
      if (version <= shown || reading) return;
      reading = true;
      fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.text(); })
        .then(function (html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live-region");
          if (fresh) {
            region.innerHTML = fresh.innerHTML;
            shown = Number(fresh.dataset.version);
            region.dataset.version = fresh.dataset.version;
          }
        })
        .catch(function () { /* the next change tries again */ })
        .finally(function () { reading = false; });
    });
  }

  var room = document.getElementById("room");
  if (room && room.dataset.liveStream) followRoom(room);
  var region = document.getElementById("live-region");
  if (region && region.dataset.liveStream) followSession(region);
})();

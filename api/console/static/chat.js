// The chat playground. With fetch streams (every current browser) a turn goes to /chat/stream and the
// answer is written as it is generated; otherwise htmx swaps in each whole answer (and without scripts
// the form posts the whole page). A refusal (a model not yours, the budget spent, no chat engine) is
// shown under the form with the API's message instead of being dropped.
(function () {
  "use strict";
  var STREAM = "/console/models/chat/stream";

  function showError(text) {
    var box = document.getElementById("chat-error");
    if (box) { box.textContent = text; box.hidden = false; }
  }

  function refusal(status, statusText, body) {
    var doc = new DOMParser().parseFromString(body || "", "text/html");
    var message = doc.querySelector("[role=alert]");
    return "Refused (HTTP " + status + "): " + (message ? message.textContent : statusText);
  }

  function turn(log, role, text) {
    var item = document.createElement("li");
    item.className = "turn turn-" + role;
    var who = document.createElement("span");
    who.className = "who-said";
    who.textContent = role === "user" ? "You" : "Model";
    var said = document.createElement("div");
    said.className = "said";
    said.textContent = text;
    item.appendChild(who);
    item.appendChild(said);
    log.appendChild(item);
    return said;
  }

  // Each server-sent event in `buffer` that is complete: [{event, data}], and what is left over.
  function parseEvents(buffer) {
    var events = [];
    var blocks = buffer.replace(/\r\n/g, "\n").split("\n\n");
    var rest = blocks.pop();
    blocks.forEach(function (block) {
      var event = "message", data = [];
      block.split("\n").forEach(function (line) {
        if (line.indexOf("event:") === 0) event = line.slice(6).trim();
        else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
      });
      if (data.length) events.push({ event: event, data: data.join("\n") });
    });
    return { events: events, rest: rest };
  }

  function usageLine(section, done) {
    var line = document.getElementById("chat-usage");
    if (!line) {
      line = document.createElement("p");
      line.className = "muted";
      line.id = "chat-usage";
      section.querySelector("form").before(line);
    }
    line.textContent = done.prompt_tokens + " prompt + " + done.completion_tokens + " answer tokens.";
  }

  function stream(form) {
    var section = document.getElementById("chat");
    var log = document.getElementById("chat-log");
    var button = form.querySelector("button[type=submit]");
    var box = document.getElementById("chat-error");
    var body = new URLSearchParams(new FormData(form));
    var message = form.elements.message.value;
    if (box) box.hidden = true;
    log.querySelectorAll("li.muted").forEach(function (empty) { empty.remove(); });
    var asked = turn(log, "user", message).parentNode;
    var said = turn(log, "assistant", "");
    var answered = said.parentNode;
    answered.setAttribute("aria-busy", "true");
    button.disabled = true;

    function undo(text) {
      asked.remove();
      answered.remove();
      showError(text);
    }

    fetch(STREAM, { method: "POST", body: body, credentials: "same-origin",
                    headers: { "Accept": "text/event-stream" } })
      .then(function (reply) {
        if (!reply.ok) {
          return reply.text().then(function (text) { undo(refusal(reply.status, reply.statusText, text)); });
        }
        var reader = reply.body.getReader();
        var decoder = new TextDecoder();
        var buffer = "";
        var ended = false;
        function handle(item) {
          var value = JSON.parse(item.data);
          if (item.event === "delta") {
            said.textContent += value;
          } else if (item.event === "done") {
            ended = true;
            form.elements.history.value = value.history;
            form.elements.message.value = "";
            usageLine(section, value);
          } else if (item.event === "failed") {
            ended = true;
            showError(value);
          }
        }
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) {
              if (!ended) showError("The answer was cut off (the connection closed).");
              return;
            }
            var parsed = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }));
            buffer = parsed.rest;
            parsed.events.forEach(handle);
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { showError("The request failed (network)."); })
      .then(function () {
        answered.removeAttribute("aria-busy");
        button.disabled = false;
      });
  }

  if (window.fetch && window.ReadableStream && window.TextDecoder && window.URLSearchParams) {
    // In the capture phase, before htmx's own listener on the form: this turn is streamed instead.
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.closest || !form.closest("#chat") || !form.checkValidity()) return;
      event.preventDefault();
      event.stopPropagation();
      stream(form);
    }, true);
  }

  document.body.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    showError(refusal(xhr.status, xhr.statusText, xhr.responseText));
  });
  document.body.addEventListener("htmx:sendError", function () {
    showError("The request failed (network).");
  });
})();

// The chat playground: htmx swaps in each answer; a refusal (a model not yours, the budget spent,
// no chat engine) is shown under the form with the API's message instead of being dropped.
(function () {
  "use strict";
  document.body.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("chat-error");
    if (!box) return;
    var xhr = event.detail.xhr;
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var message = doc.querySelector("[role=alert]");
    box.textContent = "Refused (HTTP " + xhr.status + "): " + (message ? message.textContent : xhr.statusText);
    box.hidden = false;
  });
  document.body.addEventListener("htmx:sendError", function () {
    var box = document.getElementById("chat-error");
    if (box) { box.textContent = "The request failed (network)."; box.hidden = false; }
  });
})();

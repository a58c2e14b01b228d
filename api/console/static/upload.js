// The datasets page's upload: the file is the request's raw body (as POST /datasets/{user}/upload
// takes it), sent with its CSRF token in a header, with a progress bar; then the dataset's page.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = document.getElementById("upload-file");
  var bar = document.getElementById("upload-progress");
  var status = document.getElementById("upload-status");
  var button = form.querySelector("button[type=submit]");

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error" : "";
  }

  function refusal(xhr) {
    var doc = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var message = doc.querySelector("[role=alert]");
    return "Refused (HTTP " + xhr.status + "): " + (message ? message.textContent : xhr.statusText);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var file = input.files && input.files[0];
    if (!file) { say("Choose a file first.", true); return; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/console/datasets/upload?filename=" + encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRFToken", form.querySelector("input[name=_csrf_token]").value);
    xhr.setRequestHeader("Accept", "application/json");
    bar.hidden = false;
    bar.value = 0;
    button.disabled = true;
    say("Uploading " + file.name + "…", false);
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) bar.value = Math.round((e.loaded * 100) / e.total);
    });
    xhr.upload.addEventListener("load", function () { bar.value = 100; say("Checking every line…", false); });
    xhr.addEventListener("load", function () {
      button.disabled = false;
      if (xhr.status === 201) {
        var reply = JSON.parse(xhr.responseText);
        say(reply.status === "rejected" ? "Rejected: opening the report…" : "Uploaded: opening it…", false);
        window.location.assign(reply.page);
      } else {
        say(refusal(xhr), true);
      }
    });
    xhr.addEventListener("error", function () { button.disabled = false; say("The upload failed (network).", true); });
    xhr.send(file);
  });
})();

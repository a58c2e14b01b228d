// A job's page: the loss chart (uPlot, vendored) and the live stream (server-sent events).
// The server sends only what changed (api/console/live.py); this script merges it in.
(function () {
  "use strict";
  var source = document.getElementById("job-data");
  if (!source) return;
  var data = JSON.parse(source.textContent);
  var train = new Map(), evals = new Map(), plot = null;
  var chartBox = document.getElementById("chart");

  function add(points) {
    (points.train || []).forEach(function (p) { train.set(p.step, p.loss); });
    (points.eval || []).forEach(function (p) { evals.set(p.step, p.eval_loss); });
  }

  function columns() {
    var steps = Array.from(new Set(Array.from(train.keys()).concat(Array.from(evals.keys()))));
    steps.sort(function (a, b) { return a - b; });
    return [
      steps,
      steps.map(function (s) { return train.has(s) ? train.get(s) : null; }),
      steps.map(function (s) { return evals.has(s) ? evals.get(s) : null; }),
    ];
  }

  function size() {
    var width = Math.max(260, chartBox.clientWidth - 8);
    return { width: width, height: Math.round(Math.min(320, Math.max(180, width * 0.45))) };
  }

  function render() {
    document.getElementById("train-points").textContent = String(train.size);
    document.getElementById("eval-points").textContent = String(evals.size);
    if (typeof uPlot === "undefined") return;
    if (plot) { plot.setData(columns()); return; }
    var dims = size();
    plot = new uPlot({
      width: dims.width,
      height: dims.height,
      scales: { x: { time: false } },
      axes: [{ label: "step" }, { label: "loss" }],
      series: [
        { label: "step" },
        { label: "train loss", stroke: "#2563eb", width: 2, spanGaps: true },
        { label: "validation loss", stroke: "#c2410c", width: 2, spanGaps: true, points: { show: true, size: 6 } },
      ],
    }, columns(), chartBox);
    window.addEventListener("resize", function () { plot.setSize(size()); });
  }

  function setFields(panel) {
    Object.keys(panel).forEach(function (key) {
      document.querySelectorAll('[data-field="' + key + '"]').forEach(function (el) {
        var value = panel[key];
        el.textContent = value === null || value === undefined ? "" : String(value);
        if (key === "error") el.hidden = !value;
        if (key === "state") el.className = "state state-" + value;
        if (key === "cost") el.setAttribute("data-usd-micros", String(panel.cost_usd_micros));
      });
    });
    var bar = document.getElementById("progress-bar");
    bar.max = panel.progress_max || 1;
    bar.value = panel.progress_value;
    document.getElementById("cost-bar").value = Math.min(panel.cost_pct || 0, 100);
    document.getElementById("month-bar").value = Math.min(panel.month_pct || 0, 100);
    var stop = document.querySelector('[data-when="stoppable"]');
    if (stop) stop.hidden = !panel.stoppable;
    var alerts = document.getElementById("alerts");
    alerts.replaceChildren.apply(alerts, (panel.alerts.length ? panel.alerts : ["None."]).map(function (text) {
      var li = document.createElement("li");
      li.textContent = text;
      if (!panel.alerts.length) li.className = "muted";
      return li;
    }));
  }

  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function loss(value) { return value === null || value === undefined ? "–" : value.toFixed(4); }

  function setCheckpoints(listing) {
    var body = document.querySelector("#checkpoints tbody");
    body.replaceChildren.apply(body, listing.checkpoints.map(function (c) {
      var tr = document.createElement("tr");
      var id = document.createElement("code");
      id.textContent = c.checkpoint_id;
      var first = document.createElement("td");
      first.appendChild(id);
      tr.append(first, cell(String(c.step)), cell(loss(c.train_loss)), cell(loss(c.eval_loss)),
        cell(c.available ? "yes" : "pruned"));
      return tr;
    }));
  }

  var log = document.getElementById("log");
  var MAX_LOG_CHARS = 200000;
  function appendLog(text) {
    var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    var all = log.textContent + text + (text.endsWith("\n") ? "" : "\n");
    log.textContent = all.length > MAX_LOG_CHARS ? all.slice(all.indexOf("\n", all.length - MAX_LOG_CHARS) + 1) : all;
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  add(data.curves);
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", render); else render();
  log.scrollTop = log.scrollHeight;
  if (data.terminal || !window.EventSource) return;

  var stream = new EventSource(data.live);
  stream.addEventListener("metrics", function (e) { add(JSON.parse(e.data)); render(); });
  stream.addEventListener("status", function (e) { setFields(JSON.parse(e.data)); });
  stream.addEventListener("checkpoints", function (e) { setCheckpoints(JSON.parse(e.data)); });
  stream.addEventListener("log", function (e) { appendLog(e.data); });
  stream.addEventListener("end", function () { stream.close(); document.body.setAttribute("data-live", "ended"); });
  document.body.setAttribute("data-live", "open");
})();

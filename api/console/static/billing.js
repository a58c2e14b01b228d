// The billing page's chart of past months (uPlot, vendored): one bar per month, in dollars.
(function () {
  "use strict";
  var source = document.getElementById("billing-data");
  var box = document.getElementById("months-chart");
  if (!source || !box || typeof uPlot === "undefined") return;
  var data = JSON.parse(source.textContent);
  if (!data.months.length) return;
  var xs = data.months.map(function (_, i) { return i; });
  var dollars = data.usd_micros.map(function (m) { return m / 1e6; });

  function size() {
    var width = Math.max(260, box.clientWidth - 8);
    return { width: width, height: Math.round(Math.min(260, Math.max(160, width * 0.35))) };
  }

  var dims = size();
  var plot = new uPlot({
    width: dims.width,
    height: dims.height,
    scales: { x: { time: false, range: [-0.6, xs.length - 0.4] } },
    legend: { show: false },
    axes: [
      { values: function (_, ticks) { return ticks.map(function (t) { return data.months[t] || ""; }); },
        splits: function () { return xs; } },
      { label: "USD", size: 70, values: function (_, ticks, __, ___, step) {
          var places = Math.max(2, Math.min(6, Math.ceil(-Math.log10(step || 1))));
          return ticks.map(function (t) { return "$" + t.toFixed(places); });
        } },
    ],
    series: [
      {},
      { label: "cost", stroke: "#2563eb", fill: "rgba(37, 99, 235, 0.35)",
        paths: uPlot.paths.bars({ size: [0.6, 60] }), points: { show: false } },
    ],
  }, [xs, dollars], box);
  window.addEventListener("resize", function () { plot.setSize(size()); });
})();

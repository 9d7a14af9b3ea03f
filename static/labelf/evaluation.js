// Evaluation and comparison pages: sortable tables, the live threshold chart and slider, the precision-target
// helper, the reliability diagram, and the comparison charts. Data comes from <script type="application/json">
// blocks; without JavaScript every number is still on the page and every form still works.
(function () {
  "use strict";

  function readJson(id) {
    var el = document.getElementById(id);
    return el ? JSON.parse(el.textContent) : null;
  }

  function fixed(value, digits) {
    return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
  }

  // --- sortable tables: <table data-sortable> with <th data-sort="text|number"> and <td data-value> -----------
  document.addEventListener("click", function (event) {
    var th = event.target.closest ? event.target.closest("table[data-sortable] th[data-sort]") : null;
    if (!th) { return; }
    var table = th.closest("table");
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var numeric = th.getAttribute("data-sort") === "number";
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    Array.prototype.forEach.call(th.parentNode.children, function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[column].getAttribute("data-value");
      var y = b.cells[column].getAttribute("data-value");
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });

  // --- thresholds -----------------------------------------------------------------------------------------
  // The curve's point at the largest listed threshold not above t (the server renders the same point).
  function pointAt(curve, t) {
    var best = null;
    curve.forEach(function (point) { if (point.threshold <= t + 1e-9) { best = point; } });
    return best;
  }

  // Same rule as models_app.ml.thresholds.threshold_for_target: the lowest threshold with some coverage
  // whose precision reaches the target, which keeps the most coverage.
  function thresholdForTarget(curve, minPrecision) {
    for (var i = 0; i < curve.length; i++) {
      if (curve[i].coverage > 0 && curve[i].precision >= minPrecision) { return curve[i]; }
    }
    return null;
  }

  function setupThreshold() {
    var curve = readJson("threshold-curve");
    var slider = document.getElementById("threshold-slider");
    var input = document.getElementById("threshold-input");
    if (!curve || !slider || !input) { return; }
    curve.sort(function (a, b) { return a.threshold - b.threshold; });
    var error = document.getElementById("threshold-error");
    var chart = null;
    var xs = curve.map(function (p) { return p.threshold; });

    if (window.Chart) {
      var series = function (key) { return curve.map(function (p) { return {x: p.threshold, y: p[key]}; }); };
      chart = new window.Chart(document.getElementById("threshold-chart"), {
        type: "line",
        data: {datasets: [
          {label: "precision", data: series("precision"), borderColor: "#3056d3", pointRadius: 0, borderWidth: 2},
          {label: "recall", data: series("recall"), borderColor: "#1e8e3e", pointRadius: 0, borderWidth: 2},
          {label: "F1", data: series("f1"), borderColor: "#b7791f", pointRadius: 0, borderWidth: 2, borderDash: [4, 3]},
          {label: "coverage", data: series("coverage"), borderColor: "#667085", pointRadius: 0, borderWidth: 2},
          {label: "threshold", data: [], borderColor: "#c0392b", borderWidth: 2, pointRadius: 0}
        ]},
        options: {
          animation: false, maintainAspectRatio: false, parsing: true,
          scales: {x: {type: "linear", min: 0, max: 1, title: {display: true, text: "confidence threshold"}},
                   y: {min: 0, max: 1}},
          plugins: {legend: {position: "bottom"}}
        }
      });
    }

    function show(t, fromSlider) {
      var point = pointAt(curve, t);
      if (!point) { return; }
      ["threshold", "precision", "recall", "f1", "coverage"].forEach(function (key) {
        var el = document.querySelector("[data-metric=" + key + "]");
        if (el) { el.textContent = fixed(point[key], key === "threshold" ? 2 : 3); }
      });
      if (fromSlider) { input.value = String(t); }
      if (chart) {
        chart.data.datasets[4].data = [{x: t, y: 0}, {x: t, y: 1}];
        chart.update("none");
      }
    }

    slider.addEventListener("input", function () {
      error.hidden = true;
      show(parseFloat(slider.value), true);
    });
    input.addEventListener("input", function () {
      var t = parseFloat(input.value);
      if (isNaN(t) || t < 0 || t > 1) {
        error.textContent = "The threshold must be a number between 0 and 1.";
        error.hidden = false;
        return;
      }
      error.hidden = true;
      slider.value = String(t);
      show(t, false);
    });
    show(Math.min(1, Math.max(0, parseFloat(input.value) || 0)), false);
    if (xs.length > 1) { slider.step = String(Math.round((xs[1] - xs[0]) * 1e6) / 1e6); }

    var targetForm = document.getElementById("target-form");
    var targetInput = document.getElementById("target-input");
    var answer = document.getElementById("target-answer");
    if (!targetForm || !targetInput || !answer) { return; }
    function answerTarget() {
      var percent = parseFloat(targetInput.value);
      answer.textContent = "";
      if (isNaN(percent) || percent < 0 || percent > 100) {
        var message = document.createElement("span");
        message.className = "error-text";
        message.textContent = "The precision target must be between 0 and 100 percent.";
        answer.appendChild(message);
        return;
      }
      var point = thresholdForTarget(curve, percent / 100);
      if (!point) {
        answer.textContent = "No threshold reaches " + percent + "% precision on these evaluation records.";
        return;
      }
      answer.appendChild(document.createTextNode("Threshold "));
      var strong = document.createElement("strong");
      strong.textContent = String(point.threshold);
      answer.appendChild(strong);
      answer.appendChild(document.createTextNode(" gives precision " + fixed(point.precision, 3) + " and keeps coverage " +
        fixed(point.coverage, 3) + " (recall " + fixed(point.recall, 3) + ")."));
    }
    targetForm.addEventListener("submit", function (event) { event.preventDefault(); answerTarget(); });
    targetInput.addEventListener("input", answerTarget);
  }

  // --- calibration ---------------------------------------------------------------------------------------
  function setupCalibration() {
    var data = readJson("calibration-data");
    var canvas = document.getElementById("calibration-chart");
    if (!data || !canvas || !window.Chart || !data.after) { return; }
    function points(diagram) {
      return diagram.filter(function (b) { return b.count > 0; }).map(function (b) { return {x: b.confidence, y: b.accuracy}; });
    }
    var datasets = [{label: "perfectly calibrated", data: [{x: 0, y: 0}, {x: 1, y: 1}], borderColor: "#c8ccd2", borderDash: [4, 4], pointRadius: 0, showLine: true}];
    if (data.before) {
      datasets.push({label: "before calibration (ECE " + fixed(data.before.ece, 3) + ")", data: points(data.before.diagram), borderColor: "#c0392b", backgroundColor: "#c0392b", showLine: true});
    }
    datasets.push({label: (data.before ? "after calibration" : "this version") + " (ECE " + fixed(data.after.ece, 3) + ")", data: points(data.after.diagram), borderColor: "#3056d3", backgroundColor: "#3056d3", showLine: true});
    new window.Chart(canvas, {
      type: "scatter", data: {datasets: datasets},
      options: {animation: false, maintainAspectRatio: false,
                scales: {x: {min: 0, max: 1, title: {display: true, text: "mean confidence in bin"}},
                         y: {min: 0, max: 1, title: {display: true, text: "accuracy in bin"}}},
                plugins: {legend: {position: "bottom"}}}
    });
  }

  // --- comparison ------------------------------------------------------------------------------------------
  function setupCompare() {
    var data = readJson("compare-data");
    if (!data || !window.Chart) { return; }
    var deltaCanvas = document.getElementById("delta-chart");
    if (deltaCanvas) {
      new window.Chart(deltaCanvas, {
        type: "bar",
        data: {labels: data.labels, datasets: [{label: "F1 of B − F1 of A", data: data.deltas,
          backgroundColor: data.deltas.map(function (d) { return d !== null && d < 0 ? "#c0392b" : "#1e8e3e"; })}]},
        options: {animation: false, maintainAspectRatio: false, indexAxis: data.labels.length > 12 ? "y" : "x",
                  plugins: {legend: {display: false}}}
      });
    }
    var curveCanvas = document.getElementById("curve-chart");
    if (curveCanvas) {
      var colours = ["#3056d3", "#b7791f"];
      var datasets = [];
      data.curves.forEach(function (curve, i) {
        var radius = curve.points.map(function (p) { return curve.highlight.indexOf(p.version) >= 0 ? 6 : 3; });
        datasets.push({label: curve.name + " accuracy", data: curve.points.map(function (p) { return {x: p.training_examples, y: p.accuracy}; }),
                       borderColor: colours[i], backgroundColor: colours[i], showLine: true, pointRadius: radius});
        datasets.push({label: curve.name + " macro-F1", data: curve.points.map(function (p) { return {x: p.training_examples, y: p.f1_macro}; }),
                       borderColor: colours[i], backgroundColor: colours[i], borderDash: [4, 3], showLine: true, pointRadius: radius});
      });
      new window.Chart(curveCanvas, {
        type: "scatter", data: {datasets: datasets},
        options: {animation: false, maintainAspectRatio: false,
                  scales: {x: {title: {display: true, text: "labels trained on"}}, y: {min: 0, max: 1}},
                  plugins: {legend: {position: "bottom"}}}
      });
    }
  }

  function start() { setupThreshold(); setupCalibration(); setupCompare(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); } else { start(); }
})();

// The keyboard labeling page (templates/labeling/label_page.html). No inline scripts: the page passes
// its URLs in data-* attributes. Records arrive as server-rendered partials (Django escapes the text);
// the next one is fetched while the current one is shown, so a label swaps records instantly.
(function () {
  "use strict";

  var root = null;
  var current = null;        // the <article> on screen
  var shownAt = 0;           // performance.now() when it appeared: duration_ms of the label
  var ahead = [];           // the next <article>s, already leased, in the order they will be shown
  var prefetching = null;    // the pending prefetch promise
  var history = [];          // [{article, label}] labeled this session, newest last (for undo)
  var inFlight = {};         // record ids whose label is being submitted
  var sessionCount = 0;
  var sessionStart = 0;
  var filterMode = false;
  var busy = false;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function post(url, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { body.append(k, fields[k]); });
    return fetch(url, {method: "POST", body: body, credentials: "same-origin",
                       headers: {"X-CSRFToken": csrfToken(), "Accept": "application/json"}});
  }

  function parseArticle(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.querySelector("article.label-record");
  }

  function recordId(article) {
    return article && !article.hasAttribute("data-empty") ? parseInt(article.getAttribute("data-record-id"), 10) : null;
  }

  function heldIds() {
    var ids = Object.keys(inFlight);
    [current].concat(ahead).forEach(function (a) { var id = recordId(a); if (id) { ids.push(String(id)); } });
    return ids.join(",");
  }

  function status(text, isError) {
    var el = document.getElementById("label-status");
    el.textContent = text || "";
    el.classList.toggle("error-text", !!isError);
  }

  function fetchNext() {
    var url = root.getAttribute("data-next-url") + "?exclude=" + encodeURIComponent(heldIds());
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r); })
      .then(parseArticle);
  }

  function prefetch() {
    if (ahead.length || prefetching) { return; }
    prefetching = fetchNext().then(function (article) {
      prefetching = null;
      if (recordId(article)) { ahead.push(article); }
      return article;
    }, function () { prefetching = null; });
  }

  function show(article) {
    current.replaceWith(article);
    current = article;
    shownAt = performance.now();
    highlightPrediction();
    var filter = document.getElementById("label-filter");
    if (filter) { filter.value = ""; applyFilter(); filter.focus(); }
    if (recordId(current)) { prefetch(); } else { waitForRecords(); }
  }

  var waitTimer = null;
  function waitForRecords() {
    if (waitTimer) { return; }
    waitTimer = window.setTimeout(function () {
      waitTimer = null;
      if (recordId(current)) { return; }
      fetchNext().then(function (article) {
        if (recordId(current)) { return; }
        if (recordId(article)) { show(article); } else { waitForRecords(); }
      }, waitForRecords);
    }, 2000);
  }

  function advance() {
    if (ahead.length) {
      show(ahead.shift());
      return Promise.resolve();
    }
    var pending = prefetching || fetchNext();
    return pending.then(function (article) {
      var next = ahead.length ? ahead.shift() : article;
      if (next) { show(next); }
    });
  }

  function highlightPrediction() {
    var predicted = current.getAttribute("data-predicted");
    root.querySelectorAll("#label-buttons button").forEach(function (b) {
      b.classList.toggle("predicted", !!predicted && b.getAttribute("data-label") === predicted);
    });
  }

  // Label requests run concurrently and their answers can arrive out of order: only the answer to
  // the newest request (or a later poll) may update the counters.
  var statsRequested = 0, statsApplied = 0;
  function updateStats(stats, sequence) {
    if (!stats) { return; }
    var total = document.getElementById("count-total");
    if (sequence < statsApplied) {
      // A late answer: the server may have counted later labels before this one, so it may still
      // raise the total, never lower it.
      var shown = parseInt(total.textContent, 10);
      if (!isNaN(shown) && stats.labeled_total > shown) { total.textContent = stats.labeled_total; }
      return;
    }
    statsApplied = sequence;
    total.textContent = stats.labeled_total;
    document.getElementById("model-version").textContent = stats.version == null ? "–" : stats.version;
    document.getElementById("model-accuracy").textContent =
      stats.accuracy == null ? "–" : Math.round(stats.accuracy * 100) + "%";
    document.getElementById("model-training").textContent = stats.training ? "training " + stats.training + "…" : "";
  }

  function updateCounter() {
    document.getElementById("count-session").textContent = sessionCount;
    var hours = (Date.now() - sessionStart) / 3600000;
    document.getElementById("count-rate").textContent =
      sessionCount > 0 && hours > 0 ? Math.round(sessionCount / Math.max(hours, 1 / 60)) : "–";
  }

  function label(name) {
    var id = recordId(current);
    // inFlight: the record was just labeled and the next one is still on its way; ignore repeated keys.
    if (!id || !name || busy || inFlight[id]) { return; }
    var duration = Math.round(performance.now() - shownAt);
    var labeled = current;
    inFlight[id] = true;
    if (!sessionStart) { sessionStart = Date.now(); }
    sessionCount += 1;
    history.push({article: labeled, label: name});
    updateCounter();
    status("Labeled “" + name + "”.");
    advance();
    var sequence = ++statsRequested;
    post(root.getAttribute("data-submit-url"), {record_id: id, label: name, duration_ms: duration})
      .then(function (r) { return r.json().then(function (body) { return {ok: r.ok, body: body}; }); })
      .then(function (answer) {
        delete inFlight[id];
        if (!answer.ok) {
          sessionCount -= 1;
          history.pop();
          updateCounter();
          status("Not saved: " + (answer.body.message || "error") + ". The record is shown again.", true);
          if (recordId(current)) { ahead.unshift(current); }
          show(labeled);
          return;
        }
        updateStats(answer.body.stats, sequence);
      }, function () {
        delete inFlight[id];
        status("Network error: the last label was not saved. The record is shown again.", true);
        sessionCount -= 1;
        history.pop();
        updateCounter();
        if (recordId(current)) { ahead.unshift(current); }
        show(labeled);
      });
  }

  function accept() {
    label(current && current.getAttribute("data-predicted"));
  }

  function skip() {
    var id = recordId(current);
    if (!id || busy || inFlight[id]) { return; }
    status("Skipped.");
    post(root.getAttribute("data-skip-url"), {record_id: id});
    advance();
  }

  function undo() {
    if (busy) { return; }
    busy = true;
    status("Undoing the last label…");
    // The label being saved must land before it can be withdrawn.
    var wait = function () {
      if (Object.keys(inFlight).length) { window.setTimeout(wait, 50); return; }
      post(root.getAttribute("data-undo-url"), {})
        .then(function (r) { return r.status === 204 ? null : (r.ok ? r.text() : Promise.reject(r)); })
        .then(function (html) {
          busy = false;
          if (!html) { status("Nothing to undo."); return; }
          var article = parseArticle(html);
          if (history.length) { history.pop(); sessionCount = Math.max(0, sessionCount - 1); updateCounter(); }
          // The record on screen stays leased to us: it comes back right after the undone one.
          if (recordId(current)) { ahead.unshift(current); }
          show(article);
          status("Undone: label this record again.");
          refreshStats();
        }, function () { busy = false; status("Undo failed.", true); });
    };
    wait();
  }

  function refreshStats() {
    var sequence = ++statsRequested;
    fetch(root.getAttribute("data-stats-url"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; }).then(function (stats) { updateStats(stats, sequence); }, function () {});
  }

  function toggleHelp() {
    var help = document.getElementById("label-help");
    help.hidden = !help.hidden;
  }

  function labelForKey(key) {
    var button = root.querySelector('#label-buttons button[data-key="' + key + '"]');
    return button ? button.getAttribute("data-label") : null;
  }

  function visibleLabels() {
    return Array.prototype.filter.call(root.querySelectorAll("#label-buttons button"), function (b) { return !b.hidden; });
  }

  function applyFilter() {
    var filter = document.getElementById("label-filter");
    if (!filter) { return; }
    var text = filter.value.trim().toLowerCase();
    root.querySelectorAll("#label-buttons button").forEach(function (b) {
      b.hidden = text !== "" && b.getAttribute("data-label").toLowerCase().indexOf(text) === -1;
    });
  }

  function onFilterKey(event) {
    var filter = event.target;
    if (event.key === "Enter") {
      event.preventDefault();
      if (filter.value.trim() === "") { accept(); return; }
      var matches = visibleLabels();
      // A label that is part of longer ones ("refund" beside "refund_request") is chosen by typing
      // its whole name; otherwise it could never be the single match.
      var typed = filter.value.trim().toLowerCase();
      var exact = matches.filter(function (b) { return b.getAttribute("data-label").toLowerCase() === typed; });
      if (exact.length === 1) { matches = exact; }
      if (matches.length === 1) { label(matches[0].getAttribute("data-label")); }
      else { status(matches.length ? "Several labels match: type more." : "No label matches.", true); }
    } else if (event.key === "Escape") {
      event.preventDefault();
      filter.value = "";
      applyFilter();
      filter.blur();
      status("Command keys: s skip, u undo, Enter accept, ? keys; any letter filters again.");
    }
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && target.id === "label-filter") { onFilterKey(event); return; }
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) { return; }
    var key = event.key;
    // Enter on a link or button reached with Tab is that element's own action (skip, a label, a page link),
    // not "accept the prediction" for the record on screen.
    if (key === "Enter" && target && target.closest && target.closest("a, button, summary")) { return; }
    if (key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (key === "Enter") { event.preventDefault(); accept(); return; }
    if (key === "s") { event.preventDefault(); skip(); return; }
    if (key === "u" || key === "Backspace") { event.preventDefault(); undo(); return; }
    if (filterMode) {
      if (key.length === 1 && /\S/.test(key)) {
        var filter = document.getElementById("label-filter");
        filter.focus();  // the key itself lands in the box
      }
      return;
    }
    var name = labelForKey(key.toLowerCase());
    if (name) { event.preventDefault(); label(name); }
  }

  function onClick(event) {
    var button = event.target.closest("button");
    if (!button || !root.contains(button)) { return; }
    if (button.hasAttribute("data-label")) { label(button.getAttribute("data-label")); }
    else if (button.getAttribute("data-action") === "skip") { skip(); }
    else if (button.getAttribute("data-action") === "undo") { undo(); }
    else if (button.getAttribute("data-action") === "help") { toggleHelp(); }
    button.blur();
  }

  function init() {
    root = document.getElementById("labeling");
    if (!root) { return; }
    filterMode = root.getAttribute("data-filter-mode") === "1";
    current = root.querySelector("article.label-record");
    shownAt = performance.now();
    highlightPrediction();
    document.addEventListener("keydown", onKey);
    root.addEventListener("click", onClick);
    var filter = document.getElementById("label-filter");
    if (filter) { filter.addEventListener("input", applyFilter); filter.focus(); }
    if (recordId(current)) { prefetch(); } else { waitForRecords(); }
    // A retrain finishing elsewhere changes the version and accuracy: keep the counter live.
    window.setInterval(refreshStats, 15000);
    root.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();

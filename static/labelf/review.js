// The review page (templates/labeling/review_page.html): a lead decides records in conflict by keyboard,
// with the labeling page's keys. No inline scripts: URLs come from data-* attributes, records arrive as
// server-rendered partials (Django escapes the text). A decision is posted while the next record is
// fetched, and the next one is shown once the server has answered (another lead may have decided first:
// the answer says so, and that record is gone from the queue either way).
(function () {
  "use strict";

  var root = null;
  var current = null;     // the <article> on screen
  var skipped = [];       // record ids skipped on this page (they stay in the queue)
  var busy = false;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function status(text, isError) {
    var el = document.getElementById("review-status");
    el.textContent = text || "";
    el.classList.toggle("error-text", !!isError);
  }

  function recordId(article) {
    return article && !article.hasAttribute("data-empty") ? parseInt(article.getAttribute("data-record-id"), 10) : null;
  }

  function parseArticle(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.querySelector("article.review-record");
  }

  function fetchNext(alsoExclude) {
    var ids = skipped.slice();
    if (alsoExclude) { ids.push(alsoExclude); }
    var url = root.getAttribute("data-next-url") + "?exclude=" + encodeURIComponent(ids.join(","));
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r); })
      .then(parseArticle);
  }

  // The buttons show how many annotators gave each label to the record on screen.
  function showVotes() {
    var votes = {};
    if (current) {
      current.querySelectorAll("tr.given-label").forEach(function (row) {
        var label = row.getAttribute("data-label");
        votes[label] = (votes[label] || 0) + 1;
      });
    }
    var empty = !recordId(current);
    root.querySelectorAll("#review-buttons button").forEach(function (button) {
      var count = votes[button.getAttribute("data-label")] || 0;
      var badge = button.querySelector(".votes");
      badge.hidden = count === 0;
      badge.textContent = count === 1 ? "1 vote" : count + " votes";
      button.classList.toggle("voted", count > 0);
      // The labels given to this record lead the list: among 100 labels they would be hard to find.
      button.style.order = count > 0 ? "-1" : "";
      button.disabled = empty;
    });
  }

  function show(article) {
    if (!article) { return; }
    current.replaceWith(article);
    current = article;
    showVotes();
  }

  function post(url, fields) {
    var body = new URLSearchParams();
    Object.keys(fields).forEach(function (k) { body.append(k, fields[k]); });
    return fetch(url, {method: "POST", body: body, credentials: "same-origin",
                       headers: {"X-CSRFToken": csrfToken(), "Accept": "application/json"}});
  }

  function decide(label) {
    var id = recordId(current);
    if (!id || !label || busy) { return; }
    busy = true;
    status("Deciding “" + label + "”…");
    var answer = post(root.getAttribute("data-decide-url"), {record_id: id, label: label})
      .then(function (r) { return r.json().then(function (body) { return {status: r.status, body: body}; }); });
    var next = fetchNext(id);
    Promise.all([answer, next]).then(function (results) {
      busy = false;
      var result = results[0];
      if (result.status === 200) {
        status("Decided: “" + result.body.label + "” is the final label.");
        show(results[1]);
      } else if (result.status === 409) {
        // Another lead decided first (or the record is no longer in conflict): say what happened, move on.
        status(result.body.message, true);
        show(results[1]);
      } else {
        status("Not saved: " + (result.body.message || "error") + ".", true);
      }
    }, function () {
      busy = false;
      status("Network error: the decision may not have been saved. Try again.", true);
    });
  }

  function skip() {
    var id = recordId(current);
    if (!id || busy) { return; }
    busy = true;
    skipped.push(id);
    fetchNext(null).then(function (article) {
      busy = false;
      status("Skipped: it stays in the queue.");
      show(article);
    }, function () { busy = false; status("Could not load the next record.", true); });
  }

  function toggleHelp() {
    var help = document.getElementById("review-help");
    help.hidden = !help.hidden;
  }

  function labelForKey(key) {
    var button = root.querySelector('#review-buttons button[data-key="' + key + '"]');
    return button ? button.getAttribute("data-label") : null;
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA" || target.tagName === "SELECT")) { return; }
    var key = event.key;
    if (key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (key === "s") { event.preventDefault(); skip(); return; }
    var name = labelForKey(key.toLowerCase());
    if (name) { event.preventDefault(); decide(name); }
  }

  function onClick(event) {
    var button = event.target.closest("button");
    if (!button || !root.contains(button)) { return; }
    if (button.hasAttribute("data-label")) { decide(button.getAttribute("data-label")); }
    else if (button.getAttribute("data-action") === "skip") { skip(); }
    else if (button.getAttribute("data-action") === "help") { toggleHelp(); }
    button.blur();
  }

  function init() {
    root = document.getElementById("review");
    if (!root) { return; }
    current = root.querySelector("article.review-record");
    showVotes();
    document.addEventListener("keydown", onKey);
    root.addEventListener("click", onClick);
    root.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
})();

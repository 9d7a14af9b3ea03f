// The possible-label-errors queue (templates/models_app/label_issues.html). Each issue is a server-rendered
// card whose form htmx posts and swaps; this file only keeps a "current" card and maps keys to its buttons:
// a / Enter accept, d dismiss, l choose another label, j / k next / previous. After a card is resolved the
// next open one becomes current, so a lead goes through the list without touching the mouse.
(function () {
  "use strict";

  var list = null;
  var current = null;

  function cards() { return Array.prototype.slice.call(list.querySelectorAll("article.label-issue")); }
  function openCards() { return cards().filter(function (c) { return c.getAttribute("data-status") === "open"; }); }

  function focus(card) {
    if (current) { current.classList.remove("current"); }
    current = card || null;
    if (!current) {
      document.getElementById("label-issues-done").hidden = openCards().length > 0;
      return;
    }
    current.classList.add("current");
    current.focus({preventScroll: true});
    current.scrollIntoView({block: "nearest"});
  }

  function nextOpen(after) {
    var all = cards();
    var start = after ? all.indexOf(after) + 1 : 0;
    for (var i = 0; i < all.length; i++) {
      var card = all[(start + i) % all.length];
      if (card.getAttribute("data-status") === "open") { return card; }
    }
    return null;
  }

  function move(step) {
    var all = cards();
    if (!all.length) { return; }
    var i = current ? all.indexOf(current) : -1;
    focus(all[Math.min(all.length - 1, Math.max(0, i + step))]);
  }

  function press(action) {
    if (!current || current.getAttribute("data-status") !== "open") { return; }
    var button = current.querySelector("button[data-action='" + action + "']");
    if (button && !button.disabled) {
      current.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      // Re-enabled so htmx sees the submitter; disabled again only to block a second key press meanwhile.
      button.disabled = false;
      button.click();
      button.disabled = true;
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    list = document.getElementById("label-issues");
    if (!list) { return; }
    focus(nextOpen(null));

    list.addEventListener("click", function (event) {
      var card = event.target.closest("article.label-issue");
      if (card && card !== current) { focus(card); }
    });

    document.body.addEventListener("htmx:afterSwap", function (event) {
      var card = event.detail.target && document.getElementById(event.detail.target.id);
      if (!card || !card.classList.contains("label-issue")) { return; }
      if (card.hasAttribute("data-error")) { focus(card); return; }
      focus(card.getAttribute("data-status") === "open" ? card : nextOpen(card));
    });

    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey) { return; }
      var target = event.target;
      var inSelect = target && target.tagName === "SELECT";
      if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) { return; }
      if (inSelect) {
        // In the label list: Enter accepts with the chosen label, Escape goes back to the keys.
        if (event.key === "Enter") { event.preventDefault(); press("accept"); }
        else if (event.key === "Escape") { event.preventDefault(); if (current) { current.focus(); } }
        return;
      }
      if (target && target.tagName === "BUTTON" && event.key === "Enter") { return; }  // the button's own click
      switch (event.key) {
        case "a": case "Enter": event.preventDefault(); press("accept"); break;
        case "d": event.preventDefault(); press("dismiss"); break;
        case "l":
          if (current && current.querySelector("select")) { event.preventDefault(); current.querySelector("select").focus(); }
          break;
        case "j": case "ArrowDown": event.preventDefault(); move(1); break;
        case "k": case "ArrowUp": event.preventDefault(); move(-1); break;
      }
    });
  });
})();

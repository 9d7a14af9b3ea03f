// The label rows editor (templates/models_app/partials/_label_editor.html) of the describe-and-classify form and
// of the model page: add, reorder and remove label rows, and turn pasted lines into rows. Removing a label the
// model already has asks first, saying how many records carry it (they keep it). Without JavaScript the form
// still works: the server reads the rows and the pasted lines itself.
(function () {
  "use strict";

  function removalQuestion(row) {
    var name = row.getAttribute("data-label-name");
    var records = parseInt(row.getAttribute("data-records") || "0", 10);
    var carried = records === 0 ? "No record in the dataset carries this label." :
      (records === 1 ? "1 record in the dataset carries" : records + " records in the dataset carry") +
      " this label; their labels are kept, this model just stops using them.";
    return "Remove the label “" + name + "” from this model? " + carried +
      " Nothing changes until you press Save labels.";
  }

  function rowsContainer() { return document.getElementById("label-rows"); }

  function newRow(name, description) {
    var template = document.getElementById("label-row-template");
    var row = template.content.firstElementChild.cloneNode(true);
    row.querySelector("input[name=label_name]").value = name || "";
    row.querySelector("textarea[name=label_description]").value = description || "";
    return row;
  }

  function isEmpty(row) {
    return !row.querySelector("input[name=label_name]").value.trim() &&
      !row.querySelector("textarea[name=label_description]").value.trim();
  }

  function addRow(name, description) {
    var row = newRow(name, description);
    rowsContainer().appendChild(row);
    return row;
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button") : null;
    if (!button || !rowsContainer()) { return; }
    var action = button.getAttribute("data-row-action");
    if (action) {
      var row = button.closest(".label-row");
      if (action === "remove") {
        if (row.hasAttribute("data-existing") && !window.confirm(removalQuestion(row))) { return; }
        row.remove();
        if (!rowsContainer().querySelector(".label-row")) { addRow(); }
      } else if (action === "up" && row.previousElementSibling) {
        row.parentNode.insertBefore(row, row.previousElementSibling);
      } else if (action === "down" && row.nextElementSibling) {
        row.parentNode.insertBefore(row.nextElementSibling, row);
      }
      button.focus();
      return;
    }
    if (button.id === "add-label") {
      addRow().querySelector("input").focus();
    } else if (button.id === "add-pasted") {
      var pasted = document.getElementById("pasted-labels");
      var names = pasted.value.split(/\r?\n/).map(function (line) { return line.trim(); })
        .filter(function (line) { return line.length > 0; });
      // Fill the empty rows first, then append.
      var empty = Array.prototype.filter.call(rowsContainer().querySelectorAll(".label-row"), isEmpty);
      names.forEach(function (name) {
        var row = empty.shift();
        if (row) { row.querySelector("input[name=label_name]").value = name; } else { addRow(name); }
      });
      pasted.value = "";
    }
  });
})();

// Dataset upload: drag and drop onto the drop zone fills the form's file input (no inline script: CSP).
(function () {
  "use strict";
  function setup(zone) {
    var input = zone.querySelector("input[type=file]");
    var nameOut = zone.querySelector("[data-dropzone-name]");
    var form = zone.closest("form");
    var nameField = form && form.querySelector("input[name=name]");
    function show() {
      var file = input.files && input.files[0];
      if (!file) { return; }
      if (nameOut) { nameOut.textContent = file.name + " (" + Math.ceil(file.size / 1024) + " KB)"; }
      if (nameField && !nameField.value) { nameField.value = file.name.replace(/\.[^.]+$/, ""); }
    }
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) {
        input.files = event.dataTransfer.files;
        show();
      }
    });
    input.addEventListener("change", show);
    if (form) {
      form.addEventListener("submit", function () {
        var button = form.querySelector("button[type=submit]");
        if (button) { button.disabled = true; button.textContent = "Uploading…"; }
      });
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-dropzone]"), setup);
  });
})();

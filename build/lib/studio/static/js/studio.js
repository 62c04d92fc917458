// Every page: pickers that apply on change, and errors from htmx requests shown where the
// person is looking. (No inline handlers anywhere: the Content-Security-Policy forbids them.)
(function () {
  "use strict";

  // <select data-autosubmit> and friends submit their form when changed; the fallback button
  // is for browsers without this script.
  document.querySelectorAll("[data-autosubmit-fallback]").forEach((button) => { button.hidden = true; });
  document.addEventListener("change", (event) => {
    const field = event.target.closest("[data-autosubmit]");
    if (field && field.form) field.form.requestSubmit();
  });

  const toast = document.getElementById("toast");
  let hideTimer = null;
  function showToast(text) {
    if (!toast) return;
    toast.textContent = text;
    toast.hidden = false;
    clearTimeout(hideTimer);
    hideTimer = setTimeout(() => { toast.hidden = true; }, 10000);
  }
  if (toast) toast.addEventListener("click", () => { toast.hidden = true; });

  // A refusal from the server (an error page, a 413, a throttle) carries X-Studio-Error: show
  // it instead of swapping a whole page into a small part of this one.
  document.addEventListener("htmx:beforeSwap", (event) => {
    const error = event.detail.xhr.getResponseHeader("X-Studio-Error");
    if (error) {
      event.detail.shouldSwap = false;
      showToast(decodeURIComponent(error));
    }
  });
  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    if (!xhr.getResponseHeader("X-Studio-Error")) {
      showToast("The server answered " + xhr.status + " and nothing changed. Try again; if it persists, tell your admin.");
    }
  });
  document.addEventListener("htmx:sendError", () => {
    showToast("The server could not be reached. Check the connection and try again; nothing was lost on this page.");
  });
})();

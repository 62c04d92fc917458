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

// Small helpers the evaluation pages use (again: no inline handlers).
(function () {
  "use strict";
  document.addEventListener("click", (event) => {
    const copy = event.target.closest("[data-copy-into]");
    if (copy) {
      const source = document.querySelector(copy.dataset.copyFrom);
      const target = document.querySelector(copy.dataset.copyInto);
      if (source && target) { target.value = (source.value || source.textContent).trim(); target.focus(); }
      return;
    }
    const remove = event.target.closest("[data-remove-closest]");
    if (remove) {
      const gone = remove.closest(remove.dataset.removeClosest);
      if (gone) gone.remove();
    }
  });
  document.addEventListener("change", (event) => {
    const all = event.target.closest("[data-select-all]");
    if (all) {
      all.closest("form").querySelectorAll('input[type="checkbox"][name="case"]').forEach((box) => { box.checked = all.checked; });
      return;
    }
    // A choice that changes which fields a form shows: reload the page with the form's values.
    const reload = event.target.closest("[data-autosubmit-get]");
    if (reload && reload.form) {
      const params = new URLSearchParams(new FormData(reload.form));
      params.delete("csrfmiddlewaretoken");
      location.search = params.toString();
    }
  });
})();

// Plain forms that ask before they do something that cannot be undone.
document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

// Narrow screens: the top navigation folds into a menu button.
document.addEventListener("click", (event) => {
  const toggle = event.target.closest("[data-menu-toggle]");
  if (!toggle) return;
  const open = toggle.getAttribute("aria-expanded") !== "true";
  toggle.setAttribute("aria-expanded", String(open));
  toggle.closest(".topbar").classList.toggle("topbar--open", open);
});

// Popovers (<details data-popover>: the chat's Controls sheet and ⋯ menu): one open at a time;
// Escape, a close button or a chosen item closes it. (A click outside lands on the open summary's
// ::before layer, so the browser closes it itself.)
(function () {
  "use strict";
  function openPopovers() {
    return [...document.querySelectorAll("details[data-popover][open]")];
  }
  document.addEventListener("toggle", (event) => {
    const opened = event.target;
    if (!(opened instanceof HTMLDetailsElement) || !opened.hasAttribute("data-popover") || !opened.open) return;
    openPopovers().forEach((other) => { if (other !== opened && !other.contains(opened)) other.open = false; });
  }, true);  // `toggle` does not bubble
  document.addEventListener("click", (event) => {
    const closer = event.target.closest("[data-popover-close], [data-popover-dismiss]");
    const popover = closer && closer.closest("details[data-popover]");
    if (popover) popover.open = false;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || event.defaultPrevented) return;
    const open = openPopovers();
    if (!open.length) return;
    const innermost = open[open.length - 1];
    innermost.open = false;
    innermost.querySelector(":scope > summary").focus();
    event.preventDefault();
    event.stopImmediatePropagation();  // Escape closed this; it does not also stop a reply (chat.js)
  });
})();

// Phones: the conversations are a drawer behind the ☰ button (chat and search pages).
(function () {
  "use strict";
  function setDrawer(layout, open) {
    layout.classList.toggle("layout--drawer-open", open);
    layout.querySelectorAll("[data-drawer-toggle]").forEach((toggle) => toggle.setAttribute("aria-expanded", String(open)));
    const backdrop = layout.querySelector(".drawer-backdrop");
    if (backdrop) backdrop.hidden = !open;
  }
  document.addEventListener("click", (event) => {
    const toggle = event.target.closest("[data-drawer-toggle]");
    const layout = event.target.closest(".layout");
    if (!layout) return;
    if (toggle) {
      const open = !layout.classList.contains("layout--drawer-open");
      setDrawer(layout, open);
      if (open) {
        const current = layout.querySelector('.sidebar [aria-current="page"]') || layout.querySelector(".sidebar a, .sidebar button");
        if (current) current.focus({ preventScroll: true });
      }
    } else if (event.target.closest("[data-drawer-close]")) {
      setDrawer(layout, false);
    }
  });
  document.addEventListener("keydown", (event) => {
    const layout = document.querySelector(".layout--drawer-open");
    if (event.key === "Escape" && layout) {
      setDrawer(layout, false);
      const toggle = layout.querySelector("[data-drawer-toggle]");
      if (toggle) toggle.focus();
      event.stopImmediatePropagation();
    }
  });
})();

// Ctrl+K (Cmd+K on a Mac) opens search: the search page's box, else the sidebar's, else the search
// page itself (a page without either, or a phone layout that hides the box).
(function () {
  "use strict";

  const isMac = /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);

  function visibleSearchBox() {
    // A phone's closed conversation drawer holds the sidebar's box out of sight: open it first.
    const drawer = document.querySelector(".layout:not(.layout--drawer-open) [data-drawer-toggle]");
    if (drawer && drawer.checkVisibility() && !document.getElementById("search-page-q")) drawer.click();
    for (const id of ["search-page-q", "sidebar-search"]) {  // in this order, whatever the page's
      const box = document.getElementById(id);
      if (box && box.checkVisibility({ visibilityProperty: true })) return box;
    }
    return null;
  }

  document.addEventListener("keydown", (event) => {
    if (event.key.toLowerCase() !== "k" || !(event.ctrlKey || event.metaKey) || event.altKey || event.shiftKey) return;
    event.preventDefault();  // browsers give Ctrl+K to their own search bar
    const box = visibleSearchBox();
    if (box) {
      box.focus();
      box.select();
    } else {
      window.location.assign("/chat/search/");
    }
  });

  // The hint in the boxes names the key this keyboard has.
  if (isMac) {
    for (const box of document.querySelectorAll("[data-search-box]")) {
      box.placeholder = box.placeholder.replace("Ctrl+K", "⌘K");
    }
  }
})();

// The chat page: one WebSocket per open conversation (protocol in README.md).
// htmx renders everything it can; this script only does what htmx cannot: JSON frames,
// streaming text into the reply as it arrives, and the composer keys.
(function () {
  "use strict";
  const chat = document.getElementById("chat");
  if (!chat) return;
  const messages = document.getElementById("messages");
  const input = document.getElementById("message-input");
  const composer = document.getElementById("composer");
  const sendButton = document.getElementById("send-button");
  const stopButton = document.getElementById("stop-button");
  const errorBox = document.getElementById("chat-error");
  const connection = document.getElementById("connection");
  const template = document.getElementById("message-template");
  const jump = document.getElementById("jump-to-latest");
  const conversationId = chat.dataset.conversationId;
  const IN_PROGRESS = ["queued", "streaming"];
  const STATE_TEXT = { queued: "Waiting for the model…", streaming: "Writing…", stopped: "Stopped", failed: "", complete: "" };
  let socket = null;
  let retryDelay = 500;
  let pendingContent = null; // sent, not yet stored: restored into the box if refused

  function messageElement(id) {
    return document.getElementById("message-" + id);
  }

  function nearBottom() {
    return messages.scrollHeight - messages.scrollTop - messages.clientHeight < 80;
  }

  function follow(wasNearBottom) {
    if (wasNearBottom) messages.scrollTop = messages.scrollHeight;
    updateJumpSoon();
  }

  // "↓ Jump to latest" shows while the newest messages are out of view (scrolled up), and only then:
  // checked after every scroll, change of the messages (a reply re-rendered shorter) and resize.
  let jumpFrame = 0;
  function updateJumpSoon() {
    if (jumpFrame) return;
    jumpFrame = requestAnimationFrame(() => {
      jumpFrame = 0;
      jump.hidden = nearBottom();
    });
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function updateBusy() {
    const busy = messages.querySelector('[data-status="queued"], [data-status="streaming"]') !== null;
    stopButton.hidden = !busy;
    sendButton.disabled = busy;
    if (!busy && typeof sendIfWaiting === "function") sendIfWaiting();
  }

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
  }

  // A finished message is re-rendered by the server (Markdown, sanitised, with its figures). Not
  // through htmx.ajax: without a source element htmx queues every such request on <body>, resolves a
  // queued one's promise before it has swapped and drops all but the last queued, so two replies
  // finishing together (side by side) lost one's refresh or its place in the pair.
  const offBranch = new Map();  // messages that left the active branch (see showBranch), by id
  const refreshes = new Map();  // message id → the number of its latest refresh (only that one lands)
  function refreshFromServer(id) {
    const key = String(id);
    const number = (refreshes.get(key) || 0) + 1;
    refreshes.set(key, number);
    fetch("/chat/" + conversationId + "/messages/" + id + "/", { headers: { "HX-Request": "true" } })
      .then((response) => (response.ok ? response.text() : Promise.reject(new Error(String(response.status)))))
      .then((html) => {
        if (refreshes.get(key) !== number) return;  // a later refresh of it is on its way
        refreshes.delete(key);
        const current = messageElement(id) || offBranch.get(Number(id));
        if (!current) return;
        const holder = document.createElement("template");
        holder.innerHTML = html.trim();
        const fresh = holder.content.firstElementChild;
        if (!fresh) return;
        // Its place in a side-by-side pair is the page's, not the server's.
        if (current.dataset.beside) fresh.dataset.beside = "true";
        if (current.parentNode) current.replaceWith(fresh);  // in the page, or in a pair set aside
        if (offBranch.get(Number(id)) === current) offBranch.set(Number(id), fresh);  // shown when its branch is back
        htmx.process(fresh);
        updateBusy();
      })
      .catch(() => {  // the streamed text stays; the next update renders it
        if (refreshes.get(key) === number) refreshes.delete(key);
      });
  }

  // The first message names the conversation: show the new title in the header and list.
  function refreshTitle() {
    fetch(location.pathname)
      .then((response) => response.text())
      .then((html) => {
        const fresh = new DOMParser().parseFromString(html, "text/html");
        for (const selector of ["#conversation-title", ".conversation-list"]) {
          const current = document.querySelector(selector);
          const replacement = fresh.querySelector(selector);
          if (current && replacement) {
            current.replaceWith(replacement);
            htmx.process(replacement);
          }
        }
      });
  }

  function upsertMessage(message) {
    const wasNearBottom = nearBottom();
    let element = messageElement(message.id);
    // The server re-sends the conversation on every (re)connect: what the page already
    // shows in its final state stays as rendered.
    if (element && element.dataset.status === message.status && !IN_PROGRESS.includes(message.status)) return;
    if (!element) {
      element = template.content.firstElementChild.cloneNode(true);
      element.id = "message-" + message.id;
      element.dataset.messageId = message.id;
      element.dataset.role = message.role;
      element.classList.add("message--" + message.role);
      element.querySelector(".message__avatar").textContent = message.role === "user" ? "You" : "AI";
      messages.querySelector(".messages__empty").hidden = true;
      const partner = message.side_of ? messageElement(message.side_of) : null;
      if (partner) {
        placeBeside(partner, element);
      } else {
        messages.insertBefore(element, messages.querySelector(".messages__empty"));
      }
      if (message.role === "user" && messages.querySelectorAll('[data-role="user"]').length === 1) refreshTitle();
    }
    if (message.siblings) showSiblings(element, message.id, message.siblings);
    if ("parent" in message) element.dataset.parent = message.parent === null ? "" : message.parent;
    element.dataset.role = message.role;
    element.dataset.status = message.status;
    element.querySelector(".message__raw").value = message.content;
    if (IN_PROGRESS.includes(message.status)) {
      // A cut reply being continued: no longer cut, nor to be continued again until it ends.
      element.querySelectorAll(".message__cut, [data-action='continue']").forEach((mark) => mark.remove());
      streamingBody(element, true);
    } else {
      element.querySelector(".message__body").textContent = message.content;
    }
    const state = element.querySelector(".message__state");
    if (state) state.textContent = STATE_TEXT[message.status] || "";
    showMessageError(element, message.error);
    if (!IN_PROGRESS.includes(message.status)) refreshFromServer(message.id);
    follow(wasNearBottom);
    updateBusy();
  }

  // ‹ 2/3 ›: which of its siblings (other edits of a message, other replies) this one is.
  function showSiblings(element, id, siblings) {
    const box = element.querySelector(".siblings");
    if (!box) return;
    const index = siblings.indexOf(Number(id));
    box.hidden = siblings.length < 2;
    const [previous, next] = box.querySelectorAll('[data-action="switch"]');
    previous.dataset.target = index > 0 ? siblings[index - 1] : "";
    previous.disabled = index <= 0;
    next.dataset.target = index >= 0 && index < siblings.length - 1 ? siblings[index + 1] : "";
    next.disabled = !(index >= 0 && index < siblings.length - 1);
    box.querySelector(".siblings__count").textContent = (index + 1) + "/" + siblings.length;
  }

  // Side by side: a reply from another model, shown next to the one it was asked with.
  function placeBeside(partner, element) {
    let pair = partner.parentElement.classList.contains("message-pair") ? partner.parentElement : null;
    if (!pair) {
      pair = Object.assign(document.createElement("div"), { className: "message-pair" });
      partner.before(pair);
      pair.append(partner);
    }
    element.dataset.beside = "true";
    pair.append(element);
  }

  // A message, or the side-by-side pair it leads: what moves when the branch changes.
  function unit(element) {
    return element.parentElement && element.parentElement.classList.contains("message-pair") ? element.parentElement : element;
  }

  // The active branch changed (here, in another tab, or by an edit or regeneration): show its
  // messages in its order. Messages that left it are kept aside (switching back is instant);
  // when the page lacks one in the middle, it loads the branch again.
  function showBranch(active) {
    // A reply kept from a side-by-side pair leads it now (the other stays beside it).
    for (const id of active) {
      const element = messageElement(id);
      if (element && element.dataset.beside && element.parentElement.classList.contains("message-pair")) {
        const pair = element.parentElement;
        pair.querySelectorAll(":scope > .message").forEach((other) => (other.dataset.beside = "true"));
        delete element.dataset.beside;
        pair.prepend(element);
      }
    }
    const shown = new Map();
    messages.querySelectorAll(".message:not([data-beside])").forEach((element) => shown.set(Number(element.dataset.messageId), element));
    const known = (id) => shown.get(id) || offBranch.get(id);
    const first = active.findIndex((id) => known(id));
    if (first < 0 || active.slice(first).some((id) => !known(id))) {
      reloadBranch();
      return;
    }
    shown.forEach((element, id) => {
      if (!active.includes(id)) {
        offBranch.set(id, element);
        unit(element).remove();
      }
    });
    const end = messages.querySelector(".messages__empty");
    for (const id of active.slice(first)) {
      const element = known(id);
      offBranch.delete(id);
      messages.insertBefore(unit(element), end);
    }
    end.hidden = active.length > 0;
    updateBusy();
  }

  function reloadBranch() {
    fetch("/chat/" + conversationId + "/history/", { headers: { "HX-Request": "true" } })
      .then((response) => response.text())
      .then((html) => {
        messages.querySelectorAll(".message-pair, .message, .messages__earlier").forEach((element) => element.remove());
        offBranch.clear();
        const end = messages.querySelector(".messages__empty");
        end.insertAdjacentHTML("beforebegin", html);
        messages.querySelectorAll(".message, .messages__earlier").forEach((element) => htmx.process(element));
        end.hidden = messages.querySelector(".message") !== null;
        messages.scrollTop = messages.scrollHeight;
        updateBusy();
      });
  }

  function showMessageError(element, error) {
    const box = element.querySelector(".message__error");
    box.textContent = error || "";
    box.hidden = !error;
  }

  // A reply being written: the finished Markdown blocks as the server rendered them (a `blocks`
  // frame each time some finish), then the unfinished tail as text; a code block that has opened
  // but not closed shows as code already.
  function streamingBody(element, reset) {
    const body = element.querySelector(".message__body");
    let blocks = body.querySelector(":scope > .message__blocks");
    if (!blocks || reset) {
      body.replaceChildren();
      blocks = Object.assign(document.createElement("div"), { className: "message__blocks" });
      const tail = Object.assign(document.createElement("div"), { className: "message__tail" });
      body.append(blocks, tail);
      element.dataset.renderedUpTo = "0";
    }
    showTail(element);
    return blocks;
  }

  const OPEN_FENCE = /^ {0,3}(`{3,}|~{3,})[ \t]*([^`\s]*)[^\n]*\n?/;
  const FENCE_LINE = /^ {0,3}(`+|~+)[ \t]*$/;

  // An open code block's text up to its closing fence, and what follows the fence: the fence is
  // never shown, nor a last line that is one being written (a line of backticks, too short yet).
  function beforeClosingFence(text, opening) {
    let start = 0;
    while (start <= text.length) {
      const end = text.indexOf("\n", start);
      const line = end < 0 ? text.slice(start) : text.slice(start, end);
      const fence = FENCE_LINE.exec(line);
      if (fence && fence[1][0] === opening[0] && (fence[1].length >= opening.length || end < 0)) {
        return { code: text.slice(0, start).replace(/\n$/, ""), after: end < 0 ? "" : text.slice(end + 1) };
      }
      if (end < 0) break;
      start = end + 1;
    }
    return { code: text, after: "" };
  }
  function showTail(element) {
    const tail = element.querySelector(".message__tail");
    if (!tail) return;
    const text = element.querySelector(".message__raw").value.slice(Number(element.dataset.renderedUpTo || 0));
    const fence = OPEN_FENCE.exec(text);
    if (fence) {
      let code = tail.querySelector(":scope > .code-block pre");
      if (!code || tail.dataset.fence !== fence[0]) {
        const block = Object.assign(document.createElement("div"), { className: "code-block code-block--open" });
        const bar = Object.assign(document.createElement("div"), { className: "code-block__bar" });
        bar.append(Object.assign(document.createElement("span"), { className: "code-block__lang", textContent: fence[2] || "text" }));
        code = Object.assign(document.createElement("pre"), { className: "highlight" });
        block.append(bar, code);
        tail.replaceChildren(block);
        tail.dataset.fence = fence[0];
      }
      const { code: shown, after } = beforeClosingFence(text.slice(fence[0].length), fence[1]);
      code.textContent = shown;
      let rest = tail.querySelector(":scope > .message__after-code");
      if (after && !rest) {
        rest = Object.assign(document.createElement("div"), { className: "message__after-code" });
        tail.append(rest);
      }
      if (rest) rest.textContent = after;
    } else {
      delete tail.dataset.fence;
      tail.textContent = text;
    }
  }

  function appendBlocks(frame) {
    const element = messageElement(frame.message_id);
    if (!element || !IN_PROGRESS.includes(element.dataset.status)) return;
    const wasNearBottom = nearBottom();
    const blocks = streamingBody(element, false);
    // Server-rendered and sanitised (markdown-it, nh3): each finished block is added once.
    blocks.insertAdjacentHTML("beforeend", frame.html.join(""));
    element.dataset.renderedUpTo = String(frame.end);
    showTail(element);
    follow(wasNearBottom);
  }

  function appendToken(frame) {
    const element = messageElement(frame.message_id);
    if (!element) return;
    const wasNearBottom = nearBottom();
    element.dataset.status = "streaming";
    const state = element.querySelector(".message__state");
    if (state) state.textContent = STATE_TEXT.streaming;
    element.querySelector(".message__raw").value += frame.text;
    if (element.querySelector(".message__tail")) {
      showTail(element);
    } else {
      streamingBody(element, true);
    }
    follow(wasNearBottom);
    updateBusy();
  }

  function finishMessage(frame) {
    const element = messageElement(frame.message_id);
    if (!element) return;
    element.dataset.status = frame.status;
    showMessageError(element, frame.error);
    updateBusy();
    refreshFromServer(frame.message_id);
  }

  const handlers = {
    message(frame) {
      if (frame.message.role === "user") pendingContent = null;
      upsertMessage(frame.message);
    },
    token: appendToken,
    blocks: appendBlocks,
    done: finishMessage,
    // The reply waits for a free place in a model worker's batch: say where it stands.
    queued(frame) {
      const element = messageElement(frame.message_id);
      const state = element && element.querySelector(".message__state");
      if (state && element.dataset.status === "queued") {
        state.textContent = frame.position <= 1 ? "Waiting for the model… next in line"
          : "Waiting for the model… " + (frame.position - 1) + " repl" + (frame.position === 2 ? "y" : "ies") + " ahead";
      }
    },
    branch(frame) {
      showBranch(frame.active);
    },
    error(frame) {
      showError(frame.error);
      if (pendingContent !== null && input.value === "") input.value = pendingContent;
      pendingContent = null;
      // A refused Continue left its reply as it was: it can be asked again.
      messages.querySelectorAll("[data-action='continue']:disabled").forEach((button) => (button.disabled = false));
    },
  };

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + chat.dataset.wsPath);
    socket.addEventListener("open", () => {
      retryDelay = 500;
      setConnection("open", "Connected");
    });
    socket.addEventListener("message", (event) => {
      const frame = JSON.parse(event.data);
      const handler = handlers[frame.type];
      if (handler) handler(frame);
    });
    socket.addEventListener("close", (event) => {
      if (event.code === 4401) {
        setConnection("closed", "Logged out");
        showError("Your session has ended. Log in again to continue.");
        return;
      }
      if (event.code === 4403) {
        setConnection("closed", "No access");
        showError("This conversation is not yours or no longer exists.");
        return;
      }
      setConnection("connecting", "Reconnecting…");
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 8000);
    });
  }

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      showError("Not connected to the server; reconnecting. Your text is kept.");
      return false;
    }
    socket.send(JSON.stringify(frame));
    return true;
  }

  // Enter while a reply is being written: the text waits and is sent when the reply ends (the
  // hint under the box says so); "Stop" ends the reply sooner.
  let sendWhenDone = false;
  const hint = document.getElementById("composer-hint");
  const compareModel = document.getElementById("compare-model");

  function setHint(text) {
    hint.textContent = text;
    hint.hidden = !text;
  }

  function sendNow() {
    const content = input.value;
    if (!content.trim()) return;
    clearError();
    const frame = { type: "send", content: content };
    if (compareModel && compareModel.value) frame.compare = compareModel.value;
    if (send(frame)) {
      pendingContent = content;
      input.value = "";
      messages.scrollTop = messages.scrollHeight;  // your own message is always in view
    }
  }

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    if (sendButton.disabled) {
      sendWhenDone = true;
      setHint("Sends when the reply ends (or press Stop to end it now).");
      return;
    }
    sendNow();
  });

  // The results of the last reply's tool calls, typed under it: sent as the next turn (README: `tool_results`).
  messages.addEventListener("submit", (event) => {
    const form = event.target.closest("form[data-tool-results]");
    if (!form) return;
    event.preventDefault();
    const results = Array.from(form.querySelectorAll("textarea[name='result']"), (field) => field.value);
    if (results.some((result) => !result.trim())) return;
    clearError();
    if (send({ type: "send", tool_results: results })) form.querySelector("button[type='submit']").disabled = true;
  });

  function sendIfWaiting() {
    if (sendWhenDone && !sendButton.disabled) {
      sendWhenDone = false;
      setHint("");
      sendNow();
    }
  }

  input.addEventListener("input", () => {
    if (sendWhenDone && !input.value.trim()) {
      sendWhenDone = false;
      setHint("");
    }
  });

  messages.addEventListener("scroll", updateJumpSoon, { passive: true });
  new ResizeObserver(updateJumpSoon).observe(messages);
  new MutationObserver(updateJumpSoon).observe(messages, { childList: true, subtree: true, characterData: true });
  jump.addEventListener("click", () => {
    messages.scrollTop = messages.scrollHeight;
    jump.hidden = true;
  });

  // The knowledge attached to this chat, above the message box (the panel that changes it is in the
  // Controls sheet): the panel's chips, without their buttons; a click opens the sheet.
  const attached = document.getElementById("attached-knowledge");
  function showAttached() {
    const chips = [...document.querySelectorAll("#knowledge-panel .knowledge-panel__attached > .chip")];
    attached.replaceChildren(...chips.map((chip) => {
      const copy = chip.cloneNode(true);
      copy.querySelectorAll("button").forEach((button) => button.remove());
      copy.removeAttribute("data-attached");
      return copy;
    }));
    attached.hidden = chips.length === 0;
  }
  attached.addEventListener("click", () => {
    document.getElementById("chat-controls").open = true;
  });
  document.addEventListener("htmx:afterSettle", showAttached);
  showAttached();

  // `#` in the message box: attach a knowledge base or a document by name, from the same list as the
  // knowledge panel's picker; the `#word` leaves the message.
  const hashMenu = document.createElement("div");
  hashMenu.className = "hash-menu card";
  hashMenu.id = "hash-menu";
  hashMenu.hidden = true;
  composer.appendChild(hashMenu);
  let hashQuery = null;
  let hashTimer = null;

  function hashWord() {
    const before = input.value.slice(0, input.selectionStart);
    const match = before.match(/(^|\s)#([^\s#]{0,60})$/);
    return match ? { start: before.length - match[2].length - 1, text: match[2] } : null;
  }

  function closeHashMenu() {
    hashMenu.hidden = true;
    hashMenu.innerHTML = "";
    hashQuery = null;
  }

  function updateHashMenu() {
    const word = hashWord();
    if (!word) { closeHashMenu(); return; }
    if (word.text === hashQuery) return;
    hashQuery = word.text;
    clearTimeout(hashTimer);
    hashTimer = setTimeout(() => {
      fetch("/chat/" + conversationId + "/knowledge/suggest/?for=composer&q=" + encodeURIComponent(word.text))
        .then((response) => response.text())
        .then((html) => {
          if (hashQuery !== word.text) return;
          hashMenu.innerHTML = html;
          hashMenu.hidden = false;
          const first = hashMenu.querySelector(".knowledge-suggestion");
          if (first) first.setAttribute("aria-selected", "true");
        });
    }, 150);
  }

  function chooseHash(option) {
    const word = hashWord();
    if (word) {
      input.value = input.value.slice(0, word.start) + input.value.slice(word.start + 1 + word.text.length);
      input.setSelectionRange(word.start, word.start);
    }
    closeHashMenu();
    htmx.ajax("POST", "/chat/" + conversationId + "/knowledge/attach/", {
      source: "#knowledge-panel", target: "#knowledge-panel", swap: "outerHTML",  // not queued behind others on <body>
      values: { kind: option.dataset.attachKind, id: option.dataset.attachId },
    });
    input.focus();
  }

  hashMenu.addEventListener("mousedown", (event) => event.preventDefault()); // keep the caret in the box
  hashMenu.addEventListener("click", (event) => {
    const option = event.target.closest(".knowledge-suggestion");
    if (option) chooseHash(option);
  });
  // The knowledge panel's Attach… picker opens under its button, which the empty panel's sentence
  // pushes far right: there it moves left to stay inside the window. (`toggle` does not bubble.)
  chat.addEventListener("toggle", (event) => {
    const picker = event.target.open && event.target.querySelector(":scope > .knowledge-panel__picker");
    if (!picker) return;
    picker.style.left = "";
    const overflow = picker.getBoundingClientRect().right - (document.documentElement.clientWidth - 8);
    if (overflow > 0) picker.style.left = -overflow + "px";
  }, true);

  input.addEventListener("input", updateHashMenu);
  input.addEventListener("click", updateHashMenu);
  input.addEventListener("blur", () => setTimeout(closeHashMenu, 200));

  input.addEventListener("keydown", (event) => {
    if (!hashMenu.hidden) {
      const options = [...hashMenu.querySelectorAll(".knowledge-suggestion")];
      const current = Math.max(0, options.findIndex((option) => option.getAttribute("aria-selected") === "true"));
      if ((event.key === "Enter" || event.key === "Tab") && options.length) {
        event.preventDefault();
        chooseHash(options[current]);
        return;
      }
      if ((event.key === "ArrowDown" || event.key === "ArrowUp") && options.length) {
        event.preventDefault();
        const next = (current + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length;
        options.forEach((option, n) => option.setAttribute("aria-selected", n === next ? "true" : "false"));
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        closeHashMenu();
        return;
      }
    }
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    } else if (event.key === "ArrowUp" && input.value === "") {
      // ArrowUp in an empty box edits the last message you sent (on the active branch).
      const mine = messages.querySelectorAll('.message[data-role="user"]');
      const last = mine[mine.length - 1];
      if (last && last.querySelector('[data-action="edit"]')) {
        event.preventDefault();
        startEditing(last);
      }
    }
  });

  const shortcuts = document.getElementById("shortcuts");
  document.getElementById("shortcuts-button").addEventListener("click", () => shortcuts.showModal());

  // Keyboard shortcuts (`?` lists them): Esc stops, Ctrl+Shift+O a new chat, Ctrl+Shift+C copies
  // the last reply.
  document.addEventListener("keydown", (event) => {
    const typing = event.target.closest("input, textarea, select, [contenteditable]");
    const ctrl = event.ctrlKey || event.metaKey;
    if (event.key === "Escape" && !stopButton.hidden) {
      event.preventDefault();
      send({ type: "stop" });
    } else if (ctrl && event.shiftKey && event.key.toLowerCase() === "o") {
      event.preventDefault();
      document.getElementById("new-chat-form").requestSubmit();
    } else if (ctrl && event.shiftKey && event.key.toLowerCase() === "c") {
      const replies = messages.querySelectorAll('.message[data-role="assistant"]');
      const last = replies[replies.length - 1];
      if (last) {
        event.preventDefault();
        copyText(last.querySelector(".message__raw").value).then(() => setHint("Copied the last reply."));
      }
    } else if (event.key === "?" && !typing && shortcuts) {
      event.preventDefault();
      shortcuts.showModal();
    }
  });

  stopButton.addEventListener("click", () => send({ type: "stop" }));

  messages.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const element = button.closest(".message");
    const id = element ? Number(element.dataset.messageId) : null;
    const action = button.dataset.action;
    if (action === "regenerate") {
      clearError();
      send({ type: "regenerate", message_id: id });
    } else if (action === "continue") {
      // The same reply grows from where the maximum tokens cut it (README: the continue frame).
      clearError();
      if (send({ type: "continue", message_id: id })) button.disabled = true;
    } else if (action === "switch") {
      if (button.dataset.target) send({ type: "switch", message_id: Number(button.dataset.target) });
    } else if (action === "edit") {
      startEditing(element);
    } else if (action === "save-edit") {
      const box = element.querySelector(".message__edit textarea");
      if (box.value.trim() && send({ type: "edit", message_id: id, content: box.value })) stopEditing(element);
    } else if (action === "cancel-edit") {
      stopEditing(element);
    } else if (action === "copy") {
      flash(button, copyText(element.querySelector(".message__raw").value));
    } else if (action === "copy-code") {
      const code = button.closest(".code-block").querySelector("pre");
      flash(button, copyText(code.textContent));
    } else if (action === "feedback") {
      giveFeedback(element, button);
    } else if (action === "keep") {
      // Continue from this reply, and record it as preferred over its siblings (DPO pairs).
      send({ type: "switch", message_id: id });
      htmx.ajax("POST", "/cases/prefer/" + id + "/", { source: button, target: element.querySelector(".flag-slot"), swap: "innerHTML" });
    }
  });

  function flash(button, copied) {
    const label = button.textContent;
    copied.then(() => {
      button.textContent = "Copied";
      setTimeout(() => (button.textContent = label), 1500);
    });
  }

  // Editing a sent message: the edited text becomes a new branch from there (the original stays).
  function startEditing(element) {
    if (!element || element.querySelector(".message__edit")) return;
    const form = document.createElement("div");
    form.className = "message__edit";
    const box = document.createElement("textarea");
    box.rows = 3;
    box.value = element.querySelector(".message__raw").value;
    box.setAttribute("aria-label", "Edit the message");
    const save = Object.assign(document.createElement("button"), { type: "button", className: "button button--small button--primary", textContent: "Send edit" });
    save.dataset.action = "save-edit";
    const cancel = Object.assign(document.createElement("button"), { type: "button", className: "button button--small", textContent: "Cancel" });
    cancel.dataset.action = "cancel-edit";
    const hintText = Object.assign(document.createElement("span"), { className: "small muted", textContent: "A new branch starts here; the original is kept (‹ › switches)." });
    const actions = document.createElement("div");
    actions.className = "message__edit-actions";
    actions.append(cancel, save, hintText);
    form.append(box, actions);
    element.querySelector(".message__body").hidden = true;
    element.querySelector(".message__body").after(form);
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save.click();
      } else if (event.key === "Escape") {
        event.stopPropagation();
        stopEditing(element);
      }
    });
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  }

  function stopEditing(element) {
    const form = element.querySelector(".message__edit");
    if (form) form.remove();
    element.querySelector(".message__body").hidden = false;
  }

  // Thumbs up or down; a thumbs down opens the failure-case form, filled in from the reply.
  function giveFeedback(element, button) {
    const value = button.getAttribute("aria-pressed") === "true" ? "" : button.dataset.value;
    const url = "/chat/" + conversationId + "/messages/" + element.dataset.messageId + "/feedback/";
    htmx.ajax("POST", url, { source: button, values: { value: value }, swap: "none" }).then(() => {
      element.querySelectorAll('[data-action="feedback"]').forEach((thumb) => {
        thumb.setAttribute("aria-pressed", String(thumb.dataset.value === value));
      });
      const slot = element.querySelector(".flag-slot");
      if (value === "down" && slot && !slot.querySelector("form")) {
        htmx.ajax("GET", "/cases/flag/" + element.dataset.messageId + "/", { source: slot, target: slot, swap: "innerHTML" })
          .then(() => { const expected = slot.querySelector("textarea"); if (expected) expected.focus(); });
      }
    });
  }

  // navigator.clipboard exists only in secure contexts (https, localhost); a studio
  // served over plain http on a LAN address falls back to a selected hidden textarea.
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const scratch = document.createElement("textarea");
    scratch.value = text;
    scratch.style.position = "fixed";
    scratch.style.opacity = "0";
    document.body.append(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
    return Promise.resolve();
  }

  updateBusy();
  messages.scrollTop = messages.scrollHeight;
  connect();
})();

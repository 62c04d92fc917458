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
    if (wasNearBottom) {
      messages.scrollTop = messages.scrollHeight;
    } else {
      document.getElementById("jump-to-latest").hidden = false;
    }
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

  // A finished message is re-rendered by the server (Markdown, sanitised, with its figures).
  function refreshFromServer(id) {
    const element = messageElement(id);
    if (!element) return;
    htmx.ajax("GET", "/chat/" + conversationId + "/messages/" + id + "/", { target: element, swap: "outerHTML" })
      .then(updateBusy);
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
      messages.insertBefore(element, messages.querySelector(".messages__empty"));
      if (message.role === "user") {
        messages.querySelectorAll('[data-action="regenerate"]').forEach((button) => button.remove());
        if (messages.querySelectorAll('[data-role="user"]').length === 1) refreshTitle();
      }
    }
    element.dataset.role = message.role;
    element.dataset.status = message.status;
    element.querySelector(".message__body").textContent = message.content;
    element.querySelector(".message__raw").value = message.content;
    const state = element.querySelector(".message__state");
    if (state) state.textContent = STATE_TEXT[message.status] || "";
    showMessageError(element, message.error);
    if (!IN_PROGRESS.includes(message.status)) refreshFromServer(message.id);
    follow(wasNearBottom);
    updateBusy();
  }

  function showMessageError(element, error) {
    const box = element.querySelector(".message__error");
    box.textContent = error || "";
    box.hidden = !error;
  }

  function appendToken(frame) {
    const element = messageElement(frame.message_id);
    if (!element) return;
    const wasNearBottom = nearBottom();
    element.dataset.status = "streaming";
    const state = element.querySelector(".message__state");
    if (state) state.textContent = STATE_TEXT.streaming;
    element.querySelector(".message__body").append(frame.text);
    element.querySelector(".message__raw").value += frame.text;
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
    removed(frame) {
      const element = messageElement(frame.message_id);
      if (element) element.remove();
    },
    error(frame) {
      showError(frame.error);
      if (pendingContent !== null && input.value === "") input.value = pendingContent;
      pendingContent = null;
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

  function setHint(text) {
    hint.textContent = text;
    hint.hidden = !text;
  }

  function sendNow() {
    const content = input.value;
    if (!content.trim()) return;
    clearError();
    if (send({ type: "send", content: content })) {
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

  // "Jump to latest" while scrolled up and new text arrives below.
  const jump = document.getElementById("jump-to-latest");
  messages.addEventListener("scroll", () => { if (nearBottom()) jump.hidden = true; });
  jump.addEventListener("click", () => {
    messages.scrollTop = messages.scrollHeight;
    jump.hidden = true;
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });

  stopButton.addEventListener("click", () => send({ type: "stop" }));

  messages.addEventListener("click", (event) => {
    const button = event.target.closest("[data-action]");
    if (!button) return;
    const element = button.closest(".message");
    if (button.dataset.action === "regenerate") {
      clearError();
      send({ type: "regenerate" });
    } else if (button.dataset.action === "copy") {
      copyText(element.querySelector(".message__raw").value).then(() => {
        button.textContent = "Copied";
        setTimeout(() => (button.textContent = "Copy"), 1500);
      });
    }
  });

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

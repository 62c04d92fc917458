// Prompt library pages: few-shot example rows, and playground runs streamed over the chat WebSocket.
(function () {
  "use strict";

  // --- version form: add / remove few-shot example rows ---------------------------------------
  document.addEventListener("click", function (event) {
    const add = event.target.closest("[data-add-example]");
    if (add) {
      const list = add.closest("[data-examples]").querySelector("[data-examples-list]");
      const row = list.lastElementChild.cloneNode(true);
      row.querySelectorAll("textarea").forEach(function (field) { field.value = ""; });
      list.appendChild(row);
      row.querySelector("textarea").focus();
      return;
    }
    const remove = event.target.closest("[data-remove-example]");
    if (remove) {
      const row = remove.closest("li");
      if (row.parentElement.children.length > 1) {
        row.remove();
      } else {
        row.querySelectorAll("textarea").forEach(function (field) { field.value = ""; });
      }
    }
  });

  // --- playground: each run pane follows its conversation's socket ------------------------------
  function follow(pane) {
    const output = pane.querySelector("[data-run-output]");
    const state = pane.querySelector("[data-run-state]");
    const meta = pane.querySelector("[data-run-meta]");
    const conversationPath = pane.dataset.runWs.replace("/ws/chat/", "/chat/");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + pane.dataset.runWs);
    let replyId = null;

    function setStatus(status, text) {
      output.dataset.status = status;
      state.textContent = text;
    }
    function finish(frame) {
      setStatus(frame.status, frame.status === "complete" ? "done" : frame.status);
      const formatState = pane.querySelector("[data-run-format-state]");
      if (formatState && frame.status === "complete") {  // the format was enforced while it was written
        const whole = frame.finish_reason !== "length";
        formatState.textContent = pane.dataset.runFormat + (whole ? ": valid by construction"
          : ": cut short by the maximum tokens, so incomplete");
        formatState.classList.add(whole ? "ok-text" : "error-text");
      }
      if (frame.error) {
        const error = document.createElement("p");
        error.className = "alert";
        error.setAttribute("role", "alert");
        error.textContent = frame.error;
        pane.appendChild(error);
      }
      addFlagButton(frame.message_id);
      const usage = frame.usage || {};
      if (usage.completion_tokens) {
        meta.textContent = usage.prompt_tokens + " prompt + " + usage.completion_tokens + " reply tokens · " +
          (usage.tokens_per_s ? usage.tokens_per_s.toFixed(1) + " tok/s · " : "") +
          (usage.ttft_ms ? "first token after " + Math.round(usage.ttft_ms) + " ms" : "");
      }
      // The stored reply rendered as sanitised Markdown by the server.
      fetch(conversationPath + "messages/" + frame.message_id + "/", { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          if (!html) return;
          const body = new DOMParser().parseFromString(html, "text/html").querySelector(".message__body");
          if (body) { output.innerHTML = body.innerHTML; output.classList.add("markdown"); }
        })
        .finally(function () { socket.close(); });
    }

    // "Flag as failure" under a finished run: the same form as in chat (evals/), loaded by htmx.
    function addFlagButton(messageId) {
      if (pane.querySelector("[data-flag-button]")) return;
      pane.id = "message-" + messageId;
      const raw = document.createElement("textarea");
      raw.className = "message__raw";
      raw.hidden = true;
      raw.value = output.textContent;
      const actions = document.createElement("p");
      actions.className = "run__actions small";
      const flag = document.createElement("button");
      flag.type = "button";
      flag.className = "link-button";
      flag.dataset.flagButton = "1";
      flag.textContent = "Flag as failure";
      flag.setAttribute("hx-get", "/cases/flag/" + messageId + "/");
      flag.setAttribute("hx-target", "#flag-slot-" + messageId);
      const badge = document.createElement("span");
      badge.className = "message__flagged badge badge--fail";
      badge.id = "flagged-badge-" + messageId;
      badge.hidden = true;
      badge.textContent = "flagged";
      const slot = document.createElement("div");
      slot.className = "flag-slot";
      slot.id = "flag-slot-" + messageId;
      actions.append(flag, " ", badge);
      pane.append(raw, actions, slot);
      htmx.process(actions);
    }

    socket.addEventListener("message", function (event) {
      const frame = JSON.parse(event.data);
      if (frame.type === "message" && frame.message.role === "assistant") {
        replyId = frame.message.id;
        const model = pane.querySelector("[data-run-model]");
        if (model && frame.message.model) model.textContent = frame.message.model;  // the model that answers
        output.textContent = frame.message.content;
        setStatus(frame.message.status, frame.message.status === "queued" ? "waiting for the model…" : "writing…");
        if (!["queued", "streaming"].includes(frame.message.status)) {
          finish({ message_id: replyId, status: frame.message.status, error: frame.message.error, usage: {} });
        }
      } else if (frame.type === "token" && frame.message_id === replyId) {
        output.textContent += frame.text;
        setStatus("streaming", "writing…");
      } else if (frame.type === "done" && frame.message_id === replyId) {
        finish(frame);
      } else if (frame.type === "error") {
        state.textContent = frame.error;
      }
    });
    socket.addEventListener("close", function (event) {
      if (output.dataset.status === "queued" || output.dataset.status === "streaming") {
        state.textContent = "connection lost (code " + event.code + "); the reply is still stored";
      }
    });
  }

  function followRuns(root) {
    root.querySelectorAll("[data-run-ws]").forEach(function (pane) {
      if (!pane.dataset.following) { pane.dataset.following = "1"; follow(pane); }
    });
  }
  document.addEventListener("htmx:afterSwap", function (event) { followRuns(event.detail.target); });
})();

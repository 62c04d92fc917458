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

  // --- playground: a run pane follows its conversation's socket while its reply is written ---------
  // The pane is the server's (prompts/_run.html): this only streams the reply's text into it, then
  // swaps in the pane again from the server (rendered reply, figures, cut mark, Continue, Flag).
  const IN_PROGRESS = ["queued", "streaming"];

  // `continueId`: the reply to continue (the Continue button), sent once the socket is open.
  function follow(pane, continueId) {
    const output = pane.querySelector("[data-run-output]");
    const state = pane.querySelector("[data-run-state]");
    const replyId = Number(pane.dataset.replyId);
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + pane.dataset.runWs);
    // On connect the server sends the conversation as it is: a reply to be continued is still
    // finished there, and only ends once it has been seen being written again.
    let seenWriting = !continueId;
    let ended = false;

    function setStatus(status, text) {
      output.dataset.status = status;
      state.textContent = text;
    }
    function end() {
      if (ended) return;
      ended = true;
      socket.close();
      refreshPane(pane);
    }
    socket.addEventListener("open", function () {
      if (continueId) socket.send(JSON.stringify({ type: "continue", message_id: continueId }));
    });
    socket.addEventListener("message", function (event) {
      const frame = JSON.parse(event.data);
      if (frame.type === "message" && frame.message.id === replyId) {
        const model = pane.querySelector("[data-run-model]");
        if (model && frame.message.model) model.textContent = frame.message.model;  // the model that answers
        if (IN_PROGRESS.includes(frame.message.status)) {
          seenWriting = true;
          output.classList.remove("markdown");
          output.textContent = frame.message.content;
          setStatus(frame.message.status, frame.message.status === "queued" ? "waiting for the model…" : "writing…");
        } else if (seenWriting) {
          end();
        }
      } else if (frame.type === "token" && frame.message_id === replyId) {
        output.textContent += frame.text;
        setStatus("streaming", "writing…");
      } else if (frame.type === "done" && frame.message_id === replyId) {
        end();
      } else if (frame.type === "error") {
        state.textContent = frame.error;
        if (!seenWriting) { ended = true; socket.close(); refreshPane(pane, frame.error); }
      }
    });
    socket.addEventListener("close", function (event) {
      if (!ended && IN_PROGRESS.includes(output.dataset.status)) {
        state.textContent = "connection lost (code " + event.code + "); the reply is still stored";
      }
    });
  }

  // The pane as the server renders it now; `error`, when given, is said in its state line.
  function refreshPane(pane, error) {
    fetch(pane.dataset.runUrl, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        const fresh = html && new DOMParser().parseFromString(html, "text/html").querySelector(".run");
        if (!fresh || !pane.isConnected) return;
        pane.replaceWith(fresh);
        htmx.process(fresh);
        if (error) fresh.querySelector("[data-run-state]").textContent = error;
        htmx.trigger(document.body, "playground-runs-changed");  // the list of runs shows its new figures
      });
  }

  function followRuns(root) {
    root.querySelectorAll("[data-run-ws]").forEach(function (pane) {
      const output = pane.querySelector("[data-run-output]");
      if (!pane.dataset.following && output && IN_PROGRESS.includes(output.dataset.status)) {
        pane.dataset.following = "1";
        follow(pane, null);
      }
    });
  }
  document.addEventListener("htmx:afterSwap", function (event) { followRuns(event.detail.target); });
  // A pane swapped for itself (the results of its calls sent: prompts/_run.html) is no longer in its target.
  document.addEventListener("htmx:afterSettle", function () { followRuns(document); });

  // Continue on a run cut at its maximum tokens: the same reply grows where it stopped.
  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-run-continue]");
    if (!button) return;
    const pane = button.closest(".run");
    button.disabled = true;
    const output = pane.querySelector("[data-run-output]");
    output.classList.remove("markdown");
    output.textContent = pane.querySelector(".message__raw").value;
    pane.querySelectorAll(".message__cut, [data-run-continue]").forEach(function (mark) { mark.remove(); });
    follow(pane, Number(pane.dataset.replyId));
  });
})();

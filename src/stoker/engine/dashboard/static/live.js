// Live pages (engine/dashboard/live.py): one EventSource per page on /ui/live; each message
// makes every element marked data-live re-fetch itself (htmx trigger "live"). When the
// stream breaks the page polls every 10 s until it reconnects. The "Live updates" switch
// stops both and is remembered in this browser.
(function () {
  "use strict";
  var KEY = "stoker-live-paused";
  var source = null;
  var poll = null;

  function paused() { return window.localStorage.getItem(KEY) === "1"; }
  function setState(text) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; el.dataset.state = text; }
  }
  function refresh() {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      // A list with rows selected for an action keeps still until they are used.
      if (el.querySelector("input[type=checkbox]:checked")) { return; }
      window.htmx.trigger(el, "live");
    });
  }
  function stop() {
    if (source) { source.close(); source = null; }
    if (poll) { window.clearInterval(poll); poll = null; }
  }
  function start() {
    stop();
    if (paused() || !document.querySelector("[data-live]")) { setState(paused() ? "paused" : ""); return; }
    source = new window.EventSource(document.body.dataset.liveUrl || "/ui/live");
    source.addEventListener("runs", refresh);
    source.addEventListener("tick", refresh);
    source.onopen = function () {
      if (poll) { window.clearInterval(poll); poll = null; }
      setState("live");
    };
    source.onerror = function () {
      setState("polling");
      if (!poll) { poll = window.setInterval(refresh, 10000); }
    };
  }
  // A task run's stream (<pre data-stream-url>): every chunk kept, then live, until "end".
  function follow(pre) {
    var es = new window.EventSource(pre.dataset.streamUrl);
    es.addEventListener("chunk", function (e) {
      var chunk = JSON.parse(e.data);
      pre.textContent += chunk.text !== undefined ? chunk.text : "[" + chunk.bytes.length + " base64 bytes]";
    });
    es.addEventListener("end", function () {
      es.close();
      if (!pre.textContent) { pre.textContent = "(no stream output)"; }
      pre.dataset.ended = "true";
    });
    es.onerror = function () { es.close(); pre.dataset.ended = "true"; };
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("pre[data-stream-url]").forEach(follow);
    var box = document.getElementById("live-switch");
    if (box) {
      box.checked = !paused();
      box.addEventListener("change", function () {
        window.localStorage.setItem(KEY, box.checked ? "0" : "1");
        start();
      });
    }
    start();
  });
  window.addEventListener("pagehide", stop);
})();

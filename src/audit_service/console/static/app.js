// audit-service console: progressive enhancement only; every page works without it.
// No eval, no inline handlers, no innerHTML of event data (values are set as text).
(function () {
  "use strict";

  function csrf() {
    return document.body.getAttribute("data-csrf") || "";
  }

  // htmx requests carry the CSRF token as a header (unsafe methods are checked server-side).
  document.addEventListener("htmx:configRequest", function (ev) {
    ev.detail.headers["X-CSRF-Token"] = csrf();
  });

  // Times: shown in the viewer's time zone (the server renders UTC for no-JS readers).
  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short"
  });
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.localised) return;
      var d = new Date(el.getAttribute("datetime"));
      if (!isNaN(d.getTime())) {
        el.title = el.textContent;
        el.textContent = fmt.format(d);
        el.dataset.localised = "1";
      }
    });
  }

  // The filter form: empty fields are left out of the URL (the server ignores them anyway).
  function tidyForm(form) {
    form.addEventListener("submit", function () {
      form.querySelectorAll("input[name], select[name]").forEach(function (el) {
        if (el.value === "" && !el.multiple) el.disabled = true;
      });
      window.setTimeout(function () {
        form.querySelectorAll("[disabled]").forEach(function (el) { el.disabled = false; });
      }, 0);
    });
  }

  // User typeahead: a datalist filled from distinct values as the user types.
  function typeahead(input) {
    var list = document.getElementById(input.getAttribute("list"));
    var url = input.dataset.typeahead;
    var timer = null;
    input.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () {
        fetch(url + "&prefix=" + encodeURIComponent(input.value), { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : []; })
          .then(function (values) {
            list.replaceChildren();
            values.forEach(function (v) {
              var o = document.createElement("option");
              o.value = v;
              list.appendChild(o);
            });
          })
          .catch(function () {});
      }, 150);
    });
  }

  // Phone: filters start collapsed.
  function collapseOnPhone() {
    var f = document.getElementById("filters");
    if (f && window.matchMedia("(max-width: 599px)").matches) f.removeAttribute("open");
  }

  // Server-rendered fragments (our own, every value already escaped by the server) into
  // nodes: a <template> parses without running anything.
  function fragment(html) {
    var t = document.createElement("template");
    t.innerHTML = html;
    return t.content;
  }

  // --- the detail drawer: Enter or a click on a row; focus stays inside; Esc returns ---
  var drawer = null;
  var opener = null;

  function focusables(root) {
    return Array.prototype.filter.call(
      root.querySelectorAll("a[href], button:not([disabled]), input, select, textarea, [tabindex]:not([tabindex='-1'])"),
      function (el) { return el.offsetParent !== null || el === document.activeElement; }
    );
  }

  function showDrawer() {
    drawer.hidden = false;
    localise(drawer);
    var title = drawer.querySelector("h2");
    if (title) { title.tabIndex = -1; title.focus(); }
  }

  function closeDrawer() {
    if (!drawer || drawer.hidden) return;
    drawer.hidden = true;
    drawer.replaceChildren();
    if (opener) opener.focus();
  }

  function openDrawer(row) {
    var url = row.getAttribute("data-detail");
    if (!drawer || !url) return;
    opener = row;
    if (window.htmx && window.htmx.ajax) {
      window.htmx.ajax("GET", url, { target: "#drawer", swap: "innerHTML" }).then(showDrawer);
      return;
    }
    fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (r) { return r.text(); })
      .then(function (html) { drawer.replaceChildren(fragment(html)); showDrawer(); })
      .catch(function () { window.location.href = row.getAttribute("data-href"); });
  }

  function wireDrawer() {
    drawer = document.getElementById("drawer");
    var rows = document.getElementById("event-rows");
    if (!drawer || !rows) return;
    rows.addEventListener("click", function (ev) {
      var row = ev.target.closest("tr.event");
      if (!row || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
      ev.preventDefault();
      openDrawer(row);
    });
    rows.addEventListener("keydown", function (ev) {
      var row = ev.target.closest("tr.event");
      if (row && ev.key === "Enter" && ev.target === row) { ev.preventDefault(); openDrawer(row); }
    });
    drawer.addEventListener("click", function (ev) {
      if (ev.target.closest("[data-close-drawer]")) closeDrawer();
    });
    document.addEventListener("keydown", function (ev) {
      if (drawer.hidden) return;
      if (ev.key === "Escape") { ev.preventDefault(); closeDrawer(); return; }
      if (ev.key !== "Tab") return;
      var items = focusables(drawer);
      if (!items.length) return;
      var first = items[0], last = items[items.length - 1];
      if (!drawer.contains(document.activeElement)) { ev.preventDefault(); first.focus(); }
      else if (ev.shiftKey && document.activeElement === first) { ev.preventDefault(); last.focus(); }
      else if (!ev.shiftKey && document.activeElement === last) { ev.preventDefault(); first.focus(); }
    });
  }

  // --- live tail: SSE, the log position as the event id, pause with an "N new" badge ---
  var MAX_ROWS = 1000;

  function wireTail() {
    var toggle = document.getElementById("tail-toggle");
    var pause = document.getElementById("tail-pause");
    var badge = document.getElementById("tail-badge");
    var rows = document.getElementById("event-rows");
    if (!toggle || !rows) return;
    var source = null, paused = false, queued = [];

    function setBadge() {
      badge.hidden = queued.length === 0;
      badge.textContent = queued.length + " new";
    }
    function trim() {
      var all = rows.querySelectorAll("tr");
      for (var i = all.length - 1; i >= MAX_ROWS; i--) all[i].remove();
    }
    function insert(html) {
      var empty = rows.querySelector("tr.empty");
      if (empty) empty.remove();
      var nodes = fragment(html);
      var row = nodes.querySelector("tr");
      if (row) row.classList.add("fresh");
      rows.insertBefore(nodes, rows.firstChild);
      localise(rows);
      trim();
    }
    function flush() {
      queued.splice(0).reverse().forEach(insert);
      setBadge();
    }
    function stop(message) {
      if (source) source.close();
      source = null;
      toggle.setAttribute("aria-pressed", "false");
      toggle.textContent = "Live tail";
      pause.hidden = true;
      if (message) { badge.hidden = false; badge.textContent = message; }
    }
    function start() {
      var query = toggle.getAttribute("data-query");
      var url = toggle.getAttribute("data-stream") + "?" + (query ? query + "&" : "") +
        "after=" + encodeURIComponent(toggle.getAttribute("data-after"));
      source = new EventSource(url);
      source.addEventListener("row", function (ev) {
        if (paused) { queued.push(ev.data); if (queued.length > MAX_ROWS) queued.shift(); setBadge(); }
        else insert(ev.data);
      });
      source.addEventListener("end", function (ev) { stop(ev.data); });
      source.addEventListener("error", function () {
        if (source && source.readyState === EventSource.CLOSED) stop("Live tail stopped");
      });
      toggle.setAttribute("aria-pressed", "true");
      toggle.textContent = "Stop live tail";
      pause.hidden = false;
    }
    toggle.addEventListener("click", function () { if (source) stop(); else start(); });
    pause.addEventListener("click", function () {
      paused = !paused;
      pause.setAttribute("aria-pressed", String(paused));
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) flush();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    collapseOnPhone();
    var form = document.getElementById("filter-form");
    if (form) tidyForm(form);
    document.querySelectorAll("input[data-typeahead]").forEach(typeahead);
    wireDrawer();
    wireTail();
  });

  window.auditConsole = { localise: localise, csrf: csrf, fragment: fragment };
})();

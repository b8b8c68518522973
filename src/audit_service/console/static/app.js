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

  document.addEventListener("DOMContentLoaded", function () {
    localise(document);
    collapseOnPhone();
    var form = document.getElementById("filter-form");
    if (form) tidyForm(form);
    document.querySelectorAll("input[data-typeahead]").forEach(typeahead);
  });

  window.auditConsole = { localise: localise, csrf: csrf };
})();

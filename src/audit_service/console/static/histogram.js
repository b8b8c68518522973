// The activity page's volume histogram (uPlot): event counts over time for exactly the
// page's filters, fetched as JSON from /console/activity/histogram (the section's data-src)
// with the viewer's time zone, so hour, day and week bars are local ones. Drag across bars,
// or click one, to narrow the page to that range: a plain GET of the same filters with
// since/until set, so back/forward and reload work. Text only (textContent), no inline
// script or style; without JavaScript the section stays hidden and the page is complete.
(function () {
  "use strict";

  var section = document.getElementById("histogram");
  if (!section || typeof uPlot === "undefined" || !window.fetch) {
    return;
  }
  var note = document.getElementById("histogram-note");
  var box = document.getElementById("histogram-chart");
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  var src = new URL(section.getAttribute("data-src"), window.location.href);
  if (zone) {
    src.searchParams.set("tz", zone);
  }
  section.hidden = false;
  note.textContent = "Counting events over time…";

  var withSeconds = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });

  // Where a narrowed range leads: this page's address with since/until replaced and the
  // paging reset (a page number or cursor of the old range means nothing in the new one).
  function narrowed(since, until) {
    var url = new URL(window.location.href);
    ["page", "cursor", "last", "since", "until"].forEach(function (k) {
      url.searchParams.delete(k);
    });
    url.searchParams.set("since", since);
    url.searchParams.set("until", until);
    return url.toString();
  }

  function iso(seconds) {
    return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
  }

  // The bars as a table of links (collapsed): the same narrowing by keyboard or screen
  // reader. Only bars with events, as text.
  function barTable(n, counts, since, until) {
    var details = document.createElement("details");
    details.className = "histogram-table";
    var summary = document.createElement("summary");
    summary.textContent = "Table of the histogram";
    details.appendChild(summary);
    var scroll = document.createElement("div");
    scroll.className = "histogram-scroll";
    var table = document.createElement("table");
    var caption = document.createElement("caption");
    caption.textContent = "Events per bar (bars without events left out)";
    table.appendChild(caption);
    var head = table.createTHead().insertRow();
    ["From", "Until", "Events"].forEach(function (label) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = label;
      head.appendChild(th);
    });
    var body = table.createTBody();
    for (var i = 0; i < n; i++) {
      if (!counts[i]) {
        continue;
      }
      var row = body.insertRow();
      row.insertCell().textContent = withSeconds.format(new Date(since(i)));
      row.insertCell().textContent = withSeconds.format(new Date(until(i)));
      var link = document.createElement("a");
      link.href = narrowed(since(i), until(i));
      link.textContent = counts[i].toLocaleString();
      row.insertCell().appendChild(link);
    }
    scroll.appendChild(table);
    details.appendChild(scroll);
    return details;
  }

  function draw(data) {
    if (!data.available) {
      note.textContent = data.message || "The histogram is not available for this filter.";
      section.classList.add("histogram-unavailable");
      return;
    }
    var starts = data.starts, ends = data.ends, counts = data.counts;
    var n = starts.length;
    if (!n) {
      note.textContent = "No events in this period.";
      return;
    }
    note.textContent = data.total.toLocaleString() + " events, per " + data.step +
      (zone ? " (" + zone + ")" : "") + ". Drag across bars, or click one, to narrow the range.";

    // The bar under an x value (epoch seconds), or -1.
    function barAt(x) {
      var lo = 0, hi = n - 1;
      if (x < starts[0] || x >= ends[n - 1]) {
        return -1;
      }
      while (lo < hi) {
        var mid = (lo + hi + 1) >> 1;
        if (starts[mid] <= x) { lo = mid; } else { hi = mid - 1; }
      }
      return lo;
    }
    // A bar's ends as since/until: the period's own ends (exact, as given) at its edges.
    function since(i) { return i === 0 ? data.since : iso(starts[i]); }
    function until(i) { return i === n - 1 ? data.until : iso(ends[i]); }

    var tip = document.createElement("div");
    tip.className = "histogram-tip";
    tip.setAttribute("role", "status");
    tip.hidden = true;
    box.appendChild(tip);

    function width() {
      return Math.max(box.clientWidth || section.clientWidth || 120, 120);
    }
    var height = 140;
    var chart = new uPlot({
      width: width(),
      height: height,
      cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
      select: { show: true },
      scales: { x: { time: true, range: function () { return [starts[0], ends[n - 1]]; } } },
      axes: [{}, { size: 50 }],
      legend: { show: false },
      series: [
        {},
        {
          label: "Events",
          stroke: "#1f5fa8",
          fill: "rgba(31, 95, 168, 0.45)",
          width: 1,
          paths: uPlot.paths.bars({ size: [0.9, Infinity], align: 1 }),
          points: { show: false },
        },
      ],
      hooks: {
        setCursor: [function (u) {
          var left = u.cursor.left;
          var i = left === undefined || left < 0 ? -1 : barAt(u.posToVal(left, "x"));
          if (i < 0) {
            tip.hidden = true;
            return;
          }
          tip.textContent = withSeconds.format(new Date(starts[i] * 1000)) + " – " +
            withSeconds.format(new Date(ends[i] * 1000)) + ": " +
            counts[i].toLocaleString() + (counts[i] === 1 ? " event" : " events");
          tip.hidden = false;
          tip.style.left = Math.min(left, Math.max(u.over.clientWidth - 240, 0)) + "px";
        }],
        setSelect: [function (u) {
          if (u.select.width < 3) {
            return;
          }
          var first = barAt(u.posToVal(u.select.left, "x"));
          var last = barAt(u.posToVal(u.select.left + u.select.width, "x"));
          first = first < 0 ? 0 : first;
          last = last < 0 ? n - 1 : last;
          window.location.assign(narrowed(since(first), until(last)));
        }],
      },
    }, [starts, counts], box);

    chart.over.addEventListener("click", function () {
      if (chart.select.width >= 3 || chart.cursor.left === undefined) {
        return;
      }
      var i = barAt(chart.posToVal(chart.cursor.left, "x"));
      if (i >= 0 && counts[i] > 0) {
        window.location.assign(narrowed(since(i), until(i)));
      }
    });
    chart.over.addEventListener("mouseleave", function () { tip.hidden = true; });
    section.appendChild(barTable(n, counts, since, until));
    window.addEventListener("resize", function () {
      chart.setSize({ width: width(), height: height });
    });
    section.classList.add("histogram-ready");
  }

  fetch(src.toString(), { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (r) {
      if (!r.ok) {
        throw new Error("HTTP " + r.status);
      }
      return r.json();
    })
    .then(draw, function () {
      note.textContent = "The histogram could not be loaded; the rows below are complete.";
    });
})();

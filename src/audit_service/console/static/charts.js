// The dashboard's charts (uPlot), fed by the page's JSON data island
// (<script type="application/json" id="dashboard-data">, never executed). Everything shown
// comes from the data as text (textContent), never as HTML. Time axes are in the viewer's
// time zone (the page passes it as `tz`, and uPlot formats in the browser's zone).
// Drag a range, or click a bucket, to open the activity page filtered to it.
(function () {
  "use strict";

  var island = document.getElementById("dashboard-data");
  if (!island) {
    return;
  }
  var data = JSON.parse(island.textContent || "{}");

  // Without a `tz` in the address the server counted in its default zone: ask again in ours
  // (a plain GET of the same form; without JavaScript the default zone simply stays).
  var zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    zone = "";
  }
  var here = new URL(window.location.href);
  if (zone && !here.searchParams.has("tz") && zone !== data.tz) {
    here.searchParams.set("tz", zone);
    window.location.replace(here.toString());
    return;
  }
  var tzInput = document.getElementById("dashboard-tz");
  if (tzInput && !tzInput.value && zone) {
    tzInput.value = zone;
  }

  function activityUrl(sinceSeconds, untilSeconds) {
    var url = new URL(data.activity_url, window.location.href);
    Object.keys(data.filters || {}).forEach(function (key) {
      var value = data.filters[key];
      if (Array.isArray(value)) {
        value.forEach(function (v) { url.searchParams.append(key, v); });
      } else {
        url.searchParams.set(key, value);
      }
    });
    url.searchParams.set("since", new Date(sinceSeconds * 1000).toISOString());
    url.searchParams.set("until", new Date(untilSeconds * 1000).toISOString());
    return url.toString();
  }

  var fmt = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });

  function seriesChart(box) {
    var starts = data.series.starts;
    var ends = data.series.ends;
    var counts = data.series.counts;
    if (!starts.length || typeof uPlot === "undefined") {
      return;
    }
    var tooltip = document.createElement("div");
    tooltip.className = "chart-tooltip";
    tooltip.setAttribute("role", "status");
    tooltip.hidden = true;
    box.appendChild(tooltip);

    function bucketAt(left) {
      var i = chart.posToIdx(left);
      return i >= 0 && i < starts.length ? i : -1;
    }

    var chart = new uPlot({
      width: Math.max(box.clientWidth, 280),
      height: 240,
      title: "",
      cursor: { drag: { x: true, y: false, setScale: false } },
      select: { show: true },
      scales: { x: { time: true } },
      axes: [{}, { size: 60 }],
      legend: { show: false },
      series: [
        {},
        { label: "Events", stroke: "#1f5fa8", fill: "rgba(31, 95, 168, 0.15)", width: 2,
          points: { show: starts.length < 60 } },
      ],
      hooks: {
        setCursor: [function (u) {
          var i = u.cursor.idx;
          if (i === null || i === undefined || i < 0) {
            tooltip.hidden = true;
            return;
          }
          tooltip.textContent = fmt.format(new Date(starts[i] * 1000)) + " – " +
            fmt.format(new Date(ends[i] * 1000)) + ": " + counts[i].toLocaleString() + " events";
          tooltip.hidden = false;
          var left = Math.min(u.cursor.left || 0, Math.max(u.bbox.width / devicePixelRatio - 200, 0));
          tooltip.style.left = left + "px";
        }],
        setSelect: [function (u) {
          if (u.select.width < 3) {
            return;
          }
          var from = u.posToVal(u.select.left, "x");
          var to = u.posToVal(u.select.left + u.select.width, "x");
          var first = bucketAt(u.select.left);
          var last = bucketAt(u.select.left + u.select.width);
          var since = first >= 0 ? Math.min(starts[first], from) : from;
          var until = last >= 0 ? Math.max(ends[last], to) : to;
          window.location.assign(activityUrl(Math.floor(since), Math.ceil(until)));
        }],
      },
    }, [starts, counts], box);

    chart.over.addEventListener("click", function () {
      if (chart.select.width >= 3) {
        return;
      }
      var i = chart.cursor.idx;
      if (i !== null && i !== undefined && i >= 0) {
        window.location.assign(activityUrl(starts[i], ends[i]));
      }
    });
    window.addEventListener("resize", function () {
      chart.setSize({ width: Math.max(box.clientWidth, 280), height: 240 });
    });
    box.classList.add("chart-ready");
  }

  var box = document.getElementById("activity-chart");
  if (box && data.series) {
    seriesChart(box);
  }
})();

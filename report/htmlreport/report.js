"use strict";
(function () {
  var t0 = performance.now();
  var data = JSON.parse(document.getElementById("flow-data").textContent);
  var rep = data.report || {};
  var ev = data.events; // null when the run recorded no events
  var css = getComputedStyle(document.documentElement);
  function color(name) { return css.getPropertyValue("--" + name).trim(); }
  var C = {
    succeeded: color("ok"), failed: color("failed"), skipped: color("skipped"), cancelled: color("cancelled"),
    filtered: color("filtered"), retried: color("retried"), redelivered: color("redelivered"), wait: color("wait"),
  };
  var OUTCOMES = ["succeeded", "failed", "skipped", "cancelled", "filtered"];
  // Attempt kinds, as in the events file (docs/report-format.md).
  var KINDS = [
    { name: "succeeded", color: C.succeeded },
    { name: "failed, retried", color: C.retried },
    { name: "failed", color: C.failed },
    { name: "cancelled", color: C.cancelled },
    { name: "worker died (redelivered)", color: C.redelivered },
  ];

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function fmtUS(us) {
    if (us == null || isNaN(us)) return "–";
    var a = Math.abs(us);
    if (a < 1000) return Math.round(us) + "µs";
    if (a < 1e6) return (us / 1e3).toFixed(a < 1e4 ? 2 : 1) + "ms";
    if (a < 6e7) return (us / 1e6).toFixed(a < 1e7 ? 2 : 1) + "s";
    var s = Math.round(us / 1e6), h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60;
    return (h ? h + "h" : "") + (h ? String(m).padStart(2, "0") : m) + "m" + String(s % 60).padStart(2, "0") + "s";
  }
  // Durations measured in whole microseconds: 0 means under one.
  function fmtLat(us) { return us === 0 ? "<1µs" : fmtUS(us); }
  function fmtN(n) { return n == null ? "–" : Number(n).toLocaleString("en-US"); }
  function fmtRate(n) { return n >= 100 ? fmtN(Math.round(n)) : n >= 1 ? n.toFixed(1) : n.toFixed(3); }
  function itemText(v) { if (typeof v === "string") return v; try { return JSON.stringify(v); } catch (e) { return String(v); } }

  var evStages = {};
  if (ev) ev.stages.forEach(function (s) { evStages[s.name] = s; });
  var runUS = Math.max(1, (rep.duration || 0) * 1e6);
  if (ev) ev.stages.forEach(function (s) { if (s.last_us > runUS) runUS = s.last_us; });

  // ---- Top ----
  (function top() {
    var h = document.getElementById("top");
    var name = rep.pipeline || rep.file || "flow run";
    document.getElementById("made-by").textContent = "flow " + (rep.flow_version || "");
    h.appendChild(el("h1", null, [name, el("span", { cls: "badge " + (rep.status || ""), text: rep.status || "unknown" })]));
    var meta = el("div", { cls: "meta" });
    function m(k, v, title) { var s = el("span", title ? { title: title } : null, [k + " ", el("b", { text: v })]); meta.appendChild(s); }
    m("duration", fmtUS((rep.duration || 0) * 1e6));
    if (rep.start) m("started", new Date(rep.start).toLocaleString());
    m("exit code", String(rep.exit_code == null ? "–" : rep.exit_code));
    if (rep.file) m("file", rep.file);
    if (rep.file_sha256) m("sha256", rep.file_sha256.slice(0, 12) + "…", rep.file_sha256);
    m("flow", rep.flow_version || "unknown");
    h.appendChild(meta);
    if (rep.reason && rep.status !== "succeeded") h.appendChild(el("div", { cls: "meta" }, [el("span", null, ["why: ", el("b", { text: rep.reason })])]));
  })();

  // ---- First failure ----
  (function firstFailure() {
    var f = (rep.failures || [])[0];
    var sec = document.getElementById("failure");
    if (!f && !(rep.reason && rep.status !== "succeeded")) return;
    sec.hidden = false;
    sec.appendChild(el("h2", { text: f ? "First failure" : "Why the run did not succeed" }));
    if (f) {
      sec.appendChild(el("div", null, ["stage ", el("b", { text: f.stage }), ", item #" + f.index + ": ",
        el("code", { text: itemText(f.item) }), " — " + f.outcome + (f.class ? " (" + f.class + ")" : "") +
        ", after " + f.attempts + " attempt" + (f.attempts === 1 ? "" : "s")]));
      sec.appendChild(el("pre", { text: f.error }));
      var more = (rep.failures.length - 1) + (rep.failures_omitted || 0);
      if (more > 0) sec.appendChild(el("p", { cls: "note", text: fmtN(more) + " more failed item" + (more === 1 ? "" : "s") + ": see the errors of each stage and the item table." }));
    } else {
      sec.appendChild(el("pre", { text: rep.reason }));
    }
  })();

  // ---- Stages ----
  function outcomeBar(counts, total) {
    var bar = el("div", { cls: "bar" });
    OUTCOMES.forEach(function (o) {
      if (counts[o] > 0) bar.appendChild(el("span", { style: "width:" + (100 * counts[o] / total) + "%;background:" + C[o], title: o + ": " + fmtN(counts[o]) }));
    });
    return bar;
  }
  function fig(k, v, title) { return el("div", { cls: "fig", title: title || "" }, [el("div", { cls: "v", text: v }), el("div", { cls: "k", text: k })]); }

  function setupCanvas(cv, cssH) {
    var dpr = window.devicePixelRatio || 1, w = cv.clientWidth || 300;
    cv.width = Math.round(w * dpr); cv.height = Math.round(cssH * dpr);
    var g = cv.getContext("2d"); g.setTransform(dpr, 0, 0, dpr, 0, 0);
    return { g: g, w: w, h: cssH };
  }
  // chart draws series of one stage over the run's time: layers stacked
  // (areas) and lines, with the y maximum labelled.
  function chart(cv, st, layers, lines, unit) {
    var c = setupCanvas(cv, 90), g = c.g, W = c.w, H = c.h, pad = 14;
    // At most one bar per few pixels: neighbouring bins are averaged.
    var f = Math.max(1, Math.ceil(Math.ceil(runUS / st.bin_us) / Math.max(40, W / 4)));
    function coarse(v) {
      if (!v || f === 1) return v;
      var out = [];
      for (var i = 0; i < v.length; i += f) { var sum = 0; for (var j = i; j < i + f && j < v.length; j++) sum += v[j]; out.push(sum / f); }
      return out;
    }
    layers = layers.map(function (l) { return { color: l.color, v: coarse(l.v) }; });
    lines = lines.map(function (l) { return { color: l.color, v: coarse(l.v), flat: l.flat, dash: l.dash }; });
    st = { bin_us: st.bin_us * f };
    var n = 0; layers.concat(lines).forEach(function (l) { n = Math.max(n, (l.v || []).length); });
    var bins = Math.max(n, Math.ceil(runUS / st.bin_us));
    var sums = new Float64Array(bins), ymax = 0;
    layers.forEach(function (l) { for (var i = 0; i < l.v.length; i++) { sums[i] += l.v[i]; if (sums[i] > ymax) ymax = sums[i]; } });
    lines.forEach(function (l) { (l.v || []).forEach(function (v) { if (v > ymax) ymax = v; }); if (l.flat > ymax) ymax = l.flat; });
    if (ymax <= 0) ymax = 1;
    ymax *= 1.1;
    var xs = function (i) { return (i * st.bin_us / runUS) * W; };
    var ys = function (v) { return H - pad / 2 - (v / ymax) * (H - pad); };
    g.strokeStyle = "#e3e6ec"; g.beginPath(); g.moveTo(0, ys(0) + .5); g.lineTo(W, ys(0) + .5); g.stroke();
    var base = new Float64Array(bins);
    layers.forEach(function (l) {
      g.fillStyle = l.color; g.beginPath(); g.moveTo(0, ys(0));
      for (var i = 0; i < bins; i++) {
        var v = base[i] + (l.v[i] || 0);
        g.lineTo(xs(i), ys(v)); g.lineTo(xs(i + 1), ys(v));
      }
      for (var j = bins - 1; j >= 0; j--) { g.lineTo(xs(j + 1), ys(base[j])); g.lineTo(xs(j), ys(base[j])); }
      g.closePath(); g.fill();
      for (var k = 0; k < bins; k++) base[k] += l.v[k] || 0;
    });
    lines.forEach(function (l) {
      g.strokeStyle = l.color; g.lineWidth = 1.5; g.setLineDash(l.dash || []);
      g.beginPath();
      if (l.flat != null) { g.moveTo(0, ys(l.flat)); g.lineTo(W, ys(l.flat)); }
      else for (var i = 0; i < l.v.length; i++) { var y = ys(l.v[i]); if (i === 0) g.moveTo(xs(i), y); else g.lineTo(xs(i), y); g.lineTo(xs(i + 1), y); }
      g.stroke(); g.setLineDash([]);
    });
    g.fillStyle = "#6b7280"; g.font = "11px system-ui, sans-serif"; g.textBaseline = "top";
    g.fillText((unit ? unit(ymax / 1.1) : fmtRate(ymax / 1.1)), 4, 0);
  }

  var later = []; // charts, drawn once the page has its layout
  (function stages() {
    var list = document.getElementById("stage-list");
    (rep.stages || []).forEach(function (s) {
      var es = evStages[s.name];
      var card = el("div", { cls: "stage" });
      card.appendChild(el("div", { cls: "stage-head" }, [el("h3", { text: s.name }),
        el("span", { cls: "kind", text: [s.role, s.kind, s.mode ? s.mode + " mode" : "", s.workers ? s.workers + " worker" + (s.workers === 1 ? "" : "s") : ""].filter(Boolean).join(" · ") })]));
      var counts = { succeeded: s.succeeded, failed: s.failed, skipped: s.skipped, cancelled: s.cancelled, filtered: s.filtered };
      card.appendChild(outcomeBar(counts, Math.max(1, s.in)));
      var cl = el("div", { cls: "counts" }, [el("span", { text: fmtN(s.in) + " in" })]);
      OUTCOMES.forEach(function (o) { if (counts[o] > 0) cl.appendChild(el("span", null, [el("i", { cls: "dot", style: "background:" + C[o] }), fmtN(counts[o]) + " " + o])); });
      if (s.timed_out) cl.appendChild(el("span", { text: fmtN(s.timed_out) + " timed out" }));
      cl.appendChild(el("span", { text: fmtN(s.out) + " passed on" }));
      card.appendChild(cl);
      // As the closing summary says: a sink writing a file keeps the old
      // one when the run does not succeed (print writes as it goes).
      if (s.role === "sink" && s.kind !== "print" && rep.status !== "succeeded" && s.succeeded > 0)
        card.appendChild(el("p", { cls: "note", text: "The run did not succeed: this sink kept the old file, so the " + fmtN(s.succeeded) + " items it took were not written." }));
      var figs = el("div", { cls: "figs" });
      figs.appendChild(fig("items/s", fmtRate(s.items_per_second || 0)));
      figs.appendChild(fig("stage time", fmtUS((s.duration || 0) * 1e6)));
      var lat = es && es.latency_us && es.latency_us.count ? es.latency_us : null;
      if (lat) {
        figs.appendChild(fig("p50", fmtLat(lat.p50), "half the items took less"));
        figs.appendChild(fig("p90", fmtLat(lat.p90)));
        figs.appendChild(fig("p99", fmtLat(lat.p99)));
        figs.appendChild(fig("max", fmtLat(lat.max)));
      } else if (s.latency_p50) {
        figs.appendChild(fig("p50", fmtUS(s.latency_p50 * 1e6)));
        figs.appendChild(fig("p95", fmtUS(s.latency_p95 * 1e6)));
        figs.appendChild(fig("max", fmtUS(s.latency_max * 1e6)));
      }
      if (es && es.attempts) {
        // Cumulative worker time, and the share of the workers' time it
        // took: near 100% the stage is saturated, low it waits for input.
        var busy = 0; es.lanes.forEach(function (l) { busy += l.busy_us; });
        figs.appendChild(fig("worker time", fmtUS(busy), "attempt time summed over every worker"));
        var span = Math.max(1, es.last_us - es.first_us) * Math.max(1, es.workers);
        figs.appendChild(fig("workers busy", Math.min(100, Math.round(100 * busy / span)) + "%", "worker time / (stage time × workers)"));
      }
      figs.appendChild(fig("retries", fmtN(s.retries)));
      if (es) {
        if (es.redelivered) figs.appendChild(fig("redelivered", fmtN(es.redelivered), "deliveries again after a worker process died"));
        figs.appendChild(fig("wait on limits", es.wait_us ? fmtUS(es.wait_us) : "none", fmtN(es.waited) + " items waited on rate or concurrency limits"));
      }
      card.appendChild(figs);
      if (es && es.bin_us && (es.series.busy_us.length || Object.keys(es.series.done).length)) {
        var charts = el("div", { cls: "charts" });
        var perS = 1e6 / es.bin_us;
        // Cancelled items are not throughput: a stopping run cancels its
        // queue at once, and that spike would flatten the rest.
        var done = OUTCOMES.filter(function (o) { return o !== "cancelled" && es.series.done[o]; }).map(function (o) {
          return { color: C[o], v: es.series.done[o].map(function (x) { return x * perS; }) };
        });
        var c1 = el("canvas", { "data-chart": "throughput" }), c2 = el("canvas", { "data-chart": "inflight" }), c3 = el("canvas", { "data-chart": "wait" });
        charts.appendChild(el("div", { cls: "chart" }, [el("h4", { text: "Throughput (items/s, by outcome" + (es.outcomes.cancelled ? "; cancelled left out)" : ")") }), c1]));
        // Stages that run no attempts (sources, sinks, barriers) have no
        // items in flight to show.
        var ran = es.attempts > 0, waited = es.wait_us > 0;
        if (ran) charts.appendChild(el("div", { cls: "chart" }, [el("h4", { text: "In flight vs " + es.workers + " worker" + (es.workers === 1 ? "" : "s") + " (dashed)" }), c2]));
        if (waited) charts.appendChild(el("div", { cls: "chart" }, [el("h4", { text: "Waiting on rate and concurrency limits (items)" }), c3]));
        card.appendChild(charts);
        later.push(function () {
          chart(c1, es, done, []);
          var inflight = es.series.busy_us.map(function (b) { return b / es.bin_us; });
          if (ran) chart(c2, es, [{ color: "rgba(91,155,213,.35)", v: inflight }], [{ color: C.filtered, v: inflight }, { color: "#1d2330", flat: es.workers, dash: [4, 3] }]);
          if (waited) chart(c3, es, [{ color: C.wait, v: es.series.wait_us.map(function (b) { return b / es.bin_us; }) }], []);
        });
      }
      if (es && es.errors && es.errors.length) {
        var t = el("table", { cls: "errors" }, [el("thead", null, [el("tr", null, [el("th", { text: "error class" }), el("th", { text: "items" }), el("th", { text: "examples" })])])]);
        var tb = el("tbody");
        es.errors.forEach(function (e) {
          var ex = el("td", { cls: "err" });
          e.examples.forEach(function (x) { ex.appendChild(el("div", { text: "#" + x.index + " " + x.item + ": " + x.error })); });
          tb.appendChild(el("tr", null, [el("td", null, [el("span", { cls: "outcome failed", text: e.class })]), el("td", { cls: "num", text: fmtN(e.count) }), ex]));
        });
        if (es.errors_other) tb.appendChild(el("tr", null, [el("td", { text: "other classes" }), el("td", { cls: "num", text: fmtN(es.errors_other) }), el("td", { text: "past the " + es.errors.length + " classes kept" })]));
        t.appendChild(tb);
        card.appendChild(t);
      }
      list.appendChild(card);
    });
  })();

  // ---- Timeline ----
  var TL = { lanes: [], view0: 0, view1: runUS, home0: 0, home1: runUS, left: 170, top: 24, rowH: 16 };
  (function timeline() {
    var legend = document.getElementById("legend");
    KINDS.forEach(function (k) { legend.appendChild(el("span", null, [el("i", { style: "background:" + k.color }), k.name])); });
    legend.appendChild(el("span", null, [el("i", { style: "background:linear-gradient(90deg,rgba(58,157,93,.25),rgba(58,157,93,1))" }), "aggregated: shade = share of the time busy"]));
    var note = document.getElementById("timeline-note");
    if (!ev) { note.textContent = "No timeline: this report was written without recorded events. Run with --html, or with --events FILE and render with flow report."; document.getElementById("timeline-wrap").hidden = true; return; }
    var notes = [];
    ev.stages.forEach(function (s) {
      if (!s.lanes || !s.lanes.length) return;
      TL.lanes.push({ header: true, stage: s });
      s.lanes.forEach(function (l) { TL.lanes.push({ stage: s, lane: l }); });
      if (s.exact_omitted) notes.push(s.name + ": " + fmtN(s.exact_omitted) + " of " + fmtN(s.attempts) + " attempts are drawn aggregated in bins of " + fmtUS(s.bin_us) + " (the first " + fmtN(s.attempts - s.exact_omitted) + " are drawn one by one)");
      s.lanes.forEach(function (l) { if (l.other) notes.push(s.name + ": " + l.workers + " workers past the first " + (s.lanes.length - 1) + " share the lane \"other workers\""); });
    });
    if (!TL.lanes.length) { note.textContent = "No stage ran attempts (sources, sinks and barriers have no workers to show)."; document.getElementById("timeline-wrap").hidden = true; return; }
    note.textContent = notes.join(". ");
    // Open on the span where workers ran, which in a short run can be a
    // sliver of it; double-click comes back here.
    var lo = Infinity, hi = 0;
    ev.stages.forEach(function (s) { if (s.lanes && s.lanes.length && s.first_us >= 0) { lo = Math.min(lo, s.first_us); hi = Math.max(hi, s.last_us); } });
    if (hi > lo) { var padUS = (hi - lo) * 0.02; TL.home0 = Math.max(0, lo - padUS); TL.home1 = Math.min(runUS, hi + padUS); TL.view0 = TL.home0; TL.view1 = TL.home1; }
    var nl = TL.lanes.filter(function (r) { return !r.header; }).length;
    TL.rowH = nl > 60 ? 8 : nl > 30 ? 12 : 18;
  })();

  // A lane whose worker held several items at once gets room for them.
  function rowH(r) { return r.header ? 18 : Math.max(TL.rowH, Math.min(tracksOf(r.lane).n, MAXTRACKS) * 6 + 4); }
  function tlY(i) { var y = TL.top; for (var k = 0; k < i; k++) y += rowH(TL.lanes[k]); return y; }
  function tlHeight() { return tlY(TL.lanes.length) + 6; }
  function drawTimeline() {
    if (!TL.lanes.length) return;
    var cv = document.getElementById("timeline");
    var c = setupCanvas(cv, tlHeight()), g = c.g, W = c.w, L = TL.left, PW = W - L - 8;
    TL.W = W;
    var v0 = TL.view0, v1 = TL.view1, span = v1 - v0;
    var X = function (t) { return L + (t - v0) / span * PW; };
    g.fillStyle = "#fff"; g.fillRect(0, 0, W, c.h);
    // time axis
    g.font = "11px system-ui, sans-serif"; g.textBaseline = "middle"; g.fillStyle = "#6b7280"; g.strokeStyle = "#eef0f3";
    var step = Math.pow(10, Math.floor(Math.log10(span / 6)));
    [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= 8) { step *= m; return true; } return false; });
    for (var t = Math.ceil(v0 / step) * step; t <= v1; t += step) {
      var x = Math.round(X(t)) + .5;
      g.beginPath(); g.moveTo(x, TL.top - 4); g.lineTo(x, c.h); g.stroke();
      g.fillText(t === 0 ? "0" : fmtUS(t), x + 3, 10);
    }
    var y = TL.top;
    TL.lanes.forEach(function (r) {
      if (r.header) {
        g.fillStyle = "#1d2330"; g.font = "600 12px system-ui, sans-serif";
        g.fillText(r.stage.name, 6, y + 9);
        g.strokeStyle = "#e3e6ec"; g.beginPath(); g.moveTo(0, y + .5); g.lineTo(W, y + .5); g.stroke();
        y += 18; return;
      }
      var s = r.stage, l = r.lane, h = rowH(r), bh = Math.max(2, h - 3);
      g.fillStyle = "#6b7280"; g.font = (h >= 12 ? 11 : 9) + "px system-ui, sans-serif";
      var label = l.other ? "other (" + l.workers + ")" : (l.worker || "(unnamed)");
      if (h >= 8) g.fillText(label, 16, y + h / 2);
      g.fillStyle = "#f7f8fa"; g.fillRect(L, y + 1, PW, bh);
      g.save(); g.beginPath(); g.rect(L, y, PW, h); g.clip();
      if (s.exact_omitted) {
        // Aggregated: one rectangle per bin, opaque as the worker was busy,
        // red as its attempts failed.
        var busy = l.busy_us_bins || [], starts = l.starts || [], fails = l.fails || [];
        var i0 = Math.max(0, Math.floor(v0 / s.bin_us)), i1 = Math.min(busy.length, Math.ceil(v1 / s.bin_us));
        for (var i = i0; i < i1; i++) {
          var b = busy[i] / s.bin_us; if (!(b > 0)) continue;
          var f = starts[i] ? (fails[i] || 0) / starts[i] : 0;
          var x0 = X(i * s.bin_us), x1 = X((i + 1) * s.bin_us);
          var per = l.other ? Math.max(1, l.workers) : 1;
          // Failures show at any load: a quick failing attempt keeps a
          // worker busy for little time.
          g.globalAlpha = Math.min(1, Math.max(.2 + .8 * b / per, f > 0 ? .4 + .6 * f : 0));
          g.fillStyle = f > 0 ? mix(C.succeeded, C.failed, Math.min(1, .3 + f)) : C.succeeded;
          g.fillRect(x0, y + 1, Math.max(1, x1 - x0 - .3), bh);
        }
        g.globalAlpha = 1;
      }
      // Over bins, the attempts kept one by one (the first ones) are drawn
      // only once a bin is wide enough to tell them apart.
      var ex = l.exact || [], exact = !s.exact_omitted || s.bin_us / span * PW >= 24;
      for (var j = 0; exact && j < ex.length; j++) {
        var a = ex[j];
        if (a[0] > v1 || a[0] + a[1] < v0) continue;
        var xa = X(a[0]), xb = X(a[0] + a[1]), tr = tracksOf(l);
        var th = bh / tr.n, ty = y + 1 + tr.of[j] * th;
        g.fillStyle = KINDS[a[2]] ? KINDS[a[2]].color : C.failed;
        g.fillRect(xa, ty, Math.max(1, xb - xa), Math.max(1, th - (tr.n > 1 ? .5 : 0)));
      }
      g.restore();
      y += h;
    });
    document.body.dataset.timeline = "drawn";
  }
  // tracksOf packs a lane's attempts into tracks so that none hides
  // another: a worker process holds several items at once when the pool
  // sends them ahead (process mode), and each track is a slot. Past
  // MAXTRACKS, attempts share the last track.
  var MAXTRACKS = 6;
  function tracksOf(l) {
    if (l._tracks) return l._tracks;
    var ex = l.exact || [], idx = ex.map(function (_, i) { return i; });
    idx.sort(function (i, j) { return ex[i][0] - ex[j][0]; });
    var ends = [], of = new Array(ex.length);
    idx.forEach(function (i) {
      var a = ex[i], k = 0;
      while (k < ends.length && ends[k] > a[0]) k++;
      if (k >= MAXTRACKS) k = MAXTRACKS - 1;
      ends[k] = Math.max(ends[k] || 0, a[0] + a[1]);
      of[i] = k;
    });
    l._tracks = { n: Math.max(1, ends.length), of: of };
    return l._tracks;
  }
  function mix(a, b, f) {
    function p(c) { c = c.replace("#", ""); return [0, 2, 4].map(function (i) { return parseInt(c.substr(i, 2), 16); }); }
    var x = p(a), z = p(b);
    return "rgb(" + x.map(function (v, i) { return Math.round(v + (z[i] - v) * f); }).join(",") + ")";
  }
  function laneAt(yy) {
    var y = TL.top;
    for (var i = 0; i < TL.lanes.length; i++) {
      var h = rowH(TL.lanes[i]);
      if (yy >= y && yy < y + h) { TL.hoverY = yy - y; return TL.lanes[i]; }
      y += h;
    }
    return null;
  }
  (function interact() {
    var cv = document.getElementById("timeline"), tip = document.getElementById("tip");
    if (!TL.lanes.length) return;
    function tAt(x) { var PW = TL.W - TL.left - 8; return TL.view0 + (x - TL.left) / PW * (TL.view1 - TL.view0); }
    function clampView() {
      var span = Math.max(TL.view1 - TL.view0, 10);
      if (span > runUS) span = runUS;
      if (TL.view0 < 0) TL.view0 = 0;
      TL.view1 = TL.view0 + span;
      if (TL.view1 > runUS) { TL.view1 = runUS; TL.view0 = runUS - span; }
    }
    cv.addEventListener("wheel", function (e) {
      e.preventDefault();
      var r = cv.getBoundingClientRect(), x = e.clientX - r.left;
      if (x < TL.left) return;
      var t = tAt(x), f = Math.exp(e.deltaY * 0.0015);
      TL.view0 = t - (t - TL.view0) * f; TL.view1 = t + (TL.view1 - t) * f;
      clampView(); drawTimeline();
    }, { passive: false });
    var drag = null;
    cv.addEventListener("mousedown", function (e) { drag = { x: e.clientX, v0: TL.view0, v1: TL.view1 }; cv.classList.add("dragging"); });
    window.addEventListener("mouseup", function () { drag = null; cv.classList.remove("dragging"); });
    cv.addEventListener("dblclick", function () { TL.view0 = TL.home0; TL.view1 = TL.home1; drawTimeline(); });
    cv.addEventListener("mouseleave", function () { tip.hidden = true; });
    cv.addEventListener("mousemove", function (e) {
      var r = cv.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
      if (drag) {
        var PW = TL.W - TL.left - 8, dt = (e.clientX - drag.x) / PW * (drag.v1 - drag.v0);
        TL.view0 = drag.v0 - dt; TL.view1 = drag.v1 - dt; clampView(); drawTimeline(); tip.hidden = true; return;
      }
      var row = laneAt(y);
      if (!row || row.header || x < TL.left) { tip.hidden = true; return; }
      var t = tAt(x), s = row.stage, l = row.lane, PWt = (TL.view1 - TL.view0) / (TL.W - TL.left - 8), best = null;
      // The attempt under the pointer: in its track when the lane has
      // several, the shortest when bars are thinner than a pixel.
      var tr = tracksOf(l), track = Math.floor((TL.hoverY - 1) / (Math.max(2, rowH(row) - 3) / tr.n));
      (l.exact || []).forEach(function (a, j) {
        if (tr.n > 1 && tr.of[j] !== track) return;
        if (t >= a[0] - 2 * PWt && t <= a[0] + a[1] + 2 * PWt && (!best || a[1] < best[1])) best = a;
      });
      var text;
      if (best) {
        text = s.name + " · " + l.worker + "\nitem #" + best[3] + " — " + (KINDS[best[2]] ? KINDS[best[2]].name : "?") +
          "\nstart " + fmtUS(best[0]) + ", took " + fmtUS(best[1]);
        var it = itemsByKey[s.name + "/" + best[3]];
        if (it) text += "\n" + it.item + (it.error ? "\n" + it.error : "");
      } else {
        var i = Math.floor(t / s.bin_us), busy = (l.busy_us_bins || [])[i] || 0;
        text = s.name + " · " + (l.other ? "other workers (" + l.workers + ")" : l.worker) + "\n" + fmtUS(i * s.bin_us) + " – " + fmtUS((i + 1) * s.bin_us) +
          ": " + fmtN((l.starts || [])[i] || 0) + " attempts started, " + fmtN((l.fails || [])[i] || 0) + " failed, busy " + Math.round(100 * busy / s.bin_us / (l.other ? Math.max(1, l.workers) : 1)) + "%" +
          "\nlane total: " + fmtN(l.attempts) + " attempts, " + fmtN(l.failed) + " failed, busy " + fmtUS(l.busy_us);
      }
      tip.textContent = text; tip.hidden = false;
      var tx = Math.min(x + 14, TL.W - 300), ty = y + 14;
      tip.style.left = Math.max(0, tx) + "px"; tip.style.top = ty + "px";
    });
    window.addEventListener("resize", function () { drawTimeline(); later.forEach(function (f) { f(); }); });
  })();

  // ---- Items ----
  var items = [], itemsByKey = {};
  (function collect() {
    if (ev) {
      items = ev.items.slice();
    } else {
      items = (rep.failures || []).map(function (f) {
        return { stage: f.stage, index: f.index, outcome: f.outcome, item: itemText(f.item), error: f.error, class: f.class, kept: "failure", n: f.attempts };
      });
    }
    // Failures first, then the slowest, then the sample: items that ran
    // attempts before those of sources and sinks, which say less.
    var rank = { failure: 0, slow: 1, sample: 2 };
    items.forEach(function (it, i) { it._order = i; });
    items.sort(function (a, b) {
      return (rank[a.kept] - rank[b.kept]) || ((b.attempts ? 1 : 0) - (a.attempts ? 1 : 0)) || (a._order - b._order);
    });
    items.forEach(function (it) { itemsByKey[it.stage + "/" + it.index] = it; });
    var fs = document.getElementById("f-stage"), fo = document.getElementById("f-outcome");
    (rep.stages || []).forEach(function (s) { fs.appendChild(el("option", { value: s.name, text: s.name })); });
    OUTCOMES.forEach(function (o) { fo.appendChild(el("option", { value: o, text: o })); });
    var note = document.getElementById("items-note"), total = 0;
    (rep.stages || []).forEach(function (s) { total += s.in; });
    if (ev) {
      var lim = ev.limits || {}, omitted = 0;
      ev.stages.forEach(function (s) { omitted += s.failures_omitted || 0; });
      note.textContent = "Kept " + fmtN(items.length) + " rows of " + fmtN(total) + " item outcomes: every failed item" +
        (omitted ? " up to " + fmtN(lim.failures) + " (" + fmtN(omitted) + " more failed items are counted above but not listed)" : "") +
        ", the slowest items of each stage and a random sample of up to " + fmtN(lim.sample) + " others per stage.";
    } else {
      note.textContent = "This report has no recorded events: the table lists the failed items of the JSON report" +
        (rep.failures_omitted ? " (" + fmtN(rep.failures_omitted) + " more were counted, not kept)" : "") + ".";
    }
  })();
  var page = 0, PAGE = 50, shown = [];
  function filterItems() {
    var q = document.getElementById("f-text").value.toLowerCase(), st = document.getElementById("f-stage").value, oc = document.getElementById("f-outcome").value;
    shown = items.filter(function (it) {
      if (st && it.stage !== st) return false;
      if (oc && it.outcome !== oc) return false;
      if (!q) return true;
      var hay = (it.item + " " + (it.error || "") + " " + (it.class || "") + " #" + it.index + " " + (it.attempts || []).map(function (a) { return a.worker; }).join(" ")).toLowerCase();
      return hay.indexOf(q) >= 0;
    });
    page = 0; drawItems();
  }
  function drawItems() {
    var tb = document.querySelector("#items tbody");
    tb.textContent = "";
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    if (page >= pages) page = pages - 1;
    shown.slice(page * PAGE, page * PAGE + PAGE).forEach(function (it) {
      var att = el("td");
      (it.attempts || []).forEach(function (a) {
        att.appendChild(el("div", { cls: "att" + (a.class ? " bad" : ""), text: a.worker + " · " + fmtLat(a.dur_us) + (a.class ? " · " + a.class : "") + (a.redelivered ? " · redelivered " + a.redelivered + "×" : "") }));
      });
      if (it.attempts_omitted) att.appendChild(el("div", { cls: "att", text: "+" + it.attempts_omitted + " more" }));
      if (!it.attempts && it.n) att.textContent = it.n + " attempt" + (it.n === 1 ? "" : "s");
      var took = it.attempts && it.attempts.length ? (function () { var a = it.attempts, z = a[a.length - 1]; return z.start_us + z.dur_us - a[0].start_us; })() : null;
      tb.appendChild(el("tr", null, [el("td", { text: it.stage }), el("td", { cls: "num", text: String(it.index) }),
        el("td", null, [el("span", { cls: "outcome " + it.outcome, text: it.outcome }), it.kept === "slow" ? el("div", { cls: "hint", text: "among the slowest" }) : null]),
        el("td", { cls: "item", text: it.item }), att, el("td", { cls: "num", text: took == null ? "" : fmtLat(took) }),
        el("td", { cls: "num", text: it.wait_us ? fmtUS(it.wait_us) : "" }), el("td", { cls: "err", text: (it.class ? "[" + it.class + "] " : "") + (it.error || "") })]));
    });
    document.getElementById("p-info").textContent = "page " + (page + 1) + " of " + pages;
    document.getElementById("f-count").textContent = fmtN(shown.length) + " of " + fmtN(items.length) + " rows";
    document.getElementById("p-prev").disabled = page === 0;
    document.getElementById("p-next").disabled = page >= pages - 1;
  }
  document.getElementById("f-text").addEventListener("input", filterItems);
  document.getElementById("f-stage").addEventListener("change", filterItems);
  document.getElementById("f-outcome").addEventListener("change", filterItems);
  document.getElementById("p-prev").addEventListener("click", function () { page--; drawItems(); });
  document.getElementById("p-next").addEventListener("click", function () { page++; drawItems(); });
  filterItems();

  later.forEach(function (f) { f(); });
  drawTimeline();
  window.flowRenderMS = performance.now() - t0;
  window.flowRenderedAt = performance.now();
  document.body.dataset.rendered = "true";
})();

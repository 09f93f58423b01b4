// The sluice status page: polls api/pipelines every second and draws each pipeline's figures and charts.
// Plain JavaScript and a canvas: no build step, nothing fetched from anywhere but this sluice.
"use strict";

(() => {
  const POLL_MS = 1000;
  const KEEP_MS = 5 * 60 * 1000; // how much history the charts keep
  const MIN_SPAN_MS = 60 * 1000; // the charts' narrowest time axis

  const main = document.getElementById("pipelines");
  const conn = document.getElementById("conn");
  const none = document.getElementById("none");
  const cards = new Map(); // pipeline id → card

  const num = new Intl.NumberFormat("en-US");
  const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // short renders a number with at most three significant digits and a k/M/G suffix.
  function short(x) {
    const a = Math.abs(x);
    for (const [d, s] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
      if (a >= d) return (x / d).toFixed(a >= 100 * d ? 0 : a >= 10 * d ? 1 : 2).replace(/\.?0+$/, "") + s;
    }
    if (a === 0 || a >= 100) return Math.round(x).toString();
    return x.toFixed(a >= 10 ? 1 : 2).replace(/\.?0+$/, "");
  }
  const rate = (r) => (r == null ? "—" : short(r) + "/s");

  function duration(s) {
    if (s == null || !isFinite(s)) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    const m = Math.floor(s / 60);
    const two = (a, ua, b, ub) => a + ua + (b > 0 ? " " + b + ub : "");
    if (m < 60) return two(m, "m", Math.floor(s % 60), "s");
    const h = Math.floor(m / 60);
    if (h < 48) return two(h, "h", m % 60, "m");
    return two(Math.floor(h / 24), "d", h % 24, "h");
  }

  function bytes(b) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b.toString() : b.toFixed(b >= 100 ? 0 : 1)) + " " + units[i];
  }

  function bufferText(b) {
    if (!b) return "—";
    const parts = num.format(b.entries) + " entries, " + bytes(b.bytes);
    return b.fraction == null ? parts : Math.round(b.fraction * 100) + "% (" + parts + ")";
  }

  function snapshotText(s) {
    if (s.estimated == null) return num.format(s.copied) + " documents";
    const pct = s.estimated > 0 ? " (" + Math.min(100, Math.floor(100 * s.copied / s.estimated)) + "%)" : "";
    return num.format(s.copied) + " of ~" + num.format(s.estimated) + pct;
  }

  function newCard(id) {
    const root = el("section", "pipeline");
    root.dataset.pipeline = id;
    const head = el("div", "head");
    const state = el("span", "state");
    const meta = el("span", "meta");
    head.append(el("h2", "id", id), state, meta);
    const stages = el("div", "stages");
    const figures = el("div", "figures");
    const positions = el("div", "positions");
    const error = el("pre", "error");
    error.hidden = true;
    const charts = el("div", "charts");
    const chart = (title, keys, cls) => {
      const box = el("div", "chart");
      const h = el("h3", null, title);
      const key = el("span", "key");
      for (const [k, label] of keys) key.append(el("i", k), label);
      h.append(key);
      const canvas = el("canvas", cls);
      box.append(h, canvas);
      charts.append(box);
      return canvas;
    };
    const throughput = chart("records/s", [["delivered", "delivered"], ["read", "read"]], "throughput");
    const lag = chart("source lag", [["lag", "seconds behind"]], "lag");
    root.append(head, stages, figures, positions, error, charts);
    return { root, state, meta, stages, figures, positions, error, throughput, lag, points: [] };
  }

  function figure(k, v) {
    const d = el("div");
    d.append(el("span", "k", k), el("span", "v", v));
    return d;
  }

  function update(card, p, serverNow) {
    card.state.textContent = p.state;
    card.state.className = "state " + p.state;
    let meta = p.guarantee;
    const since = p.since ? (Date.parse(serverNow) - Date.parse(p.since)) / 1000 : NaN;
    if (isFinite(since)) meta += " · " + p.state + " for " + duration(Math.max(0, since));
    if (p.lease) {
      // Several instances share the pipelines: say which one runs this one.
      if (p.lease.instance == null) meta += " · no instance holds it";
      else meta += " · on " + p.lease.instance + (p.lease.here ? " (here)" : "") +
        (p.lease.since ? " since " + new Date(p.lease.since).toLocaleTimeString() : "");
    }
    card.meta.textContent = meta;

    card.stages.replaceChildren();
    if (p.stages.length === 0) {
      card.stages.append(el("span", "role", finished(p.state) || p.state === "standby" ? "no stages running" : "stages not open"));
    }
    p.stages.forEach((s, i) => {
      if (i > 0) card.stages.append(el("span", "arrow", "→"));
      card.stages.append(el("span", "role", s.role + " "), s.plugin,
        el("span", "role", s.pid == null ? " (in sluice)" : " (pid " + s.pid + ")"));
    });

    const f = [
      figure("read", num.format(p.read) + " · " + rate(p.read_per_second)),
      figure("delivered", num.format(p.delivered) + " · " + rate(p.delivered_per_second)),
      figure("lag", duration(p.lag_seconds)),
      figure("buffer", bufferText(p.buffer)),
      figure("restarts", num.format(p.restarts)),
      figure("redelivered", num.format(p.redelivered)),
      figure("dead letters", num.format(p.dead_letters)),
    ];
    if (p.snapshot) f.push(figure("snapshot", snapshotText(p.snapshot)));
    card.figures.replaceChildren(...f);

    // Upstream stages in the order records flow.
    const order = (k) => ["source", "buffer"].indexOf(k) >>> 0;
    const pos = Object.keys(p.positions).sort((a, b) => order(a) - order(b) || a.localeCompare(b))
      .map((k) => k + " " + p.positions[k]);
    card.positions.textContent = pos.length ? "positions: " + pos.join(" · ") : "";
    card.error.hidden = !p.last_error;
    card.error.textContent = p.last_error ? "last error: " + p.last_error : "";

    const now = Date.now();
    card.points.push({ t: now, read: p.read_per_second, delivered: p.delivered_per_second, lag: p.lag_seconds });
    while (card.points.length && card.points[0].t < now - KEEP_MS) card.points.shift();
    draw(card);
  }

  function finished(state) { return state === "completed" || state === "stopped" || state === "failed"; }

  function draw(card) {
    chart(card.throughput, card.points, [
      { key: "delivered", color: cssVar("--delivered"), width: 2 },
      { key: "read", color: cssVar("--read"), width: 1.5, dash: [4, 3] },
    ], short, "waiting for rates…");
    chart(card.lag, card.points, [{ key: "lag", color: cssVar("--lag"), width: 2 }],
      (v) => duration(v), "the source reports no event times");
  }

  // chart draws series of points on canvas and records what it drew in the canvas's data attributes.
  function chart(canvas, points, series, label, empty) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    const pad = { l: 52, r: 8, t: 8, b: 18 };
    const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;

    let top = 0, known = 0;
    for (const p of points) for (const s of series) {
      const v = p[s.key];
      if (v != null) { top = Math.max(top, v); known++; }
    }
    const last = points.length ? points[points.length - 1] : null;
    const drawn = { points: points.length, known, last: {} };
    for (const s of series) drawn.last[s.key] = last ? last[s.key] : null;
    canvas.dataset.drawn = JSON.stringify(drawn);

    ctx.strokeStyle = cssVar("--line");
    ctx.fillStyle = cssVar("--muted");
    ctx.lineWidth = 1;
    ctx.setLineDash([]);
    if (known === 0) {
      ctx.strokeRect(pad.l + 0.5, pad.t + 0.5, pw, ph);
      ctx.textAlign = "center";
      ctx.fillText(empty, pad.l + pw / 2, pad.t + ph / 2);
      return;
    }
    const ymax = nice(top * 1.1);
    const t1 = last.t;
    const span = Math.min(KEEP_MS, Math.max(MIN_SPAN_MS, t1 - points[0].t));
    const x = (t) => pad.l + pw * (1 - (t1 - t) / span);
    const y = (v) => pad.t + ph * (1 - v / ymax);

    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const f of [0, 0.5, 1]) {
      const yy = Math.round(y(ymax * f)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(pad.l, yy);
      ctx.lineTo(pad.l + pw, yy);
      ctx.stroke();
      ctx.fillText(label(ymax * f), pad.l - 6, yy);
    }
    ctx.textBaseline = "top";
    ctx.textAlign = "left";
    ctx.fillText("−" + duration(span / 1000), pad.l, pad.t + ph + 4);
    ctx.textAlign = "right";
    ctx.fillText("now", pad.l + pw, pad.t + ph + 4);

    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = s.width;
      ctx.setLineDash(s.dash || []);
      ctx.beginPath();
      let on = false;
      for (const p of points) {
        const v = p[s.key];
        if (v == null) { on = false; continue; }
        if (on) ctx.lineTo(x(p.t), y(v)); else ctx.moveTo(x(p.t), y(v));
        on = true;
      }
      ctx.stroke();
    }
  }

  // nice rounds v up to 1, 2 or 5 times a power of ten.
  function nice(v) {
    if (!(v > 0)) return 1;
    const e = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * e) return m * e;
    return 10 * e;
  }

  function render(list) {
    document.getElementById("window").textContent = String(list.rate_window_seconds);
    const seen = new Set();
    for (const p of list.pipelines) {
      seen.add(p.id);
      let card = cards.get(p.id);
      if (!card) {
        card = newCard(p.id);
        cards.set(p.id, card);
        main.append(card.root);
      }
      update(card, p, list.time);
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) { card.root.remove(); cards.delete(id); }
    }
    none.hidden = list.pipelines.length > 0;
  }

  async function poll() {
    try {
      const r = await fetch("api/pipelines", { cache: "no-store" });
      if (!r.ok) throw new Error(r.status + " " + r.statusText);
      render(await r.json());
      conn.textContent = "live · " + new Date().toLocaleTimeString();
      conn.classList.remove("down");
    } catch (e) {
      conn.textContent = "sluice is not answering (" + e.message + "); retrying";
      conn.classList.add("down");
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  window.addEventListener("resize", () => { for (const c of cards.values()) draw(c); });
  poll();
})();

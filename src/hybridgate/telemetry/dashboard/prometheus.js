// Prometheus text format and histogram arithmetic for the hybridgate dashboard: pure functions,
// no DOM, no state. Loaded before dashboard.js, which takes them from window.hybridgatePrometheus.
"use strict";

window.hybridgatePrometheus = (function () {
  function parseValue(text) {
    if (text === "+Inf" || text === "Inf") return Infinity;
    if (text === "-Inf") return -Infinity;
    if (text === "NaN") return NaN;
    return Number(text);
  }

  function parseLabels(line, start) {
    // line[start] === "{"; returns [labels, index after "}"]
    const labels = {};
    let i = start + 1;
    while (i < line.length) {
      while (line[i] === " " || line[i] === ",") i++;
      if (line[i] === "}") return [labels, i + 1];
      const eq = line.indexOf("=", i);
      if (eq < 0) throw new Error("label without value");
      const name = line.slice(i, eq).trim();
      i = eq + 1;
      if (line[i] !== '"') throw new Error("label value not quoted");
      i++;
      let value = "";
      while (i < line.length && line[i] !== '"') {
        if (line[i] === "\\") {
          const next = line[i + 1];
          value += next === "n" ? "\n" : next;
          i += 2;
        } else {
          value += line[i++];
        }
      }
      labels[name] = value;
      i++; // closing quote
    }
    throw new Error("unterminated label set");
  }

  // {samples: Map(sample name -> [{labels, value}]), types: Map(family -> type)}
  function parsePrometheus(text) {
    const samples = new Map();
    const types = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line) continue;
      if (line[0] === "#") {
        const m = /^#\s+TYPE\s+(\S+)\s+(\S+)/.exec(line);
        if (m) types.set(m[1], m[2]);
        continue;
      }
      let i = 0;
      while (i < line.length && line[i] !== "{" && line[i] !== " ") i++;
      const name = line.slice(0, i);
      let labels = {};
      if (line[i] === "{") [labels, i] = parseLabels(line, i);
      const value = parseValue(line.slice(i).trim().split(/\s+/)[0]);
      if (!samples.has(name)) samples.set(name, []);
      samples.get(name).push({ labels, value });
    }
    return { samples, types };
  }

  // Prometheus' histogram_quantile over [{le, count}] (cumulative counts, sorted by le).
  function histogramQuantile(q, buckets) {
    if (buckets.length < 2 || buckets[buckets.length - 1].le !== Infinity) return NaN;
    const total = buckets[buckets.length - 1].count;
    if (!(total > 0)) return NaN;
    let rank = q * total;
    let b = buckets.findIndex((x) => x.count >= rank);
    if (b === buckets.length - 1) return buckets[buckets.length - 2].le;
    if (b === 0 && buckets[0].le <= 0) return buckets[0].le;
    const start = b === 0 ? 0 : buckets[b - 1].le;
    const below = b === 0 ? 0 : buckets[b - 1].count;
    const inBucket = buckets[b].count - below;
    rank -= below;
    return start + (buckets[b].le - start) * (inBucket > 0 ? rank / inBucket : 0);
  }

  // The share of observations above `threshold`, interpolated inside its bucket like
  // histogram_quantile; beyond the highest finite bucket everything counts as above.
  function fractionAbove(threshold, buckets) {
    if (buckets.length < 2) return NaN;
    const total = buckets[buckets.length - 1].count;
    if (!(total > 0)) return NaN;
    let atMost = buckets[buckets.length - 2].count;
    const b = buckets.findIndex((x) => x.le >= threshold);
    if (b >= 0 && b < buckets.length - 1) {
      const start = b === 0 ? 0 : buckets[b - 1].le;
      const below = b === 0 ? 0 : buckets[b - 1].count;
      atMost = below + (buckets[b].count - below) * ((threshold - start) / (buckets[b].le - start));
    }
    return Math.max(0, 1 - atMost / total);
  }

  // ------------------------------------------------------------------ reading a scrape

  function series(scrape, name) {
    return (scrape && scrape.samples.get(name)) || [];
  }

  function total(scrape, name, match) {
    let sum = 0;
    for (const s of series(scrape, name)) if (!match || match(s.labels)) sum += s.value;
    return sum;
  }

  // Growth of a counter between two scrapes; a restart (the counter went down) counts from 0.
  function growth(newer, older, name, match) {
    const now = total(newer, name, match);
    const before = older ? total(older, name, match) : 0;
    return now >= before ? now - before : now;
  }

  function bucketsOf(scrape, family, cls) {
    const byLe = new Map();
    for (const s of series(scrape, family + "_bucket")) {
      if (s.labels.class !== cls) continue;
      const le = parseValue(s.labels.le);
      byLe.set(le, (byLe.get(le) || 0) + s.value);
    }
    return byLe;
  }

  function windowBuckets(newer, older, family, cls) {
    const now = bucketsOf(newer, family, cls);
    const before = older ? bucketsOf(older, family, cls) : new Map();
    const restarted = [...now].some(([le, c]) => c < (before.get(le) || 0));
    return [...now]
      .map(([le, c]) => ({ le, count: restarted ? c : c - (before.get(le) || 0) }))
      .sort((a, b) => a.le - b.le);
  }

  function histogramFamilies(scrape) {
    const out = [];
    for (const [family, type] of scrape.types) if (type === "histogram") out.push(family);
    return out;
  }

  return {
    parseValue,
    parsePrometheus,
    histogramQuantile,
    fractionAbove,
    series,
    total,
    growth,
    bucketsOf,
    windowBuckets,
    histogramFamilies,
  };
})();

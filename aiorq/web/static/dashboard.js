/* aiorq dashboard: live counts, executions and the throughput chart (no dependencies, no build).
 * The HTML it swaps in is rendered and escaped by the server (the same templates as the page);
 * everything it builds itself is set with textContent, never as markup. */
(function () {
  'use strict';
  var SVG = 'http://www.w3.org/2000/svg';
  var body = document.body;
  var base = body.getAttribute('data-base') || '';
  var live = body.getAttribute('data-live');
  var interval = (parseFloat(body.getAttribute('data-interval')) || 2) * 1000;
  var throughput = null;

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function series(data, queue) {
    var finished = [], failed = [], i;
    for (i = 0; i < data.minutes; i++) { finished.push(0); failed.push(0); }
    Object.keys(data.series).forEach(function (name) {
      if (queue && name !== queue) { return; }
      for (i = 0; i < data.minutes; i++) {
        finished[i] += data.series[name].finished[i] || 0;
        failed[i] += data.series[name].failed[i] || 0;
      }
    });
    return {finished: finished, failed: failed};
  }

  function clock(minute) {
    var d = new Date(minute * 60000);
    return ('0' + d.getHours()).slice(-2) + ':' + ('0' + d.getMinutes()).slice(-2);
  }

  function drawChart() {
    var box = document.getElementById('chart');
    if (!box || !throughput) { return; }
    var select = document.getElementById('chart-queue');
    var queue = select ? select.value : '';
    if (!Object.keys(throughput.series).length) {
      box.textContent = '';
      var p = document.createElement('p');
      p.className = 'empty';
      p.textContent = 'No history: aiorq workers record it (stock rq workers do not).';
      box.appendChild(p);
      return;
    }
    var s = series(throughput, queue), n = throughput.minutes;
    var top = 1, i;
    for (i = 0; i < n; i++) { top = Math.max(top, s.finished[i] + s.failed[i]); }
    var width = 720, height = 180, left = 40, bottom = 20, step = (width - left) / n;
    var svg = el('svg', {viewBox: '0 0 ' + width + ' ' + (height + bottom), 'class': 'chart-svg'});
    svg.appendChild(el('text', {x: 0, y: 12, 'class': 'axis'}, String(top)));
    svg.appendChild(el('text', {x: 0, y: height, 'class': 'axis'}, '0'));
    svg.appendChild(el('line', {x1: left, y1: height, x2: width, y2: height, 'class': 'axis-line'}));
    for (i = 0; i < n; i++) {
      var ok = s.finished[i], bad = s.failed[i], x = left + i * step;
      var hOk = height * ok / top, hBad = height * bad / top;
      var g = el('g', {'class': 'minute'});
      g.appendChild(el('title', {}, clock(throughput.first_minute + i) + ': ' + ok + ' finished, ' + bad + ' failed'));
      if (ok) { g.appendChild(el('rect', {x: x, y: height - hOk, width: step * 0.8, height: hOk, 'class': 'bar-finished'})); }
      if (bad) { g.appendChild(el('rect', {x: x, y: height - hOk - hBad, width: step * 0.8, height: hBad, 'class': 'bar-failed'})); }
      svg.appendChild(g);
    }
    svg.appendChild(el('text', {x: left, y: height + bottom - 4, 'class': 'axis'}, clock(throughput.first_minute)));
    svg.appendChild(el('text', {x: width - 40, y: height + bottom - 4, 'class': 'axis'}, clock(throughput.first_minute + n - 1)));
    box.textContent = '';
    box.appendChild(svg);
    box.setAttribute('data-drawn', 'yes');
  }

  function updateOptions() {
    var select = document.getElementById('chart-queue');
    if (!select || !throughput) { return; }
    var have = {};
    Array.prototype.forEach.call(select.options, function (o) { have[o.value] = true; });
    Object.keys(throughput.series).forEach(function (name) {
      if (!have[name]) {
        var option = document.createElement('option');
        option.value = name;
        option.textContent = name;
        select.appendChild(option);
      }
    });
  }

  function apply(data) {
    Object.keys(data.html || {}).forEach(function (id) {
      var node = document.getElementById(id);
      if (node) { node.innerHTML = data.html[id]; }  // server-rendered, escaped
    });
    document.querySelectorAll('[data-count-queue]').forEach(function (node) {
      var counts = data.counts[node.getAttribute('data-count-queue')];
      if (counts) { node.textContent = String(counts[node.getAttribute('data-count-kind')]); }
    });
    throughput = data.throughput;
    updateOptions();
    drawChart();
  }

  function poll() {
    var status = document.getElementById('live-status');
    fetch(base + '/api/live', {credentials: 'same-origin', headers: {Accept: 'application/json'}})
      .then(function (r) { if (!r.ok) { throw new Error('HTTP ' + r.status); } return r.json(); })
      .then(function (data) {
        apply(data);
        if (status) { status.textContent = 'live, updated ' + new Date().toLocaleTimeString(); }
      })
      .catch(function (e) { if (status) { status.textContent = 'not updating: ' + e.message; } })
      .then(function () { setTimeout(poll, interval); });
  }

  var initial = document.getElementById('throughput-data');
  if (initial) {
    throughput = JSON.parse(initial.textContent);
    drawChart();
  }
  var select = document.getElementById('chart-queue');
  if (select) { select.addEventListener('change', drawChart); }
  if (live) { setTimeout(poll, interval); }
}());

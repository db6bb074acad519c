// onnxscope report tables: sortable, filterable, paginated; the data is a gzip'd JSON block in the page.
// No network, no eval: the page's Content-Security-Policy allows this script by its hash and nothing else.
(function () {
  "use strict";

  var NUMERIC = { int: 1, num: 1, bytes: 1, pct: 1 };

  function formatCell(v, type) {
    if (v === null || v === undefined || v === "") return "";
    if (type === "int") return Number(v).toLocaleString("en-US");
    if (type === "num") {
      var x = Number(v);
      if (Math.abs(x) >= 1e307) return x > 0 ? "inf" : "-inf";
      if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(3);
      return String(Number(x.toPrecision(4)));
    }
    if (type === "pct") return (100 * Number(v)).toFixed(1) + " %";
    if (type === "bytes") {
      var n = Number(v), units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
      while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
      return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
    }
    if (type === "bool") return v ? "yes" : "no";
    return String(v);
  }

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function parseFilter(text, columns) {
    var tests = [];
    text.trim().split(/\s+/).forEach(function (tok) {
      if (!tok) return;
      var m = /^([A-Za-z_][\w ]*?)(>=|<=|!=|=|>|<|:)(.*)$/.exec(tok);
      var col = -1;
      if (m) {
        var key = m[1].toLowerCase();
        col = columns.findIndex(function (c) { return c.key.toLowerCase() === key || c.label.toLowerCase() === key; });
      }
      if (m && col >= 0) {
        var op = m[2], arg = m[3].toLowerCase(), num = Number(m[3]);
        tests.push(function (row) {
          var v = row[col];
          if (op === ":") return v !== null && String(v).toLowerCase().indexOf(arg) >= 0;
          if (v === null || v === undefined || isNaN(num)) return false;
          v = Number(v);
          return op === ">" ? v > num : op === "<" ? v < num : op === ">=" ? v >= num : op === "<=" ? v <= num :
            op === "=" ? v === num : v !== num;
        });
      } else {
        var needle = tok.toLowerCase();
        tests.push(function (row) {
          for (var i = 0; i < row.length; i++) {
            if (row[i] !== null && typeof row[i] === "string" && row[i].toLowerCase().indexOf(needle) >= 0) return true;
          }
          return false;
        });
      }
    });
    return tests;
  }

  function Table(host, spec) {
    this.host = host;
    this.columns = spec.columns;
    this.all = spec.rows;
    this.rows = spec.rows;
    this.pageSize = spec.page || 25;
    this.page = 0;
    this.sortCol = -1;
    this.sortDir = 1;
    this.build();
    if (spec.sort) {
      var i = this.columns.findIndex(function (c) { return c.key === spec.sort[0]; });
      if (i >= 0) this.sortBy(i, spec.sort[1] || 1);
    }
    this.render();
  }

  Table.prototype.build = function () {
    var self = this;
    var bar = el("div", { class: "tbar" });
    this.filter = el("input", { type: "search", placeholder: "filter: text, column:text, column>number", "aria-label": "filter rows" });
    this.filter.addEventListener("input", function () { self.applyFilter(); });
    this.count = el("span", { class: "tcount" });
    this.prev = el("button", { type: "button", class: "prev" }, "‹ prev");
    this.next = el("button", { type: "button", class: "next" }, "next ›");
    this.where = el("span", { class: "tpage" });
    this.size = el("select", { "aria-label": "rows per page" });
    [10, 25, 100, 500].forEach(function (n) {
      var o = el("option", { value: String(n) }, n + " / page");
      if (n === self.pageSize) o.selected = true;
      self.size.appendChild(o);
    });
    this.prev.addEventListener("click", function () { self.page = Math.max(0, self.page - 1); self.render(); });
    this.next.addEventListener("click", function () { self.page = Math.min(self.pages() - 1, self.page + 1); self.render(); });
    this.size.addEventListener("change", function () { self.pageSize = Number(self.size.value); self.page = 0; self.render(); });
    [this.filter, this.count, this.prev, this.where, this.next, this.size].forEach(function (e) { bar.appendChild(e); });
    var wrap = el("div", { class: "twrap" });
    this.table = el("table", { class: "data" });
    var thead = el("thead"), tr = el("tr");
    this.ths = this.columns.map(function (c, i) {
      var th = el("th", { scope: "col", "data-key": c.key, "aria-sort": "none", title: c.title || ("sort by " + c.label) });
      var b = el("button", { type: "button" }, c.label);
      b.addEventListener("click", function () {
        self.sortBy(i, self.sortCol === i ? -self.sortDir : (NUMERIC[c.type] ? -1 : 1));
        self.page = 0;
        self.render();
      });
      th.appendChild(b);
      if (NUMERIC[c.type]) th.classList.add("n");
      tr.appendChild(th);
      return th;
    });
    thead.appendChild(tr);
    this.tbody = el("tbody");
    this.table.appendChild(thead);
    this.table.appendChild(this.tbody);
    wrap.appendChild(this.table);
    this.host.textContent = "";
    this.host.appendChild(bar);
    this.host.appendChild(wrap);
  };

  Table.prototype.pages = function () { return Math.max(1, Math.ceil(this.rows.length / this.pageSize)); };

  Table.prototype.sortBy = function (i, dir) {
    var type = this.columns[i].type;
    this.sortCol = i;
    this.sortDir = dir;
    var cmp = NUMERIC[type] ?
      function (a, b) { return Number(a) - Number(b); } :
      function (a, b) { return String(a).localeCompare(String(b), "en", { numeric: true }); };
    var order = function (ra, rb) {
      var a = ra[i], b = rb[i];
      var na = a === null || a === undefined || a === "", nb = b === null || b === undefined || b === "";
      if (na || nb) return na === nb ? 0 : (na ? 1 : -1);  // empty cells last either way
      return dir * cmp(a, b);
    };
    this.all = this.all.slice().sort(order);
    this.rows = this.rows.slice().sort(order);
    this.ths.forEach(function (th, k) {
      th.setAttribute("aria-sort", k === i ? (dir > 0 ? "ascending" : "descending") : "none");
    });
  };

  Table.prototype.applyFilter = function () {
    var tests = parseFilter(this.filter.value, this.columns);
    this.rows = tests.length ? this.all.filter(function (r) { return tests.every(function (t) { return t(r); }); }) : this.all;
    this.page = 0;
    this.render();
  };

  Table.prototype.render = function () {
    var self = this, start = this.page * this.pageSize;
    var body = el("tbody");
    this.rows.slice(start, start + this.pageSize).forEach(function (row) {
      var tr = el("tr");
      self.columns.forEach(function (c, i) {
        var text = formatCell(row[i], c.type);
        var td = el("td", null, text);
        if (NUMERIC[c.type]) td.className = "n";
        if (c.type === "str" && text.length > 48) td.title = text;
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    this.table.replaceChild(body, this.tbody);
    this.tbody = body;
    var total = this.all.length, shown = this.rows.length;
    this.count.textContent = (shown === total ? total.toLocaleString("en-US") : shown.toLocaleString("en-US") + " of " + total.toLocaleString("en-US")) + " rows";
    this.where.textContent = "page " + (this.page + 1) + " / " + this.pages();
    this.prev.disabled = this.page === 0;
    this.next.disabled = this.page >= this.pages() - 1;
  };

  function load() {
    var block = document.getElementById("onnxscope-data");
    var raw = atob(block.textContent.trim());
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).text().then(JSON.parse);
  }

  function start() {
    var hosts = document.querySelectorAll("[data-table]");
    load().then(function (data) {
      hosts.forEach(function (host) {
        var spec = data.tables[host.getAttribute("data-table")];
        if (spec) host.onnxscopeTable = new Table(host, spec);
      });
      document.body.setAttribute("data-ready", "1");
    }).catch(function (err) {
      hosts.forEach(function (host) {
        host.textContent = "This browser cannot unpack the tables (" + err + "); a current Chrome, Firefox, Safari or Edge can.";
      });
      document.body.setAttribute("data-ready", "error");
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();

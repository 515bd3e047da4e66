/* screener table sorter: click a header of a <table class="sortable"> to sort by that column (again to reverse).
 * Cells may carry data-sort="<number or text>" (used instead of their text); empty values sort last.
 * Part of screener (same licence); no dependencies, no network access.
 */
(function () {
  "use strict";

  function key(cell) {
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    var num = parseFloat(raw);
    if (raw === "" || raw === "-" || raw === "n/a") return { empty: true };
    return isNaN(num) || !/^[-+]?[0-9.eE+-]+$/.test(raw) ? { text: raw.toLowerCase() } : { num: num };
  }

  function compare(a, b) {
    if (a.empty || b.empty) return a.empty === b.empty ? 0 : a.empty ? 1 : -1;
    if (a.num !== undefined && b.num !== undefined) return a.num - b.num;
    var x = a.num !== undefined ? String(a.num) : a.text, y = b.num !== undefined ? String(b.num) : b.text;
    return x < y ? -1 : x > y ? 1 : 0;
  }

  function sortBy(table, index, th) {
    var body = table.tBodies[0];
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, key: key(row.cells[index]), i: i };
    });
    rows.sort(function (a, b) {
      var c = compare(a.key, b.key);
      if (a.key.empty || b.key.empty) return c || a.i - b.i;  // empty cells stay last in both directions
      return dir * c || a.i - b.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }

  function init() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      if (!table.tHead || !table.tBodies.length || table.hasAttribute("data-sortable-ready")) return;
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
        th.setAttribute("role", "button");
        th.setAttribute("tabindex", "0");
        th.title = "sort by this column";
        th.addEventListener("click", function () { sortBy(table, index, th); });
        th.addEventListener("keydown", function (e) {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, index, th); }
        });
      });
      table.setAttribute("data-sortable-ready", "true");
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

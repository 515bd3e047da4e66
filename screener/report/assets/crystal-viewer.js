/* screener crystal viewer: a small, dependency-free Canvas 2D viewer for periodic structures.
 *
 * Each <div class="crystal-viewer" data-structure='{"lattice": [[...]], "atoms": [{"el", "xyz"}], "elements":
 * {"Li": {"color", "radius"}}}'> gets a canvas with shaded atoms, bonds and the unit cell. Drag to rotate, wheel
 * to zoom, double-click to reset. After the first frame is drawn the div carries data-rendered="true" and
 * data-atoms-drawn="N" (used by the headless-browser check). Part of screener (same licence); no network access.
 */
(function () {
  "use strict";

  function matMul(a, b) {
    var out = [[0, 0, 0], [0, 0, 0], [0, 0, 0]];
    for (var i = 0; i < 3; i++) for (var j = 0; j < 3; j++) for (var k = 0; k < 3; k++) out[i][j] += a[i][k] * b[k][j];
    return out;
  }
  function rotX(t) { var c = Math.cos(t), s = Math.sin(t); return [[1, 0, 0], [0, c, -s], [0, s, c]]; }
  function rotY(t) { var c = Math.cos(t), s = Math.sin(t); return [[c, 0, s], [0, 1, 0], [-s, 0, c]]; }
  function apply(m, v) {
    return [m[0][0] * v[0] + m[0][1] * v[1] + m[0][2] * v[2],
            m[1][0] * v[0] + m[1][1] * v[1] + m[1][2] * v[2],
            m[2][0] * v[0] + m[2][1] * v[1] + m[2][2] * v[2]];
  }
  function shade(hex, f) {
    var n = parseInt(hex.slice(1), 16), r = (n >> 16) & 255, g = (n >> 8) & 255, b = n & 255;
    function mix(c) { return Math.round(f >= 0 ? c + (255 - c) * f : c * (1 + f)); }
    return "rgb(" + mix(r) + "," + mix(g) + "," + mix(b) + ")";
  }

  function Viewer(container, data) {
    this.container = container;
    this.data = data;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "crystal-viewer-canvas";
    container.appendChild(this.canvas);
    this.legend = document.createElement("div");
    this.legend.className = "crystal-viewer-legend";
    container.appendChild(this.legend);
    this.prepare();
    this.reset();
    this.bind();
    this.renderLegend();
  }

  Viewer.prototype.prepare = function () {
    var L = this.data.lattice, i, j, k;
    var corners = [];
    for (i = 0; i < 2; i++) for (j = 0; j < 2; j++) for (k = 0; k < 2; k++)
      corners.push([i * L[0][0] + j * L[1][0] + k * L[2][0], i * L[0][1] + j * L[1][1] + k * L[2][1],
                    i * L[0][2] + j * L[1][2] + k * L[2][2]]);
    this.center = [0, 1, 2].map(function (d) {
      return corners.reduce(function (s, c) { return s + c[d]; }, 0) / 8;
    });
    var idx = function (i, j, k) { return i * 4 + j * 2 + k; };
    this.edges = [];
    for (i = 0; i < 2; i++) for (j = 0; j < 2; j++) {
      this.edges.push([idx(0, i, j), idx(1, i, j)], [idx(i, 0, j), idx(i, 1, j)], [idx(i, j, 0), idx(i, j, 1)]);
    }
    this.corners = corners;
    var atoms = this.data.atoms, els = this.data.elements;
    this.bonds = [];
    if (atoms.length <= 400) {
      for (i = 0; i < atoms.length; i++) for (j = i + 1; j < atoms.length; j++) {
        var a = atoms[i].xyz, b = atoms[j].xyz;
        var d = Math.hypot(a[0] - b[0], a[1] - b[1], a[2] - b[2]);
        var cut = 1.15 * (els[atoms[i].el].radius + els[atoms[j].el].radius);
        if (d > 0.4 && d < cut) this.bonds.push([i, j]);
      }
    }
    this.extent = Math.max.apply(null, corners.map(function (c) {
      return Math.hypot(c[0] - this.center[0], c[1] - this.center[1], c[2] - this.center[2]);
    }, this)) + 1.0;
  };

  Viewer.prototype.reset = function () {
    this.rotation = matMul(rotX(-0.35), rotY(0.55));
    this.zoom = 1.0;
    this.draw();
  };

  Viewer.prototype.bind = function () {
    var self = this, last = null;
    this.canvas.addEventListener("pointerdown", function (e) {
      last = [e.clientX, e.clientY];
      self.canvas.setPointerCapture(e.pointerId);
    });
    this.canvas.addEventListener("pointermove", function (e) {
      if (!last) return;
      var dx = e.clientX - last[0], dy = e.clientY - last[1];
      last = [e.clientX, e.clientY];
      self.rotation = matMul(matMul(rotY(dx * 0.01), rotX(dy * 0.01)), self.rotation);
      self.draw();
    });
    this.canvas.addEventListener("pointerup", function () { last = null; });
    this.canvas.addEventListener("wheel", function (e) {
      e.preventDefault();
      self.zoom = Math.min(6, Math.max(0.3, self.zoom * (e.deltaY < 0 ? 1.1 : 1 / 1.1)));
      self.draw();
    }, { passive: false });
    this.canvas.addEventListener("dblclick", function () { self.reset(); });
    if (window.ResizeObserver) new ResizeObserver(function () { self.draw(); }).observe(this.container);
  };

  Viewer.prototype.renderLegend = function () {
    var els = this.data.elements, self = this;
    Object.keys(els).forEach(function (el) {
      var item = document.createElement("span");
      var dot = document.createElement("i");
      dot.style.background = els[el].color;
      item.appendChild(dot);
      item.appendChild(document.createTextNode(el));
      self.legend.appendChild(item);
    });
  };

  Viewer.prototype.draw = function () {
    var canvas = this.canvas, ratio = window.devicePixelRatio || 1;
    var w = Math.max(50, canvas.clientWidth || this.container.clientWidth || 400);
    var h = Math.max(50, canvas.clientHeight || 320);
    if (canvas.width !== Math.round(w * ratio) || canvas.height !== Math.round(h * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, w, h);
    var scale = this.zoom * 0.45 * Math.min(w, h) / this.extent, rot = this.rotation, c0 = this.center;
    var project = function (p) {
      var q = apply(rot, [p[0] - c0[0], p[1] - c0[1], p[2] - c0[2]]);
      return [w / 2 + scale * q[0], h / 2 - scale * q[1], q[2]];
    };
    var corners = this.corners.map(project);
    ctx.strokeStyle = "#555";
    ctx.lineWidth = 1;
    ctx.beginPath();
    this.edges.forEach(function (e) {
      ctx.moveTo(corners[e[0]][0], corners[e[0]][1]);
      ctx.lineTo(corners[e[1]][0], corners[e[1]][1]);
    });
    ctx.stroke();
    var atoms = this.data.atoms, els = this.data.elements;
    var pts = atoms.map(function (a) { return project(a.xyz); });
    ctx.strokeStyle = "#999";
    ctx.lineWidth = Math.max(1, scale * 0.12);
    ctx.beginPath();
    this.bonds.forEach(function (b) {
      ctx.moveTo(pts[b[0]][0], pts[b[0]][1]);
      ctx.lineTo(pts[b[1]][0], pts[b[1]][1]);
    });
    ctx.stroke();
    var order = pts.map(function (p, i) { return i; }).sort(function (i, j) { return pts[i][2] - pts[j][2]; });
    order.forEach(function (i) {
      var p = pts[i], el = els[atoms[i].el], r = Math.max(2, 0.45 * el.radius * scale);
      var g = ctx.createRadialGradient(p[0] - r / 3, p[1] - r / 3, r / 8, p[0], p[1], r);
      g.addColorStop(0, shade(el.color, 0.6));
      g.addColorStop(1, shade(el.color, -0.35));
      ctx.beginPath();
      ctx.arc(p[0], p[1], r, 0, 2 * Math.PI);
      ctx.fillStyle = g;
      ctx.fill();
      ctx.strokeStyle = "rgba(0,0,0,0.35)";
      ctx.lineWidth = 0.6;
      ctx.stroke();
    });
    this.container.setAttribute("data-atoms-drawn", String(atoms.length));
    this.container.setAttribute("data-rendered", "true");
  };

  function init() {
    var nodes = document.querySelectorAll(".crystal-viewer:not([data-rendered])");
    Array.prototype.forEach.call(nodes, function (node) {
      try {
        new Viewer(node, JSON.parse(node.getAttribute("data-structure")));
      } catch (err) {
        node.setAttribute("data-rendered", "error");
        node.textContent = "The structure could not be drawn: " + err.message;
        console.error("crystal viewer:", err);
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

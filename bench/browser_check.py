"""Check a built campaign report in a real headless Chromium (DevTools protocol, no extra Python packages).

Serves the site on 127.0.0.1, loads every page in Chromium with all other hosts unresolvable, and fails when a page
logs a console error or throws, a request fails or leaves 127.0.0.1, a structure viewer did not draw (its
``data-rendered`` attribute and non-blank canvas pixels are checked), or the candidate table does not sort.
Full-page screenshots of the overview, the table and the first candidate page are saved.

Usage::

    .venv/bin/python bench/browser_check.py                       # builds the synthetic test campaign's report
    .venv/bin/python bench/browser_check.py --campaign CAMPAIGN   # builds that campaign's report first
    .venv/bin/python bench/browser_check.py --site REPORT/site    # checks an already built site

Chromium: Debian's ``chromium`` (``apt-get install -y chromium chromium-driver``) or ``--chromium PATH``.
The last line of the output is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
from _hardware import cpu_model as _cpu_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--window-size=1280,1600", "--hide-scrollbars",
]

# What the page reports after loading: viewer states with a count of non-white canvas pixels, table state.
PAGE_STATE_JS = r"""
(() => {
  const viewers = Array.from(document.querySelectorAll('.crystal-viewer')).map(v => {
    const c = v.querySelector('canvas');
    let ink = 0, total = 0;
    if (c && c.width && c.height) {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      total = c.width * c.height;
      for (let i = 0; i < d.length; i += 4) if (d[i] < 235 || d[i + 1] < 235 || d[i + 2] < 235) ink++;
    }
    return {rendered: v.getAttribute('data-rendered'), atoms: Number(v.getAttribute('data-atoms-drawn') || 0),
            ink_fraction: total ? ink / total : 0};
  });
  const tables = Array.from(document.querySelectorAll('table.sortable')).map(
    t => t.getAttribute('data-sortable-ready'));
  const images = Array.from(document.images).map(
    i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  return JSON.stringify({viewers, tables, images, title: document.title});
})()
"""

SORT_JS = r"""
(() => {
  const t = document.querySelector('#candidates-table');
  const th = t.tHead.rows[0].cells[%d];
  th.click();
  const asc = Array.from(t.tBodies[0].rows).map(r => r.cells[%d].getAttribute('data-sort'));
  th.click();
  const desc = Array.from(t.tBodies[0].rows).map(r => r.cells[%d].getAttribute('data-sort'));
  return JSON.stringify({asc, desc});
})()
"""


# ---- a minimal WebSocket client (RFC 6455), enough for the DevTools protocol -----------------------------------------
class WebSocket:
    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        u = urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout_s)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            buf += chunk
        return buf

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._recv_exact(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            mask = self._recv_exact(4) if b1 & 0x80 else None
            data = self._recv_exact(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (9, 10):  # ping/pong: ignore
                continue
            message += data
            if b0 & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class DevTools:
    """One page target: send commands, collect events."""

    def __init__(self, ws_url: str) -> None:
        self.ws = WebSocket(ws_url)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, timeout_s: float = 30.0, **params: object) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise TimeoutError(method)

    def wait_for(self, method: str, timeout_s: float = 30.0) -> dict | None:
        for ev in self.events:
            if ev["method"] == method:
                self.events.remove(ev)
                return ev
        self.ws.sock.settimeout(timeout_s)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                msg = json.loads(self.ws.recv())
            except (TimeoutError, socket.timeout):
                return None
            if msg.get("method") == method:
                return msg
            if "method" in msg:
                self.events.append(msg)
        return None

    def drain(self, seconds: float) -> None:
        self.ws.sock.settimeout(0.1)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                msg = json.loads(self.ws.recv())
            except (TimeoutError, socket.timeout):
                continue
            if "method" in msg:
                self.events.append(msg)
        self.ws.sock.settimeout(30.0)


# ---- helpers --------------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    log: list[tuple[str, int]] = []

    def log_message(self, fmt: str, *args: object) -> None:  # record instead of printing
        return

    def log_request(self, code: object = "-", size: object = "-") -> None:
        type(self).log.append((self.path, int(code) if str(code).isdigit() else 0))


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def start_chromium(binary: str, user_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_dir}", "--remote-debugging-port=0",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port_file = user_dir / "DevToolsActivePort"
    for _ in range(300):
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text().split()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("chromium did not open its DevTools port")


def new_page(port: int) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/json/new?about:blank", method="PUT")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["webSocketDebuggerUrl"]


def problems_from_events(events: list[dict], page: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"console_errors": [], "failed_requests": [], "external_requests": []}
    for ev in events:
        m, p = ev["method"], ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            out["console_errors"].append(f"{page}: console.{p['type']}: {text}")
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            text = d.get("exception", {}).get("description") or d.get("text")
            out["console_errors"].append(f"{page}: uncaught: {text}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out["console_errors"].append(f"{page}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            host = urlparse(url).hostname
            if url.startswith(("http:", "https:", "ws:", "wss:")) and host not in ("127.0.0.1", None):
                out["external_requests"].append(f"{page}: {url}")
        elif m == "Network.loadingFailed":
            out["failed_requests"].append(f"{page}: {p.get('errorText')} ({p.get('type')})")
        elif m == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
            out["failed_requests"].append(f"{page}: HTTP {p['response']['status']} {p['response'].get('url')}")
    return out


def check_site(site: Path, chromium: str, shots_dir: Path | None) -> dict:
    pages = ["index.html", "candidates.html", "methods.html", "events.html"]
    pages += sorted(p.relative_to(site).as_posix() for p in (site / "candidates").glob("*.html"))
    server, http_port = serve(site)
    user_dir = Path(tempfile.mkdtemp(prefix="browser-check-"))
    proc, port = start_chromium(chromium, user_dir)
    result: dict = {"pages": len(pages), "console_errors": [], "failed_requests": [], "external_requests": [],
                    "viewers": 0, "viewers_rendered": 0, "broken_images": [], "sort_ok": None, "screenshots": []}
    try:
        dt = DevTools(new_page(port))
        for domain in ("Page", "Runtime", "Log", "Network"):
            dt.call(f"{domain}.enable")
        first_candidate = next((p for p in pages if p.startswith("candidates/")), None)
        for page in pages:
            dt.events.clear()
            dt.call("Page.navigate", url=f"http://127.0.0.1:{http_port}/{page}")
            dt.wait_for("Page.loadEventFired", 30)
            dt.drain(0.5)
            state = json.loads(dt.call("Runtime.evaluate", expression=PAGE_STATE_JS, returnByValue=True)
                               ["result"]["value"])
            for v in state["viewers"]:
                result["viewers"] += 1
                if v["rendered"] == "true" and v["atoms"] > 0 and v["ink_fraction"] > 0.005:
                    result["viewers_rendered"] += 1
                else:
                    result["console_errors"].append(f"{page}: structure viewer did not render: {v}")
            result["broken_images"] += [f"{page}: {i['src']}" for i in state["images"] if not i["ok"]]
            if page.startswith("candidates/") and not state["viewers"]:
                result["console_errors"].append(f"{page}: no structure viewer on a candidate page")
            if page == "candidates.html":
                col = 4  # predicted SCAN E_hull
                order = json.loads(dt.call("Runtime.evaluate", expression=SORT_JS % (col, col, col),
                                           returnByValue=True)["result"]["value"])
                nums = [float(x) for x in order["asc"] if x not in ("", None)]
                nums_desc = [float(x) for x in order["desc"] if x not in ("", None)]
                result["sort_ok"] = nums == sorted(nums) and nums_desc == sorted(nums_desc, reverse=True)
            if shots_dir is not None and page in ("index.html", "candidates.html", first_candidate):
                # the whole page, not only the first screen: tables and figures further down are checked by eye too
                size = dt.call("Page.getLayoutMetrics").get("cssContentSize") or {}
                clip = {"x": 0, "y": 0, "width": size.get("width", 1280),
                        "height": min(size.get("height", 1600), 12000), "scale": 1}
                png = base64.b64decode(dt.call("Page.captureScreenshot", format="png", clip=clip,
                                               captureBeyondViewport=True)["data"])
                shot = shots_dir / (page.replace("/", "__").removesuffix(".html") + ".png")
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(png)
                result["screenshots"].append(str(shot.relative_to(ROOT)) if shot.is_relative_to(ROOT) else str(shot))
            dt.drain(0.2)
            for key, items in problems_from_events(dt.events, page).items():
                result[key] += items
        version = dt.call("Runtime.evaluate", expression="navigator.userAgent", returnByValue=True)["result"]["value"]
        result["user_agent"] = version
        dt.ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.shutdown()
        shutil.rmtree(user_dir, ignore_errors=True)
    result["http_404"] = [p for p, code in _QuietHandler.log if code >= 400]
    result["ok"] = bool(
        not result["console_errors"] and not result["failed_requests"] and not result["external_requests"]
        and not result["broken_images"] and not result["http_404"] and result["viewers_rendered"] == result["viewers"]
        and result["viewers"] > 0 and result["sort_ok"] is not False
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, help="A built report site (folder with index.html).")
    parser.add_argument("--campaign", type=Path, help="A campaign folder: its report is built first.")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--screenshots", default=str(ROOT / "bench" / "results" / "browser_check"),
                        help="Folder for screenshots ('' for none).")
    parser.add_argument("--out", type=Path, help="Also save the JSON result in this file (e.g. bench/results/...).")
    args = parser.parse_args(argv)
    if not Path(args.chromium).exists():
        print(json.dumps({"ok": False, "error": f"no chromium at {args.chromium}"}))
        return 2
    t0 = time.perf_counter()
    tmp = None
    site = args.site
    timings: dict = {}
    if site is None:
        from screener.report import run_mkdocs_build, write_report

        tmp = Path(tempfile.mkdtemp(prefix="report-check-"))
        campaign = args.campaign
        if campaign is None:
            sys.path.insert(0, str(ROOT / "tests" / "report"))
            from synthetic_campaign import build_synthetic_campaign

            campaign = build_synthetic_campaign(tmp / "campaign")
        t_write = time.perf_counter()
        written = write_report(campaign, tmp / "report")
        t_mkdocs = time.perf_counter()
        site = run_mkdocs_build(written.project_dir)
        n = max(1, written.n_candidates)
        timings = {"n_candidates": written.n_candidates, "write_s": round(t_mkdocs - t_write, 2),
                   "write_s_per_candidate": round((t_mkdocs - t_write) / n, 3),
                   "mkdocs_build_s": round(time.perf_counter() - t_mkdocs, 2)}
    t_build = time.perf_counter() - t0
    shots = Path(args.screenshots) if args.screenshots else None
    result = check_site(Path(site), args.chromium, shots)
    result.update({
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "build_s": round(t_build, 2), **timings, "check_s": round(time.perf_counter() - t0 - t_build, 2),
        "hardware": f"{os.cpu_count()}-core CPU, {_cpu_model()}",
        "load_average_1min": round(os.getloadavg()[0], 2),
    })
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

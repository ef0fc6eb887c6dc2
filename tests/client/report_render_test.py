#!/usr/bin/python3
"""`mixq report` end to end, rendered by a real browser.

Starts a mixq-server (127.0.0.1, port 0, a temporary data dir), runs a small
search of the MLP fixture on Fashion-MNIST with a hostile job name, writes
its report with `mixq report`, and renders the page in headless Chromium:

  * the page's DOM, as Chromium parsed it, holds every chart (<svg
    class="chart">) with drawn marks, and the hostile name only as text;
  * a screenshot of the page is not blank (enough ink, many colours), and
    every chart's box in it holds coloured data marks.

Chromium or Pillow missing is a failure, not a skip. Usage:
  report_render_test.py --server BIN --client BIN --model ONNX --fashion DIR
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

CHART_IDS = [
    "chart-bits",
    "chart-trajectory-bits",
    "chart-trajectory-accuracy",
    "chart-pareto",
]
HOSTILE_NAME = "report <script>alert(1)</script> & \"x\""
SERVER_START_SECONDS = 30
JOB_SECONDS = 120
CHROMIUM_SECONDS = 60
WINDOW_WIDTH = 1200
MAX_WINDOW_HEIGHT = 16000
# A screenshot is "not blank" with this much non-white area and colours.
MIN_INK_FRACTION = 0.02
MIN_COLOURS = 16
# A chart is "drawn" with this many strongly coloured (data) pixels in its
# plot area; axes, grid and text are grey. The x/y charts' legends (their
# right-hand LEGEND_WIDTH pixels, client/svg_chart.cc) are left out, so that
# coloured swatches alone do not pass.
MIN_DATA_PIXELS = 150
SATURATION = 60
LEGEND_WIDTH = 190
BAR_CHART_ID = "chart-bits"

# Appended to a copy of the report: writes each chart's box and mark count,
# and the page height, into the DOM for --dump-dom to return.
PROBE = """<pre id="mixq-probe" style="position:absolute;left:0;top:0;
visibility:hidden"></pre><script>
const out = {height: document.documentElement.scrollHeight, charts: {}};
for (const svg of document.querySelectorAll('svg.chart')) {
  const r = svg.getBoundingClientRect();
  out.charts[svg.id] = {x: r.left + scrollX, y: r.top + scrollY,
                        width: r.width, height: r.height,
                        marks: svg.querySelectorAll('.mark').length};
}
document.getElementById('mixq-probe').textContent = JSON.stringify(out);
</script>"""


def fail(message):
    print("FAIL: " + message, file=sys.stderr)
    sys.exit(1)


def chromium_command(work, *args):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        fail("chromium is not installed (scripts/install-deps.sh installs "
             "Debian's chromium)")
    return [binary, "--headless", "--no-sandbox", "--disable-gpu",
            "--hide-scrollbars", "--force-device-scale-factor=1",
            "--user-data-dir=" + os.path.join(work, "chromium-profile"),
            *args]


def start_server(args, work):
    data_dir = os.path.join(work, "data")
    port_file = os.path.join(work, "port")
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.server, "--listen", "127.0.0.1:0", "--data-dir", data_dir,
         "--port-file", port_file, "--workers", "1", "--threads", "1"],
        stdout=log, stderr=log)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            fail("mixq-server exited: " + open(log.name).read())
        try:
            port = int(open(port_file).read().strip() or "0")
        except (OSError, ValueError):
            port = 0
        if port > 0:
            return server, "127.0.0.1:%d" % port
        time.sleep(0.05)
    server.kill()
    fail("mixq-server wrote no port within %d s" % SERVER_START_SECONDS)


def run(command, timeout):
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        fail("%s exited %d:\n%s%s" % (" ".join(command), result.returncode,
                                      result.stdout, result.stderr))
    return result.stdout


def check_screenshot(png, charts):
    try:
        from PIL import Image
    except ImportError:
        fail("Pillow is missing (Debian's python3-pil, for /usr/bin/python3)")
    image = Image.open(png).convert("RGB")
    width, height = image.size
    pixels = image.load()
    ink = sum(1 for x in range(0, width, 2) for y in range(0, height, 2)
              if pixels[x, y] != (255, 255, 255))
    ink_fraction = ink / ((width // 2) * (height // 2))
    colours = len(image.getcolors(maxcolors=1 << 24) or [])
    print("screenshot %dx%d: %.1f%% ink, %d colours" %
          (width, height, 100 * ink_fraction, colours))
    if ink_fraction < MIN_INK_FRACTION or colours < MIN_COLOURS:
        fail("the screenshot is blank: %.2f%% ink, %d colours" %
             (100 * ink_fraction, colours))
    for chart_id in CHART_IDS:
        box = charts[chart_id]
        left, top = int(box["x"]), int(box["y"])
        right = min(width, int(box["x"] + box["width"]))
        if chart_id != BAR_CHART_ID:
            right -= LEGEND_WIDTH
        bottom = min(height, int(box["y"] + box["height"]))
        if right <= left or bottom <= top:
            fail("%s lies outside the screenshot: %s" % (chart_id, box))
        data = 0
        for x in range(left, right):
            for y in range(top, bottom):
                r, g, b = pixels[x, y]
                if max(r, g, b) - min(r, g, b) > SATURATION:
                    data += 1
        print("%s: %d data pixels in %dx%d" %
              (chart_id, data, right - left, bottom - top))
        if data < MIN_DATA_PIXELS:
            fail("%s draws no data: %d coloured pixels in its box" %
                 (chart_id, data))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--client", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--fashion", required=True)
    parser.add_argument("--keep", help="copy the report and PNG here")
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mixq-report-render-")
    server = None
    try:
        server, address = start_server(args, work)
        mixq = [args.client, "--server", address]
        submitted = run(mixq + [
            "submit", "--name", HOSTILE_NAME, "--model", args.model,
            "--inputs", os.path.join(args.fashion, "t10k-images-idx3-ubyte.gz"),
            "--labels", os.path.join(args.fashion, "t10k-labels-idx1-ubyte.gz"),
            "--normalize", "0.2860,0.3530", "--max-samples", "1500",
            "--calib-size", "256", "--bits", "8,6,4,2",
            "--target-avg-bits", "4", "--strategy", "progressive",
            "--candidates", "4", "--max-layers", "1", "--finetune-steps", "10",
            "--seed", "0", "--watch"], JOB_SECONDS)
        job = submitted.splitlines()[0]
        if not job.startswith("job-"):
            fail("no job id in: " + submitted)
        # A uniform reference from the job's warm-up (6 bits: at 4 bits it
        # would be the job's own final 4/4/4, which the model's ranking
        # lists once).
        uniform = run(mixq + [
            "submit", "--from-job", job, "--bits", "8,6,4,2",
            "--target-avg-bits", "6", "--strategy", "uniform",
            "--finetune-steps", "10", "--seed", "0", "--watch"],
            JOB_SECONDS).splitlines()[0]

        report = os.path.join(work, "report.html")
        started = time.monotonic()
        run(mixq + ["report", job, "-o", report], CHROMIUM_SECONDS)
        html = open(report, encoding="utf-8").read()
        print("report: %d bytes in %.3f s" %
              (len(html.encode()), time.monotonic() - started))
        if "<script" in html or "alert(1)</script>" in html:
            fail("the hostile job name reached the page unescaped")
        if "&lt;script&gt;alert(1)&lt;/script&gt;" not in html:
            fail("the job name is missing from the page")
        if "<tr><td>%s</td>" % uniform not in html:
            fail("the uniform job %s is not among the uniform policies" %
                 uniform)
        for needle in ("http://", "https://", "src=", "href="):
            if needle in html.replace("http://www.w3.org/2000/svg", ""):
                fail("the page links to something: " + needle)

        # What Chromium parsed: every chart, its marks and its box.
        probe = os.path.join(work, "probe.html")
        with open(probe, "w", encoding="utf-8") as f:
            f.write(html.replace("</body>", PROBE + "</body>"))
        started = time.monotonic()
        # The same width as the screenshot's, so the boxes match it.
        dom = run(chromium_command(work, "--dump-dom",
                                   "--window-size=%d,%d" % (WINDOW_WIDTH,
                                                            WINDOW_WIDTH),
                                   "file://" + probe), CHROMIUM_SECONDS)
        print("chromium --dump-dom: %.1f s" % (time.monotonic() - started))
        begin = dom.find('id="mixq-probe"')
        if begin < 0:
            fail("Chromium's DOM has no probe output")
        text = dom[dom.index(">", begin) + 1:dom.index("</pre>", begin)]
        measured = json.loads(text.replace("&quot;", '"').replace("&amp;", "&"))
        for chart_id in CHART_IDS:
            chart = measured["charts"].get(chart_id)
            if chart is None:
                fail("Chromium's DOM has no %s (charts: %s)" %
                     (chart_id, sorted(measured["charts"])))
            print("%s: %d marks, %dx%d at (%d, %d)" %
                  (chart_id, chart["marks"], chart["width"], chart["height"],
                   chart["x"], chart["y"]))
            if chart["marks"] == 0 or chart["width"] <= 0:
                fail("%s has nothing drawn: %s" % (chart_id, chart))
        if "<script>alert(1)" in dom.replace(PROBE, ""):
            fail("Chromium parsed the hostile name as a script")

        # What it drew: the page itself (without the probe) as a PNG.
        png = os.path.join(work, "report.png")
        page_height = min(MAX_WINDOW_HEIGHT, int(measured["height"]))
        started = time.monotonic()
        run(chromium_command(work, "--screenshot=" + png,
                             "--window-size=%d,%d" % (WINDOW_WIDTH,
                                                      page_height),
                             "file://" + report), CHROMIUM_SECONDS)
        print("chromium --screenshot: %.1f s" % (time.monotonic() - started))
        check_screenshot(png, measured["charts"])
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            shutil.copy(report, args.keep)
            shutil.copy(png, args.keep)
        print("PASS")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

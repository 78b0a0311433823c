"""Open report.html in headless Chromium: which images loaded, which errors the page raised,
and a screenshot. Used by the tests and to make the README's picture of the page.

The page itself has no script; a copy gets a small one at the top of <head> that records
every error (capture phase, so failed image loads too) and, once the page has loaded, the state
of every <img>, into a <pre id="frcnn-check"> that --dump-dom prints.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=15000")
PROBE = """<script>
var frcnnErrors = [];
window.addEventListener('error', function (e) {
  var what = e.target && (e.target.alt || e.target.src || '');
  frcnnErrors.push(e.message || ('failed to load ' + String(what).slice(0, 80)));
}, true);
var origError = console.error;
console.error = function () {
  frcnnErrors.push(Array.prototype.join.call(arguments, ' '));
  origError.apply(console, arguments);
};
window.addEventListener('load', function () {
  var imgs = Array.prototype.map.call(document.images, function (im) {
    return {alt: im.alt, complete: im.complete, width: im.naturalWidth, height: im.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = 'frcnn-check';
  pre.textContent = JSON.stringify({images: imgs, errors: frcnnErrors});
  document.body.appendChild(pre);
});
</script>"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(browser, args, timeout):
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout)


def check_page(html_path, browser=None, timeout=120):
    """-> {'images': [{alt, complete, width, height}], 'errors': [str]} as Chromium saw it."""
    browser = browser or find_chromium()
    with open(html_path, encoding="utf-8") as f:
        page = f.read()
    probe = page.replace("<head>", "<head>" + PROBE, 1)
    fd, copy = tempfile.mkstemp(suffix=".html", dir=os.path.dirname(os.path.abspath(html_path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(probe)
        p = _run(browser, ["--dump-dom", "file://" + os.path.abspath(copy)], timeout)
    finally:
        os.remove(copy)
    m = re.search(r'<pre id="frcnn-check">(.*?)</pre>', p.stdout, re.S)
    if not m:
        raise RuntimeError(f"{browser} printed no page state (rc {p.returncode}): "
                           f"{p.stderr[-2000:]}")
    import html

    return json.loads(html.unescape(m.group(1)))


def screenshot(html_path, png_path, width=1300, height=1600, browser=None, timeout=120):
    """A PNG of the top width x height pixels of the page."""
    browser = browser or find_chromium()
    _run(browser, [f"--screenshot={os.path.abspath(png_path)}", f"--window-size={width},{height}",
                   "file://" + os.path.abspath(html_path)], timeout)
    return png_path

"""nbs/course/11_failure_modes.ipynb in a real browser: JupyterLab on 127.0.0.1, headless Debian chromium through Playwright.

Runs every cell, clicks another word of the `AttentionInspector` and checks that its attention image is redrawn.
Needs `apt-get install -y chromium` and the `playwright` Python package (never `playwright install`).
"""
import json, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = 'nbs/course/11_failure_modes.ipynb'
CHROMIUM = shutil.which('chromium')

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH: install Debian's with `apt-get install -y chromium`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def write_settings(d: Path):
    "Lab settings for the test: every cell in the DOM (no windowing), no autosave (the run must not rewrite the notebook), no news."
    for ext, name, value in [('@jupyterlab/notebook-extension', 'tracker', {'windowingMode': 'none'}),
                             ('@jupyterlab/docmanager-extension', 'plugin', {'autosave': False}),
                             ('@jupyterlab/apputils-extension', 'notification', {'fetchNews': 'false', 'checkForUpdates': False})]:
        (d/ext).mkdir(parents=True, exist_ok=True)
        (d/ext/f'{name}.jupyterlab-settings').write_text(json.dumps(value))


def wait_for_server(url: str, proc, log: Path, timeout: float = 60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with status {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200: return
        except OSError: time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-2000:]}")


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on a free loopback port, token '', isolated settings; stopped afterwards."
    port = free_port()
    for d in ('config', 'data', 'runtime', 'settings', 'workspaces'): (tmp_path/d).mkdir()
    write_settings(tmp_path/'settings')
    env = os.environ | dict(JUPYTER_CONFIG_DIR=str(tmp_path/'config'), JUPYTER_DATA_DIR=str(tmp_path/'data'),
                            JUPYTER_RUNTIME_DIR=str(tmp_path/'runtime'),
                            JUPYTERLAB_SETTINGS_DIR=str(tmp_path/'settings'), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path/'workspaces'),
                            MPLBACKEND='Agg')
    log = open(tmp_path/'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
                             '--IdentityProvider.token=', '--LabApp.expose_app_in_browser=True',
                             f'--ServerApp.root_dir={ROOT}', '--ServerApp.port_retries=0']
                            + (['--allow-root'] if hasattr(os, 'geteuid') and os.geteuid() == 0 else []),
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_server(f'http://127.0.0.1:{port}/api/status', proc, tmp_path/'lab.log')
        yield f'http://127.0.0.1:{port}'
    finally:
        proc.terminate()                          # jupyter server shuts its kernels down on SIGTERM
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait(5)
        log.close()


KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !!w.content && w.content.widgets.length > 0; }"""


def test_attention_inspector_in_browser(lab, tmp_path):
    from playwright.sync_api import sync_playwright
    t0 = time.monotonic()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=['--no-sandbox', '--disable-gpu'])
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1000})
            page.goto(f'{lab}/lab/tree/{NB}')
            page.wait_for_function(KERNEL_IDLE, timeout=60_000)
            # run every cell; the command's promise settles when the last cell has run
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells').then("
                          "r => { window.__ran = true; }, e => { window.__ran = String(e); }); }")
            # the notebook trains a tiny model and an evaluator: about 2 minutes on 2 idle cores, several on busy ones
            page.wait_for_function('window.__ran !== undefined', timeout=600_000)
            assert page.evaluate('window.__ran') is True, page.evaluate('window.__ran')
            errors = page.locator('[data-mime-type="application/vnd.jupyter.error"]')
            assert errors.count() == 0, errors.first.inner_text()

            words, image = page.locator('.attngan-attn-words'), page.locator('img.attngan-attn-image')
            words.wait_for(timeout=30_000)
            page.wait_for_function("() => (document.querySelector('img.attngan-attn-image') || {}).src", timeout=30_000)
            before = image.get_attribute('src')
            chosen = words.locator('button.mod-active').inner_text()
            target = words.locator('button:not(.mod-active)', has_text='white').first
            target.scroll_into_view_if_needed(); target.click()
            page.wait_for_function("old => document.querySelector('img.attngan-attn-image').src !== old", arg=before, timeout=30_000)
            assert image.get_attribute('src') != before
            assert 'white' in words.locator('button.mod-active').inner_text() and 'white' not in chosen

            shot, shot2 = tmp_path/'attention_inspector.png', tmp_path/'stage_inspector.png'
            words.scroll_into_view_if_needed(); page.screenshot(path=str(shot))
            page.locator('.attngan-stage-words').scroll_into_view_if_needed(); page.screenshot(path=str(shot2))
            print(f"screenshots: {shot} {shot2} ({time.monotonic() - t0:.0f} s in the browser)")
            assert shot.stat().st_size > 10_000
        finally:
            try: page.evaluate('() => window.jupyterapp.serviceManager.sessions.shutdownAll()')
            except Exception: pass
            browser.close()

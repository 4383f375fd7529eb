"""The error browser for real: JupyterLab on localhost, notebook 06 in headless Chromium.

Run by ``make test-browser`` (part of ``make test`` where Chromium can be installed), which
installs Debian's ``chromium`` first; Playwright drives it (``executable_path``), so no
browser is downloaded. The notebook is opened with autosave off and checked byte for byte
afterwards: running it in a browser must not rewrite the stored outputs nbval compares.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = "notebooks/06_error_analysis.ipynb"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (make test-browser installs Debian's)", allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    settings = tmp_path / "settings"
    for plugin, values in {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    }.items():
        f = settings / (plugin + ".jupyterlab-settings")
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={ROOT}", "--allow-root",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")})
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("jupyter lab exited:\n" + (tmp_path / "lab.log").read_text())
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start:\n" + (tmp_path / "lab.log").read_text())
        yield base, token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text().strip()


def test_notebook_06_browser_follows_a_filter(lab, tmp_path):
    base, token = lab
    before = (ROOT / NOTEBOOK).read_bytes()
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            _run_and_check(page, base, token)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()
    assert (ROOT / NOTEBOOK).read_bytes() == before, "the browser run must not rewrite the notebook"


def _run_and_check(page, base: str, token: str) -> None:
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    # the kernel is up when the status bar says so; Run All before that can be lost
    page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click()
    # the widget appears once every cell above it has run (the model may be trained first)
    page.locator(".ocrlib-sample").first.wait_for(timeout=300_000)
    page.wait_for_function(
        "() => document.querySelector('.ocrlib-status') && "
        "/ of /.test(document.querySelector('.ocrlib-status').innerText)", timeout=60_000)
    first_sample = _text(page, ".ocrlib-sample")
    assert "truth" in first_sample and "read" in first_sample

    # the filter: from "any error" to the correctly read samples
    page.locator(".ocrlib-kind select").first.select_option("correct")
    page.wait_for_function(
        "(old) => document.querySelector('.ocrlib-sample').innerText.trim() !== old",
        arg=first_sample, timeout=60_000)
    after = _text(page, ".ocrlib-sample")
    assert after != first_sample and "errors:" not in after  # a correct reading lists no errors
    assert _text(page, ".ocrlib-status").startswith("1 of")  # a new filter starts at its first sample

    # and stepping moves to another sample
    page.locator("button", has_text="next").first.click()
    page.wait_for_function(
        "(old) => document.querySelector('.ocrlib-sample').innerText.trim() !== old",
        arg=after, timeout=60_000)
    assert _text(page, ".ocrlib-status").startswith("2 of")

"""The two web pages in a real browser (Debian's headless Chromium, driven by Playwright): the dubbing app
(python -m src.app) dubs a small synthetic clip whose result plays, and shows a bad upload's message; the user-study
page (python -m eval.mos) records two raters' ratings, survives a reload mid-study, and its report's means equal the
ratings given. Screenshots of each page go to outputs/screenshots/ (and the test's tmp folder). `make browser`
installs Chromium; without it these tests skip, saying so."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests import test_dub
from tests.test_dub import write_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).resolve().parents[1] / "outputs" / "screenshots"
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH: `make browser` installs Debian's"),
              pytest.mark.timeout(600)]
ckpts, media, one_thread_for_this_module = test_dub.ckpts, test_dub.media, test_dub.one_thread_for_this_module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(argv: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start a page server; (process, its URL) once it answers."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", *argv, "--port", str(port)], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(240):
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"{argv[0]} exited: {log.read_text()[-3000:]}")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"{argv[0]} did not answer: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        yield browser
        browser.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shutil.copy(tmp_path / f"{name}.png", SHOTS / f"{name}.png")


# -------------------------------------------------------------------------------------- the app --
@pytest.fixture(scope="module")
def app(ckpts, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    proc, url = serve(["src.app", "--geometry-ckpt", str(ckpts["geometry"]), "--render-ckpt", str(ckpts["render"]),
                       "--out-dir", str(root / "out")], root / "app.log")
    yield {"url": url, "out": root / "out"}
    proc.terminate()
    proc.wait(30)


def test_the_app_dubs_a_clip_and_the_result_plays(app, browser, media, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app["url"])
    page.locator("#video input[type=file]").set_input_files(str(media["ref"]))
    page.locator("#audio input[type=file]").set_input_files(str(media["short"]))
    page.wait_for_selector("#faces img", timeout=120_000)  # the numbered face thumbnails
    page.click("#dub")
    page.wait_for_selector("#result video", timeout=300_000)
    played = page.evaluate("""async () => {
        const v = document.querySelector('#result video'); v.muted = true;
        if (v.readyState < 2) await new Promise(r => v.addEventListener('loadeddata', r, {once: true}));
        await v.play(); await new Promise(r => setTimeout(r, 600));
        return {time: v.currentTime, duration: v.duration, paused: v.paused}; }""")
    assert played["time"] > 0 and not played["paused"] and played["duration"] == pytest.approx(1.2, abs=0.1), played
    notes = page.locator("#notes").inner_text()
    assert "Untrained or demo weights" in notes and "30 frames" in notes
    assert len(list(app["out"].glob("dub-*.mp4"))) == 1
    screenshot(page, tmp_path, "app_dub")
    page.close()


def test_a_bad_upload_shows_its_message_in_the_page(app, browser, media, tmp_path):
    still = tmp_path / "one_frame.mp4"
    write_video(still, [np.full((64, 64, 3), 128, np.uint8)], np.zeros(640, np.float32))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(app["url"])
    page.locator("#video input[type=file]").set_input_files(str(still))
    page.locator("#audio input[type=file]").set_input_files(str(media["short"]))
    page.wait_for_timeout(1500)
    page.click("#dub")
    page.wait_for_selector("text=too short: 1 frame", timeout=60_000)
    assert "Traceback" not in page.content()
    screenshot(page, tmp_path, "app_bad_upload")
    page.close()


# ---------------------------------------------------------------------------------- the MOS page --
@pytest.fixture(scope="module")
def study(media, tmp_path_factory):
    """Two methods of two clips each: the reference video and a colour-shifted copy of it."""
    root = tmp_path_factory.mktemp("mos")
    for method, shift in (("ours", 0), ("other", 40)):
        (root / method).mkdir()
        for clip in ("clip_a", "clip_b"):
            frames = [np.full((64, 64, 3), 100 + shift + 30 * (clip == "clip_b"), np.uint8) for _ in range(10)]
            write_video(root / method / f"{clip}.mp4", frames, np.zeros(6400, np.float32))
    proc, url = serve(["eval.mos", "--methods", f"ours={root / 'ours'}", f"other={root / 'other'}",
                       "--out", str(root / "study")], root / "mos.log")
    yield {"url": url, "folder": root / "study"}
    proc.terminate()
    proc.wait(30)


def rate_clip(page, scores: list[int]) -> None:
    """Rate the clip on screen: scores for (video A, B) x (lip_sync, visual_quality, persona), then submit."""
    k = 0
    for slot in range(2):
        for criterion in ("lip_sync", "visual_quality", "persona"):
            page.locator(f"#rate_{slot}_{criterion} label").nth(scores[k] - 1).click()
            k += 1
    page.click("#submit")


def test_the_study_records_two_raters_survives_a_reload_and_reports_their_means(study, browser, tmp_path):
    from eval.mos import Study

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(study["url"])
    page.fill("#rater textarea, #rater input", "rater1")
    page.click("#start")
    page.wait_for_selector("text=clip 1 of 2")
    page.wait_for_selector("#video_1 video")
    page.wait_for_timeout(1000)
    screenshot(page, tmp_path, "mos_clip")
    rate_clip(page, [5, 4, 3, 2, 1, 2])
    page.wait_for_selector("text=clip 2 of 2")
    page.reload()  # the tab is reloaded mid-study: the first clip's ratings are kept, the rater continues at clip 2
    page.fill("#rater textarea, #rater input", "rater1")
    page.click("#start")
    page.wait_for_selector("text=clip 2 of 2")
    rate_clip(page, [4, 4, 4, 1, 1, 1])
    page.wait_for_selector("text=all 2 clips are rated")
    page.fill("#rater textarea, #rater input", "rater2")
    page.click("#start")
    page.wait_for_selector("text=clip 1 of 2")
    rate_clip(page, [3, 3, 3, 3, 3, 3])
    page.wait_for_selector("text=clip 2 of 2")
    rate_clip(page, [2, 2, 2, 5, 5, 5])
    page.wait_for_selector("text=all 2 clips are rated")
    screenshot(page, tmp_path, "mos_done")
    page.close()

    s = Study(study["folder"])
    given = {}  # what was clicked, mapped back to methods through the per-rater order
    for rater, clips in (("rater1", ([5, 4, 3, 2, 1, 2], [4, 4, 4, 1, 1, 1])),
                         ("rater2", ([3, 3, 3, 3, 3, 3], [2, 2, 2, 5, 5, 5]))):
        for clip, scores in zip(s.clips, clips):
            for slot, method in enumerate(s.order(rater, clip)):
                for j, criterion in enumerate(("lip_sync", "visual_quality", "persona")):
                    given.setdefault((method, criterion), []).append(scores[3 * slot + j])
    done = subprocess.run([sys.executable, "-m", "eval.mos", "report", str(study["folder"]), "--json",
                           str(tmp_path / "table3.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "table3.json").read_text())
    assert result["raters"] == 2 and result["ratings"] == 24
    for (method, criterion), scores in given.items():
        assert result["table"][method][criterion]["mean"] == pytest.approx(np.mean(scores))
    assert "| ours |" in done.stdout and "±" in done.stdout

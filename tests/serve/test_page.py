"""The web page, in a real headless browser (the distribution's Chromium, driven by Playwright).

It skips where there is no Chromium; `.ci/run` installs one so that CI runs it. The search test leaves a
screenshot in the artefacts folder (``$GALLERY_TEST_ARTEFACTS``, else the pytest temp folder).
"""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

sync_api = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.timeout(300)

CHROMIUM = os.environ.get("GALLERY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (apt-get install -y chromium); .ci/run installs it")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, server, role: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation before a removal
    page.goto(server.url + "/")
    page.fill("#key", server.keys[role])
    page.click("#use-key")
    sync_api.expect(page.locator("#whoami")).to_contain_text(role)
    return page


def search_photos(page, *paths):
    done = int(page.get_attribute("#status", "data-searches") or 0)
    page.set_input_files("#probe-input", [str(p) for p in paths])
    sync_api.expect(page.locator("#status")).to_have_attribute("data-searches", str(done + 1))
    sync_api.expect(page.locator("#status")).to_contain_text("generation")


def test_the_page_shows_who_is_in_a_photo_and_an_unknown_for_the_stranger(browser, face_server, faces_dir, artefacts):
    page = open_page(browser, face_server, "search")
    sync_api.expect(page.locator("#identity-list li")).to_have_count(5)
    search_photos(page, faces_dir / "probes/obama1.jpg", faces_dir / "misc/lin-manuel-miranda.png")

    faces = page.locator(".face-result")
    sync_api.expect(faces).to_have_count(2)
    assert [faces.nth(i).get_attribute("data-identity") for i in range(2)] == ["obama", "unknown"]
    sync_api.expect(faces.nth(0).locator(".decision")).to_have_text("obama")
    sync_api.expect(faces.nth(1).locator(".decision")).to_have_text("unknown")
    sync_api.expect(faces.nth(0)).to_contain_text("threshold 0.940 (model-default)")
    sync_api.expect(faces.nth(0).locator("tr").first).to_contain_text("obama")
    sync_api.expect(page.locator(".figure rect.known")).to_have_count(1)
    sync_api.expect(page.locator(".figure rect.unknown")).to_have_count(1)
    # the box sits where the API says, on the photo's own pixel grid
    probe = faces_dir / "probes/obama1.jpg"
    said = httpx.post(face_server.url + "/v1/search/photos", files=[("photos", (probe.name, probe.read_bytes()))],
                      headers={"Authorization": f"Bearer {face_server.keys['search']}"}, timeout=120).json()
    left, top = said["photos"][0]["faces"][0]["box"][:2]
    box = page.locator(".figure rect.known").first
    assert [box.get_attribute(a) for a in ("x", "y")] == [str(left), str(top)]
    # every matched identity shows its enrolled face, fetched with the key
    page.wait_for_function("() => { const t = [...document.querySelectorAll('.face-result img.thumb')];"
                           " return t.length > 0 && t.every(i => i.complete && i.naturalWidth > 0); }")
    # a search key sees neither the enrol form nor remove buttons
    assert page.locator("#enrol").is_hidden() and page.locator("button.remove").count() == 0
    page.screenshot(path=str(artefacts / "serve-search-page.png"), full_page=True)
    assert (artefacts / "serve-search-page.png").stat().st_size > 10_000


def test_an_admin_enrols_a_stranger_and_removes_them_from_the_page(browser, face_server, faces_dir):
    stranger = faces_dir / "misc/lin-manuel-miranda.png"
    page = open_page(browser, face_server, "admin")
    assert page.locator("#enrol").is_visible()
    page.fill("#enrol-identity", "lin_manuel")
    page.set_input_files("#enrol-photos", str(stranger))
    page.click("#enrol-form button")
    sync_api.expect(page.locator("#enrol-status")).to_contain_text("enrolled 1 face for lin_manuel")
    sync_api.expect(page.locator("#identity-list li")).to_have_count(6)

    search_photos(page, stranger)
    sync_api.expect(page.locator(".face-result .decision")).to_have_text("lin_manuel")

    status = page.locator("#identity-status")
    page.locator('#identity-list li[data-identity="lin_manuel"] button.remove').click()
    sync_api.expect(status).to_contain_text("removed lin_manuel: 1 records erased")
    sync_api.expect(page.locator("#identity-list li")).to_have_count(5)
    search_photos(page, stranger)
    sync_api.expect(page.locator(".face-result .decision")).to_have_text("unknown")

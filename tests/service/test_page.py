"""The page at `/` in a real headless Chromium (Debian's chromium + chromium-driver, Selenium).

One real server (tiny preset) on 127.0.0.1 for the module; items are added
through the page itself, then searched by text, by uploaded file, by a
recording and by opening a search URL. `PAGE_SCREENSHOT=path.png`
keeps the screenshot of the results (docs/page.png in the README is one).
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageDraw
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WAIT_S = 60
SHAPES = {
    "red-circle.png": ("#d8352a", "ellipse"),
    "blue-square.png": ("#3366cc", "rectangle"),
    "green-dot.png": ("#2e9e57", "ellipse"),
}
TEXT = "a red circle painted on a white wall"
CAPTION = "Red circle, drawn for the page test"


def start_browser(profile: Path, *extra: str, size: tuple[int, int] = (1280, 1000)) -> WebDriver:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: apt-get install chromium chromium-driver (Debian)")
    options = Options()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, *extra, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={size[0]},{size[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], object], what: str) -> object:
    try:
        return WebDriverWait(driver, WAIT_S).until(condition)
    except TimeoutException:
        error = driver.find_element(By.ID, "error").text
        raise AssertionError(f"timed out waiting for {what}; page error: {error!r}") from None


def cards(driver: WebDriver) -> list[dict]:
    """What each result card shows, read in the page."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#cards .card')].map(card => ({
            id: card.dataset.id,
            modality: card.dataset.modality,
            score: card.querySelector('.score-value').textContent,
            scoreHidden: card.querySelector('.score').hidden,
            img: card.querySelector('img') && card.querySelector('img').naturalWidth,
            audio: card.querySelector('audio') && {
                src: card.querySelector('audio').src,
                ready: card.querySelector('audio').readyState,
                duration: card.querySelector('audio').duration,
            },
            text: card.querySelector('blockquote') && card.querySelector('blockquote').textContent,
            meta: card.querySelector('.meta').textContent,
        }))"""
    )


def heading(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "results-heading").text


def wait_for_results(driver: WebDriver, title: str) -> list[dict]:
    wait_for(driver, lambda d: heading(d) == title and cards(d), f"results titled {title!r}")
    return cards(driver)


def wait_for_media(driver: WebDriver) -> list[dict]:
    """Cards once every thumbnail has decoded and every player has read its clip's duration."""

    def loaded(d: WebDriver) -> list[dict] | None:
        found = cards(d)
        ok = all((c["img"] or 0) > 0 if c["modality"] == "image" else True for c in found) and all(
            c["audio"]["ready"] >= 1 for c in found if c["modality"] == "audio"
        )
        return found if ok else None

    return wait_for(driver, loaded, "thumbnails and audio players to load")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real files: PNG drawings, espeak-ng speech as WAV, and a text file that is no media."""
    root = tmp_path_factory.mktemp("media")
    paths = {}
    for name, (colour, shape) in SHAPES.items():
        img = Image.new("RGB", (640, 480), "#f4efe6")
        getattr(ImageDraw.Draw(img), shape)((170, 90, 470, 390), fill=colour)
        img.save(root / name)
        paths[name] = root / name
    paths["speech.wav"] = root / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(paths["speech.wav"]), "a small dog barks at the red ball"],
        check=True,
        capture_output=True,
    )
    paths["notes.txt"] = root / "notes.txt"
    paths["notes.txt"].write_text("not an image")
    return paths


@pytest.fixture(scope="module")
def server(module_server_factory):
    server = module_server_factory()
    server.start()
    return server


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    driver = start_browser(tmp_path_factory.mktemp("chromium"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def added(browser: WebDriver, server, media: dict[str, Path]) -> dict[str, dict]:
    """Images, a WAV and a text added through the page's add form; the API's view of them."""
    browser.get(server.url + "/")
    files = [media[name] for name in (*SHAPES, "speech.wav")]
    browser.find_element(By.ID, "add-files").send_keys("\n".join(str(p) for p in files))
    captions = browser.find_elements(By.CSS_SELECTOR, "#pending-files input")
    assert [c.get_attribute("data-name") for c in captions] == [p.name for p in files]
    caption = browser.find_element(
        By.CSS_SELECTOR, "#pending-files input[data-name='red-circle.png']"
    )
    caption.send_keys(CAPTION)
    browser.find_element(By.ID, "add-text").send_keys(TEXT)
    browser.find_element(By.ID, "add-metadata").send_keys('{"album": "page test"}')
    browser.find_element(By.ID, "add-submit").click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "uploads").get_attribute("data-state") == "done",
        "the uploads to finish",
    )
    pending = browser.find_element(By.ID, "pending-files")
    assert not pending.is_displayed() and pending.text == ""  # cleared for the next add
    rows = browser.find_elements(By.CSS_SELECTOR, "#uploads li")
    statuses = [(row.get_attribute("class"), row.text) for row in rows]
    assert len(rows) == len(files) + 1 and all(cls == "ok" for cls, _ in statuses), statuses
    items = httpx.get(f"{server.url}/items").json()["items"]
    return {it["metadata"].get("source", it["text"]): it for it in items}


def test_page_loads_with_labelled_controls(browser: WebDriver, server) -> None:
    browser.get(server.url + "/")
    assert browser.title == "mmembed"
    wait_for(browser, lambda d: "preset" in d.find_element(By.ID, "server-info").text, "facts")
    unlabelled = browser.execute_script(
        """return [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && el.labels.length === 0)
            .map(el => el.id)"""
    )
    assert unlabelled == []
    banner = browser.find_element(By.ID, "model-warning").text
    assert "DEMO MODEL" in banner
    # it points at what serves a real model now: the release, by default
    assert "`mmembed serve` with no --preset serves the shipped release" in banner
    assert "--preset base --checkpoint" not in banner
    # the microphone button is offered where the browser has MediaRecorder
    assert browser.find_element(By.ID, "record").is_displayed()
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert severe == []


def test_items_added_through_the_page(added: dict[str, dict], server) -> None:
    assert {name: item["modality"] for name, item in added.items()} == {
        "red-circle.png": "image",
        "blue-square.png": "image",
        "green-dot.png": "image",
        "speech.wav": "audio",
        TEXT: "text",
    }
    assert added["red-circle.png"]["metadata"] == {"album": "page test", "source": "red-circle.png"}
    assert added[TEXT]["metadata"] == {"album": "page test"} and added[TEXT]["text"] == TEXT
    assert added["red-circle.png"]["text"] == CAPTION  # the caption typed beside the file
    assert added["blue-square.png"]["text"] is None  # none typed, none kept
    preview = httpx.get(f"{server.url}/items/{added['speech.wav']['id']}/preview")
    assert preview.headers["content-type"] == "audio/mpeg"


def test_text_search_shows_thumbnails_and_players(browser: WebDriver, server, added) -> None:
    browser.get(server.url + "/")
    box = browser.find_element(By.ID, "q")
    box.send_keys("red circle", Keys.ENTER)  # the keyboard alone runs a search
    wait_for_results(browser, "Results for “red circle”")
    found = wait_for_media(browser)
    assert {c["id"] for c in found} == {item["id"] for item in added.values()}
    assert browser.current_url == f"{server.url}/?q=red+circle"
    for card in found:
        assert not card["scoreHidden"] and card["score"].startswith("score ")
        if card["modality"] == "image":
            assert card["img"] > 0 and "source" in card["meta"]
        if card["modality"] == "audio":
            assert card["audio"]["src"].endswith(f"/previews/{added['speech.wav']['id']}")
            assert card["audio"]["duration"] > 1.5  # the browser decoded the MP3 preview
        if card["modality"] == "text":
            assert card["text"] == TEXT
    timing = browser.find_element(By.ID, "timing").text
    assert timing.startswith("5 results · model ") and "index" in timing and "ms in all" in timing
    screenshot = os.environ.get("PAGE_SCREENSHOT")
    if screenshot:
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        assert browser.save_screenshot(screenshot)


def test_search_by_uploaded_file(browser: WebDriver, server, added, media) -> None:
    browser.get(server.url + "/")
    browser.find_element(By.ID, "query-file").send_keys(str(media["red-circle.png"]))
    found = wait_for_results(browser, "Results for red-circle.png")
    # the same picture embeds to the same vector: it comes first, with a perfect score
    assert found[0]["id"] == added["red-circle.png"]["id"]
    assert found[0]["score"] == "score 1.000"
    assert len(found) == 5


DROP = """
const [zoneId, name, b64] = arguments;
const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
const data = new DataTransfer();
data.items.add(new File([bytes], name, {type: "image/png"}));
const zone = document.getElementById(zoneId);
zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true, cancelable: true}));
const highlighted = zone.classList.contains("over");
zone.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true, cancelable: true}));
return highlighted;
"""


def test_dropping_files_on_the_drop_zones(browser: WebDriver, server, added, media) -> None:
    png = base64.b64encode(media["red-circle.png"].read_bytes()).decode()
    browser.get(server.url + "/")
    assert browser.execute_script(DROP, "query-drop", "dropped.png", png) is True
    found = wait_for_results(browser, "Results for dropped.png")
    assert found[0]["id"] == added["red-circle.png"]["id"] and found[0]["score"] == "score 1.000"
    browser.execute_script(DROP, "add-drop", "new.png", png)
    ready = browser.find_element(By.CSS_SELECTOR, "#add-drop span").text
    assert ready == "1 file ready: new.png. Drop more, or"


def test_search_url_opened_directly(browser: WebDriver, server, added) -> None:
    browser.get(server.url + "/?q=red+circle&dims=64&modality=image")
    found = wait_for_results(browser, "Results for “red circle”")
    assert {c["modality"] for c in found} == {"image"} and len(found) == 3
    assert browser.find_element(By.ID, "q").get_attribute("value") == "red circle"
    assert browser.find_element(By.ID, "dims").get_attribute("value") == "64"
    assert browser.find_element(By.ID, "modality").get_attribute("value") == "image"
    # changing an option runs the search again and updates the URL
    browser.find_element(By.CSS_SELECTOR, "#modality option[value='text']").click()
    found = wait_for_results(browser, "Results for “red circle”")
    wait_for(browser, lambda d: {c["modality"] for c in cards(d)} == {"text"}, "text results")
    assert browser.current_url.endswith("/?q=red+circle&dims=64&modality=text")
    browser.back()
    wait_for(browser, lambda d: {c["modality"] for c in cards(d)} == {"image"}, "back to images")


def test_without_a_query_the_page_shows_the_latest_items(browser: WebDriver, server, added):
    browser.get(server.url + "/")
    found = wait_for_results(browser, "Latest items")
    newest_first = sorted(added.values(), key=lambda it: (it["created_at"], it["id"]), reverse=True)
    assert [c["id"] for c in found] == [it["id"] for it in newest_first]
    assert all(c["scoreHidden"] for c in found)


def test_api_errors_are_readable_messages(browser: WebDriver, server, added, media) -> None:
    browser.get(server.url + "/")
    browser.find_element(By.ID, "query-file").send_keys(str(media["notes.txt"]))
    error = browser.find_element(By.ID, "error")
    wait_for(browser, lambda d: error.is_displayed(), "the error message")
    message = error.find_element(By.TAG_NAME, "p").text
    assert message.startswith("Search failed: input 0 (file): unrecognised file type; supported:")
    assert "{" not in message and '"error"' not in message
    error.find_element(By.CSS_SELECTOR, "button").click()
    assert not error.is_displayed()

    browser.find_element(By.ID, "add-text").send_keys("x")
    browser.find_element(By.ID, "add-metadata").send_keys("{not json")
    browser.find_element(By.ID, "add-submit").click()
    message = error.find_element(By.TAG_NAME, "p").text
    assert message.startswith("Cannot add: the metadata is not valid JSON")
    metadata = browser.find_element(By.ID, "add-metadata")
    assert browser.switch_to.active_element == metadata
    metadata.clear()
    browser.find_element(By.ID, "add-text").clear()

    browser.find_element(By.ID, "add-files").send_keys(str(media["notes.txt"]))
    browser.find_element(By.ID, "add-submit").click()
    wait_for(
        browser,
        lambda d: d.find_element(By.ID, "uploads").get_attribute("data-state") == "done",
        "the failed upload",
    )
    row = browser.find_element(By.CSS_SELECTOR, "#uploads li")
    assert row.get_attribute("class") == "failed"
    assert "unrecognised file type" in row.text
    assert "Some items were not added" in error.text


def test_delete_from_the_page(browser: WebDriver, server, added) -> None:
    httpx.post(
        f"{server.url}/items",
        json={"text": "delete me", "id": "to-delete"},
    )
    browser.get(server.url + "/?q=delete+me&modality=text")
    wait_for(browser, lambda d: any(c["id"] == "to-delete" for c in cards(d)), "the item")
    button = browser.find_element(By.CSS_SELECTOR, ".card[data-id='to-delete'] .delete")
    assert button.get_attribute("aria-label") == "Delete to-delete"
    button.click()
    assert button.text == "Really delete?"
    button.click()
    wait_for(browser, lambda d: all(c["id"] != "to-delete" for c in cards(d)), "the card to go")
    assert httpx.get(f"{server.url}/items/to-delete").status_code == 404


def test_readable_on_a_phone(browser: WebDriver, server, added) -> None:
    browser.set_window_size(390, 844)
    try:
        browser.get(server.url + "/?q=red+circle")
        wait_for_results(browser, "Results for “red circle”")
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0
        font = browser.execute_script(
            "return parseFloat(getComputedStyle(document.getElementById('q')).fontSize)"
        )
        assert font >= 16  # phones zoom into inputs with smaller text
    finally:
        browser.set_window_size(1280, 1000)


def test_search_by_microphone_recording(tmp_path: Path, server, added) -> None:
    """Chromium's fake microphone (a beep): MediaRecorder's WebM becomes WAV in the page."""
    driver = start_browser(
        tmp_path / "profile", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"
    )
    try:
        driver.get(server.url + "/")
        record = driver.find_element(By.ID, "record")
        record.click()
        wait_for(driver, lambda d: record.get_attribute("aria-pressed") == "true", "recording")
        wait_for(driver, lambda d: "(1 s)" in record.text or "(2 s)" in record.text, "a second")
        record.click()
        found = wait_for_results(driver, "Results for your recording")
        assert len(found) == 5
        assert driver.find_element(By.ID, "error").is_displayed() is False
    finally:
        driver.quit()


def test_api_key_is_asked_once_and_kept_for_the_tab(
    module_server_factory, tmp_path: Path, media
) -> None:
    server = module_server_factory(env={"MMEMBED_API_KEYS": "right-key"})
    server.start()
    headers = {"Authorization": "Bearer right-key"}
    with media["red-circle.png"].open("rb") as image:
        httpx.post(f"{server.url}/items", files={"file": image}, headers=headers)
    driver = start_browser(tmp_path / "profile")
    try:
        driver.get(server.url + "/?q=circle")
        dialog = driver.find_element(By.ID, "key-dialog")
        wait_for(driver, lambda d: dialog.get_attribute("open") is not None, "the key dialog")
        key = driver.find_element(By.ID, "key-input")
        key.send_keys("wrong-key", Keys.ENTER)
        wait_for(
            driver,
            lambda d: "invalid API key" in d.find_element(By.ID, "key-error").text,
            "the wrong key to be refused",
        )
        key.send_keys("right-key", Keys.ENTER)
        wait_for_results(driver, "Results for “circle”")
        found = wait_for_media(driver)
        assert found[0]["img"] > 0  # fetched with the key, shown from a blob
        stored = driver.execute_script("return sessionStorage.getItem('mmembed.apiKey')")
        assert stored == "right-key"
        driver.refresh()
        wait_for_results(driver, "Results for “circle”")
        dialog = driver.find_element(By.ID, "key-dialog")
        assert dialog.get_attribute("open") is None  # not asked again in this tab
    finally:
        driver.quit()


def test_cards_show_stored_texts_captions_and_older_items(
    module_server_factory, tmp_path: Path, media
) -> None:
    """A text's text, a picture's caption; an item from before texts were kept still reads."""
    server = module_server_factory()
    server.start()
    with media["blue-square.png"].open("rb") as image:
        created = httpx.post(
            f"{server.url}/items",
            files={"file": image},
            data={"text": "A blue square, drawn for the test", "id": "captioned"},
        )
    assert created.status_code == 201, created.text
    for body in (
        {"text": "a square of blue paint", "id": "kept"},
        # how the page stored texts before the server kept them: in the metadata
        {"text": "an older blue note", "id": "older", "metadata": {"text": "an older blue note"}},
    ):
        assert httpx.post(f"{server.url}/items", json=body).status_code == 201
    assert httpx.post(
        f"{server.url}/items?store_text=false", json={"text": "secret blue", "id": "secret"}
    ).is_success
    driver = start_browser(tmp_path / "profile")
    try:
        driver.get(server.url + "/?q=blue+square")
        found = {c["id"]: c for c in wait_for_results(driver, "Results for “blue square”")}
        assert set(found) == {"captioned", "kept", "older", "secret"}
        assert found["kept"]["text"] == "a square of blue paint"
        assert found["older"]["text"] == "an older blue note"
        assert "text" not in found["older"]["meta"]  # shown once, as the text
        assert found["secret"]["text"] == "(text not stored)"
        caption = driver.find_element(By.CSS_SELECTOR, ".card[data-id='captioned'] .caption")
        assert caption.is_displayed() and caption.text == "A blue square, drawn for the test"
        hidden = driver.find_element(By.CSS_SELECTOR, ".card[data-id='kept'] .caption")
        assert not hidden.is_displayed()
    finally:
        driver.quit()

"""The page's "Describe" actions in a real headless Chromium: on a stored sound and on
an uploaded query file, against a real server with a describing checkpoint and the tiny
language model of tests/conftest.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from tests.service.test_page import start_browser, wait_for


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "a small dog barks at the red ball"],
        check=True,
        capture_output=True,
    )
    return path


def test_describe_a_stored_sound_and_an_uploaded_file(
    module_server_factory, describing_checkpoint, tiny_llm_dir, speech, tmp_path
):
    server = module_server_factory(
        model_args=["--checkpoint", str(describing_checkpoint), "--llm", str(tiny_llm_dir)]
    )
    server.start()
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["describe"] == {"available": True, "model": tiny_llm_dir.name, "reason": None}
    added = httpx.post(
        f"{server.url}/items",
        files={"file": ("speech.wav", speech.read_bytes())},
        data={"text": "a small dog"},
    )
    assert added.status_code in (200, 201), added.text
    httpx.post(f"{server.url}/items", data={"text": "a red ball"}).raise_for_status()
    expected = httpx.post(
        f"{server.url}/describe", files={"file": ("speech.wav", speech.read_bytes())}
    ).json()["text"]
    browser = start_browser(tmp_path / "chromium")
    try:
        browser.get(server.url + "/")
        wait_for(
            browser,
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#cards .card")) == 2,
            "the two stored items",
        )
        wait_for(
            browser,
            lambda d: d.find_element(
                By.CSS_SELECTOR, ".card[data-modality='audio'] .describe"
            ).is_displayed(),
            "the Describe button on the sound",
        )
        text_card = browser.find_element(By.CSS_SELECTOR, ".card[data-modality='text'] .describe")
        assert not text_card.is_displayed(), "texts have nothing to describe"
        browser.find_element(By.CSS_SELECTOR, ".card[data-modality='audio'] .describe").click()
        shown = wait_for(
            browser,
            lambda d: (
                (
                    t := d.find_element(
                        By.CSS_SELECTOR, ".card[data-modality='audio'] .description"
                    ).text
                ).startswith("“")
                and t
            ),
            "the description of the stored sound",
        )
        assert f"“{expected}”" in shown and tiny_llm_dir.name in shown
        browser.find_element(By.ID, "query-file").send_keys(str(speech))
        wait_for(
            browser,
            lambda d: d.find_element(By.ID, "describe-query").is_displayed(),
            "the describe-this-file button",
        )
        browser.find_element(By.ID, "describe-query").click()
        query = wait_for(
            browser,
            lambda d: (t := d.find_element(By.ID, "query-description").text).startswith("“") and t,
            "the description of the query file",
        )
        assert f"“{expected}”" in query
    finally:
        browser.quit()


def test_the_describe_buttons_stay_hidden_without_a_language_model(
    module_server_factory, describing_checkpoint, speech, tmp_path
):
    server = module_server_factory(
        model_args=["--checkpoint", str(describing_checkpoint), "--llm", "none"]
    )
    server.start()
    ready = httpx.get(f"{server.url}/readyz").json()["describe"]
    assert ready["available"] is False and "--llm none" in ready["reason"]
    httpx.post(
        f"{server.url}/items", files={"file": ("speech.wav", speech.read_bytes())}
    ).raise_for_status()
    browser = start_browser(tmp_path / "chromium")
    try:
        browser.get(server.url + "/")
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#cards .card"), "the item")
        wait_for(
            browser,
            lambda d: "item" in d.find_element(By.ID, "server-info").text,
            "the server facts",
        )
        assert not browser.find_element(By.CSS_SELECTOR, ".card .describe").is_displayed()
        assert not browser.find_element(By.ID, "describe-query").is_displayed()
    finally:
        browser.quit()

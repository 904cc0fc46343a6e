"""The page in a real browser (headless Debian chromium, Playwright): pick a model, change the
batch size and see the number and the bar change, reopen the link, paste a YAML, see a bad
YAML's error. Fails, not skips, without /usr/bin/chromium: `.ci/run` installs it."""

from __future__ import annotations

import pytest

YAML = """model_name_or_path: Qwen/Qwen2.5-7B-Instruct
finetuning_type: lora
quantization_bit: 4
per_device_train_batch_size: 2
cutoff_len: 1024
bf16: true
learning_rate: 1.0e-4
my_custom_key: 3
"""


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(live_server + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    yield page
    context.close()
    assert not errors, errors


def _changed(page, selector: str, before: str) -> str:
    page.wait_for_function(
        "([selector, before]) => document.querySelector(selector).textContent !== before",
        arg=[selector, before], timeout=15_000)
    return page.text_content(selector)


def _bar(page) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#bar div",
        "segments => Object.fromEntries(segments.map(s => [s.dataset.term, s.style.width]))")


def test_pick_a_model_change_the_batch_and_see_the_answer_move(page, live_server):
    first = page.text_content("#peak")
    assert float(first) > 0 and page.locator("#cards tbody tr").count() >= 10

    page.fill("#f-model", "Qwen/Qwen2.5-7B")
    qwen = _changed(page, "#peak", first)
    assert "model=Qwen%2FQwen2.5-7B" in page.url
    assert "Qwen/Qwen2.5-7B" in page.text_content("#spec-line")
    bar_before = _bar(page)

    page.fill("#f-batch_size", "1")
    smaller = _changed(page, "#peak", qwen)
    assert float(smaller) < float(qwen)
    page.wait_for_function(
        "() => document.querySelector('#spec-line').textContent.includes('batch 1 ')")
    assert _bar(page) != bar_before and "activations" in _bar(page)
    assert "batch_size=1" in page.url

    # the link reproduces the answer
    again = page.context.new_page()
    again.goto(page.url)
    again.wait_for_selector("body[data-ready=true]", timeout=30_000)
    assert again.text_content("#peak") == smaller
    assert again.input_value("#f-batch_size") == "1"
    again.close()


def test_paste_a_yaml_then_a_bad_one(page):
    before = page.text_content("#peak")
    page.click("#tab-yaml")
    page.fill("#yaml", YAML)
    _changed(page, "#peak", before)
    page.wait_for_function(
        "() => document.querySelector('#accounting-list').textContent.includes('my_custom_key')")
    accounting = page.text_content("#accounting-list")
    assert "posted YAML" in accounting and "learning_rate" in accounting
    assert "qlora 4-bit" in page.text_content("#spec-line")
    assert page.is_hidden("#error")

    page.fill("#yaml", "model_name_or_path: [unclosed\n")
    page.wait_for_selector("#error:not([hidden])", timeout=15_000)
    assert "not valid YAML" in page.text_content("#error")
    assert "mode=yaml" in page.url and "yaml=" in page.url


@pytest.mark.slow
def test_simulate_on_request_shows_progress_then_a_column(browser, live_server):
    page = browser.new_page()
    page.goto(live_server + "/?model=HuggingFaceTB%2FSmolLM2-135M"
              "&model_overrides=num_hidden_layers%3D2&batch_size=1&seq_len=64")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    page.click("#simulate")
    page.wait_for_selector("#sim-status:not([hidden])")
    page.wait_for_function(
        "() => document.querySelector('#sim-progress').textContent.startsWith('simulated in')",
        timeout=120_000)
    headers = page.text_content("#estimators thead")
    assert "simulate" in headers and "seed-formula" in headers
    page.close()

"""Take the README's screenshot of the web calculator with Debian's chromium (Playwright).

    .venv/bin/python scripts/web_screenshot.py docs/web-calculator.png

Serves the app on a free loopback port, opens one example link (a QLoRA run of Qwen2.5-7B),
waits for the answer and saves the top of the page as a PNG.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
EXAMPLE = ("/?model=Qwen%2FQwen2.5-7B&method=qlora&quant_bits=4&batch_size=4&seq_len=2048"
           "&precision=bf16&lora_rank=16")


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from vram_ml.web.app import create_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--height", type=int, default=1060)
    args = parser.parse_args()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": args.height})
        page.goto(f"http://127.0.0.1:{port}{EXAMPLE}")
        page.wait_for_selector("body[data-ready=true]", timeout=30_000)
        page.screenshot(path=args.output)
        browser.close()
    server.should_exit = True
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

"""An instance using the SDK, run as its own process by tests/api/test_sdk.py.

    sdk_instance.py API_URL STATE_DIR PROGRESS_FILE FIRST LAST [PAUSE]

Records `api_calls` events `evt-FIRST` .. `evt-(LAST-1)` (with the key in
STATE_DIR/key), noting each index in PROGRESS_FILE once `record` returned,
then prints `recorded` and waits until the API has every event.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tenantry.sdk import Client


def main() -> int:
    api_url, state, progress = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    first, last = int(sys.argv[4]), int(sys.argv[5])
    pause = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    key = (Path(state) / "key").read_text().strip()
    client = Client(api_url, key, state, max_delay=1.0, timeout=2.0)
    with progress.open("a") as noted:
        for index in range(first, last):
            client.record("api_calls", 1, transaction_id=f"evt-{index}")
            noted.write(f"{index}\n")
            noted.flush()
            time.sleep(pause)
    print("recorded", flush=True)
    flushed = client.flush(timeout=180)
    client.close()
    print("flushed" if flushed else "not flushed", flush=True)
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main())

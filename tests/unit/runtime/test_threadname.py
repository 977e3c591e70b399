"""Thread names reach the kernel: `top -H`, `ps -L` and the benchmark's per-thread CPU read them there."""
import sys
import threading
from pathlib import Path

import pytest

from pipeline.runtime.threadname import name_os_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_NAME) is Linux's")
def test_a_named_thread_shows_its_name_cut_to_15_bytes_in_proc():
    seen = {}

    def body():
        name_os_thread("kafka-consumer-with-a-long-name")
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["comm"] == "kafka-consumer-"

"""The model cache both backends keep loaded models in."""

import threading

from gamornet.core.cache import ModelCache


def test_least_recently_used_is_dropped_and_closed():
    closed = []
    cache = ModelCache(2, close=closed.append)
    cache.put("a", "model-a")
    cache.put("b", "model-b")
    assert cache.get("a") == "model-a"  # a is now the most recently used
    cache.put("c", "model-c")
    assert cache.get("b") is None and closed == ["model-b"]
    assert cache.get("a") == "model-a" and cache.get("c") == "model-c" and len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and sorted(closed) == ["model-a", "model-b", "model-c"]


def test_threads_share_one_store():
    cache = ModelCache(1000)

    def fill(offset):
        for k in range(200):
            cache.put((offset, k), k)
            assert cache.get((offset, k)) == k

    threads = [threading.Thread(target=fill, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 800

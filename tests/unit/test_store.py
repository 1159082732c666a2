import threading

import pytest

from memprofile.store import ProfileStore
from tests.builders import make_profile


def _p(i):
    p = make_profile(name=f"p{i}")
    p.id = f"{i:032x}"
    return p


def test_bounded_and_counts_what_it_drops():
    store = ProfileStore(capacity=3)
    for i in range(5):
        store.add(_p(i))
    assert [p.name for p in store.all()] == ["p2", "p3", "p4"]
    assert store.dropped == 2 and store.last().name == "p4"


def test_get_by_position_id_prefix_and_name():
    store = ProfileStore()
    for i in range(3):
        store.add(_p(i))
    assert store.get(-1).name == "p2" and store.get(0).name == "p0"
    assert store.get(f"{1:032x}").name == "p1"
    assert store.get("p0").name == "p0"
    with pytest.raises(KeyError, match="give more characters"):
        store.get("0000")
    with pytest.raises(KeyError, match="no profile with id or name"):
        store.get("zzz")
    with pytest.raises(KeyError, match="no profile at position"):
        store.get(7)


def test_empty_store_says_how_to_fill_it():
    with pytest.raises(KeyError, match="%%memprofile"):
        ProfileStore().get(-1)


def test_listeners_hear_adds_and_clears():
    store = ProfileStore()
    heard = []
    unsubscribe = store.subscribe(lambda event, p: heard.append((event, p and p.name)))
    store.add(_p(1))
    store.clear()
    unsubscribe()
    store.add(_p(2))
    assert heard == [("added", "p1"), ("cleared", None)]


def test_concurrent_adds_lose_nothing_and_respect_the_bound():
    store = ProfileStore(capacity=100)
    profile = _p(0)

    def add_many():
        for _ in range(500):
            store.add(profile)
            store.all()

    threads = [threading.Thread(target=add_many) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(store) == 100 and store.dropped == 8 * 500 - 100

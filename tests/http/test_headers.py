from envoi.http import HeaderMap


def test_case_insensitive_multi_value_and_pseudo() -> None:
    h = HeaderMap([(b"x-a", b"1"), (b"set-cookie", b"a"), (b"set-cookie", b"b")],
                  method=b"GET", path=b"/p", authority=b"h")
    assert h.get("X-A") == "1" and h["x-a"] == "1"
    assert h.get_all("Set-Cookie") == ["a", "b"]
    assert h.get(":method") == "GET" and h.get("host") == "h" and h.get(":authority") == "h"
    h.set("set-cookie", "c")
    assert h.get_all("set-cookie") == ["c"]
    h.add("X-New", "v")
    assert ("x-new", "v") in h.items()
    h.set(":path", "/q")
    assert h.path == b"/q"
    assert h.remove("x-a") == 1 and "x-a" not in h
    h.set_default("x-new", "other")
    assert h.get("x-new") == "v"
    assert next(iter(h)) == (":method", "GET")
    assert h.byte_size > 0 and len(h.copy()) == len(h)


def test_status_pseudo_header() -> None:
    h = HeaderMap.from_pairs([(":status", "204"), ("Server", "x")])
    assert h.status == 204 and h.get(":status") == "204" and h.get("server") == "x"

"""The bare WSGI app the benchmark compares against: read the body, answer `{}`."""


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "3")])
    return [b"{}\n"]

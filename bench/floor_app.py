"""The stack's floor: Flask-RESTful storing each pushed chunk with an fdatasync, nothing else.

No validation, lock, 416 or ack_file logic, and pings are not recorded: what Flask,
Flask-RESTful and uWSGI plus one fsync per chunk cost on this machine, for comparison.
"""

import os

from flask import Flask, request
from flask_restful import Api, Resource

STORE_DIR = os.environ["FLOOR_STORE_DIR"]


class Alive(Resource):
    def post(self, hw_id):
        return {}


class Push(Resource):
    def put(self, hw_id, path):
        body = request.environ["wsgi.input"].read(int(request.environ["CONTENT_LENGTH"]))
        fd = os.open(os.path.join(STORE_DIR, f"{hw_id}-{path.replace('/', '_')}"),
                     os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, body, int(request.args["offset"]))
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return {"ack_file": [path.rsplit("/", 1)[-1], 0, 0]}


application = Flask(__name__)
application.add_url_rule("/", "index", lambda: "floor")  # the launcher waits for a 200 here
api = Api(application)
api.add_resource(Alive, "/ou/<hw_id>/alive")
api.add_resource(Push, "/ou/<hw_id>/push-sequential/<path:path>")

# mypy: ignore-errors
# (untyped on purpose: it is written exactly as the seed document writes it)
"""An app written exactly like the seed document's example; only the import line differs.

Run: python -m tests.apps.seed_app --port N --session-dir DIR [--module bench.reference_session]
It prints "listening on PORT" once it accepts connections (--port 0: a free port).
"""

import argparse
import importlib
import sys

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--session-dir", default="sessions")
parser.add_argument("--module", default="tornsession")
args = parser.parse_args()

# The one line an app changes: `import session` becomes `import tornsession as session`.
session = importlib.import_module(args.module)


class BaseHandler(tornado.web.RequestHandler):
    def __init__(self, *argc, **argkw):
        super().__init__(*argc, **argkw)
        self.session = session.TornadoSession(self.application.session_manager, self)


class MainHandler(BaseHandler):
    def get(self):
        self.session["blah"] = self.session.get("blah", 0) + 1
        self.session.save()
        self.write(str(self.session["blah"]))


class PeekHandler(BaseHandler):
    def get(self):
        self.write(str(self.session.get("blah", 0)))


class Application(tornado.web.Application):
    def __init__(self):
        handlers = [(r"/", MainHandler), (r"/peek", PeekHandler)]
        settings = dict(
            cookie_secret="y+iqu2psQRyVqvC0UQDB+iDnfI5g3E5Yivpm62TDmUU=",
            session_secret="ttesttt",
            session_dir=args.session_dir,
        )
        tornado.web.Application.__init__(self, handlers, **settings)
        self.session_manager = session.TornadoSessionManager(
            settings["session_secret"], settings["session_dir"]
        )


def main(port):
    app = Application()
    # --port 0: the system picks a free port, printed for the test that started this process.
    sockets = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    tornado.httpserver.HTTPServer(app).add_sockets(sockets)
    print(f"listening on {sockets[0].getsockname()[1]}", flush=True)
    sys.stdout.flush()
    tornado.ioloop.IOLoop.current().start()


if __name__ == "__main__":
    main(args.port)

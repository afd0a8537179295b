"""`edge-ad station models|promote|rollback`: the models a station has run, and switching its production model.

    edge-ad station models /var/lib/edge-ad/line3-st7.db          # every package, version, dataset, signer, parts
    edge-ad station promote http://st7:8080 shadow --user anna   # the shadow model becomes production
    edge-ad station promote http://st7:8080 SHA256 --user anna   # or a model of the register
    edge-ad station rollback http://st7:8080 --user anna          # back to the model before the last switch

`models` reads the traceability database (SQLite file or postgresql:// URL). `promote` and `rollback` are clients of
the station's HMI API (`serve --ui`): they log in as an engineer (password from $EDGE_AD_HMI_PASSWORD, else asked
for), send the request with the session's CSRF token, and print what the station did. The switch happens between
two parts; the station audits it and rolls a promoted model back by itself when it leaves its band
(`--rollback-*` of serve).
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.request
from datetime import datetime
from http.cookiejar import CookieJar
from typing import Any

from edge_ad.errors import ConfigError

HELP = "a station's model register, and promote/rollback of its production model over the HMI API"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from edge_ad.cli.common import add_json

    sub = p.add_subparsers(dest="action", required=True, metavar="{models,promote,rollback}")
    m = sub.add_parser("models", help="every package the station has run (traceability database)")
    m.add_argument("db", help="the station's database: SQLite file or postgresql:// URL (serve --db)")
    m.add_argument("--station", help="only this station (a plant database holds several)")
    add_json(m, "the register as JSON")
    for name, helptext in (("promote", "make the shadow model (or a registered model) production"),
                           ("rollback", "switch back to the model that ran before the last switch")):
        q = sub.add_parser(name, help=helptext, description=helptext)
        q.add_argument("url", help="the station's HMI, e.g. http://station7:8080 (serve --ui)")
        q.add_argument("--user", required=True, help="an engineer of the HMI's users file")
        if name == "promote":
            q.add_argument("which", metavar="shadow|DIGEST",
                           help="`shadow` (the station's shadow model) or the sha256 of a registered model "
                                "(`station models`)")
        add_json(q, "the station's answer")


def _when(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M") if t else "-"


def _client(url: str, user: str) -> tuple[Any, str]:
    """Log in to the HMI; (opener with the session cookie, CSRF token)."""
    import getpass

    password = os.environ.get("EDGE_AD_HMI_PASSWORD") or getpass.getpass(f"HMI password of {user}: ")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    answer = _post(opener, url, "/api/login", {"user": user, "password": password}, "")
    return opener, str(answer.get("csrf", ""))


def _post(opener: Any, url: str, path: str, body: dict[str, Any], csrf: str) -> dict[str, Any]:
    req = urllib.request.Request(url.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", "x-csrf-token": csrf})
    try:
        with opener.open(req, timeout=60) as r:
            out = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            msg = json.loads(e.read() or b"{}").get("error") or e.reason
        except ValueError:
            msg = e.reason
        raise ConfigError(f"{url}{path}: the station answered {e.code}: {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"{url}{path}: cannot reach the station's HMI: {e}") from None
    return out if isinstance(out, dict) else {}


def run(args: argparse.Namespace) -> int:
    from edge_ad.cli.common import human_out, write_json_output

    out = human_out(args)
    if args.action == "models":
        from edge_ad.traceability import open_readonly

        store = open_readonly(args.db)
        try:
            rows = store.models(args.station)
        finally:
            store.close()
        write_json_output(args.json, rows)
        print(f"{'station':10s} {'model':16s} {'prec':5s} {'digest':12s} {'version':20s} {'dataset':12s} "
              f"{'signer':10s} {'first seen':16s} {'parts':>7s}  last deployment", file=out)
        for r in rows:
            last = r["last_deployment"]
            dep = f"{last['action']} as {last['role']} {_when(last['time'])}" + (
                f" by {last['user']}" if last and last.get("user") else "") if last else "-"
            print(f"{r['station'][:10]:10s} {(r['name'] or '-')[:16]:16s} {(r['precision'] or '-'):5s} "
                  f"{r['digest'][:12]:12s} {(r['version'] or '-')[:20]:20s} {(r['dataset_revision'] or '-')[:12]:12s} "
                  f"{(r['signer'] or 'unsigned')[:10]:10s} {_when(r['first_seen']):16s} {r['parts']:>7d}  {dep}",
                  file=out)
        print(f"\n{len(rows)} model(s)", file=out)
        return 0
    opener, csrf = _client(args.url, args.user)
    if args.action == "promote":
        answer = _post(opener, args.url, "/api/model/promote", {"target": args.which}, csrf)
        print(f"promoted {answer.get('digest', '?')[:12]} ({answer.get('package')}) as recipe {answer.get('recipe')}: "
              f"active from the next part", file=out)
    else:
        answer = _post(opener, args.url, "/api/model/rollback", {}, csrf)
        print(f"rolling back from recipe {answer.get('from')} to {answer.get('to')}: active from the next part",
              file=out)
    write_json_output(args.json, answer)
    return 0


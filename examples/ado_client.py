#!/usr/bin/env python3
"""A client of ado in Python, written from docs/schemas alone (no ado code, no packages).

It speaks the NATS protocol over a plain socket, encodes and decodes MessagePack, and
checks every payload against the JSON Schemas in docs/schemas:

  python3 examples/ado_client.py --server nats://127.0.0.1:4222 run --noop a,b
      submits a run of two `noop` tasks (b needs a), follows its events to the end, then
      asks the API for its tasks' status. Exit 0 when the run succeeded. With --via-api
      the run is submitted through the API's runs.submit (JSON; ok once it is stored)
      instead of a MessagePack publish to the submit stream.
  python3 examples/ado_client.py run --graph graph.json --repo .
      submits a graph (JSON, as docs/schemas/run.submit.v1.json describes `graph`) that
      works on a repository: its HEAD is the run's base commit.
  python3 examples/ado_client.py api runs.list '{"active": true}'
      calls one API endpoint and prints the reply.

Options: --server (or ADO_SERVER; user:password@ or a token@ in the URL work, nkeys need
a crypto library the standard library lacks), --prefix (ADO_PREFIX, default ado),
--schemas (the docs/schemas directory; default: beside this file).
"""
import argparse
import json
import os
import random
import re
import socket
import string
import struct
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from urllib.parse import urlparse

# --------------------------------------------------------------------------- MessagePack


def mp_pack(v):
    """Plain MessagePack, as docs/schemas/README.md says ado reads (no extension types)."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 128:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack("b", v)
        if 0 <= v < 2**32:
            return b"\xce" + struct.pack(">I", v)
        if 0 <= v < 2**64:
            return b"\xcf" + struct.pack(">Q", v)
        return b"\xd3" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode("utf-8")
        n = len(b)
        if n < 32:
            return bytes([0xA0 | n]) + b
        if n < 256:
            return b"\xd9" + bytes([n]) + b
        if n < 65536:
            return b"\xda" + struct.pack(">H", n) + b
        return b"\xdb" + struct.pack(">I", n) + b
    if isinstance(v, (bytes, bytearray)):
        n = len(v)
        return (b"\xc4" + bytes([n]) if n < 256 else b"\xc6" + struct.pack(">I", n)) + bytes(v)
    if isinstance(v, (list, tuple)):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n) if n < 65536 else b"\xdd" + struct.pack(">I", n))
        return head + b"".join(mp_pack(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n) if n < 65536 else b"\xdf" + struct.pack(">I", n))
        return head + b"".join(mp_pack(str(k)) + mp_pack(x) for k, x in v.items())
    raise TypeError(f"cannot pack {type(v).__name__}")


def mp_unpack(data):
    value, end = _mp_read(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the MessagePack value")
    return value


def _mp_read(d, i):
    t = d[i]
    i += 1
    if t <= 0x7F:
        return t, i
    if t >= 0xE0:
        return t - 0x100, i
    if 0x80 <= t <= 0x8F:
        return _mp_map(d, i, t & 0x0F)
    if 0x90 <= t <= 0x9F:
        return _mp_array(d, i, t & 0x0F)
    if 0xA0 <= t <= 0xBF:
        n = t & 0x1F
        return d[i : i + n].decode("utf-8"), i + n
    fixed = {0xC0: None, 0xC2: False, 0xC3: True}
    if t in fixed:
        return fixed[t], i
    sizes = {0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q", 0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q", 0xCA: ">f", 0xCB: ">d"}
    if t in sizes:
        fmt = sizes[t]
        n = struct.calcsize(fmt)
        return struct.unpack(fmt, d[i : i + n])[0], i + n
    lengths = {0xD9: ">B", 0xDA: ">H", 0xDB: ">I", 0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I"}
    if t in lengths:
        fmt = lengths[t]
        w = struct.calcsize(fmt)
        n = struct.unpack(fmt, d[i : i + w])[0]
        i += w
        if t in (0xD9, 0xDA, 0xDB):
            return d[i : i + n].decode("utf-8"), i + n
        if t in (0xC4, 0xC5, 0xC6):
            return bytes(d[i : i + n]), i + n
        if t in (0xDC, 0xDD):
            return _mp_array(d, i, n)
        return _mp_map(d, i, n)
    raise ValueError(f"MessagePack type 0x{t:02x} is not plain MessagePack (ado sends none)")


def _mp_array(d, i, n):
    out = []
    for _ in range(n):
        v, i = _mp_read(d, i)
        out.append(v)
    return out, i


def _mp_map(d, i, n):
    out = {}
    for _ in range(n):
        k, i = _mp_read(d, i)
        v, i = _mp_read(d, i)
        out[k] = v
    return out, i


# --------------------------------------------------------------------------- JSON Schema (the subset docs/schemas uses)


class SchemaError(Exception):
    pass


def validate(value, schema, path="$"):
    """Raises SchemaError naming the first place `value` breaks `schema` (draft 2020-12 subset)."""
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: must be {schema['const']!r}, is {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: must be one of {schema['enum']}, is {value!r}")
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_is_type(value, x) for x in types):
            raise SchemaError(f"{path}: must be {' or '.join(types)}, is {type(value).__name__}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise SchemaError(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise SchemaError(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{path}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: above {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            raise SchemaError(f"{path}: must be above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SchemaError(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for n, item in enumerate(value):
                validate(item, schema["items"], f"{path}[{n}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                raise SchemaError(f"{path}: '{k}' is required")
        for k, v in value.items():
            if k in props:
                validate(v, props[k], f"{path}.{k}")
            elif schema.get("additionalProperties") is False:
                raise SchemaError(f"{path}: unknown field '{k}'")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(v, schema["additionalProperties"], f"{path}.{k}")
            if "propertyNames" in schema:
                validate(k, schema["propertyNames"], f"{path} key {k!r}")
    for word in ("oneOf", "anyOf"):
        if word in schema:
            options = schema[word]
            disc = schema.get("discriminator", {}).get("propertyName")
            if disc and isinstance(value, dict):
                # Dispatch on the discriminator, as the README asks (a type we do not know is the caller's to skip).
                options = [o for o in options if o.get("properties", {}).get(disc, {}).get("const") == value.get(disc)]
                if not options:
                    raise SchemaError(f"{path}: unknown {disc} {value.get(disc)!r}")
            errors = []
            for o in options:
                try:
                    validate(value, o, path)
                    break
                except SchemaError as e:
                    errors.append(str(e))
            else:
                raise SchemaError(f"{path}: matches none of {word}: {'; '.join(errors[:3])}")


def _is_type(v, t):
    return {
        "string": isinstance(v, str),
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": isinstance(v, bool),
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "null": v is None,
    }.get(t, True)


# --------------------------------------------------------------------------- NATS over a socket


class Nats:
    """The NATS client protocol: CONNECT, PUB/HPUB, SUB, MSG/HMSG, PING/PONG. One thread, blocking reads."""

    def __init__(self, url, name="ado-python-example"):
        u = urlparse(url if "://" in url else f"nats://{url}")
        self.sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=30)
        self.buf = b""
        self.sid = 0
        # Messages of other subscriptions that arrived while a request waited for its
        # reply (a push consumer starts delivering before its create request is answered).
        self.pending = []
        self.subs = {}
        info = self._line()
        if not info.startswith("INFO "):
            raise ConnectionError(f"not a NATS server: {info[:80]}")
        self.info = json.loads(info[5:])
        opts = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True, "protocol": 1, "name": name, "lang": "python-stdlib", "version": "0.1"}
        if u.username and u.password is not None:
            opts.update(user=u.username, **{"pass": u.password})
        elif u.username:
            opts["auth_token"] = u.username
        self._send(f"CONNECT {json.dumps(opts)}\r\nPING\r\n".encode())
        while True:
            line = self._line()
            if line == "PONG":
                break
            if line.startswith("-ERR"):
                raise ConnectionError(line)
        self.inbox = "_INBOX." + "".join(random.choices(string.ascii_letters + string.digits, k=22))

    def _send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode()

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def subscribe(self, subject):
        self.sid += 1
        self.subs[self.sid] = subject
        self._send(f"SUB {subject} {self.sid}\r\n".encode())
        return self.sid

    def publish(self, subject, data, headers=None, reply=None):
        r = f" {reply}" if reply else ""
        if headers:
            h = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            hb = h.encode()
            self._send(f"HPUB {subject}{r} {len(hb)} {len(hb) + len(data)}\r\n".encode() + hb + data + b"\r\n")
        else:
            self._send(f"PUB {subject}{r} {len(data)}\r\n".encode() + data + b"\r\n")

    def next_msg(self, timeout=30):
        """The next message: (subject, sid, headers dict, status, data). Answers the server's PINGs meanwhile."""
        if self.pending:
            return self.pending.pop(0)
        return self._read_msg(timeout)

    def _read_msg(self, timeout):
        """The next message read from the socket (next_msg without what was set aside)."""
        deadline = time.time() + timeout
        while True:
            self.sock.settimeout(max(0.1, deadline - time.time()))
            try:
                line = self._line()
            except socket.timeout:
                raise TimeoutError("no message in time") from None
            if line == "PING":
                self._send(b"PONG\r\n")
            elif line.startswith("-ERR"):
                raise ConnectionError(f"the server says {line}")
            elif line.startswith("MSG "):
                parts = line.split(" ")
                return parts[1], int(parts[2]), {}, None, self._exact(int(parts[-1]))
            elif line.startswith("HMSG "):
                parts = line.split(" ")
                hlen, total = int(parts[-2]), int(parts[-1])
                raw = self._exact(total)
                head, data = raw[:hlen].decode(), raw[hlen:]
                lines = head.split("\r\n")
                status = lines[0][len("NATS/1.0") :].strip() or None
                headers = {}
                for l in lines[1:]:
                    if ":" in l:
                        k, v = l.split(":", 1)
                        headers[k.strip()] = v.strip()
                return parts[1], int(parts[2]), headers, status, data

    def request(self, subject, data, headers=None, timeout=30):
        """One request, its reply (on an inbox of its own)."""
        reply = f"{self.inbox}.{self.sid + 1}"
        sid = self.subscribe(reply)
        self._send(f"UNSUB {sid} 1\r\n".encode())
        self.publish(subject, data, headers, reply)
        while True:
            msg = self._read_msg(timeout)
            subj, got_sid, headers_in, status, body = msg
            if got_sid != sid:
                self.pending.append(msg)  # another subscription's: next_msg returns it later
                continue
            if status and status.startswith("503"):
                raise ConnectionError(f"no responders on {subject}: is ado (its api actor) running with this prefix?")
            return headers_in, body


# --------------------------------------------------------------------------- ado, from docs/schemas


class Ado:
    def __init__(self, nc, prefix, schemas_dir):
        self.nc = nc
        self.prefix = prefix
        self.dir = schemas_dir
        self.cache = {}

    def schema(self, name):
        if name not in self.cache:
            with open(os.path.join(self.dir, f"{name}.v1.json"), encoding="utf-8") as f:
                self.cache[name] = json.load(f)
        return self.cache[name]

    def api(self, endpoint, request):
        """Calls an endpoint (README: the API): JSON in, JSON out, both checked against their schemas."""
        validate(request, self.schema(f"api.{endpoint}.request"))
        headers, body = self.nc.request(f"{self.prefix}.api.{endpoint}", json.dumps(request).encode())
        if headers.get("Ado-Compression") == "deflate":
            body = zlib.decompress(body)  # a large reply (a run's graph), as the README says
        reply = json.loads(body)
        validate(reply, self.schema(f"api.{endpoint}.reply"))
        if headers.get("Ado-Schema") != f"api.{endpoint}.reply/1":
            raise SchemaError(f"reply header Ado-Schema is {headers.get('Ado-Schema')!r}")
        return reply

    def submit(self, run):
        """Publishes a run.submit (README: Submit a run) and waits for JetStream's acknowledgement."""
        validate(run, self.schema("run.submit"))
        headers = {"Ado-Schema": "run.submit/1", "Nats-Msg-Id": run["runId"]}
        _, body = self.nc.request(f"{self.prefix}.submit", mp_pack(run), headers)
        ack = json.loads(body)
        if "error" in ack:
            raise RuntimeError(f"the submission was not stored: {ack['error']}")
        return ack

    def follow(self, run_id, on_event, timeout=120):
        """A push consumer on the events stream filtered to the run, from its first event (README: Follow a run)."""
        stream = self.prefix.upper().replace("-", "_") + "_EVENTS"
        deliver = f"{self.nc.inbox}.events"
        sid = self.nc.subscribe(deliver)
        config = {"deliver_subject": deliver, "filter_subject": f"{self.prefix}.evt.{run_id}.>", "deliver_policy": "all", "ack_policy": "none", "replay_policy": "instant", "inactive_threshold": 60 * 10**9}
        _, body = self.nc.request(f"$JS.API.CONSUMER.CREATE.{stream}", json.dumps({"stream_name": stream, "config": config}).encode())
        created = json.loads(body)
        if "error" in created:
            raise RuntimeError(f"cannot follow the run's events: {created['error']}")
        event_schema = self.schema("event")
        deadline = time.time() + timeout
        while True:
            _, got_sid, headers, _, data = self.nc.next_msg(max(1, deadline - time.time()))
            if got_sid != sid or not data:
                continue
            if headers.get("Ado-Schema") != "event/1":
                continue
            if headers.get("Ado-Compression") == "deflate":
                data = zlib.decompress(data)
            event = mp_unpack(data)
            types = [o["properties"]["type"]["const"] for o in event_schema["oneOf"]]
            if event.get("type") not in types:
                continue  # a newer ado's event type: skipped, as the README says
            validate(event, event_schema)
            on_event(event)
            if event["type"] in ("run.completed", "run.rejected"):
                return event


def now():
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description="An ado client from docs/schemas alone.")
    p.add_argument("--server", default=os.environ.get("ADO_SERVER", "nats://127.0.0.1:4222"))
    p.add_argument("--prefix", default=os.environ.get("ADO_PREFIX", "ado"))
    p.add_argument("--schemas", default=os.path.join(here, "..", "docs", "schemas"))
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="submit a run, follow its events, ask the API for its tasks")
    r.add_argument("--noop", help="comma-separated task ids of noop tasks, each needing the one before")
    r.add_argument("--graph", help="a graph as JSON")
    r.add_argument("--repo", help="the repository the graph's tasks work on (its HEAD is the base)")
    r.add_argument("--via-api", action="store_true", help="submit through the API's runs.submit instead of the submit stream")
    a = sub.add_parser("api", help="call one API endpoint")
    a.add_argument("endpoint")
    a.add_argument("request", nargs="?", default="{}")
    args = p.parse_args(argv)

    nc = Nats(args.server)
    ado = Ado(nc, args.prefix, args.schemas)
    if args.cmd == "api":
        reply = ado.api(args.endpoint, json.loads(args.request))
        print(json.dumps(reply, indent=2))
        return 0 if reply["ok"] else 1

    if args.graph:
        with open(args.graph, encoding="utf-8") as f:
            graph = json.load(f)
    elif args.noop:
        ids = [x for x in args.noop.split(",") if x]
        graph = {"name": "python example", "tasks": [{"id": t, "agent": "noop", **({"needs": [ids[n - 1]]} if n else {})} for n, t in enumerate(ids)]}
    else:
        p.error("run needs --noop or --graph")
    run_id = "py-" + "".join(random.choices(string.ascii_lowercase + string.digits, k=10))
    run = {"type": "run.submit", "runId": run_id, "graph": graph, "submittedAt": now(), "submittedBy": f"{os.environ.get('USER', 'python')}@{socket.gethostname()}"}
    if args.repo:
        run["repo"] = os.path.abspath(args.repo)
        run["baseCommit"] = subprocess.check_output(["git", "-C", args.repo, "rev-parse", "HEAD"], text=True).strip()
    before = ado.api("runs.list", {})
    print(f"api runs.list: {len(before['result']['runs'])} run(s) known")
    if args.via_api:
        # The same run as JSON; the API validates the graph (bad_request says what is wrong) and replies once it is stored.
        request = {k: v for k, v in run.items() if k in ("runId", "graph", "repo", "baseCommit")}
        request["by"] = run["submittedBy"]
        reply = ado.api("runs.submit", request)
        if not reply["ok"]:
            print(f"api runs.submit: {reply['error']['code']}: {reply['error']['message']}", file=sys.stderr)
            return 1
        print(f"submitted {run_id} (api runs.submit, seq {reply['result']['seq']})")
    else:
        ack = ado.submit(run)
        print(f"submitted {run_id} (stream {ack['stream']}, seq {ack['seq']})")

    def show(e):
        task = f" {e['taskId']}" if "taskId" in e else ""
        extra = f" {e['status']}" if e["type"] == "run.completed" else (f" {e.get('reason', '')}" if e["type"] == "run.rejected" else "")
        print(f"event {e['type']}{task}{extra}", flush=True)

    end = ado.follow(run_id, show)
    status = ado.api("tasks.status", {"runId": run_id})
    if status["ok"]:
        for t in status["result"]["tasks"]:
            print(f"api tasks.status: {t['id']} {t['status']} (attempts {t['attempts']})")
    else:
        print(f"api tasks.status: {status['error']['code']}: {status['error']['message']}")
    return 0 if end["type"] == "run.completed" and end["status"] == "succeeded" else 1


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except (ConnectionError, TimeoutError, SchemaError, RuntimeError, OSError) as e:
        print(f"ado_client.py: {e}", file=sys.stderr)
        sys.exit(2)

#!/usr/bin/env python3
"""Load driver and helpers for scripts/nginx-replicas (standard library only).

Subcommands:

  free-ports N [--prefer P ...]
      Print N free TCP ports on 127.0.0.1, one per line: the preferred ones when they are
      free, otherwise ports the kernel hands out.

  wait-health URL [URL ...] [--timeout S] [--pid PID ...]
      Wait until `GET URL` answers 200 for every URL. Fails early when one of the given
      processes has exited.

  load [--url URL]
      POST rudder-style batches to a /customTransform endpoint and check every answer
      against the contract rudder-server relies on (see check_response). Settings come
      from the environment, each bounded:

        LOAD_REQUESTS     requests to send                 default 200   (1..10000)
        LOAD_BATCH        events per request               default 200   (1..1000)
        LOAD_CONCURRENCY  concurrent connections/threads   default 4     (1..32)
        LOAD_TIMEOUT      overall time limit, seconds      default 120   (1..600)
        LOAD_REQUEST_TIMEOUT  per request, seconds         default 30    (1..300)
        LOAD_INTERNAL_PCT percent of internal-email events default 10    (0..100)
        LOAD_SEED         random seed for the event mix    default 1
        LOAD_ALLOW_ERRORS 1: a statusCode 400 answer is reported, not a failure
        LOAD_GZIP_SUPPORT 0: do not send X-Feature-Gzip-Support: ?1
        LOAD_GZIP_REQUEST 1: send the bodies gzip-compressed (Content-Encoding: gzip)
        LOAD_EXPECT_UPSTREAMS  fail unless answers came from at least this many
                          distinct upstreams (header X-Luaform-Upstream), default 0
        LOAD_REPORT_JSON  also write the summary as JSON to this file

      Exit status: 0 when every check passed, 1 on any violation, 2 on bad usage.

Only loopback addresses are ever contacted: any other URL is refused.
"""

import argparse
import gzip
import http.client
import ipaddress
import json
import os
import random
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

TRANSFORMATION = "ignore-internal-emails"
SOURCE_ID = "src-1"
DESTINATION_ID = "dst-1"
WORKSPACE_ID = "ws-1"
MAX_EXAMPLES = 15  # violations printed in full; all of them are counted


def fail_usage(message):
    print(f"nginx_load: {message}", file=sys.stderr)
    sys.exit(2)


def require_loopback(url):
    """Returns (host, port, path) of an http:// URL whose host is a loopback IP literal."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        fail_usage(f"only http:// URLs are supported: {url}")
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        fail_usage(f"refusing non-loopback address {host!r} (use 127.0.0.1 or ::1)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, parts.port or 80, path


def env_int(name, default, low, high):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        fail_usage(f"{name}={raw!r} is not an integer")
    if not low <= value <= high:
        fail_usage(f"{name}={value} is out of range {low}..{high}")
    return value


# ---------------------------------------------------------------------------------------
# free-ports
# ---------------------------------------------------------------------------------------

def port_is_free(port):
    """True when a server could listen on 127.0.0.1:port. SO_REUSEADDR as servers set it,
    so connections of an earlier run still in TIME_WAIT do not count as taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cmd_free_ports(args):
    """Slot i gets the i-th preferred port when it is free, else a port from the kernel."""
    prefer = list(args.prefer or [])
    chosen = []
    holders = []  # kernel-assigned ports stay bound until all are picked, so none repeats
    try:
        for i in range(args.count):
            port = prefer[i] if i < len(prefer) else None
            if port is not None and port not in chosen and port_is_free(port):
                chosen.append(port)
                continue
            while True:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.bind(("127.0.0.1", 0))
                holders.append(s)
                port = s.getsockname()[1]
                if port not in chosen and port not in prefer:
                    chosen.append(port)
                    break
    finally:
        for s in holders:
            s.close()
    for port in chosen:
        print(port)
    return 0


# ---------------------------------------------------------------------------------------
# wait-health
# ---------------------------------------------------------------------------------------

def process_gone(pid):
    try:
        with open(f"/proc/{pid}/stat", "r", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def health_ok(url, timeout):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as r:
            r.read(65536)
            return r.status == 200
    except (urllib.error.URLError, OSError, http.client.HTTPException):
        return False


def cmd_wait_health(args):
    for url in args.urls:
        require_loopback(url)
    # Never go through a proxy, whatever the environment says.
    urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))
    deadline = time.monotonic() + args.timeout
    pending = list(args.urls)
    while pending:
        for pid in args.pid or []:
            if process_gone(pid):
                print(f"nginx_load: process {pid} exited before {' '.join(pending)} became healthy",
                      file=sys.stderr)
                return 1
        pending = [u for u in pending if not health_ok(u, timeout=2)]
        if not pending:
            break
        if time.monotonic() >= deadline:
            print(f"nginx_load: no 200 from {' '.join(pending)} within {args.timeout:g} s",
                  file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


# ---------------------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------------------

class Batch:
    """One request: the envelopes sent and what each jobId should get back."""

    def __init__(self, index, size, run_id, rng, internal_pct):
        self.index = index
        self.envelopes = []
        self.by_job = {}       # jobId -> envelope
        self.internal = set()  # jobIds whose event carries an internal email
        for i in range(size):
            job_id = index * size + i + 1
            is_internal = rng.random() * 100 < internal_pct
            envelope = make_envelope(job_id, run_id, is_internal, rng)
            self.envelopes.append(envelope)
            self.by_job[job_id] = envelope
            if is_internal:
                self.internal.add(job_id)
        self.body = json.dumps(self.envelopes, separators=(",", ":")).encode("utf-8")

    def compress(self):
        self.body = gzip.compress(self.body, compresslevel=1)


def make_envelope(job_id, run_id, internal, rng):
    message_id = f"lf-{run_id}-{job_id}"
    if internal:
        # Domains listed in transformations/ignore-internal-emails.lua (matched case-insensitively).
        email = rng.choice([f"someone{job_id}@rudderstack.com",
                            f"Staff.{job_id}@RudderStack.com",
                            "someone@rudderstack.com"])
    else:
        email = f"customer{job_id}@example.com"
    cents = rng.randrange(100, 100000)
    message = {
        "type": "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": f"user-{job_id}",
        "anonymousId": f"anon-{job_id % 97}",
        "channel": "web",
        "properties": {
            "order_id": f"order-{job_id}",
            "revenue": cents / 100,
            "currency": "USD",
            "products": [{"sku": f"sku-{cents % 13}", "quantity": 1 + cents % 3}],
        },
        "context": {
            "traits": {"email": email, "plan": rng.choice(["free", "pro", "enterprise"])},
            "library": {"name": "luaform-nginx-load", "version": "1"},
            "locale": "en-US",
        },
        "integrations": {"All": True},
        "originalTimestamp": "2026-08-01T10:00:00.000Z",
        "sentAt": "2026-08-01T10:00:01.000Z",
    }
    metadata = {
        "messageId": message_id,
        "sourceId": SOURCE_ID,
        "destinationId": DESTINATION_ID,
        "workspaceId": WORKSPACE_ID,
        "jobId": job_id,
    }
    return {
        "message": message,
        "metadata": metadata,
        "destination": {"Transformations": [{"VersionID": TRANSFORMATION}]},
    }


def short(value, limit=160):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def check_response(batch, status, headers, body, allow_errors):
    """Checks one /customTransform answer. Returns (violations, counts, notes).

    The contract (design/rudder-contract.md sections 3-4):
      * HTTP 200 and header `apiVersion: 2` (rudder-server rejects anything else);
      * the body is a JSON array of {output?, metadata, statusCode, error?};
      * every input jobId is answered exactly once here (ignore-internal-emails never fans
        out): 200 with an object `output`, 298 (filtered, X-Feature-Filter-Code) or 400
        with a string `error`;
      * 298 exactly for the internal-email events, 200 for all the others;
      * the input metadata is echoed (every key sent comes back with the same value);
      * a kept event is returned unchanged (the transformation returns it as is).
    Notes are reported but do not fail the run (298 entries not listed first).
    """
    violations, notes = [], []
    counts = {"200": 0, "298": 0, "400": 0}
    tag = f"request {batch.index}"
    if status != 200:
        violations.append(f"{tag}: HTTP {status}, expected 200: {short(body.decode('utf-8', 'replace'))}")
        return violations, counts, notes
    api_version = headers.get("apiVersion")
    if api_version != "2":
        violations.append(f"{tag}: header apiVersion is {api_version!r}, expected '2'")
    if (headers.get("Content-Encoding") or "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as e:
            violations.append(f"{tag}: Content-Encoding gzip but the body does not decompress: {e}")
            return violations, counts, notes
    try:
        entries = json.loads(body)
    except ValueError as e:
        violations.append(f"{tag}: body is not JSON ({e}): {short(body.decode('utf-8', 'replace'))}")
        return violations, counts, notes
    if not isinstance(entries, list):
        violations.append(f"{tag}: body is {type(entries).__name__}, expected a JSON array")
        return violations, counts, notes

    answers = {}
    seen_non_filtered = False
    filtered_late = 0
    for pos, entry in enumerate(entries):
        where = f"{tag} entry {pos}"
        if not isinstance(entry, dict):
            violations.append(f"{where}: not an object: {short(entry)}")
            continue
        metadata = entry.get("metadata")
        job_id = metadata.get("jobId") if isinstance(metadata, dict) else None
        if isinstance(job_id, bool) or not isinstance(job_id, int):
            violations.append(f"{where}: no integer metadata.jobId: {short(entry)}")
            continue
        sent = batch.by_job.get(job_id)
        if sent is None:
            violations.append(f"{where}: jobId {job_id} was not in the request")
            continue
        answers[job_id] = answers.get(job_id, 0) + 1
        code = entry.get("statusCode")
        if code == 298:
            if seen_non_filtered:
                filtered_late += 1
            counts["298"] += 1
            if job_id not in batch.internal:
                violations.append(f"{where}: jobId {job_id} dropped (298) but its email "
                                  f"{sent['message']['context']['traits']['email']!r} is not internal")
            if "output" in entry and entry["output"] is not None:
                violations.append(f"{where}: jobId {job_id}: 298 entry carries an output")
        elif code == 200:
            seen_non_filtered = True
            counts["200"] += 1
            if job_id in batch.internal:
                violations.append(f"{where}: jobId {job_id} kept (200) but its email "
                                  f"{sent['message']['context']['traits']['email']!r} is internal")
            output = entry.get("output")
            if not isinstance(output, dict):
                violations.append(f"{where}: jobId {job_id}: statusCode 200 without an object output")
            elif output != sent["message"]:
                diff = sorted(k for k in set(output) | set(sent["message"])
                              if output.get(k) != sent["message"].get(k))
                violations.append(f"{where}: jobId {job_id}: output differs from the event sent "
                                  f"(keys {', '.join(diff)})")
        elif code == 400:
            seen_non_filtered = True
            counts["400"] += 1
            error = entry.get("error")
            if not isinstance(error, str) or not error:
                violations.append(f"{where}: jobId {job_id}: statusCode 400 without an error string")
            elif not allow_errors:
                violations.append(f"{where}: jobId {job_id}: unexpected error: {short(error)}")
        else:
            seen_non_filtered = True
            violations.append(f"{where}: jobId {job_id}: statusCode {code!r}, expected 200, 298 or 400")
            continue
        for key, value in sent["metadata"].items():
            if metadata.get(key) != value:
                violations.append(f"{where}: jobId {job_id}: metadata.{key} is "
                                  f"{short(metadata.get(key))}, sent {short(value)}")

    missing = [j for j in batch.by_job if j not in answers]
    repeated = sorted(j for j, n in answers.items() if n > 1)
    if missing:
        violations.append(f"{tag}: {len(missing)} jobId(s) not answered, e.g. {missing[:5]}")
    if repeated:
        violations.append(f"{tag}: {len(repeated)} jobId(s) answered more than once, e.g. "
                          + ", ".join(f"{j} x{answers[j]}" for j in repeated[:5]))
    if filtered_late:
        notes.append(f"{tag}: {filtered_late} filtered (298) entries after other entries "
                     f"(rudder-transformer lists them first)")
    return violations, counts, notes


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-pct * len(sorted_values) // 100))  # ceil(pct/100 * n)
    return sorted_values[int(rank) - 1]


class Run:
    def __init__(self, url, settings):
        self.host, self.port, self.path = require_loopback(url)
        self.url = url
        self.s = settings
        self.lock = threading.RLock()  # re-entered: violate() under the lock in run()
        self.next_index = 0
        self.started = 0
        self.completed = 0
        self.events_sent = 0
        self.events_internal = 0
        self.counts = {"200": 0, "298": 0, "400": 0}
        self.latencies = []
        self.violation_count = 0
        self.violation_examples = []
        self.notes = []
        self.upstreams = {}
        self.deadline = None
        self.run_id = f"{os.getpid()}-{int(time.time())}"

    def violate(self, messages):
        with self.lock:
            self.violation_count += len(messages)
            room = MAX_EXAMPLES - len(self.violation_examples)
            if room > 0:
                self.violation_examples.extend(messages[:room])

    def take_index(self):
        with self.lock:
            if self.next_index >= self.s["requests"] or time.monotonic() >= self.deadline:
                return None
            index = self.next_index
            self.next_index += 1
            self.started += 1
            return index

    def connect(self, timeout):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def post(self, conn, body, reused):
        """Sends one request; returns (conn, status, headers, body). A keep-alive connection
        that the peer closed while idle is reopened and the request sent once more."""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Feature-Filter-Code": "?1",
        }
        if self.s["gzip_support"]:
            headers["X-Feature-Gzip-Support"] = "?1"
        if self.s["gzip_request"]:
            headers["Content-Encoding"] = "gzip"
        for attempt in (1, 2):
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                return conn, resp.status, resp.headers, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if attempt == 2 or not reused:
                    raise
                conn = self.connect(conn.timeout)
                reused = False
        raise AssertionError("unreachable")

    def worker(self, seed_base):
        conn = None
        reused = False
        try:
            while True:
                index = self.take_index()
                if index is None:
                    return
                rng = random.Random(seed_base * 1_000_003 + index)
                batch = Batch(index, self.s["batch"], self.run_id, rng, self.s["internal_pct"])
                if self.s["gzip_request"]:
                    batch.compress()
                remaining = self.deadline - time.monotonic()
                timeout = max(1.0, min(self.s["request_timeout"], remaining))
                if conn is None:
                    conn = self.connect(timeout)
                    reused = False
                else:
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                t0 = time.monotonic()
                try:
                    conn, status, headers, data = self.post(conn, batch.body, reused)
                except (OSError, http.client.HTTPException) as e:
                    self.violate([f"request {index}: transport error after "
                                  f"{time.monotonic() - t0:.2f} s: {type(e).__name__}: {e}"])
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        self.completed += 1
                        self.events_sent += len(batch.envelopes)
                        self.events_internal += len(batch.internal)
                    continue
                elapsed = time.monotonic() - t0
                reused = conn.sock is not None
                violations, counts, notes = check_response(
                    batch, status, headers, data, self.s["allow_errors"])
                if violations:
                    self.violate(violations)
                upstream = headers.get("X-Luaform-Upstream")
                with self.lock:
                    self.completed += 1
                    self.events_sent += len(batch.envelopes)
                    self.events_internal += len(batch.internal)
                    self.latencies.append(elapsed)
                    for k, v in counts.items():
                        self.counts[k] += v
                    if notes and len(self.notes) < MAX_EXAMPLES:
                        self.notes.extend(notes)
                    if upstream:
                        self.upstreams[upstream] = self.upstreams.get(upstream, 0) + 1
        except Exception as e:  # a bug here must fail the run, not hang it
            self.violate([f"load worker crashed: {type(e).__name__}: {e}"])
        finally:
            if conn is not None:
                conn.close()

    def run(self):
        s = self.s
        print(f"nginx_load: {s['requests']} requests x {s['batch']} events to {self.url}, "
              f"{s['concurrency']} threads, ~{s['internal_pct']}% internal emails, "
              f"{'gzip bodies, ' if s['gzip_request'] else ''}"
              f"time limit {s['timeout']} s", flush=True)
        t0 = time.monotonic()
        self.deadline = t0 + s["timeout"]
        threads = [threading.Thread(target=self.worker, args=(s["seed"],), daemon=True,
                                    name=f"load-{i}") for i in range(s["concurrency"])]
        for t in threads:
            t.start()
        # A request started just before the deadline may run for one more request timeout.
        hard_stop = self.deadline + s["request_timeout"] + 5
        for t in threads:
            t.join(max(0.0, hard_stop - time.monotonic()))
        wall = time.monotonic() - t0
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            self.violate([f"threads still waiting for answers at the hard stop: {', '.join(stuck)}"])
        with self.lock:
            if self.completed < s["requests"]:
                self.violate([f"time limit of {s['timeout']} s reached: {self.completed} of "
                              f"{s['requests']} requests completed"])
            expect = s["expect_upstreams"]
            if expect and len(self.upstreams) < expect:
                self.violate([f"answers came from {len(self.upstreams)} upstream(s) "
                              f"{sorted(self.upstreams)}, expected at least {expect}"])
            return self.report(wall)

    def report(self, wall):
        lat = sorted(self.latencies)
        summary = {
            "url": self.url,
            "requests": self.s["requests"],
            "completed": self.completed,
            "batch": self.s["batch"],
            "concurrency": self.s["concurrency"],
            "events_sent": self.events_sent,
            "events_internal": self.events_internal,
            "answers": dict(self.counts),
            "wall_seconds": round(wall, 3),
            # Throughput of answered events (failed requests do not count).
            "events_per_second": round(sum(self.counts.values()) / wall, 1) if wall > 0 else None,
            "latency_ms": {
                "p50": round(percentile(lat, 50) * 1000, 2) if lat else None,
                "p99": round(percentile(lat, 99) * 1000, 2) if lat else None,
                "max": round(lat[-1] * 1000, 2) if lat else None,
            },
            "upstreams": dict(sorted(self.upstreams.items())),
            "violations": self.violation_count,
            "violation_examples": list(self.violation_examples),
            "notes": list(self.notes),
        }
        print(f"  sent      {self.events_sent} events in {self.completed} requests, "
              f"{self.events_internal} with internal emails")
        print(f"  answers   {self.counts['200']} kept (200), {self.counts['298']} dropped (298), "
              f"{self.counts['400']} errors (400)")
        if lat:
            print(f"  time      {wall:.2f} s, {summary['events_per_second']} events/s, "
                  f"{self.completed / wall:.1f} requests/s")
            print(f"  latency   p50 {summary['latency_ms']['p50']} ms, "
                  f"p99 {summary['latency_ms']['p99']} ms, max {summary['latency_ms']['max']} ms")
        if self.upstreams:
            print("  upstreams " + ", ".join(f"{k}: {v}" for k, v in sorted(self.upstreams.items())))
        for note in self.notes[:3]:
            print(f"  note: {note}")
        if len(self.notes) > 3:
            print(f"  note: ... and more like these ({len(self.notes)} noted, at most {MAX_EXAMPLES} kept)")
        if self.violation_count:
            print(f"  VIOLATIONS: {self.violation_count}"
                  + (f" (first {len(self.violation_examples)})"
                     if self.violation_count > len(self.violation_examples) else ""))
            for v in self.violation_examples:
                print(f"    - {v}")
        else:
            print("  violations: none")
        path = os.environ.get("LOAD_REPORT_JSON", "").strip()
        if path:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(summary, f, indent=2)
                f.write("\n")
        return 1 if self.violation_count else 0


def cmd_load(args):
    settings = {
        "requests": env_int("LOAD_REQUESTS", 200, 1, 10000),
        "batch": env_int("LOAD_BATCH", 200, 1, 1000),
        "concurrency": env_int("LOAD_CONCURRENCY", 4, 1, 32),
        "timeout": env_int("LOAD_TIMEOUT", 120, 1, 600),
        "request_timeout": env_int("LOAD_REQUEST_TIMEOUT", 30, 1, 300),
        "internal_pct": env_int("LOAD_INTERNAL_PCT", 10, 0, 100),
        "seed": env_int("LOAD_SEED", 1, 0, 2**31 - 1),
        "allow_errors": env_int("LOAD_ALLOW_ERRORS", 0, 0, 1) == 1,
        "gzip_support": env_int("LOAD_GZIP_SUPPORT", 1, 0, 1) == 1,
        "gzip_request": env_int("LOAD_GZIP_REQUEST", 0, 0, 1) == 1,
        "expect_upstreams": env_int("LOAD_EXPECT_UPSTREAMS", 0, 0, 64),
    }
    return Run(args.url, settings).run()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("free-ports", help="print free loopback TCP ports")
    p.add_argument("count", type=int)
    p.add_argument("--prefer", type=int, action="append")
    p.set_defaults(func=cmd_free_ports)

    p = sub.add_parser("wait-health", help="wait for GET URL to answer 200")
    p.add_argument("urls", nargs="+")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--pid", type=int, action="append")
    p.set_defaults(func=cmd_wait_health)

    p = sub.add_parser("load", help="send rudder-style batches and check the answers")
    p.add_argument("--url", default="http://127.0.0.1:18080/customTransform")
    p.set_defaults(func=cmd_load)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

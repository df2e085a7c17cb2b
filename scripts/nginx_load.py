#!/usr/bin/env python3
"""Load driver and helpers for scripts/nginx-replicas (standard library only).

Subcommands:

  free-ports N [--prefer P ...]
      Print N free TCP ports on 127.0.0.1, one per line: the preferred ones when they are
      free, otherwise ports the kernel hands out.

  wait-health URL [URL ...] [--timeout S] [--pid PID ...]
      Wait until `GET URL` answers 200 for every URL. Fails early when one of the given
      processes has exited.

  load [--url URL] [--phase NAME] [--version-ids A,B] [--report-json FILE]
       [--fault-signal KILL|TERM --fault-pid PID --fault-upstream HOST:PORT
        --release-file FILE [--fault-after N] [--hold S] [--settle S]]
       [--nginx-error-log FILE]
      POST rudder-style batches to a /customTransform endpoint and check every answer
      against the contract rudder-server relies on (see check_response). Every event
      carries a unique messageId; answers are also counted by messageId across all the
      requests of the run: each must be answered exactly once (none lost, none duplicated).
      --version-ids sets the transformation chain of every event (default
      ignore-internal-emails; the chain must keep events unchanged apart from that
      transformation's drops). Settings come from the environment, each bounded:

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

      Fault phase (--fault-signal): once --fault-after requests have been answered, every
      thread is waiting for an answer (the youngest request for at least --settle seconds,
      so it has reached a replica) and --fault-pid is computing (at least 0.15 of a core
      over the last 20 ms, from /proc/PID/task/*/schedstat: a batch is running on it), the
      driver sends the signal to --fault-pid, the replica behind nginx at --fault-upstream,
      and notes which requests were in flight. It keeps the load going until --release-file
      exists (the caller creates it once the replica is back) and --hold seconds more, at
      least LOAD_REQUESTS requests in all. Checked on top of the above: the signal was sent and the release came; with
      KILL, at least one request in flight at the kill was retried by nginx on the other
      replica (the kill hit a batch in progress); with TERM, at least one request in flight
      at the signal was answered by the stopping replica (it drained); and the restarted
      replica answered requests again. There are no retries in this client: an HTTP error
      or a broken connection is a violation, so every answer counted came from nginx once.
      --nginx-error-log: count nginx's upstream errors logged during the run, per upstream.

      Exit status: 0 when every check passed, 1 on any violation, 2 on bad usage.

  summary FILE...
      Print one table row per JSON report written by `load --report-json`; exit 1 when
      a report is missing or records violations.

Only loopback addresses are ever contacted: any other URL is refused.
"""

import argparse
import gzip
import http.client
import ipaddress
import json
import os
import random
import re
import signal
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

    def __init__(self, index, size, run_id, rng, internal_pct, version_ids):
        self.index = index
        self.envelopes = []
        self.by_job = {}       # jobId -> envelope
        self.internal = set()  # jobIds whose event carries an internal email
        for i in range(size):
            job_id = index * size + i + 1
            is_internal = rng.random() * 100 < internal_pct
            envelope = make_envelope(job_id, run_id, is_internal, rng, version_ids)
            self.envelopes.append(envelope)
            self.by_job[job_id] = envelope
            if is_internal:
                self.internal.add(job_id)
        self.body = json.dumps(self.envelopes, separators=(",", ":")).encode("utf-8")

    def compress(self):
        self.body = gzip.compress(self.body, compresslevel=1)


def message_id_of(run_id, job_id):
    return f"lf-{run_id}-{job_id}"


def make_envelope(job_id, run_id, internal, rng, version_ids):
    message_id = message_id_of(run_id, job_id)
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
        "destination": {"Transformations": [{"VersionID": v} for v in version_ids]},
    }


def short(value, limit=160):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def check_response(batch, status, headers, body, allow_errors):
    """Checks one /customTransform answer. Returns (violations, counts, notes, message_ids),
    message_ids listing metadata.messageId of every entry (for the run-wide count).

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
    violations, notes, message_ids = [], [], []
    counts = {"200": 0, "298": 0, "400": 0}
    tag = f"request {batch.index}"
    if status != 200:
        text = " ".join(body.decode("utf-8", "replace").split())
        violations.append(f"{tag}: HTTP {status}, expected 200: {short(text)}")
        return violations, counts, notes, message_ids
    api_version = headers.get("apiVersion")
    if api_version != "2":
        violations.append(f"{tag}: header apiVersion is {api_version!r}, expected '2'")
    if (headers.get("Content-Encoding") or "").lower() == "gzip":
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError) as e:
            violations.append(f"{tag}: Content-Encoding gzip but the body does not decompress: {e}")
            return violations, counts, notes, message_ids
    try:
        entries = json.loads(body)
    except ValueError as e:
        violations.append(f"{tag}: body is not JSON ({e}): {short(body.decode('utf-8', 'replace'))}")
        return violations, counts, notes, message_ids
    if not isinstance(entries, list):
        violations.append(f"{tag}: body is {type(entries).__name__}, expected a JSON array")
        return violations, counts, notes, message_ids

    answers = {}
    seen_non_filtered = False
    filtered_late = 0
    for pos, entry in enumerate(entries):
        where = f"{tag} entry {pos}"
        if not isinstance(entry, dict):
            violations.append(f"{where}: not an object: {short(entry)}")
            continue
        metadata = entry.get("metadata")
        if isinstance(metadata, dict):
            message_ids.append(metadata.get("messageId"))
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
    return violations, counts, notes, message_ids


def percentile(sorted_values, pct):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-pct * len(sorted_values) // 100))  # ceil(pct/100 * n)
    return sorted_values[int(rank) - 1]


MAX_REQUESTS = 10000  # a fault phase runs until released; never more requests than this
UPSTREAM_SPLIT = re.compile(r", | : ")


def upstream_addresses(header):
    """The upstreams nginx tried for one request, in order. $upstream_addr separates the
    servers tried with ", " (a retry on the next server) and internal redirects with " : "."""
    if not header:
        return []
    return [a for a in UPSTREAM_SPLIT.split(header.strip()) if a]


def nginx_upstream_errors(path, offset):
    """Counts nginx error-log lines about upstreams written after byte `offset`, per upstream
    address and kind: `cut` (the connection failed while nginx was sending the request or
    waiting for the answer: the request was in flight there), `refused` (connect() failed),
    `disabled` (nginx stopped using the server for fail_timeout), `no_live` (no server left
    to try: the client got a 502), `other`. Returns (counts, examples of `other`)."""
    counts, examples = {}, []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return counts, [f"cannot read {path}: {e}"]
    for line in text.splitlines():
        if "upstream" not in line:
            continue
        m = re.search(r'upstream: "[a-z]+://([^/"]+)', line)
        address = m.group(1) if m else "(none)"
        if "no live upstreams" in line:
            kind = "no_live"
        elif "[warn]" in line and "temporarily disabled" in line:
            kind = "disabled"
        elif "connect() failed" in line:
            kind = "refused"
        elif ("while reading response header from upstream" in line
              or "while sending request to upstream" in line):
            kind = "cut"
        else:
            kind = "other"
            if len(examples) < 3:
                examples.append(line[:300])
        per = counts.setdefault(address, {})
        per[kind] = per.get(kind, 0) + 1
    return counts, examples


def cpu_seconds(pid):
    """CPU time used so far by all threads of `pid` (Linux /proc schedstat), or None."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", "r", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just ended
    return total / 1e9


class Run:
    def __init__(self, url, settings, phase="load", version_ids=(TRANSFORMATION,), fault=None,
                 error_log=None, report_json=None):
        self.host, self.port, self.path = require_loopback(url)
        self.url = url
        self.s = settings
        self.phase = phase
        self.version_ids = list(version_ids)
        self.fault = fault
        self.error_log = error_log
        self.error_log_offset = 0
        self.report_json = report_json
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
        self.upstreams = {}      # the upstream that answered -> requests
        self.sent_ids = set()    # messageId of every event sent
        self.answers_by_id = {}  # messageId -> entries received for it, over all requests
        self.records = {}        # request index -> (start, end, upstreams tried, HTTP 200)
        self.inflight = {}       # request index -> start, while waiting for its answer
        self.nginx_retried = 0   # requests nginx passed to a second upstream
        self.client_errors = 0   # requests without an HTTP 200 answer (transport error or status)
        self.client_resends = 0  # requests sent again on a fresh connection (stale keep-alive)
        self.signal_time = None
        self.signal_inflight = {}
        self.signal_busy = None
        self.exit_time = None
        self.release_time = None
        self.finished = False
        self.deadline = None
        self.t0 = None
        self.run_id = f"{os.getpid()}-{int(time.time())}"

    def violate(self, messages):
        with self.lock:
            self.violation_count += len(messages)
            room = MAX_EXAMPLES - len(self.violation_examples)
            if room > 0:
                self.violation_examples.extend(messages[:room])

    def say(self, text):
        print(f"  [{time.monotonic() - self.t0:6.2f} s] {text}", flush=True)

    def take_index(self):
        with self.lock:
            now = time.monotonic()
            if now >= self.deadline or self.next_index >= MAX_REQUESTS:
                return None
            if self.next_index >= self.s["requests"]:
                # A fault phase goes on until the replica is back and has had time to serve.
                if self.fault is None:
                    return None
                if self.release_time is not None and now >= self.release_time + self.fault["hold"]:
                    return None
            index = self.next_index
            self.next_index += 1
            self.started += 1
            return index

    def connect(self, timeout):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def post(self, conn, body, reused):
        """Sends one request; returns (conn, status, headers, body). A keep-alive connection
        that the peer closed while idle is reopened and the request sent once more (counted
        in client_resends; the answer is still read at most once)."""
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
                with self.lock:
                    self.client_resends += 1
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
                batch = Batch(index, self.s["batch"], self.run_id, rng, self.s["internal_pct"],
                              self.version_ids)
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
                with self.lock:
                    self.sent_ids.update(message_id_of(self.run_id, j) for j in batch.by_job)
                    self.inflight[index] = t0
                try:
                    conn, status, headers, data = self.post(conn, batch.body, reused)
                except (OSError, http.client.HTTPException) as e:
                    t1 = time.monotonic()
                    self.violate([f"request {index}: transport error after "
                                  f"{t1 - t0:.2f} s: {type(e).__name__}: {e}"])
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        self.inflight.pop(index, None)
                        self.records[index] = (t0, t1, [], False)
                        self.client_errors += 1
                        self.completed += 1
                        self.events_sent += len(batch.envelopes)
                        self.events_internal += len(batch.internal)
                    continue
                t1 = time.monotonic()
                elapsed = t1 - t0
                reused = conn.sock is not None
                violations, counts, notes, message_ids = check_response(
                    batch, status, headers, data, self.s["allow_errors"])
                if violations:
                    self.violate(violations)
                tried = upstream_addresses(headers.get("X-Luaform-Upstream"))
                with self.lock:
                    self.inflight.pop(index, None)
                    self.records[index] = (t0, t1, tried, status == 200)
                    if status != 200:
                        self.client_errors += 1
                    for mid in message_ids:
                        self.answers_by_id[mid] = self.answers_by_id.get(mid, 0) + 1
                    if len(tried) > 1:
                        self.nginx_retried += 1
                    self.completed += 1
                    self.events_sent += len(batch.envelopes)
                    self.events_internal += len(batch.internal)
                    self.latencies.append(elapsed)
                    for k, v in counts.items():
                        self.counts[k] += v
                    if notes and len(self.notes) < MAX_EXAMPLES:
                        self.notes.extend(notes)
                    if tried:
                        self.upstreams[tried[-1]] = self.upstreams.get(tried[-1], 0) + 1
        except Exception as e:  # a bug here must fail the run, not hang it
            self.violate([f"load worker crashed: {type(e).__name__}: {e}"])
        finally:
            if conn is not None:
                conn.close()

    def fault_controller(self):
        """Sends the fault signal at a moment when every thread has had a request in flight
        for `settle` seconds and the replica is busy computing (it used at least 0.15 of
        a core over the last BUSY_WINDOW s: with the slow chain, only batches cost that much),
        then waits for the replica to exit and for the release file."""
        f = self.fault
        busy_window = 0.02
        samples = []  # (time, CPU seconds of the replica)
        try:
            while True:  # steady state first
                with self.lock:
                    done = self.completed
                if done >= f["after"]:
                    break
                if self.finished or time.monotonic() >= self.deadline:
                    return
                time.sleep(0.005)
            give_up = time.monotonic() + 10
            busy = None
            while True:
                now = time.monotonic()
                cpu = cpu_seconds(f["pid"])
                if cpu is not None:
                    samples.append((now, cpu))
                    while len(samples) > 1 and samples[1][0] <= now - busy_window:
                        samples.pop(0)
                    span = now - samples[0][0]
                    busy = (cpu - samples[0][1]) / span if span >= busy_window else None
                with self.lock:
                    ages = [now - t for t in self.inflight.values()]
                    ready = (len(ages) >= self.s["concurrency"] and min(ages) >= f["settle"]
                             and (cpu is None or (busy is not None and busy >= 0.15)))
                    if ready or now >= give_up:
                        self.signal_inflight = dict(self.inflight)
                        os.kill(f["pid"], f["signum"])
                        self.signal_time = time.monotonic()
                        break
                if self.finished or now >= self.deadline:
                    return
                time.sleep(0.002)
            self.signal_busy = busy
            self.say(f"SIG{f['signal']} sent to pid {f['pid']} ({f['upstream']}) after "
                     f"{done} answered requests, {len(self.signal_inflight)} requests in flight"
                     + (f", replica busy on {busy:.2f} cores" if busy is not None else "")
                     + ("" if ready else " (no moment with every thread waiting and the "
                        "replica busy in 10 s)"))
            while not process_gone(f["pid"]):
                if self.finished or time.monotonic() >= self.deadline:
                    return
                time.sleep(0.005)
            self.exit_time = time.monotonic()
            self.say(f"pid {f['pid']} gone {1000 * (self.exit_time - self.signal_time):.0f} ms "
                     f"after the signal")
            while not os.path.exists(f["release_file"]):
                if self.finished or time.monotonic() >= self.deadline:
                    return
                time.sleep(0.02)
            with self.lock:
                self.release_time = time.monotonic()
            self.say(f"replica restarted on {f['upstream']}; load goes on for {f['hold']:g} s")
        except Exception as e:
            self.violate([f"fault controller crashed: {type(e).__name__}: {e}"])

    def run(self):
        s = self.s
        chain = " -> ".join(self.version_ids)
        print(f"nginx_load [{self.phase}]: {s['requests']} requests x {s['batch']} events to "
              f"{self.url} (chain {chain}), {s['concurrency']} threads, "
              f"~{s['internal_pct']}% internal emails, "
              f"{'gzip bodies, ' if s['gzip_request'] else ''}"
              f"time limit {s['timeout']} s", flush=True)
        if self.error_log:
            try:
                self.error_log_offset = os.path.getsize(self.error_log)
            except OSError:
                self.error_log_offset = 0
        self.t0 = time.monotonic()
        self.deadline = self.t0 + s["timeout"]
        threads = [threading.Thread(target=self.worker, args=(s["seed"],), daemon=True,
                                    name=f"load-{i}") for i in range(s["concurrency"])]
        for t in threads:
            t.start()
        controller = None
        if self.fault:
            controller = threading.Thread(target=self.fault_controller, daemon=True, name="fault")
            controller.start()
        # A request started just before the deadline may run for one more request timeout.
        hard_stop = self.deadline + s["request_timeout"] + 5
        for t in threads:
            t.join(max(0.0, hard_stop - time.monotonic()))
        self.finished = True
        if controller:
            controller.join(2)
        wall = time.monotonic() - self.t0
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
            ids = self.check_message_ids()
            fault = self.check_fault() if self.fault else None
            nginx_log = self.check_error_log()
            return self.report(wall, ids, fault, nginx_log)

    def check_message_ids(self):
        """Exactly once per messageId over the whole run, whatever request carried it."""
        answered = self.answers_by_id
        lost = [m for m in self.sent_ids if m not in answered]
        duplicated = sorted(m for m, n in answered.items() if n > 1)
        unknown = sorted(m for m in answered if m not in self.sent_ids)
        if lost:
            self.violate([f"{len(lost)} messageId(s) sent and never answered, e.g. "
                          + ", ".join(sorted(lost)[:3])])
        if duplicated:
            self.violate([f"{len(duplicated)} messageId(s) answered more than once, e.g. "
                          + ", ".join(f"{m} x{answered[m]}" for m in duplicated[:3])])
        if unknown:
            self.violate([f"{len(unknown)} answer(s) for messageIds never sent, e.g. "
                          + ", ".join(str(m) for m in unknown[:3])])
        return {
            "sent": len(self.sent_ids),
            "answered": sum(1 for m in answered if m in self.sent_ids),
            "exactly_once": sum(1 for m, n in answered.items() if n == 1 and m in self.sent_ids),
            "lost": len(lost),
            "duplicated": len(duplicated),
            "unknown": len(unknown),
        }

    def check_fault(self):
        f = self.fault
        victim = f["upstream"]
        sig = f"SIG{f['signal']}"
        result = {"signal": sig, "pid": f["pid"], "upstream": victim, "sent": False}
        if self.signal_time is None:
            self.violate([f"{sig} was never sent: the load ended before a steady state "
                          f"({f['after']} answered requests)"])
            return result
        result["sent"] = True
        result["at_seconds"] = round(self.signal_time - self.t0, 3)
        result["in_flight"] = len(self.signal_inflight)
        result["busy_cores"] = (round(self.signal_busy, 2) if self.signal_busy is not None
                                else None)
        # What became of the requests in flight when the signal was sent.
        fate = {"answered_by_it": 0, "retried_on_other": 0, "on_other": 0, "failed": 0}
        for index in self.signal_inflight:
            rec = self.records.get(index)
            if rec is None or not rec[3] or not rec[2]:
                fate["failed"] += 1
            elif rec[2][0] != victim:
                fate["on_other"] += 1
            elif rec[2][-1] == victim:
                fate["answered_by_it"] += 1
            else:
                fate["retried_on_other"] += 1
        result["in_flight_fate"] = fate
        if self.exit_time is not None:
            result["exit_ms"] = round(1000 * (self.exit_time - self.signal_time), 1)
        else:
            self.violate([f"pid {f['pid']} did not exit after {sig}"])
        if self.release_time is None:
            self.violate([f"the replica on {victim} was not back (no {f['release_file']}) "
                          f"before the time limit"])
            result["restarted_answers"] = 0
        else:
            result["released_at_seconds"] = round(self.release_time - self.t0, 3)
            result["restarted_answers"] = sum(
                1 for (start, _end, tried, ok) in self.records.values()
                if ok and start >= self.release_time and tried and tried[-1] == victim)
            if result["restarted_answers"] == 0:
                self.violate([f"the restarted replica on {victim} answered no request in the "
                              f"{f['hold']:g} s after its restart"])
        if f["signal"] == "KILL" and fate["retried_on_other"] == 0:
            why = (f"{fate['failed']} of them failed instead" if fate["failed"] else
                   "the kill hit no batch in progress, so this phase proved nothing")
            self.violate([f"no request in flight on {victim} at the SIGKILL was retried by nginx "
                          f"on the other replica: {why} ({fate})"])
        if f["signal"] == "TERM" and fate["answered_by_it"] == 0:
            self.violate([f"no request in flight on {victim} at the SIGTERM was answered by it: "
                          f"no graceful drain observed ({fate})"])
        return result

    def check_error_log(self):
        if not self.error_log:
            return None
        counts, examples = nginx_upstream_errors(self.error_log, self.error_log_offset)
        if self.fault and self.fault["signal"] == "KILL" and self.signal_time is not None:
            cut = counts.get(self.fault["upstream"], {}).get("cut", 0)
            if cut == 0:
                self.violate([f"nginx logged no request cut in flight on {self.fault['upstream']} "
                              f"after the SIGKILL"])
        return {"upstreams": counts, "other_examples": examples}

    def report(self, wall, ids, fault, nginx_log):
        lat = sorted(self.latencies)
        summary = {
            "phase": self.phase,
            "url": self.url,
            "chain": self.version_ids,
            "requests": self.s["requests"],
            "started": self.started,
            "completed": self.completed,
            "batch": self.s["batch"],
            "concurrency": self.s["concurrency"],
            "events_sent": self.events_sent,
            "events_internal": self.events_internal,
            "answers": dict(self.counts),
            "message_ids": ids,
            "nginx_retried": self.nginx_retried,
            "client_errors": self.client_errors,
            "client_resends": self.client_resends,
            "wall_seconds": round(wall, 3),
            # Throughput of answered events (failed requests do not count).
            "events_per_second": round(sum(self.counts.values()) / wall, 1) if wall > 0 else None,
            "latency_ms": {
                "p50": round(percentile(lat, 50) * 1000, 2) if lat else None,
                "p99": round(percentile(lat, 99) * 1000, 2) if lat else None,
                "max": round(lat[-1] * 1000, 2) if lat else None,
            },
            "upstreams": dict(sorted(self.upstreams.items())),
            "fault": fault,
            "nginx_error_log": nginx_log,
            "violations": self.violation_count,
            "violation_examples": list(self.violation_examples),
            "notes": list(self.notes),
        }
        print(f"  sent      {self.events_sent} events in {self.completed} requests, "
              f"{self.events_internal} with internal emails")
        print(f"  answers   {self.counts['200']} kept (200), {self.counts['298']} dropped (298), "
              f"{self.counts['400']} errors (400)")
        print(f"  messageId {ids['sent']} sent, {ids['answered']} answered, "
              f"{ids['exactly_once']} exactly once, {ids['lost']} lost, "
              f"{ids['duplicated']} duplicated"
              + (f", {ids['unknown']} unknown" if ids["unknown"] else ""))
        print(f"  retries   {self.nginx_retried} request(s) passed by nginx to a second replica; "
              f"{self.client_errors} client-visible error(s); "
              f"{self.client_resends} client re-send(s) on a stale keep-alive connection")
        if lat:
            print(f"  time      {wall:.2f} s, {summary['events_per_second']} events/s, "
                  f"{self.completed / wall:.1f} requests/s")
            print(f"  latency   p50 {summary['latency_ms']['p50']} ms, "
                  f"p99 {summary['latency_ms']['p99']} ms, max {summary['latency_ms']['max']} ms")
        if self.upstreams:
            print("  upstreams " + ", ".join(f"{k}: {v}" for k, v in sorted(self.upstreams.items())))
        if fault and fault["sent"]:
            fate = fault["in_flight_fate"]
            print(f"  fault     {fault['signal']} to {fault['upstream']} at {fault['at_seconds']} s "
                  f"with {fault['in_flight']} requests in flight: {fate['retried_on_other']} cut "
                  f"there and retried by nginx on the other replica, {fate['answered_by_it']} "
                  f"answered by it, {fate['on_other']} on the other replica, "
                  f"{fate['failed']} failed"
                  + (f"; exited after {fault['exit_ms']} ms" if "exit_ms" in fault else ""))
            print(f"  restart   {fault['restarted_answers']} request(s) answered by the restarted "
                  f"replica")
        if nginx_log is not None:
            ups = nginx_log["upstreams"]
            if ups:
                print("  nginx log " + "; ".join(
                    f"{a}: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
                    for a, c in sorted(ups.items())))
            else:
                print("  nginx log no upstream errors")
            for line in nginx_log["other_examples"]:
                print(f"  nginx log example: {line}")
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
        for path in (os.environ.get("LOAD_REPORT_JSON", "").strip(), self.report_json):
            if path:
                with open(path, "w", encoding="utf-8") as f:
                    json.dump(summary, f, indent=2)
                    f.write("\n")
        return 1 if self.violation_count else 0


SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM}


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
    version_ids = [v.strip() for v in args.version_ids.split(",") if v.strip()]
    if not version_ids:
        fail_usage("--version-ids lists no VersionID")
    fault = None
    if args.fault_signal:
        if args.fault_signal not in SIGNALS:
            fail_usage(f"--fault-signal must be one of {', '.join(SIGNALS)}")
        if not args.fault_pid or args.fault_pid <= 1 or not args.fault_upstream or not args.release_file:
            fail_usage("--fault-signal needs --fault-pid, --fault-upstream and --release-file")
        fault = {
            "signal": args.fault_signal,
            "signum": SIGNALS[args.fault_signal],
            "pid": args.fault_pid,
            "upstream": args.fault_upstream,
            "release_file": args.release_file,
            "after": max(0, args.fault_after),
            "hold": max(0.0, args.hold),
            "settle": max(0.0, args.settle),
        }
    return Run(args.url, settings, phase=args.phase, version_ids=version_ids, fault=fault,
               error_log=args.nginx_error_log, report_json=args.report_json).run()


def cmd_summary(args):
    """One row per phase report; exit 1 when a report is missing or has violations."""
    head = ("phase", "requests", "events", "answered", "lost", "dup", "nginx-retried",
            "cut-in-flight", "client-errors", "violations", "seconds")
    rows, rc = [], 0
    for path in args.reports:
        try:
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
        except (OSError, ValueError) as e:
            rows.append((os.path.basename(path), "no report: " + type(e).__name__))
            rc = 1
            continue
        ids = r["message_ids"]
        cut = sum(c.get("cut", 0) for c in
                  ((r.get("nginx_error_log") or {}).get("upstreams") or {}).values())
        rows.append((r["phase"], r["completed"], r["events_sent"], ids["answered"], ids["lost"],
                     ids["duplicated"], r["nginx_retried"], cut, r["client_errors"],
                     r["violations"], r["wall_seconds"]))
        if r["violations"]:
            rc = 1
    widths = [max(len(str(x)) for x in col) for col in
              zip(head, *[row for row in rows if len(row) == len(head)])]
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(head, widths))))
    for row in rows:
        if len(row) != len(head):
            print("  ".join(str(x) for x in row))
            continue
        print("  ".join(str(x).rjust(w) if i else str(x).ljust(w)
                        for i, (x, w) in enumerate(zip(row, widths))))
    return rc


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
    p.add_argument("--phase", default="load", help="name shown in the output and the report")
    p.add_argument("--version-ids", default=TRANSFORMATION,
                   help="comma-separated transformation chain of every event")
    p.add_argument("--report-json", help="write the summary as JSON to this file")
    p.add_argument("--nginx-error-log", help="count nginx upstream errors logged during the run")
    p.add_argument("--fault-signal", help="KILL or TERM: signal --fault-pid mid-load")
    p.add_argument("--fault-pid", type=int)
    p.add_argument("--fault-upstream", help="HOST:PORT of that replica as nginx names it")
    p.add_argument("--release-file", help="created by the caller once the replica is back")
    p.add_argument("--fault-after", type=int, default=10,
                   help="answered requests before the signal (default 10)")
    p.add_argument("--hold", type=float, default=3.0,
                   help="seconds of load after the release (default 3)")
    p.add_argument("--settle", type=float, default=0.03,
                   help="youngest in-flight request's minimum age at the signal (default 0.03 s)")
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("summary", help="print a table of load reports")
    p.add_argument("reports", nargs="+")
    p.set_defaults(func=cmd_summary)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

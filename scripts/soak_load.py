#!/usr/bin/env python3
"""Soak load for `transform serve` (standard library only; used by scripts/soak).

Subcommands:

  project DIR [--repo ROOT]
      Write a temporary luaform project into DIR (which must be empty or missing):
      luaform.yaml with a limits block and a `versions:` map, the good transformations
      ignore-internal-emails and rename-traits copied from ROOT/transformations (and
      ROOT/libraries/*.lua, which they may require), plus two written here:
        flaky    errors on every event whose properties.seq is odd;
        hostile  by properties.attack: "loop" (infinite loop -> timeout), "bomb" (a string
                 doubling until the memory limit -> memory error), "hoard" (a table
                 filled with 64 KiB strings -> memory error, or timeout when that is
                 first), "pattern" (a catastrophic pattern -> timeout), anything else:
                 the event is kept unchanged.
      hostile runs with a short time limit (100 ms) and a small memory limit (16 MiB).

  free-port [--prefer P]
      Print one free TCP port on 127.0.0.1 (P when it is free).

  run --url URL --pid PID --seconds S --outdir DIR
      Drive sustained load at URL (a loopback /customTransform) for S seconds with
      concurrent keep-alive clients, each sending batches (default 200 events) that mix
      VersionIDs; every event has a unique messageId and jobId. Every answer is checked:
        * HTTP 200, header apiVersion: 2, a JSON array;
        * every messageId of the request answered exactly once, none from elsewhere
          (no lost, no duplicate, no foreign answers), the 298 entries listed first;
        * per kind of event, the expected statusCode and content:
            ignore-internal-emails  298 for an internal email, else 200 with the event
                                    unchanged;
            rename-traits           200 with firstname/lastname renamed in context.traits;
            chain (both, in order)  298 for an internal email, else 200 renamed;
            flaky                   400 naming "flaky: odd seq N" for odd seq, else 200
                                    with flaky_ok = true;
            hostile                 400 "time limit ... exceeded" for loop and pattern,
                                    400 "memory limit ... exceeded" for bomb, either
                                    for hoard, else 200 unchanged;
            unknown VersionID       404;
        * the metadata is echoed (298 entries add messageIds: null).
      Every SAMPLE seconds the server process (PID) is sampled into DIR/soak.csv:
      RSS (VmRSS), VmHWM, threads, open fds, server CPU %, luaform_states_alive and
      luaform_states_created from GET /metrics, events/s, batches, p50/p99 batch latency
      over the interval, and the violation count so far.
      At the end it prints a summary (also DIR/summary.json) with an RSS trend verdict:
      the first 20% of the run is warm-up; the run FAILS when the median RSS of the
      samples in the last quarter exceeds the median of those in the second quarter, or
      when a least-squares line through the post-warm-up samples rises over that window,
      by more than max(RSS_PCT % of the second quarter's median, RSS_MB MiB).
      The run also FAILS on any violation above or when the server process disappears.

      Options (environment in scripts/soak): --concurrency (4), --batch (200),
      --sample (10 s), --hostile-pct (2, percent of events), --request-timeout (30 s),
      --rss-pct (10), --rss-mb (20), --seed (1).

Exit status: 0 all checks passed, 1 a check failed, 2 bad usage.
Only loopback addresses are contacted; any other URL is refused.
"""

import argparse
import copy
import http.client
import ipaddress
import itertools
import json
import os
import random
import shutil
import socket
import statistics
import sys
import threading
import time
import urllib.parse

MAX_EXAMPLES = 20  # violations kept in full (all are counted)

# VersionIDs of the temporary project (luaform.yaml `versions:`); the file names work too.
V_IGNORE = "trv-soak-ignore"
V_RENAME = "trv-soak-rename"
V_FLAKY = "trv-soak-flaky"
V_HOSTILE = "trv-soak-hostile"
V_UNKNOWN = "trv-soak-no-such-version"

HOSTILE_TIME_MS = 100
HOSTILE_MEMORY_MIB = 16

CONFIG = f"""\
# Written by scripts/soak_load.py for a soak run (temporary project).
limits:
  time: 500ms
  memory: 32MiB
transformations:
  hostile:
    time: {HOSTILE_TIME_MS}ms
    memory: {HOSTILE_MEMORY_MIB}MiB
versions:
  "{V_IGNORE}": ignore-internal-emails
  "{V_RENAME}": rename-traits
  "{V_FLAKY}": flaky
  "{V_HOSTILE}": hostile
"""

FLAKY_LUA = """\
-- flaky (soak): fails every event whose properties.seq is odd, keeps the others.
function transformEvent(event, metadata)
  local seq = event.properties and event.properties.seq
  if type(seq) ~= "number" then
    error("flaky: no properties.seq")
  end
  if seq % 2 == 1 then
    error("flaky: odd seq " .. seq)
  end
  event.flaky_ok = true
  return event
end
"""

HOSTILE_LUA = """\
-- hostile (soak): misbehaves on request, by properties.attack.
function transformEvent(event, metadata)
  local attack = event.properties and event.properties.attack
  if attack == "loop" then
    local n = 0
    while true do n = n + 1 end
  elseif attack == "bomb" then
    local s = "x"
    while true do s = s .. s end
  elseif attack == "hoard" then
    local hoard = {}
    for i = 1, 1e9 do
      hoard[i] = ("x"):rep(65536) .. i
    end
  elseif attack == "pattern" then
    return ("a"):rep(40):find(("a*"):rep(12) .. "b")
  end
  return event
end
"""

# What rename-traits does to context.traits (see transformations/rename-traits.lua).
RENAMES = [("firstname", "first_name"), ("lastname", "last_name"),
           ("phone_number", "phone"), ("companyName", "company")]
INTERNAL_DOMAIN = "rudderstack.com"  # listed in transformations/ignore-internal-emails.lua


def fail_usage(message):
    print(f"soak_load: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------
# project / free-port
# ---------------------------------------------------------------------------------------

def cmd_project(args):
    root = os.path.abspath(args.repo)
    dest = os.path.abspath(args.dir)
    if os.path.exists(dest) and os.listdir(dest):
        fail_usage(f"{dest} is not empty")
    os.makedirs(os.path.join(dest, "transformations"), exist_ok=True)
    os.makedirs(os.path.join(dest, "libraries"), exist_ok=True)
    for name in ("ignore-internal-emails", "rename-traits"):
        src = os.path.join(root, "transformations", f"{name}.lua")
        if not os.path.isfile(src):
            fail_usage(f"missing {src}")
        shutil.copyfile(src, os.path.join(dest, "transformations", f"{name}.lua"))
    libs = os.path.join(root, "libraries")
    if os.path.isdir(libs):
        for entry in sorted(os.listdir(libs)):
            if entry.endswith(".lua"):
                shutil.copyfile(os.path.join(libs, entry), os.path.join(dest, "libraries", entry))
    with open(os.path.join(dest, "transformations", "flaky.lua"), "w", encoding="utf-8") as f:
        f.write(FLAKY_LUA)
    with open(os.path.join(dest, "transformations", "hostile.lua"), "w", encoding="utf-8") as f:
        f.write(HOSTILE_LUA)
    with open(os.path.join(dest, "luaform.yaml"), "w", encoding="utf-8") as f:
        f.write(CONFIG)
    return 0


def cmd_free_port(args):
    if args.prefer:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", args.prefer))
                print(args.prefer)
                return 0
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
    return 0


# ---------------------------------------------------------------------------------------
# events and expectations
# ---------------------------------------------------------------------------------------

class Mix:
    """Event kinds and their share of the events (percent)."""

    def __init__(self, hostile_pct):
        rest = 100.0 - hostile_pct
        # the good and flaky kinds share what hostile leaves, in fixed proportions
        shares = [("ignore", 0.36), ("rename", 0.26), ("chain", 0.12), ("flaky", 0.24),
                  ("unknown", 0.02)]
        self.kinds = [k for k, _ in shares] + ["hostile"]
        self.weights = [rest * w for _, w in shares] + [hostile_pct]

    def pick(self, rng):
        return rng.choices(self.kinds, self.weights)[0]


HOSTILE_ATTACKS = ["none", "bomb", "hoard", "loop", "pattern"]
HOSTILE_WEIGHTS = [40, 30, 10, 10, 10]


def make_event(seq, run_id, kind, rng):
    """Returns (envelope, expectation). expectation: (status, detail)."""
    message_id = f"soak-{run_id}-{seq}"
    internal = kind in ("ignore", "chain") and rng.random() < 0.15
    email = f"staff{seq}@{INTERNAL_DOMAIN}" if internal else f"customer{seq}@example.com"
    cents = rng.randrange(100, 100000)
    properties = {"seq": seq, "revenue": cents / 100, "currency": "USD",
                  "products": [{"sku": f"sku-{cents % 17}", "quantity": 1 + cents % 4}]}
    attack = None
    if kind == "hostile":
        attack = rng.choices(HOSTILE_ATTACKS, HOSTILE_WEIGHTS)[0]
        properties["attack"] = attack
    message = {
        "type": "identify" if kind in ("rename", "chain") else "track",
        "event": "Order Completed",
        "messageId": message_id,
        "userId": f"user-{seq % 5000}",
        "anonymousId": f"anon-{seq % 997}",
        "properties": properties,
        "context": {
            "traits": {"email": email, "firstname": f"First{seq % 100}",
                       "lastname": f"Last{seq % 73}", "plan": rng.choice(["free", "pro"])},
            "library": {"name": "luaform-soak", "version": "1"},
        },
        "integrations": {"All": True},
        "originalTimestamp": "2026-08-01T10:00:00.000Z",
    }
    if kind == "ignore":
        # both ways of addressing it: the versions: map and the file name
        versions = [V_IGNORE if seq % 2 else "ignore-internal-emails"]
    elif kind == "rename":
        versions = [V_RENAME]
    elif kind == "chain":
        versions = [V_IGNORE, V_RENAME]
    elif kind == "flaky":
        versions = [V_FLAKY]
    elif kind == "hostile":
        versions = [V_HOSTILE]
    else:
        versions = [V_UNKNOWN]
    metadata = {"messageId": message_id, "jobId": seq, "sourceId": "src-soak",
                "destinationId": f"dst-{kind}", "workspaceId": "ws-soak"}
    envelope = {"message": message, "metadata": metadata,
                "destination": {"Transformations": [{"VersionID": v} for v in versions]}}

    if kind in ("ignore", "chain") and internal:
        expect = (298, None)
    elif kind == "ignore":
        expect = (200, message)
    elif kind in ("rename", "chain"):
        expect = (200, renamed(message))
    elif kind == "flaky":
        if seq % 2:
            expect = (400, f"flaky: odd seq {seq}")
        else:
            out = copy.deepcopy(message)
            out["flaky_ok"] = True
            expect = (200, out)
    elif kind == "hostile":
        if attack in ("loop", "pattern"):
            expect = (400, "time limit of")
        elif attack == "bomb":
            expect = (400, "memory limit of")
        elif attack == "hoard":
            # filling 16 MiB with 64 KiB strings takes 50-100 ms here, so it races the
            # 100 ms time limit: either limit is a correct answer
            expect = (400, ("memory limit of", "time limit of"))
        else:
            expect = (200, message)
    else:
        expect = (404, "not found")
    return envelope, (kind if kind != "hostile" else f"hostile-{attack}", expect)


def renamed(message):
    out = copy.deepcopy(message)
    traits = out["context"]["traits"]
    for old, new in RENAMES:
        if old in traits:
            if traits.get(new) in (None, ""):
                traits[new] = traits[old]
            del traits[old]
    return out


def short(value, limit=200):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def contains_token(text, part):
    """True when `part` occurs in `text` not followed by a digit ("seq 12" is not in "seq 123")."""
    start = text.find(part)
    while start >= 0:
        end = start + len(part)
        if end == len(text) or not text[end].isdigit():
            return True
        start = text.find(part, start + 1)
    return False


def check_answer(tag, status, headers, body, sent):
    """sent: messageId -> (metadata, label, (statusCode, detail)). Returns (violations,
    counts by statusCode, answered-event count)."""
    violations = []
    counts = {}
    if status != 200:
        return [f"{tag}: HTTP {status}: {short(body.decode('utf-8', 'replace'))}"], counts, 0
    if headers.get("apiVersion") != "2":
        violations.append(f"{tag}: header apiVersion is {headers.get('apiVersion')!r}")
    try:
        entries = json.loads(body)
    except ValueError as e:
        return violations + [f"{tag}: body is not JSON: {e}"], counts, 0
    if not isinstance(entries, list):
        return violations + [f"{tag}: body is not a JSON array"], counts, 0
    seen = {}
    other_seen = False
    for pos, entry in enumerate(entries):
        where = f"{tag} entry {pos}"
        if not isinstance(entry, dict) or not isinstance(entry.get("metadata"), dict):
            violations.append(f"{where}: not an object with metadata: {short(entry)}")
            continue
        md = entry["metadata"]
        mid = md.get("messageId")
        if mid not in sent:
            violations.append(f"{where}: messageId {mid!r} was not in this request")
            continue
        seen[mid] = seen.get(mid, 0) + 1
        sent_md, label, (want, detail) = sent[mid]
        code = entry.get("statusCode")
        counts[code] = counts.get(code, 0) + 1
        if code != want:
            violations.append(f"{where}: {label} {mid}: statusCode {code!r}, expected {want}"
                              f" ({short(entry.get('error', ''))})")
            continue
        echoed = dict(md)
        if code == 298:
            if other_seen:
                violations.append(f"{where}: {label} {mid}: 298 entry after other entries")
            if echoed.pop("messageIds", "absent") is not None:
                violations.append(f"{where}: {label} {mid}: 298 entry without messageIds: null")
            if entry.get("output") is not None:
                violations.append(f"{where}: {label} {mid}: 298 entry carries an output")
        else:
            other_seen = True
        if echoed != sent_md:
            violations.append(f"{where}: {label} {mid}: metadata {short(md)} != sent {short(sent_md)}")
        if code == 200:
            output = entry.get("output")
            if output != detail:
                if isinstance(output, dict):
                    keys = sorted(k for k in set(output) | set(detail) if output.get(k) != detail.get(k))
                    violations.append(f"{where}: {label} {mid}: output differs in {', '.join(keys)}")
                else:
                    violations.append(f"{where}: {label} {mid}: output is {short(output)}")
        elif code in (400, 404):
            error = entry.get("error")
            wanted = detail if isinstance(detail, tuple) else (detail,)
            if not isinstance(error, str) or not any(contains_token(error, d) for d in wanted):
                violations.append(f"{where}: {label} {mid}: error {short(error)!s} lacks {detail!r}")
    lost = [m for m in sent if m not in seen]
    dup = [m for m, n in seen.items() if n > 1]
    if lost:
        violations.append(f"{tag}: {len(lost)} event(s) not answered, e.g. "
                          + ", ".join(f"{m} ({sent[m][1]})" for m in lost[:5]))
    if dup:
        violations.append(f"{tag}: {len(dup)} event(s) answered more than once, e.g. {dup[:5]}")
    return violations, counts, len(seen)


# ---------------------------------------------------------------------------------------
# process sampling
# ---------------------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_status(pid):
    """{'VmRSS': kB, 'VmHWM': kB, 'Threads': n} or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads", "State"):
            out[key] = rest.split()[0] if rest.split() else ""
    if out.get("State") in ("Z", "X"):
        return None
    return out


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def percentile(sorted_values, pct):
    """Nearest-rank percentile of a sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-pct * len(sorted_values) // 100))
    return sorted_values[int(rank) - 1]


def median_or_none(values):
    return statistics.median(values) if values else None


def slope_per_minute(points):
    """Least-squares slope (y per minute) of [(seconds, y)], None with fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in points) / sxx * 60


# ---------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------

def require_loopback(url):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        fail_usage(f"only http:// URLs: {url}")
    try:
        ok = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        ok = False
    if not ok:
        fail_usage(f"refusing non-loopback address in {url} (use 127.0.0.1 or ::1)")
    return parts.hostname, parts.port or 80, parts.path or "/"


class Soak:
    def __init__(self, args):
        self.a = args
        self.host, self.port, self.path = require_loopback(args.url)
        self.mix = Mix(args.hostile_pct)
        self.lock = threading.Lock()
        self.seq = itertools.count(1)
        self.run_id = f"{os.getpid()}-{int(time.time())}"
        self.stop = threading.Event()
        self.server_gone = False
        # totals
        self.batches = 0
        self.events_sent = 0
        self.events_answered = 0
        self.by_status = {}
        self.by_label = {}
        self.latencies = []          # all batch latencies (s)
        self.reconnects = 0
        self.violation_count = 0
        self.violation_examples = []
        # since the last sample
        self.win_events = 0
        self.win_batches = 0
        self.win_latencies = []
        self.samples = []

    def violate(self, messages):
        if not messages:
            return
        with self.lock:
            self.violation_count += len(messages)
            room = MAX_EXAMPLES - len(self.violation_examples)
            if room > 0:
                self.violation_examples.extend(messages[:room])

    # -- clients ------------------------------------------------------------------------

    def build_batch(self, rng):
        envelopes, sent = [], {}
        for _ in range(self.a.batch):
            seq = next(self.seq)
            envelope, (label, expect) = make_event(seq, self.run_id, self.mix.pick(rng), rng)
            envelopes.append(envelope)
            sent[envelope["metadata"]["messageId"]] = (envelope["metadata"], label, expect)
        body = json.dumps(envelopes, separators=(",", ":")).encode("utf-8")
        return body, sent

    def post(self, conn, body):
        """Returns (conn, status, headers, data). A keep-alive connection the server closed
        before answering is reopened once (counted as a reconnect)."""
        headers = {"Content-Type": "application/json", "X-Feature-Filter-Code": "?1"}
        for attempt in (1, 2):
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.a.request_timeout)
            fresh = conn.sock is None
            try:
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.will_close:
                    conn.close()
                return conn, resp.status, resp.headers, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                conn = None
                if attempt == 2 or fresh:
                    raise
                with self.lock:
                    self.reconnects += 1
        raise AssertionError("unreachable")

    def client(self, index):
        rng = random.Random(self.a.seed * 1_000_003 + index)
        conn = None
        n = 0
        try:
            while not self.stop.is_set():
                body, sent = self.build_batch(rng)
                tag = f"client {index} batch {n}"
                n += 1
                t0 = time.monotonic()
                try:
                    conn, status, headers, data = self.post(conn, body)
                except (OSError, http.client.HTTPException) as e:
                    self.violate([f"{tag}: transport error after {time.monotonic() - t0:.2f} s: "
                                  f"{type(e).__name__}: {e} ({len(sent)} events lost)"])
                    if conn is not None:
                        conn.close()
                    conn = None
                    with self.lock:
                        self.batches += 1
                        self.events_sent += len(sent)
                    time.sleep(0.5)  # do not spin against a dead server
                    continue
                elapsed = time.monotonic() - t0
                violations, counts, answered = check_answer(tag, status, headers, data, sent)
                self.violate(violations)
                with self.lock:
                    self.batches += 1
                    self.events_sent += len(sent)
                    self.events_answered += answered
                    self.latencies.append(elapsed)
                    self.win_events += answered
                    self.win_batches += 1
                    self.win_latencies.append(elapsed)
                    for code, c in counts.items():
                        self.by_status[code] = self.by_status.get(code, 0) + c
                    for _, label, _ in sent.values():
                        self.by_label[label] = self.by_label.get(label, 0) + 1
        except Exception as e:  # a bug here must fail the run, not hide
            self.violate([f"client {index} crashed: {type(e).__name__}: {e}"])
        finally:
            if conn is not None:
                conn.close()

    # -- sampling -----------------------------------------------------------------------

    def scrape_metrics(self):
        """(states_alive, states_created) summed over labels, None when unavailable."""
        try:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            conn.request("GET", "/metrics")
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
            conn.close()
            if resp.status != 200:
                return None, None
        except (OSError, http.client.HTTPException):
            return None, None
        found = {}
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            for name in ("luaform_states_alive", "luaform_states_created"):
                if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                    try:
                        found[name] = found.get(name, 0) + float(line.rsplit(None, 1)[1])
                    except (ValueError, IndexError):
                        pass
        return found.get("luaform_states_alive"), found.get("luaform_states_created")

    def sample(self, t_start, last):
        now = time.monotonic()
        status = proc_status(self.a.pid)
        if status is None:
            self.server_gone = True
            self.violate([f"server process {self.a.pid} is gone at {now - t_start:.0f} s"])
            return None
        cpu = proc_cpu_seconds(self.a.pid)
        alive, created = self.scrape_metrics()
        with self.lock:
            events, batches = self.win_events, self.win_batches
            lat = sorted(self.win_latencies)
            self.win_events = self.win_batches = 0
            self.win_latencies = []
            violations = self.violation_count
        span = now - last["t"] if last else None
        cpu_pct = None
        if last and cpu is not None and last["cpu"] is not None and span > 0:
            cpu_pct = round((cpu - last["cpu"]) / span * 100, 1)
        row = {
            "elapsed_s": round(now - t_start, 1),
            "rss_mib": round(int(status["VmRSS"]) / 1024, 1),
            "hwm_mib": round(int(status["VmHWM"]) / 1024, 1),
            "threads": int(status["Threads"]),
            "fds": proc_fds(self.a.pid),
            "server_cpu_pct": cpu_pct,
            "states_alive": None if alive is None else int(alive),
            "states_created": None if created is None else int(created),
            "events": events,
            "events_per_s": round(events / span, 1) if span else None,
            "batches": batches,
            "p50_ms": None if not lat else round(percentile(lat, 50) * 1000, 1),
            "p99_ms": None if not lat else round(percentile(lat, 99) * 1000, 1),
            "violations": violations,
            "_t": now, "_cpu": cpu,
        }
        self.samples.append(row)
        return {"t": now, "cpu": cpu}

    CSV_COLUMNS = ["elapsed_s", "rss_mib", "hwm_mib", "threads", "fds", "server_cpu_pct",
                   "states_alive", "states_created", "events", "events_per_s", "batches",
                   "p50_ms", "p99_ms", "violations"]

    def write_csv_row(self, f, row):
        f.write(",".join("" if row[c] is None else str(row[c]) for c in self.CSV_COLUMNS) + "\n")
        f.flush()

    # -- the run --------------------------------------------------------------------------

    def run(self):
        a = self.a
        os.makedirs(a.outdir, exist_ok=True)
        csv_path = os.path.join(a.outdir, "soak.csv")
        print(f"soak: {a.seconds} s against {a.url} (server pid {a.pid}), {a.concurrency} clients, "
              f"{a.batch}-event batches, {a.hostile_pct:g}% hostile events, sample every "
              f"{a.sample:g} s -> {csv_path}", flush=True)
        loader_cpu0 = sum(os.times()[:2])
        t_start = time.monotonic()
        deadline = t_start + a.seconds
        with open(csv_path, "w", encoding="utf-8") as csv:
            csv.write(",".join(self.CSV_COLUMNS) + "\n")
            last = self.sample(t_start, None)
            if last is not None:
                self.write_csv_row(csv, self.samples[-1])
            threads = [threading.Thread(target=self.client, args=(i,), daemon=True,
                                        name=f"soak-client-{i}") for i in range(a.concurrency)]
            for t in threads:
                t.start()
            next_sample = t_start + a.sample
            while not self.server_gone:
                now = time.monotonic()
                if now >= deadline:
                    break
                time.sleep(max(0.0, min(next_sample, deadline) - now))
                if time.monotonic() >= next_sample:
                    next_sample += a.sample
                    last = self.sample(t_start, last)
                    if last is None:
                        break
                    row = self.samples[-1]
                    self.write_csv_row(csv, row)
                    print(f"  {row['elapsed_s']:>7.1f} s  rss {row['rss_mib']:.1f} MiB  "
                          f"{row['events_per_s'] or 0:.0f} ev/s  p99 {row['p99_ms']} ms  "
                          f"cpu {row['server_cpu_pct']}%  states {row['states_alive']}"
                          f"/{row['states_created']}  fds {row['fds']}  "
                          f"violations {row['violations']}", flush=True)
            load_end = time.monotonic()
            self.stop.set()
            hard_stop = time.monotonic() + a.request_timeout + 5
            for t in threads:
                t.join(max(0.0, hard_stop - time.monotonic()))
            stuck = [t.name for t in threads if t.is_alive()]
            if stuck:
                self.violate([f"clients still waiting for an answer at the hard stop: {', '.join(stuck)}"])
            # one last sample covering the tail (requests in flight at the deadline)
            if not self.server_gone and time.monotonic() - self.samples[-1]["_t"] > 1:
                if self.sample(t_start, last) is not None:
                    self.write_csv_row(csv, self.samples[-1])
        wall = load_end - t_start
        loader_cpu = sum(os.times()[:2]) - loader_cpu0
        return self.report(wall, loader_cpu)

    def rss_verdict(self):
        """(ok, text, details) from the samples after warm-up (the first 20% of the run).

        Two measures of growth, each held against max(rss_pct % of the second quarter's
        median, rss_mb MiB); either one over the limit fails:
          * robust to spikes: the median RSS of the last quarter minus the median of the
            second quarter;
          * a steady leak over the whole window: the least-squares line through the
            post-warm-up samples, its rise from the end of warm-up to the last sample.
        """
        dur = self.a.seconds
        pts = [(s["elapsed_s"], s["rss_mib"]) for s in self.samples]
        post = [(t, r) for t, r in pts if t >= 0.2 * dur]
        q2 = [r for t, r in pts if 0.25 * dur <= t < 0.5 * dur]
        q4 = [r for t, r in pts if t >= 0.75 * dur]
        details = {"warmup_s": round(0.2 * dur, 1), "samples_after_warmup": len(post),
                   "q2_median_mib": None, "q4_median_mib": None, "median_growth_mib": None,
                   "slope_mib_per_min": None, "fitted_growth_mib": None, "limit_mib": None}
        if not q2 or not q4:
            return False, "INCONCLUSIVE (too few samples in the second or last quarter)", details
        m2, m4 = median_or_none(q2), median_or_none(q4)
        limit = max(self.a.rss_pct / 100 * m2, self.a.rss_mb)
        growth = m4 - m2
        slope = slope_per_minute(post)
        fitted = None
        if slope is not None:
            fitted = slope * (post[-1][0] - 0.2 * dur) / 60
        details.update(q2_median_mib=round(m2, 1), q4_median_mib=round(m4, 1),
                       median_growth_mib=round(growth, 1), limit_mib=round(limit, 1),
                       slope_mib_per_min=None if slope is None else round(slope, 3),
                       fitted_growth_mib=None if fitted is None else round(fitted, 1))
        ok = growth <= limit and (fitted is None or fitted <= limit)
        text = (f"{'PASS' if ok else 'FAIL'}: median RSS {m2:.1f} MiB (2nd quarter) -> "
                f"{m4:.1f} MiB (last quarter), {growth:+.1f} MiB")
        if fitted is not None:
            text += f"; fitted line after warm-up {slope:+.2f} MiB/min, {fitted:+.1f} MiB"
        text += f"; limit +{limit:.1f} MiB (max of {self.a.rss_pct:g}% and {self.a.rss_mb:g} MiB)"
        return ok, text, details

    def report(self, wall, loader_cpu):
        lat = sorted(self.latencies)
        rss = [s["rss_mib"] for s in self.samples]
        rss_ok, rss_text, rss_details = self.rss_verdict()
        lost = self.events_sent - self.events_answered
        p50 = percentile(lat, 50)
        p99 = percentile(lat, 99)
        summary = {
            "seconds": self.a.seconds, "wall_seconds": round(wall, 1),
            "clients": self.a.concurrency, "batch": self.a.batch,
            "hostile_pct": self.a.hostile_pct,
            "batches": self.batches, "events_sent": self.events_sent,
            "events_answered": self.events_answered,
            "events_per_s": round(self.events_answered / wall, 1) if wall > 0 else None,
            "latency_ms": {"p50": None if p50 is None else round(p50 * 1000, 1),
                           "p99": None if p99 is None else round(p99 * 1000, 1),
                           "max": round(lat[-1] * 1000, 1) if lat else None},
            "answers_by_status": {str(k): v for k, v in sorted(self.by_status.items(), key=str)},
            "events_by_kind": dict(sorted(self.by_label.items())),
            "rss_mib": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None,
                        "max": max(rss) if rss else None},
            "rss_verdict": rss_text, "rss": rss_details,
            "threads_last": self.samples[-1]["threads"] if self.samples else None,
            "fds": [self.samples[0]["fds"], self.samples[-1]["fds"]] if self.samples else None,
            "states_created_last": self.samples[-1]["states_created"] if self.samples else None,
            "loader_cpu_pct": round(loader_cpu / wall * 100, 1) if wall > 0 else None,
            "reconnects": self.reconnects,
            "violations": self.violation_count,
            "violation_examples": self.violation_examples,
            "server_gone": self.server_gone,
        }
        with open(os.path.join(self.a.outdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        print("soak summary")
        print(f"  events    {self.events_sent} sent in {self.batches} batches, "
              f"{self.events_answered} answered, {lost} not answered")
        print(f"  answers   " + ", ".join(f"{k}: {v}" for k, v in summary["answers_by_status"].items()))
        print(f"  kinds     " + ", ".join(f"{k} {v}" for k, v in summary["events_by_kind"].items()))
        print(f"  rate      {summary['events_per_s']} events/s over {wall:.1f} s "
              f"(loader CPU {summary['loader_cpu_pct']}% of one core)")
        print(f"  latency   p50 {summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms, "
              f"max {summary['latency_ms']['max']} ms per {self.a.batch}-event batch")
        if rss:
            print(f"  rss       first {rss[0]} MiB, last {rss[-1]} MiB, max {max(rss)} MiB "
                  f"({len(rss)} samples)")
        if self.samples:
            last = self.samples[-1]
            print(f"  process   threads {last['threads']}, fds {self.samples[0]['fds']} -> "
                  f"{last['fds']}, Lua states alive {last['states_alive']}, created "
                  f"{last['states_created']}")
        print(f"  rss trend {rss_text}")
        if self.reconnects:
            print(f"  note      {self.reconnects} keep-alive connection(s) reopened before an answer")
        if self.violation_count:
            print(f"  VIOLATIONS: {self.violation_count}")
            for v in self.violation_examples:
                print(f"    - {v}")
        else:
            print("  violations: none")
        ok = rss_ok and not self.violation_count and not self.server_gone
        print(f"soak: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1


def cmd_run(args):
    if not 10 <= args.seconds <= 86400:
        fail_usage("--seconds must be within 10..86400")
    if not 1 <= args.concurrency <= 32:
        fail_usage("--concurrency must be within 1..32")
    if not 1 <= args.batch <= 1000:
        fail_usage("--batch must be within 1..1000")
    if not 1 <= args.sample <= 600:
        fail_usage("--sample must be within 1..600 seconds")
    if not 0 <= args.hostile_pct <= 100:
        fail_usage("--hostile-pct must be within 0..100")
    if not 1 <= args.request_timeout <= 300:
        fail_usage("--request-timeout must be within 1..300")
    if proc_status(args.pid) is None:
        fail_usage(f"no process {args.pid}")
    return Soak(args).run()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("project", help="write the temporary soak project")
    p.add_argument("dir")
    p.add_argument("--repo", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("free-port", help="print a free loopback TCP port")
    p.add_argument("--prefer", type=int)
    p.set_defaults(func=cmd_free_port)

    p = sub.add_parser("run", help="drive load, sample the server, judge")
    p.add_argument("--url", required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--outdir", required=True)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--sample", type=float, default=10.0)
    p.add_argument("--hostile-pct", type=float, default=2.0)
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--rss-pct", type=float, default=10.0)
    p.add_argument("--rss-mb", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_run)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("soak_load: interrupted", file=sys.stderr)
        sys.exit(130)

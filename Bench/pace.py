#!/usr/bin/env python3
"""Fixed-rate HTTP load: POSTs one body at a steady RATE (requests/s) for SECONDS over keep-alive
connections, and reports latency percentiles. wrk only measures a closed loop (as fast as it can),
so this is what scripts/bench uses for "p99 batch latency at half of peak".

Open loop: request i is due at start + i / RATE, whatever happened before. THREADS threads, one
keep-alive connection each, take the next due request as soon as they are free, so a slow answer
delays only the requests queued behind it. Latency runs from the request's due time (not from when
a thread got to send it) to the last byte of the answer, so time spent queued behind slow answers
counts (no coordinated omission). A non-200 answer or a connection error counts as an error; the
connection is then reopened.

  pace.py URL BODY_FILE RATE SECONDS [--threads N] [--header 'Name: value' ...]

Prints one line:
  pace: R req/s for S s over N connections: sent X, errors E, achieved A req/s, late L, \
latency ms p50 .. p90 .. p99 .. max ..; from send: p50 .. p99 ..
(late: requests sent more than 1 ms after they were due, because every connection was busy or
the client was not scheduled in time; "from send" leaves that wait out, for comparison).
Exits 1 when any request failed."""
import argparse
import http.client
import threading
import time
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("body")
    ap.add_argument("rate", type=float)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--header", action="append", default=[])
    a = ap.parse_args()
    u = urllib.parse.urlsplit(a.url)
    path = u.path + ("?" + u.query if u.query else "")
    body = open(a.body, "rb").read()
    headers = {"Content-Type": "application/json", "Connection": "keep-alive"}
    for h in a.header:
        k, v = h.split(":", 1)
        headers[k.strip()] = v.strip()
    total = max(1, int(a.rate * a.seconds))
    lock = threading.Lock()
    state = {"next": 0}
    latencies, service, errors, late = [], [], [0], [0]
    start = time.perf_counter() + 0.05

    def worker():
        conn = None
        while True:
            with lock:
                i = state["next"]
                if i >= total:
                    break
                state["next"] = i + 1
            due = start + i / a.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.001:
                with lock:
                    late[0] += 1
            sent = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=30)
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                done = time.perf_counter()
                ok = resp.status == 200
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                done, ok = time.perf_counter(), False
                if conn is not None:
                    conn.close()
                conn = None
            with lock:
                if ok:
                    latencies.append(done - due)
                    service.append(done - sent)
                else:
                    errors[0] += 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat, svc = sorted(latencies), sorted(service)

    def pct(p, v=lat):
        return v[min(len(v) - 1, int(p * len(v)))] * 1000 if v else float("nan")

    print(f"pace: {a.rate:g} req/s for {a.seconds:g} s over {a.threads} connections: sent {total}, "
          f"errors {errors[0]}, achieved {total / elapsed:.1f} req/s, late {late[0]}, latency ms "
          f"p50 {pct(0.50):.2f} p90 {pct(0.90):.2f} p99 {pct(0.99):.2f} max {pct(1.0):.2f}; "
          f"from send: p50 {pct(0.50, svc):.2f} p99 {pct(0.99, svc):.2f}",
          flush=True)
    return 1 if errors[0] else 0


if __name__ == "__main__":
    raise SystemExit(main())

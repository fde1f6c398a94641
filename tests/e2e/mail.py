"""Mail clients for the e2e suite: LMTP deliveries and IMAP checks through a director.

  mail.py deliver IP USER N          N messages over LMTP
  mail.py count IP USER PASS         INBOX's message count
  mail.py flag IP USER PASS          \\Flagged and the keyword e2e-kept on the first message
  mail.py state IP USER PASS         JSON: count, UIDVALIDITY, UIDs, flagged UIDs, keyword UIDs
  mail.py traffic OUT.json STOPFILE PASS IP... users...   live users until STOPFILE exists
  mail.py session IP USER PASS STOPFILE   one IMAP session, kept open until STOPFILE exists
  mail.py idle OUT.json IP USER PASS STOPFILE   a client parked in IDLE, reconnecting when closed
"""
import imaplib
import json
import os
import random
import re
import select
import smtplib
import sys
import time


def deliver(ip, user, n):
    s = smtplib.LMTP(ip, 24)
    for i in range(int(n)):
        s.sendmail("e2e@e2e.invalid", [user], f"Subject: e2e-{user}-{i}\r\n\r\nbody {i}\r\n")
    s.quit()


def login(ip, user, password):
    m = imaplib.IMAP4(ip, 143, timeout=10)
    m.login(user, password)
    return m


def count(ip, user, password):
    m = login(ip, user, password)
    typ, data = m.select("INBOX")
    m.logout()
    print(int(data[0]))


def flag(ip, user, password):
    m = login(ip, user, password)
    m.select("INBOX")
    typ, _ = m.store("1", "+FLAGS", "(\\Flagged e2e-kept)")
    m.logout()
    if typ != "OK":
        raise SystemExit(f"STORE: {typ}")


def state(ip, user, password):
    m = login(ip, user, password)
    typ, data = m.select("INBOX", readonly=True)
    n = int(data[0])
    uidvalidity = int(m.response("UIDVALIDITY")[1][0])
    _, uids = m.uid("SEARCH", "ALL")
    _, flagged = m.uid("SEARCH", "FLAGGED")
    _, kept = m.uid("SEARCH", "KEYWORD", "e2e-kept")
    m.logout()
    ints = lambda d: [int(x) for x in d[0].split()]
    print(json.dumps({"count": n, "uidvalidity": uidvalidity, "uids": ints(uids),
                      "flagged": ints(flagged), "kept": ints(kept)}, sort_keys=True))


def traffic(out, stopfile, password, *rest):
    """Users that keep working through the rollout: each round one LMTP delivery and one IMAP
    login (SELECT, NOOP, LOGOUT) per user, alternating directors. A delivery is counted only when
    the server accepted it; one deferred (4xx) is what a real MTA retries later, one rejected
    (5xx, or no connection to the director) would bounce or be lost. A 4xx after DATA (the
    director lost its proxy connection mid-delivery) is uncertain: the backend may have stored
    the message before the connection went, so the MTA's retry may duplicate it (never lose it)."""
    ips = [a for a in rest if re.match(r"^\d+\.\d+\.\d+\.\d+$", a)]
    users = [a for a in rest if a not in ips]
    res = {"rounds": 0, "accepted": {u: 0 for u in users}, "uncertain": {u: 0 for u in users},
           "deferred": 0, "rejected": 0, "logins": 0, "login_failures": [], "errors": []}
    r = 0
    while not os.path.exists(stopfile):
        for i, u in enumerate(users):
            ip = ips[(r + i) % len(ips)]
            try:
                s = smtplib.LMTP(ip, 24, timeout=10)
                refused = s.sendmail("traffic@e2e.invalid", [u], f"Subject: live-{u}-{r}\r\n\r\nround {r}\r\n")
                s.quit()
                if not refused:
                    res["accepted"][u] += 1
            except smtplib.SMTPRecipientsRefused as e:
                code = next(iter(e.recipients.values()))[0]
                res["deferred" if 400 <= code < 500 else "rejected"] += 1
                res["errors"].append(f"lmtp {u} via {ip} round {r}: {e.recipients}"[:200])
            except smtplib.SMTPResponseException as e:
                res["deferred" if 400 <= e.smtp_code < 500 else "rejected"] += 1
                if isinstance(e, smtplib.SMTPDataError) and 400 <= e.smtp_code < 500:
                    res["uncertain"][u] += 1
                res["errors"].append(f"lmtp {u} via {ip} round {r}: {e}"[:200])
            except OSError as e:
                res["rejected"] += 1
                res["errors"].append(f"lmtp {u} via {ip} round {r}: {e}"[:200])
            ip = ips[(r + i + 1) % len(ips)]
            try:
                m = login(ip, u, password)
                m.select("INBOX")
                m.noop()
                m.logout()
                res["logins"] += 1
            except (imaplib.IMAP4.error, OSError) as e:
                res["login_failures"].append(f"imap {u} via {ip} round {r}: {e}"[:200])
        r += 1
        res["rounds"] = r
        time.sleep(random.uniform(0.2, 0.6))
    json.dump(res, open(out, "w"), indent=1, sort_keys=True)


def session(ip, user, password, stopfile):
    m = login(ip, user, password)
    m.select("INBOX")
    while not os.path.exists(stopfile):
        m.noop()
        time.sleep(1)
    m.logout()


def idle(out, ip, user, password, stopfile):
    """Parks in IDLE like a mail client; when the server closes the session it logs in again.
    Writes {"sessions": n, "closed": n, "failed_logins": n} to OUT.json after each change."""
    res = {"sessions": 0, "closed": 0, "failed_logins": 0}

    def save():
        json.dump(res, open(out + ".tmp", "w"))
        os.replace(out + ".tmp", out)

    save()
    # a suite that dies before its stop file is written must not leave the client behind
    end = time.time() + 900
    done = lambda: os.path.exists(stopfile) or time.time() > end
    while not done():
        try:
            m = login(ip, user, password)
            m.select("INBOX")
        except Exception:
            res["failed_logins"] += 1
            save()
            time.sleep(1)
            continue
        res["sessions"] += 1
        save()
        tag = m._new_tag().decode()
        m.send(f"{tag} IDLE\r\n".encode())
        if not m.readline().startswith(b"+"):
            raise SystemExit(f"{user}: IDLE refused")
        closed = False
        while not done():
            # select, not a socket timeout: a timed-out socket file refuses every later read
            if not select.select([m.sock], [], [], 1)[0]:
                continue
            try:
                line = m.readline()
            except OSError:
                line = b""
            if not line or line.startswith(b"* BYE"):
                closed = True
                break
        if closed:
            res["closed"] += 1
            save()
    save()


if __name__ == "__main__":
    {"deliver": deliver, "count": count, "flag": flag, "state": state, "traffic": traffic,
     "session": session, "idle": idle}[sys.argv[1]](*sys.argv[2:])

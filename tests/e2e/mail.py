"""Mail clients for the e2e suite: LMTP deliveries and IMAP checks through a director."""
import imaplib
import smtplib
import sys


def deliver(ip, user, n):
    s = smtplib.LMTP(ip, 24)
    for i in range(int(n)):
        s.sendmail("e2e@e2e.invalid", [user], f"Subject: e2e-{user}-{i}\r\n\r\nbody {i}\r\n")
    s.quit()


def count(ip, user, password):
    m = imaplib.IMAP4(ip, 143)
    m.login(user, password)
    typ, data = m.select("INBOX")
    m.logout()
    print(int(data[0]))


if __name__ == "__main__":
    {"deliver": deliver, "count": count}[sys.argv[1]](*sys.argv[2:])

"""Schemathesis hooks for fuzzing Sesame (tests/api/schemathesis.rs).

Requests to the native and admin APIs carry an administrator's bearer
token, and forward auth and userinfo a token too. The fuzzer is an
administrator: it may end its own session, change its password, disable or
demote its account, take `admin` from the administrator role, or spend the
account's API-call quota. So whenever a token stops working (401, 403,
429), a fresh administrator is made with the CLI (the role's `admin`
permission given back first) and signs in, and the request is retried:
the authenticated routes stay reached for the whole run.
"""

import itertools
import os
import subprocess

import requests
import schemathesis

BASE = os.environ["FUZZ_URL"]
SESAME = os.environ["FUZZ_SESAME"]
PASSWORD = os.environ["FUZZ_PASSWORD"]
NUMBERS = itertools.count(1)


def log(why):
    # Schemathesis reports only that no token could be had: the test
    # prints this file.
    with open(os.environ["FUZZ_LOG"], "a", encoding="utf-8") as out:
        out.write(why + "\n")


def cli(*args, stdin=None):
    done = subprocess.run(
        [SESAME, *args], input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        log(f"sesame {' '.join(args)}: {done.stderr.strip()}")
        raise RuntimeError(f"sesame {args[0]} {args[1]} failed")


def fresh_administrator():
    cli("role", "grant", "administrator", "admin")
    name = f"fuzzer{next(NUMBERS)}"
    cli(
        "user", "add", "--username", name, "--role", "administrator", "--password-stdin",
        stdin=PASSWORD,
    )
    answer = requests.post(
        f"{BASE}/v1/login", json={"login": name, "password": PASSWORD}, timeout=10
    )
    if answer.status_code != 200:
        why = f"{name} cannot sign in: {answer.status_code} {answer.text}"
        log(why)
        raise RuntimeError(why)
    return answer.json()["access_token"]


def bearer(case, token):
    case.headers = case.headers or {}
    case.headers["Authorization"] = f"Bearer {token}"


@schemathesis.auth(retry_on=[401, 403, 429]).apply_to(path_regex=r"^/v1/(me|admin|logout)")
class Administrator:
    def get(self, case, ctx):
        return fresh_administrator()

    def set(self, case, data, ctx):
        bearer(case, data)


# Forward auth and userinfo answer 401/403 by design; a token is renewed
# only when it has stopped working (401).
@schemathesis.auth(retry_on=[401]).apply_to(path_regex=r"^/(v1/authz|oauth2/userinfo)")
class Caller:
    def get(self, case, ctx):
        return fresh_administrator()

    def set(self, case, data, ctx):
        bearer(case, data)

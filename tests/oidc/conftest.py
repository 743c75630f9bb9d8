"""Shared fixtures for the third-party-client tests of Sesame's OpenID provider.

The suite runs against a server that is already running. The environment gives:

- ``OIDC_ISSUER``: the issuer, e.g. ``http://127.0.0.1:18420``;
- ``OIDC_SESAME_BIN``: the ``sesame`` CLI, used to register users and clients (the
  CLI's own database variables are inherited from the environment);
- ``OIDC_ARTIFACTS``: a directory for screenshots (optional here; a temporary
  directory is used without it).

Every user and client is registered with a random per-run suffix, so the same
server can be reused across runs.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

# Every HTTP call of the suite uses this bound (connect, read) in seconds.
HTTP_TIMEOUT = (5, 20)
CLI_TIMEOUT = 60
PASSWORD = "correct horse battery staple 42"


def pytest_configure(config):
    missing = [name for name in ("OIDC_ISSUER", "OIDC_SESAME_BIN") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            "these tests need a running Sesame: set " + ", ".join(missing)
            + " (see tests/oidc/README.md)"
        )


# --------------------------------------------------------------------------
# Small helpers (plain functions, used through fixtures below)
# --------------------------------------------------------------------------


class FormParser(HTMLParser):
    """Collects the forms of a page: their action, method and inputs."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.labels: dict[str, str] = {}
        self._label_for: str | None = None
        self._label_text: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self.forms.append(
                {"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                 "inputs": {}, "types": {}}
            )
        elif tag == "input" and self.forms and a.get("name"):
            form = self.forms[-1]
            form["inputs"][a["name"]] = a.get("value", "")
            form["types"][a["name"]] = a.get("type", "text")
        elif tag == "label":
            self._label_for = a.get("for")
            self._label_text = []

    def handle_endtag(self, tag):
        if tag == "label" and self._label_for is not None:
            self.labels[self._label_for] = "".join(self._label_text).strip()
            self._label_for = None

    def handle_data(self, data):
        self.text.append(data)
        if self._label_for is not None:
            self._label_text.append(data)


def parse_page(html: str) -> FormParser:
    parser = FormParser()
    parser.feed(html)
    parser.close()
    return parser


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair, computed here."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def half_hash(value: str) -> str:
    """OIDC at_hash for an Ed25519 (EdDSA) signature: left half of SHA-512."""
    digest = hashlib.sha512(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


@dataclass
class SignIn:
    """What happened when the hosted sign-in form was submitted."""

    page: requests.Response  # the GET of the authorization URL
    response: requests.Response  # the POST of the form
    session: requests.Session

    @property
    def location(self) -> str | None:
        return self.response.headers.get("Location")


@dataclass
class Client:
    client_id: str
    secret: str | None
    redirect_uri: str
    post_logout_redirect_uri: str | None = None
    grants: list[str] = field(default_factory=list)

    @property
    def public(self) -> bool:
        return self.secret is None

    @property
    def auth(self):
        """requests' client_secret_basic credentials (None for a public client)."""
        return None if self.secret is None else (self.client_id, self.secret)


@dataclass
class User:
    username: str
    password: str
    email: str
    display_name: str


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def issuer() -> str:
    return os.environ["OIDC_ISSUER"].rstrip("/")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    path = os.environ.get("OIDC_ARTIFACTS")
    directory = Path(path) if path else tmp_path_factory.mktemp("oidc-artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(scope="session")
def run_suffix() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def cli():
    """Runs the sesame CLI with the inherited environment (the SESAME_*
    variables that point it at the server's database); returns stdout."""
    binary = os.environ["OIDC_SESAME_BIN"]
    env = dict(os.environ)

    def run(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [binary, *args], input=stdin, capture_output=True, text=True,
            timeout=CLI_TIMEOUT, env=env,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"sesame {' '.join(args)} exited {done.returncode}:\n"
                f"stdout: {done.stdout}\nstderr: {done.stderr}"
            )
        return done.stdout

    return run


@pytest.fixture(scope="session")
def discovery(issuer) -> dict:
    r = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="session")
def make_user(cli, run_suffix):
    counter = iter(range(1, 10_000))

    def make(tag: str = "u") -> User:
        name = f"oidc-{tag}-{run_suffix}-{next(counter)}"
        user = User(username=name, password=PASSWORD, email=f"{name}@example.test",
                    display_name=f"OIDC {tag.title()} {run_suffix}")
        cli("user", "add", "--username", user.username, "--email", user.email,
            "--display-name", user.display_name, "--password-stdin",
            stdin=user.password + "\n")
        return user

    return make


@pytest.fixture(scope="session")
def user(make_user) -> User:
    return make_user("alice")


@pytest.fixture(scope="session")
def make_client(cli, run_suffix):
    counter = iter(range(1, 10_000))

    def make(tag: str = "c", *, public: bool = False, redirect_uri: str | None = None,
             grants: list[str] | None = None, scopes: list[str] | None = None,
             post_logout: bool = False) -> Client:
        client_id = f"oidc-{tag}-{run_suffix}-{next(counter)}"
        redirect_uri = redirect_uri or f"http://127.0.0.1:9/cb/{client_id}"
        args = ["client", "add", client_id, "--redirect-uri", redirect_uri]
        post_logout_uri = None
        if post_logout:
            post_logout_uri = f"http://127.0.0.1:9/bye/{client_id}"
            args += ["--post-logout-redirect-uri", post_logout_uri]
        if public:
            args.append("--public")
        for grant in grants or []:
            args += ["--grant", grant]
        for scope in scopes or []:
            args += ["--scope", scope]
        out = cli(*args)
        fields = dict(
            line.split(": ", 1) for line in out.splitlines() if ": " in line
        )
        assert fields.get("client_id") == client_id, out
        secret = fields.get("client_secret")
        if public:
            assert secret is None, "a public client was given a secret"
        else:
            assert secret, f"no client_secret printed for a confidential client: {out!r}"
        return Client(client_id=client_id, secret=secret, redirect_uri=redirect_uri,
                      post_logout_redirect_uri=post_logout_uri, grants=grants or [])

    return make


@pytest.fixture(scope="session")
def web_client(make_client) -> Client:
    """A confidential client with all four grants."""
    return make_client("web", grants=["authorization_code", "refresh_token", "password",
                                      "client_credentials"], post_logout=True)


@pytest.fixture(scope="session")
def sign_in():
    """GETs an authorization URL and submits the hosted sign-in form.

    Returns a SignIn; the POST's redirect is not followed. Pass ``session`` to
    keep an existing cookie jar (SSO), ``headers`` for e.g. Accept-Language.
    """

    def run(authorization_url: str, login: str, password: str, *,
            session: requests.Session | None = None, headers: dict | None = None) -> SignIn:
        s = session or requests.Session()
        page = s.get(authorization_url, allow_redirects=False, timeout=HTTP_TIMEOUT,
                     headers=headers)
        assert page.status_code == 200, (
            f"authorization request did not show the sign-in page: {page.status_code} "
            f"{page.headers.get('Location')} {page.text[:500]}"
        )
        assert page.headers.get("Content-Type", "").startswith("text/html")
        parsed = parse_page(page.text)
        assert len(parsed.forms) == 1, "expected exactly one form on the sign-in page"
        form = parsed.forms[0]
        assert form["method"] == "post"
        assert "login" in form["inputs"] and form["types"]["password"] == "password"
        data = dict(form["inputs"])
        data["login"] = login
        data["password"] = password
        response = s.post(urljoin(page.url, form["action"]), data=data,
                          allow_redirects=False, timeout=HTTP_TIMEOUT, headers=headers)
        return SignIn(page=page, response=response, session=s)

    return run

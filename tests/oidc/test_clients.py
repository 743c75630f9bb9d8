"""Sesame's OpenID provider, driven by third-party client libraries.

Authlib does the OAuth 2.0 flows, PyJWT (with the provider's JWKS) verifies
the tokens, requests covers the endpoints the libraries do not wrap.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oidc.core import CodeIDToken
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from conftest import HTTP_TIMEOUT, half_hash, parse_page, pkce_pair, query_of

# joserfc (under Authlib) warns that "EdDSA" is deprecated by RFC 9864 in
# favour of "Ed25519"; the warning is expected while Sesame signs with "EdDSA".
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

SCOPE = "openid profile email"


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def authlib_session(client, **kwargs) -> OAuth2Session:
    return OAuth2Session(
        client_id=client.client_id,
        client_secret=client.secret,
        token_endpoint_auth_method="none" if client.public else "client_secret_basic",
        redirect_uri=client.redirect_uri,
        code_challenge_method="S256",
        default_timeout=HTTP_TIMEOUT,
        **kwargs,
    )


def authlib_code_flow(discovery, sign_in, client, user, *, scope=SCOPE, nonce=None):
    """The authorization code flow with PKCE, with Authlib on the client side.

    Returns (token, nonce, oauth2 session, sign-in result, location)."""
    oauth = authlib_session(client, scope=scope)
    verifier = generate_token(64)
    nonce = nonce or secrets.token_urlsafe(16)
    url, state = oauth.create_authorization_url(
        discovery["authorization_endpoint"], code_verifier=verifier, nonce=nonce
    )
    params = query_of(url)
    assert params["code_challenge_method"] == "S256" and params["code_challenge"]
    done = sign_in(url, user.username, user.password)
    assert done.response.status_code == 303, done.response.text[:500]
    location = done.location
    assert location and location.startswith(client.redirect_uri + "?"), location
    got = query_of(location)
    assert got.get("state") == state
    assert got.get("code")
    token = oauth.fetch_token(
        discovery["token_endpoint"], authorization_response=location,
        code_verifier=verifier, state=state,
    )
    return token, nonce, oauth, done, location


def raw_code(discovery, sign_in, client, user, *, scope=SCOPE, extra=None,
             session=None):
    """Signs in with requests alone; returns (code, verifier, query of the redirect)."""
    verifier, challenge = pkce_pair()
    params = {
        "response_type": "code", "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "scope": scope,
        "state": secrets.token_urlsafe(8), "nonce": secrets.token_urlsafe(8),
        "code_challenge": challenge, "code_challenge_method": "S256",
        **(extra or {}),
    }
    url = requests.Request("GET", discovery["authorization_endpoint"], params=params).prepare().url
    done = sign_in(url, user.username, user.password, session=session)
    assert done.response.status_code == 303, done.response.text[:500]
    got = query_of(done.location)
    assert got["state"] == params["state"]
    return got["code"], verifier, got


def exchange(discovery, client, code, verifier=None, redirect_uri=None):
    data = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": redirect_uri or client.redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    if client.public:
        data["client_id"] = client.client_id
    return requests.post(discovery["token_endpoint"], data=data, auth=client.auth,
                         timeout=HTTP_TIMEOUT)


def userinfo(discovery, access_token, method="GET"):
    return requests.request(method, discovery["userinfo_endpoint"],
                            headers={"Authorization": f"Bearer {access_token}"},
                            timeout=HTTP_TIMEOUT)


def introspect(discovery, client, token):
    r = requests.post(discovery["introspection_endpoint"], data={"token": token},
                      auth=client.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()


def oauth_error(response) -> str:
    assert response.headers.get("Content-Type", "").startswith("application/json"), (
        response.status_code, response.headers, response.text[:300])
    body = response.json()
    assert "error" in body, body
    return body["error"]


def jwt_header(token: str) -> dict:
    head = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def verify_access_token(issuer, token: str, jwks_client=None) -> dict:
    jwks_client = jwks_client or jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json",
                                                 cache_keys=False, timeout=20)
    key = jwks_client.get_signing_key_from_jwt(token)
    return jwt.decode(token, key.key, algorithms=["EdDSA"], audience="sesame",
                      issuer=issuer, options={"require": ["exp", "iat", "iss", "aud", "sub"]})


def verify_id_token(issuer, token: str, client_id: str, nonce: str, jwks_client=None) -> dict:
    jwks_client = jwks_client or jwt.PyJWKClient(f"{issuer}/.well-known/jwks.json",
                                                 cache_keys=False, timeout=20)
    key = jwks_client.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["EdDSA"], audience=client_id,
                        issuer=issuer,
                        options={"require": ["exp", "iat", "iss", "aud", "sub"]})
    assert claims["nonce"] == nonce
    return claims


def authorize_url(discovery, client, **params) -> str:
    verifier, challenge = pkce_pair()
    base = {"response_type": "code", "client_id": client.client_id,
            "redirect_uri": client.redirect_uri, "scope": "openid",
            "state": secrets.token_urlsafe(8), "code_challenge": challenge,
            "code_challenge_method": "S256"}
    base.update(params)
    base = {k: v for k, v in base.items() if v is not None}
    return requests.Request("GET", discovery["authorization_endpoint"], params=base).prepare().url


# --------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------


def test_discovery_documents(issuer, discovery):
    assert discovery["issuer"] == issuer
    for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint",
                 "jwks_uri", "introspection_endpoint", "revocation_endpoint",
                 "end_session_endpoint"):
        assert discovery[name].startswith(issuer + "/"), name
    assert discovery["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert "code" in discovery["response_types_supported"]
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert "EdDSA" in discovery["id_token_signing_alg_values_supported"]
    assert "openid" in discovery["scopes_supported"]
    assert discovery.get("authorization_response_iss_parameter_supported") is True

    rfc8414 = requests.get(f"{issuer}/.well-known/oauth-authorization-server",
                           timeout=HTTP_TIMEOUT)
    assert rfc8414.status_code == 200
    assert rfc8414.json()["issuer"] == issuer
    assert rfc8414.json()["token_endpoint"] == discovery["token_endpoint"]

    jwks = requests.get(discovery["jwks_uri"], timeout=HTTP_TIMEOUT).json()
    assert jwks["keys"], "empty JWKS"
    for key in jwks["keys"]:
        assert key["kty"] == "OKP" and key["crv"] == "Ed25519" and key["kid"]
        assert "d" not in key, "a private key part is published in the JWKS"


# --------------------------------------------------------------------------
# Authorization code flow with Authlib, tokens checked with PyJWT
# --------------------------------------------------------------------------


def test_authlib_code_flow_with_pkce(issuer, discovery, sign_in, web_client, user):
    token, nonce, oauth, done, location = authlib_code_flow(discovery, sign_in, web_client, user)

    # RFC 9207: the redirect names the issuer.
    assert query_of(location)["iss"] == issuer
    # The sign-in set the SSO cookie.
    assert done.session.cookies.get("sesame_session")

    assert token["token_type"].lower() == "bearer"
    assert token["access_token"] and token["refresh_token"] and token["id_token"]
    assert int(token["expires_in"]) > 0
    assert set(token["scope"].split()) == set(SCOPE.split())

    # Access token: a JWT with typ at+jwt, verified with the JWKS.
    header = jwt_header(token["access_token"])
    assert header["typ"].lower() == "at+jwt"
    assert header["alg"] == "EdDSA"
    access = verify_access_token(issuer, token["access_token"])
    assert access["client_id"] == web_client.client_id
    assert set(access["scope"].split()) == set(SCOPE.split())
    assert access["sid"]

    # ID token: audience is the client, the nonce is ours, at_hash matches.
    id_claims = verify_id_token(issuer, token["id_token"], web_client.client_id, nonce)
    assert id_claims["sub"] == access["sub"]
    assert id_claims["azp"] == web_client.client_id
    assert id_claims["sid"]
    assert abs(id_claims["auth_time"] - time.time()) < 300
    assert id_claims["at_hash"] == half_hash(token["access_token"])
    assert id_claims["preferred_username"] == user.username
    assert id_claims["email"] == user.email
    assert id_claims["name"] == user.display_name

    # UserInfo through Authlib's session (it carries the bearer token).
    r = oauth.get(discovery["userinfo_endpoint"])
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["sub"] == id_claims["sub"]
    assert info["preferred_username"] == user.username
    assert info["email"] == user.email


def test_authlib_oidc_id_token_validation(issuer, discovery, sign_in, web_client, user):
    token, nonce, _, _, _ = authlib_code_flow(discovery, sign_in, web_client, user)
    jwks = requests.get(discovery["jwks_uri"], timeout=HTTP_TIMEOUT).json()
    decoded = jose_jwt.decode(token["id_token"], KeySet.import_key_set(jwks),
                              algorithms=["EdDSA"])
    options = {"iss": {"essential": True, "value": issuer},
               "aud": {"essential": True, "value": web_client.client_id}}
    params = {"nonce": nonce, "client_id": web_client.client_id,
              "access_token": token["access_token"]}
    CodeIDToken(decoded.claims, decoded.header, options=options, params=params).validate(leeway=5)

    # The same validation refuses a different nonce and a different access token.
    with pytest.raises(Exception, match="nonce"):
        CodeIDToken(decoded.claims, decoded.header, options=options,
                    params={**params, "nonce": "another"}).validate(leeway=5)
    with pytest.raises(Exception, match="at_hash"):
        CodeIDToken(decoded.claims, decoded.header, options=options,
                    params={**params, "access_token": token["access_token"] + "x"}
                    ).validate(leeway=5)


def test_public_client_code_flow(issuer, discovery, sign_in, make_client, user):
    client = make_client("spa", public=True)
    token, nonce, _, _, _ = authlib_code_flow(discovery, sign_in, client, user,
                                              scope="openid profile")
    id_claims = verify_id_token(issuer, token["id_token"], client.client_id, nonce)
    assert id_claims["preferred_username"] == user.username
    assert "email" not in id_claims, "email claims given without the email scope"
    info = userinfo(discovery, token["access_token"])
    assert info.status_code == 200, info.text
    assert "email" not in info.json(), "email claims given without the email scope"
    assert verify_access_token(issuer, token["access_token"])["client_id"] == client.client_id


def test_tampered_tokens_do_not_verify(issuer, discovery, sign_in, web_client, user):
    token, nonce, _, _, _ = authlib_code_flow(discovery, sign_in, web_client, user)
    head, payload, signature = token["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "1"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{head}.{forged_payload}.{signature}"
    with pytest.raises(jwt.InvalidSignatureError):
        verify_access_token(issuer, forged)
    assert userinfo(discovery, forged).status_code == 401
    # The ID token is not an access token for Sesame (wrong audience).
    with pytest.raises(jwt.InvalidAudienceError):
        verify_access_token(issuer, token["id_token"])
    assert userinfo(discovery, token["id_token"]).status_code == 401


# --------------------------------------------------------------------------
# Password, refresh and client-credentials grants with Authlib
# --------------------------------------------------------------------------


def test_authlib_password_grant(issuer, discovery, web_client, user):
    oauth = authlib_session(web_client, scope="openid profile")
    token = oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                              password=user.password)
    assert token["access_token"] and token["refresh_token"]
    access = verify_access_token(issuer, token["access_token"])
    assert access["client_id"] == web_client.client_id
    r = oauth.get(discovery["userinfo_endpoint"])
    assert r.status_code == 200 and r.json()["preferred_username"] == user.username

    with pytest.raises(OAuthError) as failed:
        authlib_session(web_client).fetch_token(
            discovery["token_endpoint"], username=user.username, password="wrong " + user.password)
    assert failed.value.error == "invalid_grant"


def test_authlib_refresh_grant(issuer, discovery, make_client, web_client, user):
    oauth = authlib_session(web_client, scope="openid profile")
    first = dict(oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                                   password=user.password))
    second = dict(oauth.refresh_token(discovery["token_endpoint"],
                                      refresh_token=first["refresh_token"]))
    assert second["refresh_token"] != first["refresh_token"], "refresh token not rotated"
    assert second["access_token"] != first["access_token"]
    access = verify_access_token(issuer, second["access_token"])
    assert access["sub"] == verify_access_token(issuer, first["access_token"])["sub"]
    assert userinfo(discovery, second["access_token"]).status_code == 200

    # The successor works in turn.
    third = dict(oauth.refresh_token(discovery["token_endpoint"],
                                     refresh_token=second["refresh_token"]))
    assert third["refresh_token"] not in (first["refresh_token"], second["refresh_token"])
    assert userinfo(discovery, third["access_token"]).status_code == 200

    # Another client may not use this client's refresh token.
    other = make_client("other", grants=["authorization_code", "refresh_token", "password"])
    with pytest.raises(OAuthError) as failed:
        authlib_session(other).refresh_token(discovery["token_endpoint"],
                                             refresh_token=third["refresh_token"])
    assert failed.value.error == "invalid_grant"

    # A made-up refresh token is refused.
    with pytest.raises(OAuthError) as failed:
        authlib_session(web_client).refresh_token(discovery["token_endpoint"],
                                                  refresh_token=secrets.token_urlsafe(32))
    assert failed.value.error == "invalid_grant"


def test_refresh_token_reuse_after_grace_ends_the_family(discovery, web_client, user):
    oauth = authlib_session(web_client, scope="openid")
    first = dict(oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                                   password=user.password))
    second = dict(oauth.refresh_token(discovery["token_endpoint"],
                                      refresh_token=first["refresh_token"]))
    time.sleep(6)  # past the 5 s grace in which a lost response may be retried
    with pytest.raises(OAuthError) as failed:
        authlib_session(web_client).refresh_token(discovery["token_endpoint"],
                                                  refresh_token=first["refresh_token"])
    assert failed.value.error == "invalid_grant"
    # Reuse of a spent token ends the whole family: the successor is dead too.
    with pytest.raises(OAuthError) as failed:
        authlib_session(web_client).refresh_token(discovery["token_endpoint"],
                                                  refresh_token=second["refresh_token"])
    assert failed.value.error == "invalid_grant"
    assert userinfo(discovery, second["access_token"]).status_code == 401


def test_authlib_client_credentials_grant(issuer, discovery, web_client):
    oauth = authlib_session(web_client)
    token = oauth.fetch_token(discovery["token_endpoint"], grant_type="client_credentials")
    assert token["access_token"]
    assert "refresh_token" not in token, "client_credentials must not issue a refresh token"
    assert "id_token" not in token, "client_credentials has no end-user: no ID token"
    claims = verify_access_token(issuer, token["access_token"])
    assert claims["client_id"] == web_client.client_id


def test_wrong_client_secret_is_invalid_client(discovery, web_client, user):
    r = requests.post(discovery["token_endpoint"],
                      data={"grant_type": "password", "username": user.username,
                            "password": user.password},
                      auth=(web_client.client_id, "not-the-secret-" + "x" * 32),
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    assert oauth_error(r) == "invalid_client"
    assert r.headers.get("WWW-Authenticate", "").lower().startswith("basic")

    # client_secret_post works as well as client_secret_basic.
    r = requests.post(discovery["token_endpoint"],
                      data={"grant_type": "password", "username": user.username,
                            "password": user.password, "client_id": web_client.client_id,
                            "client_secret": web_client.secret},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text


# --------------------------------------------------------------------------
# UserInfo, introspection, revocation
# --------------------------------------------------------------------------


def test_userinfo_get_post_and_unauthenticated(discovery, sign_in, web_client, user):
    token, *_ = authlib_code_flow(discovery, sign_in, web_client, user)
    for method in ("GET", "POST"):
        r = userinfo(discovery, token["access_token"], method)
        assert r.status_code == 200, (method, r.text)
        assert r.json()["preferred_username"] == user.username
        assert "no-store" in r.headers.get("Cache-Control", "")

    r = requests.get(discovery["userinfo_endpoint"], timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    r = userinfo(discovery, "junk.token.value")
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers.get("WWW-Authenticate", "")


def test_introspection(discovery, sign_in, web_client, make_client, user):
    token, *_ = authlib_code_flow(discovery, sign_in, web_client, user)

    live = introspect(discovery, web_client, token["access_token"])
    assert live["active"] is True
    assert live["client_id"] == web_client.client_id
    assert live.get("sub")
    assert set(live.get("scope", "").split()) == set(SCOPE.split())

    live_refresh = introspect(discovery, web_client, token["refresh_token"])
    assert live_refresh["active"] is True
    assert live_refresh.get("client_id") == web_client.client_id

    assert introspect(discovery, web_client, "junk") == {"active": False}
    assert introspect(discovery, web_client, secrets.token_urlsafe(32)) == {"active": False}

    # Introspection needs client authentication.
    r = requests.post(discovery["introspection_endpoint"],
                      data={"token": token["access_token"]}, timeout=HTTP_TIMEOUT)
    assert r.status_code == 401
    assert oauth_error(r) == "invalid_client"
    # A public client cannot introspect.
    spa = make_client("spa-introspect", public=True)
    r = requests.post(discovery["introspection_endpoint"],
                      data={"token": token["access_token"], "client_id": spa.client_id},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code == 401, r.text

    # After revocation of the refresh token, the grant is gone: both are inactive.
    r = requests.post(discovery["revocation_endpoint"],
                      data={"token": token["refresh_token"],
                            "token_type_hint": "refresh_token"},
                      auth=web_client.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    assert introspect(discovery, web_client, token["refresh_token"]) == {"active": False}
    assert introspect(discovery, web_client, token["access_token"])["active"] is False


def test_revocation_ends_the_session(discovery, sign_in, web_client, user):
    oauth_token, *_ = authlib_code_flow(discovery, sign_in, web_client, user)
    access = oauth_token["access_token"]
    assert userinfo(discovery, access).status_code == 200

    r = requests.post(discovery["revocation_endpoint"], data={"token": access},
                      auth=web_client.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, r.text
    assert userinfo(discovery, access).status_code == 401
    assert introspect(discovery, web_client, access)["active"] is False
    # The refresh token of that session no longer works either.
    with pytest.raises(OAuthError) as failed:
        authlib_session(web_client).refresh_token(discovery["token_endpoint"],
                                                  refresh_token=oauth_token["refresh_token"])
    assert failed.value.error == "invalid_grant"

    # Revoking junk, or again, still answers 200 (RFC 7009 §2.2).
    for token in (access, "junk"):
        r = requests.post(discovery["revocation_endpoint"], data={"token": token},
                          auth=web_client.auth, timeout=HTTP_TIMEOUT)
        assert r.status_code == 200, r.text


def test_authlib_revoke_token(discovery, web_client, user):
    oauth = authlib_session(web_client, scope="openid")
    token = oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                              password=user.password)
    r = oauth.revoke_token(discovery["revocation_endpoint"], token=token["refresh_token"],
                           token_type_hint="refresh_token")
    assert r.status_code == 200
    with pytest.raises(OAuthError) as failed:
        oauth.refresh_token(discovery["token_endpoint"], refresh_token=token["refresh_token"])
    assert failed.value.error == "invalid_grant"
    assert userinfo(discovery, token["access_token"]).status_code == 401


# --------------------------------------------------------------------------
# Key rotation
# --------------------------------------------------------------------------


def test_key_rotation(issuer, discovery, cli, web_client, user):
    oauth = authlib_session(web_client, scope="openid")
    before = oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                               password=user.password)
    old_kid = jwt_header(before["access_token"])["kid"]

    out = cli("keys", "rotate")
    ahead_kid = out.split()[0]
    assert re.fullmatch(r"[A-Za-z0-9_-]{8,}", ahead_kid), out
    assert ahead_kid != old_kid
    assert "published, signing from" in out, out
    assert ahead_kid in cli("keys", "list")

    # Published at once (where the CLI's notice reaches the server:
    # PostgreSQL, Redis; within 5 s on SQLite), and signing 6 minutes later:
    # a relying party's cached JWKS knows it by its first token.
    deadline = time.monotonic() + 20
    while ahead_kid not in {k["kid"] for k in requests.get(
            discovery["jwks_uri"], timeout=HTTP_TIMEOUT).json()["keys"]}:
        assert time.monotonic() < deadline, f"the server never published {ahead_kid}"
        time.sleep(1)
    meanwhile = authlib_session(web_client, scope="openid").fetch_token(
        discovery["token_endpoint"], username=user.username, password=user.password)
    assert jwt_header(meanwhile["access_token"])["kid"] == old_kid

    # `--now` (a key thought stolen): the server signs with it at once.
    out = cli("keys", "rotate", "--now")
    new_kid = out.split()[0]
    assert new_kid not in (old_kid, ahead_kid), out
    deadline = time.monotonic() + 20
    after = None
    while time.monotonic() < deadline:
        candidate = authlib_session(web_client, scope="openid").fetch_token(
            discovery["token_endpoint"], username=user.username, password=user.password)
        if jwt_header(candidate["access_token"])["kid"] == new_kid:
            after = candidate
            break
        time.sleep(1)
    assert after is not None, f"the server never signed with the rotated key {new_kid}"

    jwks = requests.get(discovery["jwks_uri"], timeout=HTTP_TIMEOUT).json()
    kids = {k["kid"] for k in jwks["keys"]}
    assert {old_kid, ahead_kid, new_kid} <= kids, kids

    fresh = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False, timeout=20)
    assert verify_access_token(issuer, before["access_token"], fresh)["sub"]
    assert userinfo(discovery, before["access_token"]).status_code == 200
    assert verify_access_token(issuer, after["access_token"], fresh)["sub"]
    assert userinfo(discovery, after["access_token"]).status_code == 200
    if "id_token" in after:
        assert jwt_header(after["id_token"])["kid"] == new_kid


# --------------------------------------------------------------------------
# SSO, prompt, logout
# --------------------------------------------------------------------------


def test_sso_prompt_none_and_logout(issuer, discovery, sign_in, web_client, user):
    token, nonce, _, done, _ = authlib_code_flow(discovery, sign_in, web_client, user)
    browser = done.session  # holds the sesame_session cookie

    # With a session, prompt=none answers with a code straight away.
    url = authorize_url(discovery, web_client, prompt="none", state="sso-1")
    r = browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (302, 303), r.text[:300]
    got = query_of(r.headers["Location"])
    assert got.get("code") and got["state"] == "sso-1" and got["iss"] == issuer

    # prompt=login asks for the password again even with a session.
    url = authorize_url(discovery, web_client, prompt="login")
    r = browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and 'type="password"' in r.text

    # RP-initiated logout returns to the registered URI with the state.
    r = browser.get(discovery["end_session_endpoint"], params={
        "id_token_hint": token["id_token"],
        "post_logout_redirect_uri": web_client.post_logout_redirect_uri,
        "state": "bye-1"}, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    assert r.headers["Location"].startswith(web_client.post_logout_redirect_uri)
    assert query_of(r.headers["Location"]).get("state") == "bye-1"

    # The SSO session is over.
    url = authorize_url(discovery, web_client, prompt="none", state="sso-2")
    r = browser.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (302, 303), r.text[:300]
    assert query_of(r.headers["Location"]).get("error") == "login_required"


def test_max_age_zero_forces_sign_in(discovery, sign_in, web_client, user):
    """OIDC Core 1.0 §3.1.2.1: max_age=0 is equivalent to prompt=login.

    The sign-in is timed to start early in a wall-clock second so that the
    max_age=0 request comes within the same second as auth_time: a server that
    compares whole seconds with "elapsed > max_age" would then answer with a
    code from the SSO session instead of asking for the password.
    """
    deadline = time.monotonic() + 3
    while time.time() % 1 > 0.3 and time.monotonic() < deadline:
        time.sleep(0.02)
    url = authorize_url(discovery, web_client)
    done = sign_in(url, user.username, user.password)
    assert done.response.status_code == 303
    url = authorize_url(discovery, web_client, max_age="0")
    r = done.session.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200, (
        f"max_age=0 right after sign-in answered {r.status_code} "
        f"{r.headers.get('Location', '')[:80]} instead of the sign-in page")
    assert 'type="password"' in r.text

    # And a while later, the same (the usual case).
    time.sleep(1.1)
    r = done.session.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200 and 'type="password"' in r.text


def test_logout_refuses_unregistered_post_logout_uri(discovery, sign_in, web_client, user):
    token, *_ = authlib_code_flow(discovery, sign_in, web_client, user)
    r = requests.get(discovery["end_session_endpoint"], params={
        "id_token_hint": token["id_token"],
        "post_logout_redirect_uri": "https://evil.example/bye"},
        allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400, (r.status_code, r.headers)
    assert "Location" not in r.headers


def test_login_hint_prefills_the_page(discovery, web_client, user):
    url = authorize_url(discovery, web_client, login_hint=user.username)
    r = requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    form = parse_page(r.text).forms[0]
    assert form["inputs"]["login"] == user.username


def test_chinese_sign_in_page(discovery, web_client):
    url = authorize_url(discovery, web_client)
    r = requests.get(url, headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"},
                     allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 200
    page = parse_page(r.text)
    assert page.labels.get("login") == "用户名、邮箱或手机号"
    assert "Username, email or mobile" not in r.text
    r = requests.get(url, headers={"Accept-Language": "en-US,en;q=0.9"},
                     allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert parse_page(r.text).labels.get("login") == "Username, email or mobile"


# --------------------------------------------------------------------------
# Negative cases
# --------------------------------------------------------------------------


def test_wrong_password_on_the_page(discovery, sign_in, web_client, user):
    url = authorize_url(discovery, web_client)
    done = sign_in(url, user.username, "wrong " + user.password)
    r = done.response
    assert r.status_code == 401
    assert "Location" not in r.headers
    assert "The login or password is incorrect." in r.text
    assert "code=" not in r.text
    assert not done.session.cookies.get("sesame_session")
    # The page is shown again with the form, the login kept.
    form = parse_page(r.text).forms[0]
    assert form["inputs"]["login"] == user.username
    assert form["inputs"].get("password", "") == ""


def test_sign_in_without_csrf_cookie_is_refused(discovery, web_client, user):
    url = authorize_url(discovery, web_client)
    s = requests.Session()
    page = s.get(url, timeout=HTTP_TIMEOUT, allow_redirects=False)
    form = parse_page(page.text).forms[0]
    data = {**form["inputs"], "login": user.username, "password": user.password}
    # Fresh session: no sesame_csrf cookie goes with the POST.
    r = requests.post(requests.compat.urljoin(page.url, form["action"]), data=data,
                      allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (400, 403), r.status_code
    assert "Location" not in r.headers


def test_unregistered_redirect_uri(discovery, web_client):
    url = authorize_url(discovery, web_client, redirect_uri="http://127.0.0.1:9/elsewhere")
    r = requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert "Location" not in r.headers

    url = authorize_url(discovery, web_client, client_id="no-such-client-" + secrets.token_hex(4))
    r = requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert "Location" not in r.headers


def test_pkce_is_required_at_authorization(issuer, discovery, web_client):
    for params in ({"code_challenge": None, "code_challenge_method": None},
                   {"code_challenge_method": "plain"}):
        url = authorize_url(discovery, web_client, state="pkce", **params)
        r = requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
        assert r.status_code in (302, 303), (params, r.status_code, r.text[:200])
        got = query_of(r.headers["Location"])
        assert r.headers["Location"].startswith(web_client.redirect_uri + "?")
        assert got.get("error") == "invalid_request", (params, got)
        assert got.get("state") == "pkce" and got.get("iss") == issuer
        assert "code" not in got


def test_missing_code_verifier(discovery, sign_in, web_client, user):
    code, verifier, _ = raw_code(discovery, sign_in, web_client, user)
    r = exchange(discovery, web_client, code, verifier=None)
    assert r.status_code == 400
    assert oauth_error(r) in ("invalid_grant", "invalid_request")


def test_wrong_code_verifier(discovery, sign_in, web_client, user):
    code, verifier, _ = raw_code(discovery, sign_in, web_client, user)
    wrong, _ = pkce_pair()
    r = exchange(discovery, web_client, code, verifier=wrong)
    assert r.status_code == 400
    assert oauth_error(r) == "invalid_grant"


def test_code_bound_to_client_and_redirect_uri(discovery, sign_in, web_client, make_client, user):
    code, verifier, _ = raw_code(discovery, sign_in, web_client, user)
    other = make_client("thief", grants=["authorization_code"])
    r = exchange(discovery, other, code, verifier=verifier, redirect_uri=web_client.redirect_uri)
    assert r.status_code == 400
    assert oauth_error(r) == "invalid_grant"

    code, verifier, _ = raw_code(discovery, sign_in, web_client, user)
    r = exchange(discovery, web_client, code, verifier=verifier,
                 redirect_uri="http://127.0.0.1:9/other")
    assert r.status_code == 400
    assert oauth_error(r) == "invalid_grant"


def test_code_replay(discovery, sign_in, web_client, user):
    code, verifier, _ = raw_code(discovery, sign_in, web_client, user)
    first = exchange(discovery, web_client, code, verifier=verifier)
    assert first.status_code == 200, first.text
    tokens = first.json()
    assert userinfo(discovery, tokens["access_token"]).status_code == 200

    second = exchange(discovery, web_client, code, verifier=verifier)
    assert second.status_code == 400
    assert oauth_error(second) == "invalid_grant"

    # RFC 6749 §4.1.2 / OAuth 2.0 Security BCP: tokens issued from the
    # replayed code are revoked.
    assert userinfo(discovery, tokens["access_token"]).status_code == 401
    r = requests.post(discovery["token_endpoint"],
                      data={"grant_type": "refresh_token",
                            "refresh_token": tokens["refresh_token"]},
                      auth=web_client.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert oauth_error(r) == "invalid_grant"


def test_prompt_none_without_session(issuer, discovery, web_client):
    url = authorize_url(discovery, web_client, prompt="none", state="st-none")
    r = requests.get(url, allow_redirects=False, timeout=HTTP_TIMEOUT)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    location = r.headers["Location"]
    assert location.startswith(web_client.redirect_uri + "?")
    got = query_of(location)
    assert got.get("error") == "login_required"
    assert got.get("state") == "st-none"
    assert got.get("iss") == issuer
    assert "code" not in got


def test_public_client_password_grant(discovery, make_client, user):
    spa = make_client("spa-pw", public=True)
    r = requests.post(discovery["token_endpoint"],
                      data={"grant_type": "password", "client_id": spa.client_id,
                            "username": user.username, "password": user.password},
                      timeout=HTTP_TIMEOUT)
    assert r.status_code in (400, 401)
    assert oauth_error(r) == "unauthorized_client"

    # The same with Authlib.
    oauth = authlib_session(spa)
    with pytest.raises(OAuthError) as failed:
        oauth.fetch_token(discovery["token_endpoint"], username=user.username,
                          password=user.password)
    assert failed.value.error == "unauthorized_client"


def test_grant_not_registered_for_client(discovery, make_client, user):
    code_only = make_client("codeonly", grants=["authorization_code"])
    r = requests.post(discovery["token_endpoint"],
                      data={"grant_type": "password", "username": user.username,
                            "password": user.password},
                      auth=code_only.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert oauth_error(r) == "unauthorized_client"
    r = requests.post(discovery["token_endpoint"], data={"grant_type": "urn:example:nope"},
                      auth=code_only.auth, timeout=HTTP_TIMEOUT)
    assert r.status_code == 400
    assert oauth_error(r) == "unsupported_grant_type"

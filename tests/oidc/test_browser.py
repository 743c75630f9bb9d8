"""The hosted sign-in page in a real browser: Debian's headless Chromium.

A tiny HTTP server on a free loopback port plays the relying party's callback.
Screenshots go to $OIDC_ARTIFACTS (signin-en.png, signin-zh.png, ...).
"""

from __future__ import annotations

import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from conftest import HTTP_TIMEOUT, half_hash, pkce_pair, query_of

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 20  # seconds, for every browser wait
PHONE = (390, 844)
DESKTOP = (1280, 800)

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed",
)


# --------------------------------------------------------------------------
# The relying party's callback
# --------------------------------------------------------------------------


class CallbackHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.server.hits.append(self.path)
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>Callback</title></head>"
            "<body><h1>Callback received</h1></body></html>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def callback_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), CallbackHandler)
    server.hits = []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def spa(make_client, callback_server):
    port = callback_server.server_address[1]
    return make_client("browser", public=True,
                       redirect_uri=f"http://127.0.0.1:{port}/callback")


# --------------------------------------------------------------------------
# The browser
# --------------------------------------------------------------------------


@pytest.fixture
def make_driver():
    drivers = []

    def make(language: str = "en-US", size=DESKTOP):
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                    "--disable-extensions", "--disable-background-networking",
                    "--disable-sync", "--disable-component-update",
                    "--hide-scrollbars", f"--lang={language}",
                    f"--window-size={size[0]},{size[1]}"):
            options.add_argument(arg)
        accept = language if language.startswith("en") else f"{language},{language.split('-')[0]}"
        options.add_experimental_option("prefs", {"intl.accept_languages": accept})
        # The driver is named explicitly: Selenium Manager never downloads one.
        service = Service(executable_path=CHROMEDRIVER)
        driver = webdriver.Chrome(service=service, options=options)
        drivers.append(driver)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        driver.set_window_size(*size)
        return driver

    yield make
    for driver in drivers:
        driver.quit()


def authorization_url(discovery, client, *, nonce=None, **extra):
    verifier, challenge = pkce_pair()
    params = {"response_type": "code", "client_id": client.client_id,
              "redirect_uri": client.redirect_uri, "scope": "openid profile email",
              "state": secrets.token_urlsafe(12), "nonce": nonce or secrets.token_urlsafe(12),
              "code_challenge": challenge, "code_challenge_method": "S256", **extra}
    url = requests.Request("GET", discovery["authorization_endpoint"], params=params).prepare().url
    return url, verifier, params


def wait_for_sign_in_page(driver):
    WebDriverWait(driver, WAIT).until(EC.visibility_of_element_located((By.ID, "login")))
    WebDriverWait(driver, WAIT).until(lambda d: d.execute_script(
        "return document.readyState") == "complete")


def label_of(driver, field_id: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f"label[for='{field_id}']").text.strip()


def submit_credentials(driver, login: str, password: str):
    field = driver.find_element(By.ID, "login")
    field.clear()
    field.send_keys(login)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form button[type='submit']").click()


def screenshot(driver, artifacts: Path, name: str) -> Path:
    path = artifacts / name
    assert driver.save_screenshot(str(path)), f"screenshot {name} failed"
    assert path.stat().st_size > 1000
    return path


def exchange_code(discovery, client, code, verifier):
    return requests.post(discovery["token_endpoint"], data={
        "grant_type": "authorization_code", "code": code, "client_id": client.client_id,
        "redirect_uri": client.redirect_uri, "code_verifier": verifier,
    }, timeout=HTTP_TIMEOUT)


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


def test_browser_sign_in_code_flow(issuer, discovery, make_user, spa, callback_server,
                                   make_driver, artifacts):
    user = make_user("browser")
    url, verifier, params = authorization_url(discovery, spa)
    driver = make_driver("en-US", DESKTOP)
    driver.get(url)
    wait_for_sign_in_page(driver)

    assert label_of(driver, "login") == "Username, email or mobile"
    assert driver.find_element(By.ID, "password").get_attribute("type") == "password"
    assert driver.execute_script("return document.activeElement.id") == "login"
    screenshot(driver, artifacts, "signin-en.png")
    # The same page on a phone, for review.
    driver.set_window_size(*PHONE)
    screenshot(driver, artifacts, "signin-en-phone.png")
    # And in dark mode.
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    screenshot(driver, artifacts, "signin-en-phone-dark.png")
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    driver.set_window_size(*DESKTOP)

    submit_credentials(driver, user.username, user.password)
    WebDriverWait(driver, WAIT).until(
        lambda d: d.current_url.startswith(spa.redirect_uri + "?") and "code=" in d.current_url)
    got = query_of(driver.current_url)
    assert got["state"] == params["state"]
    assert got["iss"] == issuer
    assert "Callback received" in driver.find_element(By.TAG_NAME, "h1").text
    assert any("code=" in hit for hit in callback_server.hits)

    r = exchange_code(discovery, spa, got["code"], verifier)
    assert r.status_code == 200, r.text
    tokens = r.json()
    key = jwt.PyJWKClient(discovery["jwks_uri"], timeout=20).get_signing_key_from_jwt(
        tokens["id_token"])
    claims = jwt.decode(tokens["id_token"], key.key, algorithms=["EdDSA"],
                        audience=spa.client_id, issuer=issuer)
    assert claims["nonce"] == params["nonce"]
    assert claims["preferred_username"] == user.username
    assert claims["at_hash"] == half_hash(tokens["access_token"])
    info = requests.get(discovery["userinfo_endpoint"], timeout=HTTP_TIMEOUT,
                        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 200 and info.json()["email"] == user.email

    # The browser now holds an SSO session, but this public client's redirect URI is a
    # loopback address, which any program on the machine could listen on (RFC 8252 §8.6):
    # prompt=none cannot be answered without the user...
    url, verifier, params = authorization_url(discovery, spa, prompt="none")
    driver.get(url)
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.startswith(spa.redirect_uri + "?"))
    got = query_of(driver.current_url)
    assert got.get("error") == "consent_required", got
    assert got["state"] == params["state"]
    # ...and a request shows the confirmation page, naming the account; Continue sends the code.
    url, verifier, params = authorization_url(discovery, spa)
    driver.get(url)
    WebDriverWait(driver, WAIT).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, "button[value='continue']")))
    main = driver.find_element(By.TAG_NAME, "main").text
    assert user.username in main and spa.client_id in main, main
    assert not driver.find_elements(By.ID, "password"), "a password asked with a session"
    # Nothing is focused for the user: a stray Enter does not continue.
    assert driver.execute_script("return document.activeElement.value") != "continue"
    screenshot(driver, artifacts, "confirm-en.png")
    driver.set_window_size(*PHONE)
    screenshot(driver, artifacts, "confirm-en-phone.png")
    driver.set_window_size(*DESKTOP)
    driver.find_element(By.CSS_SELECTOR, "button[value='continue']").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.current_url.startswith(spa.redirect_uri + "?") and "code=" in d.current_url)
    got = query_of(driver.current_url)
    assert got["state"] == params["state"]
    r = exchange_code(discovery, spa, got["code"], verifier)
    assert r.status_code == 200, r.text
    # Cancel tells the client the user declined.
    url, _, params = authorization_url(discovery, spa)
    driver.get(url)
    WebDriverWait(driver, WAIT).until(
        EC.visibility_of_element_located((By.CSS_SELECTOR, "button[value='cancel']")))
    driver.find_element(By.CSS_SELECTOR, "button[value='cancel']").click()
    WebDriverWait(driver, WAIT).until(lambda d: d.current_url.startswith(spa.redirect_uri + "?"))
    got = query_of(driver.current_url)
    assert got.get("error") == "access_denied" and got["state"] == params["state"], got


def test_browser_chinese_sign_in_page(discovery, spa, make_driver, artifacts):
    url, _, _ = authorization_url(discovery, spa)
    driver = make_driver("zh-CN", PHONE)
    driver.get(url)
    wait_for_sign_in_page(driver)
    assert label_of(driver, "login") == "用户名、邮箱或手机号"
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang").lower().startswith("zh")
    assert "Username, email or mobile" not in driver.page_source
    screenshot(driver, artifacts, "signin-zh.png")
    driver.set_window_size(*DESKTOP)
    screenshot(driver, artifacts, "signin-zh-desktop.png")


def test_browser_wrong_password(discovery, make_user, spa, callback_server, make_driver,
                                artifacts):
    user = make_user("browser-bad")
    hits_before = len(callback_server.hits)
    url, _, _ = authorization_url(discovery, spa)
    driver = make_driver("en-US", PHONE)
    driver.get(url)
    wait_for_sign_in_page(driver)
    submit_credentials(driver, user.username, "not " + user.password)
    WebDriverWait(driver, WAIT).until(
        EC.text_to_be_present_in_element((By.TAG_NAME, "main"),
                                         "The login or password is incorrect."))
    assert not driver.current_url.startswith(spa.redirect_uri)
    assert len(callback_server.hits) == hits_before, "the callback was reached"
    # The form is shown again, the login kept, the password emptied.
    assert driver.find_element(By.ID, "login").get_attribute("value") == user.username
    assert driver.find_element(By.ID, "password").get_attribute("value") == ""
    assert not driver.get_cookie("sesame_session")
    screenshot(driver, artifacts, "signin-error.png")

    # A second try with the right password on that page succeeds.
    driver.find_element(By.ID, "password").send_keys(user.password)
    driver.find_element(By.CSS_SELECTOR, "form button[type='submit']").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.current_url.startswith(spa.redirect_uri + "?") and "code=" in d.current_url)


def test_browser_chinese_wrong_password(discovery, make_user, spa, make_driver, artifacts):
    user = make_user("browser-zh")
    url, _, _ = authorization_url(discovery, spa)
    driver = make_driver("zh-CN", PHONE)
    driver.get(url)
    wait_for_sign_in_page(driver)
    submit_credentials(driver, user.username, "not " + user.password)
    WebDriverWait(driver, WAIT).until(EC.visibility_of_element_located((By.ID, "error")))
    error = driver.find_element(By.ID, "error")
    assert error.get_attribute("role") == "alert"
    assert "密码" in error.text and "incorrect" not in error.text, error.text
    assert label_of(driver, "login") == "用户名、邮箱或手机号"
    screenshot(driver, artifacts, "signin-error-zh.png")

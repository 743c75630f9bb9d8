"""The README's sign-in scripts (examples/oidc/), run exactly as written.

Each prints an authorization URL and waits for the address the browser lands
on; here the "browser" is the hosted form submitted over HTTP. The README must
show each script verbatim.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "oidc"
TIMEOUT = 30


@pytest.fixture(scope="module")
def demo_client(cli):
    """The public client the scripts name; another run may have made it."""
    try:
        cli("client", "add", "cli-demo", "--public",
            "--redirect-uri", "http://127.0.0.1:8000/callback")
    except AssertionError as refused:
        assert "already taken" in str(refused), refused


def run_example(command, cwd, issuer, sign_in, user):
    env = dict(os.environ, OIDC_ISSUER=issuer)
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for _ in range(5):
            line = process.stdout.readline()
            if line.startswith("http"):
                url = line.strip()
                break
        assert url, f"no authorization URL printed; stderr: {process.stderr.read()}"
        signed = sign_in(url, user.username, user.password)
        assert signed.response.status_code == 303, signed.response.text[:300]
        out, err = process.communicate(signed.location + "\n", timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, f"{command}: {out}\n{err}"
    assert f"signed in as {user.username}" in out, out


@pytest.mark.parametrize("name", ["login.py", "login.mjs"])
def test_the_readme_shows_the_example_verbatim(name):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (EXAMPLES / name).read_text(encoding="utf-8") in readme, f"README lacks {name} as it is"


def test_the_authlib_example_signs_in(demo_client, issuer, sign_in, user):
    run_example([sys.executable, str(EXAMPLES / "login.py")], ROOT, issuer, sign_in, user)


def test_the_openid_client_example_signs_in(demo_client, issuer, sign_in, user, tmp_path):
    # Node resolves 'openid-client' from the script's directory: run a copy
    # beside the suite's node_modules.
    node_dir = ROOT / "tests" / "oidc" / "node"
    copy = node_dir / f".readme-login-{os.getpid()}.mjs"
    shutil.copyfile(EXAMPLES / "login.mjs", copy)
    try:
        run_example(["node", str(copy)], node_dir, issuer, sign_in, user)
    finally:
        copy.unlink()

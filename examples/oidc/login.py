# Signs in with Sesame from a command-line app: Authlib runs the authorization
# code flow with PKCE, PyJWT checks the ID token against Sesame's keys
# (README: Using Sesame as an OpenID Connect provider). First:
#   sesame client add cli-demo --public --redirect-uri http://127.0.0.1:8000/callback
#   pip install Authlib 'PyJWT[crypto]' requests
import os
import secrets

import jwt
import requests
from authlib.integrations.requests_client import OAuth2Session

issuer = os.environ.get("OIDC_ISSUER", "http://127.0.0.1:8420")
client = OAuth2Session(
    client_id="cli-demo",
    redirect_uri="http://127.0.0.1:8000/callback",
    scope="openid profile email",
    code_challenge_method="S256",
)
metadata = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
verifier = secrets.token_urlsafe(48)
nonce = secrets.token_urlsafe(16)
url, _state = client.create_authorization_url(
    metadata["authorization_endpoint"], code_verifier=verifier, nonce=nonce
)
print("Open this address, sign in, then paste the address you land on:")
print(url, flush=True)
callback = input("> ")
tokens = client.fetch_token(
    metadata["token_endpoint"], authorization_response=callback, code_verifier=verifier
)
key = jwt.PyJWKClient(metadata["jwks_uri"]).get_signing_key_from_jwt(tokens["id_token"])
claims = jwt.decode(
    tokens["id_token"],
    key,
    algorithms=metadata["id_token_signing_alg_values_supported"],
    audience="cli-demo",
    issuer=metadata["issuer"],
)
assert claims["nonce"] == nonce, "the ID token answers another request"
print("signed in as", claims["preferred_username"])

// Signs in with Sesame from a command-line app: openid-client discovers Sesame
// and runs the authorization code flow with PKCE, checking the ID token
// (README: Using Sesame as an OpenID Connect provider). First:
//   sesame client add cli-demo --public --redirect-uri http://127.0.0.1:8000/callback
//   npm install openid-client
import * as client from 'openid-client';
import { createInterface } from 'node:readline/promises';

const issuer = new URL(process.env.OIDC_ISSUER ?? 'http://127.0.0.1:8420');
// openid-client refuses plain http unless told: fine on this machine only.
const local = issuer.protocol === 'http:' ? { execute: [client.allowInsecureRequests] } : {};
const config = await client.discovery(issuer, 'cli-demo', undefined, client.None(), local);
const verifier = client.randomPKCECodeVerifier();
const nonce = client.randomNonce();
const url = client.buildAuthorizationUrl(config, {
  redirect_uri: 'http://127.0.0.1:8000/callback',
  scope: 'openid profile email',
  code_challenge: await client.calculatePKCECodeChallenge(verifier),
  code_challenge_method: 'S256',
  nonce,
});
console.log('Open this address, sign in, then paste the address you land on:');
console.log(url.href);
const prompt = createInterface({ input: process.stdin, output: process.stdout });
const callback = new URL(await prompt.question('> '));
prompt.close();
const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: verifier,
  expectedNonce: nonce,
  idTokenExpected: true,
});
console.log('signed in as', tokens.claims().preferred_username);

// The OpenID Connect authorization code flow against a running Sesame, with
// openid-client v6 as the relying party.
//
//   OIDC_ISSUER=http://127.0.0.1:18420 OIDC_SESAME_BIN=/path/to/sesame node code_flow.mjs
//
// The CLI's database variables (SESAME_DATA_DIR, ...) are inherited. The script
// registers its own user and clients, signs in over plain HTTP (fetching the
// hosted page and posting its form), and completes the flow with openid-client.
// It prints "ok" at the end, or a message and a non-zero exit status.

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import * as client from 'openid-client'

const OVERALL_TIMEOUT_MS = 90_000
const HTTP_TIMEOUT_MS = 15_000

const watchdog = setTimeout(() => {
  console.error(`code_flow: gave up after ${OVERALL_TIMEOUT_MS / 1000} s`)
  process.exit(2)
}, OVERALL_TIMEOUT_MS)
watchdog.unref()

function fail (message) {
  throw new Error(message)
}

function check (condition, message) {
  if (!condition) fail(message)
}

for (const name of ['OIDC_ISSUER', 'OIDC_SESAME_BIN']) {
  if (!process.env[name]) {
    console.error(`code_flow: ${name} is not set (the issuer URL and the sesame CLI)`)
    process.exit(1)
  }
}
const issuer = process.env.OIDC_ISSUER.replace(/\/+$/, '')
const sesameBin = process.env.OIDC_SESAME_BIN
const suffix = randomBytes(4).toString('hex')
const password = `correct horse battery ${suffix}`

// The CLI finds the server's database through the inherited SESAME_* variables.
const cliEnv = { ...process.env }

function sesame (args, input) {
  try {
    return execFileSync(sesameBin, args, {
      env: cliEnv, input, encoding: 'utf8', timeout: 60_000, stdio: ['pipe', 'pipe', 'pipe']
    })
  } catch (error) {
    fail(`sesame ${args.join(' ')} failed: ${error.stderr || error.message}`)
  }
}

function addClient (name, { isPublic }) {
  const redirectUri = `http://127.0.0.1:9/node-callback/${name}`
  const args = ['client', 'add', name, '--redirect-uri', redirectUri]
  if (isPublic) args.push('--public')
  const out = sesame(args)
  const fields = Object.fromEntries(
    out.split('\n').filter((line) => line.includes(': ')).map((line) => {
      const at = line.indexOf(': ')
      return [line.slice(0, at), line.slice(at + 2).trim()]
    })
  )
  check(fields.client_id === name, `unexpected output of client add: ${out}`)
  check(isPublic ? !fields.client_secret : !!fields.client_secret,
    `client add printed ${fields.client_secret ? 'a' : 'no'} secret for a ${isPublic ? 'public' : 'confidential'} client`)
  return { clientId: name, secret: fields.client_secret, redirectUri }
}

function hiddenInputs (html) {
  const fields = {}
  for (const [tag] of html.matchAll(/<input\b[^>]*>/gi)) {
    if (!/\btype="hidden"/i.test(tag)) continue
    const name = tag.match(/\bname="([^"]*)"/i)
    const value = tag.match(/\bvalue="([^"]*)"/i)
    if (name) fields[decodeEntities(name[1])] = value ? decodeEntities(value[1]) : ''
  }
  return fields
}

function decodeEntities (text) {
  return text.replace(/&(#x[0-9a-f]+|#[0-9]+|amp|lt|gt|quot|apos|#39);/gi, (_, entity) => {
    const e = entity.toLowerCase()
    if (e === 'amp') return '&'
    if (e === 'lt') return '<'
    if (e === 'gt') return '>'
    if (e === 'quot') return '"'
    if (e === 'apos' || e === '#39') return "'"
    if (e.startsWith('#x')) return String.fromCodePoint(parseInt(e.slice(2), 16))
    return String.fromCodePoint(parseInt(e.slice(1), 10))
  })
}

// Plays the user's browser: GET the sign-in page, POST its form with the
// CSRF cookie, and return the Location of the 303 (not followed).
async function signIn (authorizationUrl, login, secret) {
  const page = await fetch(authorizationUrl, {
    redirect: 'manual', signal: AbortSignal.timeout(HTTP_TIMEOUT_MS), headers: { 'accept-language': 'en' }
  })
  const html = await page.text()
  check(page.status === 200, `the authorization request answered ${page.status}: ${html.slice(0, 300)}`)
  const cookies = page.headers.getSetCookie()
    .map((header) => header.split(';')[0])
    .filter((pair) => pair.startsWith('sesame_csrf='))
  check(cookies.length === 1, 'the sign-in page set no sesame_csrf cookie')
  const action = html.match(/<form\b[^>]*\baction="([^"]*)"/i)
  check(action, 'no form on the sign-in page')
  check(/<label for="login">Username, email or mobile<\/label>/.test(html), 'no "Username, email or mobile" label')
  const form = new URLSearchParams({ ...hiddenInputs(html), login, password: secret })
  const posted = await fetch(new URL(decodeEntities(action[1]), page.url), {
    method: 'POST',
    redirect: 'manual',
    signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: cookies.join('; ') },
    body: form
  })
  const body = await posted.text()
  check(posted.status === 303, `the sign-in answered ${posted.status}: ${body.slice(0, 300)}`)
  const location = posted.headers.get('location')
  check(location, 'the sign-in redirect has no Location')
  return location
}

async function codeFlow ({ clientId, secret, redirectUri }, user) {
  const auth = secret ? client.ClientSecretBasic(secret) : client.None()
  const config = await client.discovery(new URL(issuer), clientId, undefined, auth, {
    execute: [client.allowInsecureRequests], timeout: HTTP_TIMEOUT_MS / 1000
  })
  config.timeout = HTTP_TIMEOUT_MS / 1000
  // Verify the ID token's signature with the JWKS as well (off by default for
  // ID tokens from the token endpoint).
  client.enableNonRepudiationChecks(config)
  check(config.serverMetadata().issuer === issuer, `discovered issuer ${config.serverMetadata().issuer}`)

  const codeVerifier = client.randomPKCECodeVerifier()
  const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier)
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: 'openid profile email',
    code_challenge: codeChallenge,
    code_challenge_method: 'S256',
    state,
    nonce
  })

  const location = await signIn(url, user.username, user.password)
  check(location.startsWith(redirectUri + '?'), `redirected to ${location}, not to the redirect URI`)

  const tokens = await client.authorizationCodeGrant(config, new URL(location), {
    pkceCodeVerifier: codeVerifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true
  })
  const claims = tokens.claims()
  check(claims, 'no ID token claims')
  check(claims.iss === issuer, `ID token iss ${claims.iss}`)
  check(claims.aud === clientId || (Array.isArray(claims.aud) && claims.aud.includes(clientId)),
    `ID token aud ${claims.aud}`)
  check(claims.nonce === nonce, 'ID token nonce differs')
  check(claims.preferred_username === user.username, `ID token preferred_username ${claims.preferred_username}`)

  const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
  check(info.sub === claims.sub, 'userinfo sub differs from the ID token')
  check(info.email === user.email, `userinfo email ${info.email}`)
  check(info.preferred_username === user.username, `userinfo preferred_username ${info.preferred_username}`)

  // The refresh grant rotates the refresh token.
  check(tokens.refresh_token, 'no refresh token')
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  check(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'refresh token not rotated')
  const again = await client.fetchUserInfo(config, refreshed.access_token, claims.sub)
  check(again.sub === claims.sub, 'userinfo after refresh differs')

  if (secret) {
    const live = await client.tokenIntrospection(config, refreshed.access_token)
    check(live.active === true, 'introspection: a live access token is not active')
    await client.tokenRevocation(config, refreshed.refresh_token)
    const dead = await client.tokenIntrospection(config, refreshed.refresh_token)
    check(dead.active === false, 'introspection: a revoked refresh token is still active')
  }
  return claims
}

async function main () {
  const username = `oidc-node-${suffix}`
  const user = { username, password, email: `${username}@example.test` }
  sesame(['user', 'add', '--username', username, '--email', user.email, '--password-stdin'], password + '\n')

  const confidential = addClient(`oidc-node-web-${suffix}`, { isPublic: false })
  const claims = await codeFlow(confidential, user)
  console.log(`confidential client: signed in as ${claims.preferred_username} (sub ${claims.sub})`)

  const spa = addClient(`oidc-node-spa-${suffix}`, { isPublic: true })
  await codeFlow(spa, user)
  console.log('public client: signed in')

  console.log('ok')
}

main().then(
  () => process.exit(0),
  (error) => {
    const detail = error.cause ? ` (cause: ${JSON.stringify(error.cause)})` : ''
    console.error(`code_flow failed: ${error.code ? error.code + ': ' : ''}${error.message}${detail}`)
    process.exit(1)
  }
)

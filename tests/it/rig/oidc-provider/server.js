// A real OpenID provider (npm oidc-provider, certified) for tollgate's integration tests.
//
// Configured to look like Keycloak and GitLab to tollgate: ID tokens and userinfo carry Keycloak-shaped
// `realm_access.roles` and `resource_access.tollgate.roles`, Keycloak group paths in `groups`
// (`/team/devs`) and a GitLab-shaped `groups_direct`. The password grant is a registered extension
// grant (oidc-provider has none built in); the device flow is built in. The development login is
// DISABLED (it accepts any password): logins go through the small interaction endpoints below, which
// check the users file, so a test can script them over HTTP.
//
// Environment: PORT (required), USERS_FILE (required; JSON {username: {password, groups, roles,
// client_roles, gitlab_groups}}, re-read on every lookup so a test can change groups or delete a user),
// CLIENT_ID, CLIENT_SECRET, DEVICE_TTL (seconds, default 600), NO_REFRESH=1 (issue no refresh tokens),
// WORKLOAD_CLIENT_ID, WORKLOAD_CLIENT_SECRET (the CI-workload client, below).
// Prints "listening on PORT" when ready. Back-channel logout is on: see /rig/logout and /rig/sign below.
//
// A second, confidential client (`ci-workload` by default) has only the client-credentials grant and gets
// JWT access tokens, the way a CI platform's workload token looks to a relying party:
// `POST /token` with `grant_type=client_credentials&resource=<absolute URL>` returns an RFC 9068 JWT
// (header `typ: at+jwt`, RS256 with the provider's key, whose `kid` is in the JWKS at `jwks_uri`) with
// `aud` = the resource (a string), `iss` = the issuer, `sub` = `client_id` = the client id, `jti`, `iat`,
// `exp` = `iat` + 600, and a nested `ci: {pipeline: "rig"}` claim. Any absolute URL without a fragment
// is accepted as the resource; other clients still get `invalid_target` for any resource.

import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider, { errors } from 'oidc-provider';

const port = Number(process.env.PORT);
// ISSUER_PORT: the port clients use when a proxy stands in front (the fault tests' slow proxy).
const issuer = `http://127.0.0.1:${process.env.ISSUER_PORT || port}`;
const clientId = process.env.CLIENT_ID || 'tollgate';
const noRefresh = process.env.NO_REFRESH === '1';
const workloadClientId = process.env.WORKLOAD_CLIENT_ID || 'ci-workload';
const workloadTokenTtl = 600;

// The provider's signing key, made here (not oidc-provider's development keys) so that /rig/sign can
// sign arbitrary logout tokens with it; and a second key under the same kid, for forged signatures.
const KID = 'rig-key-1';
function rsaKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return privateKey;
}
const signingKey = rsaKey();
const forgerKey = rsaKey();
const signingJwk = { ...signingKey.export({ format: 'jwk' }), kid: KID, use: 'sig', alg: 'RS256' };

// Back-channel logout: the IdP sessions each password grant opened (its `sid` in the ID token), by user.
const sessionsByUser = new Map();

function b64url(data) {
  return Buffer.from(data).toString('base64url');
}

// A JWT signed RS256 with `key` under KID: claims as given, nothing added.
function signJwt(claims, key) {
  const input = `${b64url(JSON.stringify({ alg: 'RS256', typ: 'logout+jwt', kid: KID }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${crypto.sign('RSA-SHA256', Buffer.from(input), key).toString('base64url')}`;
}

function users() {
  return JSON.parse(fs.readFileSync(process.env.USERS_FILE, 'utf8'));
}

async function findAccount(ctx, id) {
  const user = users()[id];
  if (!user) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        preferred_username: id,
        email: `${id}@example.test`,
        groups: user.groups || [],
        realm_access: { roles: user.roles || [] },
        resource_access: { [clientId]: { roles: user.client_roles || [] } },
        groups_direct: user.gitlab_groups || [],
      };
    },
  };
}

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: process.env.CLIENT_SECRET || 'tollgate-secret',
    grant_types: ['password', 'refresh_token', 'urn:ietf:params:oauth:grant-type:device_code'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
    // Replaced per request by POST /rig/logout (tollgate's port is chosen after the IdP starts).
    backchannel_logout_uri: 'http://127.0.0.1:9/backchannel-logout',
    backchannel_logout_session_required: true,
  }, {
    client_id: workloadClientId,
    client_secret: process.env.WORKLOAD_CLIENT_SECRET || 'ci-workload-rig-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    // client_secret_post works too: oidc-provider accepts either for a client registered with one of them.
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  findAccount,
  scopes: ['openid', 'profile', 'email', 'offline_access'],
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'groups', 'realm_access', 'resource_access', 'groups_direct'],
    email: ['email'],
  },
  // Custom claims in the ID token itself, as Keycloak's mappers put them there.
  conformIdTokenClaims: false,
  jwks: { keys: [signingJwk] },
  // oidc-provider refuses to send requests (logout tokens) to loopback addresses (SSRF protection, by
  // its own dispatcher); every party of this rig is on 127.0.0.1, so its requests go out plainly.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  features: {
    backchannelLogout: { enabled: true },
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    userinfo: { enabled: true },
    clientCredentials: { enabled: true },
    // On by default in oidc-provider 9; without getResourceServerInfo every `resource` is refused.
    resourceIndicators: {
      enabled: true,
      async getResourceServerInfo(ctx, resourceIndicator, client) {
        // Only the workload client: the tollgate client keeps refusing resources (opaque tokens only).
        if (client.clientId !== workloadClientId) throw new errors.InvalidTarget();
        return {
          scope: '',
          accessTokenFormat: 'jwt',
          accessTokenTTL: workloadTokenTtl,
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  // A nested claim in the workload's JWTs, as CI platforms add pipeline details.
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials' && token.clientId === workloadClientId) {
      return { ci: { pipeline: 'rig' } };
    }
    return undefined;
  },
  issueRefreshToken: async (ctx, client) => !noRefresh && client.grantTypeAllowed('refresh_token'),
  ttl: {
    AccessToken: 300,
    ClientCredentials: workloadTokenTtl,
    IdToken: 300,
    RefreshToken: 86400,
    DeviceCode: Number(process.env.DEVICE_TTL || 600),
    Grant: 86400,
    Interaction: 600,
    Session: 86400,
  },
  cookies: { keys: ['tollgate-rig-cookie-key'] },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

// Resource-owner password grant (RFC 6749 4.3), as Keycloak offers it with "direct access grants".
provider.registerGrantType('password', async (ctx) => {
  const { username, password } = ctx.oidc.params;
  const scope = ctx.oidc.params.scope || 'openid';
  const user = users()[username];
  if (!user || user.password !== password) {
    throw new errors.InvalidGrant('invalid username or password');
  }
  const { client } = ctx.oidc;
  const grant = new provider.Grant({ accountId: username, clientId: client.clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();
  const at = new provider.AccessToken({ accountId: username, client, grantId, gty: 'password', scope });
  const accessToken = await at.save();
  let refreshToken;
  if (!noRefresh) {
    const rt = new provider.RefreshToken({ accountId: username, client, grantId, gty: 'password', scope, rotations: 0 });
    refreshToken = await rt.save();
  }
  const account = await findAccount(ctx, username);
  const idToken = new provider.IdToken({ ...(await account.claims()) }, { ctx });
  idToken.scope = scope;
  // Each password grant is an IdP session of its own, named in the ID token for back-channel logout.
  const sid = crypto.randomUUID();
  idToken.set('sid', sid);
  sessionsByUser.set(username, [...(sessionsByUser.get(username) || []), sid]);
  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    token_type: 'Bearer',
    id_token: await idToken.issue({ use: 'idtoken' }),
    refresh_token: refreshToken,
    scope,
  };
}, ['username', 'password', 'scope']);

// The interaction endpoints (login, consent, abort), JSON and form based, for scripted approvals.
function form(ctx) {
  return new Promise((resolve) => {
    let body = '';
    ctx.req.on('data', (c) => { body += c; });
    ctx.req.on('end', () => resolve(Object.fromEntries(new URLSearchParams(body))));
  });
}

// Test hooks. POST /rig/logout (form: user, uri): end every IdP session of `user` as an administrator
// would, which makes oidc-provider send its own signed logout token for each to `uri`; answers
// {sent, failed}. POST /rig/sign (JSON: {claims, forge}): `claims` signed with the provider's key (or,
// with forge, another key under the same kid), for tokens the provider would never send.
provider.use(async (ctx, next) => {
  if (ctx.method === 'POST' && ctx.path === '/rig/logout') {
    const { user, uri } = await form(ctx);
    const client = await provider.Client.find(clientId);
    client.backchannelLogoutUri = uri;
    const sids = sessionsByUser.get(user) || [];
    sessionsByUser.delete(user);
    const failed = [];
    for (const sid of sids) {
      try {
        await client.backchannelLogout(user, sid);
      } catch (e) {
        failed.push(String(e.message || e));
      }
    }
    ctx.body = { sent: sids.length - failed.length, failed, sids };
    return undefined;
  }
  if (ctx.method === 'POST' && ctx.path === '/rig/sign') {
    const body = JSON.parse(await new Promise((resolve) => {
      let text = '';
      ctx.req.on('data', (c) => { text += c; });
      ctx.req.on('end', () => resolve(text));
    }));
    ctx.body = { token: signJwt(body.claims, body.forge ? forgerKey : signingKey) };
    return undefined;
  }
  return next();
});

provider.use(async (ctx, next) => {
  const m = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm|abort))?$/);
  if (!m) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const action = m[2];
  if (!action && ctx.method === 'GET') {
    ctx.body = { uid: details.uid, prompt: details.prompt.name, params: details.params };
    return undefined;
  }
  if (ctx.method !== 'POST') { ctx.status = 405; return undefined; }
  let result;
  if (action === 'login') {
    const { login, password } = await form(ctx);
    const user = users()[login];
    if (!user || user.password !== password) {
      ctx.status = 401;
      ctx.body = { error: 'invalid username or password' };
      return undefined;
    }
    result = { login: { accountId: login } };
  } else if (action === 'confirm') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(details.params.scope || 'openid');
    result = { consent: { grantId: await grant.save() } };
  } else {
    result = { error: 'access_denied', error_description: 'End-User denied the login' };
  }
  await provider.interactionFinished(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  return undefined;
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening on ${port}`);
});

// Tokens and keys made by an independent JWT library (jose), for
// spec/unit/jwt_spec.lua: one valid token per algorithm, and the attacks.
// `verify SECRET TOKEN`: jose checks a token sluice.jwt.sign made;
// `sign SECRET CLAIMS_JSON`: jose makes an HS256 token.
// Otherwise prints one JSON object: { now, secret, jwks, pem, wrong_jwks, tokens: { name: token } }.
import * as jose from 'jose';
import { generateKeyPairSync } from 'node:crypto';

if (process.argv[2] === 'verify') {
  // node jwt.mjs verify SECRET TOKEN: jose's verdict on a token sluice signed.
  const { payload, protectedHeader } = await jose.jwtVerify(process.argv[4],
    new TextEncoder().encode(process.argv[3]));
  process.stdout.write(JSON.stringify({ payload, protectedHeader }));
  process.exit(0);
}

if (process.argv[2] === 'sign') {
  // node jwt.mjs sign SECRET CLAIMS_JSON: an HS256 token jose makes.
  process.stdout.write(await new jose.SignJWT(JSON.parse(process.argv[4]))
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(process.argv[3])));
  process.exit(0);
}

const now = Math.floor(Date.now() / 1000);
const secret = 'sluice-spec-secret-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGH';   // 64 bytes
const secretKey = new TextEncoder().encode(secret);
const b64 = (buf) => Buffer.from(buf).toString('base64url');

const base = { sub: 'user-1', name: 'Ada', roles: ['reader', 'writer'], n: 42 };

async function sign(key, header, claims = base, opts = {}) {
  let j = new jose.SignJWT(claims).setProtectedHeader(header).setIssuedAt(opts.iat ?? now);
  j = j.setExpirationTime(opts.exp ?? now + 3600);
  if (opts.iss !== false) j = j.setIssuer(opts.iss ?? 'https://issuer.test');
  if (opts.aud !== false) j = j.setAudience(opts.aud ?? 'sluice');
  if (opts.nbf) j = j.setNotBefore(opts.nbf);
  return j.sign(key);
}

// node:crypto key objects: unlike WebCrypto keys, one RSA key signs with
// every RS and PS algorithm.
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = {
  ES256: generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  ES384: generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  ES512: generateKeyPairSync('ec', { namedCurve: 'P-521' }),
};
const ed = generateKeyPairSync('ed25519');
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });

const jwk = async (k, kid, extra = {}) => ({ ...(await jose.exportJWK(k)), kid, ...extra });
const jwks = { keys: [
  await jwk(rsa.publicKey, 'rsa', { use: 'sig' }),
  await jwk(ec.ES256.publicKey, 'ES256', { alg: 'ES256' }),
  await jwk(ec.ES384.publicKey, 'ES384'),
  await jwk(ec.ES512.publicKey, 'ES512'),
  await jwk(ed.publicKey, 'ed'),
  { kty: 'oct', kid: 'hs', k: b64(secretKey) },
  // skipped: an encryption key and a type sluice does not know
  { ...(await jose.exportJWK(other.publicKey)), kid: 'enc', use: 'enc' },
  { kty: 'XYZ', kid: 'future' },
] };
const pem = await jose.exportSPKI(rsa.publicKey);

const t = {};
for (const alg of ['HS256', 'HS384', 'HS512']) t[alg] = await sign(secretKey, { alg, kid: 'hs' });
for (const alg of ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'])
  t[alg] = await sign(rsa.privateKey, { alg, kid: 'rsa' });
for (const alg of ['ES256', 'ES384', 'ES512']) t[alg] = await sign(ec[alg].privateKey, { alg, kid: alg });
t.EdDSA = await sign(ed.privateKey, { alg: 'EdDSA', kid: 'ed' });
t.no_kid = await sign(rsa.privateKey, { alg: 'RS256' });
t.bare_secret = await sign(secretKey, { alg: 'HS256' });

// Attacks.
t.none = new jose.UnsecuredJWT(base).setIssuedAt(now).setExpirationTime(now + 3600).encode();
// HS256 with the RSA public key (its PEM text, and its JWK modulus) as the secret.
t.confusion_pem = await sign(new TextEncoder().encode(pem), { alg: 'HS256' });
t.confusion_kid = await sign(new TextEncoder().encode(pem), { alg: 'HS256', kid: 'rsa' });
const [h, p, s] = t.RS256.split('.');
t.tampered_payload = [h, b64(JSON.stringify({ ...base, roles: ['admin'], iat: now,
  exp: now + 3600, iss: 'https://issuer.test', aud: 'sluice' })), s].join('.');
const sig = Buffer.from(s, 'base64url'); sig[10] ^= 1;
t.tampered_signature = [h, p, b64(sig)].join('.');
const es = t.ES256.split('.'); const esig = Buffer.from(es[2], 'base64url'); esig[40] ^= 0x80;
t.tampered_es256 = [es[0], es[1], b64(esig)].join('.');
t.wrong_key = await sign(other.privateKey, { alg: 'RS256', kid: 'rsa' });
t.expired = await sign(rsa.privateKey, { alg: 'RS256', kid: 'rsa' }, base, { iat: now - 7200, exp: now - 120 });
t.expired_30s = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { iat: now - 600, exp: now - 30 });
t.not_yet = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { nbf: now + 600 });
t.future_iat = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { iat: now + 600, exp: now + 4000 });
t.wrong_aud = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { aud: 'someone-else' });
t.aud_list = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { aud: ['other', 'sluice'] });
t.no_aud = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { aud: false });
t.wrong_iss = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, base, { iss: 'https://evil.test' });
t.unknown_kid = await sign(secretKey, { alg: 'HS256', kid: 'nobody' });
t.enc_kid = await sign(other.privateKey, { alg: 'RS256', kid: 'enc' });
t.es256_by_rsa_kid = await sign(ec.ES256.privateKey, { alg: 'ES256', kid: 'rsa' });
t.oversize = await sign(secretKey, { alg: 'HS256', kid: 'hs' }, { ...base, pad: 'x'.repeat(10000) });
t.no_exp = await new jose.SignJWT(base).setProtectedHeader({ alg: 'HS256', kid: 'hs' }).sign(secretKey);
t.exp_string = await new jose.SignJWT({ ...base, exp: 'tomorrow' })
  .setProtectedHeader({ alg: 'HS256', kid: 'hs' }).sign(secretKey);
t.crit = await new jose.SignJWT(base)
  .setProtectedHeader({ alg: 'HS256', kid: 'hs', crit: ['x-sluice'], 'x-sluice': 1 })
  .setExpirationTime(now + 3600).sign(secretKey, { crit: { 'x-sluice': true } });

const ecPem = generateKeyPairSync('ec', { namedCurve: 'P-256' });
t.ES256_pem = await sign(ecPem.privateKey, { alg: 'ES256' });

process.stdout.write(JSON.stringify({
  now, secret, jwks, pem,
  ec_pem: ecPem.publicKey.export({ type: 'spki', format: 'pem' }),
  wrong_jwks: { keys: [await jwk(other.publicKey, 'rsa')] },
  tokens: t,
}));

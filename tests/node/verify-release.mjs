// An independent verifier of a signed lockstep release: the Sigstore project's own
// JavaScript libraries (@sigstore/bundle, @sigstore/verify), pinned by package-lock.json,
// and nothing of lockstep's Python code.
//
//   node verify-release.mjs --key KEY.pub --registry http://HOST:PORT --image NAME@sha256:…
//   node verify-release.mjs --key KEY.pub --bundle FILE --subject sha256:…
//
// With --image (repeatable) it walks the registry itself: the image's referrers (the
// referrers API, else the sha256-<hex> tag scheme), and requires (of an image index: a
// signature bundle naming the index, and all of this of every image in it)
//   - every attached Sigstore bundle to verify with KEY (none may fail),
//   - the image to carry a cosign 3 signature bundle (predicate
//     https://sigstore.dev/cosign/sign/v1) whose statement names the image's digest,
//   - the image to carry a provenance attestation (https://slsa.dev/provenance/v1) whose
//     statement names the image's digest among its subjects,
//   - every other attached artifact (the SBOM, the provenance) to carry a signature bundle
//     naming its own digest,
//   - the image's sha256-<hex>.att tag (cosign's attestations before bundles) to hold a DSSE
//     envelope of the provenance, verified by the same verifier (wrapped in a key-only bundle).
// Key-based and offline: no certificate, no transparency log, no timestamp authority.
// Prints one JSON report on stdout; exit 0 if everything verified, 1 if not, 2 on bad usage.
import { readFileSync } from 'node:fs';
import { createHash, createPublicKey } from 'node:crypto';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

const BUNDLE = 'application/vnd.dev.sigstore.bundle.v0.3+json';
const SIGN = 'https://sigstore.dev/cosign/sign/v1';
const SLSA = 'https://slsa.dev/provenance/v1';
const STATEMENT = 'https://in-toto.io/Statement/v1';
const INDEX = 'application/vnd.oci.image.index.v1+json';
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const DSSE = 'application/vnd.dsse.envelope.v1+json';

function usage(message) {
  process.stderr.write(`verify-release: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { images: [] };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    if (flag === '--key') args.key = value;
    else if (flag === '--registry') args.registry = value.replace(/\/$/, '');
    else if (flag === '--image') args.images.push(value);
    else if (flag === '--bundle') args.bundle = value;
    else if (flag === '--subject') args.subject = value;
    else usage(`unknown option ${flag}`);
  }
  if (!args.key) usage('--key is required');
  if (args.bundle ? !args.subject : !(args.registry && args.images.length)) {
    usage('give --bundle FILE --subject DIGEST, or --registry URL --image NAME@DIGEST');
  }
  return args;
}

function sha256(data) {
  return 'sha256:' + createHash('sha256').update(data).digest('hex');
}

function verifierFor(pem) {
  const publicKey = createPublicKey(pem);
  // One trusted key, whatever the bundle's hint says: the signature decides.
  const trust = toTrustMaterial(
    { tlogs: [], ctlogs: [], certificateAuthorities: [], timestampAuthorities: [] },
    () => ({ publicKey, validFor: () => true }),
  );
  return new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });
}

// Verify one bundle (bytes) for `subject`: the signature with the key, then that the
// envelope's in-toto statement names `subject`. Returns {ok, predicateType, error}.
function checkBundle(verifier, data, subject) {
  let bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(data.toString('utf8')));
  } catch (err) {
    return { ok: false, error: `not a Sigstore bundle: ${err.message}` };
  }
  if (bundle.content.$case !== 'dsseEnvelope') {
    return { ok: false, error: `expected a DSSE envelope, found ${bundle.content.$case}` };
  }
  try {
    verifier.verify(toSignedEntity(bundle));
  } catch (err) {
    return { ok: false, error: `${err.code || err.name}: ${err.message}` };
  }
  let statement;
  try {
    statement = JSON.parse(bundle.content.dsseEnvelope.payload.toString('utf8'));
  } catch (err) {
    return { ok: false, error: `the signed payload is not JSON: ${err.message}` };
  }
  const predicateType = statement.predicateType;
  if (statement._type !== STATEMENT) {
    return { ok: false, predicateType, error: `not an in-toto v1 statement: ${statement._type}` };
  }
  const named = (statement.subject || []).some((s) => 'sha256:' + s?.digest?.sha256 === subject);
  if (!named) return { ok: false, predicateType, error: `the statement does not name ${subject}` };
  return { ok: true, predicateType };
}

async function get(url, accept) {
  const resp = await fetch(url, accept ? { headers: { Accept: accept } } : {});
  if (resp.status === 404) return null;
  if (!resp.ok) throw new Error(`GET ${url}: HTTP ${resp.status}`);
  return Buffer.from(await resp.arrayBuffer());
}

async function referrers(base, name, digest) {
  const listed = (await get(`${base}/v2/${name}/referrers/${digest}`, INDEX)) ??
    (await get(`${base}/v2/${name}/manifests/sha256-${digest.slice(7)}`, INDEX));
  return listed ? JSON.parse(listed.toString('utf8')).manifests || [] : [];
}

async function manifest(base, name, digest) {
  const raw = await get(`${base}/v2/${name}/manifests/${digest}`, `${MANIFEST}, ${INDEX}`);
  if (raw === null || sha256(raw) !== digest) throw new Error(`${name}@${digest}: missing or altered`);
  return JSON.parse(raw.toString('utf8'));
}

async function blob(base, name, digest) {
  const raw = await get(`${base}/v2/${name}/blobs/${digest}`);
  if (raw === null || sha256(raw) !== digest) throw new Error(`blob ${name}@${digest}: missing or altered`);
  return raw;
}

// Every bundle attached to name@digest, checked; and the other referrers' digests.
async function walk(base, name, digest, verifier, report) {
  const found = { predicates: new Set(), others: [] };
  for (const entry of await referrers(base, name, digest)) {
    if (entry.artifactType !== BUNDLE) {
      found.others.push(entry);
      continue;
    }
    const row = { subject: `${name}@${digest}`, bundle: entry.digest };
    try {
      const m = await manifest(base, name, entry.digest);
      if (m.subject?.digest !== digest) throw new Error(`its subject is ${m.subject?.digest}`);
      Object.assign(row, checkBundle(verifier, await blob(base, name, m.layers[0].digest), digest));
    } catch (err) {
      Object.assign(row, { ok: false, error: err.message });
    }
    report.checked.push(row);
    if (row.ok) found.predicates.add(row.predicateType);
  }
  return found;
}

// The DSSE envelopes of cosign's sha256-<hex>.att tag, each checked as a key-only bundle.
async function legacyAttestations(base, name, digest, verifier, report) {
  const found = new Set();
  const raw = await get(`${base}/v2/${name}/manifests/sha256-${digest.slice(7)}.att`, MANIFEST);
  for (const layer of raw ? JSON.parse(raw.toString('utf8')).layers || [] : []) {
    if (layer.mediaType !== DSSE) continue;
    const row = { subject: `${name}@${digest}`, attestationTag: layer.digest };
    try {
      const dsseEnvelope = JSON.parse((await blob(base, name, layer.digest)).toString('utf8'));
      const wrapped = {
        mediaType: BUNDLE,
        verificationMaterial: { publicKey: { hint: 'release-key' }, tlogEntries: [] },
        dsseEnvelope,
      };
      Object.assign(row, checkBundle(verifier, Buffer.from(JSON.stringify(wrapped)), digest));
    } catch (err) {
      Object.assign(row, { ok: false, error: err.message });
    }
    report.checked.push(row);
    if (row.ok) found.add(row.predicateType);
  }
  return found;
}

async function verifyImage(base, image, verifier, report) {
  const at = image.lastIndexOf('@');
  const [name, digest] = [image.slice(0, at), image.slice(at + 1)];
  const top = await walk(base, name, digest, verifier, report);
  if (!top.predicates.has(SIGN)) report.missing.push(`${image}: no signature bundle`);
  const found = await manifest(base, name, digest);
  if (found.mediaType === INDEX) {
    // An image index (one image per platform): signed itself, as `cosign sign --recursive`
    // signs one, and every image in it verified as an image.
    const images = found.manifests || [];
    if (images.length === 0) report.missing.push(`${image}: an image index of no image`);
    for (const entry of images) await verifyImage(base, `${name}@${entry.digest}`, verifier, report);
    return;
  }
  if (!top.predicates.has(SLSA)) report.missing.push(`${image}: no provenance attestation`);
  if (!(await legacyAttestations(base, name, digest, verifier, report)).has(SLSA)) {
    report.missing.push(`${image}: no provenance attestation in its .att tag`);
  }
  for (const other of top.others) {
    const below = await walk(base, name, other.digest, verifier, report);
    if (!below.predicates.has(SIGN)) {
      report.missing.push(`${name}@${other.digest} (${other.artifactType}): no signature bundle`);
    }
  }
}

const args = parseArgs(process.argv.slice(2));
const verifier = verifierFor(readFileSync(args.key));
const report = { checked: [], missing: [] };
if (args.bundle) {
  report.checked.push({ bundle: args.bundle, ...checkBundle(verifier, readFileSync(args.bundle), args.subject) });
} else {
  for (const image of args.images) {
    try {
      await verifyImage(args.registry, image, verifier, report);
    } catch (err) {
      report.missing.push(`${image}: ${err.message}`);
    }
  }
}
report.ok = report.missing.length === 0 && report.checked.length > 0 && report.checked.every((r) => r.ok);
process.stdout.write(JSON.stringify(report, null, 2) + '\n');
process.exit(report.ok ? 0 : 1);

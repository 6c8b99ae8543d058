// files.uploadUrl() and downloadUrl() of the official SDK (npm e2b) against SandboxVM: a file sent to the
// signed upload URL, read back through the SDK and through the signed download URL; a URL for another path
// or past its expiration is refused. Prints one JSON object; E2bTests asserts on it.
import { Sandbox } from 'e2b'

const out = {}
const sbx = await Sandbox.create(process.argv[2] ?? 'base')
try {
  const up = await sbx.uploadUrl('signed.txt')
  const form = new FormData()
  form.append('file', new Blob(['sent to a signed URL']), 'signed.txt')
  out.uploadStatus = (await fetch(up, { method: 'POST', body: form })).status
  out.read = await sbx.files.read('signed.txt')
  const down = await sbx.downloadUrl('signed.txt', { useSignatureExpiration: 60 })
  const got = await fetch(down)
  out.downloadStatus = got.status
  out.downloaded = await got.text()
  const other = new URL(down)
  other.searchParams.set('path', '/etc/hostname')
  out.otherPathStatus = (await fetch(other)).status
  out.expiredStatus = (await fetch(await sbx.downloadUrl('signed.txt', { useSignatureExpiration: -5 }))).status
} catch (e) {
  out.error = `${e?.name}: ${e?.message}`
} finally {
  await sbx.kill()
}
console.log(JSON.stringify(out))
process.exit(0)

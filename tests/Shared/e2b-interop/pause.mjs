// pause() and Sandbox.connect() through the official SDK (npm @e2b/code-interpreter) on a runtime that
// can pause: a Python variable and a file made before the pause are there after connect resumed it.
// The server comes from E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY. Prints one JSON object.
import { Sandbox } from '@e2b/code-interpreter'

const out = {}
const sbx = await Sandbox.create()
out.sandboxId = sbx.sandboxId
try {
  out.before = (await sbx.runCode('v = 41; v')).text
  await sbx.files.write('kept.txt', 'written before the pause')
  out.paused = await sbx.pause()
  out.stateAfterPause = (await Sandbox.getInfo(sbx.sandboxId)).state
  const again = await Sandbox.connect(sbx.sandboxId)
  out.stateAfterConnect = (await again.getInfo()).state
  out.value = (await again.runCode('v + 1')).text
  out.file = await again.files.read('kept.txt')
} catch (e) {
  out.error = `${e?.name}: ${e?.message}`
} finally {
  out.killed = await Sandbox.kill(sbx.sandboxId)
}
console.log(JSON.stringify(out))
process.exit(0)

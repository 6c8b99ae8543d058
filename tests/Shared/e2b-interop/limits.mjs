// runCode under a key's run limits, through the official SDK (npm @e2b/code-interpreter): connects to the
// sandbox named on the command line and runs two cells. Prints one JSON object; E2bTests asserts on it.
import { Sandbox } from '@e2b/code-interpreter'

const started = Date.now()
const sbx = await Sandbox.connect(process.argv[2])
const runs = [], ms = [Date.now() - started]
for (const code of ['40 + 2', '40 + 3']) {
  try {
    runs.push((await sbx.runCode(code)).text)
  } catch (e) {
    runs.push(`${e.name}: ${e.message}`)
  }
  ms.push(Date.now() - started)
}
console.log(JSON.stringify({ runs, ms }))
// The SDK leaves the refused cell's 60 s request timer running, which would keep node (and the test) waiting.
process.exit(0)

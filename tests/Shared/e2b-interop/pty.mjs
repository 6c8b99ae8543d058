// sandbox.pty through the official SDK (npm e2b) against SandboxVM: a shell on a terminal, its input,
// a resize, its exit code, and a second terminal killed. The server comes from E2B_API_URL,
// E2B_SANDBOX_URL and E2B_API_KEY. Prints one JSON object; E2bTests asserts on it.
import { Sandbox } from 'e2b'

const enc = s => new TextEncoder().encode(s)
const out = {}
const sbx = await Sandbox.create(process.argv[2] ?? 'base')
try {
  const decoder = new TextDecoder()
  let data = ''
  // Waits for the terminal to have printed what matches, with a deadline.
  const until = async re => {
    const deadline = Date.now() + 30000
    while (!re.test(data)) {
      if (Date.now() > deadline) throw new Error(`the terminal did not print ${re}: ${JSON.stringify(data)}`)
      await new Promise(r => setTimeout(r, 50))
    }
  }
  const term = await sbx.pty.create({ cols: 100, rows: 30, onData: d => { data += decoder.decode(d, { stream: true }) } })
  // The echo of the typed line shows $((40+2)) as typed: "mark-42" is only the shell's output.
  await sbx.pty.sendInput(term.pid, enc('echo hi; tty; stty size; echo mark-$((40+2))\n'))
  await until(/mark-42/)
  out.first = data
  await sbx.pty.resize(term.pid, { cols: 120, rows: 40 })
  await sbx.pty.sendInput(term.pid, enc('stty size; echo mark-$((40+3))\n'))
  await until(/mark-43/)
  out.resized = data.slice(out.first.length)
  out.listed = (await sbx.commands.list()).some(p => p.pid === term.pid)
  await sbx.pty.sendInput(term.pid, enc('exit 3\n'))
  try {
    out.exitCode = (await term.wait()).exitCode
  } catch (e) {
    out.exitCode = e.exitCode ?? `${e.name}: ${e.message}`
  }
  out.listedAfter = (await sbx.commands.list()).some(p => p.pid === term.pid)

  const other = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} })
  out.killed = await sbx.pty.kill(other.pid)
  try {
    await other.wait()
    out.afterKill = 'exited 0'
  } catch (e) {
    out.afterKill = `${e.name}: ${e.exitCode}`
  }
  out.killedAgain = await sbx.pty.kill(other.pid)
} catch (e) {
  out.error = `${e?.name}: ${e?.message}`
} finally {
  await sbx.kill()
}
console.log(JSON.stringify(out))

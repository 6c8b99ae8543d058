// Runs the E2B quick starts with the official SDKs against SandboxVM. The server comes from the
// environment exactly as a user sets it: E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY. Prints one JSON
// object with what each step saw; E2bInteropTests asserts on it.
import { Sandbox } from '@e2b/code-interpreter'

const out = {}
const step = async (name, fn) => {
  try {
    out[name] = await fn()
  } catch (e) {
    out[name] = { error: `${e?.name}: ${e?.message}` }
  }
}

const sbx = await Sandbox.create({ metadata: { purpose: 'e2b-interop' }, envs: { GREETING: 'hello from create' } })
out.sandboxId = sbx.sandboxId
try {
  await step('runCode', async () => (await sbx.runCode('x = 1; x')).text)
  await step('stateful', async () => (await sbx.runCode('x += 41; x')).text)
  await step('stdout', async () => (await sbx.runCode('print("hi"); print("there")')).logs.stdout.join(''))
  await step('error', async () => {
    const e = (await sbx.runCode('1 / 0')).error
    return { name: e?.name, value: e?.value }
  })
  await step('chart', async () => {
    const ex = await sbx.runCode([
      'import matplotlib.pyplot as plt',
      'plt.plot([1, 2, 3], [1, 4, 9])',
      'plt.title("squares")',
      'plt.show()',
    ].join('\n'))
    return { error: ex.error?.value, pngs: ex.results.filter(r => r.png).map(r => r.png) }
  })
  await step('ls', async () => {
    const r = await sbx.commands.run('ls -l /')
    return { exitCode: r.exitCode, stdout: r.stdout }
  })
  await step('env', async () => (await sbx.commands.run('echo "$GREETING"')).stdout)
  await step('exitCode', async () => {
    try {
      await sbx.commands.run('echo oops >&2; exit 3')
      return { thrown: false }
    } catch (e) {
      return { thrown: true, exitCode: e.exitCode, stderr: e.stderr }
    }
  })
  await step('badCwd', async () => {
    try {
      await sbx.commands.run('pwd', { cwd: '/no/such/dir' })
      return { thrown: false }
    } catch (e) {
      return { thrown: true, error: `${e.name}: ${e.message}` }
    }
  })
  await step('contexts', async () => {
    const a = await sbx.createCodeContext()
    const b = await sbx.createCodeContext({ language: 'python' })
    await sbx.runCode('v = "in a"', { context: a })
    await sbx.runCode('v = "in b"', { context: b })
    const seen = {
      a: (await sbx.runCode('v', { context: a })).text,
      b: (await sbx.runCode('v', { context: b })).text,
      default: (await sbx.runCode('"v" in globals()')).text,
    }
    const listed = (await sbx.listCodeContexts()).map(c => c.id)
    await sbx.restartCodeContext(a)
    const afterRestart = { a: (await sbx.runCode('"v" in globals()', { context: a })).text, b: (await sbx.runCode('v', { context: b })).text }
    await sbx.removeCodeContext(b)
    const listedAfter = (await sbx.listCodeContexts()).map(c => c.id)
    let removedRun
    try {
      await sbx.runCode('v', { context: b })
      removedRun = 'ran'
    } catch (e) {
      removedRun = `${e.name}: ${e.message}`
    }
    let otherLanguage
    try {
      await sbx.createCodeContext({ language: 'r' })
      otherLanguage = 'created'
    } catch (e) {
      otherLanguage = `${e.name}: ${e.message}`
    }
    await sbx.removeCodeContext(a)
    return { a: a.id, b: b.id, language: a.language, seen, listed, afterRestart, listedAfter, removedRun, otherLanguage }
  })
  await step('rich', async () => {
    const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"city": ["Oslo", "Lima"], "temp": [3, 19]})')
    const shown = await sbx.runCode([
      'class Note:',
      '    def _repr_markdown_(self): return "**note**"',
      '    def _repr_json_(self): return {"n": 1}',
      'display(Note())',
      'import matplotlib.pyplot as plt',
      'fig = plt.figure()',
      'plt.plot([1, 2], [3, 4])',
      'plt.close(fig)',
      'fig',
    ].join('\n'))
    return {
      html: df.results[0]?.html, text: df.text, formats: df.results[0]?.formats(), main: df.results[0]?.isMainResult,
      shown: shown.results.map(r => ({ main: r.isMainResult, markdown: r.markdown, json: r.json, png: r.png?.slice(0, 12), formats: r.formats() })),
    }
  })
  await step('streamed', async () => {
    // The command waits for the callback to have seen its first line (a file the callback writes): it only
    // ends if output reaches onStdout while it runs.
    const order = []
    let acked
    const r = await sbx.commands.run('echo first; i=0; while [ ! -e e2b-ack ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; echo second; [ -e e2b-ack ]', {
      timeoutMs: 60_000,
      onStdout: d => {
        order.push(`stdout:${d.trim()}`)
        if (d.includes('first')) acked = sbx.files.write('e2b-ack', 'seen').then(() => order.push('acked'))
      },
    })
    await acked
    order.push(`end:${r.exitCode}`)
    return { order }
  })
  await step('background', async () => {
    const seen = []
    const h = await sbx.commands.run('echo started; sleep 600', { background: true, onStdout: d => seen.push(d) })
    const listed = (await sbx.commands.list()).map(p => p.pid)
    const deadline = Date.now() + 20000
    while (!seen.join('').includes('started') && Date.now() < deadline) await new Promise(r => setTimeout(r, 100))
    const killed = await h.kill()
    let exitCode = null
    try {
      exitCode = (await h.wait()).exitCode
    } catch (e) {
      exitCode = e.exitCode ?? `${e.name}: ${e.message}`
    }
    const after = (await sbx.commands.list()).map(p => p.pid)
    return { pid: h.pid, listed: listed.includes(h.pid), seen: seen.join(''), killed, exitCode, listedAfter: after.includes(h.pid) }
  })
  await step('files', async () => {
    await sbx.files.write('e2b/hello.txt', 'hello, files')
    const text = await sbx.files.read('e2b/hello.txt')
    const list = (await sbx.files.list('e2b')).map(e => ({ name: e.name, type: e.type }))
    const exists = await sbx.files.exists('e2b/hello.txt')
    const made = await sbx.files.makeDir('e2b/sub')
    const again = await sbx.files.makeDir('e2b/sub')
    await sbx.files.rename('e2b/hello.txt', 'e2b/sub/moved.txt')
    const moved = await sbx.files.read('e2b/sub/moved.txt')
    await sbx.files.remove('e2b/sub')
    const gone = !(await sbx.files.exists('e2b/sub'))
    let missing
    try {
      await sbx.files.read('e2b/nothing.txt')
    } catch (e) {
      missing = e.name
    }
    return { text, list, exists, made, again, moved, gone, missing }
  })
  await step('watch', async () => {
    await sbx.files.makeDir('watched')
    const events = []
    const handle = await sbx.files.watchDir('watched', e => events.push(`${e.type}:${e.name}`))
    const count = want => events.filter(e => e === want).length
    const waitFor = async (want, n = 1) => {
      const deadline = Date.now() + 30000
      while (count(want) < n && Date.now() < deadline) await new Promise(r => setTimeout(r, 50))
      return count(want) >= n
    }
    await sbx.files.write('watched/a.txt', 'one')
    const created = await waitFor('create:a.txt')
    const written = await waitFor('write:a.txt')
    await sbx.files.write('watched/a.txt', 'a longer second version')
    const rewritten = await waitFor('write:a.txt', 2)
    await sbx.files.remove('watched/a.txt')
    const removed = await waitFor('remove:a.txt')
    await handle.stop()
    let missing
    try {
      await sbx.files.watchDir('no-such-dir', () => {})
      missing = 'watched'
    } catch (e) {
      missing = e.name
    }
    return { created, written, rewritten, removed, events, missing }
  })
  await step('setTimeout', async () => {
    await sbx.setTimeout(120_000)
    const info = await sbx.getInfo()
    return { seconds: Math.round((info.endAt - Date.now()) / 1000), state: info.state, metadata: info.metadata }
  })
  await step('list', async () => {
    const items = await Sandbox.list({ query: { metadata: { purpose: 'e2b-interop' } } }).nextItems()
    const none = await Sandbox.list({ query: { metadata: { purpose: 'other' } } }).nextItems()
    return { ids: items.map(s => s.sandboxId), other: none.length }
  })
  await step('connect', async () => {
    const again = await Sandbox.connect(sbx.sandboxId)
    return (await again.runCode('x')).text
  })
} finally {
  await step('kill', async () => {
    await sbx.kill()
    return { running: await sbx.isRunning(), killedAgain: await Sandbox.kill(sbx.sandboxId) }
  })
}
console.log(JSON.stringify(out))
// The SDK leaves runCode's 60 s request timer running when the answer is an error (the removed context's
// run in 'contexts'): node waited it out after the last step, 57 of the test's 70 s.
process.exit(0)
